/*
 * reports_in.c - `mailwarden reports-in`: read the DMARC aggregate reports
 * other receivers send about our domains, keep them in a small SQLite
 * store, and say what they mean.
 *
 *   mailwarden reports-in import  [--db FILE] PATH...
 *   mailwarden reports-in summary [--db FILE] [--domain D] [--since 7d|all] [--until T] [--json]
 *   mailwarden reports-in html    [--db FILE] [--domain D] [--since 7d|all] [--until T] -o FILE
 *
 * Inputs (import): a Maildir (a directory with cur/ and new/: every file a
 * mail), an mbox (a file starting with "From "), a directory (walked,
 * dot-files skipped, at most 8 levels), or a file: plain XML, gzip, zip
 * or one mail.  checks/rptin_unpack.c finds the reports, rptin_xml.c
 * parses each, reports_in_store.c stores each in one transaction.
 *
 * Output (import): one line per report ("stored", "already stored") and
 * per error ("error: WHERE: WHY"), then "summary: N stored, N already
 * stored, N errors".  Exit 0 when nothing failed, 1 when anything did
 * (the good reports are stored all the same), 2 for usage errors.
 * Strings from the reports are escaped before they are printed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "reports_in.h"
#include "strutil.h"
#include "tools.h"
#include "fileio.h"

#define MAX_WALK_DEPTH 8

typedef struct imp {
    mw_rin_db *db;
    size_t     stored, dup, errors;
} imp;

static void say(FILE *f, const char *prefix, const char *s, const char *rest)
{
    mw_buf b = MW_BUF_INIT;
    mw_str_printable(&b, s, strlen(s), 600);
    fprintf(f, "%s%s%s\n", prefix, mw_buf_cstr(&b), rest ? rest : "");
    mw_buf_free(&b);
}

static void on_error(const char *name, const char *why, void *arg)
{
    imp *im = arg;
    im->errors++;
    mw_buf b = MW_BUF_INIT;
    mw_str_printable(&b, name, strlen(name), 300);
    mw_buf_puts(&b, ": ");
    mw_str_printable(&b, why, strlen(why), 400);
    fprintf(stderr, "error: %s\n", mw_buf_cstr(&b));
    mw_buf_free(&b);
}

static bool on_doc(const char *name, const char *xml, size_t len, void *arg)
{
    imp *im = arg;
    mw_rptin_report r;
    char why[512];
    if (!mw_rptin_parse(xml, len, &r, why, sizeof why)) {
        on_error(name, why, im);
        return true;
    }
    mw_rin_status st = mw_rin_store(im->db, &r, name, why, sizeof why);
    if (st == MW_RIN_FAIL) {
        on_error(name, why, im);
    } else {
        unsigned long long msgs = 0;
        for (size_t i = 0; i < r.nrows; i++)
            msgs += r.rows[i].count;
        mw_buf b = MW_BUF_INIT;
        mw_buf_puts(&b, st == MW_RIN_STORED ? "stored: " : "already stored: ");
        mw_str_printable(&b, r.org_name, strlen(r.org_name), 120);
        mw_buf_puts(&b, " ");
        mw_str_printable(&b, r.report_id, strlen(r.report_id), 120);
        mw_buf_puts(&b, " domain ");
        mw_str_printable(&b, r.domain, strlen(r.domain), 255);
        mw_buf_printf(&b, " (%zu rows, %llu messages, RFC %d format) from ", r.nrows, msgs, r.format);
        mw_str_printable(&b, name, strlen(name), 300);
        printf("%s\n", mw_buf_cstr(&b));
        mw_buf_free(&b);
        if (st == MW_RIN_STORED)
            im->stored++;
        else
            im->dup++;
    }
    mw_rptin_report_clear(&r);
    return true;
}

/* Read a whole file, refusing one past MW_RPTIN_MAX_INPUT. */
static unsigned char *slurp(const char *path, size_t *len, imp *im)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    char why[256];
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(why, sizeof why, "cannot read: %s", strerror(errno));
        on_error(path, why, im);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || (unsigned long long)st.st_size > MW_RPTIN_MAX_INPUT) {
        if (S_ISREG(st.st_mode))
            snprintf(why, sizeof why, "file of %lld bytes is larger than the limit of %u bytes",
                     (long long)st.st_size, MW_RPTIN_MAX_INPUT);
        else
            snprintf(why, sizeof why, "not a regular file");
        on_error(path, why, im);
        close(fd);
        return NULL;
    }
    size_t cap = (size_t)st.st_size;
    unsigned char *buf = mw_malloc(cap + 1);
    size_t n = mw_read_full(fd, buf, cap);
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* An mbox: messages start at "From " lines (at the start or after a newline). */
static void import_mbox(imp *im, const char *path, const unsigned char *d, size_t n)
{
    size_t start = 0, idx = 0;
    for (size_t p = 0;;) {
        const unsigned char *nl = memchr(d + p, '\n', n - p);
        size_t next = nl ? (size_t)(nl - d) + 1 : n;
        bool from_line = next < n && n - next >= 5 && memcmp(d + next, "From ", 5) == 0;
        if (next >= n || from_line) {
            /* message body: after its "From " line up to here */
            const unsigned char *m = d + start;
            const unsigned char *e = memchr(m, '\n', next - start);
            size_t body = e ? (size_t)(e - m) + 1 : next - start;
            char name[PATH_MAX + 64];
            snprintf(name, sizeof name, "%s: message %zu", path, ++idx);
            mw_rptin_unpack(name, m + body, next - start - body, on_doc, on_error, im);
            if (next >= n)
                break;
            start = next;
        }
        p = next;
    }
}

