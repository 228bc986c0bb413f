/*
 * fuzz_exim_rcpt.c - the Exim RCPT-time line ("RCPT ip=.. helo=.. from=..
 * rcpt=.. auth=.. port=..") from ${readsocket} (frontends/exim.h).  The
 * values carry the client's HELO and addresses.  Exact-size buffer.
 */
#include <assert.h>
#include <string.h>

#include "exim.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = fz_exact(data, size);
    mw_exim_rcpt r;
    char err[128];
    memset(&r, 0, sizeof r);
    if (!mw_exim_rcpt_parse(&r, line, size, err, sizeof err))
        assert(memchr(err, '\0', sizeof err) != NULL);
    const char *f[] = {r.ip, r.helo, r.from, r.rcpt, r.auth, r.port};
    for (size_t i = 0; i < 6; i++)
        if (f[i])
            (void)strlen(f[i]);
    mw_exim_rcpt_clear(&r);
    /* the same line twice into one struct: a repeated key must not leak */
    memset(&r, 0, sizeof r);
    (void)mw_exim_rcpt_parse(&r, line, size, err, sizeof err);
    (void)mw_exim_rcpt_parse(&r, line, size, err, sizeof err);
    mw_exim_rcpt_clear(&r);
    free(line);
    return 0;
}
