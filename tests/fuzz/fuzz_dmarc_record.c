/*
 * fuzz_dmarc_record.c - the DMARC record parser (checks/dmarc.h): TXT text
 * from _dmarc.<From domain>, i.e. chosen by whoever controls that zone.
 * Both modes (RFC 9989 and RFC 7489), exact-size buffer, NULs allowed.
 */
#include <assert.h>
#include <string.h>

#include "dmarc.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = fz_exact(data, size);
    (void)mw_dmarc_record_is_dmarc(v, size);
    for (int m = 0; m < 2; m++) {
        mw_dmarc_record r;
        char why[128];
        memset(&r, 0x5a, sizeof r);   /* "always filled": must not rely on the caller zeroing */
        bool ok = mw_dmarc_record_parse(v, size, m ? MW_DMARC_MODE_RFC7489 : MW_DMARC_MODE_RFC9989,
                                        &r, why, sizeof why);
        if (ok) {
            assert(r.p != MW_DMARC_P_UNSPEC);
            assert(r.adkim == 'r' || r.adkim == 's');
            assert(r.aspf == 'r' || r.aspf == 's');
            assert(r.pct >= 0 && r.pct <= 100);
            for (char **u = r.rua; u && *u; u++)
                (void)strlen(*u);
            for (char **u = r.ruf; u && *u; u++)
                (void)strlen(*u);
            (void)mw_dmarc_policy_name(r.p);
            (void)mw_dmarc_policy_name(r.sp);
            (void)mw_dmarc_policy_name(r.np);
        } else {
            assert(memchr(why, '\0', sizeof why) != NULL);
        }
        mw_dmarc_record_clear(&r);
    }
    free(v);
    return 0;
}
