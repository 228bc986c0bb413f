/*
 * test_checks_report_failure.c - RFC 9991 failure reports
 * (checks/report_failure.c): the fo decision and its parsing, redaction,
 * the report message (fields, safety against injected text, parsed by
 * Python's email package), the per-destination rate limit and the spool.
 *
 * Environment: MW_TEST_PYTHON (default /usr/bin/python3).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mwtest.h"
#include "alloc.h"
#include "dmarc.h"
#include "report_failure.h"

static char tmpdir[64];

static bool has(const mw_buf *b, const char *needle)
{
    return b->len > 0 && memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

static void test_fo_parse(void)
{
    static const struct { const char *rec; unsigned fo; } cases[] = {
        {"v=DMARC1; p=none", MW_DMARC_FO_0},
        {"v=DMARC1; p=none; fo=1", MW_DMARC_FO_1},
        {"v=DMARC1; p=none; fo=1:d", MW_DMARC_FO_1 | MW_DMARC_FO_D},
        {"v=DMARC1; p=none; fo= s : 0 ", MW_DMARC_FO_S | MW_DMARC_FO_0},
        {"v=DMARC1; p=none; fo=x", MW_DMARC_FO_0},          /* nothing usable: default */
        {"v=DMARC1; p=none; fo=x:d:11", MW_DMARC_FO_D},     /* unknown options ignored */
        {"v=DMARC1; p=none; fo=d; fo=1", MW_DMARC_FO_D},    /* first value wins */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mw_dmarc_record r;
        char why[200];
        MW_TEST_ASSERT(mw_dmarc_record_parse(cases[i].rec, strlen(cases[i].rec),
                                             MW_DMARC_MODE_RFC9989, &r, why, sizeof why));
        if (!MW_TEST_EQ_INT(r.fo, cases[i].fo))
            fprintf(stderr, "  record: %s\n", cases[i].rec);
        mw_dmarc_record_clear(&r);
    }
}

