/*
 * fuzz_spf_record.c - the strict RFC 7208 record parser and our macro
 * expander (filter/checks/spf_record.h).  The record and all macro inputs
 * are attacker-controlled.
 *
 * Input: "<record or text>\n<local>\n<sender domain>\n<helo>\n<client ip>"
 * (missing lines get defaults).  The first line is parsed as a record; every
 * domain-spec of a valid record is expanded (and, when it has one, the
 * exp= spec), the first line is also checked/expanded as a domain-spec and
 * as an explain-string.
 */
#include <assert.h>
#include <string.h>

#include "fuzz_common.h"
#include "spf_record.h"

static const char *get_p(void *arg, const char *domain)
{
    (void)arg;
    (void)domain;
    return "mail.example.com";
}

static void check_expansion(char *e)
{
    if (!e)
        return;
    assert(strlen(e) <= MW_SPF_MAX_EXPANSION);
    free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *l;
    size_t n = size, ll;
    const uint8_t *rec = data;
    size_t reclen = 0;
    char *fields[4] = {0};
    if (fz_next_line(&p, &n, &l, &ll)) {
        rec = l;
        reclen = ll;
    }
    for (int i = 0; i < 4 && fz_next_line(&p, &n, &l, &ll); i++)
        fields[i] = fz_strndup(l, ll);

    mw_spf_macro_ctx ctx = {
        .local = fields[0] ? fields[0] : "strong-bad",
        .sender_dom = fields[1] ? fields[1] : "email.example.com",
        .domain = fields[1] ? fields[1] : "email.example.com",
        .helo = fields[2] ? fields[2] : "mx.example.org",
        .receiver = "mx.example.net",
        .get_p = get_p,
    };
    if (!fields[3] || !mw_addr_parse(fields[3], &ctx.ip)) {
        ctx.ip.family = 2; /* AF_INET */
        memcpy(ctx.ip.bytes, "\xc0\x00\x02\x03", 4);
    }
    mw_addr_unmap(&ctx.ip);

    char *r = fz_exact(rec, reclen);
    (void)mw_spf_is_record(r, reclen);
    mw_spf_record sr;
    char why[256];
    if (mw_spf_record_parse(r, reclen, &sr, why, sizeof why)) {
        assert(sr.redirect < (int)sr.n && sr.exp < (int)sr.n);
        for (size_t i = 0; i < sr.n; i++) {
            const mw_spf_term *t = &sr.t[i];
            if (t->kind == MW_SPF_T_UNKNOWN_MOD || !t->spec)
                continue;
            if (t->kind == MW_SPF_T_EXP) {
                /* exp= names a domain whose TXT is an explain-string: expand the
                 * spec as a domain, then the record text as the explanation */
                check_expansion(mw_spf_expand_domain(&ctx, t->spec));
                check_expansion(mw_spf_expand_explain(&ctx, r, reclen));
            } else {
                check_expansion(mw_spf_expand_domain(&ctx, t->spec));
            }
        }
        mw_spf_record_free(&sr);
    } else {
        assert(memchr(why, '\0', sizeof why) != NULL);
    }
    /* the first line as a bare domain-spec / explanation */
    if (mw_spf_domain_spec_ok(r, reclen) && memchr(r, '\0', reclen) == NULL) {
        char *spec = fz_strndup(rec, reclen);
        check_expansion(mw_spf_expand_domain(&ctx, spec));
        free(spec);
    }
    (void)mw_spf_explain_ok(r, reclen);
    check_expansion(mw_spf_expand_explain(&ctx, r, reclen));
    free(r);
    for (int i = 0; i < 4; i++)
        free(fields[i]);
    return 0;
}
