/*
 * fuzz_rptin_unpack.c - the container decoder for received reports
 * (checks/rptin_unpack.c, rptin_zip.c, rptin_mime.c): gzip, our strict zip
 * reader, MIME mail (multipart, base64, quoted-printable, message/rfc822),
 * as `mailwarden reports-in import` meets them in a mailbox.
 *
 * Input, by the first byte: 0 the rest goes to mw_rptin_unpack (sniffing);
 * 1 to mw_rptin_unzip; 2 to mw_rptin_gunzip; 3 to mw_rptin_mime.
 * Checked: no crash, leak or UB; every document handed out is within
 * MW_RPTIN_MAX_XML, all output of one input within MW_RPTIN_MAX_TOTAL, and
 * each error comes with a reason.  Every document found is also parsed
 * (mw_rptin_parse), as the importer does.
 */
#include <assert.h>
#include <string.h>

#include "fuzz_common.h"
#include "rptin.h"

static bool on_doc(const char *name, const char *xml, size_t len, void *arg)
{
    assert(name && len <= MW_RPTIN_MAX_XML);
    *(size_t *)arg += len;
    assert(*(size_t *)arg <= MW_RPTIN_MAX_TOTAL + (size_t)MW_RPTIN_MAX_INPUT);
    mw_rptin_report r;
    char why[256];
    if (mw_rptin_parse(xml, len, &r, why, sizeof why))
        mw_rptin_report_clear(&r);
    return true;
}

static void on_err(const char *name, const char *why, void *arg)
{
    assert(name && why && why[0]);
}

static bool on_entry(const char *entry, const unsigned char *d, size_t len, void *arg)
{
    assert(entry && len <= MW_RPTIN_MAX_XML);
    return true;
}

static bool on_part(const char *ctype, const char *fn, const unsigned char *b, size_t len, void *arg)
{
    assert(ctype && fn);
    ++*(unsigned *)arg;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned char *d = (unsigned char *)fz_exact(data + 1, size - 1);
    size_t n = size - 1;
    char why[512] = "";
    mw_rptin_budget b = {0};
    switch (data[0] & 3) {
    case 0: {
        size_t total = 0;
        mw_rptin_unpack("fuzz", d, n, on_doc, on_err, &total);
        break;
    }
    case 1:
        if (!mw_rptin_unzip(d, n, MW_RPTIN_MAX_XML, &b, on_entry, NULL, why, sizeof why))
            assert(why[0]);
        break;
    case 2: {
        unsigned char *out = NULL;
        size_t outlen = 0;
        if (mw_rptin_gunzip(d, n, MW_RPTIN_MAX_XML, &b, &out, &outlen, why, sizeof why)) {
            assert(outlen <= MW_RPTIN_MAX_XML && out[outlen] == 0);
            free(out);
        } else {
            assert(why[0]);
        }
        break;
    }
    case 3: {
        unsigned parts = 0, leaves = 0;
        if (!mw_rptin_mime(d, n, 0, &parts, on_part, &leaves, why, sizeof why))
            assert(why[0]);
        assert(parts <= MW_RPTIN_MAX_PARTS + 1);
        break;
    }
    }
    assert(b.total <= MW_RPTIN_MAX_TOTAL + (size_t)MW_RPTIN_MAX_XML);
    free(d);
    return 0;
}
