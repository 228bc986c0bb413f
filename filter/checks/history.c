/*
 * history.c - the DMARC aggregate history on disk (writer and reader).
 *
 * Purpose
 *   One line per message evaluated against a published DMARC policy, with
 *   everything an RFC 9990 aggregate report needs; `mailwarden report`
 *   reads one or more directories of these files.  Format: see
 *   docs/history-format.md (the reference); in short
 *
 *       MWH1 <JSON length> <crc32c, 8 lower-case hex> <JSON object>\n
 *
 *   where the CRC32C (Castagnoli) covers "MWH1 <JSON length> " and the
 *   JSON bytes.  A line shorter than its length field says is torn; one
 *   of the right length whose CRC does not match is corrupt.
 *
 * Durability design
 *   - Files history-YYYYMMDDHHMMSS.log (UTC start of the period,
 *     rotate_seconds long) in the directory, opened
 *     O_RDWR|O_APPEND|O_CREAT|O_CLOEXEC|O_NOFOLLOW, mode 0640, refused when
 *     not a regular file or hard-linked elsewhere.  A new file's directory
 *     entry is made durable (fsync of the directory).
 *   - A record is formatted completely, then written with ONE write(2) of
 *     the whole line under the writer's lock; with O_APPEND, lines of
 *     concurrent appenders (threads or processes) never interleave.
 *   - A kill -9 (or a full disk) can leave at most the line being written
 *     incomplete: it has no newline, or its checksum does not match.  When
 *     a file is (re)opened and does not end with '\n', a '\n' is written
 *     first, so the torn fragment stays a line of its own and the next
 *     record is intact.  The reader skips and counts such lines and, should
 *     a fragment and a record still share a line, re-synchronises on the
 *     "MWH1 " tag.
 *   - fsync policy: fdatasync at rotation, at close, on mw_history_sync(),
 *     and from a background flusher thread at least every
 *     fsync_interval_ms when something was appended; fsync_interval_ms = 0
 *     syncs after every record (in the append, under the lock).  The
 *     flusher syncs a dup() of the descriptor outside the lock, so
 *     appenders never wait for the disk.  mw_history_synced() tells how
 *     many records are known durable.
 *   - ENOSPC, EIO and friends: append returns false and the error is
 *     logged at most once a minute; a partial line is terminated with '\n'
 *     when possible.
 *
 * Encoding: JSON strings are byte strings: bytes below 0x20, '"', '\\' and
 *   every byte >= 0x80 are escaped (\u00XX), so a line is pure ASCII, one
 *   line, and reads back byte-exact.
 *
 * Thread safety: one mutex around the file state; the flusher is one
 *   thread per writer; the reader is single-threaded and keeps no state.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "history.h"
#include "log.h"
#include "metrics.h"

#define TAG            "MWH1 "
#define TAG_LEN        5
#define LINE_MAX_BYTES (256 * 1024)   /* longer records are refused (never happens in practice) */
#define ERR_LOG_EVERY  60             /* seconds between repeated error logs */
#define NAME_PREFIX    "history-"
#define NAME_LEN       (8 + 14 + 4)   /* history-YYYYMMDDHHMMSS.log */
#define READ_SLACK     600            /* record times may precede their file's period */

/* ---- CRC32C (Castagnoli, reflected 0x82F63B78), table-driven ----------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

/* Continue a CRC32C: start with crc = 0. */
static uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;

    pthread_once(&crc_once, crc_init);
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- record <-> JSON --------------------------------------------------------------------- */

static void put_str(mw_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    mw_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            mw_buf_putc(b, '\\');
            mw_buf_putc(b, (char)*p);
        } else if (*p < 0x20 || *p >= 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            mw_buf_append(b, e, sizeof e);
        } else {
            mw_buf_putc(b, (char)*p);
        }
    }
    mw_buf_putc(b, '"');
}

static void put_field(mw_buf *b, const char *key, const char *val)
{
    if (val == NULL)
        return;
    mw_buf_printf(b, ",\"%s\":", key);
    put_str(b, val);
}

/* Field table: JSON key -> offset of the char * in the record. */
#define F(name) {#name, offsetof(mw_history_record, name)}
static const struct { const char *key; size_t off; } str_fields[] = {
    F(source_ip), F(header_from), F(envelope_from), F(envelope_to),
    F(spf_domain), F(spf_scope), F(spf_result),
    F(policy_domain), F(p), F(sp), F(np), F(adkim), F(aspf), F(t), F(psd), F(discovery),
    F(disposition), F(dkim_aligned), F(spf_aligned), F(override), F(reporter_host),
};
#undef F
#define NSTR (sizeof str_fields / sizeof str_fields[0])

