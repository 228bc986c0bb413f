/*
 * test_checks_arc.c - unit tests for ARC (checks/arc.c, arc_sign.c) and the
 * DKIM pieces under it (dkim_tags.c): tag lists, chains sealed and verified
 * over several hops (RSA and Ed25519 keys), tampering at each place,
 * streaming in any chunking, the limits, temporary key failures, sealing
 * failed and terminated chains, and interop with dkimpy both ways.
 *
 * Keys are generated at start (mw_dkim_keygen) and published by the
 * scriptable test DNS server (tests/lib/testdns.py); every key lookup goes
 * through mw_dns.  The dkimpy cases need /usr/bin/python3 with python3-dkim
 * and python3-authres (skipped with a message when missing).
 *
 * Environment: MW_SOURCE_DIR (source root), MW_TEST_PYTHON (default
 * /usr/bin/python3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "alloc.h"
#include "arc.h"
#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dns.h"
#include "mwtest.h"
#include "mwtest_procs.h"

#include "../../filter/checks/dkim_tags.h"

static mwt_proc server;
static mw_dns *dns;
static mw_arc_verifier *verifier;        /* key lookups get the resolver's generous default */
static mw_arc_verifier *verifier_fast;   /* 300 ms per lookup: only for the silent key */
static mw_dkim_signer *signer;
static size_t k_rsa, k_ed, k_tmo;
static char rsa_p[1024];

#define MSG                                                                                    \
    "Authentication-Results: mw.test; spf=pass smtp.mailfrom=a@origin.test\n"                  \
    "From: A <a@origin.test>\n"                                                                \
    "To: list@lists.test\n"                                                                    \
    "Subject: hello\n"                                                                         \
    "Date: Thu, 14 Jan 2015 15:00:01 -0800\n"                                                  \
    "Message-ID: <1@origin.test>\n"                                                            \
    "\n"                                                                                       \
    "Hello  there, \n"                                                                         \
    "second line\n\n\n"

#define AR "mw.test; spf=pass smtp.mailfrom=a@origin.test;\n\tdkim=pass header.d=origin.test"

static const char *tpath(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    return mwt_path(&server, name, buf[i], sizeof buf[i]);
}

/* ---- feeding messages --------------------------------------------------------------- */

/* Headers (folding kept, LF), then the body in chunks of chunk bytes (0: whole). */
static void feed(mw_arc_msg *m, const char *msg, size_t chunk)
{
    size_t len = strlen(msg), i = 0;
    mw_buf name = MW_BUF_INIT, value = MW_BUF_INIT;
    bool have = false;

    while (i < len) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t e = nl != NULL ? (size_t)(nl - msg) : len, le = e;
        if (le > i && msg[le - 1] == '\r')
            le--;                      /* CRLF input: the fields keep LF folds */
        if (le == i) {
            i = e + 1;
            break;
        }
        if (msg[i] == ' ' || msg[i] == '\t') {
            mw_buf_putc(&value, '\n');
            mw_buf_append(&value, msg + i, le - i);
        } else {
            if (have)
                mw_arc_msg_header(m, name.data, mw_buf_cstr(&value), value.len);
            const char *colon = memchr(msg + i, ':', le - i);
            size_t nlen = colon != NULL ? (size_t)(colon - (msg + i)) : le - i;
            mw_buf_reset(&name);
            mw_buf_append(&name, msg + i, nlen);
            mw_buf_reset(&value);
            if (colon != NULL)
                mw_buf_append(&value, colon + 1, le - i - nlen - 1);
            have = true;
        }
        i = e + 1;
    }
    if (have)
        mw_arc_msg_header(m, name.data, mw_buf_cstr(&value), value.len);
    mw_arc_msg_eoh(m);
    while (i < len) {
        size_t n = chunk == 0 || chunk > len - i ? len - i : chunk;
        mw_arc_msg_body(m, (const unsigned char *)msg + i, n);
        i += n;
    }
    mw_buf_free(&name);
    mw_buf_free(&value);
}

static void verify_with(mw_arc_verifier *v, const char *msg, size_t chunk, mw_arc_status *st)
{
    mw_arc_msg *m = mw_arc_msg_begin(v, NULL, 0, "t");
    feed(m, msg, chunk);
    mw_arc_msg_end(m, st);
    mw_arc_msg_free(&m);
}

