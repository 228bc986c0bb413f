/*
 * test_checks_history.c - unit tests of the DMARC history (checks/history.c):
 * round trip of every field, torn and corrupt lines detected and counted,
 * concurrent appenders, rotation and the read window, refusal of symlinks,
 * a full disk, and a child appending in a loop that is SIGKILLed again
 * and again: everything read back is whole, and every record the child
 * saw synced is there.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "alloc.h"
#include "buf.h"
#include "history.h"
#include "mwtest.h"

static char base[] = "/tmp/mw-test-history-XXXXXX";

/* ---- helpers ------------------------------------------------------------------ */

static char *newdir(const char *name)
{
    mw_buf b = MW_BUF_INIT;
    mw_buf_printf(&b, "%s/%s", base, name);
    return mw_buf_steal(&b);
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        mw_buf p = MW_BUF_INIT;
        mw_buf_printf(&p, "%s/%s", dir, e->d_name);
        if (unlink(mw_buf_cstr(&p)) != 0)
            rm_rf(mw_buf_cstr(&p));
        mw_buf_free(&p);
    }
    closedir(d);
    rmdir(dir);
}

/* The (only, or first) history file in dir. */
static char *first_file(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char *best = NULL;

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "history-", 8) != 0)
            continue;
        if (best == NULL || strcmp(e->d_name, best + strlen(dir) + 1) < 0) {
            free(best);
            mw_buf p = MW_BUF_INIT;
            mw_buf_printf(&p, "%s/%s", dir, e->d_name);
            best = mw_buf_steal(&p);
        }
    }
    if (d)
        closedir(d);
    return best;
}

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    while (d != NULL && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "history-", 8) == 0;
    if (d)
        closedir(d);
    return n;
}

static mw_history_record simple(time_t t, const char *tag)
{
    mw_history_record r;
    memset(&r, 0, sizeof r);
    r.time = t;
    r.header_from = (char *)tag;
    r.source_ip = (char *)"192.0.2.1";
    r.disposition = (char *)"none";
    return r;
}

typedef struct collect {
    mw_history_record *v;
    size_t n;
} collect;

static void copy_str(char **dst, const char *src) { *dst = src ? mw_strdup(src) : NULL; }

static bool collect_cb(const mw_history_record *r, void *arg)
{
    collect *c = arg;
    mw_history_record *d;

    c->v = mw_reallocarray(c->v, c->n + 1, sizeof *c->v);
    d = &c->v[c->n++];
    memset(d, 0, sizeof *d);
    d->time = r->time;
    copy_str(&d->header_from, r->header_from);
    copy_str(&d->envelope_to, r->envelope_to);
    copy_str(&d->source_ip, r->source_ip);
    return true;
}

static void collect_free(collect *c)
{
    for (size_t i = 0; i < c->n; i++)
        mw_history_record_clear(&c->v[i]);
    free(c->v);
    memset(c, 0, sizeof *c);
}

static mw_history_stats read_all(const char *dir, collect *c)
{
    mw_history_stats st;
    char err[256];

    memset(&st, 0, sizeof st);
    MW_TEST_ASSERT(mw_history_read(dir, 0, (time_t)1 << 40, collect_cb, c, &st, err, sizeof err));
    return st;
}

/* ---- tests ------------------------------------------------------------------------ */

static const mw_history_record *g_full;
static bool g_seen;