static char **str_slot(mw_history_record *r, size_t i)
{
    return (char **)((char *)r + str_fields[i].off);
}

static void record_json(const mw_history_record *r, mw_buf *b)
{
    mw_buf_printf(b, "{\"time\":%lld", (long long)r->time);
    for (size_t i = 0; i < NSTR; i++)
        put_field(b, str_fields[i].key, *str_slot((mw_history_record *)r, i));
    mw_buf_puts(b, ",\"dkim\":[");
    for (size_t i = 0; i < r->ndkim; i++) {
        const mw_history_dkim *k = &r->dkim[i];
        mw_buf_puts(b, i ? ",{" : "{");
        mw_buf_puts(b, "\"domain\":");
        put_str(b, k->domain ? k->domain : "");
        if (k->selector) {
            mw_buf_puts(b, ",\"selector\":");
            put_str(b, k->selector);
        }
        mw_buf_puts(b, ",\"result\":");
        put_str(b, k->result ? k->result : "");
        mw_buf_putc(b, '}');
    }
    mw_buf_puts(b, "],\"rua\":[");
    for (size_t i = 0; r->rua != NULL && r->rua[i] != NULL; i++) {
        if (i)
            mw_buf_putc(b, ',');
        put_str(b, r->rua[i]);
    }
    mw_buf_puts(b, "]}");
}

/* A minimal JSON reader for exactly what we write (and anything a later
 * version may add: unknown keys are skipped, whatever their value). */
typedef struct jp {
    const char *p, *end;
    int depth;
} jp;

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static bool lit(jp *j, char c)
{
    ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* String into *out (malloc'd; NULL out to skip).  \u00XX -> that byte;
 * larger code points -> UTF-8 (never written by us). */
static bool jstr(jp *j, char **out)
{
    mw_buf b = MW_BUF_INIT;

    if (!lit(j, '"'))
        return false;
    while (j->p < j->end && *j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            mw_buf_putc(&b, (char)c);
            continue;
        }
        if (j->p >= j->end)
            goto bad;
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/': mw_buf_putc(&b, (char)c); break;
        case 'b': mw_buf_putc(&b, '\b'); break;
        case 'f': mw_buf_putc(&b, '\f'); break;
        case 'n': mw_buf_putc(&b, '\n'); break;
        case 'r': mw_buf_putc(&b, '\r'); break;
        case 't': mw_buf_putc(&b, '\t'); break;
        case 'u': {
            unsigned v = 0;
            if (j->end - j->p < 4)
                goto bad;
            for (int i = 0; i < 4; i++) {
                int h = hexval(j->p[i]);
                if (h < 0)
                    goto bad;
                v = v * 16 + (unsigned)h;
            }
            j->p += 4;
            if (v == 0)
                goto bad;
            if (v < 0x100) {
                mw_buf_putc(&b, (char)v);
            } else if (v < 0x800) {
                mw_buf_putc(&b, (char)(0xc0 | v >> 6));
                mw_buf_putc(&b, (char)(0x80 | (v & 0x3f)));
            } else {
                mw_buf_putc(&b, (char)(0xe0 | v >> 12));
                mw_buf_putc(&b, (char)(0x80 | ((v >> 6) & 0x3f)));
                mw_buf_putc(&b, (char)(0x80 | (v & 0x3f)));
            }
            break;
        }
        default: goto bad;
        }
    }
    if (j->p >= j->end)
        goto bad;
    j->p++;
    if (out != NULL) {
        *out = mw_buf_steal(&b);
        if (*out == NULL)
            *out = mw_strdup("");
    }
    mw_buf_free(&b);
    return true;
bad:
    mw_buf_free(&b);
    return false;
}

static bool jint(jp *j, long long *out)
{
    long long v = 0;
    bool neg = false, any = false;

    ws(j);
    if (j->p < j->end && *j->p == '-') {
        neg = true;
        j->p++;
    }
    while (j->p < j->end && isdigit((unsigned char)*j->p)) {
        if (v > (long long)1e17)
            return false;
        v = v * 10 + (*j->p++ - '0');
        any = true;
    }
    *out = neg ? -v : v;
    return any;
}