static void verify(const char *msg, size_t chunk, mw_arc_status *st)
{
    verify_with(verifier, msg, chunk, st);
}

/* Verify msg and seal it with key k; out = the new set + msg.  Returns sealed. */
static bool seal(const char *msg, size_t k, mw_arc_status *st, mw_buf *out, char *why, size_t wl)
{
    mw_arc_msg *m = mw_arc_msg_begin(verifier, signer, k, "t");
    mw_arc_set set;
    bool ok;

    feed(m, msg, 0);
    mw_arc_msg_end(m, st);
    ok = mw_arc_msg_seal(m, st, AR, 1700000000, &set, why, wl);
    mw_buf_reset(out);
    if (ok)
        mw_buf_printf(out, "ARC-Seal: %s\nARC-Message-Signature: %s\nARC-Authentication-Results: %s\n",
                      set.as, set.ams, set.aar);
    mw_buf_puts(out, msg);
    mw_arc_set_clear(&set);
    mw_arc_msg_free(&m);
    return ok;
}

/* Replace the first occurrence of from by to in b. */
static bool replace(mw_buf *b, const char *from, const char *to)
{
    char *p = strstr(mw_buf_cstr(b), from);
    mw_buf n = MW_BUF_INIT;

    if (p == NULL)
        return false;
    mw_buf_append(&n, b->data, (size_t)(p - b->data));
    mw_buf_puts(&n, to);
    mw_buf_puts(&n, p + strlen(from));
    mw_buf_free(b);
    *b = n;
    return true;
}

