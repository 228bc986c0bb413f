/*
 * fuzz_redis_cluster.c - what a Redis Cluster node sends back that the
 * cluster routing parses (store_redis_cluster.c): MOVED/ASK error texts and
 * CLUSTER SLOTS replies, plus the slot of any key.
 *
 * Input, by the first byte:
 *   even: the rest is an error text (MOVED/ASK parser) and a key (slot);
 *   odd:  the rest is RESP bytes; hiredis' reader builds the reply (as from
 *         the socket) and the CLUSTER SLOTS parser walks it.
 * hiredis 0.14's reader allocates (and frees element by element) an array
 * of whatever size a header announces (maxelements came with hiredis 1.0),
 * so an input announcing 100000 or more elements or bytes would time out in
 * hiredis, not in our parser: such inputs are skipped.
 * Checked: a parsed redirect has slot < 16384, port 1..65535 and a host of
 * printable characters; every range reported is within 0..16383.
 */
#include <assert.h>
#include <hiredis/hiredis.h>

#include "../../filter/core/store_redis_cluster.h"
#include "fuzz_common.h"

static void cb(void *arg, unsigned first, unsigned last, const char *host, int port, bool master)
{
    (void)arg;
    (void)master;
    assert(first <= last && last < MW_REDIS_CLUSTER_SLOTS);
    assert(port > 0 && port <= 65535 && host != NULL);
    for (const char *p = host; *p != '\0'; p++)
        assert(*p > ' ' && *p <= '~');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if ((data[0] & 1) == 0) {
        char *s = fz_exact(data + 1, size - 1), host[256];
        bool ask;
        unsigned slot;
        int port;
        if (mw_redis_cluster_parse_redirect(s, size - 1, &ask, &slot, host, sizeof host, &port)) {
            assert(slot < MW_REDIS_CLUSTER_SLOTS && port > 0 && port <= 65535);
            for (const char *p = host; *p != '\0'; p++)
                assert(*p > ' ' && *p <= '~');
        }
        assert(mw_redis_cluster_slot(s, size - 1) < MW_REDIS_CLUSTER_SLOTS);
        free(s);
        return 0;
    }
    for (size_t i = 1; i < size; i++) {
        size_t digits = 0;
        if (data[i] != '*' && data[i] != '$')
            continue;
        while (i + 1 + digits < size && data[i + 1 + digits] >= '0' && data[i + 1 + digits] <= '9')
            digits++;
        if (digits >= 5)
            return 0;
    }
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    redisReaderFeed(rd, (const char *)data + 1, size - 1);
    if (redisReaderGetReply(rd, &rep) == REDIS_OK && rep != NULL) {
        mw_redis_cluster_parse_slots(rep, "127.0.0.1", cb, NULL);
        freeReplyObject(rep);
    }
    redisReaderFree(rd);
    return 0;
}
