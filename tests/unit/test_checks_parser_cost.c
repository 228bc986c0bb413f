/*
 * test_checks_parser_cost.c - every parser of the checks layer that reads
 * attacker-controlled text is linear in its input (issue 13, defect 5): the
 * header From, Authentication-Results (full parse and the authserv-id
 * check), DKIM-Signature tag lists (our pre-check and libopendkim behind
 * it), SPF records and macro expansion, DMARC records.  Each is fed the
 * worst shapes found for it, from 1 KiB (or 64 bytes where the parser
 * stops at a token cap near 4 KiB) to 1 MiB; parser_cost.h says how the
 * work is compared.  The frontends and config parsers have their own files
 * (test_frontends_parser_cost.c, test_core_parser_cost.c).
 */
#include <stdio.h>
#include <string.h>

#include "authres.h"
#include "dkim.h"
#include "dmarc.h"
#include "dns.h"
#include "fromhdr.h"
#include "mwtest.h"
#include "parser_cost.h"
#include "../../filter/checks/spf_record.h"

/* The From parser gives up at 4096 tokens ("too many tokens"): shapes made
 * of one-byte tokens are measured below that, where a quadratic step would
 * show, and at 1 MiB, where the cap must make them cheap. */
static const size_t token_ladder[] = {64, PC_KIB, 4000, PC_MIB, 0};

/* ---- From ---------------------------------------------------------------------------- */

static void run_from(const char *in, size_t len, void *arg)
{
    (void)arg;
    mw_from f;
    mw_from_parse(in, len, &f);
    mw_from_clear(&f);
}

static size_t g_from_colons(char *o, size_t n) { return pc_fill(o, n, "<", ":", ">"); }
static size_t g_from_commas(char *o, size_t n) { return pc_fill(o, n, "<", ",", "a@b.example>"); }
static size_t g_from_route(char *o, size_t n) { return pc_fill(o, n, "<", "@a,", ":u@b.example>"); }
static size_t g_from_mailboxes(char *o, size_t n) { return pc_fill(o, n, "", "a@b.example,", "a@b.example"); }
static size_t g_from_quoted(char *o, size_t n) { return pc_fill(o, n, "", "\"a\" ", "<a@b.example>"); }
static size_t g_from_words(char *o, size_t n) { return pc_fill(o, n, "", "a ", "<a@b.example>"); }
static size_t g_from_lt(char *o, size_t n) { return pc_fill(o, n, "", "<", ""); }
static size_t g_from_group(char *o, size_t n) { return pc_fill(o, n, "g:", "a@b.example,", ";"); }

static size_t g_from_nested(char *o, size_t n)
{
    size_t h = (n - 16) / 2;
    memset(o, '(', h);
    memset(o + h, ')', h);
    memcpy(o + 2 * h, "a@b.example", 11);
    return 2 * h + 11;
}
static size_t g_from_open_comment(char *o, size_t n) { return pc_fill(o, n, "a@b.example ", "(", ""); }
static size_t g_from_long_quote(char *o, size_t n) { return pc_fill(o, n, "\"", "a\\\"", "\" <a@b.example>"); }
static size_t g_from_folding(char *o, size_t n) { return pc_fill(o, n, "a@b.example", "\r\n ", ""); }
static size_t g_from_long_atom(char *o, size_t n) { return pc_fill(o, n, "a@", "b.", "example"); }

static void test_from(void)
{
    pc_check_sizes("from <:::>", run_from, NULL, g_from_colons, token_ladder);
    pc_check_sizes("from <,,,a@b>", run_from, NULL, g_from_commas, token_ladder);
    pc_check_sizes("from <@a,@a,:u@b>", run_from, NULL, g_from_route, token_ladder);
    pc_check_sizes("from a@b,a@b,...", run_from, NULL, g_from_mailboxes, token_ladder);
    pc_check_sizes("from g:a@b,...;", run_from, NULL, g_from_group, token_ladder);
    pc_check_sizes("from \"a\" \"a\" ...", run_from, NULL, g_from_quoted, token_ladder);
    pc_check_sizes("from display words", run_from, NULL, g_from_words, token_ladder);
    pc_check_sizes("from <<<<", run_from, NULL, g_from_lt, token_ladder);
    pc_check("from ((((...))))", run_from, NULL, g_from_nested);
    pc_check("from unterminated ((((", run_from, NULL, g_from_open_comment);
    pc_check("from one long quoted-string", run_from, NULL, g_from_long_quote);
    pc_check("from folding \\r\\n \\r\\n", run_from, NULL, g_from_folding);
    pc_check("from one long domain", run_from, NULL, g_from_long_atom);
}

