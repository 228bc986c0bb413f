/*
 * fuzz_failrep.c - RFC 9991 failure reports (checks/report_failure.c): the
 * spool file parser (`mailwarden report --failure` reads what a daemon
 * wrote, possibly torn or tampered with), the redactor and the report
 * builder on a header section chosen by the sender.
 *
 * Input, by the first byte:
 *   even: the rest is a spool file; a file that parses is formatted again
 *         and must parse to the same fields and message;
 *   odd:  the rest is header text: redacted, kept through
 *         mw_failrep_header_append and built into a report (both modes, the
 *         text also as envelope and A-R), which must have CRLF line ends,
 *         no line over 998 bytes, and exactly four lines starting with its
 *         boundary (three parts and the end): header text cannot add one.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_failure.h"
#include "fuzz_common.h"

static void spool(const uint8_t *d, size_t n)
{
    mw_failrep_spooled a, b;
    char why[300];
    if (mw_failrep_spool_parse((const char *)d, n, &a, why, sizeof why)) {
        mw_buf f = MW_BUF_INIT;
        mw_failrep_spool_format(&a, &f);
        assert(mw_failrep_spool_parse(f.data, f.len, &b, why, sizeof why));
        assert(strcmp(a.id, b.id) == 0 && strcmp(a.domain, b.domain) == 0 && a.time == b.time);
        assert(a.ndest == b.ndest && a.msg_len == b.msg_len);
        assert(memcmp(a.msg, b.msg, a.msg_len) == 0);
        for (size_t i = 0; i < a.ndest; i++)
            assert(strcmp(a.dest[i], b.dest[i]) == 0);
        mw_failrep_spooled_clear(&b);
        mw_buf_free(&f);
    } else {
        assert(memchr(why, '\0', sizeof why) != NULL);
    }
    mw_failrep_spooled_clear(&a);
}

static void report(const uint8_t *d, size_t n)
{
    mw_buf r = MW_BUF_INIT, h = MW_BUF_INIT, out = MW_BUF_INIT;
    mw_failrep_redact((const char *)d, n, &r);
    mw_failrep_header_append(&h, "Subject", (const char *)d, n);
    for (int mode = MW_FAILREP_REDACTED; mode <= MW_FAILREP_FULL; mode++) {
        char id[33];
        char *s = fz_strndup(d, n > 200 ? 200 : n);
        mw_failrep_info in = {.mode = (mw_failrep_mode)mode, .reporting_host = "mx.test",
                              .mail_from = s, .rcpt_to = s, .authres = s, .source_ip = s,
                              .headers = h.data, .headers_len = h.len};
        mw_failrep_build(&in, &out, id);
        free(s);
        char bnd[64];
        snprintf(bnd, sizeof bnd, "--mw-failure-%s-", id);
        size_t col = 0, bl = strlen(bnd), nb = 0;
        for (size_t i = 0; i < out.len; i++) {
            if (out.data[i] == '\n') {
                assert(i > 0 && out.data[i - 1] == '\r');
                col = 0;
                if (i + 1 + bl <= out.len && memcmp(out.data + i + 1, bnd, bl) == 0)
                    nb++;
                continue;
            }
            assert(++col <= 998);
        }
        assert(nb == 4);   /* three parts and the end */
    }
    mw_buf_free(&r);
    mw_buf_free(&h);
    mw_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        spool(data + 1, size - 1);
    else
        report(data + 1, size - 1);
    return 0;
}
