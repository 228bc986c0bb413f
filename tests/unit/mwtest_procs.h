/*
 * mwtest_procs.h - the real servers unit tests talk to, started on loopback
 * by the test itself: tests/lib/testdns.py (scripted authoritative DNS) and
 * redis-server.  Each gets a private directory under /tmp, dies with the
 * test (PR_SET_PDEATHSIG) and is stopped by mwt_proc_stop().
 *
 *     mwt_proc dns;
 *     if (!mwt_testdns_start(&dns, "dmarc", ZONE_JSON))   // JSON zone text
 *         ...skip or fail...
 *     snprintf(fwd, sizeof fwd, "127.0.0.1@%d", dns.port);
 *     ...
 *     mwt_testdns_count(&dns, "_dmarc.example.com");     // queries seen
 *     mwt_proc_stop(&dns);
 *
 * A zone too long for a string literal is written by the test itself:
 * mwt_proc_dir() first, then write mwt_path(&p, "zone.json"), then
 * mwt_testdns_start(&p, tag, NULL).
 *
 * More than the defaults:
 *     mwt_testdns_start_args(&p, tag, zone, (const char *const[]){"--negttl", "2", NULL});
 *     mwt_testdns_lines(&p, "tcp tc.example.com");       // log lines containing it
 *     mwt_redis_start_args(&p, tag, 0, extra);   // extra redis-server arguments
 *     mwt_proc_kill(&p, SIGKILL);                // crash it; the directory stays
 *     mwt_redis_start_args(&p, tag, p.port, NULL);        // back on the same port
 *     mwt_sentinel_start(&s, tag, master.port, "mymaster");
 * (the redis parts with hiredis.h included first).
 *
 * Environment: MW_SOURCE_DIR (tests/lib/testdns.py is found there; else
 * next to this file), MW_TEST_PYTHON (default /usr/bin/python3: the pyenv
 * shim cannot see Debian's python3-dnslib), MW_REDIS_SERVER, MW_REDIS_SENTINEL.
 */
#ifndef MW_TEST_PROCS_H
#define MW_TEST_PROCS_H

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct mwt_proc {
    pid_t pid;        /* -1 when not running */
    int   port;       /* loopback port it listens on */
    char  dir[64];    /* private directory ("" before mwt_proc_dir) */
} mwt_proc;

static inline void mwt_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* dir/name into buf; returns buf. */
static inline const char *mwt_path(const mwt_proc *p, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", p->dir, name);
    return buf;
}

/* A fresh private directory /tmp/mw-test-TAG-XXXXXX (once per mwt_proc). */
static inline bool mwt_proc_dir(mwt_proc *p, const char *tag)
{
    if (p->dir[0])
        return true;
    p->pid = -1;
    snprintf(p->dir, sizeof p->dir, "/tmp/mw-test-%.20s-XXXXXX", tag);
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p->dir, strerror(errno));
        p->dir[0] = '\0';
        return false;
    }
    return true;
}

static inline bool mwt_write_file(const char *path, const char *data)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return false;
    }
    fputs(data, f);
    return fclose(f) == 0;
}

/* A TCP port free on 127.0.0.1 right now (for servers that cannot report
 * the one they bound). */
static inline int mwt_free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static inline int mwt_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Send sig (SIGKILL: a crash) and wait for the server; its directory stays,
 * so it can be started again in it.  Idempotent. */
static inline void mwt_proc_kill(mwt_proc *p, int sig)
{
    if (p->pid > 0) {
        kill(p->pid, sig);
        waitpid(p->pid, NULL, 0);
    }
    p->pid = -1;
}

/* Kill the server, wait for it, remove its directory.  Idempotent. */
static inline void mwt_proc_stop(mwt_proc *p)
{
    mwt_proc_kill(p, SIGTERM);
    if (p->dir[0])
        nftw(p->dir, mwt_rm_one, 8, FTW_DEPTH | FTW_PHYS);
    p->dir[0] = '\0';
}

/* Fork bin with argv (NULL-terminated) as the server p: it gets deathsig
 * when the test dies, and stream goes to the file redirect (NULL: kept). */
