/*
 * serve.c - `mailwarden serve`: the daemon.
 *
 * Process model (why): a crashed worker is restarted by a supervisor, so a
 * crash costs seconds of milter_default_action, not an outage.  (The split
 * was first needed because libmilter's signal thread treated SIGHUP as
 * "stop"; our own milter engine has no signal handling, the supervisor
 * stays for the restarts and the pid file.)  So serve is two processes:
 *   supervisor  validates the config (fail fast, FILE:LINE errors), writes
 *               the pid file, daemonises unless -f, and forwards signals:
 *               SIGHUP -> SIGUSR1 to the worker (reload), SIGTERM/SIGINT ->
 *               SIGUSR2 (graceful stop: drain, then stop the milter).  A
 *               worker that dies unexpectedly is restarted with backoff.
 *   worker      binds the milter (and Exim, metrics) sockets, drops
 *               privileges, then builds the engine (keys, history: all
 *               as the configured user), and runs the milter's accept
 *               loop.  A dedicated
 *               control thread sigwaits: SIGUSR1 (or SIGHUP sent to the
 *               worker directly) reloads atomically (a bad config is logged
 *               and the running one kept); SIGUSR2, SIGTERM or SIGINT stop
 *               gracefully: refuse new connections (tempfail), wait for
 *               in-flight messages (up to shutdown_timeout), then stop
 *               accepting and exit.  Exiting abandons open connections,
 *               hence this order.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "engine.h"
#include "log.h"
#include "exim.h"
#include "http_metrics.h"
#include "metrics.h"
#include "milter.h"
#include "privs.h"
#include "tools.h"

/* Readiness and state for systemd (Type=notify, NotifyAccess=all: the worker
 * is a child of the main PID).  Without libsystemd, or outside systemd
 * (no $NOTIFY_SOCKET), these do nothing. */
#ifdef MW_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#else
static int sd_notify(int unset_environment, const char *state)
{
    (void)unset_environment;
    (void)state;
    return 0;
}
static int sd_notifyf(int unset_environment, const char *format, ...) __attribute__((format(printf, 2, 3)));
static int sd_notifyf(int unset_environment, const char *format, ...)
{
    (void)unset_environment;
    (void)format;
    return 0;
}
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailwarden serve [-f] [-c FILE] [--socket SPEC] [--dns ADDR@PORT]...\n"
            "                        [--authserv-id ID] [--internal CIDR]... [--policy NAME]\n"
            "                        [--sign DOMAIN:SELECTOR:KEYFILE]... [--pid-file FILE]\n"
            "                        [--user USER] [--group GROUP] [--redis HOST:PORT]\n"
            "                        [--history DIR]\n"
            "Runs the milter.  SPEC: inet:PORT@HOST, inet6:PORT@HOST or unix:PATH.\n"
            "  -f, --foreground     stay in the foreground and log to stderr\n"
            "  -c, --config FILE    configuration (default " MW_DEFAULT_CONFIG " when it exists)\n"
            "  --socket SPEC        milter socket (socket)\n"
            "  --dns ADDR@PORT      forward DNS queries there (dns.forwarders; repeatable)\n"
            "  --authserv-id ID     authserv-id of Authentication-Results (authserv_id)\n"
            "  --internal CIDR      internal network (trust.internal_networks; repeatable)\n"
            "  --policy NAME        policy name or file (policy)\n"
            "  --sign D:S:KEYFILE   sign mail from D with this key (repeatable)\n"
            "  --pid-file FILE      PID file (pid_file)\n"
            "  --user USER          user to run as (user)\n"
            "  --group GROUP        group to run as (group)\n"
            "  --redis HOST:PORT    rate-limit and reputation state in Redis (state.backend)\n"
            "  --history DIR        DMARC history directory (history.dir)\n"
            "  -h, --help           this text\n"
            "Every option is also accepted as --opt=value.  SIGHUP reloads the\n"
            "configuration; SIGTERM finishes in-flight messages and exits.\n");
}

/* Set once by mw_cmd_serve before any fork or thread: -f given; the write
 * end of the pipe on which a worker tells the supervisor it listens (a pipe
 * and SIGIO, not a signal: the worker has dropped root by then and may not
 * signal the supervisor). */
