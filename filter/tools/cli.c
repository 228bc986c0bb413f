/*
 * cli.c - options shared by `serve`, `check` and `config-test`.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tools.h"

static int need(int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "mailwarden: option %s needs a value\n", argv[i]);
        return -1;
    }
    return 0;
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
        cli->sign[cli->ov.nsign++] = argv[++*i];
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

mw_config *mw_cli_load(const mw_cli *cli)
{
    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(cli->config_file, &cli->ov, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    return cfg;
}
