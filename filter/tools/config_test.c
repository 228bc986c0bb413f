/*
 * config_test.c - `mailwarden config-test [-c FILE] [overrides]`: load and
 * validate the whole configuration (including the policy it names) and
 * report every error as FILE:LINE: message.  Exit 0 only when clean.
 *
 * It also reads the DKIM key files and checks history.dir the way the
 * daemon will, as the user the daemon runs as (`user`/`group`): run as
 * root, a child process drops to that user first.  The daemon reads its
 * keys and creates its history after dropping privileges, at start and at
 * every reload, so a key only root can read is an error here too.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dkim.h"
#include "policy.h"
#include "privs.h"
#include "tools.h"

/* The files the daemon reads or writes, checked with the current ids.
 * Prints each problem; the number of problems. */
static int check_files(const mw_config *cfg, const char *who)
{
    int bad = 0;
    mw_config_errors errs = {0};
    mw_dkim_signer *sg = mw_dkim_signer_create(cfg, &errs);
    for (size_t i = 0; i < errs.n; i++, bad++)
        fprintf(stderr, "%s (reading as %s)\n", errs.msg[i], who);
    if (sg == NULL && errs.n == 0) {
        fprintf(stderr, "DKIM signing keys: cannot load (reading as %s)\n", who);
        bad++;
    }
    mw_dkim_signer_destroy(&sg);
    mw_config_errors_free(&errs);
    if (cfg->history_dir != NULL && *cfg->history_dir != '\0') {
        struct stat st;
        if (stat(cfg->history_dir, &st) == 0) {
            if (!S_ISDIR(st.st_mode) || faccessat(AT_FDCWD, cfg->history_dir, W_OK | X_OK, AT_EACCESS) != 0) {
                fprintf(stderr, "history.dir %s (owner uid %u, mode %04o) is not a directory writable by %s\n",
                        cfg->history_dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), who);
                bad++;
            }
        } else {
            char *copy = strdup(cfg->history_dir);
            const char *parent = copy ? dirname(copy) : "/";
            if (faccessat(AT_FDCWD, parent, W_OK | X_OK, AT_EACCESS) != 0) {
                fprintf(stderr, "history.dir %s does not exist and %s cannot create it in %s: create it "
                        "owned by that user, mode 0750\n", cfg->history_dir, who, parent);
                bad++;
            }
            free(copy);
        }
    }
    return bad;
}

/* check_files as the daemon's user: in a child that drops privileges when
 * we are root and a user or group is configured.  The number of problems
 * (1 when the check itself failed). */
static int check_files_as_daemon(const mw_config *cfg, char *who, size_t wholen)
{
    mw_privs pv;
    char err[512];

    if (mw_privs_resolve(cfg->user, cfg->group, &pv, err, sizeof err) != 0) {
        fprintf(stderr, "user/group: %s\n", err);
        snprintf(who, wholen, "?");
        return 1;
    }
    snprintf(who, wholen, "user %s", pv.user);
    if (!pv.change)
        return check_files(cfg, who);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        if (mw_privs_drop(&pv, err, sizeof err) != 0) {
            fprintf(stderr, "cannot become %s: %s\n", who, err);
            _exit(1);
        }
        int n = check_files(cfg, who);
        fflush(NULL);
        _exit(n > 100 ? 100 : n);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

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
    char who[96];
    if (check_files_as_daemon(cfg, who, sizeof who) != 0)
        rc = 1;
    if (rc == 0)
        printf("%s: configuration OK (policy \"%s\"; key files and history.dir usable by %s)\n",
               cli.config_file ? cli.config_file : "(embedded defaults)", mw_policy_name(pol), who);
    mw_policy_free(&pol);
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    return rc;
}