static bool serve_foreground;
static int worker_ready_fd = -1;

static void apply_log(const mw_config *cfg)
{
    mw_log_target t = mw_log_resolve_auto(cfg->log_target, serve_foreground);
    if (!mw_log_configure(t, cfg->log_format, "mailwarden", cfg->log_facility, cfg->log_level))
        mw_warn("unknown log facility %s, using mail", cfg->log_facility);
}

static const char *config_name(const mw_config *cfg)
{
    return cfg->path ? cfg->path : "(none: embedded defaults)";
}

/* After start-up, a daemon's stdin, stdout and stderr go to /dev/null
 * (stderr is kept when it is the journal stream: the log goes there). */
static void detach_stdio(void)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    dup2(fd, 0);
    dup2(fd, 1);
    if (!mw_log_stderr_is_journal())
        dup2(fd, 2);
    if (fd > 2)
        close(fd);
    mw_log_copy_to_stderr(false);
}

/* ---------------- worker ---------------- */

struct reload_ctx {
    const mw_cli *cli;
    mw_engine    *engine;
    unsigned      shutdown_timeout;
};

/*
 * Graceful stop (SIGUSR2 from the supervisor, or SIGTERM/SIGINT to the
 * worker).  The worker's exit abandons sessions in progress, so we drain
 * first: refuse new connections with a temporary failure, wait for the
 * messages in flight to get their verdicts, and only then stop the milter.
 */
static void drain_and_stop(struct reload_ctx *rc)
{
    sd_notify(0, "STOPPING=1\nSTATUS=draining in-flight messages");
    mw_engine_set_draining(rc->engine);
    unsigned n = mw_engine_active_messages(rc->engine);
    if (n)
        mw_info("stopping: waiting up to %us for %u in-flight message(s)", rc->shutdown_timeout, n);
    if (!mw_engine_wait_idle(rc->engine, rc->shutdown_timeout * 1000))
        mw_warn("stopping with %u message(s) still in flight after %us",
                mw_engine_active_messages(rc->engine), rc->shutdown_timeout);
    mw_exim_stop(2000);
    mw_milter_stop();
}

static void *control_thread(void *arg)
{
    struct reload_ctx *rc = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR2 || sig == SIGTERM || sig == SIGINT) {
            drain_and_stop(rc);
            return NULL;
        }
        /* every path below ends with READY=1 again */
        sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
        mw_config_errors errs = {0};
        mw_config *cfg = mw_config_load(rc->cli->config_file, &rc->cli->ov, &errs);
        mw_info("reloading: reading %s", rc->cli->config_file ? rc->cli->config_file : "(embedded defaults)");
        if (!cfg) {
            for (size_t i = 0; i < errs.n; i++)
                mw_error("reload refused: %s", errs.msg[i]);
            mw_error("reload refused: configuration has %zu error(s); keeping the running configuration",
                     errs.n);
            mw_metric_inc(MW_M_CONFIG_RELOADS, MW_ML_RELOAD_FAILURE, 0);
            sd_notifyf(0, "READY=1\nSTATUS=reload refused (%zu config error(s)); generation %u running",
                       errs.n, mw_engine_generation(rc->engine));
            mw_config_errors_free(&errs);
            continue;
        }
        mw_config_errors_free(&errs);
        char err[512];
        if (!mw_engine_reload(rc->engine, cfg, err, sizeof err)) {
            mw_error("reload refused: %s; keeping the running configuration", err);
            mw_config_free(&cfg);   /* still ours: reload takes it only on success */
            sd_notifyf(0, "READY=1\nSTATUS=reload refused; generation %u running", mw_engine_generation(rc->engine));
            mw_metric_inc(MW_M_CONFIG_RELOADS, MW_ML_RELOAD_FAILURE, 0);
            continue;
        }
        mw_info("configuration reloaded (generation %u)", mw_engine_generation(rc->engine));
        sd_notifyf(0, "READY=1\nSTATUS=configuration generation %u", mw_engine_generation(rc->engine));
        mw_metric_inc(MW_M_CONFIG_RELOADS, MW_ML_RELOAD_SUCCESS, 0);
        mw_metric_gauge_set(MW_M_CONFIG_RELOAD_TIME, 0, (int64_t)time(NULL));
    }
    return NULL;
}

