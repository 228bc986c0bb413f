/*
 * fuzz_exim_mbox.c - the Exim mbox-form message normaliser
 * (frontends/exim.h: mw_exim_mbox_*) and the reply renderer fed with what
 * it found: every Authentication-Results header goes back to Exim as an
 * "MW-Keep:" line when ours are removed, so a hostile A-R value must not
 * break the reply's line structure.
 *
 * Input: byte 0 chooses the chunk size (1..256) the message is fed in, so
 * lines and CRLFs split across reads are covered; the rest is the message.
 */
#include <assert.h>
#include <strings.h>
#include <string.h>

#include "engine.h"
#include "exim.h"
#include "fuzz_common.h"
#include "log.h"

static int ignore_known;

typedef struct st {
    mw_ar_header ars[64];
    size_t nars, nar_total, nheaders, nbody;
    bool eoh;
    int eoh_count;
} st;

static void on_header(void *ctx, const char *name, const char *value, size_t vlen)
{
    st *s = ctx;
    assert(!s->eoh);
    assert(name != NULL && value != NULL);
    /* Known bug (reported; regression input corpus/exim_mbox/crash-nul-header-name):
     * flush_header() hands the name on as a C string, so a header line whose
     * name contains a NUL ("From\0x: ...") reaches the engine cut at the NUL,
     * and ":value" gives an empty name.  MW_FUZZ_IGNORE_KNOWN=1 skips the check. */
    if (!ignore_known)
        assert(name[0] != '\0');
    s->nheaders++;
    if (strncasecmp(name, "Authentication-Results", 22) == 0) {
        s->nar_total++;
        if (s->nars < 64) {
            s->ars[s->nars].value = fz_strndup((const uint8_t *)value, vlen);
            s->ars[s->nars].vlen = vlen;
            s->ars[s->nars].index = (unsigned)s->nar_total;
            s->ars[s->nars].removed = s->nars == 0;
            s->nars++;
        }
    }
}

static void on_eoh(void *ctx)
{
    st *s = ctx;
    s->eoh = true;
    s->eoh_count++;
}

static void on_body(void *ctx, const unsigned char *p, size_t n)
{
    st *s = ctx;
    assert(s->eoh);
    /* LF made CRLF: no bare LF may come out (a CR may end a chunk) */
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\n')
            assert(i > 0 ? p[i - 1] == '\r' : true);
    s->nbody += n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ignore_known = getenv("MW_FUZZ_IGNORE_KNOWN") != NULL;
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "fuzz", "mail", MW_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    static const mw_exim_mbox_cb cb = {on_header, on_eoh, on_body};
    st s;
    memset(&s, 0, sizeof s);
    mw_exim_mbox m;
    mw_exim_mbox_init(&m, &cb, &s);
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        unsigned char *c = (unsigned char *)fz_exact(d + off, k);
        mw_exim_mbox_feed(&m, c, k);
        free(c);
    }
    mw_exim_mbox_finish(&m);
    assert(s.eoh_count == 1);
    mw_exim_mbox_free(&m);

    /* reply: remove the first A-R, keep the others, add one of ours */
    mw_header_ref rm = {.name = "Authentication-Results", .index = 1};
    mw_header add = {.name = "Authentication-Results", .value = s.nars ? (char *)s.ars[0].value : "x"};
    mw_verdict v;
    memset(&v, 0, sizeof v);
    v.action = MW_ACTION_ACCEPT;
    v.rule = "fuzz";
    v.add = &add;
    v.nadd = 1;
    v.remove = &rm;
    v.nremove = 1;
    v.ar = s.ars;
    v.nar = s.nars;
    mw_buf out = MW_BUF_INIT;
    size_t dropped = 0;
    unsigned stay = 2;      /* the second A-R, if any, as if Exim could not remove it */
    (void)mw_exim_reply(&v, &stay, 1, &out, &dropped);
    assert(out.len <= MW_EXIM_MAX_REPLY + 2 * (MW_EXIM_MAX_LINE + 16));
    /* every line ends in CRLF, no CR/LF/control byte inside, none too long */
    size_t start = 0;
    for (size_t i = 0; i < out.len; i++) {
        unsigned char c = (unsigned char)out.data[i];
        if (c == '\r') {
            assert(i + 1 < out.len && out.data[i + 1] == '\n');
            assert(i - start <= MW_EXIM_MAX_LINE + 16);
            i++;
            start = i + 1;
            continue;
        }
        assert(c != '\n' && c >= 0x20 && c != 0x7f);
    }
    assert(start == out.len);
    mw_buf_free(&out);
    for (size_t i = 0; i < s.nars; i++)
        free((char *)s.ars[i].value);
    return 0;
}