static bool full_cb(const mw_history_record *r, void *arg)
{
    const mw_history_record *w = g_full;
    (void)arg;
    g_seen = true;
    MW_TEST_EQ_INT(r->time, w->time);
    MW_TEST_EQ_STR(r->source_ip, w->source_ip);
    MW_TEST_EQ_STR(r->header_from, w->header_from);
    MW_TEST_EQ_STR(r->envelope_from, w->envelope_from);
    MW_TEST_EQ_STR(r->envelope_to, w->envelope_to);
    MW_TEST_EQ_STR(r->spf_domain, w->spf_domain);
    MW_TEST_EQ_STR(r->spf_scope, w->spf_scope);
    MW_TEST_EQ_STR(r->spf_result, w->spf_result);
    if (MW_TEST_EQ_INT(r->ndkim, w->ndkim)) {
        for (size_t i = 0; i < r->ndkim; i++) {
            MW_TEST_EQ_STR(r->dkim[i].domain, w->dkim[i].domain);
            MW_TEST_EQ_STR(r->dkim[i].selector, w->dkim[i].selector);
            MW_TEST_EQ_STR(r->dkim[i].result, w->dkim[i].result);
        }
    }
    MW_TEST_EQ_STR(r->policy_domain, w->policy_domain);
    MW_TEST_EQ_STR(r->p, w->p);
    MW_TEST_EQ_STR(r->sp, w->sp);
    MW_TEST_EQ_STR(r->np, w->np);
    MW_TEST_EQ_STR(r->adkim, w->adkim);
    MW_TEST_EQ_STR(r->aspf, w->aspf);
    MW_TEST_EQ_STR(r->t, w->t);
    MW_TEST_EQ_STR(r->psd, w->psd);
    MW_TEST_EQ_STR(r->discovery, w->discovery);
    MW_TEST_EQ_STR(r->disposition, w->disposition);
    MW_TEST_EQ_STR(r->dkim_aligned, w->dkim_aligned);
    MW_TEST_EQ_STR(r->spf_aligned, w->spf_aligned);
    MW_TEST_EQ_STR(r->override, w->override);
    MW_TEST_EQ_STR(r->reporter_host, w->reporter_host);
    for (size_t i = 0; w->rua[i] != NULL; i++)
        MW_TEST_EQ_STR(r->rua[i], w->rua[i]);
    MW_TEST_ASSERT(r->rua != NULL && r->rua[2] == NULL);
    return true;
}

static void test_round_trip(void)
{
    char *dir = newdir("rt");
    char err[256];
    mw_history_dkim dk[3] = {
        {(char *)"example.com", (char *)"s2024", (char *)"pass"},
        {(char *)"list.example.org", (char *)"k\"ey\\1", (char *)"fail"},
        {(char *)"x.example", NULL, (char *)"temperror"},
    };
    char *rua[] = {(char *)"mailto:dmarc@example.com", (char *)"mailto:a,b@x.example!10m", NULL};
    mw_history_record r = {
        .time = 0, .source_ip = (char *)"2001:db8::1",
        .header_from = (char *)"ex\tample.com\n\"quoted\" \\ \x01\x7f\xc3\xa9\xff",
        .envelope_from = (char *)"", .envelope_to = (char *)"rcpt.example",
        .spf_domain = (char *)"bounce.example.com", .spf_scope = (char *)"mfrom",
        .spf_result = (char *)"pass", .dkim = dk, .ndkim = 3,
        .policy_domain = (char *)"example.com", .p = (char *)"reject", .sp = (char *)"quarantine",
        .np = (char *)"reject", .adkim = (char *)"r", .aspf = (char *)"s", .t = (char *)"n",
        .psd = (char *)"u", .discovery = (char *)"treewalk", .disposition = (char *)"reject",
        .dkim_aligned = (char *)"pass", .spf_aligned = (char *)"fail",
        .override = (char *)"local_policy never_reject", .rua = rua,
        .reporter_host = (char *)"mx1.example.net",
    };
    mw_history_options o = {.fsync_interval_ms = 0, .rotate_seconds = 3600};
    mw_history *h = mw_history_open(dir, &o, err, sizeof err);
    mw_history_stats st;

    if (!MW_TEST_ASSERT(h != NULL)) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    /* Record times are evaluation times, close to the append (the reader
     * skips files by name with some slack only). */
    time_t t = time(NULL) - 100;
    r.time = t;
    MW_TEST_ASSERT(mw_history_append(h, &r));
    MW_TEST_EQ_INT(mw_history_synced(h), 1);   /* fsync_interval 0: synced on append */
    /* Minimal record: NULL fields stay NULL, empty arrays come back empty. */
    mw_history_record m = simple(t + 1, "min.example");
    MW_TEST_ASSERT(mw_history_append(h, &m));
    mw_history_close(&h);

    /* The file: mode 0640, one line per record, pure ASCII. */
    char *f = first_file(dir);
    struct stat sb;
    MW_TEST_ASSERT(f != NULL && stat(f, &sb) == 0 && (sb.st_mode & 0777) == (0640 & ~(mode_t)umask(022)));
    umask(022);
    FILE *fp = fopen(f, "r");
    int c, lines = 0;
    bool ascii = true;
    while (fp && (c = fgetc(fp)) != EOF) {
        lines += c == '\n';
        ascii = ascii && c < 0x7f && (c >= 0x20 || c == '\n');
    }
    if (fp)
        fclose(fp);
    MW_TEST_EQ_INT(lines, 2);
    MW_TEST_ASSERT(ascii);
    free(f);

    g_full = &r;
    memset(&st, 0, sizeof st);
    MW_TEST_ASSERT(mw_history_read(dir, t, t + 1, full_cb, NULL, &st, err, sizeof err));
    MW_TEST_ASSERT(g_seen);
    MW_TEST_EQ_INT(st.records, 1);   /* the window excludes the second */
    MW_TEST_EQ_INT(st.files, 1);

    collect col = {0};
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    MW_TEST_EQ_INT(st.torn + st.bad_checksum + st.bad_version, 0);
    if (MW_TEST_EQ_INT(col.n, 2)) {
        MW_TEST_EQ_STR(col.v[1].header_from, "min.example");
        MW_TEST_EQ_STR(col.v[1].envelope_to, NULL);
    }
    collect_free(&col);
    rm_rf(dir);
    free(dir);
}

