/*
 * reports_in_store.c - the on-disk store of received DMARC aggregate
 * reports: one SQLite file (default /var/lib/mailwarden/reports-in.db).
 *
 * Schema (version 1, in table meta):
 *   reports(id, org, report_id, email, domain, begin_t, end_t, p, sp, pct,
 *           format, origin, imported)   UNIQUE(org, report_id)
 *   rows(report -> reports.id, source_ip, count, disposition, dkim_aligned,
 *        spf_aligned, header_from, envelope_from, dkim_result, dkim_domain,
 *        spf_result, spf_domain, reason)
 *
 * Atomicity: each report is stored in one BEGIN IMMEDIATE ... COMMIT; any
 * failure rolls the whole report back, so a report is in the store whole
 * or not at all, and a crash mid-import leaves the earlier reports intact
 * (SQLite's journal).  Deduplication is the UNIQUE key: re-reading a
 * mailbox stores nothing twice.
 *
 * Test hook: MW_REPORTS_IN_TEST_FAIL_ROW=N makes the N-th row insert of a
 * report fail (as a full disk would), to prove the rollback.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "alloc.h"
#include "reports_in.h"

struct mw_rin_db {
    sqlite3 *db;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta(k, v) VALUES('schema', '1');"
    "CREATE TABLE IF NOT EXISTS reports(id INTEGER PRIMARY KEY, org TEXT NOT NULL,"
    " report_id TEXT NOT NULL, email TEXT, domain TEXT NOT NULL, begin_t INTEGER NOT NULL,"
    " end_t INTEGER NOT NULL, p TEXT, sp TEXT, pct INTEGER, format INTEGER, origin TEXT,"
    " imported INTEGER NOT NULL, UNIQUE(org, report_id));"
    "CREATE TABLE IF NOT EXISTS rows(report INTEGER NOT NULL REFERENCES reports(id) ON DELETE CASCADE,"
    " source_ip TEXT NOT NULL, count INTEGER NOT NULL, disposition TEXT, dkim_aligned TEXT,"
    " spf_aligned TEXT, header_from TEXT, envelope_from TEXT, dkim_result TEXT, dkim_domain TEXT,"
    " spf_result TEXT, spf_domain TEXT, reason TEXT);"
    "CREATE INDEX IF NOT EXISTS rows_report ON rows(report);"
    "CREATE INDEX IF NOT EXISTS rows_source ON rows(source_ip);"
    "CREATE INDEX IF NOT EXISTS reports_end ON reports(domain, end_t);";

static void sqlerr(sqlite3 *db, const char *what, char *why, size_t whylen)
{
    snprintf(why, whylen, "store: %s: %s", what, db ? sqlite3_errmsg(db) : "out of memory");
}

mw_rin_db *mw_rin_open(const char *path, char *why, size_t whylen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(why, whylen, "store %s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    char *err = NULL;
    if (sqlite3_exec(db, "PRAGMA foreign_keys=ON;", NULL, NULL, &err) != SQLITE_OK ||
        sqlite3_exec(db, SCHEMA, NULL, NULL, &err) != SQLITE_OK) {
        snprintf(why, whylen, "store %s: %s", path, err ? err : "schema failed");
        sqlite3_free(err);
        sqlite3_close(db);
        return NULL;
    }
    mw_rin_db *h = mw_calloc(1, sizeof *h);
    h->db = db;
    return h;
}

void mw_rin_close(mw_rin_db **db)
{
    if (*db == NULL)
        return;
    sqlite3_close((*db)->db);
    free(*db);
    *db = NULL;
}

static bool exec(sqlite3 *db, const char *sql, char *why, size_t whylen)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        sqlerr(db, sql, why, whylen);
        return false;
    }
    return true;
}

static void bt(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

mw_rin_status mw_rin_store(mw_rin_db *h, const mw_rptin_report *r, const char *origin, char *why,
                           size_t whylen)
{
    sqlite3 *db = h->db;
    const char *fail_env = getenv("MW_REPORTS_IN_TEST_FAIL_ROW");
    long fail_row = fail_env ? atol(fail_env) : 0;
    if (!exec(db, "BEGIN IMMEDIATE", why, whylen))
        return MW_RIN_FAIL;
    sqlite3_stmt *st = NULL;
    mw_rin_status res = MW_RIN_FAIL;
    if (sqlite3_prepare_v2(db,
                           "INSERT OR IGNORE INTO reports(org, report_id, email, domain, begin_t, end_t, p, sp,"
                           " pct, format, origin, imported) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlerr(db, "prepare", why, whylen);
        goto out;
    }
    bt(st, 1, r->org_name);
    bt(st, 2, r->report_id);
    bt(st, 3, r->email);
    bt(st, 4, r->domain);
    sqlite3_bind_int64(st, 5, r->begin);
    sqlite3_bind_int64(st, 6, r->end);
    bt(st, 7, r->p);
    bt(st, 8, r->sp);
    if (r->pct >= 0)
        sqlite3_bind_int(st, 9, r->pct);
    sqlite3_bind_int(st, 10, r->format);
    bt(st, 11, origin);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)time(NULL));
    if (sqlite3_step(st) != SQLITE_DONE) {
        sqlerr(db, "insert report", why, whylen);
        goto out;
    }
    if (sqlite3_changes(db) == 0) {
        res = MW_RIN_DUP;
        goto out;
    }
    sqlite3_int64 id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO rows(report, source_ip, count, disposition, dkim_aligned, spf_aligned,"
                           " header_from, envelope_from, dkim_result, dkim_domain, spf_result, spf_domain,"
                           " reason) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlerr(db, "prepare", why, whylen);
        goto out;
    }
    for (size_t i = 0; i < r->nrows; i++) {
        const mw_rptin_row *w = &r->rows[i];
        if (fail_row > 0 && (size_t)fail_row == i + 1) {
            snprintf(why, whylen, "store: row %zu: failure injected (MW_REPORTS_IN_TEST_FAIL_ROW)", i + 1);
            goto out;
        }
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        bt(st, 2, w->source_ip);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)w->count);
        bt(st, 4, w->disposition);
        bt(st, 5, w->dkim_aligned);
        bt(st, 6, w->spf_aligned);
        bt(st, 7, w->header_from);
        bt(st, 8, w->envelope_from);
        bt(st, 9, w->dkim_result);
        bt(st, 10, w->dkim_domain);
        bt(st, 11, w->spf_result);
        bt(st, 12, w->spf_domain);
        bt(st, 13, w->reason);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlerr(db, "insert row", why, whylen);
            goto out;
        }
    }
    res = MW_RIN_STORED;
out:
    sqlite3_finalize(st);
    if (res == MW_RIN_STORED) {
        if (!exec(db, "COMMIT", why, whylen)) {
            res = MW_RIN_FAIL;
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        }
    } else {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    return res;
}

static const char Q_SOURCES[] =
    "SELECT w.source_ip, SUM(w.count),"
    " SUM(CASE WHEN w.spf_result='pass' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.dkim_result='pass' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.spf_aligned='pass' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.dkim_aligned='pass' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.spf_aligned='pass' OR w.dkim_aligned='pass' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.disposition='quarantine' THEN w.count ELSE 0 END),"
    " SUM(CASE WHEN w.disposition='reject' THEN w.count ELSE 0 END),"
    " (SELECT w2.header_from FROM rows w2 JOIN reports r2 ON w2.report=r2.id"
    "   WHERE w2.source_ip=w.source_ip AND r2.end_t>?1 AND r2.end_t<=?2 AND (?3 IS NULL OR r2.domain=?3)"
    "   GROUP BY w2.header_from ORDER BY SUM(w2.count) DESC, w2.header_from LIMIT 1)"
    " FROM rows w JOIN reports r ON w.report=r.id"
    " WHERE r.end_t>?1 AND r.end_t<=?2 AND (?3 IS NULL OR r.domain=?3)"
    " GROUP BY w.source_ip ORDER BY SUM(w.count) DESC, w.source_ip";

static bool period(sqlite3 *db, const char *domain, long long from, long long to, mw_rin_period *p, char *why,
                   size_t whylen)
{
    memset(p, 0, sizeof *p);
    p->from = from;
    p->to = to;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, Q_SOURCES, -1, &st, NULL) != SQLITE_OK) {
        sqlerr(db, "prepare", why, whylen);
        return false;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (domain)
        bt(st, 3, domain);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (p->nsrc == cap) {
            cap = cap ? cap * 2 : 16;
            p->src = mw_reallocarray(p->src, cap, sizeof *p->src);
        }
        mw_rin_source *s = &p->src[p->nsrc++];
        memset(s, 0, sizeof *s);
        s->ip = mw_strdup((const char *)sqlite3_column_text(st, 0));
        unsigned long long *f[] = {&s->messages,   &s->spf_pass,   &s->dkim_pass,   &s->spf_aligned,
                                   &s->dkim_aligned, &s->dmarc_pass, &s->quarantined, &s->rejected};
        for (int i = 0; i < 8; i++)
            *f[i] = (unsigned long long)sqlite3_column_int64(st, i + 1);
        const unsigned char *hf = sqlite3_column_text(st, 9);
        s->header_from = mw_strdup(hf ? (const char *)hf : "");
        p->messages += s->messages;
        p->dmarc_pass += s->dmarc_pass;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sqlerr(db, "query", why, whylen);
        return false;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT COUNT(*) FROM reports WHERE end_t>?1 AND end_t<=?2 AND (?3 IS NULL OR domain=?3)",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlerr(db, "prepare", why, whylen);
        return false;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (domain)
        bt(st, 3, domain);
    if (sqlite3_step(st) == SQLITE_ROW)
        p->reports = (unsigned long long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return true;
}

bool mw_rin_summarise(mw_rin_db *h, const char *domain, long long from, long long to, mw_rin_summary *s,
                      char *why, size_t whylen)
{
    memset(s, 0, sizeof *s);
    s->domain = domain;
    if (!period(h->db, domain, from, to, &s->cur, why, whylen))
        return false;
    if (from != LLONG_MIN && to - from > 0 && from - (to - from) < from) {
        if (!period(h->db, domain, from - (to - from), from, &s->prev, why, whylen))
            return false;
        s->compared = true;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h->db,
                           "SELECT DISTINCT domain FROM reports WHERE end_t>?1 AND end_t<=?2"
                           " AND (?3 IS NULL OR domain=?3) ORDER BY domain",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlerr(h->db, "prepare", why, whylen);
        return false;
    }
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    if (domain)
        bt(st, 3, domain);
    while (sqlite3_step(st) == SQLITE_ROW) {
        s->domains = mw_reallocarray(s->domains, s->ndomains + 1, sizeof *s->domains);
        s->domains[s->ndomains++] = mw_strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return true;
}

static void period_free(mw_rin_period *p)
{
    for (size_t i = 0; i < p->nsrc; i++) {
        free(p->src[i].ip);
        free(p->src[i].header_from);
    }
    free(p->src);
    memset(p, 0, sizeof *p);
}

void mw_rin_summary_free(mw_rin_summary *s)
{
    period_free(&s->cur);
    period_free(&s->prev);
    for (size_t i = 0; i < s->ndomains; i++)
        free(s->domains[i]);
    free(s->domains);
    s->domains = NULL;
    s->ndomains = 0;
}
