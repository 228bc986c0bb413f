/*
 * fuzz_cidr_names.c - address-list entries and files of entries
 * (util/cidr_names.h): the values of trust.internal_networks and the other
 * CIDR-list keys, and OpenDKIM InternalHosts/TrustedHosts files that
 * `mailwarden migrate` points the config at.  A fake resolver answers
 * names (no DNS): names starting with "nx" do not resolve, "tmp" fail for
 * now, the others get an IPv4 and an IPv6 address derived from the name.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cidr_names.h"
#include "fuzz_common.h"

static mw_cidr_name_status fake(void *ctx, const char *name, void (*add)(void *, const mw_addr *),
                                void *arg, char *why, size_t whylen)
{
    (void)ctx;
    assert(name[0] != '\0');
    if (strncmp(name, "nx", 2) == 0) {
        snprintf(why, whylen, "NXDOMAIN");
        return MW_CIDR_NAME_NOTFOUND;
    }
    if (strncmp(name, "tmp", 3) == 0) {
        snprintf(why, whylen, "timeout");
        return MW_CIDR_NAME_TEMPFAIL;
    }
    unsigned h = 0;
    for (const char *c = name; *c; c++)
        h = h * 31 + (unsigned char)*c;
    mw_addr a4 = {.family = 2 /* AF_INET */}, a6 = {.family = 10 /* AF_INET6 */};
    memcpy(a4.bytes, &h, 4);
    a6.bytes[0] = 0x20;
    memcpy(a6.bytes + 12, &h, 4);
    add(arg, &a4);
    add(arg, &a6);
    return MW_CIDR_NAME_OK;
}

static void count(void *arg, const char *msg)
{
    assert(msg[0] != '\0');
    (*(size_t *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_cidr_resolver r = {.fn = fake};
    mw_cidr_set *set = mw_cidr_set_new();
    const uint8_t *p = data, *line;
    size_t n = size, len;
    char why[400];

    /* each line as a config list entry */
    while (fz_next_line(&p, &n, &line, &len)) {
        char *e = fz_strndup(line, len);
        why[0] = '\0';
        if (!mw_cidr_names_add(set, e, &r, why, sizeof why))
            assert(why[0] != '\0');
        (void)mw_cidr_names_file(e);
        free(e);
    }
    /* the whole input as a file of entries */
    char path[] = "/tmp/fuzz_cidr_names_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        size_t off = 0;
        while (off < size) {
            ssize_t w = write(fd, data + off, size - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        close(fd);
        size_t nerr = 0;
        size_t got = mw_cidr_names_add_file(set, path, &r, count, &nerr);
        assert(got == nerr);
        unlink(path);
    }
    mw_cidr_set_free(&set);
    return 0;
}