/* ---- Authentication-Results ---------------------------------------------------------- */

static void run_ar(const char *in, size_t len, void *arg)
{
    (void)arg;
    mw_authres_parsed p;
    if (mw_authres_parse(in, len, &p))
        mw_authres_parsed_clear(&p);
}

static void run_ar_ours(const char *in, size_t len, void *arg)
{
    (void)arg;
    (void)mw_authres_is_ours(in, len, "mx.example.net");
}

static size_t g_ar_semis(char *o, size_t n) { return pc_fill(o, n, "mx.example.net", ";", ""); }
static size_t g_ar_none(char *o, size_t n) { return pc_fill(o, n, "mx.example.net", "; none", ""); }
static size_t g_ar_empty(char *o, size_t n) { return pc_fill(o, n, "mx.example.net", "; a=", ""); }
static size_t g_ar_props(char *o, size_t n) { return pc_fill(o, n, "mx.example.net; spf=pass", " a.b=c", ""); }
static size_t g_ar_stray(char *o, size_t n) { return pc_fill(o, n, "mx.example.net; spf=pass", " =", ""); }
static size_t g_ar_comments(char *o, size_t n) { return pc_fill(o, n, "mx.example.net; spf=pass ", "(", ""); }
static size_t g_ar_quotes(char *o, size_t n) { return pc_fill(o, n, "mx.example.net; spf=pass", " a.b=\"x\"", ""); }
static size_t g_ar_openq(char *o, size_t n) { return pc_fill(o, n, "mx.example.net; spf=pass a.b=\"", "a", ""); }
static size_t g_ar_blanks(char *o, size_t n) { return pc_fill(o, n, "mx.example.net;", " \r\n", "spf=pass"); }
static size_t g_ar_lead_comments(char *o, size_t n) { return pc_fill(o, n, "", "(", "mx.example.net"); }
static size_t g_ar_lead_blanks(char *o, size_t n) { return pc_fill(o, n, "", " ", "mx.example.net; none"); }
static size_t g_ar_long_id(char *o, size_t n) { return pc_fill(o, n, "\"", "a", "\"; none"); }

static void test_authres(void)
{
    pc_check("a-r ;;;;", run_ar, NULL, g_ar_semis);
    pc_check("a-r ; none; none", run_ar, NULL, g_ar_none);
    pc_check("a-r ; a=; a=", run_ar, NULL, g_ar_empty);
    pc_check("a-r a.b=c a.b=c ...", run_ar, NULL, g_ar_props);
    pc_check("a-r = = = (stray bytes)", run_ar, NULL, g_ar_stray);
    pc_check("a-r unterminated ((((", run_ar, NULL, g_ar_comments);
    pc_check("a-r quoted values", run_ar, NULL, g_ar_quotes);
    pc_check("a-r unterminated quote", run_ar, NULL, g_ar_openq);
    pc_check("a-r folding blanks", run_ar, NULL, g_ar_blanks);
    pc_check("a-r is_ours ((((id", run_ar_ours, NULL, g_ar_lead_comments);
    pc_check("a-r is_ours blanks", run_ar_ours, NULL, g_ar_lead_blanks);
    pc_check("a-r is_ours long quoted id", run_ar_ours, NULL, g_ar_long_id);
    pc_check("a-r parse ((((id", run_ar, NULL, g_ar_lead_comments);
}

/* ---- DKIM-Signature tag lists -------------------------------------------------------- */

static void run_dkim_sig(const char *in, size_t len, void *arg)
{
    mw_dkim_msg *m = mw_dkim_msg_begin(arg, NULL, NULL, 0, "PC");
    mw_dkim_msg_header(m, "From", " a@b.example", 12);
    mw_dkim_msg_header(m, "DKIM-Signature", in, len);
    mw_dkim_msg_eoh(m);
    mw_dkim_results r;
    mw_dkim_msg_end(m, &r, NULL, NULL);
    mw_dkim_results_clear(&r);
    mw_dkim_msg_free(&m);
}

/* distinct tags sharing a first letter: libopendkim keeps a set's tags in
 * lists hashed by that letter and looks each new one up in its list */