static bool jskip(jp *j)
{
    ws(j);
    if (j->p >= j->end || ++j->depth > 16)
        return false;
    bool ok = true;
    char c = *j->p;
    if (c == '"') {
        ok = jstr(j, NULL);
    } else if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (!lit(j, close)) {
            do {
                if (c == '{' && (!jstr(j, NULL) || !lit(j, ':'))) {
                    ok = false;
                    break;
                }
                if (!jskip(j)) {
                    ok = false;
                    break;
                }
            } while (lit(j, ','));
            ok = ok && lit(j, close);
        }
    } else if (c == '-' || isdigit((unsigned char)c)) {
        while (j->p < j->end && strchr("+-.eE0123456789", *j->p) != NULL)
            j->p++;
    } else {
        static const char *const words[] = {"true", "false", "null"};
        ok = false;
        for (size_t i = 0; i < 3 && !ok; i++) {
            size_t n = strlen(words[i]);
            if ((size_t)(j->end - j->p) >= n && memcmp(j->p, words[i], n) == 0) {
                j->p += n;
                ok = true;
            }
        }
    }
    j->depth--;
    return ok;
}

static bool jdkim(jp *j, mw_history_dkim *k)
{
    if (!lit(j, '{'))
        return false;
    if (lit(j, '}'))
        return true;
    do {
        char *key = NULL;
        if (!jstr(j, &key) || !lit(j, ':')) {
            free(key);
            return false;
        }
        char **slot = strcmp(key, "domain") == 0 ? &k->domain
                    : strcmp(key, "selector") == 0 ? &k->selector
                    : strcmp(key, "result") == 0 ? &k->result : NULL;
        free(key);
        if (slot != NULL && *slot == NULL ? !jstr(j, slot) : !jskip(j))
            return false;
    } while (lit(j, ','));
    return lit(j, '}');
}

static bool record_parse(const char *p, size_t len, mw_history_record *r)
{
    jp j = {p, p + len, 0};
    bool have_time = false;

    memset(r, 0, sizeof *r);
    if (!lit(&j, '{'))
        return false;
    if (!lit(&j, '}')) {
        do {
            char *key = NULL;
            bool ok;
            if (!jstr(&j, &key) || !lit(&j, ':')) {
                free(key);
                return false;
            }
            size_t i;
            for (i = 0; i < NSTR && strcmp(key, str_fields[i].key) != 0; i++)
                ;
            if (strcmp(key, "time") == 0) {
                long long t = 0;
                ok = jint(&j, &t);
                r->time = (time_t)t;
                have_time = true;
            } else if (i < NSTR && *str_slot(r, i) == NULL) {
                ok = jstr(&j, str_slot(r, i));
            } else if (strcmp(key, "dkim") == 0 && r->dkim == NULL) {
                ok = lit(&j, '[');
                r->dkim = mw_calloc(1, sizeof *r->dkim);
                if (ok && !lit(&j, ']')) {
                    do {
                        r->dkim = mw_reallocarray(r->dkim, r->ndkim + 1, sizeof *r->dkim);
                        memset(&r->dkim[r->ndkim], 0, sizeof *r->dkim);
                        r->ndkim++;
                        ok = jdkim(&j, &r->dkim[r->ndkim - 1]);
                    } while (ok && lit(&j, ','));
                    ok = ok && lit(&j, ']');
                }
            } else if (strcmp(key, "rua") == 0 && r->rua == NULL) {
                size_t n = 0;
                r->rua = mw_calloc(1, sizeof *r->rua);
                ok = lit(&j, '[');
                if (ok && !lit(&j, ']')) {
                    do {
                        r->rua = mw_reallocarray(r->rua, n + 2, sizeof *r->rua);
                        r->rua[n] = r->rua[n + 1] = NULL;
                        ok = jstr(&j, &r->rua[n]);
                        n += ok;
                    } while (ok && lit(&j, ','));
                    ok = ok && lit(&j, ']');
                }
            } else {
                ok = jskip(&j);
            }
            free(key);
            if (!ok)
                return false;
        } while (lit(&j, ','));
        if (!lit(&j, '}'))
            return false;
    }
    ws(&j);
    return have_time && j.p == j.end;
}