static inline bool mwt_spawn(mwt_proc *p, int deathsig, const char *redirect, FILE *stream,
                             const char *bin, const char *const *argv)
{
    p->pid = fork();
    if (p->pid < 0)
        return false;
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, deathsig);
        if (redirect && !freopen(redirect, "w", stream))
            _exit(127);
        execvp(bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    return true;
}

/*
 * Start tests/lib/testdns.py serving zone_json (the JSON zone format that
 * script documents; NULL: dir/zone.json is already written) on a loopback
 * port (p->port), logging every query to dir/log.  false (with a line on
 * stderr) when it does not come up within 10 s.  mwt_testdns_start_args:
 * with extra NULL-terminated arguments for the script ("--negttl", "2", NULL).
 */
static inline bool mwt_testdns_start_args(mwt_proc *p, const char *tag, const char *zone_json,
                                          const char *const *extra)
{
    char zone[128], portfile[128], logfile[128], script[600];
    const char *src = getenv("MW_SOURCE_DIR");
    const char *py = getenv("MW_TEST_PYTHON");

    if (!mwt_proc_dir(p, tag))
        return false;
    mwt_path(p, "zone.json", zone, sizeof zone);
    mwt_path(p, "port", portfile, sizeof portfile);
    mwt_path(p, "log", logfile, sizeof logfile);
    if (zone_json && !mwt_write_file(zone, zone_json))
        return false;
    if (src && *src) {
        snprintf(script, sizeof script, "%s/tests/lib/testdns.py", src);
    } else {
        char file[512];
        snprintf(file, sizeof file, "%s", __FILE__);
        snprintf(script, sizeof script, "%s/../lib/testdns.py", dirname(file));
    }
    if (!py || !*py)
        py = "/usr/bin/python3";
    const char *argv[40] = {py, script, "--port", "0", "--portfile", portfile, "--zone", zone, "-v"};
    size_t n = 9;
    for (; extra && *extra && n < sizeof argv / sizeof *argv - 1; extra++)
        argv[n++] = *extra;
    if (!mwt_spawn(p, SIGTERM, logfile, stderr, py, argv))
        return false;
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int ok = fscanf(f, "%d", &p->port);
            fclose(f);
            if (ok == 1 && p->port > 0)
                return true;
        }
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = -1;
            fprintf(stderr, "testdns exited; its log is %s\n", logfile);
            return false;
        }
        mwt_sleep_ms(20);
    }
    fprintf(stderr, "testdns did not report a port within 10 s\n");
    return false;
}

static inline bool mwt_testdns_start(mwt_proc *p, const char *tag, const char *zone_json)
{
    return mwt_testdns_start_args(p, tag, zone_json, NULL);
}

/* How many lines of the server's log contain s (any case)?  A looser
 * count than mwt_testdns_count, for "name. TYPE" or "tcp name". */
static inline int mwt_testdns_lines(const mwt_proc *p, const char *s)
{
    char logfile[128], line[1024];
    int n = 0;
    FILE *f = fopen(mwt_path(p, "log", logfile, sizeof logfile), "r");

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        n += strcasestr(line, s) != NULL;
    fclose(f);
    return n;
}

/* How many queries for exactly this name (any type, any case) has the
 * server logged?  One log line per query names it. */
static inline int mwt_testdns_count(const mwt_proc *p, const char *name)
{
    char logfile[128], line[1024];
    size_t len = strlen(name);
    int n = 0;
    FILE *f = fopen(mwt_path(p, "log", logfile, sizeof logfile), "r");

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        for (char *s = line; (s = strcasestr(s, name)) != NULL; s += len) {
            /* whole name: a blank or quote before, '.', blank or quote after */
            char before = s == line ? ' ' : s[-1];
            char after = s[len];
            if ((before == ' ' || before == '\'' || before == '"') &&
                (after == '.' || after == ' ' || after == '\'' || after == '"')) {
                n++;
                break;
            }
        }
    }
    fclose(f);
    return n;
}

/*
 * Start redis-server on a free loopback port (p->port), no persistence,
 * working directory dir.  The caller checks readiness with its own client
 * (mwt_redis_start below when it has hiredis).  mwt_redis_spawn_args: on
 * port (0: a free one; the same port again restarts a killed server in its
 * directory) with extra NULL-terminated arguments ("--requirepass", "pw",
 * NULL).
 */