static size_t g_dkim_distinct(char *o, size_t n)
{
    size_t k = 0, i = 0;
    char t[32];
    for (;;) {
        int w = snprintf(t, sizeof t, " t%zx=;", i++);
        if (k + (size_t)w > n)
            return k;
        memcpy(o + k, t, (size_t)w);
        k += (size_t)w;
    }
}
static size_t g_dkim_dups(char *o, size_t n) { return pc_fill(o, n, " v=1;", " a=;", ""); }
static size_t g_dkim_semis(char *o, size_t n) { return pc_fill(o, n, " v=1", ";", ""); }
static size_t g_dkim_folding(char *o, size_t n) { return pc_fill(o, n, " v=1;", "\r\n ", "a=rsa-sha256"); }
static size_t g_dkim_long_b(char *o, size_t n) { return pc_fill(o, n, " v=1; a=rsa-sha256; b=", "AB", ""); }
static size_t g_dkim_long_h(char *o, size_t n) { return pc_fill(o, n, " v=1; a=rsa-sha256; h=from", ":from", ""); }

static mw_dkim_verifier *verifier;

static void test_dkim_sig(void)
{
    mw_dkim_verifier *v = verifier;
    pc_check("dkim-sig distinct tags t0= t1= ...", run_dkim_sig, v, g_dkim_distinct);
    pc_check("dkim-sig a=; a=; ...", run_dkim_sig, v, g_dkim_dups);
    pc_check("dkim-sig ;;;;", run_dkim_sig, v, g_dkim_semis);
    pc_check("dkim-sig folding", run_dkim_sig, v, g_dkim_folding);
    pc_check("dkim-sig long b=", run_dkim_sig, v, g_dkim_long_b);
    pc_check("dkim-sig long h=from:from:...", run_dkim_sig, v, g_dkim_long_h);
}

/* A DKIM-Signature with more tags than any real one is refused as
 * permerror before libopendkim sees it, and says why. */
static void test_dkim_too_many_tags(void)
{
    mw_dkim_verifier *v = verifier;
    char buf[4096];
    size_t n = g_dkim_distinct(buf, sizeof buf - 1);
    buf[n] = '\0';
    mw_dkim_msg *m = mw_dkim_msg_begin(v, NULL, NULL, 0, "PC");
    mw_dkim_msg_header(m, "From", " a@b.example", 12);
    mw_dkim_msg_header(m, "DKIM-Signature", buf, n);
    mw_dkim_msg_eoh(m);
    mw_dkim_results r;
    mw_dkim_msg_end(m, &r, NULL, NULL);
    if (MW_TEST_EQ_INT(r.nsig, 1)) {
        MW_TEST_EQ_INT(r.sig[0].result, MW_DKIM_PERMERROR);
        MW_TEST_ASSERT(r.sig[0].reason && strstr(r.sig[0].reason, "more than 64 tags"));
    }
    mw_dkim_results_clear(&r);
    mw_dkim_msg_free(&m);
}

/* ---- SPF -------------------------------------------------------------------------- */

static void run_spf(const char *in, size_t len, void *arg)
{
    (void)arg;
    mw_spf_record rec;
    char why[128];
    if (mw_spf_record_parse(in, len, &rec, why, sizeof why))
        mw_spf_record_free(&rec);
}

static size_t g_spf_terms(char *o, size_t n) { return pc_fill(o, n, "v=spf1", " a", " -all"); }
static size_t g_spf_ip4(char *o, size_t n) { return pc_fill(o, n, "v=spf1", " ip4:192.0.2.1/32", " -all"); }
static size_t g_spf_mods(char *o, size_t n) { return pc_fill(o, n, "v=spf1", " x=%{l}", " -all"); }
static size_t g_spf_blanks(char *o, size_t n) { return pc_fill(o, n, "v=spf1", " ", "-all"); }
static size_t g_spf_delims(char *o, size_t n) { return pc_fill(o, n, "v=spf1 exists:%{l", ".", "}.example.com -all"); }
static size_t g_spf_macros(char *o, size_t n) { return pc_fill(o, n, "v=spf1 exists:", "%{d}", ".example.com -all"); }
static size_t g_spf_dots(char *o, size_t n) { return pc_fill(o, n, "v=spf1 a:", "a.", "example.com -all"); }
static size_t g_spf_cidr(char *o, size_t n) { return pc_fill(o, n, "v=spf1 a:example.com/", "1", ""); }

/* Macro expansion: an explanation with one macro whose delimiter list is
 * half the input, applied to a sender local part that is the other half. */
