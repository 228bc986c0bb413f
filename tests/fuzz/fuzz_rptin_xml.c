/*
 * fuzz_rptin_xml.c - the received-report XML parser (checks/rptin_xml.c):
 * DMARC aggregate reports from any receiver on the Internet, `mailwarden
 * reports-in import`.
 *
 * Input: the whole report.  Checked: no crash, leak or UB; a parsed report
 * has what the store needs (org, report id, domain, a normalised IP and a
 * bounded count per row), a refused one says why and leaves *out empty.
 */
#include <assert.h>
#include <string.h>

#include "fuzz_common.h"
#include "rptin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *xml = fz_exact(data, size);
    mw_rptin_report r;
    char why[512];
    why[0] = '\0';
    if (mw_rptin_parse(xml, size, &r, why, sizeof why)) {
        assert(r.org_name && r.org_name[0] && r.report_id && r.report_id[0] && r.domain && r.domain[0]);
        assert(r.format == 7489 || r.format == 9990);
        for (size_t i = 0; i < r.nrows; i++) {
            assert(r.rows[i].source_ip && r.rows[i].source_ip[0]);
            assert(r.rows[i].count <= (1ULL << 53));
            assert(r.rows[i].dkim_aligned && r.rows[i].spf_aligned && r.rows[i].reason);
        }
        mw_rptin_report_clear(&r);
    } else {
        assert(why[0] != '\0');
        assert(r.rows == NULL && r.nrows == 0 && r.org_name == NULL);
    }
    free(xml);
    return 0;
}
