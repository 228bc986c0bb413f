/*
 * test_engine_authres.c - the engine is the one place that decides which
 * headers are Authentication-Results headers and which of them go:
 * every forged one is removed whatever their number (no cap), whatever the
 * name's spacing before the colon (blanks, a CR, a fold), case, folding or
 * comments in the value, and the verdict lists every A-R header with its
 * index and fate so that front ends never re-derive it.  Also the From
 * domains cap: past it the message counts as from an enforcing domain.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "mwtest.h"

static char cfgpath[] = "/tmp/mw-engine-ar-test-XXXXXX";

static mw_engine *make_engine(void)
{
    FILE *f = fopen(cfgpath, "w");
    fputs("dns = { mode = \"forward\"; forwarders = [\"127.0.0.1@9\"]; timeout = 500; };\n"
          "spf = { enabled = false; };\n"
          "authserv_id = \"mx.test\";\n",
          f);
    fclose(f);
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(cfgpath, NULL, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "config error: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    if (!MW_TEST_ASSERT(cfg != NULL))
        return NULL;
    char err[256];
    mw_engine *e = mw_engine_create(cfg, err, sizeof err);
    if (!MW_TEST_ASSERT(e != NULL))
        fprintf(stderr, "engine: %s\n", err);
    return e;
}

static mw_session *start(mw_engine *e)
{
    mw_session *s = mw_session_new(e, "192.0.2.1", "client.example");
    mw_session_helo(s, "client.example");
    mw_session_mail(s, "<a@example.com>");
    mw_session_rcpt(s, "<b@example.org>");
    return s;
}

static void hdr(mw_session *s, const char *name, const char *value)
{
    mw_session_header(s, name, value, strlen(value));
}

/* The verdict's removals are exactly the removed entries of ar[], highest
 * index first, under the canonical name; ar[] is numbered 1..nar. */
static void check_consistent(const mw_verdict *v)
{
    size_t nrem = 0;
    for (size_t i = 0; i < v->nar; i++) {
        MW_TEST_EQ_INT(v->ar[i].index, i + 1);
        MW_TEST_ASSERT(v->ar[i].removed == (v->ar[i].value == NULL));
        nrem += v->ar[i].removed;
    }
    MW_TEST_EQ_INT(v->nremove, nrem);
    unsigned prev = ~0u;
    for (size_t i = 0; i < v->nremove; i++) {
        MW_TEST_EQ_STR(v->remove[i].name, "Authentication-Results");
        MW_TEST_ASSERT(v->remove[i].index < prev);
        prev = v->remove[i].index;
        MW_TEST_ASSERT(v->remove[i].index >= 1 && v->remove[i].index <= v->nar &&
                       v->ar[v->remove[i].index - 1].removed);
    }
}

/* Defect 1: a foreign A-R whose name has blanks before the colon comes
 * first; the engine counts it, so the forged one is #2 and the foreign one
 * is kept (its value handed over for re-adding). */
static void test_spacing_case_folding(void)
{
    mw_engine *e = make_engine();
    if (!e)
        return;
    mw_session *s = start(e);
    hdr(s, "Authentication-Results ", " other.example; none");
    hdr(s, "Authentication-Results", " mx.test; dmarc=pass header.from=example.com");
    hdr(s, "authentication-RESULTS\t", " MX.Test; spf=pass");                   /* case, tab */
    hdr(s, "Authentication-Results\r", " mx.test; dkim=pass");                  /* bare CR (Exim, Sendmail) */
    hdr(s, "Authentication-Results\n ", " mx.test; dkim=pass");                 /* fold before the colon */
    hdr(s, "Authentication-Results", "\n\t(a comment) mx.test\n\t(another); dmarc=pass");
    hdr(s, "Authentication-Results", " third.example; spf=fail");
    hdr(s, "X-Authentication-Results", " mx.test; dmarc=pass");                 /* another name */
    hdr(s, "Authentication-Results-X", " mx.test; dmarc=pass");
    hdr(s, "Authentication Results", " mx.test; dmarc=pass");
    mw_session_eoh(s);
    const mw_verdict *v = mw_session_eom(s);
    MW_TEST_EQ_INT(v->action, MW_ACTION_ACCEPT);
    MW_TEST_EQ_INT(mw_session_ar_count(s), 7);
    if (MW_TEST_EQ_INT(v->nar, 7)) {
        static const bool want[7] = {false, true, true, true, true, true, false};
        for (size_t i = 0; i < 7; i++)
            MW_TEST_EQ_INT(v->ar[i].removed, want[i]);
        MW_TEST_EQ_STR(v->ar[0].value, " other.example; none");
        MW_TEST_EQ_INT(v->ar[0].vlen, strlen(" other.example; none"));
        MW_TEST_EQ_STR(v->ar[6].value, " third.example; spf=fail");
    }
    if (MW_TEST_EQ_INT(v->nremove, 5)) {
        MW_TEST_EQ_INT(v->remove[0].index, 6);
        MW_TEST_EQ_INT(v->remove[4].index, 2);
    }
    check_consistent(v);
    mw_session_free(&s);
    mw_engine_destroy(&e);
}

