/*
 * test_frontends_milter_proto.c - the milter protocol 6 codec: every MTA
 * command and every filter reply encoded and decoded again, framing across
 * partial buffers, and hostile input (truncated packets, oversized and zero
 * lengths, missing NULs, odd macro lists, bad families).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "milter_proto.h"
#include "mwtest.h"

/* Frame the single packet in b and decode it as an MTA command. */
static bool one_cmd(const mw_buf *b, mw_mp_cmd *m, const char **why)
{
    char cmd;
    const uint8_t *p;
    size_t plen, used;
    *why = NULL;
    int r = mw_mp_frame((const uint8_t *)b->data, b->len, &cmd, &p, &plen, &used, why);
    if (!MW_TEST_EQ_INT(r, 1) || !MW_TEST_EQ_INT(used, b->len))
        return false;
    return mw_mp_decode(cmd, p, plen, m, why);
}

static bool one_reply(const mw_buf *b, mw_mp_reply *m)
{
    char cmd;
    const uint8_t *p;
    size_t plen, used;
    const char *why = NULL;
    if (mw_mp_frame((const uint8_t *)b->data, b->len, &cmd, &p, &plen, &used, &why) != 1)
        return false;
    return mw_mp_decode_reply(cmd, p, plen, m, &why);
}

static void test_commands(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_mp_cmd m;
    const char *why;

    mw_mp_put_optneg(&b, 6, 0x1ff, 0x1fffff, NULL);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_INT(m.cmd, 'O');
    MW_TEST_EQ_INT(m.version, 6);
    MW_TEST_EQ_INT(m.actions, 0x1ff);
    MW_TEST_EQ_INT(m.protocol, 0x1fffff);

    static const char *const pairs[] = {"j", "mx.example", "{client_addr}", "192.0.2.1", "{daemon_name}", ""};
    mw_buf_reset(&b);
    mw_mp_put_macros(&b, 'C', pairs, 3);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_INT(m.stage, MW_MP_ST_CONNECT);
    MW_TEST_EQ_INT(m.n, 3);
    const char *end = m.strs + m.strs_len, *k = m.strs;
    for (int i = 0; i < 6 && MW_TEST_ASSERT(k); i++, k = mw_mp_next(k, end))
        MW_TEST_EQ_STR(k, pairs[i]);
    MW_TEST_ASSERT(k == NULL);
    /* every stage code, and an empty list (clears the stage) */
    const char *stages = "CHMRTLNBEU";
    for (int i = 0; stages[i]; i++) {
        mw_buf_reset(&b);
        mw_mp_put_macros(&b, stages[i], NULL, 0);
        MW_TEST_ASSERT(one_cmd(&b, &m, &why));
        MW_TEST_EQ_INT(m.stage, i);
        MW_TEST_EQ_INT(m.n, 0);
    }

    mw_buf_reset(&b);
    mw_mp_put_connect(&b, "client.example", '4', 25000, "192.0.2.7");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_STR(m.host, "client.example");
    MW_TEST_EQ_INT(m.family, '4');
    MW_TEST_EQ_INT(m.port, 25000);
    MW_TEST_EQ_STR(m.addr, "192.0.2.7");
    mw_buf_reset(&b);
    mw_mp_put_connect(&b, "v6.example", '6', 1, "2001:db8::1");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && strcmp(m.addr, "2001:db8::1") == 0 && m.family == '6');
    mw_buf_reset(&b);
    mw_mp_put_connect(&b, "localhost", 'L', 0, "/run/sock");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && strcmp(m.addr, "/run/sock") == 0);
    mw_buf_reset(&b);
    mw_mp_put_connect(&b, "unknown", 'U', 0, NULL);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && m.family == 'U' && strcmp(m.addr, "") == 0);

    mw_buf_reset(&b);
    mw_mp_put_str(&b, 'H', "helo.example");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_STR(m.str1, "helo.example");
    mw_buf_reset(&b);
    mw_mp_put_str(&b, 'U', "XYZZY");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_STR(m.str1, "XYZZY");

    static const char *const margv[] = {"<a@example.com>", "SIZE=100", "BODY=8BITMIME"};
    mw_buf_reset(&b);
    mw_mp_put_args(&b, 'M', margv, 3);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_INT(m.n, 3);
    MW_TEST_EQ_STR(m.strs, "<a@example.com>");
    MW_TEST_EQ_STR(mw_mp_next(m.strs, m.strs + m.strs_len), "SIZE=100");
    mw_buf_reset(&b);
    mw_mp_put_args(&b, 'R', margv, 1);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && m.n == 1 && m.cmd == 'R');

    mw_buf_reset(&b);
    mw_mp_put_header(&b, "Subject", " hello");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_EQ_STR(m.str1, "Subject");
    MW_TEST_EQ_STR(m.str2, " hello");
    mw_buf_reset(&b);
    mw_mp_put_header(&b, "X-Empty", "");
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && strcmp(m.str2, "") == 0);

    uint8_t body[70000];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (uint8_t)i;   /* NULs and 8-bit bytes are body data */
    mw_buf_reset(&b);
    mw_mp_put_body(&b, 'B', body, sizeof body);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why));
    MW_TEST_ASSERT(m.len == sizeof body && memcmp(m.data, body, sizeof body) == 0);
    mw_buf_reset(&b);
    mw_mp_put_body(&b, 'E', NULL, 0);
    MW_TEST_ASSERT(one_cmd(&b, &m, &why) && m.cmd == 'E' && m.len == 0);

    const char *simple = "TNAQK";
    for (int i = 0; simple[i]; i++) {
        mw_buf_reset(&b);
        mw_mp_put_simple(&b, simple[i]);
        MW_TEST_ASSERT(one_cmd(&b, &m, &why) && m.cmd == simple[i]);
    }
    mw_buf_free(&b);
}

