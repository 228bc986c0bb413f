/*
 * fuzz_history_line.c - the DMARC history line reader (checks/history.c):
 * "MWH1 <len> <crc32c> <JSON>" lines read back by `mailwarden report`, from
 * disk that a crash may have torn and, for a fleet, from other hosts.
 *
 * The line parser (check_line, one_line, record_parse) is static, so this
 * file compiles history.c in itself (the fuzz target links mw_core, never mw_checks, so
 * the library's copy is never linked twice).  No daemon source is changed.
 *
 * Input, by the first byte:
 *   even: the rest is one raw line as read from a file (torn, resync, CRC);
 *   odd:  the rest is the JSON object; the harness frames it with a correct
 *         length and CRC so the JSON reader is reached, then checks the
 *         round trip: a record that parses, written again with the writer's
 *         own formatter, reads back to the same text.
 */
#include "../../filter/checks/history.c"

#include <assert.h>
#include <limits.h>

#include "fuzz_common.h"

static bool cb_count(const mw_history_record *r, void *arg)
{
    (void)r;
    ++*(size_t *)arg;
    return true;
}

static void run_line(const char *p, size_t len, mw_history_stats *st, size_t *seen)
{
    rctx c = {.from = (time_t)LLONG_MIN, .to = (time_t)LLONG_MAX, .cb = cb_count, .arg = seen, .st = st};
    one_line(&c, p, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    crc_init();
    mw_history_stats st = {0};
    size_t seen = 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;

    if ((data[0] & 1) == 0) {
        char *line = fz_exact(d, n);
        run_line(line, n, &st, &seen);
        free(line);
        assert(seen <= 1);
        return 0;
    }

    /* frame the JSON as the writer would */
    mw_buf line = MW_BUF_INIT;
    char head[32];
    int hl = snprintf(head, sizeof head, "%s%zu ", TAG, n);
    uint32_t crc = crc32c(crc32c(0, head, (size_t)hl), d, n);
    mw_buf_append(&line, head, (size_t)hl);
    mw_buf_printf(&line, "%08x ", crc);
    mw_buf_append(&line, d, n);
    char *exact = fz_exact((const uint8_t *)line.data, line.len);
    run_line(exact, line.len, &st, &seen);
    free(exact);
    mw_buf_free(&line);

    /* round trip */
    char *json = fz_exact(d, n);
    mw_history_record r;
    if (record_parse(json, n, &r)) {
        mw_buf l1 = MW_BUF_INIT, l2 = MW_BUF_INIT;
        format_line(&r, &l1);
        mw_history_record r2;
        const char *j2;
        size_t j2len;
        assert(l1.len > 0 && l1.data[l1.len - 1] == '\n');
        assert(check_line(l1.data, l1.len - 1, &j2, &j2len) == L_OK);
        bool ok2 = record_parse(j2, j2len, &r2);
        assert(ok2);
        format_line(&r2, &l2);
        assert(l1.len == l2.len && memcmp(l1.data, l2.data, l1.len) == 0);
        mw_history_record_clear(&r2);
        mw_buf_free(&l1);
        mw_buf_free(&l2);
    }
    mw_history_record_clear(&r);
    free(json);
    return 0;
}
