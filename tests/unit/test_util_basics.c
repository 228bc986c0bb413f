/*
 * test_util_basics.c - buf, strutil, cidr and json.
 */
#include <arpa/inet.h>
#include <string.h>

#include "buf.h"
#include "cidr.h"
#include "json.h"
#include "strutil.h"
#include "mwtest.h"

static void test_buf(void)
{
    mw_buf b = MW_BUF_INIT;
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "");
    mw_buf_append(&b, "a\0b", 3);
    MW_TEST_EQ_INT(b.len, 3);
    MW_TEST_ASSERT(memcmp(b.data, "a\0b", 3) == 0 && b.data[3] == '\0');
    mw_buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        mw_buf_printf(&b, "%d,", i);
    MW_TEST_ASSERT(b.len > 3000 && strncmp(b.data, "0,1,2,", 6) == 0);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mw_buf_reset(&b);
    mw_buf_printf(&b, "<%s>", big);
    MW_TEST_EQ_INT(b.len, sizeof big + 1);
    char *s = mw_buf_steal(&b);
    MW_TEST_ASSERT(s[0] == '<' && b.len == 0 && b.data == NULL);
    free(s);
    mw_buf_free(&b);
}

static void test_strutil(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_str_printable(&b, "a\r\nb\"\\\xff", 7, 0);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "a\\x0d\\x0ab\\x22\\x5c\\xff");
    mw_buf_reset(&b);
    mw_str_printable(&b, "abcdef", 6, 3);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "abc...");
    mw_buf_free(&b);
    MW_TEST_ASSERT(mw_str_ieq("MX.Example", 10, "mx.example", 10));
    MW_TEST_ASSERT(!mw_str_ieq("mx.example", 10, "mx.exampl", 9));
    MW_TEST_EQ_STR(mw_addr_domain("a@b@c.example"), "c.example");
    MW_TEST_EQ_STR(mw_addr_domain("helo.example"), "helo.example");
    char *p = mw_addr_strip(" <a@b.example> ");
    MW_TEST_EQ_STR(p, "a@b.example");
    free(p);
    p = mw_addr_strip("<>");
    MW_TEST_EQ_STR(p, "");
    free(p);
    MW_TEST_ASSERT(mw_glob_match("*.example.com", "a.b.EXAMPLE.com"));
    MW_TEST_ASSERT(!mw_glob_match("*.example.com", "example.com"));
    MW_TEST_ASSERT(mw_glob_match("ex?mple.*", "example.org"));
    MW_TEST_ASSERT(mw_domain_valid("mail.example.com"));
    MW_TEST_ASSERT(mw_domain_valid("example.com."));
    MW_TEST_ASSERT(!mw_domain_valid("a..b"));
    MW_TEST_ASSERT(!mw_domain_valid("-a.b"));
    MW_TEST_ASSERT(!mw_domain_valid("[192.0.2.1]"));
    MW_TEST_ASSERT(!mw_domain_valid(""));
}

static void test_cidr(void)
{
    mw_cidr_set *s = mw_cidr_set_new();
    char why[128];
    MW_TEST_ASSERT(mw_cidr_set_add(s, "10.0.0.0/8", why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_set_add(s, "2001:db8::/32", why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_set_add(s, "192.0.2.7", why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_set_add(s, "10.0.0.1/8", why, sizeof why) && strstr(why, "host bits"));
    MW_TEST_ASSERT(!mw_cidr_set_add(s, "10.0.0.0/33", why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_set_add(s, "10.0.0.0/", why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_set_add(s, "nonsense", why, sizeof why));
    MW_TEST_ASSERT(!mw_cidr_set_add(s, "10.0.0.0/-1", why, sizeof why));
    MW_TEST_EQ_INT(mw_cidr_set_count(s), 3);
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "10.200.3.4"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "::ffff:10.1.2.3"));   /* mapped */
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "2001:db8:1::5"));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(s, "192.0.2.7"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(s, "192.0.2.8"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(s, "11.0.0.1"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(s, "garbage"));
    mw_cidr_set_free(&s);
    MW_TEST_ASSERT(s == NULL);

    mw_cidr_set *z = mw_cidr_set_new();
    MW_TEST_ASSERT(mw_cidr_set_add(z, "0.0.0.0/0", why, sizeof why));
    MW_TEST_ASSERT(mw_cidr_set_contains_str(z, "203.0.113.1"));
    MW_TEST_ASSERT(!mw_cidr_set_contains_str(z, "2001:db8::1"));
    mw_cidr_set_free(&z);

    mw_addr a;
    char buf[64];
    MW_TEST_ASSERT(mw_addr_parse("IPv6:2001:db8::1", &a) && a.family == AF_INET6);
    MW_TEST_ASSERT(mw_addr_parse("[192.0.2.1]", &a) && a.family == AF_INET);
    MW_TEST_ASSERT(mw_addr_parse("::ffff:192.0.2.1", &a));
    mw_addr_unmap(&a);
    MW_TEST_EQ_STR(mw_addr_format(&a, buf, sizeof buf), "192.0.2.1");
}

static void test_json(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_json w;
    mw_json_init(&w, &b);
    mw_json_obj_begin(&w);
    mw_json_key(&w, "s");
    mw_json_string_n(&w, "a\"b\\c\n\x01\xff\xc3\xa9", 10);
    mw_json_key(&w, "n");
    mw_json_int(&w, -5);
    mw_json_key(&w, "a");
    mw_json_arr_begin(&w);
    mw_json_arr_begin(&w);
    mw_json_string(&w, "x");
    mw_json_int(&w, 1);
    mw_json_arr_end(&w);
    mw_json_null(&w);
    mw_json_bool(&w, true);
    mw_json_arr_end(&w);
    mw_json_obj_end(&w);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), "{\"s\":\"a\\\"b\\\\c\\n\\u0001\\u00ff\xc3\xa9\",\"n\":-5,\"a\":[[\"x\",1],null,true]}");
    mw_buf_free(&b);
}

int main(void)
{
    MW_TEST_RUN(test_buf);
    MW_TEST_RUN(test_strutil);
    MW_TEST_RUN(test_cidr);
    MW_TEST_RUN(test_json);
    return MW_TEST_SUMMARY();
}
