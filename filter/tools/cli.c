/*
 * cli.c - options shared by `serve`, `check` and `config-test`.
 *
 * Paths (why): `serve` daemonises (chdir "/") and its worker reads the
 * configuration again, at start and at every reload, so every relative path
 * given on the command line (-c, --policy FILE, --pid-file, --sign's key
 * file, --history) is made absolute here, against the directory the command
 * was run from, before anything forks.  Paths inside the configuration file
 * must be absolute (the key table checks them), @include is relative to the
 * file's own directory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

#include "tools.h"

static int need(int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "mailwarden: option %s needs a value\n", argv[i]);
        return -1;
    }
    return 0;
}

/* p made absolute against the current directory, into a slot of cli's
 * arena; p itself when absolute (or when the directory is unknown). */
static const char *absolute(mw_cli *cli, const char *p)
{
    char cwd[2048];
    if (p[0] == '/' || p[0] == '\0' || getcwd(cwd, sizeof cwd) == NULL)
        return p;
    size_t need = strlen(cwd) + strlen(p) + 2;
    if (cli->abs_used + need > sizeof cli->abs_arena)
        return p;   /* the loader then says "must be an absolute path" */
    char *out = cli->abs_arena + cli->abs_used;
    snprintf(out, need, "%s/%s", cwd, p);
    cli->abs_used += need;
    return out;
}

int mw_cli_common(mw_cli *cli, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char **slot = NULL;
    if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
        slot = &cli->config_file;
    else if (strcmp(a, "--socket") == 0)
        slot = &cli->ov.socket;
    else if (strcmp(a, "--authserv-id") == 0)
        slot = &cli->ov.authserv_id;
    else if (strcmp(a, "--policy") == 0)
        slot = &cli->ov.policy;
    else if (strcmp(a, "--pid-file") == 0)
        slot = &cli->ov.pid_file;
    else if (strcmp(a, "--user") == 0)
        slot = &cli->ov.user;
    else if (strcmp(a, "--group") == 0)
        slot = &cli->ov.group;
    else if (strcmp(a, "--redis") == 0)
        slot = &cli->ov.redis;
    else if (strcmp(a, "--history") == 0) {
        if (need(argc, argv, *i) < 0)
            return -1;
        const char *d = argv[++*i];
        /* a relative directory is taken from where the command was run */
        char cwd[2048];
        if (d[0] != '/' && getcwd(cwd, sizeof cwd))
            snprintf(cli->history_abs, sizeof cli->history_abs, "%s/%s", cwd, d);
        else
            snprintf(cli->history_abs, sizeof cli->history_abs, "%s", d);
        cli->ov.history = cli->history_abs;
        return 1;
    }
    if (slot) {
        if (need(argc, argv, *i) < 0)
            return -1;
        *slot = argv[++*i];
        /* files named on the command line are taken from where the command
         * was run; a policy without '/' is a name, not a file */
        if (slot == &cli->config_file || slot == &cli->ov.pid_file ||
            (slot == &cli->ov.policy && strchr(*slot, '/') != NULL))
            *slot = absolute(cli, *slot);
        return 1;
    }
    if (strcmp(a, "--dns") == 0) {
        if (need(argc, argv, *i) < 0)
            return -1;
        if (cli->ov.ndns >= sizeof cli->dns / sizeof cli->dns[0]) {
            fprintf(stderr, "mailwarden: too many --dns options\n");
            return -1;
        }
        cli->dns[cli->ov.ndns++] = argv[++*i];
        cli->ov.dns = cli->dns;
        return 1;
    }
    if (strcmp(a, "--sign") == 0) {
        if (need(argc, argv, *i) < 0)
            return -1;
        if (cli->ov.nsign >= sizeof cli->sign / sizeof cli->sign[0]) {
            fprintf(stderr, "mailwarden: too many --sign options\n");
            return -1;
        }
        const char *spec = argv[++*i];
        /* DOMAIN:SELECTOR:KEYFILE: a relative KEYFILE from here, too */
        const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 != NULL && c2[1] != '/' && c2[1] != '\0') {
            char tmp[4096];
            /* absolute() is given only the file; the spec is rebuilt around it */
            const char *f = absolute(cli, c2 + 1);
            if (f != c2 + 1 && (size_t)snprintf(tmp, sizeof tmp, "%.*s%s", (int)(c2 + 1 - spec), spec, f) <
                                   sizeof tmp) {
                size_t n = strlen(tmp) + 1;
                if (cli->abs_used + n <= sizeof cli->abs_arena) {
                    memcpy(cli->abs_arena + cli->abs_used, tmp, n);
                    spec = cli->abs_arena + cli->abs_used;
                    cli->abs_used += n;
                }
            }
        }
        cli->sign[cli->ov.nsign++] = spec;
        cli->ov.sign = cli->sign;
        return 1;
    }
    if (strcmp(a, "--internal") == 0) {
        if (need(argc, argv, *i) < 0)
            return -1;
        if (cli->ov.ninternal >= sizeof cli->internal / sizeof cli->internal[0]) {
            fprintf(stderr, "mailwarden: too many --internal options\n");
            return -1;
        }
        cli->internal[cli->ov.ninternal++] = argv[++*i];
        cli->ov.internal = cli->internal;
        return 1;
    }
    return 0;
}

void mw_cli_default_config(mw_cli *cli)
{
    if (cli->config_file == NULL && access(MW_DEFAULT_CONFIG, F_OK) == 0)
        cli->config_file = MW_DEFAULT_CONFIG;
}

mw_config *mw_cli_load(const mw_cli *cli)
{
    mw_config_errors errs = {0};
    const char *path = cli->config_file;
    if (path == NULL && access(MW_DEFAULT_CONFIG, F_OK) == 0)
        path = MW_DEFAULT_CONFIG;
    mw_config *cfg = mw_config_load(path, &cli->ov, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    return cfg;
}

/* Options that take no value, in any subcommand: "--json=yes" is an error,
 * not "--json" and a stray argument "yes". */
static const char *const no_value[] = {
    "--foreground", "--json", "--keys", "--send", "--dry-run", "--force", "--defaults",
    "--non-default", "--man", "--help", "--version", NULL};

char **mw_cli_split_eq(int argc, char **argv, int *nargc)
{
    size_t nsplit = 0, bytes = 0;
    bool done = false;

    for (int i = 0; i < argc; i++) {
        if (!done && strcmp(argv[i], "--") == 0)
            done = true;
        else if (!done && strncmp(argv[i], "--", 2) == 0 && strchr(argv[i], '=') != NULL) {
            nsplit++;
            bytes += strlen(argv[i]) + 1;
        }
    }
    /* one block: the new argv, then the "--name" copies; freed with free() */
    size_t n = (size_t)argc + nsplit;
    char **out = mw_calloc(1, (n + 1) * sizeof *out + bytes);
    char *arena = (char *)(out + n + 1);
    int j = 0;
    done = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        if (!done && strcmp(a, "--") == 0)
            done = true;
        if (done || strncmp(a, "--", 2) != 0 || eq == NULL) {
            out[j++] = argv[i];
            continue;
        }
        size_t len = (size_t)(eq - a);
        memcpy(arena, a, len);
        arena[len] = '\0';
        for (const char *const *f = no_value; *f != NULL; f++)
            if (strcmp(arena, *f) == 0) {
                fprintf(stderr, "mailwarden: option %s takes no value (\"%s\")\n", arena, a);
                free(out);
                return NULL;
            }
        out[j++] = arena;
        out[j++] = argv[i] + len + 1;
        arena += len + 1;
    }
    out[j] = NULL;
    *nargc = j;
    return out;
}
