/*
 * fuzz_exim_request.c - the Exim scan-socket request envelope
 * (frontends/exim.h): the "CHECK RSPAMC/1.3" line and the "Name: value"
 * header lines (Queue-Id, From, Rcpt, Helo, Hostname, IP, User,
 * Content-length) that arrive on the socket.
 *
 * Input: lines; the first is the request line, the others header lines
 * (each handed over without its LF, in an exact-size buffer), as the
 * connection reader does, stopping at the first error.
 */
#include <assert.h>
#include <string.h>

#include "exim.h"
#include "fuzz_common.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "fuzz", "mail", MW_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *l;
    size_t n = size, ll;
    mw_exim_request r;
    char err[256];
    memset(&r, 0, sizeof r);
    bool ok = true;
    if (fz_next_line(&p, &n, &l, &ll)) {
        char *line = fz_exact(l, ll);
        ok = mw_exim_request_line(&r, line, ll, err, sizeof err);
        free(line);
    }
    /* headers are parsed even after a bad request line, to reach them all */
    while (fz_next_line(&p, &n, &l, &ll)) {
        if (ll == 0)
            break;
        char *line = fz_exact(l, ll);
        ok = mw_exim_request_header(&r, line, ll, err, sizeof err);
        free(line);
        if (!ok)
            assert(memchr(err, '\0', sizeof err) != NULL);
    }
    assert(r.nrcpts <= MW_EXIM_MAX_RCPTS);
    for (size_t i = 0; i < r.nrcpts; i++)
        assert(r.rcpts[i] != NULL);
    if (r.have_length)
        (void)(r.content_length + 0);
    mw_exim_request_clear(&r);
    return 0;
}
