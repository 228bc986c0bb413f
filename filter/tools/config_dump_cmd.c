/*
 * config_dump_cmd.c - `mailwarden config-dump`: the effective configuration,
 * every key with its value and origin (core/config_dump.h does the work).
 *
 *   config-dump [-c FILE] [overrides]   every key, "# default" or "# FILE:LINE"
 *   config-dump -n [-c FILE]            only the keys the file (or command line) sets
 *   config-dump --defaults              every key's default
 *   config-dump --man                   the key list of mailwarden.conf(5), from the table
 *
 * The output is mailwarden.conf syntax: `config-dump --defaults > x.conf`
 * passes `config-test -c x.conf` and loads to the same configuration.
 */
#include <stdio.h>
#include <string.h>

#include "config_dump.h"
#include "tools.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: mailwarden config-dump [-c FILE] [-n | --defaults | --man] [overrides]\n"
               "Print the effective configuration as mailwarden.conf text: every key with its\n"
               "value and, as a trailing comment, where it came from (default, FILE:LINE or\n"
               "command line).\n"
               "  -c, --config FILE  the configuration file (default " MW_DEFAULT_CONFIG
               " when it exists)\n"
               "  -n                 only the keys set in the file or on the command line\n"
               "  --defaults         every key's default (no file is read)\n"
               "  --man              the key list of mailwarden.conf(5), generated from the key table\n"
               "The serve overrides (--socket, --dns, --policy, ...) apply as they do for serve.\n");
}

int mw_cmd_config_dump(int argc, char **argv)
{
    mw_cli cli = {0};
    mw_config_dump_mode mode = MW_DUMP_ALL;
    bool man = false;

    for (int i = 1; i < argc; i++) {
        int r = mw_cli_common(&cli, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (strcmp(argv[i], "-n") == 0 || strcmp(argv[i], "--non-default") == 0) {
            mode = MW_DUMP_NON_DEFAULT;
        } else if (strcmp(argv[i], "--defaults") == 0 || strcmp(argv[i], "-d") == 0) {
            mode = MW_DUMP_DEFAULTS;
        } else if (strcmp(argv[i], "--man") == 0) {
            man = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mailwarden config-dump: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    mw_buf out = MW_BUF_INIT;
    mw_config *cfg = NULL;
    if (man) {
        mw_config_dump_man(&out);
    } else if (mode == MW_DUMP_DEFAULTS) {
        mw_config_errors errs = {0};
        cfg = mw_config_load(NULL, NULL, &errs);
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.msg[i]);
        mw_config_errors_free(&errs);
    } else {
        mw_cli_default_config(&cli);
        cfg = mw_cli_load(&cli);
    }
    if (!man && cfg == NULL) {
        mw_buf_free(&out);
        return 1;
    }
    if (cfg != NULL)
        mw_config_dump(cfg, mode, &out);
    fwrite(mw_buf_cstr(&out), 1, out.len, stdout);
    mw_buf_free(&out);
    mw_config_free(&cfg);
    return fflush(stdout) == 0 ? 0 : 1;
}
