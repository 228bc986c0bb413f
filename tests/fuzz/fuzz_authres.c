/*
 * fuzz_authres.c - Authentication-Results (checks/authres.h):
 *   - mw_authres_parse_id / mw_authres_is_ours: decide which A-R headers are
 *     forged copies of ours (and so removed);
 *   - mw_authres_parse: full resinfo parse of an upstream A-R (trusted by
 *     authserv-id for DMARC, but the bytes still come from the message);
 *   - the builder's sanitising of attacker-chosen property values and
 *     comments (smtp.mailfrom, header.from, reasons) into our own header.
 * The value is handed over in an exact-size buffer (no terminator).
 */
#include <assert.h>
#include <string.h>

#include "authres.h"
#include "buf.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = fz_exact(data, size);
    char id[256];
    if (mw_authres_parse_id(v, size, id, sizeof id)) {
        assert(strnlen(id, sizeof id) < sizeof id);
        if (id[0] != '\0')
            assert(mw_authres_is_ours(v, size, id));
    }
    char small[4];
    (void)mw_authres_parse_id(v, size, small, sizeof small);   /* truncation path */
    (void)mw_authres_is_ours(v, size, "mx.example.org");

    mw_authres_parsed *p = calloc(1, sizeof *p);
    if (mw_authres_parse(v, size, p)) {
        assert(p->nri <= MW_AR_MAX_RESINFO);
        for (size_t i = 0; i < p->nri; i++) {
            assert(p->ri[i].nprops <= MW_AR_MAX_PROPS);
            (void)mw_ar_prop(&p->ri[i], "smtp.mailfrom");
            (void)mw_ar_prop(&p->ri[i], "header.d");
        }
    }
    mw_authres_parsed_clear(p);
    free(p);
    free(v);

    /* builder: hostile values must come out as one valid header value */
    char *s = fz_strndup(data, size);
    const char *props[] = {"smtp.mailfrom", s, "header.from", s, "policy.x", "", NULL};
    mw_authres *ar = mw_authres_new("mx.example.org");
    mw_authres_add(ar, "spf", "pass", s, props);
    mw_authres_add(ar, "dkim", "fail", NULL, NULL);
    mw_buf out = MW_BUF_INIT;
    mw_authres_render(ar, &out);
    /* no NUL, no CR, and a LF only as the "\n\t" fold we make ourselves */
    for (size_t i = 0; i < out.len; i++) {
        assert(out.data[i] != '\0' && out.data[i] != '\r');
        if (out.data[i] == '\n')
            assert(i + 1 < out.len && out.data[i + 1] == '\t');
    }
    mw_buf_free(&out);
    mw_authres_free(&ar);
    free(s);
    return 0;
}
