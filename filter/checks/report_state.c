/*
 * report_state.c - the report state journal: what was sent to whom.
 *
 * Purpose
 *   A rerun of `mailwarden report --send`, or a run after one that crashed
 *   midway, must neither send a report to a destination twice nor skip
 *   one.  The journal records, per (report id, destination address), the
 *   last status; per destination the run of 5xx answers (suppression); per
 *   period whether a run finished it.
 *
 * File format (REPORT_STATE in state_dir; one record per line)
 *   <crc32 hex8> SP <payload> LF, the CRC (zlib crc32) over the payload.
 *     R <id> <dest> <status> <time> <attempts> <domain> <begin> <end>
 *     D <dest> <consecutive 5xx> <suppressed until>
 *     P <begin> <end> open|done <time>
 *   Later lines override earlier ones.  A last line without LF or with a
 *   wrong CRC (a crash in the middle of a write) is ignored.
 *
 * Design notes
 *   - Each update is one write(2) of one line on an O_APPEND descriptor,
 *     then fdatasync(): when mw_report_state_set() returns, the line is on
 *     disk.  Appending is O(1) per delivery, unlike rewriting the whole
 *     state, so large sites stay fast.
 *   - Compaction at open: the merged state is written to a temporary file,
 *     fsynced, renamed over the journal and the directory fsynced, so a
 *     crash during compaction leaves either the old or the new journal.
 *     Entries of periods that ended more than KEEP_SECONDS ago are dropped,
 *     unless they were written less than KEEP_SECONDS ago: a report of an
 *     old period sent by hand (--period) is still known to the next run.
 *   - Files are opened O_NOFOLLOW|O_CLOEXEC; the temporary file O_EXCL.
 *   - A lock file (flock) keeps two runs (timer and a person) apart.
 *   - Crash window: between the relay's 250 and the "sent" line being
 *     synced (microseconds) the status is "sending"; the next run resends
 *     (never skip), accepting a duplicate in that window.
 *
 * See also: report.h, filter/tools/report.c, docs/reports.md.
 */
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "alloc.h"
#include "buf.h"
#include "report_priv.h"
#include "fileio.h"

#define STATE_FILE   "state.journal"
#define STATE_TMP    "state.journal.tmp"
#define LOCK_FILE    "lock"
#define KEEP_SECONDS (60LL * 86400)
#define LINE_MAX_LEN 4096

typedef struct rentry {
    char *key;            /* "id dest" */
    char *id, *dest, *domain;
    mw_report_status st;
    long long time, begin, end;
    unsigned attempts;
} rentry;

typedef struct dentry {
    char *dest;
    unsigned n5xx;
    long long until;
} dentry;

typedef struct pentry {
    char *key;            /* "begin end" */
    long long begin, end, time;
    bool done;
} pentry;

struct mw_report_state {
    char   *dir;
    int     fd;           /* journal, O_APPEND; -1 when read-only */
    int     lockfd;
    rentry *r;
    size_t  nr, capr;
    strmap  rmap;
    dentry *d;
    size_t  nd, capd;
    strmap  dmap;
    pentry *p;
    size_t  np, capp;
    strmap  pmap;
};

static const char *const status_names[] = {"none", "sending", "sent", "deferred", "failed",
                                           "refused", "toobig", "suppressed"};

const char *mw_report_status_name(mw_report_status s)
{
    return (size_t)s < sizeof status_names / sizeof status_names[0] ? status_names[s] : "?";
}

bool mw_report_status_final(mw_report_status s)
{
    return s == MW_RS_SENT || s == MW_RS_FAILED || s == MW_RS_REFUSED || s == MW_RS_TOOBIG ||
           s == MW_RS_SUPPRESSED;
}

static bool status_parse(const char *w, mw_report_status *out)
{
    for (size_t i = 0; i < sizeof status_names / sizeof status_names[0]; i++)
        if (strcmp(w, status_names[i]) == 0) {
            *out = (mw_report_status)i;
            return true;
        }
    return false;
}