static int run_worker(const mw_cli *cli)
{
    /* glibc gives every thread that allocates its own arena (64 MiB of
     * address space, real pages for each); the milter runs a thread per
     * connection, so cap the arenas: measured 38.6 -> 33.5 MiB peak RSS
     * at 200 connections, no throughput change */
    mallopt(M_ARENA_MAX, 2);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    /* SIGUSR1/SIGHUP (reload) and SIGUSR2/SIGTERM/SIGINT (graceful stop)
     * are blocked in every thread created from here on (resolver,
     * connection threads), so only the control thread's sigwait takes
     * them; none is ever delivered with its default (terminate)
     * disposition. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGPIPE);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    mw_config_errors errs = {0};
    mw_config *cfg = mw_config_load(cli->config_file, &cli->ov, &errs);
    for (size_t i = 0; i < errs.n; i++)
        mw_error("cannot start: %s", errs.msg[i]);
    mw_config_errors_free(&errs);
    if (!cfg)
        return 1;
    apply_log(cfg);
    mw_info("starting: configuration %s, policy %s", config_name(cfg), cfg->policy);
    char err[512];
    /* Start-up order (docs/security.md): look the user up; bind every
     * listener as root (ports below 1024, sockets in root's directories);
     * give the unix sockets to the user and group; drop privileges; only
     * then build the engine, which reads the DKIM keys and creates the
     * history directory and files.  So everything on disk is created by
     * the user we run as, and start-up reads exactly what a SIGHUP reload
     * (which runs as that user) will read: a key or directory the user
     * cannot use fails the start, not the first reload or rotation. */
    mw_privs pv;
    if (mw_privs_resolve(cfg->user, cfg->group, &pv, err, sizeof err) != 0) {
        mw_error("cannot start: %s", err);
        mw_config_free(&cfg);
        return 1;
    }
    mw_milter_options mo = {.socket = cfg->socket, .socket_mode = cfg->socket_mode, .timeout = cfg->milter_timeout,
                            .command_timeout = cfg->milter_command_timeout,
                            .max_connections = cfg->milter_max_connections};
    char *sock = strdup(cfg->socket);
    unsigned shutdown_timeout = cfg->shutdown_timeout;
    mo.socket = sock;
    mw_exim_options xo = {.scan_socket = cfg->exim_listen, .rcpt_socket = cfg->exim_rcpt_listen,
                          .socket_mode = cfg->socket_mode, .allow_peers = cfg->exim_allow_peers,
                          .max_connections = cfg->exim_max_connections,
                          .rcpt_max_connections = cfg->exim_rcpt_max_connections,
                          .request_timeout = cfg->exim_request_timeout, .rcpt_timeout = cfg->exim_rcpt_timeout};
    char *metrics_listen = strdup(cfg->metrics_listen);   /* cfg belongs to the engine below */
    mw_http_metrics_options ho = {.listen = metrics_listen, .max_connections = cfg->metrics_max_connections,
                                  .timeout_s = cfg->metrics_timeout_s};
    mw_engine *e = mw_engine_new();   /* its configuration comes after the drop */
    if (!mw_milter_open(e, &mo, err, sizeof err) || !mw_exim_open(e, &xo, err, sizeof err) ||
        !mw_http_metrics_open(e, &ho, err, sizeof err) || mw_privs_chown_socket(&pv, sock, err, sizeof err) ||
        mw_privs_chown_socket(&pv, cfg->exim_listen, err, sizeof err) ||
        mw_privs_chown_socket(&pv, cfg->exim_rcpt_listen, err, sizeof err)) {
        mw_error("cannot start: %s", err);
        goto fail;
    }
    if (mw_privs_drop(&pv, err, sizeof err) != 0) {
        mw_error("cannot drop privileges: %s", err);
        goto fail;
    }
    if (pv.change)
        mw_info("running as user %s (uid %u), group %s (gid %u)", pv.user, (unsigned)pv.uid, pv.group,
                (unsigned)pv.gid);
    if (geteuid() == 0)
        mw_warn("running as root: set `user` (and `group`) in the configuration so that the daemon drops "
                "privileges after binding its sockets");
    if (!mw_engine_reload(e, cfg, err, sizeof err)) {
        if (pv.change)
            mw_error("cannot start: %s (running as user %s: the DKIM key files, the history directory and "
                     "every file the configuration names must be usable by that user, at start and at "
                     "every reload)", err, pv.user);
        else
            mw_error("cannot start: %s", err);
        goto fail;
    }
    cfg = NULL;   /* the engine's now */
    mw_metric_gauge_set(MW_M_CONFIG_RELOAD_TIME, 0, (int64_t)time(NULL));
    struct reload_ctx rc = {cli, e, shutdown_timeout};
    pthread_t th;
    if (pthread_create(&th, NULL, control_thread, &rc) != 0) {
        mw_error("cannot start control thread");
        goto fail;
    }
    pthread_detach(th);
    if (!mw_exim_start(err, sizeof err)) {
        mw_error("cannot start: %s", err);
        goto fail;
    }
    if (!mw_http_metrics_start(err, sizeof err)) {
        mw_error("cannot start: %s", err);
        goto fail;
    }
    mw_info("listening on %s (pid %d)", sock, (int)getpid());
    /* the milter socket is bound and listening (mw_milter_open), the
     * Exim listeners accept: ready */
    sd_notifyf(0, "READY=1\nSTATUS=listening on %s", sock);
    /* tell the supervisor (which then lets the command that started a
     * daemon exit 0); a daemon lets go of the terminal */
    if (worker_ready_fd >= 0) {
        ssize_t w = write(worker_ready_fd, "R", 1);
        (void)w;
    }
    if (!serve_foreground)
        detach_stdio();
    int rcode = mw_milter_run();
    mw_info("stopped");
    /* The engine is not destroyed: milter connection threads may still be
     * unwinding, and process exit frees everything. */
    mw_http_metrics_stop();
    free(sock);
    free(metrics_listen);
    return rcode;
fail:
    /* a worker that cannot start exits 1 (the supervisor reports it); it
     * frees what it owns so a sanitizer build exits 1 too, not on a leak */
    mw_config_free(&cfg);
    free(sock);
    free(metrics_listen);
    return 1;
}