void mw_history_record_clear(mw_history_record *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < NSTR; i++)
        free(*str_slot(r, i));
    for (size_t i = 0; i < r->ndkim; i++) {
        free(r->dkim[i].domain);
        free(r->dkim[i].selector);
        free(r->dkim[i].result);
    }
    free(r->dkim);
    for (size_t i = 0; r->rua != NULL && r->rua[i] != NULL; i++)
        free(r->rua[i]);
    free(r->rua);
    memset(r, 0, sizeof *r);
}

/* The whole line for r, newline included:
 *     MWH1 SP <JSON length, decimal> SP <crc32c, 8 hex> SP <JSON> LF
 * with the CRC over "MWH1 <length> " followed by the JSON. */
static void format_line(const mw_history_record *r, mw_buf *line)
{
    mw_buf json = MW_BUF_INIT;
    char head[32];
    int hl;
    uint32_t crc;

    record_json(r, &json);
    hl = snprintf(head, sizeof head, "%s%zu ", TAG, json.len);
    crc = crc32c(crc32c(0, head, (size_t)hl), json.data, json.len);
    mw_buf_append(line, head, (size_t)hl);
    mw_buf_printf(line, "%08x ", crc);
    mw_buf_append(line, json.data, json.len);
    mw_buf_putc(line, '\n');
    mw_buf_free(&json);
}

/* ---- writer ------------------------------------------------------------------------------ */

struct mw_history {
    char           *dir;
    int             dirfd;
    unsigned        fsync_ms, rotate_s;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    pthread_t       flusher;
    bool            have_flusher, stop;
    int             fd;            /* current file, -1 if none */
    time_t          period;        /* start of the current file's period */
    uint64_t        appended;      /* records written by this writer */
    uint64_t        synced;        /* of those, known durable */
    bool            dirty;
    uint64_t        dirty_since_ns;   /* monotonic: first record not yet synced (metrics) */
    time_t          last_err;      /* last error log */
    int             last_errno;
};