/* A token fit for the journal (no blanks, no control characters). */
bool mw_report_state_key_ok(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 512)
        return false;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* ---- in-memory updates ---------------------------------------------------------- */

static rentry *r_find(const mw_report_state *s, const char *id, const char *dest)
{
    mw_buf k = MW_BUF_INIT;
    size_t i;
    bool found;

    mw_buf_printf(&k, "%s %s", id, dest);
    found = strmap_get(&s->rmap, mw_buf_cstr(&k), &i);
    mw_buf_free(&k);
    return found ? &s->r[i] : NULL;
}

static void r_apply(mw_report_state *s, const char *id, const char *dest, mw_report_status st,
                    long long t, unsigned attempts, const char *domain, long long begin,
                    long long end)
{
    rentry *e = r_find(s, id, dest);

    if (e == NULL) {
        if (s->nr == s->capr) {
            /* the map holds pointers to keys, not entries: growing is safe */
            s->capr = s->capr ? s->capr * 2 : 64;
            s->r = mw_reallocarray(s->r, s->capr, sizeof *s->r);
        }
        e = &s->r[s->nr];
        memset(e, 0, sizeof *e);
        mw_buf k = MW_BUF_INIT;
        mw_buf_printf(&k, "%s %s", id, dest);
        e->key = mw_buf_steal(&k);
        e->id = mw_strdup(id);
        e->dest = mw_strdup(dest);
        e->domain = mw_strdup(domain);
        strmap_put(&s->rmap, e->key, s->nr++);
    }
    e->st = st;
    e->time = t;
    e->attempts = attempts;
    e->begin = begin;
    e->end = end;
}

static dentry *d_find(const mw_report_state *s, const char *dest)
{
    size_t i;
    return strmap_get(&s->dmap, dest, &i) ? &s->d[i] : NULL;
}

static void d_apply(mw_report_state *s, const char *dest, unsigned n5xx, long long until)
{
    dentry *e = d_find(s, dest);

    if (e == NULL) {
        if (s->nd == s->capd) {
            s->capd = s->capd ? s->capd * 2 : 16;
            s->d = mw_reallocarray(s->d, s->capd, sizeof *s->d);
        }
        e = &s->d[s->nd];
        e->dest = mw_strdup(dest);
        strmap_put(&s->dmap, e->dest, s->nd++);
    }
    e->n5xx = n5xx;
    e->until = until;
}

static void p_apply(mw_report_state *s, long long begin, long long end, bool done, long long t)
{
    mw_buf k = MW_BUF_INIT;
    size_t i;

    mw_buf_printf(&k, "%lld %lld", begin, end);
    if (!strmap_get(&s->pmap, mw_buf_cstr(&k), &i)) {
        if (s->np == s->capp) {
            s->capp = s->capp ? s->capp * 2 : 16;
            s->p = mw_reallocarray(s->p, s->capp, sizeof *s->p);
        }
        i = s->np++;
        s->p[i].key = mw_buf_steal(&k);
        s->p[i].begin = begin;
        s->p[i].end = end;
        strmap_put(&s->pmap, s->p[i].key, i);
    }
    mw_buf_free(&k);
    s->p[i].done = done;
    s->p[i].time = t;
}

/* ---- the journal ---------------------------------------------------------------------- */