static void test_replies(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_mp_reply r;
    const char *simple = "crtdap";
    for (int i = 0; simple[i]; i++) {
        mw_buf_reset(&b);
        mw_mp_put_simple(&b, simple[i]);
        MW_TEST_EQ_INT(b.len, 5);
        MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == simple[i]);
    }
    mw_buf_reset(&b);
    mw_mp_put_replycode(&b, "550", "5.7.1", "rejected by policy");
    MW_TEST_ASSERT(one_reply(&b, &r));
    MW_TEST_EQ_STR(r.str1, "550 5.7.1 rejected by policy");
    /* '%' doubled (Sendmail formats it, Postfix undoes the doubling) */
    mw_buf_reset(&b);
    mw_mp_put_replycode(&b, "451", "4.7.0", "100% busy");
    MW_TEST_ASSERT(one_reply(&b, &r));
    MW_TEST_EQ_STR(r.str1, "451 4.7.0 100%% busy");
    /* multi-line: RFC 5321 continuation lines; no xcode: x.0.0 */
    mw_buf_reset(&b);
    mw_mp_put_replycode(&b, "550", "", "first\nsecond\r\nthird");
    MW_TEST_ASSERT(one_reply(&b, &r));
    MW_TEST_EQ_STR(r.str1, "550-5.0.0 first\r\n550-5.0.0 second\r\n550 5.0.0 third");
    /* an enhanced code of another class would make Postfix refuse the reply */
    mw_buf_reset(&b);
    mw_mp_put_replycode(&b, "451", "5.7.1", "later");
    MW_TEST_ASSERT(one_reply(&b, &r));
    MW_TEST_EQ_STR(r.str1, "451 4.0.0 later");
    /* control characters never reach the SMTP reply */
    mw_buf_reset(&b);
    mw_mp_put_replycode(&b, "550", "5.7.1", "a\tb\001c");
    MW_TEST_ASSERT(one_reply(&b, &r));
    MW_TEST_EQ_STR(r.str1, "550 5.7.1 a b c");

    mw_buf_reset(&b);
    mw_mp_put_addheader(&b, "X-A", " v");
    MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == 'h');
    MW_TEST_EQ_STR(r.str1, "X-A");
    MW_TEST_EQ_STR(r.str2, " v");
    mw_buf_reset(&b);
    mw_mp_put_insheader(&b, 0, "Authentication-Results", " mx; spf=pass");
    MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == 'i' && r.index == 0);
    MW_TEST_EQ_STR(r.str2, " mx; spf=pass");
    mw_buf_reset(&b);
    mw_mp_put_chgheader(&b, 3, "Authentication-Results", "");
    MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == 'm' && r.index == 3);
    MW_TEST_EQ_STR(r.str1, "Authentication-Results");
    MW_TEST_EQ_STR(r.str2, "");
    mw_buf_reset(&b);
    mw_mp_put_quarantine(&b, "dmarc");
    MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == 'q');
    MW_TEST_EQ_STR(r.str1, "dmarc");

    const char *lists[MW_MP_SYM__N] = {[MW_MP_SYM_CONNECT] = "j {client_addr}", [MW_MP_SYM_EOM] = "i"};
    mw_buf_reset(&b);
    mw_mp_put_optneg(&b, 6, 0x31, 0x1c0380, lists);
    /* 12 bytes of fields, then uint32 stage + "list\0" per list */
    MW_TEST_EQ_INT(b.len, 5 + 12 + 4 + 16 + 4 + 2);
    MW_TEST_ASSERT(one_reply(&b, &r) && r.cmd == 'O');
    MW_TEST_EQ_INT(r.version, 6);
    MW_TEST_EQ_INT(r.actions, 0x31);
    MW_TEST_EQ_INT(r.protocol, 0x1c0380);
    MW_TEST_EQ_STR(r.symlists[MW_MP_SYM_CONNECT], "j {client_addr}");
    MW_TEST_EQ_STR(r.symlists[MW_MP_SYM_EOM], "i");
    MW_TEST_ASSERT(r.symlists[MW_MP_SYM_ENVFROM] == NULL);
    mw_buf_free(&b);
}