/* ---------------- supervisor ---------------- */

static int write_pid_file(const char *path)
{
    if (!path || !*path)
        return 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/*
 * Detach: the command that was run waits (on a pipe) until the first worker
 * is listening, and exits 0 then, or 1 when start-up failed (the reason is
 * on its stderr, which the daemon keeps until then, and in the log).  The
 * write end stays in the daemon: its descriptor is returned in *ready_fd.
 */
static int daemonize(int *ready_fd)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return -1;
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p > 0) {
        close(pfd[1]);
        char c = 0;
        ssize_t n;
        while ((n = read(pfd[0], &c, 1)) < 0 && errno == EINTR)
            ;
        _exit(n == 1 && c == 'R' ? 0 : 1);
    }
    close(pfd[0]);
    setsid();
    p = fork();
    if (p < 0)
        return -1;
    if (p > 0)
        _exit(0);
    if (chdir("/") != 0)
        return -1;
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (fd > 2)
            close(fd);
    }
    *ready_fd = pfd[1];
    return 0;
}

static pid_t spawn_worker(const mw_cli *cli, const sigset_t *oldmask)
{
    pid_t p = fork();
    if (p == 0) {
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        signal(SIGCHLD, SIG_DFL);
        int rc = run_worker(cli);
#if defined(__SANITIZE_ADDRESS__)
        /* _exit skips LeakSanitizer's atexit check: run it here so the
         * sanitizer build checks the worker too */
        __lsan_do_leak_check();
#endif
        _exit(rc);
    }
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int mw_cmd_serve(int argc, char **argv)
{
    mw_cli cli = {0};
    bool foreground = false;
    for (int i = 1; i < argc; i++) {
        int r = mw_cli_common(&cli, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--foreground") == 0) {
            foreground = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mailwarden serve: unknown argument %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    serve_foreground = foreground;
    if (foreground)
        cli.ov.log_stderr = 1;
    /* -c given relative is already absolute (cli.c): the worker reads it
     * again after the chdir("/") of daemonising */
    mw_cli_default_config(&cli);
    /* Fail fast: a bad config never gets as far as forking. */
    mw_config *cfg = mw_cli_load(&cli);
    if (!cfg) {
        fprintf(stderr, "mailwarden: configuration errors in %s, not starting\n",
                cli.config_file ? cli.config_file : "(embedded defaults)");
        return 1;
    }
    apply_log(cfg);
    if (!foreground)
        mw_log_copy_to_stderr(true);   /* until the worker listens */
    char *pid_file = cfg->pid_file && *cfg->pid_file ? strdup(cfg->pid_file) : NULL;
    mw_config_free(&cfg);

    int ready_fd = -1;
    if (!foreground && daemonize(&ready_fd) != 0) {
        mw_error_errno("cannot daemonise");
        return 1;
    }
    if (pid_file && write_pid_file(pid_file) != 0) {
        mw_error_errno("cannot write pid file %s", pid_file);
        return 1;
    }

    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGIO);   /* a worker wrote to the ready pipe: it listens */
    sigprocmask(SIG_BLOCK, &set, &old);
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) != 0 || fcntl(rp[0], F_SETOWN, getpid()) != 0 ||
        fcntl(rp[0], F_SETFL, O_NONBLOCK | O_ASYNC) != 0) {
        mw_error_errno("cannot set up the worker's ready pipe");
        return 1;
    }
    worker_ready_fd = rp[1];

    unsigned backoff = 1;
    bool ever_ready = false;   /* a worker has listened */
    double started = now_s();
    pid_t worker = spawn_worker(&cli, &old);
    int status = 0;
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig < 0)
            continue;
        if (sig == SIGIO) {
            char rb[64];
            ssize_t n = 0;
            while (read(rp[0], rb, sizeof rb) > 0)
                n++;
            if (n > 0 && !ever_ready) {
                ever_ready = true;
                if (ready_fd >= 0) {
                    ssize_t w = write(ready_fd, "R", 1);
                    (void)w;
                    close(ready_fd);
                    ready_fd = -1;
                    detach_stdio();
                }
            }
        } else if (sig == SIGHUP) {
            if (worker > 0) {
                mw_info("SIGHUP: reloading configuration");
                kill(worker, SIGUSR1);
            }
        } else if (sig == SIGTERM || sig == SIGINT) {
            mw_info("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            sd_notify(0, "STOPPING=1");
            if (worker > 0) {
                kill(worker, SIGUSR2);   /* graceful: drain, then stop */
                while (waitpid(worker, &status, 0) < 0 && errno == EINTR)
                    ;
            }
            break;
        } else if (sig == SIGCHLD) {
            pid_t p;
            while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
                if (p != worker)
                    continue;
                worker = -1;
                /* exit status 1 is a start-up failure (configuration, sockets,
                 * keys): the first worker's, or a restarted one's right away */
                if (WIFEXITED(status) && WEXITSTATUS(status) == 1 && (!ever_ready || now_s() - started < 2)) {
                    mw_error("worker failed at start-up (reason logged above); giving up");
                    goto out;
                }
                if (WIFSIGNALED(status))
                    mw_error("worker died with signal %d; restarting in %us", WTERMSIG(status), backoff);
                else
                    mw_error("worker exited with status %d; restarting in %us", WEXITSTATUS(status), backoff);
                /* sleep with signals still deliverable via sigtimedwait */
                struct timespec ts = {.tv_sec = backoff, .tv_nsec = 0};
                siginfo_t si;
                int s2 = sigtimedwait(&set, &si, &ts);
                if (s2 == SIGTERM || s2 == SIGINT)
                    goto out;
                if (now_s() - started > 60)
                    backoff = 1;
                else if (backoff < 30)
                    backoff *= 2;
                started = now_s();
                worker = spawn_worker(&cli, &old);
            }
        }
    }
out:
    if (pid_file)
        unlink(pid_file);
    free(pid_file);
    mw_info("exiting");
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 0;
}
