/*
 * test_core_dns.c - unit tests of the libunbound resolver (core/dns.c)
 * against tests/lib/testdns.py, a scripted authoritative server on a
 * loopback port that this test starts and stops itself.
 *
 * Environment: MW_SOURCE_DIR (set by ctest; else derived from __FILE__),
 * MW_TEST_PYTHON (default /usr/bin/python3: Debian's, which has dnslib).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "dns.h"
#include "mwtest.h"
#include "mwtest_procs.h"

static mwt_proc server;         /* testdns.py; its dir holds zone.json and log */
static mw_dns *dns;

/* ------------------------------------------------------------------------ */
/* the test server                                                          */

#define ZONE_JSON_FMT \
    "{\n" \
    " \"example.com\": [{\"A\": \"192.0.2.1\"}, {\"AAAA\": \"2001:db8::1\"},\n" \
    "                 {\"TXT\": [\"v=spf1 \", \"ip4:192.0.2.0/24 \", \"-all\"]},\n" \
    "                 {\"MX\": [10, \"mx.example.com\"]}, {\"MX\": [20, \"mx2.example.com\"]}],\n" \
    " \"www.example.com\": [{\"CNAME\": \"alias.example.com\"}],\n" \
    " \"alias.example.com\": [{\"CNAME\": \"example.com\"}],\n" \
    " \"long.example.com\": [{\"TXT\": \"%s\"}],\n" \
    " \"bin.example.com\": [{\"TXT\": \"a\\u0000b\\u00e9\"}],\n" \
    " \"short.example.com\": [{\"TXT\": \"x\", \"ttl\": 5}],\n" \
    " \"spf.example.com\": [{\"SPF\": \"v=spf1 -all\"}],\n" \
    " \"nodata.example.com\": [{\"A\": \"192.0.2.2\"}],\n" \
    " \"nullmx.example.com\": [{\"MX\": [0, \".\"]}],\n" \
    " \"servfail.example.com\": [\"SERVFAIL\"],\n" \
    " \"silent.example.com\": [\"TIMEOUT\", {\"A\": \"192.0.2.3\"}],\n" \
    " \"tc.example.com\": [\"TRUNCATE\", {\"A\": \"192.0.2.4\"}],\n" \
    " \"1.0.0.127.in-addr.arpa\": [{\"PTR\": \"mx.example.com\"}],\n" \
    " \"5.2.0.192.in-addr.arpa\": [{\"CNAME\": \"5.0-25.2.0.192.in-addr.arpa\"}],\n" \
    " \"5.0-25.2.0.192.in-addr.arpa\": [{\"PTR\": \"five.example.com\"}],\n" \
    " \"host.test\": [{\"A\": \"192.0.2.10\"}],\n" \
    " \"host.invalid\": [{\"A\": \"192.0.2.11\"}],\n" \
    " \"1.1.168.192.in-addr.arpa\": [{\"PTR\": \"lan.example.com\"}],\n" \
    " \"1.0.0.10.in-addr.arpa\": [{\"PTR\": \"ten.example.com\"}],\n" \
    " \"localhost\": [{\"A\": \"192.0.2.12\"}],\n" \
    " \"host.onion\": [{\"A\": \"192.0.2.13\"}],\n" \
    " \"host.home.arpa\": [{\"A\": \"192.0.2.14\"}],\n" \
    "%s" \
    " \"last.example.com\": [{\"A\": \"192.0.2.255\"}]\n" \
    "}\n"

#define NLOAD 400

static void write_zone(const char *extra_names)
{
    char longtxt[301];
    mw_buf load = MW_BUF_INIT, z = MW_BUF_INIT;

    for (int i = 0; i < 300; i++)
        longtxt[i] = (char)('a' + i % 26);
    longtxt[300] = '\0';
    for (int i = 0; i < NLOAD; i++)
        mw_buf_printf(&load, " \"n%d.load.test\": [{\"A\": \"10.0.%d.%d\"}, {\"TXT\": \"load %d\"}],\n",
                      i, i / 256, i % 256, i);
    mw_buf_puts(&load, extra_names);
    mw_buf_printf(&z, ZONE_JSON_FMT, longtxt, mw_buf_cstr(&load));
    char zonefile[128];

    if (!mwt_write_file(mwt_path(&server, "zone.json", zonefile, sizeof zonefile),
                        mw_buf_cstr(&z)))
        exit(2);
    mw_buf_free(&load);
    mw_buf_free(&z);
}