static void file_name(time_t period, char *out, size_t len)
{
    struct tm tm;

    gmtime_r(&period, &tm);
    snprintf(out, len, NAME_PREFIX "%04d%02d%02d%02d%02d%02d.log", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* "user NAME (uid N)" of the effective uid, for error messages. */
static void who_am_i(char *out, size_t len)
{
    char buf[4096];
    struct passwd pw, *res = NULL;
    uid_t uid = geteuid();

    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res != NULL)
        snprintf(out, len, "user %s (uid %u)", pw.pw_name, (unsigned)uid);
    else
        snprintf(out, len, "uid %u", (unsigned)uid);
}

/* Log an error at most once a minute (or when errno changes).  Caller holds mu. */
static void err_log(mw_history *h, int e, const char *what)
{
    time_t now = time(NULL);

    if (e == h->last_errno && now - h->last_err < ERR_LOG_EVERY)
        return;
    h->last_err = now;
    h->last_errno = e;
    mw_error("history %s: %s: %s", h->dir, what, strerror(e));
}

/* Sync the open file.  Caller holds mu. */
static bool sync_locked(mw_history *h)
{
    /* Not dirty is not enough: the flusher clears dirty before its
     * fdatasync (outside the lock), so a caller asking for a sync while that
     * one is in flight must sync itself rather than return early. */
    if (h->fd < 0 || (!h->dirty && h->synced == h->appended))
        return true;
    if (fdatasync(h->fd) != 0) {
        mw_metric_inc(MW_M_HISTORY_FSYNC_FAILURES, 0, 0);
        err_log(h, errno, "fdatasync");
        return false;
    }
    mw_metric_observe(MW_M_HISTORY_FSYNC_LAG, 0, mw_metrics_now_ns() - h->dirty_since_ns);
    h->dirty = false;
    h->synced = h->appended;
    return true;
}

/* Open the file for period.  Caller holds mu. */
static bool open_period(mw_history *h, time_t period)
{
    char name[64];
    struct stat st;
    bool created = true;
    int fd;

    file_name(period, name, sizeof name);
    fd = openat(h->dirfd, name, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0 && errno == EEXIST) {
        created = false;
        fd = openat(h->dirfd, name, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        err_log(h, errno, name);
        return false;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
        err_log(h, fstat(fd, &st) != 0 ? errno : EPERM,
                "not a regular, singly linked file; refusing to append");
        close(fd);
        return false;
    }
    if (created) {
        if (fsync(h->dirfd) != 0)
            err_log(h, errno, "fsync of the directory");
    } else if (st.st_size > 0) {
        /* A torn tail (crash in the middle of a write): end it, so the next
         * record starts on a line of its own. */
        char last;
        if (pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') {
            if (write(fd, "\n", 1) != 1)
                err_log(h, errno, "terminating a torn last line");
            if (!h->dirty)
                h->dirty_since_ns = mw_metrics_now_ns();
            h->dirty = true;
        }
    }
    h->fd = fd;
    h->period = period;
    return true;
}

static void *flusher_main(void *arg)
{
    mw_history *h = arg;

    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);   /* the condvar's clock (see open) */
        ts.tv_sec += h->fsync_ms / 1000;
        ts.tv_nsec += (long)(h->fsync_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->stop || !h->dirty || h->fd < 0)
            continue;
        /* Sync a duplicate outside the lock: appenders do not wait for the disk. */
        uint64_t upto = h->appended, since = h->dirty_since_ns;
        int fd = dup(h->fd);
        h->dirty = false;
        pthread_mutex_unlock(&h->mu);
        int rc = fd >= 0 ? fdatasync(fd) : -1;
        int e = errno;
        if (fd >= 0)
            close(fd);
        pthread_mutex_lock(&h->mu);
        if (rc == 0) {
            if (upto > h->synced)
                h->synced = upto;
            mw_metric_observe(MW_M_HISTORY_FSYNC_LAG, 0, mw_metrics_now_ns() - since);
        } else {
            if (!h->dirty)
                h->dirty_since_ns = since;
            h->dirty = true;
            mw_metric_inc(MW_M_HISTORY_FSYNC_FAILURES, 0, 0);
            err_log(h, e, "fdatasync");
        }
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

mw_history *mw_history_open(const char *dir, const mw_history_options *o, char *err, size_t errlen)
{
    mw_history *h;
    struct stat st;
    int dfd;

    if (dir == NULL || *dir == '\0') {
        snprintf(err, errlen, "history: no directory");
        return NULL;
    }
    /* Created (and written) by the user we run as: the daemon drops
     * privileges before it gets here (serve.c), so the directory and its
     * files belong to that user and a reload or a rotation, which run as
     * the same user, can always open them. */
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        int e = errno;
        char who[96];
        who_am_i(who, sizeof who);
        snprintf(err, errlen, "history: cannot create directory %s as %s: %s%s", dir, who, strerror(e),
                 e == EACCES ? " (create it owned by that user, mode 0750)" : "");
        return NULL;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &st) != 0) {
        snprintf(err, errlen, "history: %s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return NULL;
    }
    if (faccessat(dfd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
        char who[96];
        who_am_i(who, sizeof who);
        snprintf(err, errlen, "history: directory %s (owner uid %u, group gid %u, mode %04o) is not writable by %s: "
                 "give it to that user (chown)", dir, (unsigned)st.st_uid, (unsigned)st.st_gid,
                 (unsigned)(st.st_mode & 07777), who);
        close(dfd);
        return NULL;
    }
    h = mw_calloc(1, sizeof *h);
    h->dir = mw_strdup(dir);
    h->dirfd = dfd;
    h->fd = -1;
    h->fsync_ms = o != NULL ? o->fsync_interval_ms : 1000;
    h->rotate_s = o != NULL && o->rotate_seconds > 0 ? o->rotate_seconds : 3600;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* wall-clock jumps do not stall fsync */
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Open now: a directory we cannot write to is a start-up error, not a
     * surprise at the first message. */
    time_t now = time(NULL);
    pthread_mutex_lock(&h->mu);
    bool ok = open_period(h, now - now % (time_t)h->rotate_s);
    int e = h->last_errno;
    pthread_mutex_unlock(&h->mu);
    if (!ok) {
        char name[64], who[96];
        struct stat fst;
        file_name(now - now % (time_t)h->rotate_s, name, sizeof name);
        who_am_i(who, sizeof who);
        if (e == EACCES && fstatat(dfd, name, &fst, AT_SYMLINK_NOFOLLOW) == 0)
            snprintf(err, errlen, "history: %s/%s (owner uid %u, mode %04o) is not writable by %s: "
                     "give it to that user (chown)", dir, name, (unsigned)fst.st_uid,
                     (unsigned)(fst.st_mode & 07777), who);
        else
            snprintf(err, errlen, "history: cannot open %s/%s as %s: %s", dir, name, who, strerror(e));
        mw_history_close(&h);
        return NULL;
    }
    if (h->fsync_ms > 0) {
        if (pthread_create(&h->flusher, NULL, flusher_main, h) != 0) {
            snprintf(err, errlen, "history: cannot start the flusher thread");
            mw_history_close(&h);
            return NULL;
        }
        h->have_flusher = true;
    }
    return h;
}

bool mw_history_append(mw_history *h, const mw_history_record *r)
{
    mw_buf line = MW_BUF_INIT;
    bool ok = false;

    format_line(r, &line);
    pthread_mutex_lock(&h->mu);
    if (line.len > LINE_MAX_BYTES) {
        err_log(h, EMSGSIZE, "record too long, not written");
        goto out;
    }
    time_t now = time(NULL), period = now - now % (time_t)h->rotate_s;
    if (h->fd < 0 || period != h->period) {
        if (h->fd >= 0) {
            sync_locked(h);   /* fsync at rotation */
            close(h->fd);
            h->fd = -1;
        }
        if (!open_period(h, period))
            goto out;
    }
    ssize_t n;
    do
        n = write(h->fd, line.data, line.len);   /* one write(2): lines never interleave */
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)line.len) {
        int e = n < 0 ? errno : ENOSPC;
        if (n > 0 && write(h->fd, "\n", 1) == 1) {   /* end the partial line */
            if (!h->dirty)
                h->dirty_since_ns = mw_metrics_now_ns();
            h->dirty = true;
        }
        err_log(h, e, "write");
        goto out;
    }
    h->appended++;
    if (!h->dirty)
        h->dirty_since_ns = mw_metrics_now_ns();
    h->dirty = true;
    ok = h->fsync_ms > 0 || sync_locked(h);
out:
    pthread_mutex_unlock(&h->mu);
    mw_metric_inc(MW_M_HISTORY_RECORDS, ok ? MW_ML_HIST_WRITTEN : MW_ML_HIST_FAILED, 0);
    mw_buf_free(&line);
    return ok;
}