static void run_spf_expand(const char *in, size_t len, void *arg)
{
    (void)arg;
    size_t half = len / 2;
    mw_spf_macro_ctx ctx = {.local = in + half, .sender_dom = "example.com",
                            .domain = "example.com"};
    char *s = mw_spf_expand_explain(&ctx, in, half);
    free(s);
}
static size_t g_spf_expand(char *o, size_t n)
{
    size_t half = n / 2;
    memcpy(o, "%{l", 3);
    memset(o + 3, '-', half - 4);
    o[half - 1] = '}';
    memset(o + half, 'x', n - half);
    return n;
}

static void test_spf(void)
{
    pc_check("spf a a a ...", run_spf, NULL, g_spf_terms);
    pc_check("spf ip4:... x many", run_spf, NULL, g_spf_ip4);
    pc_check("spf x=%{l} x many", run_spf, NULL, g_spf_mods);
    pc_check("spf blanks", run_spf, NULL, g_spf_blanks);
    pc_check("spf %{l.....}", run_spf, NULL, g_spf_delims);
    pc_check("spf %{d}%{d}...", run_spf, NULL, g_spf_macros);
    pc_check("spf a:a.a.a....", run_spf, NULL, g_spf_dots);
    pc_check("spf a:x/1111...", run_spf, NULL, g_spf_cidr);
    pc_check("spf expand %{l---...} of a long l", run_spf_expand, NULL, g_spf_expand);
}

/* ---- DMARC ------------------------------------------------------------------------ */

static void run_dmarc(const char *in, size_t len, void *arg)
{
    mw_dmarc_record r;
    char why[128];
    mw_dmarc_record_parse(in, len, *(const mw_dmarc_mode *)arg, &r, why, sizeof why);
    mw_dmarc_record_clear(&r);
}

static size_t g_dmarc_semis(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none", ";", ""); }
static size_t g_dmarc_repeat(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1", "; p=none", ""); }
static size_t g_dmarc_unknown(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none", "; x=", ""); }
static size_t g_dmarc_rua(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none; rua=", "mailto:a@b.example,", ""); }
static size_t g_dmarc_commas(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none; rua=", ",", ""); }
static size_t g_dmarc_blanks(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none;", " \t", "rua=mailto:a@b.example"); }
static size_t g_dmarc_eq(char *o, size_t n) { return pc_fill(o, n, "v=DMARC1; p=none; x", "=", ""); }

static void test_dmarc(void)
{
    static const mw_dmarc_mode modes[] = {MW_DMARC_MODE_RFC9989, MW_DMARC_MODE_RFC7489};
    for (int i = 0; i < 2; i++) {
        void *m = (void *)&modes[i];
        pc_check("dmarc ;;;;", run_dmarc, m, g_dmarc_semis);
        pc_check("dmarc p=none; p=none; ...", run_dmarc, m, g_dmarc_repeat);
        pc_check("dmarc x=; x=; ...", run_dmarc, m, g_dmarc_unknown);
        pc_check("dmarc rua=mailto:...,mailto:...", run_dmarc, m, g_dmarc_rua);
        pc_check("dmarc rua=,,,,", run_dmarc, m, g_dmarc_commas);
        pc_check("dmarc blanks", run_dmarc, m, g_dmarc_blanks);
        pc_check("dmarc x====", run_dmarc, m, g_dmarc_eq);
    }
}

int main(void)
{
    PC_SKIP_UNDER_TSAN();
    MW_TEST_RUN(test_from);
    MW_TEST_RUN(test_authres);
    MW_TEST_RUN(test_spf);
    MW_TEST_RUN(test_dmarc);
    /* DKIM: a resolver that is never asked (no signature here is complete
     * enough for a key lookup); a dead forwarder keeps it off the network */
    static const char *const fw[] = {"127.0.0.1@9"};
    mw_dns_options dopt = {.forwarders = fw, .nforwarders = 1, .timeout_ms = 200};
    char err[256];
    mw_dns *dns = mw_dns_create(&dopt, err, sizeof err);
    mw_dkim_verify_options o = {.max_signatures = 10, .timeout_ms = 200, .deadline_ms = 500};
    verifier = dns ? mw_dkim_verifier_create(dns, &o, err, sizeof err) : NULL;
    if (MW_TEST_ASSERT(verifier != NULL)) {
        MW_TEST_RUN(test_dkim_too_many_tags);
        MW_TEST_RUN(test_dkim_sig);
    } else {
        fprintf(stderr, "dkim: %s\n", err);
    }
    mw_dkim_verifier_destroy(&verifier);
    mw_dns_destroy(&dns);
    return MW_TEST_SUMMARY();
}