static void cleanup(void)
{
    mwt_proc_stop(&server);
}

/* Does the server's query log mention s (case-insensitive substring)? */
static bool server_saw(const char *s)
{
    return mwt_testdns_lines(&server, s) > 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------------ */
/* helpers                                                                  */

static mw_dns_status q(const char *name, uint16_t type, mw_dns_answer **a)
{
    return mw_dns_query(dns, name, type, 0, a);
}

static bool addr_is(const mw_dns_rr *rr, const char *text)
{
    uint8_t got[16], want[16];
    size_t n = mw_dns_rr_addr(rr, got);
    int af = n == 4 ? AF_INET : AF_INET6;

    if (n == 0 || inet_pton(af, text, want) != 1)
        return false;
    return memcmp(got, want, n) == 0;
}

/* ------------------------------------------------------------------------ */
/* tests                                                                    */

static void test_create_errors(void)
{
    char err[256];
    const char *bad[] = { "not-an-address" };
    mw_dns_options o = { .forwarders = bad, .nforwarders = 1 };
    mw_dns *d = mw_dns_create(&o, err, sizeof err);

    MW_TEST_ASSERT(d == NULL);
    MW_TEST_ASSERT(strstr(err, "not-an-address") != NULL);
    mw_dns_destroy(&d);
    MW_TEST_ASSERT(d == NULL);

    o = (mw_dns_options){ .trust_anchor_file = "/nonexistent/root.key" };
    d = mw_dns_create(&o, err, sizeof err);
    MW_TEST_ASSERT(d == NULL);
    MW_TEST_ASSERT(strstr(err, "trust anchor") != NULL);

    MW_TEST_EQ_STR(mw_dns_status_name(MW_DNS_OK), "ok");
    MW_TEST_EQ_STR(mw_dns_status_name(MW_DNS_TEMPFAIL), "tempfail");
}

static void test_a_aaaa(void)
{
    mw_dns_answer *a = NULL;

    MW_TEST_EQ_INT(q("example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1)) {
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.1"));
        MW_TEST_EQ_INT(a->rr[0].type, MW_DNS_T_A);
    }
    MW_TEST_EQ_INT(a->rcode, 0);
    MW_TEST_EQ_STR(a->qname, "example.com");
    MW_TEST_ASSERT(a->canonname == NULL);
    MW_TEST_ASSERT(a->ttl > 0 && a->ttl <= 300);
    MW_TEST_ASSERT(!a->secure && !a->bogus && a->why == NULL);
    mw_dns_answer_free(&a);
    MW_TEST_ASSERT(a == NULL);

    MW_TEST_EQ_INT(q("EXAMPLE.COM.", MW_DNS_T_AAAA, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "2001:db8::1"));
    mw_dns_answer_free(&a);
}

static void test_txt(void)
{
    mw_dns_answer *a = NULL;
    mw_buf b = MW_BUF_INIT;
    char want[301];

    MW_TEST_EQ_INT(q("example.com", MW_DNS_T_TXT, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_txt(&a->rr[0], &b)))
        MW_TEST_EQ_STR(mw_buf_cstr(&b), "v=spf1 ip4:192.0.2.0/24 -all");
    mw_dns_answer_free(&a);

    /* 300 bytes: published as two character-strings (255 + 45), joined here. */
    for (int i = 0; i < 300; i++)
        want[i] = (char)('a' + i % 26);
    want[300] = '\0';
    MW_TEST_EQ_INT(q("long.example.com", MW_DNS_T_TXT, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1)) {
        MW_TEST_EQ_INT(a->rr[0].len, 302);
        MW_TEST_EQ_INT(a->rr[0].data[0], 255);
        MW_TEST_ASSERT(mw_dns_rr_txt(&a->rr[0], &b));
        MW_TEST_EQ_MEM(b.data, b.len, want, (size_t)300);
    }
    mw_dns_answer_free(&a);

    /* NUL and non-ASCII bytes survive. */
    MW_TEST_EQ_INT(q("bin.example.com", MW_DNS_T_TXT, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_txt(&a->rr[0], &b)))
        MW_TEST_EQ_MEM(b.data, b.len, "a\0b\xc3\xa9", (size_t)5);
    mw_dns_answer_free(&a);

    /* Per-record TTL. */
    MW_TEST_EQ_INT(q("short.example.com", MW_DNS_T_TXT, &a), MW_DNS_OK);
    MW_TEST_ASSERT(a->ttl >= 1 && a->ttl <= 5);
    mw_dns_answer_free(&a);

    /* SPF (type 99) and its TXT twin. */
    MW_TEST_EQ_INT(q("spf.example.com", MW_DNS_T_SPF, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_txt(&a->rr[0], &b)))
        MW_TEST_EQ_STR(mw_buf_cstr(&b), "v=spf1 -all");
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(q("spf.example.com", MW_DNS_T_TXT, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
    mw_buf_free(&b);
}

static void test_negative(void)
{
    mw_dns_answer *a = NULL;

    MW_TEST_EQ_INT(q("nx.example.com", MW_DNS_T_A, &a), MW_DNS_NXDOMAIN);
    MW_TEST_EQ_INT(a->rcode, 3);
    MW_TEST_EQ_INT(a->nrr, 0);
    MW_TEST_ASSERT(a->why == NULL);
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(q("nodata.example.com", MW_DNS_T_TXT, &a), MW_DNS_NODATA);
    MW_TEST_EQ_INT(a->rcode, 0);
    MW_TEST_EQ_INT(a->nrr, 0);
    mw_dns_answer_free(&a);

    /* An empty non-terminal exists: NODATA, not NXDOMAIN. */
    MW_TEST_EQ_INT(q("load.test", MW_DNS_T_A, &a), MW_DNS_NODATA);
    mw_dns_answer_free(&a);
}

static void test_cname(void)
{
    mw_dns_answer *a = NULL;
    char name[256];

    /* www -> alias -> example.com: only the A RRs in rr[]. */
    MW_TEST_EQ_INT(q("www.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.1"));
    MW_TEST_EQ_STR(a->canonname, "example.com");
    MW_TEST_EQ_STR(a->qname, "www.example.com");
    mw_dns_answer_free(&a);

    /* RFC 2317 style PTR through a CNAME. */
    MW_TEST_EQ_INT(q("5.2.0.192.in-addr.arpa", MW_DNS_T_PTR, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_name(&a->rr[0], name, sizeof name)))
        MW_TEST_EQ_STR(name, "five.example.com");
    MW_TEST_EQ_STR(a->canonname, "5.0-25.2.0.192.in-addr.arpa");
    mw_dns_answer_free(&a);

    /* Asking for the CNAME itself. */
    MW_TEST_EQ_INT(q("www.example.com", MW_DNS_T_CNAME, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_name(&a->rr[0], name, sizeof name)))
        MW_TEST_EQ_STR(name, "alias.example.com");
    mw_dns_answer_free(&a);
}

static void test_local_zones_disabled(void)
{
    mw_dns_answer *a = NULL;
    char name[256];

    MW_TEST_EQ_INT(q("1.0.0.127.in-addr.arpa", MW_DNS_T_PTR, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_name(&a->rr[0], name, sizeof name)))
        MW_TEST_EQ_STR(name, "mx.example.com");
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(q("host.test", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.10"));
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(q("host.invalid", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(q("1.1.168.192.in-addr.arpa", MW_DNS_T_PTR, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_name(&a->rr[0], name, sizeof name)))
        MW_TEST_EQ_STR(name, "lan.example.com");
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(q("1.0.0.10.in-addr.arpa", MW_DNS_T_PTR, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(q("localhost", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.12"));
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(q("host.onion", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(q("host.home.arpa", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);

    /* A name the server does not have is the server's NXDOMAIN. */
    MW_TEST_EQ_INT(q("other.test", MW_DNS_T_A, &a), MW_DNS_NXDOMAIN);
    mw_dns_answer_free(&a);
    MW_TEST_ASSERT(server_saw("other.test"));
}

static void test_mx(void)
{
    mw_dns_answer *a = NULL;
    char name[256];
    uint16_t pref = 0;
    bool saw10 = false, saw20 = false;

    MW_TEST_EQ_INT(q("example.com", MW_DNS_T_MX, &a), MW_DNS_OK);
    MW_TEST_EQ_INT(a->nrr, 2);
    for (size_t i = 0; i < a->nrr; i++) {
        MW_TEST_ASSERT(mw_dns_rr_mx(&a->rr[i], &pref, name, sizeof name));
        if (pref == 10)
            saw10 = strcmp(name, "mx.example.com") == 0;
        if (pref == 20)
            saw20 = strcmp(name, "mx2.example.com") == 0;
    }
    MW_TEST_ASSERT(saw10 && saw20);
    mw_dns_answer_free(&a);

    /* RFC 7505 null MX: the exchange is the root, shown as ".". */
    MW_TEST_EQ_INT(q("nullmx.example.com", MW_DNS_T_MX, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1) && MW_TEST_ASSERT(mw_dns_rr_mx(&a->rr[0], &pref, name, sizeof name))) {
        MW_TEST_EQ_INT(pref, 0);
        MW_TEST_EQ_STR(name, ".");
    }
    mw_dns_answer_free(&a);
}

static void test_servfail(void)
{
    mw_dns_answer *a = NULL;
    double t0 = now_ms();

    MW_TEST_EQ_INT(mw_dns_query(dns, "servfail.example.com", MW_DNS_T_TXT, 3000, &a), MW_DNS_TEMPFAIL);
    MW_TEST_ASSERT(a->why != NULL);
    fprintf(stderr, "   servfail: %s after %.0f ms\n", a->why ? a->why : "-", now_ms() - t0);
    mw_dns_answer_free(&a);
}

static void test_timeout(void)
{
    mw_dns_answer *a = NULL;
    double t0 = now_ms(), dt;

    /* The outcome and the reason are exact; the time only has a lower bound
     * (the deadline is waited for, not cut short) and a generous upper one
     * (10x: it catches a hang, not a slow machine). */
    MW_TEST_EQ_INT(mw_dns_query(dns, "silent.example.com", MW_DNS_T_TXT, 800, &a), MW_DNS_TEMPFAIL);
    dt = now_ms() - t0;
    fprintf(stderr, "   timeout: %s after %.0f ms\n", a->why ? a->why : "-", dt);
    MW_TEST_ASSERT(dt >= 700 && dt < 8000);
    MW_TEST_ASSERT(a->why && strstr(a->why, "timeout after 800 ms"));
    MW_TEST_EQ_INT(a->rcode, -1);
    mw_dns_answer_free(&a);

    /* The silent name must not take the forwarder down for other names. */
    MW_TEST_EQ_INT(q("silent.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(q("nodata.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);

    /* Several silent queries at once, abandoned while libunbound still works. */
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "silent.example.com");
        t0 = now_ms();
        MW_TEST_EQ_INT(mw_dns_query(dns, name, i == 1 ? MW_DNS_T_MX : MW_DNS_T_AAAA, 300, &a),
                       MW_DNS_TEMPFAIL);
        MW_TEST_ASSERT(now_ms() - t0 < 3000);      /* 10x: a hang, not a slow run */
        mw_dns_answer_free(&a);
    }
    MW_TEST_EQ_INT(q("last.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
}

/* Refused names never reach libunbound: checked by its query counter
 * (deterministic), not by how fast the calls return. */
static uint64_t upstream(void)
{
    mw_dns_stats st;
    mw_dns_get_stats(dns, &st);
    return st.upstream;
}

static void test_invalid_names(void)
{
    mw_dns_answer *a = NULL;
    char name[400];
    uint64_t up0 = upstream();

    const char *bad[] = { "", "a..invalidcheck.example.com", ".invalidcheck.example.com",
                          "invalidcheck..", "x\\", "x\\25", "x\\999.invalidcheck.test" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        MW_TEST_EQ_INT(q(bad[i], MW_DNS_T_TXT, &a), MW_DNS_PERMFAIL);
        MW_TEST_ASSERT(a->why && strstr(a->why, "invalid name"));
        MW_TEST_EQ_STR(a->qname, bad[i]);
        mw_dns_answer_free(&a);
    }
    MW_TEST_EQ_INT(q(NULL, MW_DNS_T_TXT, &a), MW_DNS_PERMFAIL);
    mw_dns_answer_free(&a);

    /* 64-byte label. */
    memset(name, 'l', 64);
    snprintf(name + 64, sizeof name - 64, ".invalidcheck.test");
    MW_TEST_EQ_INT(q(name, MW_DNS_T_A, &a), MW_DNS_PERMFAIL);
    mw_dns_answer_free(&a);
    MW_TEST_EQ_INT(upstream() - up0, 0);
    /* 63 is fine (and goes to the server). */
    memset(name, 'k', 63);
    snprintf(name + 63, sizeof name - 63, ".validlabel.test");
    MW_TEST_EQ_INT(q(name, MW_DNS_T_A, &a), MW_DNS_NXDOMAIN);
    mw_dns_answer_free(&a);

    /* 253 bytes (+ a trailing dot) is fine, 254 is too long. */
    name[0] = '\0';
    while (strlen(name) < 240)
        strcat(name, "abcdefghi.");
    strcat(name, "toolongcheckx");
    MW_TEST_EQ_INT(strlen(name), 253);
    MW_TEST_EQ_INT(q(name, MW_DNS_T_A, &a), MW_DNS_NXDOMAIN);
    mw_dns_answer_free(&a);
    strcat(name, ".");
    MW_TEST_EQ_INT(q(name, MW_DNS_T_TXT, &a), MW_DNS_NXDOMAIN);
    mw_dns_answer_free(&a);
    memcpy(name + 240, "invalidcheckxy", 15);
    MW_TEST_EQ_INT(strlen(name), 254);
    MW_TEST_EQ_INT(q(name, MW_DNS_T_A, &a), MW_DNS_PERMFAIL);
    MW_TEST_ASSERT(a->why && strstr(a->why, "253"));
    mw_dns_answer_free(&a);

    MW_TEST_EQ_INT(upstream() - up0, 3);          /* validlabel, toolongcheck x2 */
    MW_TEST_ASSERT(!server_saw("invalidcheck"));
    MW_TEST_ASSERT(server_saw("validlabel"));
    MW_TEST_ASSERT(server_saw("toolongcheck"));
}

static void test_truncated(void)
{
    mw_dns_answer *a = NULL;

    MW_TEST_EQ_INT(q("tc.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.4"));
    mw_dns_answer_free(&a);
    MW_TEST_ASSERT(server_saw("tcp tc.example.com"));
}

static void test_rdata_helpers(void)
{
    mw_buf b = MW_BUF_INIT;
    char out[64];
    uint16_t pref;
    uint8_t ab[16];
    unsigned char txt_bad[] = { 5, 'a', 'b' };
    unsigned char txt_empty[] = { 0 };
    unsigned char name_odd[] = { 3, 'a', '.', 'b', 2, 0x01, ' ', 0 };
    unsigned char name_ptr[] = { 1, 'a', 0xc0, 0x0c };
    unsigned char name_trail[] = { 1, 'a', 0, 'x' };
    unsigned char mx[] = { 0, 5, 2, 'm', 'x', 0 };
    unsigned char a4[] = { 192, 0, 2, 1 };
    mw_dns_rr rr;

    rr = (mw_dns_rr){ MW_DNS_T_TXT, 0, sizeof txt_bad, txt_bad };
    MW_TEST_ASSERT(!mw_dns_rr_txt(&rr, &b));
    rr = (mw_dns_rr){ MW_DNS_T_TXT, 0, sizeof txt_empty, txt_empty };
    MW_TEST_ASSERT(mw_dns_rr_txt(&rr, &b));
    MW_TEST_EQ_INT(b.len, 0);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "");
    rr = (mw_dns_rr){ MW_DNS_T_TXT, 0, 0, txt_empty };
    MW_TEST_ASSERT(!mw_dns_rr_txt(&rr, &b));

    rr = (mw_dns_rr){ MW_DNS_T_PTR, 0, sizeof name_odd, name_odd };
    MW_TEST_ASSERT(mw_dns_rr_name(&rr, out, sizeof out));
    MW_TEST_EQ_STR(out, "a\\046b.\\001\\032");
    MW_TEST_ASSERT(!mw_dns_rr_name(&rr, out, 8));          /* does not fit */
    rr = (mw_dns_rr){ MW_DNS_T_PTR, 0, sizeof name_ptr, name_ptr };
    MW_TEST_ASSERT(!mw_dns_rr_name(&rr, out, sizeof out));
    rr = (mw_dns_rr){ MW_DNS_T_PTR, 0, sizeof name_trail, name_trail };
    MW_TEST_ASSERT(!mw_dns_rr_name(&rr, out, sizeof out));
    rr = (mw_dns_rr){ MW_DNS_T_PTR, 0, 2, name_trail };     /* unterminated */
    MW_TEST_ASSERT(!mw_dns_rr_name(&rr, out, sizeof out));

    rr = (mw_dns_rr){ MW_DNS_T_MX, 0, sizeof mx, mx };
    MW_TEST_ASSERT(mw_dns_rr_mx(&rr, &pref, out, sizeof out));
    MW_TEST_EQ_INT(pref, 5);
    MW_TEST_EQ_STR(out, "mx");
    rr.len = 2;
    MW_TEST_ASSERT(!mw_dns_rr_mx(&rr, &pref, out, sizeof out));

    rr = (mw_dns_rr){ MW_DNS_T_A, 0, sizeof a4, a4 };
    MW_TEST_EQ_INT(mw_dns_rr_addr(&rr, ab), 4);
    MW_TEST_EQ_MEM(ab, (size_t)4, a4, (size_t)4);
    rr.type = MW_DNS_T_AAAA;
    MW_TEST_EQ_INT(mw_dns_rr_addr(&rr, ab), 0);
    mw_buf_free(&b);
}

static void test_reload(void)
{
    mw_dns_answer *a = NULL;
    struct timespec ts = { 0, 20 * 1000000L };

    write_zone(" \"reloaded.example.com\": [{\"A\": \"192.0.2.77\"}],\n");
    kill(server.pid, SIGHUP);
    /* event-driven: the server logs its reload; 30 s only bounds a hang */
    for (int i = 0; i < 1500 && !server_saw("reloaded "); i++)
        nanosleep(&ts, NULL);
    MW_TEST_ASSERT(server_saw("reloaded "));
    MW_TEST_EQ_INT(q("reloaded.example.com", MW_DNS_T_A, &a), MW_DNS_OK);
    if (MW_TEST_EQ_INT(a->nrr, 1))
        MW_TEST_ASSERT(addr_is(&a->rr[0], "192.0.2.77"));
    mw_dns_answer_free(&a);
}

/* 8 threads x 200 queries, overlapping names so some are in flight twice. */
#define NTHREADS 8
#define NQUERIES 200

static void *load_thread(void *arg)
{
    long t = (long)arg, bad = 0;
    mw_buf b = MW_BUF_INIT;

    for (int j = 0; j < NQUERIES; j++) {
        int idx = (int)((t * 53 + j * 7) % NLOAD);
        char name[64], want[32];
        mw_dns_answer *a = NULL;
        uint16_t type = (j & 1) ? MW_DNS_T_TXT : MW_DNS_T_A;

        snprintf(name, sizeof name, "n%d.load.test", idx);
        if (mw_dns_query(dns, name, type, 5000, &a) != MW_DNS_OK || a->nrr != 1) {
            fprintf(stderr, "   %s: %s %s\n", name, mw_dns_status_name(a->status), a->why ? a->why : "");
            bad++;
        } else if (type == MW_DNS_T_A) {
            uint8_t ip[16];
            if (mw_dns_rr_addr(&a->rr[0], ip) != 4 || ip[0] != 10 || ip[1] != 0 ||
                ip[2] != idx / 256 || ip[3] != idx % 256)
                bad++;
        } else {
            snprintf(want, sizeof want, "load %d", idx);
            if (!mw_dns_rr_txt(&a->rr[0], &b) || strcmp(mw_buf_cstr(&b), want) != 0)
                bad++;
        }
        mw_dns_answer_free(&a);
    }
    mw_buf_free(&b);
    return (void *)bad;
}

static void test_concurrent(void)
{
    pthread_t th[NTHREADS];
    long bad_total = 0;
    double t0 = now_ms();

    for (long t = 0; t < NTHREADS; t++)
        MW_TEST_ASSERT(pthread_create(&th[t], NULL, load_thread, (void *)t) == 0);
    for (int t = 0; t < NTHREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad_total += (long)r;
    }
    fprintf(stderr, "   %d queries in %.0f ms\n", NTHREADS * NQUERIES, now_ms() - t0);
    MW_TEST_EQ_INT(bad_total, 0);
}

/*
 * Deadlines of 1-31 ms against uncached names: answers arrive around the
 * deadline, exercising the cancel/callback race (run under ASan and TSan).
 */
static atomic_int race_answered, race_timedout;

static void *race_thread(void *arg)
{
    long t = (long)arg, bad = 0;

    for (int j = 0; j < 100; j++) {
        char name[64];
        mw_dns_answer *a = NULL;
        mw_dns_status st;

        snprintf(name, sizeof name, "r%ld-%d.race.test", t, j);
        st = mw_dns_query(dns, name, MW_DNS_T_A, 1 + (unsigned)(j % 16) * 2, &a);
        if (st == MW_DNS_NXDOMAIN)
            atomic_fetch_add(&race_answered, 1);
        else if (st == MW_DNS_TEMPFAIL && a->why && strstr(a->why, "timeout"))
            atomic_fetch_add(&race_timedout, 1);
        else
            bad++;
        mw_dns_answer_free(&a);
    }
    return (void *)bad;
}

static void test_deadline_race(void)
{
    pthread_t th[NTHREADS];
    long bad_total = 0;

    for (long t = 0; t < NTHREADS; t++)
        MW_TEST_ASSERT(pthread_create(&th[t], NULL, race_thread, (void *)t) == 0);
    for (int t = 0; t < NTHREADS; t++) {
        void *r = NULL;
        pthread_join(th[t], &r);
        bad_total += (long)r;
    }
    fprintf(stderr, "   %d answered, %d timed out\n", atomic_load(&race_answered),
            atomic_load(&race_timedout));
    MW_TEST_EQ_INT(bad_total, 0);
}

/* use_tcp: every query over TCP; no options: recursion set-up (no query made). */
static void test_options(void)
{
    char fwd[64], err[256];
    const char *fwds[1] = { fwd };
    mw_dns_options o = { .forwarders = fwds, .nforwarders = 1, .use_tcp = true };
    mw_dns_answer *a = NULL;
    mw_dns *d;

    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", server.port);
    d = mw_dns_create(&o, err, sizeof err);
    if (!MW_TEST_ASSERT(d != NULL))
        return;
    MW_TEST_EQ_INT(mw_dns_query(d, "nodata.example.com", MW_DNS_T_A, 10000, &a), MW_DNS_OK);
    mw_dns_answer_free(&a);
    MW_TEST_ASSERT(server_saw("tcp nodata.example.com"));
    mw_dns_destroy(&d);

    d = mw_dns_create(NULL, err, sizeof err);
    MW_TEST_ASSERT(d != NULL);
    mw_dns_destroy(&d);
}

int main(void)
{
    char fwd[64], err[256];
    const char *fwds[1] = { fwd };
    /* A generous default deadline: answers from the local server must not
     * race it on a loaded machine (the timeout tests pass their own). */
    mw_dns_options o = { .forwarders = fwds, .nforwarders = 1, .timeout_ms = 10000 };

    if (!mwt_proc_dir(&server, "dns"))
        return 2;
    atexit(cleanup);
    write_zone("");
    if (!mwt_testdns_start(&server, "dns", NULL)) {
        fprintf(stderr, "cannot start the test DNS server (see %s/log)\n", server.dir);
        return 1;
    }
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", server.port);

    MW_TEST_RUN(test_create_errors);
    MW_TEST_RUN(test_rdata_helpers);

    dns = mw_dns_create(&o, err, sizeof err);
    if (!MW_TEST_ASSERT(dns != NULL)) {
        fprintf(stderr, "mw_dns_create: %s\n", err);
        return MW_TEST_SUMMARY();
    }
    MW_TEST_RUN(test_a_aaaa);
    MW_TEST_RUN(test_txt);
    MW_TEST_RUN(test_negative);
    MW_TEST_RUN(test_cname);
    MW_TEST_RUN(test_local_zones_disabled);
    MW_TEST_RUN(test_mx);
    MW_TEST_RUN(test_invalid_names);
    MW_TEST_RUN(test_truncated);
    MW_TEST_RUN(test_servfail);
    MW_TEST_RUN(test_timeout);
    MW_TEST_RUN(test_reload);
    MW_TEST_RUN(test_concurrent);
    MW_TEST_RUN(test_deadline_race);
    MW_TEST_RUN(test_options);
    mw_dns_destroy(&dns);
    MW_TEST_ASSERT(dns == NULL);
    return MW_TEST_SUMMARY();
}