void mw_history_sync(mw_history *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    sync_locked(h);
    pthread_mutex_unlock(&h->mu);
}

uint64_t mw_history_synced(mw_history *h)
{
    uint64_t n;

    if (h == NULL)
        return 0;
    pthread_mutex_lock(&h->mu);
    n = h->synced;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void mw_history_close(mw_history **hp)
{
    mw_history *h;

    if (hp == NULL || *hp == NULL)
        return;
    h = *hp;
    if (h->have_flusher) {
        pthread_mutex_lock(&h->mu);
        h->stop = true;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->flusher, NULL);
    }
    pthread_mutex_lock(&h->mu);
    sync_locked(h);
    if (h->fd >= 0)
        close(h->fd);
    pthread_mutex_unlock(&h->mu);
    close(h->dirfd);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h->dir);
    MW_FREE(hp);
}

/* ---- reader ------------------------------------------------------------------------------- */

typedef enum { L_OK, L_TORN, L_BADSUM, L_BADVER } lstat_t;

/* Check one line (no newline): structure, length, checksum, version.
 * Shorter than its length field says (or no structure at all): torn. */
static lstat_t check_line(const char *p, size_t len, const char **json, size_t *jlen)
{
    size_t i = 3, v = 0, n = 0, head;
    uint32_t want = 0, got;

    if (len < 3 || memcmp(p, "MWH", 3) != 0)
        return L_TORN;
    while (i < len && i < 8 && isdigit((unsigned char)p[i]))
        v = v * 10 + (size_t)(p[i++] - '0');
    if (i == 3 || i >= len || p[i++] != ' ')
        return L_TORN;
    size_t d0 = i;
    while (i < len && i - d0 < 7 && isdigit((unsigned char)p[i]))
        n = n * 10 + (size_t)(p[i++] - '0');
    if (i == d0 || i >= len || p[i++] != ' ')
        return L_TORN;
    head = i;   /* "MWHv <len> " */
    if (len < head + 9 || p[head + 8] != ' ')
        return L_TORN;
    for (size_t k = 0; k < 8; k++) {
        int h = hexval(p[head + k]);
        if (h < 0 || isupper((unsigned char)p[head + k]))
            return L_TORN;
        want = want << 4 | (uint32_t)h;
    }
    *json = p + head + 9;
    *jlen = len - head - 9;
    if (*jlen != n)
        return L_TORN;   /* cut short (or glued to something): not a whole record */
    got = crc32c(crc32c(0, p, head), *json, *jlen);
    if (got != want)
        return L_BADSUM;
    return v == 1 ? L_OK : L_BADVER;
}

