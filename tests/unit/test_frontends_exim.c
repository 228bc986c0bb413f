/*
 * test_frontends_exim.c - the Exim front end's wire formats: rspamd request
 * lines as Exim 4.96 sends them, the mbox normaliser (From line,
 * X-Envelope-*, folding, LF -> CRLF, chunk boundaries anywhere, hostile
 * input), the reply the ACL snippet parses (Exim's own sscanf format), and
 * the RCPT line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "exim.h"
#include "mwtest.h"

/* ---- request ---- */

static void test_request(void)
{
    mw_exim_request r = {0};
    char err[160];
    static const char *const lines[] = {
        "Content-length: 528", "Queue-Id: 1xXKfW-0001xp-0R", "From: <alice@example.com>",
        "Recipient-Number: 2", "Rcpt: <bob@dest.test>", "Rcpt: <carol@dest.test>", "Helo: vm",
        "Hostname: client.example", "IP: 192.0.2.2", "User: alice@example.com"};
    MW_TEST_ASSERT(mw_exim_request_line(&r, "CHECK RSPAMC/1.3", 16, err, sizeof err));
    MW_TEST_EQ_STR(r.command, "CHECK");
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        MW_TEST_ASSERT(mw_exim_request_header(&r, lines[i], strlen(lines[i]), err, sizeof err));
    MW_TEST_ASSERT(r.have_length);
    MW_TEST_EQ_INT(r.content_length, 528);
    MW_TEST_EQ_STR(r.queue_id, "1xXKfW-0001xp-0R");
    MW_TEST_EQ_STR(r.from, "<alice@example.com>");
    MW_TEST_EQ_INT(r.nrcpts, 2);
    if (r.nrcpts == 2)
        MW_TEST_EQ_STR(r.rcpts[1], "<carol@dest.test>");
    MW_TEST_EQ_STR(r.helo, "vm");
    MW_TEST_EQ_STR(r.hostname, "client.example");
    MW_TEST_EQ_STR(r.ip, "192.0.2.2");
    MW_TEST_EQ_STR(r.user, "alice@example.com");
    mw_exim_request_clear(&r);

    MW_TEST_ASSERT(!mw_exim_request_line(&r, "GET / HTTP/1.0", 14, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_request_line(&r, "CHECK", 5, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_request_line(&r, "CHECK HTTP/1.1", 14, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_request_header(&r, "Content-length: 12x", 19, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_request_header(&r, "Content-length: 99999999999999999999", 36, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_request_header(&r, "no colon", 8, err, sizeof err));
    MW_TEST_ASSERT(mw_exim_request_header(&r, "X-Unknown: whatever", 19, err, sizeof err));
    /* control characters never reach the engine */
    MW_TEST_ASSERT(mw_exim_request_header(&r, "Helo: a\001b", 9, err, sizeof err));
    MW_TEST_EQ_STR(r.helo, "a?b");
    /* recipients are bounded */
    for (int i = 0; i < MW_EXIM_MAX_RCPTS + 50; i++)
        mw_exim_request_header(&r, "Rcpt: <x@y>", 11, err, sizeof err);
    MW_TEST_EQ_INT(r.nrcpts, MW_EXIM_MAX_RCPTS);
    mw_exim_request_clear(&r);
}

/* ---- mbox ---- */

typedef struct rec {
    mw_buf log;     /* "H name|value\n" ..., "EOH\n" */
    mw_buf body;
    int    neoh;
    bool   header_over;
    size_t header_bytes;
} rec;

static void r_header(void *p, const char *name, const char *value, size_t vlen)
{
    rec *r = p;
    mw_buf_printf(&r->log, "H %s|", name);
    mw_buf_append(&r->log, value, vlen);
    mw_buf_putc(&r->log, '\n');
}

static void r_eoh(void *p)
{
    rec *r = p;
    r->neoh++;
    mw_buf_puts(&r->log, "EOH\n");
}

static void r_body(void *p, const unsigned char *b, size_t n)
{
    mw_buf_append(&((rec *)p)->body, b, n);
}

static const mw_exim_mbox_cb rcb = {r_header, r_eoh, r_body};

/* Feed msg in chunks of size step (0: all at once). */
static void run_mbox(const char *msg, size_t len, size_t step, rec *r)
{
    mw_exim_mbox m;
    memset(r, 0, sizeof *r);
    mw_exim_mbox_init(&m, &rcb, r);
    if (!step)
        step = len ? len : 1;
    for (size_t i = 0; i < len; i += step)
        mw_exim_mbox_feed(&m, (const unsigned char *)msg + i, len - i < step ? len - i : step);
    mw_exim_mbox_finish(&m);
    r->header_over = m.header_over;
    r->header_bytes = m.header_bytes;
    mw_exim_mbox_free(&m);
}

static void rec_free(rec *r)
{
    mw_buf_free(&r->log);
    mw_buf_free(&r->body);
}

static const char MBOX[] =
    "From MAILER-DAEMON Sat Nov 28 15:40:01 2026\n"
    "X-Envelope-From: <alice@example.com>\n"
    "X-Envelope-To: bob@dest.test, carol@dest.test\n"
    "Received: from [192.0.2.2] (helo=client.example.test)\n"
    "\tby mx-exim.test.example with esmtp (Exim 4.96)\n"
    "\t(envelope-from <alice@example.com>)\n"
    "\tid 1xXKfW-0001xp-0R;\n"
    "\tSat, 28 Nov 2026 15:40:01 +0000\n"
    "From: Alice <alice@example.com>\n"
    "X-Envelope-From: <client-supplied@example.com>\n"
    "Subject:  two spaces\n"
    "\n"
    "line 1\n"
    "From the body\n"
    "line 3 with CRLF already\r\n"
    "\n";

static const char WANT_LOG[] =
    "H Received| from [192.0.2.2] (helo=client.example.test)\n"
    "\tby mx-exim.test.example with esmtp (Exim 4.96)\n"
    "\t(envelope-from <alice@example.com>)\n"
    "\tid 1xXKfW-0001xp-0R;\n"
    "\tSat, 28 Nov 2026 15:40:01 +0000\n"
    "H From| Alice <alice@example.com>\n"
    "H X-Envelope-From| <client-supplied@example.com>\n"
    "H Subject|  two spaces\n"
    "EOH\n";

static const char WANT_BODY[] = "line 1\r\nFrom the body\r\nline 3 with CRLF already\r\n\r\n";

static void test_mbox(void)
{
    size_t len = sizeof MBOX - 1;
    for (size_t step = 0; step <= len; step = step ? step * 2 + 1 : 1) {
        rec r;
        run_mbox(MBOX, len, step, &r);
        char what[64];
        snprintf(what, sizeof what, "chunk size %zu", step);
        if (!MW_TEST_EQ_STR(mw_buf_cstr(&r.log), WANT_LOG) | !MW_TEST_EQ_STR(mw_buf_cstr(&r.body), WANT_BODY))
            fprintf(stderr, "  (%s)\n", what);
        MW_TEST_EQ_INT(r.neoh, 1);
        rec_free(&r);
        if (step > len)
            break;
    }
}

static void test_mbox_variants(void)
{
    rec r;
    /* null sender: no X-Envelope-From line; a message X-Envelope-To after a
     * real header is the message's own and stays */
    static const char a[] = "From MAILER-DAEMON x\nX-Envelope-To: b@c\nTo: b@c\nX-Envelope-To: kept\n\nbody";
    run_mbox(a, sizeof a - 1, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H To| b@c\nH X-Envelope-To| kept\nEOH\n");
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "body");
    rec_free(&r);

    /* no From line at all, no body, no blank line: still one end of headers */
    static const char b[] = "Subject: x";
    run_mbox(b, sizeof b - 1, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H Subject| x\nEOH\n");
    MW_TEST_EQ_INT(r.neoh, 1);
    rec_free(&r);

    /* empty input */
    run_mbox("", 0, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "EOH\n");
    rec_free(&r);

    /* a line without a colon ends the headers and starts the body */
    static const char c[] = "From x\nA: 1\nnot a header\nmore\n";
    run_mbox(c, sizeof c - 1, 3, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H A| 1\nEOH\n");
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "not a header\r\nmore\r\n");
    rec_free(&r);

    /* hostile: a 1 MiB + 10 KiB header line is cut at 1 MiB; a NUL in a
     * value becomes '?', as Exim stores it */
    size_t big = 1024 * 1024 + 10 * 1024;
    static const char pre[] = "From x\nX-Big: ", post[] = "\nB: \0z\n\nok";
    size_t pl = sizeof pre - 1, ql = sizeof post - 1;
    char *h = mw_malloc(pl + big + ql);
    memcpy(h, pre, pl);
    memset(h + pl, 'a', big);
    memcpy(h + pl + big, post, ql);
    run_mbox(h, pl + big + ql, 65536, &r);
    MW_TEST_ASSERT(r.neoh == 1);
    MW_TEST_ASSERT(!r.header_over);
    MW_TEST_ASSERT(r.log.len < 1024 * 1024 + 200);
    MW_TEST_ASSERT(strstr(r.log.data, "H X-Big| aaa") != NULL);
    MW_TEST_ASSERT(strstr(r.log.data, "\nH B| ?z\nEOH\n") != NULL);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "ok");
    rec_free(&r);
    free(h);

    /* a header section over Exim's header_maxsize (one 3 MiB line, or many
     * small headers): nothing more is passed on, header_over says why */
    big = 3 * 1024 * 1024;
    h = mw_malloc(pl + big + ql);
    memcpy(h, pre, pl);
    memset(h + pl, 'a', big);
    memcpy(h + pl + big, post, ql);
    run_mbox(h, pl + big + ql, 65536, &r);
    MW_TEST_ASSERT(r.header_over);
    MW_TEST_EQ_INT(r.neoh, 0);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "");
    MW_TEST_EQ_INT(r.body.len, 0);
    rec_free(&r);
    free(h);
    mw_buf many = MW_BUF_INIT;
    mw_buf_puts(&many, "From x\nX-Envelope-To: a@b\n");
    size_t nhdr = 0;
    while (many.len < MW_EXIM_MAX_HEADER_SECTION + 4096) {
        mw_buf_puts(&many, "Authentication-Results: mx.test; none\n");
        nhdr++;
    }
    mw_buf_puts(&many, "\nbody\n");
    run_mbox(many.data, many.len, 4000, &r);
    MW_TEST_ASSERT(r.header_over);
    MW_TEST_EQ_INT(r.neoh, 0);
    MW_TEST_ASSERT(r.header_bytes > MW_EXIM_MAX_HEADER_SECTION);
    rec_free(&r);
    /* just under the bound: all of them pass */
    many.len = 0;
    mw_buf_puts(&many, "From x\n");
    size_t under = 0;
    while (many.len + 40 < MW_EXIM_MAX_HEADER_SECTION - 100) {
        mw_buf_puts(&many, "Authentication-Results: mx.test; none\n");
        under++;
    }
    mw_buf_puts(&many, "\nbody\n");
    run_mbox(many.data, many.len, 4000, &r);
    MW_TEST_ASSERT(!r.header_over);
    MW_TEST_EQ_INT(r.neoh, 1);
    size_t seen = 0;
    for (const char *q = r.log.data; (q = strstr(q, "H Authentication-Results|")) != NULL; q++)
        seen++;
    MW_TEST_EQ_INT(seen, under);
    rec_free(&r);
    mw_buf_free(&many);
    (void)nhdr;

    /* a continuation line before any header: the body starts there */
    static const char d[] = "From x\n cont\nA: 1\n";
    run_mbox(d, sizeof d - 1, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "EOH\n");
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), " cont\r\nA: 1\r\n");
    rec_free(&r);
}

/* Header names as Exim takes them (receive.c): blanks, a CR or a fold
 * between the name and its colon still make a header; a space, an 8-bit
 * byte or a NUL inside the name make the line the first body line. */
static void test_mbox_names(void)
{
    rec r;
    static const char a[] = "From x\nAuthentication-Results : a.example; none\n"
                            "Authentication-Results\r: b.example; none\n"
                            "Authentication-Results\n \t\n : c.example; none\n"
                            ":no name\n"
                            "Subject: s\n\nbody\n";
    for (size_t step = 1; step <= sizeof a; step = step * 2 + 1) {
        run_mbox(a, sizeof a - 1, step, &r);
        MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H Authentication-Results | a.example; none\n"
                                            "H Authentication-Results\r| b.example; none\n"
                                            "H Authentication-Results\n \t\n | c.example; none\n"
                                            "H Subject| s\nEOH\n");
        MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "body\r\n");
        rec_free(&r);
    }
    /* not headers: the body starts at them, with what follows */
    static const char *const notheaders[] = {"Auth Results: x\nA: 1\n", "X-\xc3\xa9: x\nA: 1\n",
                                             "Name\n more: x\nA: 1\n", "Name  \nA: 1\n"};
    static const char *const bodies[] = {"Auth Results: x\r\nA: 1\r\n", "X-\xc3\xa9: x\r\nA: 1\r\n",
                                         "Name\r\n more: x\r\nA: 1\r\n", "Name  \r\nA: 1\r\n"};
    for (size_t i = 0; i < 4; i++) {
        mw_buf m = MW_BUF_INIT;
        mw_buf_printf(&m, "From x\nB: 2\n%s", notheaders[i]);
        run_mbox(m.data, m.len, 0, &r);
        MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H B| 2\nEOH\n");
        MW_TEST_EQ_STR(mw_buf_cstr(&r.body), bodies[i]);
        rec_free(&r);
        mw_buf_free(&m);
    }
    /* a name that never gets its colon at the end of the input, or before
     * the blank line, is body text too */
    run_mbox("From x\nB: 2\nName \n \n\nz", 22, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "H B| 2\nEOH\n");
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "Name \r\n \r\n\r\nz");
    rec_free(&r);
    run_mbox("From x\nName", 11, 0, &r);
    MW_TEST_EQ_STR(mw_buf_cstr(&r.log), "EOH\n");
    MW_TEST_EQ_STR(mw_buf_cstr(&r.body), "Name\r\n");
    rec_free(&r);
}