static void test_framing(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_mp_put_str(&b, 'H', "x");
    mw_mp_put_simple(&b, 'N');
    char cmd;
    const uint8_t *p;
    size_t plen, used;
    const char *why;
    /* every prefix of the first packet asks for more */
    for (size_t n = 0; n < 7; n++)
        MW_TEST_EQ_INT(mw_mp_frame((const uint8_t *)b.data, n, &cmd, &p, &plen, &used, &why), 0);
    MW_TEST_EQ_INT(mw_mp_frame((const uint8_t *)b.data, b.len, &cmd, &p, &plen, &used, &why), 1);
    MW_TEST_EQ_INT(used, 7);
    MW_TEST_EQ_INT(mw_mp_frame((const uint8_t *)b.data + used, b.len - used, &cmd, &p, &plen, &used, &why), 1);
    MW_TEST_EQ_INT(cmd, 'N');
    /* zero length: no command byte */
    static const uint8_t zero[] = {0, 0, 0, 0, 'Q'};
    MW_TEST_EQ_INT(mw_mp_frame(zero, sizeof zero, &cmd, &p, &plen, &used, &why), -1);
    /* oversized length: refused from the 4 length bytes alone */
    static const uint8_t big[] = {0x00, 0x20, 0x00, 0x00};
    MW_TEST_EQ_INT(mw_mp_frame(big, sizeof big, &cmd, &p, &plen, &used, &why), -1);
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 'B'};
    MW_TEST_EQ_INT(mw_mp_frame(huge, sizeof huge, &cmd, &p, &plen, &used, &why), -1);
    /* exactly the maximum is fine (and incomplete here) */
    uint8_t maxl[4] = {(uint8_t)(MW_MP_MAX_PACKET >> 24), (uint8_t)(MW_MP_MAX_PACKET >> 16),
                       (uint8_t)(MW_MP_MAX_PACKET >> 8), (uint8_t)MW_MP_MAX_PACKET};
    MW_TEST_EQ_INT(mw_mp_frame(maxl, 4, &cmd, &p, &plen, &used, &why), 0);
    mw_buf_free(&b);
}

