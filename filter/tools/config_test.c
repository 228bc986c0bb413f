/*
 * config_test.c - `mailwarden config-test [-c FILE] [overrides]`: load and
 * validate the whole configuration (including the policy it names) and
 * report every error as FILE:LINE: message.  Exit 0 only when clean.
 */
#include <stdio.h>
#include <string.h>

#include "policy.h"
#include "tools.h"

int mw_cmd_config_test(int argc, char **argv)
{
    mw_cli cli = {0};
    int keys = 0;
    for (int i = 1; i < argc; i++) {
        int r = mw_cli_common(&cli, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (strcmp(argv[i], "--keys") == 0) {
            keys = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: mailwarden config-test [-c FILE] [--keys]\n"
                   "Validate the configuration and its policy; print every error as FILE:LINE: message.\n"
                   "--keys lists every configuration key.\n");
            return 0;
        } else {
            fprintf(stderr, "mailwarden config-test: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (keys) {
        const char *k;
        for (size_t i = 0; (k = mw_config_key_name(i)) != NULL; i++)
            printf("%s\n", k);
        return 0;
    }
    mw_config *cfg = mw_cli_load(&cli);
    if (!cfg)
        return 1;
    mw_config_errors errs = {0};
    mw_policy *pol = mw_policy_load(cfg->policy, cfg->policy_dir, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    int rc = pol ? 0 : 1;
    if (pol)
        printf("%s: configuration OK (policy \"%s\")\n", cli.config_file ? cli.config_file : "(embedded defaults)",
               mw_policy_name(pol));
    mw_policy_free(&pol);
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    return rc;
}
