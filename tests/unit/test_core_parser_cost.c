/*
 * test_core_parser_cost.c - loading the config is linear in the file's size
 * (issue 13, defect 5): libconfig's parser and our validation of what it
 * read (lists, CIDR sets, unknown keys and the error list they make, long
 * strings, comments).  See parser_cost.h for how work is compared; the file
 * is written once per size, each load reads it again.
 *
 * Not here: two shapes on which libconfig itself (1.5) is quadratic, before
 * any of our code runs: many settings in one group (each new setting is
 * searched for among the group's earlier ones: 1 MiB of "xN = 1;" lines
 * took 34 s) and one very long string (460 ms at 1 MiB).  The config file
 * is the administrator's, not outside input; see issue 13's notes.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mwtest.h"
#include "parser_cost.h"

static char dir[] = "/tmp/mw-test-pcost-XXXXXX";
static char path[sizeof dir + 32];
static size_t written_len = (size_t)-1;
static unsigned long written_sum;

static void run_config(const char *in, size_t len, void *arg)
{
    (void)arg;
    unsigned long sum = len;
    for (size_t i = 0; i < len; i += 97)
        sum = sum * 31 + (unsigned char)in[i];
    if (len != written_len || sum != written_sum) {   /* a new input: write it once */
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, in, len) != (ssize_t)len)
            abort();
        close(fd);
        written_len = len;
        written_sum = sum;
    }
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(path, NULL, &errs);
    mw_config_free(&cfg);
    mw_config_errors_free(&errs);
}

static size_t g_cf_comments(char *o, size_t n) { return pc_fill(o, n, "", "# a comment line\n", "authserv_id = \"mx.example\";\n"); }
static size_t g_cf_blanks(char *o, size_t n) { return pc_fill(o, n, "authserv_id =", " \n\t", "\"mx.example\";\n"); }
static size_t g_cf_cidrs(char *o, size_t n) { return pc_fill(o, n, "trust = { internal_networks = [ \"10.0.0.1/32\"", ", \"10.0.0.1/32\"", " ]; };\n"); }
static size_t g_cf_strlist(char *o, size_t n) { return pc_fill(o, n, "dns = { forwarders = [ \"127.0.0.1\"", ", \"127.0.0.1\"", " ]; };\n"); }
/* unknown keys spread over groups of 16: the error list, the suggestions
 * ("did you mean"), without libconfig's per-group search growing */
static size_t g_cf_unknown(char *o, size_t n)
{
    size_t k = 0, i = 0;
    char t[64];
    for (;;) {
        int w = i % 16 == 0 ? snprintf(t, sizeof t, "%sg%zx = { x = 1;\n", i ? "};\n" : "", i)
                            : snprintf(t, sizeof t, "x%zx = 1;\n", i);
        if (k + (size_t)w + 3 > n)
            break;
        memcpy(o + k, t, (size_t)w);
        k += (size_t)w;
        i++;
    }
    memcpy(o + k, "};\n", 3);
    return k + 3;
}
static size_t g_cf_nested(char *o, size_t n)
{
    size_t h = (n - 8) / 8, k = 0;
    for (size_t i = 0; i < h; i++, k += 4)
        memcpy(o + k, "a={", 3), o[k + 3] = '\n';
    for (size_t i = 0; i < h; i++, k += 3)
        memcpy(o + k, "};\n", 3);
    return k;
}

/* libconfig grows a list's element array 16 entries at a time with
 * realloc: linear under glibc (which extends or remaps in place) but
 * quadratic under ASan, whose realloc always copies (80,000 list entries:
 * 5 s).  Our own code is the same either way, so under a sanitizer the
 * list shapes stop at 256 KiB. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const size_t list_ladder[] = {PC_KIB, 16 * PC_KIB, 256 * PC_KIB, 0};
#else
static const size_t *const list_ladder = NULL;
#endif

static void test_config(void)
{
    pc_check("config comment lines", run_config, NULL, g_cf_comments);
    pc_check("config blanks", run_config, NULL, g_cf_blanks);
    pc_check_sizes("config CIDR list", run_config, NULL, g_cf_cidrs, list_ladder);
    pc_check_sizes("config string list", run_config, NULL, g_cf_strlist, list_ladder);
    pc_check("config unknown keys x many", run_config, NULL, g_cf_unknown);
    pc_check("config nested groups", run_config, NULL, g_cf_nested);
}

int main(void)
{
    PC_SKIP_UNDER_TSAN();
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/mailwarden.conf", dir);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "test", "mail", MW_LOG_ERROR);
    MW_TEST_RUN(test_config);
    unlink(path);
    rmdir(dir);
    return MW_TEST_SUMMARY();
}