/* Defect 2: no cap.  1005 forged headers (and foreign ones between them)
 * are all removed. */
static void test_many_forged(void)
{
    mw_engine *e = make_engine();
    if (!e)
        return;
    mw_session *s = start(e);
    size_t nforged = 0, nforeign = 0;
    char val[80];
    for (size_t i = 0; nforged < 1005; i++) {
        if (i % 50 == 7) {
            snprintf(val, sizeof val, " other%zu.example; spf=none", i);
            nforeign++;
        } else {
            snprintf(val, sizeof val, " mx.test; dmarc=pass (forged %zu)", i);
            nforged++;
        }
        hdr(s, "Authentication-Results", val);
    }
    MW_TEST_ASSERT(nforged >= 1005);
    mw_session_eoh(s);
    const mw_verdict *v = mw_session_eom(s);
    MW_TEST_EQ_INT(v->nremove, nforged);
    MW_TEST_EQ_INT(v->nar, nforged + nforeign);
    check_consistent(v);
    if (v->nremove == nforged) {
        MW_TEST_EQ_INT(v->remove[0].index, nforged + nforeign);   /* the last header */
        MW_TEST_EQ_INT(v->remove[v->nremove - 1].index, 1);
    }
    size_t kept = 0;
    for (size_t i = 0; i < v->nar; i++)
        if (!v->ar[i].removed) {
            kept++;
            MW_TEST_ASSERT(strstr(v->ar[i].value, ".example; spf=none") != NULL);
        }
    MW_TEST_EQ_INT(kept, nforeign);
    /* the next message on the connection starts from nothing */
    mw_session_mail(s, "<c@example.com>");
    MW_TEST_EQ_INT(mw_session_ar_count(s), 0);
    v = mw_session_eom(s);
    MW_TEST_EQ_INT(v->nar, 0);
    MW_TEST_EQ_INT(v->nremove, 0);
    mw_session_free(&s);
    mw_engine_destroy(&e);
}

/* More From domains than the engine looks up: the message counts as from
 * a domain that enforces DMARC (the one past the cap could be), so the
 * from-malformed rules still apply. */
static void test_from_domains_cap(void)
{
    mw_engine *e = make_engine();
    if (!e)
        return;
    mw_session *s = start(e);
    mw_buf f = MW_BUF_INIT;
    for (int i = 0; i < 17; i++)
        mw_buf_printf(&f, "%sa%d@d%d.example", i ? ", " : " ", i, i);
    mw_session_header(s, "From", f.data, f.len);
    mw_session_eoh(s);
    (void)mw_session_eom(s);
    const mw_results *r = mw_session_results(s);
    MW_TEST_ASSERT(r->from_enforcing);
    bool traced = false;
    for (size_t i = 0; i < mw_session_trace_count(s); i++)
        traced = traced || strstr(mw_session_trace(s, i), "treated as from a domain that enforces DMARC");
    MW_TEST_ASSERT(traced);
    mw_buf_free(&f);

    /* the same over several From headers */
    mw_session_mail(s, "<a@example.com>");
    for (int i = 0; i < 17; i++) {
        char v[64];
        snprintf(v, sizeof v, " x@e%d.example", i);
        hdr(s, "From", v);
    }
    mw_session_eoh(s);
    (void)mw_session_eom(s);
    MW_TEST_ASSERT(mw_session_results(s)->from_enforcing);
    mw_session_free(&s);
    mw_engine_destroy(&e);
}

int main(void)
{
    int fd = mkstemp(cfgpath);
    if (fd < 0)
        return 1;
    close(fd);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test", NULL, MW_LOG_ERROR);
    MW_TEST_RUN(test_spacing_case_folding);
    MW_TEST_RUN(test_many_forged);
    MW_TEST_RUN(test_from_domains_cap);
    unlink(cfgpath);
    return MW_TEST_SUMMARY();
}