static void test_fo_decision(void)
{
    static const struct {
        unsigned fo;
        mw_failrep_facts f;
        bool want;
    } cases[] = {
        /* fo=0: only when neither mechanism gave an aligned pass */
        {MW_DMARC_FO_0, {true, false, false, false, false}, true},
        {MW_DMARC_FO_0, {true, true, false, false, false}, false},   /* cannot fail DMARC, but */
        {0, {true, false, false, false, false}, true},               /* 0 bits: the default */
        /* fo=1: either without an aligned pass */
        {MW_DMARC_FO_1, {true, true, false, false, false}, true},
        {MW_DMARC_FO_1, {true, false, false, false, false}, true},
        /* fo=d: a DKIM signature failed */
        {MW_DMARC_FO_D, {true, false, false, false, false}, false},
        {MW_DMARC_FO_D, {true, false, false, false, true}, true},
        /* fo=s: SPF failed */
        {MW_DMARC_FO_S, {true, false, false, false, true}, false},
        {MW_DMARC_FO_S, {true, false, false, true, false}, true},
        {MW_DMARC_FO_D | MW_DMARC_FO_S, {true, false, false, true, false}, true},
        /* never without a DMARC failure */
        {MW_DMARC_FO_1, {false, true, false, true, true}, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[200];
        bool got = mw_failrep_wanted(cases[i].fo, &cases[i].f, why, sizeof why);
        if (!MW_TEST_EQ_INT(got, cases[i].want))
            fprintf(stderr, "  case %zu: %s\n", i, why);
        MW_TEST_ASSERT(why[0] != '\0');
    }
}

static void redact_eq(const char *in, const char *want)
{
    mw_buf b = MW_BUF_INIT;
    mw_failrep_redact(in, strlen(in), &b);
    MW_TEST_EQ_STR(mw_buf_cstr(&b), want);
    mw_buf_free(&b);
}

static void test_redact(void)
{
    /* SHA-256 prefixes computed independently (Python hashlib) */
    redact_eq("From: John <john.doe@example.com>",
              "From: John <redacted-30f69670bba25e88@example.com>");
    redact_eq("From: John.Doe@Example.com", "From: redacted-30f69670bba25e88@Example.com");
    redact_eq("To: \"john doe\"@example.com",
              "To: redacted-ed9338e0d002a6d9@example.com");
    redact_eq("Received: from x by y for <bob@example.net>; Sat",
              "Received: from x by y for <redacted-81b637d8fcd2c6da@example.net>; Sat");
    redact_eq("Cc: alice@a.example, bob@b.example",
              "Cc: redacted-2bd806c97f0e00af@a.example, redacted-81b637d8fcd2c6da@b.example");
    /* not addresses: left alone */
    redact_eq("Subject: meet @ noon, @home, user@ , a@", "Subject: meet @ noon, @home, user@ , a@");
    redact_eq("", "");
    /* a NUL is no local-part character (the fuzzer found a read past it) */
    mw_buf nul = MW_BUF_INIT;
    mw_failrep_redact("x\0\xffu@b.example", 14, &nul);
    MW_TEST_EQ_INT(nul.len, 2 + 25 + 10);
    MW_TEST_ASSERT(nul.len > 2 && memcmp(nul.data, "x\0redacted-", 11) == 0);
    mw_buf_free(&nul);
    /* two @ in a row: the second local part cannot reach back into the first */
    mw_buf b = MW_BUF_INIT;
    mw_failrep_redact("a@b.c@d.e", 9, &b);
    const char *o = mw_buf_cstr(&b);
    MW_TEST_ASSERT(strncmp(o, "redacted-", 9) == 0 && strlen(o) == 55);
    MW_TEST_ASSERT(strncmp(o + 26, "redacted-", 9) == 0 && strcmp(o + 51, "@d.e") == 0);
    mw_buf_free(&b);
}

static mw_buf hdrs;   /* the header section a session would keep */

static void make_headers(void)
{
    static const char *const h[][2] = {
        {"Received", "from mail.evil.example (mail.evil.example [192.0.2.7])\n\tby mx.test "
                     "(Postfix) with ESMTP id 4ABC for <bob@victim.example>; Sat, 5 Dec 2026"},
        {"From", "Alice <alice@victim.example>"},
        {"To", "bob@victim.example"},
        /* a value with bare line breaks: may add neither a field nor a boundary */
        {"Subject", "hello\n--mw-failure-fake\nX-Injected: yes"},
        {"Message-ID", "<m1@evil.example>"},
    };
    mw_buf_reset(&hdrs);
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        mw_failrep_header_append(&hdrs, h[i][0], h[i][1], strlen(h[i][1]));
}

static void build(mw_failrep_mode mode, const char *mail_from, mw_buf *out, char id[33])
{
    mw_failrep_dkim dk[] = {{"evil.example", "sel1"}};
    mw_failrep_info in = {
        .mode = mode, .user_agent = "mailwarden/test", .reporting_host = "mx.test",
        .arrival = 1796479200, /* 2026-12-05 14:00:00 UTC */
        .source_ip = "192.0.2.7", .envelope_id = "4ABC", .mail_from = mail_from,
        .rcpt_to = "bob@victim.example", .reported_domain = "victim.example",
        .policy_domain = "victim.example",
        .authres = "mx.test; spf=fail smtp.mailfrom=evil.example;\r\n\tdkim=fail header.d=evil.example;"
                   " dmarc=fail header.from=victim.example",
        .delivery_result = "reject", .dkim = dk, .ndkim = 1, .headers = hdrs.data,
        .headers_len = hdrs.len};
    mw_failrep_build(&in, out, id);
}

/* Python's email package: the structure and every field of the report. */
static bool python_check(const mw_buf *msg, bool redacted)
{
    char path[128], script[160], cmd[512];
    snprintf(path, sizeof path, "%s/report.eml", tmpdir);
    snprintf(script, sizeof script, "%s/check.py", tmpdir);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return false;
    fputs("From: reports@mx.test\r\nTo: ruf@victim.example\r\n", f);
    fwrite(msg->data, 1, msg->len, f);
    fclose(f);
    f = fopen(script, "w");
    if (f == NULL)
        return false;
    fputs("import email, email.policy, sys\n"
          "m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.compat32)\n"
          "assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
          "assert m.get_param('report-type') == 'feedback-report'\n"
          "parts = m.get_payload()\n"
          "assert len(parts) == 3, len(parts)\n"
          "assert parts[0].get_content_type() == 'text/plain'\n"
          "assert parts[1].get_content_type() == 'message/feedback-report'\n"
          "assert parts[2].get_content_type() == 'text/rfc822-headers'\n"
          "fb = parts[1].get_payload()[0]\n"
          "want = {'Feedback-Type': 'auth-failure', 'Version': '1', 'User-Agent': 'mailwarden/test',\n"
          "  'Auth-Failure': 'dmarc', 'Original-Envelope-Id': '4ABC', 'Source-IP': '192.0.2.7',\n"
          "  'Reported-Domain': 'victim.example', 'Identity-Alignment': 'none',\n"
          "  'Delivery-Result': 'reject', 'DKIM-Domain': 'evil.example', 'DKIM-Selector': 'sel1',\n"
          "  'Arrival-Date': 'Sat, 05 Dec 2026 14:00:00 +0000'}\n"
          "for k, v in want.items():\n"
          "    assert fb[k] == v, (k, fb[k], v)\n"
          "ar = ' '.join(fb['Authentication-Results'].split())\n"
          "assert ar.startswith('mx.test; spf=fail') and 'dmarc=fail' in ar, ar\n"
          "hdr = parts[2].get_payload()\n"
          "assert 'X-Injected' not in m and 'X-Injected' not in fb, 'injected field'\n"
          "assert '\\n--mw-failure-fake' not in hdr and '\\n --mw-failure-fake' in hdr, hdr\n"
          "red = sys.argv[2] == '1'\n"
          "assert ('alice@' in hdr) != red and ('bob@' in hdr) != red, hdr\n"
          "assert ('redacted-2bd806c97f0e00af@victim.example' in hdr) == red\n"
          "assert '\\nX-Injected' not in hdr and '\\n X-Injected: yes' in hdr, hdr\n"
          "omf = fb['Original-Mail-From']\n"
          "assert omf.startswith('<redacted-' if red else '<mallory@'), omf\n"
          "assert 'Bcc' not in m and fb.get('Bcc') is None\n",
          f);
    fclose(f);
    const char *py = getenv("MW_TEST_PYTHON");
    snprintf(cmd, sizeof cmd, "%s %s %s %d", py && *py ? py : "/usr/bin/python3", script, path,
             redacted ? 1 : 0);
    return system(cmd) == 0;
}

static void test_build(void)
{
    mw_buf out = MW_BUF_INIT;
    char id[33];

    build(MW_FAILREP_FULL, "mallory@evil.example\r\nBcc: victim@x.example", &out, id);
    MW_TEST_EQ_INT(strlen(id), 32);
    MW_TEST_ASSERT(has(&out, "Content-Type: multipart/report; report-type=feedback-report;"));
    MW_TEST_ASSERT(has(&out, "\r\nFeedback-Type: auth-failure\r\n"));
    MW_TEST_ASSERT(has(&out, "\r\nAuth-Failure: dmarc\r\n"));
    MW_TEST_ASSERT(has(&out, "\r\nVersion: 1\r\n"));
    MW_TEST_ASSERT(has(&out, "\r\nAuto-Submitted: auto-generated\r\n"));
    /* the CRLF in the envelope sender does not start a field */
    MW_TEST_ASSERT(!has(&out, "\r\nBcc:"));
    MW_TEST_ASSERT(has(&out, "Original-Mail-From: <mallory@evil.example Bcc: victim@x.example>"));
    /* the bare LF before "--mw-failure-fake" in a header value is indented */
    MW_TEST_ASSERT(!has(&out, "\n--mw-failure-fake"));
    MW_TEST_ASSERT(has(&out, "alice@victim.example"));
    /* every line ends CRLF and none is longer than 998 */
    bool bare = false, longl = false;
    size_t col = 0;
    for (size_t i = 0; i < out.len; i++) {
        if (out.data[i] == '\n') {
            bare |= i == 0 || out.data[i - 1] != '\r';
            col = 0;
        } else if (++col > 998) {
            longl = true;
        }
    }
    MW_TEST_ASSERT(!bare);
    MW_TEST_ASSERT(!longl);
    MW_TEST_ASSERT(python_check(&out, false));

    /* the same report id for the same input: stable across runs */
    char id2[33];
    mw_buf again = MW_BUF_INIT;
    build(MW_FAILREP_FULL, "mallory@evil.example\r\nBcc: victim@x.example", &again, id2);
    MW_TEST_EQ_STR(id, id2);
    mw_buf_free(&again);

    build(MW_FAILREP_REDACTED, "mallory@evil.example", &out, id);
    MW_TEST_ASSERT(!has(&out, "alice@"));
    MW_TEST_ASSERT(!has(&out, "bob@"));
    MW_TEST_ASSERT(!has(&out, "mallory@"));
    MW_TEST_ASSERT(has(&out, "redacted-2bd806c97f0e00af@victim.example"));
    MW_TEST_ASSERT(has(&out, "Reported-Domain: victim.example"));
    MW_TEST_ASSERT(python_check(&out, true));

    /* a very long header line is folded, an 8-bit header declared 8bit */
    mw_buf big = MW_BUF_INIT;
    mw_buf_puts(&big, "Subject: ");
    for (int i = 0; i < 3000; i++)
        mw_buf_putc(&big, 'x');
    mw_buf_puts(&big, "\r\nX-Name: J\xc3\xbcrgen\r\n");
    mw_failrep_info in = {.mode = MW_FAILREP_FULL, .reporting_host = "mx.test",
                          .headers = big.data, .headers_len = big.len};
    mw_failrep_build(&in, &out, id);
    col = 0;
    longl = false;
    for (size_t i = 0; i < out.len; i++)
        col = out.data[i] == '\n' ? 0 : col + 1, longl |= col > 998;
    MW_TEST_ASSERT(!longl);
    MW_TEST_ASSERT(has(&out, "Content-Transfer-Encoding: 8bit"));
    mw_buf_free(&big);
    mw_buf_free(&out);
}

static void test_limiter(void)
{
    mw_failrep_limiter *l = mw_failrep_limiter_create();
    bool log_it;
    time_t t = 1796479200;   /* the top of an hour */

    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@a.example", 2, t, &log_it), MW_FRL_OK);
    MW_TEST_ASSERT(!log_it);
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "RUF@a.example", 2, t + 1, &log_it), MW_FRL_OK);
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@a.example", 2, t + 2, &log_it), MW_FRL_LIMITED);
    MW_TEST_ASSERT(log_it);   /* logged once per window ... */
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@a.example", 2, t + 3, &log_it), MW_FRL_LIMITED);
    MW_TEST_ASSERT(!log_it);  /* ... not again */
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@b.example", 2, t + 4, &log_it), MW_FRL_OK);
    /* the next hour starts afresh */
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@a.example", 2, t + 3600, &log_it), MW_FRL_OK);
    /* rate 0: none */
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "ruf@c.example", 0, t + 3600, &log_it),
                   MW_FRL_LIMITED);

    /* the table is bounded: past MW_FAILREP_LIMIT_DESTS a new destination is refused */
    time_t t2 = t + 7200;
    char a[64];
    unsigned ok = 0;
    for (unsigned i = 0; i < MW_FAILREP_LIMIT_DESTS; i++) {
        snprintf(a, sizeof a, "r%u@d.example", i);
        ok += mw_failrep_limiter_take(l, a, 5, t2, &log_it) == MW_FRL_OK;
    }
    MW_TEST_EQ_INT(ok, MW_FAILREP_LIMIT_DESTS);
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "new@d.example", 5, t2, &log_it), MW_FRL_FULL);
    MW_TEST_ASSERT(log_it);
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "new2@d.example", 5, t2, &log_it), MW_FRL_FULL);
    MW_TEST_ASSERT(!log_it);
    /* a known destination still gets its rate */
    MW_TEST_EQ_INT(mw_failrep_limiter_take(l, "r7@d.example", 5, t2, &log_it), MW_FRL_OK);
    mw_failrep_limiter_destroy(&l);
    MW_TEST_ASSERT(l == NULL);
}