static void append_n(const char *dir, int n, const char *tag, unsigned fsync_ms)
{
    char err[256];
    mw_history_options o = {.fsync_interval_ms = fsync_ms, .rotate_seconds = 3600};
    mw_history *h = mw_history_open(dir, &o, err, sizeof err);
    char buf[64];

    if (!MW_TEST_ASSERT(h != NULL))
        return;
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%s-%d.example", tag, i);
        mw_history_record r = simple(time(NULL), buf);
        MW_TEST_ASSERT(mw_history_append(h, &r));
    }
    mw_history_close(&h);
}

static void test_torn_and_corrupt(void)
{
    char *dir = newdir("torn");
    collect col = {0};
    mw_history_stats st;
    struct stat sb;

    append_n(dir, 3, "a", 1000);
    char *f = first_file(dir);
    if (!MW_TEST_ASSERT(f != NULL && stat(f, &sb) == 0))
        return;
    /* Cut the last line in the middle. */
    MW_TEST_ASSERT(truncate(f, sb.st_size - 20) == 0);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    MW_TEST_EQ_INT(st.torn, 1);
    MW_TEST_EQ_INT(st.bad_checksum, 0);
    collect_free(&col);

    /* A new writer ends the torn line first: the next record is intact. */
    append_n(dir, 1, "b", 1000);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 3);
    MW_TEST_EQ_INT(st.torn, 1);
    if (MW_TEST_EQ_INT(col.n, 3))
        MW_TEST_EQ_STR(col.v[2].header_from, "b-0.example");
    collect_free(&col);

    /* Flip one byte inside the first record's JSON: bad checksum. */
    int fd = open(f, O_RDWR);
    char c;
    MW_TEST_ASSERT(pread(fd, &c, 1, 40) == 1);
    c ^= 0x01;
    MW_TEST_ASSERT(pwrite(fd, &c, 1, 40) == 1);
    close(fd);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    MW_TEST_EQ_INT(st.bad_checksum, 1);
    MW_TEST_EQ_INT(st.torn, 1);
    collect_free(&col);

    /* A whole line of another version (valid checksum): bad version.  The
     * CRC32C of "MWH2 10 {\"time\":1}" computed by this test's own table. */
    uint32_t tbl[256], crc = 0xffffffffu;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t x = i;
        for (int k = 0; k < 8; k++)
            x = (x & 1) ? (x >> 1) ^ 0x82F63B78u : x >> 1;
        tbl[i] = x;
    }
    const char *pre = "MWH2 10 ", *json = "{\"time\":1}";
    for (const char *p = pre; *p; p++)
        crc = tbl[(crc ^ (unsigned char)*p) & 0xff] ^ (crc >> 8);
    for (const char *p = json; *p; p++)
        crc = tbl[(crc ^ (unsigned char)*p) & 0xff] ^ (crc >> 8);
    crc = ~crc;
    FILE *fp = fopen(f, "a");
    fprintf(fp, "MWH2 10 %08x %s\n", crc, json);
    /* Garbage, zeros (a crash after power loss), an empty line. */
    fputs("garbage line\n", fp);
    fwrite("\0\0\0\0\n", 1, 5, fp);
    fputs("\n", fp);
    /* A fragment glued to a whole record: re-synchronised. */
    fputs("MWH1 0000", fp);
    fclose(fp);
    append_n(dir, 1, "glued", 1000);   /* the writer ends the fragment with '\n' */
    fp = fopen(f, "a");
    fputs("MWH1 dead", fp);
    fclose(fp);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 3);
    MW_TEST_EQ_INT(st.bad_version, 1);
    MW_TEST_EQ_INT(st.bad_checksum, 1);
    MW_TEST_EQ_INT(st.torn, 1 + 2 + 1 + 1);   /* first cut, garbage, zeros, fragment, last */
    collect_free(&col);
    free(f);
    rm_rf(dir);
    free(dir);
}

