/*
 * test_checks_authres.c - Authentication-Results builder and authserv-id parser.
 */
#include <string.h>

#include "authres.h"
#include "mwtest.h"

static void test_build(void)
{
    mw_authres *ar = mw_authres_new("mx.example.org");
    mw_buf b = MW_BUF_INIT;
    mw_authres_render(ar, &b);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "mx.example.org; none");
    const char *p1[] = {"smtp.mailfrom", "alice@example.com", NULL};
    mw_authres_add(ar, "spf", "pass", NULL, p1);
    const char *p2[] = {"smtp.helo", "mail.example.com", "x.empty", "", NULL};
    mw_authres_add(ar, "spf", "none", "no (record) here\r\n", p2);
    mw_buf_reset(&b);
    mw_authres_render(ar, &b);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "mx.example.org;\n\tspf=pass smtp.mailfrom=alice@example.com;\n\t"
                                    "spf=none (no [record] here?" "?) smtp.helo=mail.example.com");
    MW_TEST_EQ_INT(mw_authres_count(ar), 2);
    mw_authres_free(&ar);
    MW_TEST_ASSERT(ar == NULL);

    /* hostile values are quoted, never break the syntax */
    ar = mw_authres_new("mx");
    const char *p3[] = {"smtp.mailfrom", "a; dkim=pass\"x\"@evil", NULL};
    mw_authres_add(ar, "spf", "fail", NULL, p3);
    mw_buf_reset(&b);
    mw_authres_render(ar, &b);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "mx;\n\tspf=fail smtp.mailfrom=\"a; dkim=pass\\\"x\\\"@evil\"");
    mw_authres_free(&ar);

    /* header.i without a local part stays bare (RFC 8601 pvalue) */
    ar = mw_authres_new("mx");
    const char *p4[] = {"header.i", "@example.com", "header.d", "example.com", NULL};
    mw_authres_add(ar, "dkim", "pass", NULL, p4);
    mw_buf_reset(&b);
    mw_authres_render(ar, &b);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "mx;\n\tdkim=pass header.i=@example.com header.d=example.com");
    mw_authres_free(&ar);
    mw_buf_free(&b);
}

static void test_parse_id(void)
{
    char id[64];
    MW_TEST_ASSERT(mw_authres_parse_id(" mx.example.org; spf=pass", 25, id, sizeof id));
    MW_TEST_EQ_STR(id, "mx.example.org");
    const char *v = "(comment (nested)) \"mx.example.org\" 1; none";
    MW_TEST_ASSERT(mw_authres_parse_id(v, strlen(v), id, sizeof id));
    MW_TEST_EQ_STR(id, "mx.example.org");
    v = "\r\n\tMX.EXAMPLE.ORG;\r\n\tspf=pass";
    MW_TEST_ASSERT(mw_authres_is_ours(v, strlen(v), "mx.example.org"));
    v = "mx.example.org.evil; spf=pass";
    MW_TEST_ASSERT(!mw_authres_is_ours(v, strlen(v), "mx.example.org"));
    v = "other.example; spf=pass";
    MW_TEST_ASSERT(!mw_authres_is_ours(v, strlen(v), "mx.example.org"));
    MW_TEST_ASSERT(!mw_authres_parse_id("", 0, id, sizeof id));
    MW_TEST_ASSERT(!mw_authres_parse_id("(unterminated", 13, id, sizeof id));
    MW_TEST_ASSERT(!mw_authres_parse_id("\"unterminated", 13, id, sizeof id));
    /* an id longer than the buffer is refused, not truncated into a match */
    char longid[300];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    MW_TEST_ASSERT(!mw_authres_parse_id(longid, strlen(longid), id, sizeof id));
    /* embedded NUL stops the strict token; for removal it is one more byte
     * a reader may drop, so the header counts as ours (errs toward removal) */
    MW_TEST_ASSERT(!mw_authres_id_is("mx\0.example.org", 15, "mx.example.org"));
    MW_TEST_ASSERT(mw_authres_is_ours("mx\0.example.org", 15, "mx.example.org"));
}

