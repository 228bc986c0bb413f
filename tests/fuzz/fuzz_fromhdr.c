/*
 * fuzz_fromhdr.c - the header From parser (checks/fromhdr.h): the root of
 * the DMARC decision, attacker-controlled, historically the place of
 * OpenDMARC's crashes and bypasses.  The value is handed over in an
 * exact-size buffer (no terminator) because the parser is length-bounded.
 */
#include <assert.h>
#include <string.h>

#include "fromhdr.h"
#include "fuzz_common.h"

static void count_found(void *arg, const char *domain)
{
    assert(domain[0] != '\0' && strchr(domain, '.') != NULL);
    for (const char *c = domain; *c; c++)
        assert((unsigned char)*c < 0x80 && !(*c >= 'A' && *c <= 'Z'));
    (*(size_t *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = fz_exact(data, size);
    mw_from f;
    mw_from_status st = mw_from_parse(v, size, &f);
    /* invariants the engine relies on */
    assert(f.status == st);
    assert(mw_from_status_name(st) != NULL);
    if (st == MW_FROM_OK) {
        /* one address, or several all in one domain (one Author Domain) */
        assert(f.naddr >= 1 && f.naddr <= MW_FROM_MAX_ADDRS);
        assert(f.addr[0] != NULL && f.domain[0] != NULL);
        assert(f.domain[0][0] != '\0');
        for (size_t i = 1; i < f.naddr; i++)
            assert(f.domain[i] != NULL && strcmp(f.domain[i], f.domain[0]) == 0);
        for (const char *c = f.domain[0]; *c; c++)
            assert(!(*c >= 'A' && *c <= 'Z') && (unsigned char)*c < 0x80);   /* lower case, A-labels */
    } else {
        assert(f.why != NULL);
    }
    for (size_t i = 0; i < f.naddr && i < MW_FROM_MAX_ADDRS; i++)
        if (f.addr[i])
            (void)strlen(f.addr[i]);
    mw_from_clear(&f);
    /* what the engine does with a From the parser gave up on */
    bool unreadable = false;
    size_t n = 0;
    mw_from_recover_domains(v, size, count_found, &n, &unreadable);
    free(v);
    return 0;
}