static void test_resync(void)
{
    char *dir = newdir("resync");
    collect col = {0};
    mw_history_stats st;

    append_n(dir, 1, "one", 1000);
    char *f = first_file(dir);
    /* Read the good line, write "fragment" + good line as one line. */
    FILE *fp = fopen(f, "r");
    char line[4096];
    MW_TEST_ASSERT(fp && fgets(line, sizeof line, fp));
    fclose(fp);
    fp = fopen(f, "a");
    fprintf(fp, "MWH1 99 12345678 {\"time\":%s", line);
    fclose(fp);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    MW_TEST_EQ_INT(st.torn, 1);
    collect_free(&col);
    free(f);
    rm_rf(dir);
    free(dir);
}

/* 8 threads x 400 appends on one writer. */
#define NTHREADS 8
#define PER_THREAD 400
static mw_history *g_h;

static void *appender(void *arg)
{
    long id = (long)arg;
    char tag[64];

    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(tag, sizeof tag, "t%ld-%d.example", id, i);
        mw_history_record r = simple(time(NULL), tag);
        /* vary the length so lines straddle page boundaries */
        char pad[300];
        memset(pad, 'x', sizeof pad - 1);
        pad[(i * 37 + id * 11) % (sizeof pad - 1)] = '\0';
        r.override = pad;
        if (!mw_history_append(g_h, &r))
            MW_TEST_ASSERT(!"append failed");
    }
    return NULL;
}

static void test_concurrent(void)
{
    char *dir = newdir("conc");
    char err[256];
    mw_history_options o = {.fsync_interval_ms = 5, .rotate_seconds = 3600};
    pthread_t t[NTHREADS];
    collect col = {0};
    mw_history_stats st;

    g_h = mw_history_open(dir, &o, err, sizeof err);
    if (!MW_TEST_ASSERT(g_h != NULL))
        return;
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, appender, (void *)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    mw_history_sync(g_h);
    MW_TEST_EQ_INT(mw_history_synced(g_h), NTHREADS * PER_THREAD);
    mw_history_close(&g_h);

    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, NTHREADS * PER_THREAD);
    MW_TEST_EQ_INT(st.torn + st.bad_checksum + st.bad_version, 0);
    /* every (thread, i) exactly once, in order per thread */
    int next[NTHREADS] = {0};
    bool order = true;
    for (size_t i = 0; i < col.n; i++) {
        long id;
        int k;
        if (sscanf(col.v[i].header_from, "t%ld-%d", &id, &k) != 2 || id < 0 || id >= NTHREADS) {
            order = false;
            continue;
        }
        order = order && k == next[id];
        next[id] = k + 1;
    }
    MW_TEST_ASSERT(order);
    for (int i = 0; i < NTHREADS; i++)
        MW_TEST_EQ_INT(next[i], PER_THREAD);
    collect_free(&col);
    rm_rf(dir);
    free(dir);
}