static void import_path(imp *im, const char *path, int depth);

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void import_dir(imp *im, const char *path, int depth)
{
    if (depth > MAX_WALK_DEPTH) {
        on_error(path, "directories nested too deep: skipped", im);
        return;
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        char why[256];
        snprintf(why, sizeof why, "cannot read directory: %s", strerror(errno));
        on_error(path, why, im);
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        names = mw_reallocarray(names, n + 1, sizeof *names);
        names[n++] = mw_strdup(de->d_name);
    }
    closedir(dir);
    if (n > 1)   /* (qsort with NULL, 0 is undefined) */
        qsort(names, n, sizeof *names, cmpstr);
    for (size_t i = 0; i < n; i++) {
        char sub[PATH_MAX];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, names[i]) < sizeof sub)
            import_path(im, sub, depth + 1);
        free(names[i]);
    }
    free(names);
}

static void import_path(imp *im, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", strerror(errno));
        on_error(path, why, im);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        /* a Maildir is walked the same way (its tmp/ holds mail being written: skipped) */
        char cur[PATH_MAX], nw[PATH_MAX];
        struct stat s1, s2;
        snprintf(cur, sizeof cur, "%s/cur", path);
        snprintf(nw, sizeof nw, "%s/new", path);
        if (stat(cur, &s1) == 0 && S_ISDIR(s1.st_mode) && stat(nw, &s2) == 0 && S_ISDIR(s2.st_mode)) {
            import_dir(im, nw, depth + 1);
            import_dir(im, cur, depth + 1);
        } else {
            import_dir(im, path, depth);
        }
        return;
    }
    size_t len;
    unsigned char *d = slurp(path, &len, im);
    if (d == NULL)
        return;
    if (len >= 5 && memcmp(d, "From ", 5) == 0)
        import_mbox(im, path, d, len);
    else
        mw_rptin_unpack(path, d, len, on_doc, on_error, im);
    free(d);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mailwarden reports-in import  [--db FILE] PATH...\n"
               "       mailwarden reports-in summary [--db FILE] [--domain D] [--since 7d|all] [--until T] "
               "[--json]\n"
               "       mailwarden reports-in html    [--db FILE] [--domain D] [--since 7d|all] [--until T] "
               "-o FILE\n"
               "\n"
               "Read the DMARC aggregate reports you receive (Maildir, mbox, .xml, .gz, .zip, .eml or a\n"
               "directory of them) into a store, and show per sending source what passes and fails\n"
               "SPF, DKIM and DMARC, the share ready for p=reject and what changed since the period\n"
               "before.\n"
               "  --db FILE     the store (default %s)\n"
               "  --domain D    only reports about policy domain D\n"
               "  --since S     the period: Nd, Nh or Nw before --until (default 7d), or all\n"
               "  --until T     end of the period: seconds since the epoch or YYYY-MM-DD (default now)\n"
               "  --json        summary as JSON\n"
               "  -o FILE       html: the page to write (one self-contained file, no script)\n",
               MW_REPORTS_IN_DB);
}

