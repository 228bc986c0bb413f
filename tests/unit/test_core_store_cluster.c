/*
 * test_core_store_cluster.c - the pure parts of the Redis Cluster routing
 * (store_redis_cluster.c): slot computation, MOVED/ASK parsing, CLUSTER
 * SLOTS parsing.  The routing itself runs against a real cluster in
 * tests/integration/test_redis_cluster.py.
 */
#include <hiredis/hiredis.h>
#include <string.h>

#include "../../filter/core/store_redis_cluster.h"
#include "mwtest.h"

static unsigned slot(const char *k) { return mw_redis_cluster_slot(k, strlen(k)); }

static void test_slots(void)
{
    /* Values from redis-server 7.0 (CLUSTER KEYSLOT). */
    MW_TEST_ASSERT(slot("foo") == 12182);
    MW_TEST_ASSERT(slot("123456789") == 12739);     /* CRC16-XMODEM check value 0x31C3 */
    MW_TEST_ASSERT(slot("{user1000}.following") == slot("user1000"));
    MW_TEST_ASSERT(slot("foo{}{bar}") == slot("foo{}{bar}"));
    MW_TEST_ASSERT(slot("foo{}{bar}") != slot("bar"));            /* empty tag: whole key */
    MW_TEST_ASSERT(slot("foo{{bar}}zap") == slot("{bar"));
    MW_TEST_ASSERT(slot("mw:rl:{from=a@b}:r1") == slot("mw:rl:{from=a@b}:r2"));
    MW_TEST_ASSERT(slot("") == 0);
    MW_TEST_ASSERT(mw_redis_cluster_slot("a{b", 3) == mw_redis_cluster_slot("a{b", 3));
}

static void test_redirects(void)
{
    bool ask;
    unsigned s;
    char host[64];
    int port;
    const char *e;

    e = "MOVED 3999 127.0.0.1:6381";
    MW_TEST_ASSERT(mw_redis_cluster_parse_redirect(e, strlen(e), &ask, &s, host, sizeof host, &port));
    MW_TEST_ASSERT(!ask && s == 3999 && port == 6381 && strcmp(host, "127.0.0.1") == 0);
    e = "ASK 16383 [::1]:7000";
    MW_TEST_ASSERT(mw_redis_cluster_parse_redirect(e, strlen(e), &ask, &s, host, sizeof host, &port));
    MW_TEST_ASSERT(ask && s == 16383 && port == 7000 && strcmp(host, "::1") == 0);
    static const char *const bad[] = {"MOVED", "MOVED 16384 a:1", "MOVED 1 a:0", "MOVED 1 a:65536",
                                      "MOVED 1 :80", "MOVED x a:1", "ASK 1 a", "ASK 1 [::1:80",
                                      "MOVED 1 a b:1", "ERR x", "MOVED 1 a:1x", "", NULL};
    for (const char *const *b = bad; *b != NULL; b++)
        if (!MW_TEST_ASSERT(!mw_redis_cluster_parse_redirect(*b, strlen(*b), &ask, &s, host,
                                                             sizeof host, &port)))
            fprintf(stderr, "  accepted \"%s\"\n", *b);
    e = "MOVED 1 averyveryveryveryveryveryveryveryveryveryveryveryveryveryverylonghostname:1";
    MW_TEST_ASSERT(!mw_redis_cluster_parse_redirect(e, strlen(e), &ask, &s, host, 16, &port));
}

struct seen {
    unsigned n, masters, first, last;
    int port;
    char host[64];
};

static void cb(void *arg, unsigned first, unsigned last, const char *host, int port, bool master)
{
    struct seen *x = arg;
    x->n++;
    if (master) {
        x->masters++;
        x->first = first;
        x->last = last;
        x->port = port;
        snprintf(x->host, sizeof x->host, "%s", host);
    }
}

static redisReply *parse_resp(const char *text)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;

    redisReaderFeed(rd, text, strlen(text));
    if (redisReaderGetReply(rd, &rep) != REDIS_OK)
        rep = NULL;
    redisReaderFree(rd);
    return rep;
}

static void test_cluster_slots(void)
{
    struct seen x = {0};
    redisReply *r = parse_resp("*1\r\n*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
                               "*3\r\n$0\r\n\r\n:7003\r\n$2\r\nid\r\n");
    if (!MW_TEST_ASSERT(r != NULL))
        return;
    MW_TEST_ASSERT(mw_redis_cluster_parse_slots(r, "10.9.9.9", cb, &x));
    MW_TEST_ASSERT(x.n == 2 && x.masters == 1 && x.first == 0 && x.last == 5460 && x.port == 7000);
    MW_TEST_ASSERT(strcmp(x.host, "127.0.0.1") == 0);
    freeReplyObject(r);
    /* malformed: a range past 16383, a port 0, a non-array: nothing reported */
    static const char *const bad[] = {
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:0\r\n",
        "*1\r\n*3\r\n:10\r\n:0\r\n*2\r\n$1\r\na\r\n:1\r\n",
        "*1\r\n*2\r\n:0\r\n:10\r\n",
        "+OK\r\n",
        "*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n:5\r\n",
        NULL};
    for (const char *const *b = bad; *b != NULL; b++) {
        struct seen y = {0};
        r = parse_resp(*b);
        if (!MW_TEST_ASSERT(r != NULL))
            continue;
        MW_TEST_ASSERT(!mw_redis_cluster_parse_slots(r, "h", cb, &y) && y.n == 0);
        freeReplyObject(r);
    }
}

int main(void)
{
    MW_TEST_RUN(test_slots);
    MW_TEST_RUN(test_redirects);
    MW_TEST_RUN(test_cluster_slots);
    return MW_TEST_SUMMARY();
}