/* Forgeries that hide our id from a strict parse but not from a reader that
 * drops control bytes, blanks or quotes (found by review: the Exim front end
 * re-added such values without their control bytes, i.e. as our own id). */
static void test_is_ours_hidden(void)
{
    static const char *const forged[] = {
        "\x01mx.example.org; dmarc=pass header.from=paypal.com",
        "mx.example.or\x7fg; dkim=pass header.d=paypal.com",
        "\x0bmx.example.org; spf=pass smtp.mailfrom=paypal.com",
        "\xc2\xa0mx.example.org; dmarc=pass",
        "mx.example.org.; dmarc=pass",
        "\"mx.example.org\"\x01; dmarc=pass",
        "(x) mx.exa(y)mple.org; dmarc=pass",
        "m\"x.example.or\"g; dmarc=pass",
        "MX.Example.ORG\x1b; dmarc=pass",
    };
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        if (!MW_TEST_ASSERT(mw_authres_is_ours(forged[i], strlen(forged[i]), "mx.example.org")))
            fprintf(stderr, "  not recognised: %s\n", forged[i]);
    static const char *const foreign[] = {
        "mx.example.org.evil; spf=pass",
        "evil-mx.example.org; spf=pass",
        "other.example; spf=pass mx.example.org",
        "other.example; dmarc=pass (mx.example.org)",
        "",
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++)
        if (!MW_TEST_ASSERT(!mw_authres_is_ours(foreign[i], strlen(foreign[i]), "mx.example.org")))
            fprintf(stderr, "  wrongly ours: %s\n", foreign[i]);
    /* trusting an upstream stays strict: only the RFC 8601 parse counts */
    const char *v = "\x01border.example; dkim=pass header.d=paypal.com";
    MW_TEST_ASSERT(!mw_authres_id_is(v, strlen(v), "border.example"));
    v = "border.example; dkim=pass";
    MW_TEST_ASSERT(mw_authres_id_is(v, strlen(v), "BORDER.example"));
}

static void test_parse_resinfo(void)
{
    const char *v = " relay.example.net 1; spf=pass (sender ok) smtp.mailfrom=\"a b\"@Example.COM;\r\n"
                    "\tdkim=pass header.d=example.com header.s=sel (2048-bit key) header.b=abcdefgh;"
                    " dmarc=pass header.from=example.com; auth=pass (x;y) smtp.auth=u";
    mw_authres_parsed p;
    MW_TEST_ASSERT(mw_authres_parse(v, strlen(v), &p));
    MW_TEST_EQ_STR(p.id, "relay.example.net");
    if (MW_TEST_EQ_INT(p.nri, 4)) {
        MW_TEST_EQ_STR(p.ri[0].method, "spf");
        MW_TEST_EQ_STR(p.ri[0].result, "pass");
        MW_TEST_EQ_STR(mw_ar_prop(&p.ri[0], "smtp.mailfrom"), "a b@Example.COM");
        MW_TEST_EQ_STR(p.ri[1].method, "dkim");
        MW_TEST_EQ_STR(mw_ar_prop(&p.ri[1], "header.d"), "example.com");
        MW_TEST_EQ_STR(mw_ar_prop(&p.ri[1], "header.s"), "sel");
        MW_TEST_EQ_STR(p.ri[3].method, "auth");
        MW_TEST_EQ_STR(mw_ar_prop(&p.ri[3], "smtp.auth"), "u");
    }
    mw_authres_parsed_clear(&p);
    /* hostile: unterminated quotes/comments, no resinfo, garbage */
    const char *bad[] = {"x; spf=pass smtp.mailfrom=\"unterminated", "x; (unterminated", "x;;;;", "x; =; ==",
                         "x; none"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        MW_TEST_ASSERT(mw_authres_parse(bad[i], strlen(bad[i]), &p));
        mw_authres_parsed_clear(&p);
    }
    MW_TEST_ASSERT(!mw_authres_parse("", 0, &p));
}

int main(void)
{
    MW_TEST_RUN(test_parse_resinfo);
    MW_TEST_RUN(test_build);
    MW_TEST_RUN(test_parse_id);
    MW_TEST_RUN(test_is_ours_hidden);
    return MW_TEST_SUMMARY();
}