static bool has(const char *s, const char *sub)
{
    mw_buf u = MW_BUF_INIT;   /* folding undone: "\n\t" -> " " */
    for (const char *p = s; p != NULL && *p != '\0'; p++)
        if (!(p[0] == '\n' && (p[1] == '\t' || p[1] == ' ')) && !(p[0] == '\t' && p > s && p[-1] == '\n'))
            mw_buf_putc(&u, *p);
        else if (*p == '\t')
            mw_buf_putc(&u, ' ');
    bool ok = s != NULL && strstr(mw_buf_cstr(&u), sub) != NULL;
    mw_buf_free(&u);
    if (!ok)
        fprintf(stderr, "  \"%s\" does not contain \"%s\"\n", s ? s : "(null)", sub);
    return ok;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_tags(void)
{
    mw_dkim_tags tl;
    char why[128];
    mw_buf b = MW_BUF_INIT;
    const char *ok1 = " a = rsa-sha256 ;\r\n\tb=AB CD\r\n EF== ; h=from : to;";

    MW_TEST_ASSERT(mw_dkim_tags_parse(ok1, strlen(ok1), &tl, why, sizeof why));
    MW_TEST_EQ_INT(tl.n, 3);
    const mw_dkim_tag *t = mw_dkim_tags_get(&tl, "b");
    if (MW_TEST_ASSERT(t != NULL)) {
        MW_TEST_EQ_INT(t->vlen, strlen("AB CD\r\n EF=="));
        MW_TEST_ASSERT(ok1[t->after_eq - 1] == '=' && ok1[t->spec_end] == ';');
    }
    char *h = mw_dkim_tag_dup(&tl, "h");
    MW_TEST_EQ_STR(h, "from:to");
    free(h);
    MW_TEST_ASSERT(mw_dkim_tags_get(&tl, "A") == NULL);   /* names are case-sensitive */
    MW_TEST_ASSERT(!mw_dkim_tags_parse("a=1; a=2", 8, &tl, why, sizeof why));
    MW_TEST_ASSERT(has(why, "duplicate"));
    MW_TEST_ASSERT(!mw_dkim_tags_parse("a=1;; b=2", 9, &tl, why, sizeof why));
    MW_TEST_ASSERT(has(why, "empty tag"));
    MW_TEST_ASSERT(!mw_dkim_tags_parse("1a=1", 4, &tl, why, sizeof why));
    MW_TEST_ASSERT(!mw_dkim_tags_parse("a", 1, &tl, why, sizeof why));
    MW_TEST_ASSERT(!mw_dkim_tags_parse("a=x\x01y", 5, &tl, why, sizeof why));
    MW_TEST_ASSERT(mw_dkim_tags_parse("a=; b=1 ;  ", 11, &tl, why, sizeof why) && tl.n == 2);
    MW_TEST_ASSERT(mw_dkim_b64_decode("aGVs\r\n bG8=", 11, &b) && b.len == 5 &&
                   memcmp(b.data, "hello", 5) == 0);
    MW_TEST_ASSERT(!mw_dkim_b64_decode("aGVs!G8=", 8, &b));
    MW_TEST_ASSERT(!mw_dkim_b64_decode("aGV=bG8=", 8, &b));
    MW_TEST_ASSERT(!mw_dkim_b64_decode("aGVsb", 5, &b));
    mw_buf_free(&b);
}

static void test_none(void)
{
    mw_arc_status st;

    verify(MSG, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_NONE);
    MW_TEST_EQ_INT(st.instances, 0);
    MW_TEST_ASSERT(st.sealer == NULL && st.aar_parsed == NULL);
    mw_arc_status_clear(&st);
}

/* Three hops: RSA, Ed25519, RSA; each verifies the previous and seals. */
static void test_chain(void)
{
    mw_arc_status st;
    mw_buf m1 = MW_BUF_INIT, m2 = MW_BUF_INIT, m3 = MW_BUF_INIT;
    char why[256];

    MW_TEST_ASSERT(seal(MSG, k_rsa, &st, &m1, why, sizeof why));
    MW_TEST_EQ_INT(st.result, MW_ARC_NONE);
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(has(m1.data, "ARC-Seal: a=rsa-sha256; b="));
    MW_TEST_ASSERT(has(m1.data, "cv=none; d=seal.test; i=1; s=rsa; t=1700000000"));
    MW_TEST_ASSERT(has(m1.data, "c=relaxed/relaxed; d=seal.test; h=From:From:To:Subject:Date;"));
    MW_TEST_ASSERT(has(m1.data, "ARC-Authentication-Results: i=1; mw.test; spf=pass"));

    verify(m1.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    MW_TEST_EQ_INT(st.instances, 1);
    MW_TEST_EQ_INT(st.oldest_pass, 1);
    MW_TEST_EQ_STR(st.sealer, "seal.test");
    MW_TEST_EQ_STR(st.selector, "rsa");
    if (MW_TEST_ASSERT(st.aar_parsed != NULL)) {
        MW_TEST_EQ_STR(st.aar_parsed->id, "mw.test");
        MW_TEST_EQ_INT(st.aar_parsed->nri, 2);
        MW_TEST_EQ_STR(st.aar_parsed->ri[1].method, "dkim");
    }
    MW_TEST_ASSERT(has(st.aar, "mw.test; spf=pass"));
    mw_arc_status_clear(&st);

    MW_TEST_ASSERT(seal(m1.data, k_ed, &st, &m2, why, sizeof why));
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(has(m2.data, "a=ed25519-sha256"));
    MW_TEST_ASSERT(has(m2.data, "cv=pass; d=seal.test; i=2; s=ed"));
    MW_TEST_ASSERT(seal(m2.data, k_rsa, &st, &m3, why, sizeof why));
    mw_arc_status_clear(&st);

    /* any chunking gives the same answer */
    size_t chunks[] = {0, 1, 2, 3, 7, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        verify(m3.data, chunks[c], &st);
        if (!MW_TEST_EQ_INT(st.result, MW_ARC_PASS))
            fprintf(stderr, "  chunk %zu: %s\n%s\n", chunks[c], st.reason, m3.data);
        MW_TEST_EQ_INT(st.instances, 3);
        MW_TEST_EQ_INT(st.oldest_pass, 1);
        mw_arc_status_clear(&st);
    }

    /* CRLF line ends everywhere: same answer */
    mw_buf crlf = MW_BUF_INIT;
    for (const char *p = m3.data; *p != '\0'; p++) {
        if (*p == '\n')
            mw_buf_putc(&crlf, '\r');
        mw_buf_putc(&crlf, *p);
    }
    verify(crlf.data, 5, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    mw_arc_status_clear(&st);
    mw_buf_free(&crlf);

    /* the body changed after hop 3: the newest AMS fails */
    mw_buf t = MW_BUF_INIT;
    mw_buf_puts(&t, m3.data);
    MW_TEST_ASSERT(replace(&t, "second line", "second  line!"));
    verify(t.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(has(st.reason, "ARC-Message-Signature i=3: body hash mismatch"));
    MW_TEST_ASSERT(!st.temporary && !st.terminated);
    mw_arc_status_clear(&st);

    /* relaxed canonicalization: blank changes inside a line do not matter */
    mw_buf_reset(&t);
    mw_buf_puts(&t, m3.data);
    MW_TEST_ASSERT(replace(&t, "Hello  there, \n", "Hello \t there,\n"));
    verify(t.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    mw_arc_status_clear(&st);

    /* an older seal's signature modified: that AS fails */
    mw_buf_reset(&t);
    mw_buf_puts(&t, m3.data);
    char *as2 = strstr(t.data, "i=2; s=ed");
    char *b = as2 != NULL ? strstr(strstr(t.data, "ARC-Seal: a=ed25519") , "b=") : NULL;
    if (MW_TEST_ASSERT(b != NULL)) {
        b[2] = b[2] == 'A' ? 'B' : 'A';
        verify(t.data, 0, &st);
        MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
        /* AS 3 covers AS 2 too: seals are checked newest first */
        MW_TEST_ASSERT(has(st.reason, "ARC-Seal i=3: signature did not verify"));
        mw_arc_status_clear(&st);
    }

    /* a list at hop 2 verifies (pass), changes the Subject, then seals:
     * the chain passes, the AMS of i=1 no longer does: oldest-pass 2 */
    mw_buf h2 = MW_BUF_INIT;
    verify(m1.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    mw_buf_reset(&t);
    mw_buf_puts(&t, m1.data);
    MW_TEST_ASSERT(replace(&t, "Subject: hello", "Subject: [list] hello"));
    mw_arc_msg *m = mw_arc_msg_begin(verifier, signer, k_rsa, "t");
    mw_arc_set set;
    mw_arc_status st2;
    feed(m, t.data, 0);
    mw_arc_msg_end(m, &st2);
    MW_TEST_EQ_INT(st2.result, MW_ARC_FAIL);       /* what the changed message is */
    mw_arc_status_clear(&st2);
    if (MW_TEST_ASSERT(mw_arc_msg_seal(m, &st, AR, 0, &set, why, sizeof why))) {
        mw_buf_printf(&h2, "ARC-Seal: %s\nARC-Message-Signature: %s\nARC-Authentication-Results: %s\n%s",
                      set.as, set.ams, set.aar, t.data);
        mw_arc_set_clear(&set);
    }
    mw_arc_msg_free(&m);
    mw_arc_status_clear(&st);
    verify(h2.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    MW_TEST_EQ_INT(st.oldest_pass, 2);
    mw_arc_status_clear(&st);

    mw_buf_free(&h2);
    mw_buf_free(&t);
    mw_buf_free(&m1);
    mw_buf_free(&m2);
    mw_buf_free(&m3);
}

/* A failing chain is sealed with cv=fail over the new set only; after that
 * no set is added. */
static void test_fail_seal(void)
{
    mw_arc_status st;
    mw_buf m1 = MW_BUF_INIT, m2 = MW_BUF_INIT, m3 = MW_BUF_INIT;
    char why[256];

    MW_TEST_ASSERT(seal(MSG, k_rsa, &st, &m1, why, sizeof why));
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(replace(&m1, "Subject: hello", "Subject: changed"));
    MW_TEST_ASSERT(seal(m1.data, k_rsa, &st, &m2, why, sizeof why));
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(has(st.reason, "ARC-Message-Signature i=1: signature did not verify"));
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(has(m2.data, "cv=fail; d=seal.test; i=2"));

    verify(m2.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(st.terminated);
    MW_TEST_ASSERT(has(st.reason, "ARC-Seal i=2 says cv=fail"));
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(!seal(m2.data, k_rsa, &st, &m3, why, sizeof why));
    MW_TEST_ASSERT(has(why, "already says cv=fail"));
    mw_arc_status_clear(&st);
    mw_buf_free(&m1);
    mw_buf_free(&m2);
    mw_buf_free(&m3);
}

static void test_limits(void)
{
    mw_arc_status st;
    mw_buf t = MW_BUF_INIT;
    char why[256];

    /* i=51 */
    mw_buf_printf(&t, "ARC-Seal: i=51; a=rsa-sha256; cv=pass; d=seal.test; s=rsa; b=AAAA\n%s", MSG);
    verify(t.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(has(st.reason, "above the limit of 50 sets"));
    mw_arc_status_clear(&st);

    /* 200 ARC fields: refused without looking at them all */
    mw_buf_reset(&t);
    for (int i = 0; i < 200; i++)
        mw_buf_printf(&t, "ARC-Authentication-Results: i=%d; x.test; none\n", i % 50 + 1);
    mw_buf_puts(&t, MSG);
    verify(t.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(has(st.reason, "200 ARC header fields"));
    mw_arc_status_clear(&st);

    /* structure: a gap, a duplicate, a missing AS, bad i= forms */
    const char *bad[][2] = {
        {"ARC-Authentication-Results: i=2; x.test; none\n", "instance 1 has no"},
        {"ARC-Authentication-Results: i=1; x.test; none\n"
         "ARC-Authentication-Results: i=1; y.test; none\n", "two ARC-Authentication-Results fields with i=1"},
        {"ARC-Seal: i=01; a=rsa-sha256; b=AAAA; cv=none; d=x.test; s=s\n", "invalid i= value"},
        {"ARC-Seal: i=1; i=1; a=rsa-sha256\n", "duplicate tag"},
        {"ARC-Authentication-Results: x.test; i=1; none\n", "does not start with i="},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mw_buf_reset(&t);
        mw_buf_printf(&t, "%s%s", bad[i][0], MSG);
        verify(t.data, 0, &st);
        MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
        MW_TEST_ASSERT(has(st.reason, bad[i][1]));
        mw_arc_status_clear(&st);
    }

    /* a chain of 50 sets verifies; the 51st set is refused by the sealer */
    mw_buf cur = MW_BUF_INIT, next = MW_BUF_INIT;
    mw_buf_puts(&cur, MSG);
    bool ok = true;
    for (int i = 0; i < MW_ARC_MAX_INSTANCES && ok; i++) {
        ok = seal(cur.data, k_ed, &st, &next, why, sizeof why);
        ok = ok && st.result == (i == 0 ? MW_ARC_NONE : MW_ARC_PASS);
        mw_arc_status_clear(&st);
        mw_buf_reset(&cur);
        mw_buf_puts(&cur, next.data);
    }
    MW_TEST_ASSERT(ok);
    verify(cur.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
    MW_TEST_EQ_INT(st.instances, 50);
    MW_TEST_EQ_INT(st.oldest_pass, 1);
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(!seal(cur.data, k_ed, &st, &next, why, sizeof why));
    MW_TEST_ASSERT(has(why, "already has 50 sets"));
    mw_arc_status_clear(&st);
    mw_buf_free(&cur);
    mw_buf_free(&next);
    mw_buf_free(&t);
}

/* A key lookup that times out: fail, marked temporary. */
static void test_temporary(void)
{
    mw_arc_status st;
    mw_buf m1 = MW_BUF_INIT;
    char why[256];

    MW_TEST_ASSERT(seal(MSG, k_tmo, &st, &m1, why, sizeof why));
    mw_arc_status_clear(&st);
    verify_with(verifier_fast, m1.data, 0, &st);
    MW_TEST_EQ_INT(st.result, MW_ARC_FAIL);
    MW_TEST_ASSERT(st.temporary);
    MW_TEST_ASSERT(has(st.reason, "timeout._domainkey.seal.test"));
    mw_arc_status_clear(&st);
    mw_buf_free(&m1);
}

/* ---- dkimpy interop ------------------------------------------------------------------ */

static const char *python(void)
{
    const char *p = getenv("MW_TEST_PYTHON");
    return p != NULL && *p != '\0' ? p : "/usr/bin/python3";
}

/* Run the helper script with args; its stdout into out; exit status returned. */
static int run_py(const char *args, mw_buf *out)
{
    char cmd[2048];
    FILE *f;
    char buf[4096];
    size_t n;

    snprintf(cmd, sizeof cmd, "%s %s %s", python(), tpath("interop.py"), args);
    f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    mw_buf_reset(out);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        mw_buf_append(out, buf, n);
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char INTEROP_PY[] =
    "import sys, dkim\n"
    "keys = {b'rsa._domainkey.seal.test.': open(sys.argv[2], 'rb').read().strip()}\n"
    "def dnsfunc(name, timeout=5):\n"
    "    return keys.get(name if name.endswith(b'.') else name + b'.')\n"
    "msg = open(sys.argv[3], 'rb').read().replace(b'\\r\\n', b'\\n').replace(b'\\n', b'\\r\\n')\n"
    "if sys.argv[1] == 'verify':\n"
    "    cv, res, why = dkim.arc_verify(msg, dnsfunc=dnsfunc)\n"
    "    print(cv.decode() if cv else 'None', why)\n"
    "else:\n"
    "    key = open(sys.argv[4], 'rb').read()\n"
    "    hs = dkim.arc_sign(msg, b'rsa', b'seal.test', key, b'mw.test', include_headers=[b'from', b'to', b'subject'], timestamp=1700000000)\n"
    "    sys.stdout.buffer.write(b''.join(hs).replace(b'\\r\\n', b'\\n') + msg.replace(b'\\r\\n', b'\\n'))\n";

static void test_dkimpy(void)
{
    mw_buf out = MW_BUF_INIT, m1 = MW_BUF_INIT, m2 = MW_BUF_INIT, args = MW_BUF_INIT;
    mw_arc_status st;
    char why[256];

    char probe[300];
    snprintf(probe, sizeof probe, "%s -c 'import dkim, authres' 2>/dev/null", python());
    if (system(probe) != 0) {
        fprintf(stderr, "SKIP dkimpy interop: python3-dkim or python3-authres missing\n");
        mw_buf_free(&out);
        return;
    }
    /* ours, two hops -> dkimpy verifies */
    MW_TEST_ASSERT(seal(MSG, k_rsa, &st, &m1, why, sizeof why));
    mw_arc_status_clear(&st);
    MW_TEST_ASSERT(seal(m1.data, k_rsa, &st, &m2, why, sizeof why));
    mw_arc_status_clear(&st);
    mwt_write_file(tpath("ours.eml"), m2.data);
    mw_buf_printf(&args, "verify %s %s", tpath("rsa.txt"), tpath("ours.eml"));
    MW_TEST_EQ_INT(run_py(args.data, &out), 0);
    MW_TEST_ASSERT(has(out.data, "pass success"));

    /* dkimpy seals (two hops) -> we verify */
    mw_buf_reset(&args);
    mw_buf_printf(&args, "sign %s %s %s", tpath("rsa.txt"), tpath("plain.eml"), tpath("rsa.pem"));
    mwt_write_file(tpath("plain.eml"), MSG);
    if (MW_TEST_EQ_INT(run_py(args.data, &out), 0)) {
        verify(out.data, 0, &st);
        MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
        MW_TEST_EQ_INT(st.instances, 1);
        mw_arc_status_clear(&st);
        /* dkimpy needs arc=pass in our A-R for the next hop */
        MW_TEST_ASSERT(replace(&out, "Authentication-Results: mw.test;",
                               "Authentication-Results: mw.test; arc=pass;"));
        mwt_write_file(tpath("hop1.eml"), out.data);
        mw_buf_reset(&args);
        mw_buf_printf(&args, "sign %s %s %s", tpath("rsa.txt"), tpath("hop1.eml"), tpath("rsa.pem"));
        if (MW_TEST_EQ_INT(run_py(args.data, &out), 0)) {
            verify(out.data, 3, &st);
            MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
            MW_TEST_EQ_INT(st.instances, 2);
            MW_TEST_EQ_INT(st.oldest_pass, 1);
            mw_arc_status_clear(&st);
            /* and we seal on top of dkimpy's chain; dkimpy verifies all three */
            MW_TEST_ASSERT(seal(out.data, k_rsa, &st, &m1, why, sizeof why));
            MW_TEST_EQ_INT(st.result, MW_ARC_PASS);
            mw_arc_status_clear(&st);
            mwt_write_file(tpath("mixed.eml"), m1.data);
            mw_buf_reset(&args);
            mw_buf_printf(&args, "verify %s %s", tpath("rsa.txt"), tpath("mixed.eml"));
            MW_TEST_EQ_INT(run_py(args.data, &out), 0);
            MW_TEST_ASSERT(has(out.data, "pass success"));
        }
    }
    mw_buf_free(&out);
    mw_buf_free(&m1);
    mw_buf_free(&m2);
    mw_buf_free(&args);
}

/* ---- setup ----------------------------------------------------------------------------- */

static bool make_key(const char *type, const char *file, char *p_out, size_t plen)
{
    mw_buf pem = MW_BUF_INIT, p = MW_BUF_INIT;
    char err[128];
    bool ok = mw_dkim_keygen(type, 0, &pem, &p, err, sizeof err);

    if (ok) {
        ok = mwt_write_file(tpath(file), pem.data) && chmod(tpath(file), 0600) == 0;
        snprintf(p_out, plen, "%s", p.data);
    }
    explicit_bzero(pem.data, pem.len);
    mw_buf_free(&pem);
    mw_buf_free(&p);
    return ok;
}

static size_t key_index(const char *name)
{
    mw_dkim_key_info ki;
    for (size_t i = 0; mw_dkim_signer_key(signer, i, &ki); i++)
        if (strcmp(ki.name, name) == 0)
            return i;
    return (size_t)-1;
}

int main(void)
{
    char ed_p[128], fwd[64], err[256];
    mw_buf z = MW_BUF_INIT, conf = MW_BUF_INIT;
    mw_config_errors errs = {0};

    if (!mwt_proc_dir(&server, "arc") || !make_key("rsa", "rsa.pem", rsa_p, sizeof rsa_p) ||
        !make_key("ed25519", "ed.pem", ed_p, sizeof ed_p)) {
        fprintf(stderr, "cannot make the test keys\n");
        return 1;
    }
    mw_buf_printf(&z, "v=DKIM1; k=rsa; p=%s", rsa_p);
    mwt_write_file(tpath("rsa.txt"), z.data);
    mw_buf_reset(&z);
    mw_buf_printf(&z, "{\"rsa._domainkey.seal.test\": [{\"TXT\": \"v=DKIM1; k=rsa; p=%s\"}],\n"
                      " \"ed._domainkey.seal.test\": [{\"TXT\": \"v=DKIM1; k=ed25519; p=%s\"}],\n"
                      " \"timeout._domainkey.seal.test\": [\"TIMEOUT\"]}\n", rsa_p, ed_p);
    mwt_write_file(tpath("zone.json"), z.data);
    if (!mwt_testdns_start(&server, "arc", NULL)) {
        fprintf(stderr, "cannot start the test DNS server\n");
        return 1;
    }
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", server.port);
    const char *fw[] = {fwd};
    /* A generous resolver default: real key lookups must not race it on a
     * loaded machine (a 300 ms limit for every lookup did); the silent key
     * alone goes through the 300 ms verifier. */
    mw_dns_options dopt = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 10000};
    dns = mw_dns_create(&dopt, err, sizeof err);
    verifier = mw_arc_verifier_create(dns, &(mw_arc_verify_options){.timeout_ms = 0});
    verifier_fast = mw_arc_verifier_create(dns, &(mw_arc_verify_options){.timeout_ms = 300});
    mw_buf_printf(&conf, "dkim = {\n keys = (\n"
                         "  { name = \"rsa\"; domain = \"seal.test\"; selector = \"rsa\"; file = \"%s\"; },\n"
                         "  { name = \"ed\"; domain = \"seal.test\"; selector = \"ed\"; file = \"%s\"; },\n"
                         "  { name = \"tmo\"; domain = \"seal.test\"; selector = \"timeout\"; file = \"%s\"; } );\n"
                         " sign_headers = [ \"From\", \"To\", \"Subject\", \"Date\" ];\n"
                         " oversign_headers = [ \"From\" ];\n};\n",
                  tpath("rsa.pem"), tpath("ed.pem"), tpath("rsa.pem"));
    mwt_write_file(tpath("mw.conf"), conf.data);
    mwt_write_file(tpath("interop.py"), INTEROP_PY);
    mw_config *cfg = mw_config_load(tpath("mw.conf"), NULL, &errs);
    signer = cfg != NULL ? mw_dkim_signer_create(cfg, &errs) : NULL;
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    if (dns == NULL || signer == NULL) {
        fprintf(stderr, "setup failed: %s\n", dns == NULL ? err : "signer");
        mwt_proc_stop(&server);
        return 1;
    }
    k_rsa = key_index("rsa");
    k_ed = key_index("ed");
    k_tmo = key_index("tmo");

    MW_TEST_RUN(test_tags);
    MW_TEST_RUN(test_none);
    MW_TEST_RUN(test_chain);
    MW_TEST_RUN(test_fail_seal);
    MW_TEST_RUN(test_limits);
    MW_TEST_RUN(test_temporary);
    MW_TEST_RUN(test_dkimpy);

    mw_dkim_signer_destroy(&signer);
    mw_arc_verifier_destroy(&verifier);
    mw_arc_verifier_destroy(&verifier_fast);
    mw_dns_destroy(&dns);
    mwt_proc_stop(&server);
    mw_buf_free(&z);
    mw_buf_free(&conf);
    return MW_TEST_SUMMARY();
}