/* ---- reply ---- */

static void parse_like_exim(const char *reply, double *score, char *action, size_t alen)
{
    char ver[8], shortr[8];
    double thr, rej;
    int off = 0;
    int n = sscanf(reply, "RSPAMD/%7s 0 EX_OK\r\nMetric: default; %7s %lf / %lf / %lf\r\n%n", ver, shortr, score,
                   &thr, &rej, &off);
    MW_TEST_EQ_INT(n, 5);
    action[0] = '\0';
    if (n == 5 && strncmp(reply + off, "Action: ", 8) == 0) {
        const char *p = reply + off + 8;
        size_t i = 0;
        while (p[i] && p[i] != '\r' && i < alen - 1 && i < 31) {
            action[i] = p[i];
            i++;
        }
        action[i] = '\0';
    }
}

static void test_reply(void)
{
    mw_header add[3] = {{"DKIM-Signature", "v=1; a=rsa-sha256; c=relaxed/relaxed;\n\td=example.com; s=test;\n\tb=abc"},
                        {"Authentication-Results", "mx.test.example;\n\tspf=pass smtp.mailfrom=a@b"},
                        {"Received-SPF", "pass (mx: domain of a@b designates 192.0.2.2 as permitted sender)"}};
    mw_header_ref rm[1] = {{"Authentication-Results", 2}};
    mw_ar_header ars[3] = {{1, false, "other.example; spf=fail", 23}, {2, true, NULL, 0},
                           {3, false, "third.example;\n\tdkim=pass", 25}};
    mw_verdict v = {.action = MW_ACTION_ACCEPT, .rule = "default", .add = add, .nadd = 3, .remove = rm, .nremove = 1,
                    .ar = ars, .nar = 3};
    mw_buf out = MW_BUF_INIT;
    size_t dropped = 9;
    MW_TEST_ASSERT(mw_exim_reply(&v, NULL, 0, &out, &dropped));
    double score;
    char action[32];
    parse_like_exim(out.data, &score, action, sizeof action);
    MW_TEST_EQ_STR(action, "no action");
    MW_TEST_ASSERT(score < 15.0);
    MW_TEST_EQ_INT(dropped, 0);
    MW_TEST_EQ_STR(mw_buf_cstr(&out),
                   "RSPAMD/1.3 0 EX_OK\r\n"
                   "Metric: default; False 0.00 / 15.00 / 15.00\r\n"
                   "Action: no action\r\n"
                   "MW-Rule: default\r\n"
                   "MW-Remove: Authentication-Results\r\n"
                   "MW-Add: Received-SPF: pass (mx: domain of a@b designates 192.0.2.2 as permitted sender)\r\n"
                   "MW-Add: Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=a@b\r\n"
                   "MW-Add: DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=test; b=abc\r\n"
                   "MW-Keep: Authentication-Results: other.example; spf=fail\r\n"
                   "MW-Keep: Authentication-Results: third.example; dkim=pass\r\n");

    /* nothing removed: no Remove/Keep lines */
    mw_buf_reset(&out);
    ars[1] = (mw_ar_header){2, false, "mx.test.example; none", 21};
    MW_TEST_ASSERT(mw_exim_reply(&v, NULL, 0, &out, NULL));
    MW_TEST_ASSERT(strstr(out.data, "MW-Remove") == NULL && strstr(out.data, "MW-Keep") == NULL);
    ars[1] = (mw_ar_header){2, true, NULL, 0};

    /* a kept A-R with control bytes is not re-added: re-adding would delete
     * them, and "\x01mx.test.example" would come back as our own id */
    mw_buf_reset(&out);
    ars[0] = (mw_ar_header){1, false, "other.example\x01; spf=fail", 24};
    dropped = 0;
    MW_TEST_ASSERT(mw_exim_reply(&v, NULL, 0, &out, &dropped));
    MW_TEST_ASSERT(strstr(out.data, "other.example") == NULL);
    MW_TEST_EQ_INT(dropped, 1);
    MW_TEST_ASSERT(strstr(out.data, "MW-Keep: Authentication-Results: third.example; dkim=pass\r\n") != NULL);
    ars[0] = (mw_ar_header){1, false, "other.example; spf=fail", 23};

    /* a kept A-R Exim cannot remove by name (a fold before its colon) is
     * not re-added: it never left */
    mw_buf_reset(&out);
    unsigned stay1[1] = {1};
    MW_TEST_ASSERT(mw_exim_reply(&v, stay1, 1, &out, NULL));
    MW_TEST_ASSERT(strstr(out.data, "MW-Remove: Authentication-Results\r\n") != NULL);
    MW_TEST_ASSERT(strstr(out.data, "other.example") == NULL);
    MW_TEST_ASSERT(strstr(out.data, "MW-Keep: Authentication-Results: third.example; dkim=pass\r\n") != NULL);
    /* a forged one Exim cannot remove: rejected, never delivered */
    mw_buf_reset(&out);
    unsigned stay2[1] = {2};
    MW_TEST_ASSERT(!mw_exim_reply(&v, stay2, 1, &out, NULL));
    parse_like_exim(out.data, &score, action, sizeof action);
    MW_TEST_EQ_STR(action, "reject");
    MW_TEST_ASSERT(strstr(out.data, "MW-Reply: 550 5.7.1 ") != NULL);
    MW_TEST_ASSERT(strstr(out.data, "MW-Add") == NULL && strstr(out.data, "MW-Keep") == NULL);

    /* many kept A-R: the reply stays within what Exim reads (32600 bytes),
     * our own headers first; what does not fit is counted */
    mw_buf_reset(&out);
    size_t nmany = 2000;
    mw_ar_header *many = mw_reallocarray(NULL, nmany, sizeof *many);
    for (size_t i = 0; i < nmany; i++)
        many[i] = (mw_ar_header){(unsigned)i + 1, i == 7, i == 7 ? NULL : "other.example; spf=none", 23};
    mw_verdict mv = v;
    mv.ar = many;
    mv.nar = nmany;
    MW_TEST_ASSERT(mw_exim_reply(&mv, NULL, 0, &out, &dropped));
    MW_TEST_ASSERT(out.len <= MW_EXIM_MAX_REPLY);
    MW_TEST_ASSERT(strstr(out.data, "MW-Add: DKIM-Signature") != NULL);
    size_t keeps = 0;
    for (const char *q = out.data; (q = strstr(q, "MW-Keep: ")) != NULL; q++)
        keeps++;
    MW_TEST_EQ_INT(keeps + dropped, nmany - 1);
    MW_TEST_ASSERT(dropped > 0);
    free(many);

    /* reject: score over the threshold, action reject, reply text, no headers */
    mw_buf_reset(&out);
    mw_verdict rj = {.action = MW_ACTION_REJECT, .rcode = "550", .xcode = "5.7.23", .text = "SPF fail\r\nx",
                     .rule = "spf-fail", .add = add, .nadd = 3};
    mw_exim_reply(&rj, NULL, 0, &out, NULL);
    parse_like_exim(out.data, &score, action, sizeof action);
    MW_TEST_EQ_STR(action, "reject");
    MW_TEST_ASSERT(score >= 15.0);
    MW_TEST_ASSERT(strstr(out.data, "MW-Reply: 550 5.7.23 SPF fail x\r\n") != NULL);
    MW_TEST_ASSERT(strstr(out.data, "MW-Add") == NULL);

    /* tempfail -> soft reject */
    mw_buf_reset(&out);
    rj.action = MW_ACTION_TEMPFAIL;
    memcpy(rj.rcode, "451", 4);
    memcpy(rj.xcode, "4.7.24", 7);
    rj.text = "try later";
    mw_exim_reply(&rj, NULL, 0, &out, NULL);
    parse_like_exim(out.data, &score, action, sizeof action);
    MW_TEST_EQ_STR(action, "soft reject");
    MW_TEST_ASSERT(strstr(out.data, "MW-Reply: 451 4.7.24 try later\r\n") != NULL);

    /* an over-long header is left out, not sent broken */
    mw_buf_reset(&out);
    char *longv = mw_malloc(2000);
    memset(longv, 'b', 1999);
    longv[1999] = '\0';
    mw_header big[2] = {{"DKIM-Signature", longv}, {"X-Short", "ok"}};
    mw_verdict bv = {.action = MW_ACTION_ACCEPT, .add = big, .nadd = 2};
    mw_exim_reply(&bv, NULL, 0, &out, &dropped);
    MW_TEST_EQ_INT(dropped, 1);
    MW_TEST_ASSERT(strstr(out.data, "DKIM-Signature") == NULL);
    MW_TEST_ASSERT(strstr(out.data, "MW-Add: X-Short: ok\r\n") != NULL);
    free(longv);

    /* error reply */
    mw_buf_reset(&out);
    mw_exim_reply(NULL, NULL, 0, &out, NULL);
    parse_like_exim(out.data, &score, action, sizeof action);
    MW_TEST_EQ_STR(action, "soft reject");
    MW_TEST_ASSERT(strstr(out.data, "MW-Reply: 451 ") != NULL);
    mw_buf_free(&out);
}

