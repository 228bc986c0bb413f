/*
 * test_frontends_parser_cost.c - the front ends' codecs are linear in their
 * input (issue 13, defect 5): the milter packet codec (framing, decoding,
 * walking a D packet's macros as milter_server.c does) and the Exim codecs
 * (scan-request line and headers, the RCPT line, mbox header splitting,
 * whole and byte by byte).  See parser_cost.h for how work is compared.
 */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "exim.h"
#include "milter_proto.h"
#include "mwtest.h"
#include "parser_cost.h"

/* ---- milter ------------------------------------------------------------------------- */

/* in: one packet's payload after the command byte arg[0]; framed here
 * (the length prefix costs nothing to build) and decoded. */
static void run_milter(const char *in, size_t len, void *arg)
{
    char cmd = *(const char *)arg;
    uint8_t *pkt = malloc(len + 5);
    uint32_t n = (uint32_t)len + 1;
    pkt[0] = (uint8_t)(n >> 24), pkt[1] = (uint8_t)(n >> 16), pkt[2] = (uint8_t)(n >> 8), pkt[3] = (uint8_t)n;
    pkt[4] = (uint8_t)cmd;
    memcpy(pkt + 5, in, len);
    char c;
    const uint8_t *payload;
    size_t plen, used;
    const char *why;
    if (mw_mp_frame(pkt, len + 5, &c, &payload, &plen, &used, &why) == 1) {
        mw_mp_cmd o;
        if (mw_mp_decode(c, payload, plen, &o, &why) && c == 'D') {
            /* every macro, as the server's lookup walks them */
            size_t k = 0;
            const char *end = o.strs + o.strs_len;
            for (const char *p = o.strs; p; p = mw_mp_next(p, end))
                k++;
            if (k == (size_t)-1)
                abort();
        }
    }
    free(pkt);
}

static size_t g_mp_macros(char *o, size_t n)
{
    /* "C" stage byte, then "{a}\0v\0" pairs */
    size_t k = pc_fill(o, n - 1, "C", "{a}#v#", "");
    for (size_t i = 0; i < k; i++)
        if (o[i] == '#')
            o[i] = '\0';
    return k;
}
static size_t g_mp_empty_macros(char *o, size_t n)
{
    o[0] = 'C';
    memset(o + 1, 0, n - 1);   /* "" names and values */
    return n;
}
static size_t g_mp_args(char *o, size_t n)
{
    size_t k = pc_fill(o, n, "<a@b.example>#", "SIZE=1#", "");
    for (size_t i = 0; i < k; i++)
        if (o[i] == '#')
            o[i] = '\0';
    return k;
}
static size_t g_mp_header(char *o, size_t n)
{
    size_t k = pc_fill(o, n - 1, "From#", " a\r\n", "");
    o[4] = '\0';
    o[k] = '\0';
    return k + 1;
}
static size_t g_mp_body(char *o, size_t n) { memset(o, '\n', n); return n; }
static size_t g_mp_connect(char *o, size_t n)
{
    size_t k = pc_fill(o, n - 12, "", "h", "#4");
    o[k - 2] = '\0';
    memcpy(o + k, "\x00\x19" "192.0.2.1", 12);
    return k + 12;
}

static void test_milter(void)
{
    static const char D = 'D', M = 'M', R = 'R', L = 'L', B = 'B', C = 'C';
    pc_check("milter D {a}=v x many", run_milter, (void *)&D, g_mp_macros);
    pc_check("milter D empty names", run_milter, (void *)&D, g_mp_empty_macros);
    pc_check("milter M args x many", run_milter, (void *)&M, g_mp_args);
    pc_check("milter R args x many", run_milter, (void *)&R, g_mp_args);
    pc_check("milter L folded header", run_milter, (void *)&L, g_mp_header);
    pc_check("milter B body of LFs", run_milter, (void *)&B, g_mp_body);
    pc_check("milter C long host", run_milter, (void *)&C, g_mp_connect);
}

/* ---- Exim ------------------------------------------------------------------------- */

static void run_exim_request(const char *in, size_t len, void *arg)
{
    (void)arg;
    mw_exim_request r;
    char err[128];
    memset(&r, 0, sizeof r);
    /* the request as lines: the first is the request line */
    const char *p = in, *end = in + len;
    bool first = true;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (first)
            mw_exim_request_line(&r, p, l, err, sizeof err);
        else
            mw_exim_request_header(&r, p, l, err, sizeof err);
        first = false;
        p += l + 1;
    }
    mw_exim_request_clear(&r);
}

static size_t g_ex_rcpts(char *o, size_t n) { return pc_fill(o, n, "CHECK RSPAMC/1.3\n", "Rcpt: <a@b.example>\n", ""); }
static size_t g_ex_long_from(char *o, size_t n) { return pc_fill(o, n, "CHECK RSPAMC/1.3\nFrom: <", "a", ">\n"); }
static size_t g_ex_blanks(char *o, size_t n) { return pc_fill(o, n, "CHECK RSPAMC/1.3\nHelo:", " \t", "x\n"); }
static size_t g_ex_repeat(char *o, size_t n) { return pc_fill(o, n, "CHECK RSPAMC/1.3\n", "Queue-Id: a\n", ""); }
static size_t g_ex_colons(char *o, size_t n) { return pc_fill(o, n, "CHECK RSPAMC/1.3\nX", ":", "\n"); }
static size_t g_ex_long_line(char *o, size_t n) { return pc_fill(o, n, "CHECK ", "R", "\n"); }

