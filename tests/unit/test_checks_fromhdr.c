/*
 * test_checks_fromhdr.c - header From parsing, including the hostile forms
 * that bypassed or crashed OpenDMARC.
 */
#include <stdio.h>
#include <string.h>

#include "fromhdr.h"
#include "mwtest.h"

static void expect(const char *v, size_t len, mw_from_status st, const char *domain)
{
    mw_from f;
    mw_from_status got = mw_from_parse(v, len, &f);
    if (!MW_TEST_EQ_INT(got, st))
        fprintf(stderr, "  value: [%.*s] why=%s\n", (int)len, v, f.why ? f.why : "-");
    if (st == MW_FROM_OK && got == MW_FROM_OK)
        MW_TEST_EQ_STR(f.domain[0], domain);
    mw_from_clear(&f);
}
#define E(v, st, d) expect((v), strlen(v), (st), (d))

static void test_plain(void)
{
    E("alice@example.com", MW_FROM_OK, "example.com");
    E(" Alice <alice@Example.COM>", MW_FROM_OK, "example.com");
    E("\"Alice Smith\" <alice@example.com>", MW_FROM_OK, "example.com");
    E("alice@example.com (Alice)", MW_FROM_OK, "example.com");
    E("(comment (nested \\) paren)) <alice@example.com.>", MW_FROM_OK, "example.com");
    E("Alice\r\n\t<alice@example.com>", MW_FROM_OK, "example.com");
    E("=?utf-8?q?J=C3=B6rg?= <jorg@example.de>", MW_FROM_OK, "example.de");
    E("\"quoted@evil.example\" <alice@good.example>", MW_FROM_OK, "good.example");
    E("\"a\\\"b\" <x@good.example>", MW_FROM_OK, "good.example");
    E("\"odd local\"@example.com", MW_FROM_OK, "example.com");
    E("<@route.example:user@final.example>", MW_FROM_OK, "final.example");
    E("friends: alice@example.com;", MW_FROM_OK, "example.com");
}

static void test_bad(void)
{
    E("", MW_FROM_EMPTY, NULL);
    E("   ", MW_FROM_EMPTY, NULL);
    E("undisclosed-recipients:;", MW_FROM_EMPTY, NULL);
    E("alice@example.com, bob@example.org", MW_FROM_MULTIPLE, NULL);
    E("alice@example.com, bob", MW_FROM_MULTIPLE, NULL);
    E("alice@example.com, bob@sub.example.com", MW_FROM_MULTIPLE, NULL);
    E("friends: a@x.example, b@y.example;", MW_FROM_MULTIPLE, NULL);
    E("alice", MW_FROM_NODOMAIN, NULL);
    E("Alice <alice>", MW_FROM_NODOMAIN, NULL);
    E("user@[192.0.2.1]", MW_FROM_NODOMAIN, NULL);
    /* ambiguity and syntax errors: never guess */
    E("user@good.example <evil@bad.example>", MW_FROM_UNPARSABLE, NULL);
    E("Alice <alice@example.com", MW_FROM_UNPARSABLE, NULL);
    E("Alice alice@example.com>", MW_FROM_UNPARSABLE, NULL);
    E("<a@x.example> <b@y.example>", MW_FROM_UNPARSABLE, NULL);
    E("\"unterminated <a@x.example>", MW_FROM_UNPARSABLE, NULL);
    E("(unterminated a@x.example", MW_FROM_UNPARSABLE, NULL);
    E("a@x.example)", MW_FROM_UNPARSABLE, NULL);
    E("a@@x.example", MW_FROM_UNPARSABLE, NULL);
    E("a@b@x.example", MW_FROM_UNPARSABLE, NULL);
    E("a@x..example", MW_FROM_UNPARSABLE, NULL);
    E("a@-x.example", MW_FROM_UNPARSABLE, NULL);
    E("a@x.example; b@y.example", MW_FROM_UNPARSABLE, NULL);
    E("group: a@x.example", MW_FROM_UNPARSABLE, NULL);
    E("g1: g2: a@x.example;;", MW_FROM_UNPARSABLE, NULL);
    E("a@\xc3\xa9" "xample\xff.com", MW_FROM_UNPARSABLE, NULL);        /* not UTF-8 */
    E("a@exa\xe2\x80\xa8" "mple.com", MW_FROM_UNPARSABLE, NULL);   /* LINE SEPARATOR: disallowed */
    E("Alice <a@x.example> trailing", MW_FROM_UNPARSABLE, NULL);
    E("a b@x.example", MW_FROM_UNPARSABLE, NULL);
    /* embedded NUL: the length is authoritative */
    expect("a@good.example\0@evil.example", 28, MW_FROM_UNPARSABLE, NULL);
}

/* RFC 9989: several addresses all in one domain are one Author Domain. */
static void test_one_domain(void)
{
    E("alice@example.com, bob@example.com", MW_FROM_OK, "example.com");
    E("Alice <alice@Example.com>, \"Bob\" <bob@EXAMPLE.COM.>", MW_FROM_OK, "example.com");
    E("team: a@example.com, b@example.com;", MW_FROM_OK, "example.com");
    mw_from f;
    MW_TEST_EQ_INT(mw_from_parse("a@example.com, b@example.com", 28, &f), MW_FROM_OK);
    MW_TEST_EQ_INT(f.naddr, 2);
    mw_from_clear(&f);
    /* more addresses than are kept: the unseen ones could be anywhere */
    char big[64 * 20] = "";
    for (int i = 0; i <= MW_FROM_MAX_ADDRS; i++)
        strcat(big, i ? ", a@example.com" : "a@example.com");
    E(big, MW_FROM_MULTIPLE, NULL);
}

