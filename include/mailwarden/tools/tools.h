/*
 * tools.h - the subcommands of the mailwarden binary.  Each takes the
 * arguments after the subcommand name (argv[0] is the subcommand) and
 * returns the process exit status.
 */
#ifndef MW_TOOLS_H
#define MW_TOOLS_H

#include <stddef.h>

#include "config.h"

int mw_cmd_serve(int argc, char **argv);
int mw_cmd_check(int argc, char **argv);
int mw_cmd_config_test(int argc, char **argv);
/* mailwarden config-dump [-c FILE] [-n | --defaults | --man]: the effective
 * configuration with each key's origin (filter/tools/config_dump_cmd.c) */
int mw_cmd_config_dump(int argc, char **argv);
/* mailwarden keygen --domain D --selector S [--type rsa|ed25519] [--bits N] [--out DIR] */
int mw_cmd_keygen(int argc, char **argv);
/* mailwarden dns-check [-c FILE] [--dns ADDR[@PORT]]... [--sign D:S:KEYFILE]... */
int mw_cmd_dns_check(int argc, char **argv);
/* mailwarden report [-c FILE] [--history DIR]... [--period yesterday|DATE|DATE..DATE]
 *                   [--out DIR] [--send] [--dry-run] [--format rfc9990|rfc7489]:
 * DMARC aggregate reports from the history (filter/tools/report.c) */
int mw_cmd_report(int argc, char **argv);
/* mailwarden report --failure [--dry-run]: send the queued RFC 9991 failure
 * reports (filter/tools/report_failure.c); from: the report From address.
 * Exit status as the command's. */
int mw_report_failure_cmd(const mw_config *cfg, const char *from, bool dry_run);
/* mailwarden limits list [PATTERN] | show KEY | reset KEY [-c FILE] [--redis HOST:PORT] */
int mw_cmd_limits(int argc, char **argv);
/* mailwarden migrate [--opendkim FILE] [--opendmarc FILE] [--postfix-main-cf FILE]
 *                    [--history-dir DIR] [-o FILE] [--force]:
 * a commented mailwarden.conf from OpenDKIM/OpenDMARC configs, then config-test on it
 * (filter/tools/migrate.c) */
int mw_cmd_migrate(int argc, char **argv);
/* mailwarden reports-in import|summary|html [--db FILE] ...: the DMARC aggregate
 * reports we receive (filter/tools/reports_in.c) */
int mw_cmd_reports_in(int argc, char **argv);

/* Command-line options shared by serve and check (-c and the overrides). */
typedef struct mw_cli {
    const char         *config_file;
    mw_config_overrides ov;
    const char         *dns[16];
    const char         *internal[64];
    const char         *sign[16];
    char                history_abs[4096];
    char                abs_arena[16384];   /* absolute forms of relative paths given */
    size_t              abs_used;
} mw_cli;

/* The configuration read when no -c is given and it exists. */
#ifndef MW_DEFAULT_CONFIG
#define MW_DEFAULT_CONFIG "/etc/mailwarden/mailwarden.conf"
#endif

/*
 * If argv[*i] is a shared option, consume it (and its value), store it in
 * cli and return 1; return 0 if it is not one; -1 (after printing a message)
 * for a missing value or too many repeats.
 */
int mw_cli_common(mw_cli *cli, int argc, char **argv, int *i);
/* After the options: without -c, use MW_DEFAULT_CONFIG when it exists
 * (else the embedded defaults).  Every command that reads the configuration
 * calls it, so they all read the same file. */
void mw_cli_default_config(mw_cli *cli);
/* Load the config named by cli, printing every error to stderr.  NULL on error. */
mw_config *mw_cli_load(const mw_cli *cli);
/*
 * "--name=value" as "--name" "value", for every option of every subcommand
 * (main.c calls it once, before dispatching); arguments after "--" are left
 * alone.  Returns a new NULL-terminated argv (*nargc entries) that the caller
 * frees with free(); NULL (after a message) when an option that takes no
 * value is given one ("--json=yes").
 */
char **mw_cli_split_eq(int argc, char **argv, int *nargc);

#endif