static bool parses(const char *text, char *why, size_t whylen)
{
    mw_failrep_spooled sp;
    bool ok = mw_failrep_spool_parse(text, strlen(text), &sp, why, whylen);
    mw_failrep_spooled_clear(&sp);
    return ok;
}

static void test_spool(void)
{
    mw_failrep_spooled sp = {0}, back;
    mw_buf file = MW_BUF_INIT;
    char why[300];

    memcpy(sp.id, "0123456789abcdef0123456789abcdef", 33);
    snprintf(sp.domain, sizeof sp.domain, "victim.example");
    sp.time = 1796479200;
    sp.dest[0] = mw_strdup("ruf@victim.example");
    sp.dest[1] = mw_strdup("dmarc+f@reports.example");
    sp.ndest = 2;
    sp.msg = "Subject: x\r\n\r\nbody\r\n";
    sp.msg_len = strlen(sp.msg);
    mw_failrep_spool_format(&sp, &file);
    MW_TEST_ASSERT(mw_failrep_spool_parse(file.data, file.len, &back, why, sizeof why));
    MW_TEST_EQ_STR(back.id, sp.id);
    MW_TEST_EQ_STR(back.domain, "victim.example");
    MW_TEST_EQ_INT(back.time, sp.time);
    MW_TEST_EQ_INT(back.ndest, 2);
    MW_TEST_EQ_STR(back.dest[1], "dmarc+f@reports.example");
    MW_TEST_EQ_MEM(back.msg, back.msg_len, sp.msg, sp.msg_len);
    mw_failrep_spooled_clear(&back);

    /* write: whole file in new/, nothing left in tmp/ */
    char err[300], path[200];
    MW_TEST_ASSERT(mw_failrep_spool_write(tmpdir, "1796479200.x", &file, err, sizeof err));
    snprintf(path, sizeof path, "%s/new/1796479200.x", tmpdir);
    struct stat st;
    MW_TEST_ASSERT(stat(path, &st) == 0 && (size_t)st.st_size == file.len);
    snprintf(path, sizeof path, "%s/tmp", tmpdir);
    DIR *d = opendir(path);
    size_t left = 0;
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;)
        left += de->d_name[0] != '.';
    if (d)
        closedir(d);
    MW_TEST_EQ_INT(left, 0);
    /* an existing name is never overwritten through tmp/ (O_EXCL) */
    snprintf(path, sizeof path, "%s/tmp/dup", tmpdir);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
    MW_TEST_ASSERT(!mw_failrep_spool_write(tmpdir, "dup", &file, err, sizeof err));
    mw_buf_free(&file);
    mw_failrep_spooled_clear(&sp);

    /* hostile or broken files are refused, each with a reason */
    static const char *const bad[] = {
        "",
        "mailwarden-failure-report 2\nid 0123456789abcdef0123456789abcdef\n\nx",
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\nto a@a.example\n",                                           /* no blank line */
        "mailwarden-failure-report 1\nid 0123456789ABCDEF0123456789abcdef\ndomain a.example\n"
        "time 1\nto a@a.example\n\nx",                                        /* upper-case id */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\nto a@a.example\r\n\nx",                                      /* CR */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\nto a@a.example>\n\nx",                                       /* unsafe address */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\nto a b@a.example\n\nx",
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a..example\n"
        "time 1\nto a@a.example\n\nx",                                        /* bad domain */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\nid "
        "0123456789abcdef0123456789abcdef\ndomain a.example\ntime 1\nto a@a.example\n\nx",
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\n\nx",                                                        /* no destination */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1\nto a@a.example\n\n",                                         /* no message */
        "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\ndomain a.example\n"
        "time 1x\nto a@a.example\n\nx",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        if (!MW_TEST_ASSERT(!parses(bad[i], why, sizeof why)))
            fprintf(stderr, "  bad[%zu] accepted\n", i);
        MW_TEST_ASSERT(why[0] != '\0');
    }
    /* more destinations than a report takes */
    mw_buf many = MW_BUF_INIT;
    mw_buf_puts(&many, "mailwarden-failure-report 1\nid 0123456789abcdef0123456789abcdef\n"
                       "domain a.example\ntime 1\n");
    for (int i = 0; i <= MW_FAILREP_MAX_DESTS; i++)
        mw_buf_printf(&many, "to r%d@a.example\n", i);
    mw_buf_puts(&many, "\nx");
    MW_TEST_ASSERT(!parses(mw_buf_cstr(&many), why, sizeof why));
    mw_buf_free(&many);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mw-test-failrep.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    make_headers();
    MW_TEST_RUN(test_fo_parse);
    MW_TEST_RUN(test_fo_decision);
    MW_TEST_RUN(test_redact);
    MW_TEST_RUN(test_build);
    MW_TEST_RUN(test_limiter);
    MW_TEST_RUN(test_spool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    (void)system(cmd);
    mw_buf_free(&hdrs);
    return MW_TEST_SUMMARY();
}
