/*
 * limits.c - `mailwarden limits`: inspect and reset rate-limit buckets.
 *
 *   mailwarden limits list [PATTERN] [-c FILE] [--redis HOST:PORT]
 *   mailwarden limits show KEY      [-c FILE] [--redis HOST:PORT]
 *   mailwarden limits reset KEY     [-c FILE] [--redis HOST:PORT]
 *
 * KEY is a bucket key as `list` prints it, "rl:{SUBJECT}:RULE" (e.g.
 * "rl:{user=alice}:sasl-hourly"); PATTERN a glob over the part after
 * "rl:" ('*', '?'; default "*").  The rules of the configuration give each
 * bucket its rate and burst, so remaining units and the time until the
 * bucket is full can be shown; a bucket of a rule no longer configured is
 * listed with its TAT only.
 *
 * Only the redis backend can be inspected from outside the daemon: the
 * memory backend's buckets live inside the daemon process.
 *
 * Exit status: 0 done, 1 not found / store unavailable, 2 usage or config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "ratelimit.h"
#include "store.h"
#include "strutil.h"
#include "tools.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: mailwarden limits list [PATTERN] [-c FILE] [--redis HOST:PORT]\n"
               "       mailwarden limits show KEY [-c FILE] [--redis HOST:PORT]\n"
               "       mailwarden limits reset KEY [-c FILE] [--redis HOST:PORT]\n"
               "KEY as printed by list: rl:{SUBJECT}:RULE, e.g. rl:{user=alice}:sasl-hourly\n");
}

static void print_bucket(const char *key, const mw_rl_bucket *b, bool verbose)
{
    mw_buf k = MW_BUF_INIT;

    mw_str_printable(&k, key, strlen(key), 0);
    if (!verbose) {
        if (b->configured)
            printf("%s  remaining %lld/%u  full in %lld s\n", mw_buf_cstr(&k), b->remaining,
                   b->burst, (b->reset_ms + 999) / 1000);
        else
            printf("%s  (rule not configured)  tat %llu\n", mw_buf_cstr(&k), b->tat_us);
        mw_buf_free(&k);
        return;
    }
    mw_buf s = MW_BUF_INIT;
    mw_str_printable(&s, b->subject, strlen(b->subject), 0);
    printf("key:        %s\nrule:       %s%s\nsubject:    %s\n", mw_buf_cstr(&k), b->rule,
           b->configured ? "" : " (not in this configuration)", mw_buf_cstr(&s));
    if (b->configured)
        printf("rate:       %s, burst %u\nremaining:  %lld\nfull in:    %.3f s\n", b->rate,
               b->burst, b->remaining, b->reset_ms / 1000.0);
    if (b->tat_us > 0) {
        time_t t = (time_t)(b->tat_us / 1000000u);
        struct tm tm;
        char when[64];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("tat:        %llu (%s)\n", b->tat_us, when);
    } else {
        printf("tat:        none (the bucket is full)\n");
    }
    mw_buf_free(&s);
    mw_buf_free(&k);
}

struct list_ctx {
    mw_ratelimit *rl;
    size_t        n;
    int           status;
};

static bool list_one(void *arg, const char *key, size_t keylen, long long ttl_ms)
{
    struct list_ctx *c = arg;
    char *k = mw_strndup(key, keylen);
    mw_rl_bucket b;
    char why[256];

    (void)ttl_ms;
    mw_store_status st = mw_ratelimit_inspect(c->rl, k, &b, why, sizeof why);
    if (st == MW_STORE_OK) {
        print_bucket(k, &b, false);
        c->n++;
    } else if (st == MW_STORE_TEMPFAIL) {
        fprintf(stderr, "mailwarden limits: %s\n", why);
        c->status = 1;
        free(k);
        return false;
    }
    free(k);
    return true;
}

int mw_cmd_limits(int argc, char **argv)
{
    const char *file = NULL, *cmd = NULL, *arg = NULL;
    mw_config_overrides ov;
    mw_config_errors errs = {0};
    mw_config *cfg;
    mw_store *store = NULL;
    mw_ratelimit *rl = NULL;
    char err[256];
    int status = 0;

    memset(&ov, 0, sizeof ov);
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(argv[i], "--redis") == 0 && i + 1 < argc) {
            ov.redis = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "mailwarden limits: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (cmd == NULL) {
            cmd = argv[i];
        } else if (arg == NULL) {
            arg = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (cmd == NULL || (strcmp(cmd, "list") != 0 && arg == NULL) ||
        (strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0 && strcmp(cmd, "reset") != 0)) {
        usage(stderr);
        return 2;
    }
    cfg = mw_config_load(file, &ov, &errs);
    if (cfg == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        mw_config_errors_free(&errs);
        return 2;
    }
    if (cfg->state_backend != MW_STATE_REDIS) {
        fprintf(stderr, "mailwarden limits: state.backend is \"memory\": the buckets live inside "
                        "the daemon; use the redis backend (or --redis HOST:PORT)\n");
        mw_config_free(&cfg);
        return 2;
    }
    store = mw_store_create(cfg, err, sizeof err);
    rl = store != NULL ? mw_ratelimit_create(cfg, store, err, sizeof err) : NULL;
    if (rl == NULL) {
        fprintf(stderr, "mailwarden limits: %s\n", err);
        status = 2;
        goto out;
    }

    /* Keys are given as printed, with or without the redis.prefix. */
    if (arg != NULL && strncmp(arg, cfg->redis_prefix, strlen(cfg->redis_prefix)) == 0 &&
        strncmp(arg, "rl:", 3) != 0)
        arg += strlen(cfg->redis_prefix);

    if (strcmp(cmd, "list") == 0) {
        struct list_ctx c = {.rl = rl};
        mw_buf pat = MW_BUF_INIT;
        mw_buf_printf(&pat, "rl:%s", arg != NULL ? arg : "*");
        if (mw_store_scan(store, mw_buf_cstr(&pat), list_one, &c, err, sizeof err) != MW_STORE_OK) {
            fprintf(stderr, "mailwarden limits: %s: %s\n", mw_store_describe(store), err);
            status = 1;
        } else {
            status = c.status;
            if (status == 0)
                printf("%zu bucket%s\n", c.n, c.n == 1 ? "" : "s");
        }
        mw_buf_free(&pat);
    } else if (strcmp(cmd, "show") == 0) {
        mw_rl_bucket b;
        mw_store_status st = mw_ratelimit_inspect(rl, arg, &b, err, sizeof err);
        if (st == MW_STORE_OK || st == MW_STORE_NOTFOUND) {
            print_bucket(arg, &b, true);
            if (st == MW_STORE_NOTFOUND)
                printf("(no such bucket: it is full)\n");
        } else {
            fprintf(stderr, "mailwarden limits: %s\n", err);
            status = st == MW_STORE_ERROR ? 2 : 1;
        }
    } else {
        mw_store_status st = mw_ratelimit_reset(rl, arg, err, sizeof err);
        if (st == MW_STORE_OK) {
            printf("reset %s\n", arg);
        } else if (st == MW_STORE_NOTFOUND) {
            printf("no bucket %s (nothing to reset)\n", arg);
            status = 1;
        } else {
            fprintf(stderr, "mailwarden limits: %s\n", err);
            status = 1;
        }
    }
out:
    mw_ratelimit_destroy(&rl);
    mw_store_destroy(&store);
    mw_config_free(&cfg);
    return status;
}
