/*
 * main.c - the mailwarden binary: dispatch to a subcommand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailwarden COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  serve        run the milter daemon (Postfix smtpd_milters, Sendmail INPUT_MAIL_FILTER)\n"
            "  check        run the same engine on one message from stdin and explain the result\n"
            "  config-test  validate the configuration, print every error as FILE:LINE\n"
            "  config-dump  print the effective configuration: every key, its value and origin\n"
            "  keygen       make a DKIM key and print the DNS record to publish\n"
            "  dns-check    check the signing keys, SPF and DMARC records in DNS\n"
            "  limits       list, show or reset rate-limit buckets (Redis)\n"
            "  report       build and mail DMARC aggregate reports from the history\n"
            "  reports-in   import the DMARC reports you receive, show sources and p=reject readiness\n"
            "  migrate      write a mailwarden.conf from OpenDKIM and OpenDMARC configs\n"
            "\n"
            "Run 'mailwarden COMMAND --help' for the options of a command.\n"
            "Options: -h, --help   this text;  -V, --version   print the version\n");
}

/* The argv with "--opt=value" split (cli.c); global, so the sanitizer's
 * leak check finds it reachable in the forked serve worker too. */
static char **split_argv;

static int dispatch(int argc, char **argv);

int main(int argc, char **argv)
{
    int n = 0;

    split_argv = mw_cli_split_eq(argc, argv, &n);
    if (split_argv == NULL)
        return 2;
    int rc = dispatch(n, split_argv);
    free(split_argv);
    split_argv = NULL;
    return rc;
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("mailwarden %s\n", MW_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return mw_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return mw_cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "config-test") == 0)
        return mw_cmd_config_test(argc - 1, argv + 1);
    if (strcmp(cmd, "config-dump") == 0)
        return mw_cmd_config_dump(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0)
        return mw_cmd_keygen(argc - 1, argv + 1);
    if (strcmp(cmd, "dns-check") == 0)
        return mw_cmd_dns_check(argc - 1, argv + 1);
    if (strcmp(cmd, "limits") == 0)
        return mw_cmd_limits(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0)
        return mw_cmd_report(argc - 1, argv + 1);
    if (strcmp(cmd, "reports-in") == 0)
        return mw_cmd_reports_in(argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return mw_cmd_migrate(argc - 1, argv + 1);
    fprintf(stderr, "mailwarden: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