/* ---- RCPT line ---- */

static void test_rcpt(void)
{
    mw_exim_rcpt q = {0};
    char err[100];
    const char *l = "RCPT port=25 ip=192.0.2.2 helo=vm from=alice@example.com rcpt=bob@dest.test auth= junk\n";
    MW_TEST_ASSERT(mw_exim_rcpt_parse(&q, l, strlen(l), err, sizeof err));
    MW_TEST_EQ_STR(q.ip, "192.0.2.2");
    MW_TEST_EQ_STR(q.helo, "vm");
    MW_TEST_EQ_STR(q.from, "alice@example.com");
    MW_TEST_EQ_STR(q.rcpt, "bob@dest.test");
    MW_TEST_EQ_STR(q.auth, "");
    MW_TEST_EQ_STR(q.port, "25");
    mw_exim_rcpt_clear(&q);
    MW_TEST_ASSERT(mw_exim_rcpt_parse(&q, "RCPT", 4, err, sizeof err));
    MW_TEST_ASSERT(q.ip == NULL);
    MW_TEST_ASSERT(!mw_exim_rcpt_parse(&q, "RCPTX a=b", 9, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_rcpt_parse(&q, "HELO x", 6, err, sizeof err));
    MW_TEST_ASSERT(!mw_exim_rcpt_parse(&q, "", 0, err, sizeof err));
    mw_exim_rcpt_clear(&q);
}

int main(void)
{
    MW_TEST_RUN(test_request);
    MW_TEST_RUN(test_mbox);
    MW_TEST_RUN(test_mbox_variants);
    MW_TEST_RUN(test_mbox_names);
    MW_TEST_RUN(test_reply);
    MW_TEST_RUN(test_rcpt);
    return MW_TEST_SUMMARY();
}