static void test_rotation_and_window(void)
{
    char *dir = newdir("rot");
    char err[256];
    mw_history_options o = {.fsync_interval_ms = 1000, .rotate_seconds = 1};
    mw_history *h = mw_history_open(dir, &o, err, sizeof err);
    collect col = {0};
    mw_history_stats st;

    if (!MW_TEST_ASSERT(h != NULL))
        return;
    time_t t0 = time(NULL);
    mw_history_record r = simple(t0, "first.example");
    MW_TEST_ASSERT(mw_history_append(h, &r));
    while (time(NULL) == t0)
        usleep(20000);
    r = simple(time(NULL), "second.example");
    MW_TEST_ASSERT(mw_history_append(h, &r));
    /* Rotation synced the first file's record. */
    MW_TEST_ASSERT(mw_history_synced(h) >= 1);
    mw_history_close(&h);
    MW_TEST_EQ_INT(mw_history_synced(h), 0);   /* NULL handle after close: 0 */
    MW_TEST_ASSERT(count_files(dir) >= 2);

    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    MW_TEST_ASSERT(st.files >= 2);
    collect_free(&col);

    /* Window: only the first record. */
    memset(&st, 0, sizeof st);
    MW_TEST_ASSERT(mw_history_read(dir, t0, t0 + 1, collect_cb, &col, &st, err, sizeof err));
    MW_TEST_EQ_INT(col.n, 1);
    collect_free(&col);
    /* A window far in the past: files skipped by name, nothing read. */
    MW_TEST_ASSERT(mw_history_read(dir, 0, 1000000, collect_cb, &col, &st, err, sizeof err));
    MW_TEST_EQ_INT(st.files, 0);
    MW_TEST_EQ_INT(col.n, 0);
    /* Foreign files are ignored. */
    mw_buf p = MW_BUF_INIT;
    mw_buf_printf(&p, "%s/notes.txt", dir);
    FILE *fp = fopen(mw_buf_cstr(&p), "w");
    fputs("hello\n", fp);
    fclose(fp);
    mw_buf_free(&p);
    st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.records, 2);
    collect_free(&col);
    rm_rf(dir);
    free(dir);
}

