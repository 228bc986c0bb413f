/*
 * test_util_cidr_names.c - address lists with host names and files of
 * entries (filter/util/cidr_names.c), against a fake resolver (no DNS).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cidr_names.h"
#include "mwtest.h"

/* The fake zone: name -> addresses ("" ends), "temp." names fail for now. */
static const struct { const char *name; const char *addrs[4]; } zone[] = {
    {"mx1.example.net", {"192.0.2.10", "2001:db8::10", NULL}},
    {"relay.example.net", {"198.51.100.7", NULL}},
    {"v6only.example.net", {"2001:db8::77", NULL}},
    {NULL, {NULL}}};

struct fake {
    unsigned calls;
};

static mw_cidr_name_status fake_resolve(void *ctx, const char *name,
                                        void (*add)(void *arg, const mw_addr *a), void *arg,
                                        char *why, size_t whylen)
{
    struct fake *f = ctx;
    f->calls++;
    if (strncmp(name, "temp.", 5) == 0) {
        snprintf(why, whylen, "server failure");
        return MW_CIDR_NAME_TEMPFAIL;
    }
    for (size_t i = 0; zone[i].name != NULL; i++)
        if (strcmp(zone[i].name, name) == 0) {
            for (size_t j = 0; zone[i].addrs[j] != NULL; j++) {
                mw_addr a;
                if (mw_addr_parse(zone[i].addrs[j], &a))
                    add(arg, &a);
            }
            return MW_CIDR_NAME_OK;
        }
    snprintf(why, whylen, "NXDOMAIN");
    return MW_CIDR_NAME_NOTFOUND;
}

static void test_entries(void)
{
    struct fake f = {0};
    mw_cidr_resolver r = {.fn = fake_resolve, .ctx = &f};
    mw_cidr_set *s = mw_cidr_set_new();
    char why[400];

    MW_TEST_ASSERT(mw_cidr_names_add(s, "10.0.0.0/8", &r, why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_names_add(s, "[203.0.113.5]", &r, why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_names_add(s, "mx1.example.net", &r, why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_names_add(s, "v6only.example.net", &r, why, sizeof why));
    MW_TEST_EQ_INT(f.calls, 2);   /* addresses and networks never go to the resolver */
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "10.9.8.7"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "203.0.113.5"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "192.0.2.10"));     /* A */
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "2001:db8::10"));   /* and AAAA */
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "2001:db8::77"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(s, "192.0.2.11"));     /* exactly the host */

    /* a name that does not resolve is an error that names it */
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "gone.example.net", &r, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "gone.example.net") != NULL && strstr(why, "does not resolve") != NULL);
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "temp.example.net", &r, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "does not resolve now") != NULL && strstr(why, "server failure") != NULL);
    /* bad addresses stay address errors, not lookups */
    unsigned before = f.calls;
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "10.0.0.1/8", &r, why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "300.1.2.3", &r, why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "fe80::zz", &r, why, sizeof why));
    MW_TEST_EQ_INT(f.calls, before);
    /* OpenDKIM forms mailwarden cannot express are refused, with the reason */
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "!192.0.2.1", &r, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "negations") != NULL);
    MW_TEST_ASSERT(!mw_cidr_names_add(s, ".example.net", &r, why, sizeof why));
    MW_TEST_ASSERT(strstr(why, "host-name patterns") != NULL);
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "*.example.net", &r, why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "bad..name", &r, why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "", &r, why, sizeof why));
    MW_TEST_EQ_INT(f.calls, before);
    mw_cidr_set_free(&s);
}

static void test_file_forms(void)
{
    MW_TEST_EQ_STR(mw_cidr_names_file("file:/etc/x"), "/etc/x");
    MW_TEST_EQ_STR(mw_cidr_names_file("refile:/etc/x"), "/etc/x");
    MW_TEST_EQ_STR(mw_cidr_names_file("/etc/x"), "/etc/x");
    MW_TEST_ASSERT(mw_cidr_names_file("10.0.0.0/8") == NULL);
    MW_TEST_ASSERT(mw_cidr_names_file("mx1.example.net") == NULL);
    MW_TEST_ASSERT(mw_cidr_names_file("::1") == NULL);
}

struct errs {
    char   msg[8][600];
    size_t n;
};

static void collect(void *arg, const char *msg)
{
    struct errs *e = arg;
    if (e->n < 8)
        snprintf(e->msg[e->n], sizeof e->msg[0], "%s", msg);
    e->n++;
}

static void test_file(void)
{
    char path[] = "/tmp/mw_cidr_names_XXXXXX";
    int fd = mkstemp(path);
    if (!MW_TEST_ASSERT(fd >= 0))
        return;
    FILE *f = fdopen(fd, "w");
    fputs("# OpenDKIM TrustedHosts\n"
          "127.0.0.1\n"
          "\n"
          "  relay.example.net   # the relay\n"
          "192.168.0.0/24\n"
          "gone.example.net\n"
          "*.example.pw\n"
          "a b\n", f);
    fclose(f);

    struct fake fk = {0};
    mw_cidr_resolver r = {.fn = fake_resolve, .ctx = &fk};
    mw_cidr_set *s = mw_cidr_set_new();
    struct errs e = {0};
    MW_TEST_EQ_INT(mw_cidr_names_add_file(s, path, &r, collect, &e), 3);
    MW_TEST_EQ_INT(e.n, 3);
    char want[200];
    snprintf(want, sizeof want, "%s:6: ", path);
    MW_TEST_ASSERT(strncmp(e.msg[0], want, strlen(want)) == 0 && strstr(e.msg[0], "gone.example.net"));
    snprintf(want, sizeof want, "%s:7: ", path);
    MW_TEST_ASSERT(strncmp(e.msg[1], want, strlen(want)) == 0);
    snprintf(want, sizeof want, "%s:8: ", path);
    MW_TEST_ASSERT(strncmp(e.msg[2], want, strlen(want)) == 0);
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "127.0.0.1"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "198.51.100.7"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "192.168.0.99"));
    mw_cidr_set_free(&s);

    /* an unreadable file is one error, not a silent empty list */
    s = mw_cidr_set_new();
    e.n = 0;
    unlink(path);
    MW_TEST_EQ_INT(mw_cidr_names_add_file(s, path, &r, collect, &e), 1);
    MW_TEST_ASSERT(strstr(e.msg[0], "cannot open") != NULL);
    e.n = 0;
    MW_TEST_EQ_INT(mw_cidr_names_add_file(s, "relative/path", &r, collect, &e), 1);
    MW_TEST_EQ_INT(mw_cidr_set_count(s), 0);
    mw_cidr_set_free(&s);
}

/* The system resolver against /etc/hosts: "localhost" is always there. */
static void test_system_localhost(void)
{
    mw_cidr_set *s = mw_cidr_set_new();
    char why[400];
    MW_TEST_ASSERT(mw_cidr_names_add(s, "localhost", NULL, why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "127.0.0.1"));
    MW_TEST_ASSERT(!mw_cidr_names_add(s, "no-such-host.invalid", NULL, why, sizeof why));
    mw_cidr_set_free(&s);
}

int main(void)
{
    MW_TEST_RUN(test_entries);
    MW_TEST_RUN(test_file_forms);
    MW_TEST_RUN(test_file);
    MW_TEST_RUN(test_system_localhost);
    return MW_TEST_SUMMARY();
}
