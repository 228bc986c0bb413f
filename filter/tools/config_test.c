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
 *
 * One check (why): serve and a SIGHUP reload accept a configuration when
 * mw_engine_reload() can build a runtime from it (resolver, store, keys,
 * ARC key, policy, reply texts, history).  config-test builds that same
 * runtime, as the same user, so whatever would refuse a start or a reload
 * (what `systemctl reload` runs config-test for) refuses here first.  Only
 * the history is not opened (that would create files): its directory is
 * checked instead.  The listeners are checked as far as can be told
 * without taking them from a running daemon: a unix socket's directory
 * must exist, an inet address must be one of this host's.
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "dkim.h"
#include "engine.h"
#include "policy.h"
#include "privs.h"
#include "tools.h"

/* The files the daemon reads or writes, checked with the current ids.
 * Prints each problem; the number of problems. */
static int check_runtime(const mw_config *cfg, const mw_cli *cli, const char *who);
static bool runtime_check = true;

static int check_files(const mw_config *cfg, const mw_cli *cli, const char *who)
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
    /* the keys reported above one by one; the rest of what serve builds */
    if (bad == 0 && runtime_check)
        bad += check_runtime(cfg, cli, who);
    return bad;
}

/* The runtime serve and reload would build, from cfg (history left out:
 * opening it creates files).  The number of problems. */
static int check_runtime(const mw_config *cfg, const mw_cli *cli, const char *who)
{
    mw_config_errors errs = {0};
    mw_config *copy = mw_config_load(cfg->path, &cli->ov, &errs);
    mw_config_errors_free(&errs);
    if (copy == NULL)
        return 0;   /* reported already */
    free(copy->history_dir);
    copy->history_dir = strdup("");
    char err[512];
    mw_engine *e = mw_engine_create(copy, err, sizeof err);
    if (e == NULL) {
        fprintf(stderr, "%s: serve and reload would refuse this configuration: %s (as %s)\n",
                cfg->path ? cfg->path : "(embedded defaults)", err, who);
        mw_config_free(&copy);
        return 1;
    }
    mw_engine_destroy(&e);
    return 0;
}

/* A listener spec ("inet:PORT@HOST", "inet6:...", "unix:PATH"; "" = none)
 * as far as can be told without binding over a running daemon: the unix
 * socket's directory exists; the inet address is one of this host's
 * (EADDRINUSE is fine: it may be the running daemon's). */
static int check_listener(const char *where, const char *key, const char *spec)
{
    if (spec == NULL || *spec == '\0')
        return 0;
    if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0) {
        const char *path = strchr(spec, ':') + 1;
        char *copy = strdup(path);
        const char *dir = copy ? dirname(copy) : "/";
        struct stat st;
        int bad = stat(dir, &st) != 0 || !S_ISDIR(st.st_mode);
        /* /run/mailwarden before the first start: the unit's RuntimeDirectory=
         * (or tmpfiles) creates it, so say so rather than refuse a config that
         * will work under the shipped unit */
        if (bad && strcmp(dir, "/run/mailwarden") == 0 && stat("/run", &st) == 0) {
            fprintf(stderr, "%s: warning: %s \"%s\": directory %s does not exist yet: the systemd unit "
                            "(RuntimeDirectory=) or tmpfiles.d creates it; started otherwise, create it first\n",
                    where, key, spec, dir);
            bad = 0;
        } else if (bad) {
            fprintf(stderr, "%s: %s \"%s\": directory %s does not exist: the socket cannot be created\n", where,
                    key, spec, dir);
        }
        free(copy);
        return bad;
    }
    const char *at = strchr(spec, '@');
    bool v6 = strncmp(spec, "inet6:", 6) == 0;
    if (at == NULL || (!v6 && strncmp(spec, "inet:", 5) != 0))
        return 0;
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        len = sizeof *a;
        if (inet_pton(AF_INET6, at + 1, &a->sin6_addr) != 1)
            return 0;   /* a host name: resolved when binding */
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        len = sizeof *a;
        if (inet_pton(AF_INET, at + 1, &a->sin_addr) != 1)
            return 0;
    }
    /* port 0: only the address is tested, never a port someone listens on */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int bad = bind(fd, (struct sockaddr *)&ss, len) != 0 && errno == EADDRNOTAVAIL;
    if (bad)
        fprintf(stderr, "%s: %s \"%s\": %s is not an address of this host: %s\n", where, key, spec, at + 1,
                strerror(EADDRNOTAVAIL));
    close(fd);
    return bad;
}

/* check_files as the daemon's user: in a child that drops privileges when
 * we are root and a user or group is configured.  The number of problems
 * (1 when the check itself failed). */
static int check_files_as_daemon(const mw_config *cfg, const mw_cli *cli, char *who, size_t wholen)
{
    mw_privs pv;
    char err[512];

    if (mw_privs_resolve(cfg->user, cfg->group, &pv, err, sizeof err) != 0) {
        fprintf(stderr, "user/group: %s\n", err);
        snprintf(who, wholen, "?");
        return 1;
    }
    snprintf(who, wholen, "user %s", pv.user);
    /* always in a child: building a runtime starts threads and connects */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        if (pv.change && mw_privs_drop(&pv, err, sizeof err) != 0) {
            fprintf(stderr, "cannot become %s: %s\n", who, err);
            _exit(1);
        }
        int n = check_files(cfg, cli, who);
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
    mw_cli_default_config(&cli);
    mw_config *cfg = mw_cli_load(&cli);
    if (!cfg)
        return 1;
    mw_config_errors errs = {0};
    mw_policy *pol = mw_policy_load_at(cfg->policy, cfg->policy_dir, mw_config_origin(cfg, "policy"), &errs);
    runtime_check = pol != NULL;   /* its error is printed here, once */
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    int rc = pol ? 0 : 1;
    char who[96];
    if (check_files_as_daemon(cfg, &cli, who, sizeof who) != 0)
        rc = 1;
    const char *where = cfg->path ? cfg->path : "(embedded defaults)";
    if (check_listener(where, "socket", cfg->socket) + check_listener(where, "exim.listen", cfg->exim_listen) +
            check_listener(where, "exim.rcpt_listen", cfg->exim_rcpt_listen) != 0)
        rc = 1;
    if (rc == 0)
        printf("%s: configuration OK (policy \"%s\"; key files and history.dir usable by %s)\n",
               cli.config_file ? cli.config_file : "(embedded defaults)", mw_policy_name(pol), who);
    mw_policy_free(&pol);
    mw_config_errors_free(&errs);
    mw_config_free(&cfg);
    return rc;
}
