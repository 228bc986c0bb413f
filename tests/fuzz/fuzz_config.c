/*
 * fuzz_config.c - the configuration loader (core/config.h, via libconfig):
 * every key's validator, the FILE:LINE error collection, cross-key rules.
 * The config is written by the administrator, not by strangers, but it is
 * parsed by a root process at start and on every SIGHUP, and config-test
 * runs it on files being edited: it must report, never crash.
 *
 * The input is written to a file in a private temporary directory (so a
 * relative @include can only name files there) and loaded.  Inputs with
 * "@include" are skipped: an include of /dev/zero or a FIFO would hang in
 * libconfig's reader, which is not our code.
 */
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cidr_names.h"
#include "config.h"
#include "fuzz_common.h"
#include "log.h"

static char dir[] = "/tmp/mw-fuzz-config-XXXXXX";
static char path[sizeof dir + 32];

/* Host names in CIDR lists resolve through this, never DNS: a fuzzed name
 * must not wait on a resolver (found by the CI fuzz run: 2 s timeouts on
 * lists of invented names).  "localhost" resolves, everything else does not. */
static mw_cidr_name_status fake_resolve(void *ctx, const char *name,
                                        void (*add)(void *arg, const mw_addr *a), void *arg,
                                        char *why, size_t whylen)
{
    (void)ctx;
    if (strcmp(name, "localhost") == 0) {
        mw_addr a;
        if (mw_addr_parse("127.0.0.1", &a)) {
            add(arg, &a);
            return MW_CIDR_NAME_OK;
        }
    }
    snprintf(why, whylen, "not found (fuzz resolver)");
    return MW_CIDR_NAME_NOTFOUND;
}
static const mw_cidr_resolver fake = {.fn = fake_resolve};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mw_cidr_names_set_default_resolver(&fake);
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof path, "%s/mailwarden.conf", dir);
    return 0;
}

static void cleanup(void) __attribute__((destructor));
static void cleanup(void)
{
    if (path[0]) {
        unlink(path);
        rmdir(dir);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memmem(data, size, "@include", 8) != NULL)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(path, NULL, &errs);
    if (cfg == NULL) {
        assert(errs.n > 0);
        for (size_t i = 0; i < errs.n; i++)
            assert(errs.msg[i] != NULL);
    } else {
        assert(errs.n == 0);
        /* documented invariants of a loaded config */
        assert(cfg->authserv_id != NULL && cfg->hostname != NULL);
        assert((cfg->dns_mode == MW_DNS_MODE_FORWARD) == (cfg->ndns_forwarders > 0));
        mw_config_free(&cfg);
        assert(cfg == NULL);
    }
    mw_config_errors_free(&errs);
    return 0;
}