/* Apply one payload; false when malformed. */
static bool apply_line(mw_report_state *s, char *line)
{
    char *v[10];
    size_t n = 0;
    char *save = NULL;

    for (char *t = strtok_r(line, " ", &save); t != NULL && n < 10; t = strtok_r(NULL, " ", &save))
        v[n++] = t;
    if (n == 9 && strcmp(v[0], "R") == 0) {
        mw_report_status st;
        if (!status_parse(v[3], &st))
            return false;
        r_apply(s, v[1], v[2], st, atoll(v[4]), (unsigned)strtoul(v[5], NULL, 10), v[6],
                atoll(v[7]), atoll(v[8]));
        return true;
    }
    if (n == 4 && strcmp(v[0], "D") == 0) {
        d_apply(s, v[1], (unsigned)strtoul(v[2], NULL, 10), atoll(v[3]));
        return true;
    }
    if (n == 5 && strcmp(v[0], "P") == 0) {
        p_apply(s, atoll(v[1]), atoll(v[2]), strcmp(v[3], "done") == 0, atoll(v[4]));
        return true;
    }
    return false;
}

static void load(mw_report_state *s, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n' || n < 11 || n > LINE_MAX_LEN || line[8] != ' ')
            continue;   /* torn or foreign */
        line[n - 1] = '\0';
        char *payload = line + 9;
        unsigned long want = strtoul(line, NULL, 16);
        unsigned long got = crc32(0L, (const Bytef *)payload, (uInt)strlen(payload));
        if (want != got)
            continue;
        apply_line(s, payload);
    }
    free(line);
}

static void fmt_line(mw_buf *out, const char *payload)
{
    mw_buf_printf(out, "%08lx %s\n", (unsigned long)crc32(0L, (const Bytef *)payload,
                                                           (uInt)strlen(payload)),
                  payload);
}

static void entries_text(const mw_report_state *s, mw_buf *out, long long keep_after)
{
    mw_buf p = MW_BUF_INIT;

    for (size_t i = 0; i < s->np; i++) {
        if (s->p[i].end < keep_after && s->p[i].time < keep_after)
            continue;
        mw_buf_reset(&p);
        mw_buf_printf(&p, "P %lld %lld %s %lld", s->p[i].begin, s->p[i].end,
                      s->p[i].done ? "done" : "open", s->p[i].time);
        fmt_line(out, mw_buf_cstr(&p));
    }
    for (size_t i = 0; i < s->nd; i++) {
        mw_buf_reset(&p);
        mw_buf_printf(&p, "D %s %u %lld", s->d[i].dest, s->d[i].n5xx, s->d[i].until);
        fmt_line(out, mw_buf_cstr(&p));
    }
    for (size_t i = 0; i < s->nr; i++) {
        const rentry *e = &s->r[i];
        if (e->end < keep_after && e->time < keep_after)
            continue;
        mw_buf_reset(&p);
        mw_buf_printf(&p, "R %s %s %s %lld %u %s %lld %lld", e->id, e->dest,
                      mw_report_status_name(e->st), e->time, e->attempts, e->domain, e->begin,
                      e->end);
        fmt_line(out, mw_buf_cstr(&p));
    }
    mw_buf_free(&p);
}


/* Write the compacted journal: temp, fsync, rename, fsync the directory. */
static bool compact(mw_report_state *s, int dfd, long long now, char *err, size_t errlen)
{
    mw_buf text = MW_BUF_INIT;
    int fd;
    bool ok = false;

    entries_text(s, &text, now - KEEP_SECONDS);
    (void)unlinkat(dfd, STATE_TMP, 0);
    fd = openat(dfd, STATE_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s/%s: %s", s->dir, STATE_TMP, strerror(errno));
        goto out;
    }
    if (!mw_write_all(fd, text.data != NULL ? text.data : "", text.len) || fsync(fd) != 0) {
        snprintf(err, errlen, "%s/%s: %s", s->dir, STATE_TMP, strerror(errno));
        close(fd);
        goto out;
    }
    close(fd);
    if (renameat(dfd, STATE_TMP, dfd, STATE_FILE) != 0 || fsync(dfd) != 0) {
        snprintf(err, errlen, "%s/%s: %s", s->dir, STATE_FILE, strerror(errno));
        goto out;
    }
    ok = true;
out:
    mw_buf_free(&text);
    return ok;
}