/* A U-label domain (RFC 6532) is its A-label: an IDN domain's policy applies. */
static void test_idn(void)
{
    E("ceo@b\xc3\xbc" "cher.example", MW_FROM_OK, "xn--bcher-kva.example");
    E("Ceo <ceo@B\xc3\x9c" "CHER.example>", MW_FROM_OK, "xn--bcher-kva.example");    /* UTS #46 maps case */
    E("a@\xc3\xa9" "xample.com", MW_FROM_OK, "xn--xample-9ua.com");
    E("a@fa\xc3\x9f.de", MW_FROM_OK, "xn--fa-hia.de");                          /* non-transitional: ß kept */
    E("a@xn--bcher-kva.example", MW_FROM_OK, "xn--bcher-kva.example");
    /* UTS #46 drops a ZERO WIDTH SPACE: the look-alike is the real domain,
     * so that domain's policy applies (never a way around it) */
    E("a@exa\xe2\x80\x8b" "mple.com", MW_FROM_OK, "example.com");
    E("a@b\xc3\xbc" "cher.example, b@xn--bcher-kva.example", MW_FROM_OK, "xn--bcher-kva.example");
}

/* RFC 5322 obs-domain: atoms and dots with CFWS between them are one name. */
static void test_obs_domain(void)
{
    E("CEO <ceo@victim ().test>", MW_FROM_OK, "victim.test");
    E("CEO <ceo@victim\r\n .test>", MW_FROM_OK, "victim.test");
    E("ceo@victim. (c) test", MW_FROM_OK, "victim.test");
    E("ceo@victim test", MW_FROM_UNPARSABLE, NULL);          /* no dot between: not a name */
    E("ceo@victim.test\xe3\x80\x82", MW_FROM_OK, "victim.test");   /* U+3002: trailing dot stripped */
}

struct found { char d[8][64]; int n; };
static void on_found(void *arg, const char *d)
{
    struct found *f = arg;
    if (f->n < 8)
        snprintf(f->d[f->n++], sizeof f->d[0], "%s", d);
}

/* What a reader sees in a From the parser gave up on (found by review:
 * these spoofs of a p=reject domain were delivered). */
static void test_recover(void)
{
    static const struct { const char *v; const char *want; bool unreadable; } cases[] = {
        {"ceo@\"victim.test\"", "victim.test", false},
        {"CEO <ceo@victim.test\xe2\x80\x8e>", "victim.test", false},       /* LRM */
        {"CEO <ceo@\xe2\x80\x8evictim.test>", "victim.test", false},
        {"CEO <ceo@victim.test\xe2\x80\xae>", "victim.test", false},       /* RLO */
        {"CEO <ceo@vic\xe1\xa0\x8e" "tim.test>", "victim.test", false},     /* U+180E */
        {"CEO <ceo@victim.test\xa0>", "victim.test", false},                 /* invalid UTF-8 */
        {"ceo@[victim.test]", "victim.test", false},
        {"ceo@victim ().test (x) <y", "victim.test", false},
        {"a@victim.test extra words @ nothing", "victim.test", false},
        {"ceo@[192.0.2.1]", NULL, false},
        {"Support @ Company <x", NULL, false},
        {"ceo@vic\xe2\x80\xa8tim.test", "victim.test", false},            /* LINE SEPARATOR: blank */
        {"ceo@xn--.test", NULL, true},                                     /* looks like one, is none */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct found f = {.n = 0};
        bool unreadable = false;
        mw_from_recover_domains(cases[i].v, strlen(cases[i].v), on_found, &f, &unreadable);
        if (cases[i].want) {
            if (!MW_TEST_EQ_INT(f.n, 1) || !MW_TEST_EQ_STR(f.d[0], cases[i].want))
                fprintf(stderr, "  value: [%s]\n", cases[i].v);
        } else if (!MW_TEST_EQ_INT(f.n, 0)) {
            fprintf(stderr, "  value: [%s] gave %s\n", cases[i].v, f.d[0]);
        }
        if (!MW_TEST_EQ_INT(unreadable, cases[i].unreadable))
            fprintf(stderr, "  value: [%s]\n", cases[i].v);
    }
}

static void test_huge(void)
{
    /* many addresses, deep comments, a long value: bounded, no crash */
    static char big[200000];
    size_t n = 0;
    while (n + 20 < sizeof big) {
        memcpy(big + n, "a@x.example, ", 13);
        n += 13;
    }
    expect(big, n, MW_FROM_UNPARSABLE, NULL);   /* token limit */
    mw_from f;
    MW_TEST_EQ_INT(mw_from_parse(big, 13 * 100, &f), MW_FROM_MULTIPLE);
    MW_TEST_EQ_INT(f.naddr, 100);
    mw_from_clear(&f);
    memset(big, '(', 100000);
    expect(big, 100000, MW_FROM_UNPARSABLE, NULL);
    memset(big, 'a', 100000);
    memcpy(big + 100000, "@x.example", 10);
    expect(big, 100010, MW_FROM_OK, "x.example");
}

int main(void)
{
    MW_TEST_RUN(test_plain);
    MW_TEST_RUN(test_bad);
    MW_TEST_RUN(test_one_domain);
    MW_TEST_RUN(test_idn);
    MW_TEST_RUN(test_obs_domain);
    MW_TEST_RUN(test_recover);
    MW_TEST_RUN(test_huge);
    return MW_TEST_SUMMARY();
}