static void test_refusals(void)
{
    char *dir = newdir("sym");
    char err[256], name[64];
    mw_history_options o = {.fsync_interval_ms = 1000, .rotate_seconds = 3600};
    time_t now = time(NULL), period = now - now % 3600;
    struct tm tm;

    /* The period's file is a symlink: refused (O_NOFOLLOW). */
    mkdir(dir, 0750);
    gmtime_r(&period, &tm);
    strftime(name, sizeof name, "history-%Y%m%d%H%M%S.log", &tm);
    mw_buf p = MW_BUF_INIT;
    mw_buf_printf(&p, "%s/%s", dir, name);
    MW_TEST_ASSERT(symlink("/tmp/mw-history-target-never", mw_buf_cstr(&p)) == 0);
    mw_history *h = mw_history_open(dir, &o, err, sizeof err);
    MW_TEST_ASSERT(h == NULL);
    MW_TEST_ASSERT(access("/tmp/mw-history-target-never", F_OK) != 0);
    mw_history_close(&h);
    mw_buf_free(&p);
    rm_rf(dir);
    free(dir);

    /* A file instead of a directory. */
    dir = newdir("afile");
    FILE *fp = fopen(dir, "w");
    fclose(fp);
    h = mw_history_open(dir, &o, err, sizeof err);
    MW_TEST_ASSERT(h == NULL && strstr(err, dir) != NULL);
    unlink(dir);
    free(dir);

    /* A full disk (RLIMIT_FSIZE in a child): append returns false. */
    dir = newdir("full");
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {2000, 2000};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        h = mw_history_open(dir, &o, err, sizeof err);
        if (h == NULL)
            _exit(2);
        int ok = 0, failed = 0;
        for (int i = 0; i < 50; i++) {
            mw_history_record r = simple(time(NULL), "full.example");
            if (mw_history_append(h, &r))
                ok++;
            else
                failed++;
        }
        mw_history_close(&h);
        _exit(ok > 0 && failed > 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    MW_TEST_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    collect col = {0};
    mw_history_stats st = read_all(dir, &col);
    MW_TEST_ASSERT(st.records > 0);
    MW_TEST_EQ_INT(st.bad_checksum, 0);
    MW_TEST_ASSERT(st.torn <= 1);
    collect_free(&col);
    rm_rf(dir);
    free(dir);
}

/*
 * kill -9 in a loop.  The child appends records "run<R>-<i>" as fast as
 * it can (fsync from the flusher every 10 ms) and, whenever
 * mw_history_synced() grows, writes the synced count to a pipe.  The
 * parent kills it at a random moment, then checks: no bad checksum, at
 * most one torn line per kill, and every record up to the last reported
 * synced count is present.
 */
static void child_loop(const char *dir, int run, int wfd)
{
    char err[256], tag[64];
    mw_history_options o = {.fsync_interval_ms = 10, .rotate_seconds = 3600};
    mw_history *h = mw_history_open(dir, &o, err, sizeof err);
    uint64_t reported = 0;

    if (h == NULL)
        _exit(3);
    for (int i = 1;; i++) {
        snprintf(tag, sizeof tag, "run%d-%d.example", run, i);
        mw_history_record r = simple(time(NULL), tag);
        static char pad[16000];   /* long lines: a kill can land inside write(2) */
        memset(pad, 'y', sizeof pad - 1);
        pad[(size_t)(i * 131) % (sizeof pad - 1)] = '\0';
        r.override = pad;
        if (!mw_history_append(h, &r))
            _exit(4);
        uint64_t s = mw_history_synced(h);
        if (s > reported) {
            reported = s;
            if (write(wfd, &s, sizeof s) != sizeof s)
                _exit(5);
        }
    }
}

#define KILL_RUNS 12

static void test_kill9(void)
{
    char *dir = newdir("kill");
    uint64_t synced[KILL_RUNS] = {0};
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

    fprintf(stderr, "  (seed %u)\n", seed);
    srand(seed);
    for (int run = 0; run < KILL_RUNS; run++) {
        int pfd[2];
        MW_TEST_ASSERT(pipe(pfd) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            child_loop(dir, run, pfd[1]);
        }
        close(pfd[1]);
        if (run % 2 == 1) {
            /* Odd runs kill only after the child reported a sync: the
             * "flusher did run" check below then depends on an event, not
             * on fsync finishing within 20-170 ms on a busy disk (30 s cap:
             * a flusher that never runs fails it). */
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            uint64_t s;
            if (poll(&p, 1, 30000) == 1 && read(pfd[0], &s, sizeof s) == sizeof s)
                synced[run] = s;
        }
        usleep(20000 + (useconds_t)(rand() % 150000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        MW_TEST_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        uint64_t s;
        while (read(pfd[0], &s, sizeof s) == sizeof s)
            synced[run] = s;
        close(pfd[0]);
    }

    collect col = {0};
    mw_history_stats st = read_all(dir, &col);
    MW_TEST_EQ_INT(st.bad_checksum, 0);
    MW_TEST_EQ_INT(st.bad_version, 0);
    MW_TEST_ASSERT(st.torn <= KILL_RUNS);
    /* per run: the records read back form 1..n with no gap, n >= synced */
    int maxseen[KILL_RUNS] = {0};
    bool contiguous = true;
    for (size_t i = 0; i < col.n; i++) {
        int run, k;
        if (sscanf(col.v[i].header_from, "run%d-%d", &run, &k) != 2 || run < 0 || run >= KILL_RUNS) {
            contiguous = false;
            continue;
        }
        contiguous = contiguous && k == maxseen[run] + 1;
        maxseen[run] = k;
    }
    MW_TEST_ASSERT(contiguous);
    uint64_t total_synced = 0;
    for (int run = 0; run < KILL_RUNS; run++) {
        total_synced += synced[run];
        if (!MW_TEST_ASSERT((uint64_t)maxseen[run] >= synced[run]))
            fprintf(stderr, "  run %d: read back %d, synced %llu\n", run, maxseen[run],
                    (unsigned long long)synced[run]);
    }
    MW_TEST_ASSERT(total_synced > 0);   /* the flusher did run */
    fprintf(stderr, "  %zu records, %llu reported synced, %zu torn\n", col.n,
            (unsigned long long)total_synced, st.torn);
    collect_free(&col);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    if (mkdtemp(base) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    umask(022);
    MW_TEST_RUN(test_round_trip);
    MW_TEST_RUN(test_torn_and_corrupt);
    MW_TEST_RUN(test_resync);
    MW_TEST_RUN(test_concurrent);
    MW_TEST_RUN(test_rotation_and_window);
    MW_TEST_RUN(test_refusals);
    MW_TEST_RUN(test_kill9);
    rm_rf(base);
    return MW_TEST_SUMMARY();
}