mw_report_state *mw_report_state_open(const char *dir, bool readonly, time_t now, char *err,
                                      size_t errlen)
{
    mw_report_state *s = mw_calloc(1, sizeof *s);
    int dfd = -1, jfd;

    s->dir = mw_strdup(dir);
    s->fd = -1;
    s->lockfd = -1;
    if (!readonly && mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (readonly && errno == ENOENT)
            return s;
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    if (!readonly) {
        s->lockfd = openat(dfd, LOCK_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (s->lockfd < 0) {
            snprintf(err, errlen, "%s/%s: %s", dir, LOCK_FILE, strerror(errno));
            goto fail;
        }
        if (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0) {
            snprintf(err, errlen, "%s: another report run holds the lock (%s)", dir,
                     strerror(errno));
            goto fail;
        }
    }
    jfd = openat(dfd, STATE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (jfd >= 0) {
        FILE *f = fdopen(jfd, "r");
        if (f == NULL) {
            close(jfd);
            snprintf(err, errlen, "%s/%s: %s", dir, STATE_FILE, strerror(errno));
            goto fail;
        }
        load(s, f);
        fclose(f);
    } else if (errno != ENOENT) {
        snprintf(err, errlen, "%s/%s: %s", dir, STATE_FILE, strerror(errno));
        goto fail;
    }
    if (!readonly) {
        if (!compact(s, dfd, (long long)now, err, errlen))
            goto fail;
        s->fd = openat(dfd, STATE_FILE, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        if (s->fd < 0) {
            snprintf(err, errlen, "%s/%s: %s", dir, STATE_FILE, strerror(errno));
            goto fail;
        }
    }
    close(dfd);
    return s;
fail:
    if (dfd >= 0)
        close(dfd);
    mw_report_state_close(&s);
    return NULL;
}

void mw_report_state_close(mw_report_state **sp)
{
    mw_report_state *s = *sp;

    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->lockfd >= 0)
        close(s->lockfd);   /* releases the flock */
    for (size_t i = 0; i < s->nr; i++) {
        free(s->r[i].key);
        free(s->r[i].id);
        free(s->r[i].dest);
        free(s->r[i].domain);
    }
    for (size_t i = 0; i < s->nd; i++)
        free(s->d[i].dest);
    for (size_t i = 0; i < s->np; i++)
        free(s->p[i].key);
    free(s->r);
    free(s->d);
    free(s->p);
    strmap_free(&s->rmap);
    strmap_free(&s->dmap);
    strmap_free(&s->pmap);
    free(s->dir);
    free(s);
    *sp = NULL;
}

/* Append one journal line and sync it. */
static bool append(mw_report_state *s, const char *payload, char *err, size_t errlen)
{
    mw_buf line = MW_BUF_INIT;
    bool ok;

    if (s->fd < 0) {
        snprintf(err, errlen, "report state is read-only");
        return false;
    }
    fmt_line(&line, payload);
    ok = mw_write_all(s->fd, line.data, line.len) && fdatasync(s->fd) == 0;
    if (!ok)
        snprintf(err, errlen, "%s/%s: %s", s->dir, STATE_FILE, strerror(errno));
    mw_buf_free(&line);
    return ok;
}

mw_report_status mw_report_state_get(const mw_report_state *s, const char *id, const char *dest,
                                     unsigned *attempts)
{
    const rentry *e = r_find(s, id, dest);

    if (attempts != NULL)
        *attempts = e != NULL ? e->attempts : 0;
    return e != NULL ? e->st : MW_RS_NONE;
}

bool mw_report_state_sent_other(const mw_report_state *s, const char *domain, time_t begin,
                                time_t end, const char *dest, const char *const *ids, size_t nids,
                                const char **other)
{
    for (size_t i = 0; i < s->nr; i++) {
        const rentry *e = &s->r[i];
        if ((e->st != MW_RS_SENT && e->st != MW_RS_SENDING) || e->begin != (long long)begin ||
            e->end != (long long)end || strcasecmp(e->domain, domain) != 0 ||
            strcasecmp(e->dest, dest) != 0)
            continue;
        bool known = false;
        for (size_t k = 0; k < nids && !known; k++)
            known = strcmp(ids[k], e->id) == 0;
        if (!known) {
            if (other != NULL)
                *other = e->id;
            return true;
        }
    }
    return false;
}

bool mw_report_state_set(mw_report_state *s, const char *id, const char *dest,
                         mw_report_status st, const char *domain, time_t begin, time_t end,
                         time_t now, char *err, size_t errlen)
{
    mw_buf p = MW_BUF_INIT;
    unsigned attempts = 0;
    bool ok;

    if (!mw_report_state_key_ok(id) || !mw_report_state_key_ok(dest) ||
        !mw_report_state_key_ok(domain)) {
        snprintf(err, errlen, "report state: unusable id, destination or domain");
        return false;
    }
    (void)mw_report_state_get(s, id, dest, &attempts);
    if (st == MW_RS_SENDING)
        attempts++;
    mw_buf_printf(&p, "R %s %s %s %lld %u %s %lld %lld", id, dest, mw_report_status_name(st),
                  (long long)now, attempts, domain, (long long)begin, (long long)end);
    ok = append(s, mw_buf_cstr(&p), err, errlen);
    if (ok)
        r_apply(s, id, dest, st, (long long)now, attempts, domain, (long long)begin,
                (long long)end);
    mw_buf_free(&p);
    return ok;
}

bool mw_report_state_dest_result(mw_report_state *s, const char *dest, bool got_5xx,
                                 unsigned after, unsigned suppress_for, time_t now, char *err,
                                 size_t errlen)
{
    const dentry *e = d_find(s, dest);
    unsigned n = got_5xx ? (e != NULL ? e->n5xx : 0) + 1 : 0;
    long long until = e != NULL ? e->until : 0;
    mw_buf p = MW_BUF_INIT;
    bool ok;

    if (!mw_report_state_key_ok(dest)) {
        snprintf(err, errlen, "report state: unusable destination");
        return false;
    }
    if (!got_5xx && e == NULL)
        return true;   /* nothing to remember */
    if (got_5xx && after > 0 && n >= after) {
        until = (long long)now + suppress_for;
        n = 0;   /* a new run of 5xx is counted after the suppression */
    }
    if (!got_5xx)
        until = 0;
    mw_buf_printf(&p, "D %s %u %lld", dest, n, until);
    ok = append(s, mw_buf_cstr(&p), err, errlen);
    if (ok)
        d_apply(s, dest, n, until);
    mw_buf_free(&p);
    return ok;
}

bool mw_report_state_suppressed(const mw_report_state *s, const char *dest, time_t now,
                                time_t *until)
{
    const dentry *e = d_find(s, dest);

    if (until != NULL)
        *until = e != NULL ? (time_t)e->until : 0;
    return e != NULL && e->until > (long long)now;
}

bool mw_report_state_period(mw_report_state *s, time_t begin, time_t end, bool done, time_t now,
                            char *err, size_t errlen)
{
    mw_buf p = MW_BUF_INIT;
    bool ok;

    mw_buf_printf(&p, "P %lld %lld %s %lld", (long long)begin, (long long)end,
                  done ? "done" : "open", (long long)now);
    ok = append(s, mw_buf_cstr(&p), err, errlen);
    if (ok)
        p_apply(s, (long long)begin, (long long)end, done, (long long)now);
    mw_buf_free(&p);
    return ok;
}

size_t mw_report_state_open_periods(const mw_report_state *s, time_t since, time_t *begins,
                                    time_t *ends, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < s->np && n < max; i++) {
        if (s->p[i].done || s->p[i].end <= (long long)since)
            continue;
        begins[n] = (time_t)s->p[i].begin;
        ends[n] = (time_t)s->p[i].end;
        n++;
    }
    return n;
}