static void run_exim_rcpt(const char *in, size_t len, void *arg)
{
    (void)arg;
    mw_exim_rcpt r;
    char err[128];
    memset(&r, 0, sizeof r);
    mw_exim_rcpt_parse(&r, in, len, err, sizeof err);
    mw_exim_rcpt_clear(&r);
}

static size_t g_rc_pairs(char *o, size_t n) { return pc_fill(o, n, "RCPT", " ip=192.0.2.1", "\n"); }
static size_t g_rc_blanks(char *o, size_t n) { return pc_fill(o, n, "RCPT", " ", "rcpt=a@b.example\n"); }
static size_t g_rc_noeq(char *o, size_t n) { return pc_fill(o, n, "RCPT", " x", "\n"); }
static size_t g_rc_long(char *o, size_t n) { return pc_fill(o, n, "RCPT rcpt=", "a", "\n"); }
static size_t g_rc_trail(char *o, size_t n) { return pc_fill(o, n, "RCPT ip=1", "\r\n \r", ""); }

struct mbox_count {
    size_t headers, body;
};
static void cb_header(void *ctx, const char *name, const char *value, size_t vlen)
{
    (void)name, (void)value, (void)vlen;
    ((struct mbox_count *)ctx)->headers++;
}
static void cb_body(void *ctx, const unsigned char *p, size_t n)
{
    (void)p;
    ((struct mbox_count *)ctx)->body += n;
}
static const mw_exim_mbox_cb mbox_cb = {.header = cb_header, .body = cb_body};

/* arg: chunk size (0: whole) */
static void run_exim_mbox(const char *in, size_t len, void *arg)
{
    size_t chunk = *(const size_t *)arg;
    struct mbox_count c = {0, 0};
    mw_exim_mbox m;
    mw_exim_mbox_init(&m, &mbox_cb, &c);
    if (chunk == 0)
        chunk = len;
    for (size_t i = 0; i < len; i += chunk)
        mw_exim_mbox_feed(&m, (const unsigned char *)in + i, len - i < chunk ? len - i : chunk);
    mw_exim_mbox_finish(&m);
    mw_exim_mbox_free(&m);
}

static size_t g_mb_headers(char *o, size_t n) { return pc_fill(o, n, "From x\n", "a: b\n", "\nbody\n"); }
static size_t g_mb_folded(char *o, size_t n) { return pc_fill(o, n, "From x\nSubject: a\n", " a\n", "\nbody\n"); }
static size_t g_mb_crlf_fold(char *o, size_t n) { return pc_fill(o, n, "From x\nSubject: a\r\n", "\t\r\n", "\r\n"); }
static size_t g_mb_long_line(char *o, size_t n) { return pc_fill(o, n, "From x\nSubject: ", "a", "\n\nbody\n"); }
static size_t g_mb_env_to(char *o, size_t n) { return pc_fill(o, n, "From x\nX-Envelope-From: a\nX-Envelope-To: a\n", " b\n", "\n"); }
static size_t g_mb_colons(char *o, size_t n) { return pc_fill(o, n, "From x\n", ":\n", "\n"); }
static size_t g_mb_body(char *o, size_t n) { return pc_fill(o, n, "From x\na: b\n\n", "\n", ""); }

static void test_exim(void)
{
    pc_check("exim request Rcpt x many", run_exim_request, NULL, g_ex_rcpts);
    pc_check("exim request long From", run_exim_request, NULL, g_ex_long_from);
    pc_check("exim request blanks", run_exim_request, NULL, g_ex_blanks);
    pc_check("exim request Queue-Id x many", run_exim_request, NULL, g_ex_repeat);
    pc_check("exim request X::::", run_exim_request, NULL, g_ex_colons);
    pc_check("exim request long line", run_exim_request, NULL, g_ex_long_line);
    pc_check("exim rcpt ip= x many", run_exim_rcpt, NULL, g_rc_pairs);
    pc_check("exim rcpt blanks", run_exim_rcpt, NULL, g_rc_blanks);
    pc_check("exim rcpt x x x", run_exim_rcpt, NULL, g_rc_noeq);
    pc_check("exim rcpt long value", run_exim_rcpt, NULL, g_rc_long);
    pc_check("exim rcpt trailing CR/LF/SP", run_exim_rcpt, NULL, g_rc_trail);
    static const size_t whole = 0, bytes = 1, lines = 7;
    const void *feeds[] = {&whole, &bytes, &lines};
    const char *fname[] = {"whole", "1-byte", "7-byte"};
    for (int f = 0; f < 3; f++) {
        char name[64];
        void *a = (void *)feeds[f];
        snprintf(name, sizeof name, "mbox a: b x many (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_headers);
        snprintf(name, sizeof name, "mbox folded header (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_folded);
        snprintf(name, sizeof name, "mbox CRLF blank folds (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_crlf_fold);
        snprintf(name, sizeof name, "mbox long line (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_long_line);
        snprintf(name, sizeof name, "mbox X-Envelope-To folds (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_env_to);
        snprintf(name, sizeof name, "mbox :\\n x many (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_colons);
        snprintf(name, sizeof name, "mbox body of LFs (%s)", fname[f]);
        pc_check(name, run_exim_mbox, a, g_mb_body);
    }
}

int main(void)
{
    PC_SKIP_UNDER_TSAN();
    MW_TEST_RUN(test_milter);
    MW_TEST_RUN(test_exim);
    return MW_TEST_SUMMARY();
}