static bool parse_since(const char *s, long long *secs)
{
    if (strcmp(s, "all") == 0) {
        *secs = -1;
        return true;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || v > 100000)
        return false;
    long long unit = *end == 'd' ? 86400 : *end == 'h' ? 3600 : *end == 'w' ? 604800 : 0;
    if (unit == 0 || end[1] != '\0')
        return false;
    *secs = v * unit;
    return true;
}

static bool parse_until(const char *s, long long *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *e = strptime(s, "%Y-%m-%d", &tm);
    if (e && *e == '\0') {
        *t = (long long)timegm(&tm);
        return true;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return false;
    *t = v;
    return true;
}

/* Write data to path atomically (temp file, fsync, rename). */
static bool write_file(const char *path, const mw_buf *b)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path) >= sizeof tmp)
        return false;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return false;
    bool ok = mw_write_all(fd, b->data, b->len) && fchmod(fd, 0644) == 0 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    unlink(tmp);
    return false;
}

int mw_cmd_reports_in(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const char *db_path = MW_REPORTS_IN_DB, *domain = NULL, *out = NULL;
    long long since = 7 * 86400, until = (long long)time(NULL);
    bool json = false;
    const char **paths = mw_calloc((size_t)argc, sizeof *paths);
    size_t npaths = 0;
    int rc = 2;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            rc = 0;
            goto done;
        } else if (strcmp(a, "--db") == 0 && has) {
            db_path = argv[++i];
        } else if (strcmp(a, "--domain") == 0 && has) {
            domain = argv[++i];
        } else if (strcmp(a, "--since") == 0 && has) {
            if (!parse_since(argv[++i], &since)) {
                fprintf(stderr, "mailwarden reports-in: --since wants Nd, Nh, Nw or all\n");
                goto done;
            }
        } else if (strcmp(a, "--until") == 0 && has) {
            if (!parse_until(argv[++i], &until)) {
                fprintf(stderr, "mailwarden reports-in: --until wants seconds or YYYY-MM-DD\n");
                goto done;
            }
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "-o") == 0 && has) {
            out = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "mailwarden reports-in: unknown option or missing value: %s\n", a);
            usage(stderr);
            goto done;
        } else {
            paths[npaths++] = a;
        }
    }
    bool is_import = strcmp(sub, "import") == 0, is_sum = strcmp(sub, "summary") == 0,
         is_html = strcmp(sub, "html") == 0;
    if ((!is_import && !is_sum && !is_html) || (is_import && npaths == 0) || (!is_import && npaths) ||
        (is_html && out == NULL)) {
        usage(stderr);
        goto done;
    }
    char why[512];
    mw_rin_db *db = mw_rin_open(db_path, why, sizeof why);
    if (db == NULL) {
        say(stderr, "mailwarden reports-in: ", why, NULL);
        rc = 1;
        goto done;
    }
    if (is_import) {
        imp im = {.db = db};
        for (size_t i = 0; i < npaths; i++)
            import_path(&im, paths[i], 0);
        printf("summary: %zu stored, %zu already stored, %zu errors\n", im.stored, im.dup, im.errors);
        rc = im.errors ? 1 : 0;
    } else {
        mw_rin_summary s;
        long long from = since < 0 ? LLONG_MIN : until - since;
        if (!mw_rin_summarise(db, domain, from, until, &s, why, sizeof why)) {
            say(stderr, "mailwarden reports-in: ", why, NULL);
            rc = 1;
        } else {
            mw_buf b = MW_BUF_INIT;
            if (is_html)
                mw_rin_html(&s, &b);
            else if (json)
                mw_rin_json(&s, &b);
            else
                mw_rin_text(&s, &b);
            if (is_html) {
                rc = write_file(out, &b) ? 0 : 1;
                if (rc)
                    fprintf(stderr, "mailwarden reports-in: cannot write %s: %s\n", out, strerror(errno));
                else
                    printf("wrote %s (%zu sources, %llu messages)\n", out, s.cur.nsrc, s.cur.messages);
            } else {
                fwrite(b.data ? b.data : "", 1, b.len, stdout);
                rc = 0;
            }
            mw_buf_free(&b);
        }
        mw_rin_summary_free(&s);
    }
    mw_rin_close(&db);
done:
    free(paths);
    return rc;
}