typedef struct rctx {
    time_t from, to;
    bool (*cb)(const mw_history_record *, void *);
    void *arg;
    mw_history_stats *st;
    bool stopped;
} rctx;

/* One decoded record: in the window?  deliver. */
static void deliver(rctx *c, const char *json, size_t jlen)
{
    mw_history_record r;

    if (!record_parse(json, jlen, &r)) {
        c->st->torn++;   /* checksum fine but not our JSON: count as unreadable */
        mw_history_record_clear(&r);
        return;
    }
    if (r.time >= c->from && r.time < c->to) {
        c->st->records++;
        if (!c->cb(&r, c->arg))
            c->stopped = true;
    }
    mw_history_record_clear(&r);
}

static void one_line(rctx *c, const char *p, size_t len)
{
    const char *json;
    size_t jlen;
    lstat_t s = check_line(p, len, &json, &jlen);

    if (s == L_OK) {
        deliver(c, json, jlen);
        return;
    }
    /* A torn fragment followed by a whole record on the same line (a crash,
     * then an appender that did not end the fragment): re-synchronise. */
    for (const char *q = p + 1; q + TAG_LEN <= p + len; q++) {
        q = memmem(q, (size_t)(p + len - q), TAG, TAG_LEN);
        if (q == NULL)
            break;
        if (check_line(q, (size_t)(p + len - q), &json, &jlen) == L_OK) {
            c->st->torn++;
            deliver(c, json, jlen);
            return;
        }
    }
    if (s == L_BADSUM)
        c->st->bad_checksum++;
    else if (s == L_BADVER)
        c->st->bad_version++;
    else
        c->st->torn++;
}

static bool read_one(rctx *c, int dfd, const char *name, char *err, size_t errlen)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    if (fd < 0 || (f = fdopen(fd, "r")) == NULL) {
        snprintf(err, errlen, "%s: %s", name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    c->st->files++;
    while (!c->stopped && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {   /* last line without newline: torn */
            c->st->torn++;
            break;
        }
        if (n > 1)
            one_line(c, line, (size_t)n - 1);
    }
    bool ok = !ferror(f);
    if (!ok)
        snprintf(err, errlen, "%s: read error", name);
    free(line);
    fclose(f);
    return ok;
}

static bool name_time(const char *name, time_t *t)
{
    struct tm tm;
    int v[6];

    if (strlen(name) != NAME_LEN || strncmp(name, NAME_PREFIX, 8) != 0 ||
        strcmp(name + 22, ".log") != 0)
        return false;
    for (int i = 8; i < 22; i++)
        if (!isdigit((unsigned char)name[i]))
            return false;
    if (sscanf(name + 8, "%4d%2d%2d%2d%2d%2d", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
        return false;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = v[0] - 1900;
    tm.tm_mon = v[1] - 1;
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    *t = timegm(&tm);
    return true;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

bool mw_history_read(const char *dir, time_t from, time_t to,
                     bool (*cb)(const mw_history_record *r, void *arg), void *arg,
                     mw_history_stats *stats, char *err, size_t errlen)
{
    mw_history_stats dummy;
    rctx c = {from, to, cb, arg, stats != NULL ? stats : &dummy, false};
    char **names = NULL;
    size_t n = 0;
    bool ok = true;
    DIR *d;
    int dfd;
    struct dirent *e;

    memset(c.st, 0, sizeof *c.st);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
        snprintf(err, errlen, "history: %s: %s", dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return false;
    }
    while ((e = readdir(d)) != NULL) {
        time_t t;
        if (!name_time(e->d_name, &t))
            continue;
        names = mw_reallocarray(names, n + 1, sizeof *names);
        names[n++] = mw_strdup(e->d_name);
    }
    if (n > 1)   /* qsort(NULL, 0, ...) is undefined: an empty directory */
        qsort(names, n, sizeof *names, cmp_name);
    for (size_t i = 0; i < n && !c.stopped; i++) {
        time_t start, next = 0;
        name_time(names[i], &start);
        /* File i holds records appended in [start, next file's start);
         * record times may be a little earlier than their append. */
        if (start - READ_SLACK >= to)
            continue;
        if (i + 1 < n && name_time(names[i + 1], &next) && next + READ_SLACK <= from)
            continue;
        if (!read_one(&c, dirfd(d), names[i], err, errlen))
            ok = false;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return ok;
}