#define BAD(cmd, lit) MW_TEST_ASSERT(!mw_mp_decode((cmd), (const uint8_t *)(lit), sizeof(lit) - 1, &m, &why) && why)

static void test_malformed(void)
{
    mw_mp_cmd m;
    const char *why;
    BAD('O', "\0\0\0\6\0\0\0\1\0\0");          /* truncated optneg */
    BAD('D', "");                              /* no stage */
    BAD('D', "Zj\0x\0");                        /* unknown stage */
    BAD('D', "Cj\0x\0{y}\0");                   /* odd name/value count */
    BAD('D', "Cj\0x");                          /* value not terminated */
    BAD('C', "host");                           /* hostname not terminated */
    BAD('C', "host\0");                         /* no family */
    BAD('C', "host\0" "4\0");                   /* port truncated */
    BAD('C', "host\0" "4\0\031");               /* no address */
    BAD('C', "host\0" "4\0\031" "1.2.3.4");     /* address not terminated */
    BAD('C', "host\0" "4\0\031" "1.2\0.3.4\0"); /* stray NUL inside */
    BAD('C', "host\0" "X\0\031" "1.2.3.4\0");   /* unknown family */
    BAD('C', "host\0" "Ujunk");                 /* data after U */
    BAD('H', "");
    BAD('H', "helo");
    BAD('H', "he\0lo\0");
    BAD('M', "");
    BAD('M', "<a@b>");
    BAD('R', "<a@b>\0SIZE");
    BAD('L', "Subject");
    BAD('L', "Subject\0");
    BAD('L', "Subject\0v");
    BAD('L', "\0v\0");                          /* empty name */
    BAD('L', "a\0b\0c\0");                      /* three strings */
    BAD('N', "x");
    BAD('A', "x");
    BAD('Q', "x");
    BAD('T', "x");
    BAD('K', "x");
    BAD('U', "x");
    BAD('z', "");                               /* unknown command */
    BAD('\0', "");
    /* exact-size heap copies: ASan would report any read past the payload */
    static const struct { char cmd; const char *p; size_t n; } cut[] = {
        {'C', "host\0" "4\0\031" "1.2", 11}, {'D', "Cj\0x", 4}, {'L', "Subject\0v", 9},
        {'M', "<a@b>", 5}, {'H', "helo", 4}, {'O', "\0\0\0\6\0\0\0", 7}};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        uint8_t *heap = malloc(cut[i].n);
        memcpy(heap, cut[i].p, cut[i].n);
        MW_TEST_ASSERT(!mw_mp_decode(cut[i].cmd, heap, cut[i].n, &m, &why));
        free(heap);
    }
    /* malformed replies */
    mw_mp_reply r;
    MW_TEST_ASSERT(!mw_mp_decode_reply('c', (const uint8_t *)"x", 1, &r, &why));
    MW_TEST_ASSERT(!mw_mp_decode_reply('y', (const uint8_t *)"550", 3, &r, &why));
    MW_TEST_ASSERT(!mw_mp_decode_reply('i', (const uint8_t *)"\0\0\0", 3, &r, &why));
    MW_TEST_ASSERT(!mw_mp_decode_reply('O', (const uint8_t *)"\0\0\0\6\0\0\0\0\0\0\0\0\0\0\0\7x\0", 18, &r, &why));
    MW_TEST_ASSERT(!mw_mp_decode_reply('O', (const uint8_t *)"\0\0\0\6\0\0\0\0\0\0\0\0\0\0", 14, &r, &why));
}

int main(void)
{
    MW_TEST_RUN(test_commands);
    MW_TEST_RUN(test_replies);
    MW_TEST_RUN(test_framing);
    MW_TEST_RUN(test_malformed);
    return MW_TEST_SUMMARY();
}