static inline bool mwt_redis_spawn_args(mwt_proc *p, const char *tag, int port,
                                        const char *const *extra)
{
    char portbuf[16];
    const char *bin = getenv("MW_REDIS_SERVER");
    const char *argv[40] = {"redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", p->dir};
    size_t n = 11;

    if (!mwt_proc_dir(p, tag))
        return false;
    p->port = port > 0 ? port : mwt_free_port();
    if (p->port <= 0)
        return false;
    snprintf(portbuf, sizeof portbuf, "%d", p->port);
    for (; extra && *extra && n < sizeof argv / sizeof *argv - 1; extra++)
        argv[n++] = *extra;
    return mwt_spawn(p, SIGKILL, "/dev/null", stdout, bin && *bin ? bin : "redis-server", argv);
}

static inline bool mwt_redis_spawn(mwt_proc *p, const char *tag)
{
    return mwt_redis_spawn_args(p, tag, 0, NULL);
}

/*
 * Start redis-sentinel on a free loopback port (p->port) watching the
 * master on master_port as "name" (quorum 1, down after 1 s, failover
 * timeout 3 s); its config is dir/sentinel.conf.  MW_REDIS_SENTINEL.
 */
static inline bool mwt_sentinel_spawn(mwt_proc *p, const char *tag, int master_port,
                                      const char *name)
{
    char conf[128], text[600];
    const char *bin = getenv("MW_REDIS_SENTINEL");

    if (!mwt_proc_dir(p, tag))
        return false;
    p->port = mwt_free_port();
    if (p->port <= 0)
        return false;
    snprintf(text, sizeof text,
             "port %d\nbind 127.0.0.1\ndir %s\nlogfile %s/sentinel.log\n"
             "sentinel monitor %s 127.0.0.1 %d 1\n"
             "sentinel down-after-milliseconds %s 1000\n"
             "sentinel failover-timeout %s 3000\n"
             "sentinel parallel-syncs %s 1\n",
             p->port, p->dir, p->dir, name, master_port, name, name, name);
    if (!mwt_write_file(mwt_path(p, "sentinel.conf", conf, sizeof conf), text))
        return false;
    if (!bin || !*bin)
        bin = "redis-sentinel";
    return mwt_spawn(p, SIGKILL, NULL, NULL, bin, (const char *const[]){bin, conf, NULL});
}

#ifdef __HIREDIS_H
/* One command on a fresh connection (NULL when Redis does not answer). */
static inline redisReply *mwt_redis_cmd(const mwt_proc *p, int argc, const char **argv)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p->port, tv);
    redisReply *r = NULL;

    if (c && !c->err) {
        redisSetTimeout(c, tv);
        r = redisCommandArgv(c, argc, argv, NULL);
    }
    if (c)
        redisFree(c);
    return r;
}

/* Wait up to 5 s for a spawned server to answer PING (any answer: an
 * AUTH-protected server's NOAUTH error counts). */
static inline bool mwt_redis_wait(mwt_proc *p)
{
    const char *ping[] = {"PING"};

    for (int i = 0; i < 250; i++) {
        redisReply *r = mwt_redis_cmd(p, 1, ping);
        if (r) {
            freeReplyObject(r);
            return true;
        }
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = -1;
            break;
        }
        mwt_sleep_ms(20);
    }
    fprintf(stderr, "redis did not answer PING on port %d\n", p->port);
    return false;
}

/* mwt_redis_spawn(_args), then mwt_redis_wait. */
static inline bool mwt_redis_start_args(mwt_proc *p, const char *tag, int port,
                                        const char *const *extra)
{
    return mwt_redis_spawn_args(p, tag, port, extra) && mwt_redis_wait(p);
}

static inline bool mwt_redis_start(mwt_proc *p, const char *tag)
{
    return mwt_redis_start_args(p, tag, 0, NULL);
}

/* mwt_sentinel_spawn, then mwt_redis_wait. */
static inline bool mwt_sentinel_start(mwt_proc *p, const char *tag, int master_port,
                                      const char *name)
{
    return mwt_sentinel_spawn(p, tag, master_port, name) && mwt_redis_wait(p);
}
#endif

#endif
