/*
 * report.c - `mailwarden report`: DMARC aggregate reports from the history.
 *
 *   mailwarden report [-c FILE] [--history DIR]... [--period yesterday|DATE|DATE..DATE]
 *                     [--out DIR] [--send] [--dry-run] [--format rfc9990|rfc7489]
 *                     [--dns ADDR[@PORT]]...
 *
 * Purpose
 *   Read the history directories (one per MTA host), build one report per
 *   (policy domain, period), write the gzip files (--out) and/or mail them
 *   to the rua addresses (--send) through the configured relay; --dry-run
 *   shows what would be sent without sending or recording anything.
 *
 * Delivery rules (docs/reports.md)
 *   - Only whole periods that are over are mailed.
 *   - A rua outside the policy domain's organizational domain is mailed only
 *     when <policy-domain>._report._dmarc.<rua-domain> has a "v=DMARC1" TXT
 *     record (RFC 9990 "Verifying External Destinations"; report_dest.c);
 *     DNS trouble defers, absence refuses; the record's own rua (same host
 *     only) replaces the address.
 *   - "!size" suffixes of the rua: ignored in the RFC 9990 format, honoured
 *     (larger mails not sent to that rua) in the RFC 7489 format.
 *   - Hostile input is refused alone: a rua that is not a safe mailto:
 *     address (mw_report_rua_parse), rua past report.max_destinations, a
 *     report whose policy domain is not a host name; each is printed
 *     escaped and counted in the summary, and none stops another
 *     destination, report or period.  Only a journal write the disk
 *     refuses stops the run.
 *   - report.pacing between two mails to the same destination domain;
 *     report.retries attempts with report.backoff (doubling) after a 4xx or
 *     a connection failure; a 5xx fails that mail, report.suppress_5xx_after
 *     5xx in a row suppress the address for report.suppress_5xx_for.
 *   - The state journal (report_state.c) is written before ("sending") and
 *     right after ("sent", once the relay said 250 to the final dot) each
 *     delivery; a rerun skips what is final and resends what is not.
 *     Periods a run left open (crash, deferred mail) are taken up again by
 *     later runs for 7 days.
 *
 * Test hooks
 *   MW_REPORT_TEST_DIE_AFTER=N: SIGKILL ourselves right after the N-th
 *   successful delivery was recorded (the crash-midway test).
 *   MW_REPORT_TEST_NOW=EPOCH: "now" for periods (yesterday, "not over yet").
 *
 * Exit status: 0 done (refusals by policy included), 1 some mail deferred
 * or failed or a history directory unreadable, 2 usage or config error.
 *
 * See also: report.h, smtp_client.h, docs/reports.md, mailwarden(8) REPORTS.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "dkim.h"
#include "dmarc.h"
#include "dns.h"
#include "report.h"
#include "smtp_client.h"
#include "privs.h"
#include "strutil.h"
#include "tools.h"
#include "fileio.h"

#define MAX_HISTORY   64
#define CATCHUP_DAYS  7
#define MAX_CATCHUP   64

typedef struct pace {
    char  *domain;
    time_t last;
} pace;

typedef struct verdict {        /* external destination verification, cached per run */
    char          *key;         /* "policy-domain rua-domain" */
    mw_report_dest d;           /* result, reason, the destination's own rua */
} verdict;

typedef struct run {
    mw_config        *cfg;
    mw_report_meta    meta;
    char             *org, *email, *receiver, *from;
    bool              send, dry_run;
    const char       *out_dir;
    mw_dns           *dns;
    mw_dmarc         *dmarc;
    mw_dkim_signer   *signer;
    mw_report_state  *state;
    mw_smtp          *smtp;
    pace             *paces;
    size_t            npaces;
    verdict          *verdicts;
    size_t            nverdicts;
    unsigned long     die_after, delivered;
    time_t            now;
    /* counters */
    unsigned          reports, written, sent, skipped, deferred, failed, refused, toobig,
                      suppressed;
    unsigned          bad_dest;      /* rua refused alone: not mailto, malformed, overlong */
    unsigned          over_limit;    /* rua past report.max_destinations */
    unsigned          bad_reports;   /* reports refused alone: bad domain, XML/gzip failure */
    bool              fatal;     /* state write failed: stop sending */
    bool              error;     /* something went wrong (exit 1) */
    bool              tls_hint;  /* the certificate verification hint was logged */
    mw_report_dest    vtmp;      /* an uncached (temporary) verification */
    const char      **part_ids;  /* the ids of the report being sent (its parts) */
    size_t            npart_ids;
} run;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailwarden report [-c FILE] [--history DIR]... [--period PERIOD]\n"
            "                         [--out DIR] [--send] [--dry-run] [--format rfc9990|rfc7489]\n"
            "                         [--dns ADDR[@PORT]]...\n"
            "\n"
            "Build DMARC aggregate reports from the history and write (--out) or mail (--send) them.\n"
            "  --history DIR   history directory (repeatable; default report.history_dirs, then history.dir)\n"
            "  --period P      yesterday (default), YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD (UTC days)\n"
            "  --out DIR       write receiver!domain!begin!end!id.xml.gz files into DIR\n"
            "  --send          mail each report to its rua addresses through report.relay_host\n"
            "  --dry-run       show what --send would do; send and record nothing\n"
            "  --format F      override report.format\n"
            "  --failure       send the queued RFC 9991 failure reports (report.failure_dir) instead\n");
}

/* ---- periods -------------------------------------------------------------------- */

static bool parse_date(const char *s, size_t len, time_t *out)
{
    char buf[16];
    struct tm tm;
    char *end;

    if (len != 10)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(&tm, 0, sizeof tm);
    end = strptime(buf, "%Y-%m-%d", &tm);
    if (end == NULL || *end != '\0')
        return false;
    *out = timegm(&tm);
    return *out != (time_t)-1;
}

/* [from, to) of a --period value (whole UTC days). */
static bool parse_period(const char *spec, time_t now, time_t *from, time_t *to)
{
    const char *dots = strstr(spec, "..");
    time_t a, b;

    if (strcmp(spec, "yesterday") == 0) {
        *to = now - now % 86400;
        *from = *to - 86400;
        return true;
    }
    if (strcmp(spec, "today") == 0) {
        *from = now - now % 86400;
        *to = *from + 86400;
        return true;
    }
    if (dots == NULL) {
        if (!parse_date(spec, strlen(spec), &a))
            return false;
        *from = a;
        *to = a + 86400;
        return true;
    }
    if (!parse_date(spec, (size_t)(dots - spec), &a) || !parse_date(dots + 2, strlen(dots + 2), &b) ||
        b < a)
        return false;
    *from = a;
    *to = b + 86400;
    return true;
}

static void fmt_utc(time_t t, char *out, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && len)
        out[0] = '\0';
}

/* ---- files ------------------------------------------------------------------------- */

/* Write data to dir/name atomically: temp (O_EXCL), fsync, rename. */
static bool write_file(const char *dir, const char *name, const mw_buf *data, char *err,
                       size_t errlen)
{
    mw_buf tmp = MW_BUF_INIT, fin = MW_BUF_INIT;
    bool ok = false;
    int fd;

    mw_buf_printf(&tmp, "%s/.%s.%ld.tmp", dir, name, (long)getpid());
    mw_buf_printf(&fin, "%s/%s", dir, name);
    (void)unlink(mw_buf_cstr(&tmp));
    fd = open(mw_buf_cstr(&tmp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&tmp), strerror(errno));
        goto out;
    }
    if (!mw_write_all(fd, data->data, data->len) || fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&tmp), strerror(errno));
        close(fd);
        (void)unlink(mw_buf_cstr(&tmp));
        goto out;
    }
    close(fd);
    if (rename(mw_buf_cstr(&tmp), mw_buf_cstr(&fin)) != 0) {
        snprintf(err, errlen, "%s: %s", mw_buf_cstr(&fin), strerror(errno));
        (void)unlink(mw_buf_cstr(&tmp));
        goto out;
    }
    ok = true;
out:
    mw_buf_free(&tmp);
    mw_buf_free(&fin);
    return ok;
}

/* ---- destinations -------------------------------------------------------------------- */

static const char *addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at != NULL ? at + 1 : addr;
}

/*
 * May reports for policy_domain go to rua_domain, and to which addresses?
 * (mw_report_dest_verify; cached per run except a temporary failure, so
 * the next report may retry.)  The result is owned by R.
 */
static const mw_report_dest *verify_destination(run *R, const char *policy_domain,
                                                const char *rua_domain)
{
    mw_buf key = MW_BUF_INIT;

    mw_buf_printf(&key, "%s %s", policy_domain, rua_domain);
    for (size_t i = 0; i < R->nverdicts; i++)
        if (strcmp(R->verdicts[i].key, mw_buf_cstr(&key)) == 0) {
            mw_buf_free(&key);
            return &R->verdicts[i].d;
        }
    mw_report_dest_verify(R->dns, R->dmarc, policy_domain, rua_domain, R->meta.format, &R->vtmp);
    if (R->vtmp.result == -1) {
        mw_buf_free(&key);
        return &R->vtmp;
    }
    R->verdicts = mw_reallocarray(R->verdicts, R->nverdicts + 1, sizeof *R->verdicts);
    R->verdicts[R->nverdicts].key = mw_buf_steal(&key);
    R->verdicts[R->nverdicts].d = R->vtmp;   /* moves the override list */
    memset(&R->vtmp, 0, sizeof R->vtmp);
    return &R->verdicts[R->nverdicts++].d;
}

/* Wait until report.pacing has passed since the last mail to domain. */
static void pace_wait(run *R, const char *domain)
{
    for (size_t i = 0; i < R->npaces; i++) {
        if (strcasecmp(R->paces[i].domain, domain) != 0)
            continue;
        time_t due = R->paces[i].last + (time_t)R->cfg->report_pacing_s;
        time_t now = time(NULL);
        if (due > now)
            sleep((unsigned)(due - now));
        return;
    }
}

static void pace_note(run *R, const char *domain)
{
    for (size_t i = 0; i < R->npaces; i++)
        if (strcasecmp(R->paces[i].domain, domain) == 0) {
            R->paces[i].last = time(NULL);
            return;
        }
    R->paces = mw_reallocarray(R->paces, R->npaces + 1, sizeof *R->paces);
    R->paces[R->npaces].domain = mw_strdup(domain);
    R->paces[R->npaces].last = time(NULL);
    R->npaces++;
}

static bool record(run *R, const char *id, const char *dest, mw_report_status st,
                   const mw_report *r)
{
    char err[512];

    /* send_report() refuses such destinations before anything is sent; a
     * field the journal cannot hold is never the disk's fault, so it must
     * never stop the run */
    if (!mw_report_state_key_ok(id) || !mw_report_state_key_ok(dest) ||
        !mw_report_state_key_ok(r->policy_domain)) {
        fprintf(stderr, "mailwarden report: %s: destination not recordable, refused\n",
                r->policy_domain);
        return false;
    }

    if (mw_report_state_set(R->state, id, dest, st, r->policy_domain, r->begin, r->end,
                            time(NULL), err, sizeof err))
        return true;
    fprintf(stderr, "mailwarden report: cannot record the state, stopping: %s\n", err);
    R->fatal = R->error = true;
    return false;
}

/* Deliver msg to addr with retries; records the outcome.  Returns the
 * final status recorded. */
static mw_report_status deliver(run *R, const mw_report *r, const char *id, const char *addr,
                                const mw_buf *msg)
{
    const mw_config *cfg = R->cfg;
    mw_smtp_result res;
    char err[512];

    for (unsigned attempt = 0;; attempt++) {
        if (R->smtp == NULL || !mw_smtp_usable(R->smtp)) {
            mw_smtp_close(&R->smtp);
            mw_smtp_options o = {.host = cfg->report_relay_host, .port = cfg->report_relay_port,
                                 .helo = cfg->hostname, .starttls = cfg->report_starttls,
                                 .tls_no_verify = !cfg->report_tls_verify,
                                 .tls_ca_file = cfg->report_tls_ca_file,
                                 .timeout_ms = cfg->report_timeout_s * 1000};
            R->smtp = mw_smtp_open(&o, &res);
        }
        if (R->smtp != NULL) {
            pace_wait(R, addr_domain(addr));
            if (!record(R, id, addr, MW_RS_SENDING, r))
                return MW_RS_SENDING;
            mw_smtp_sendmail(R->smtp, R->from, addr, msg->data, msg->len, &res);
            pace_note(R, addr_domain(addr));
        }
        if (R->smtp != NULL && res.status == MW_SMTP_OK) {
            /* first thing after the 250: the journal */
            if (!record(R, id, addr, MW_RS_SENT, r))
                return MW_RS_SENDING;
            (void)mw_report_state_dest_result(R->state, addr, false, cfg->report_suppress_5xx_after,
                                              cfg->report_suppress_5xx_for_s, time(NULL), err,
                                              sizeof err);
            R->delivered++;
            printf("  %s: sent%s (%s)\n", addr, mw_smtp_tls(R->smtp) ? " over TLS" : "", res.reply);
            fflush(stdout);
            if (R->die_after > 0 && R->delivered >= R->die_after)
                raise(SIGKILL);
            return MW_RS_SENT;
        }
        if (res.stage != NULL && strcmp(res.stage, "starttls") == 0 &&
            strstr(res.reply, "certificate verification failed") != NULL && !R->tls_hint) {
            fprintf(stderr, "mailwarden report: %s; report.tls_ca_file names the relay's CA, "
                            "report.tls_verify = false accepts any certificate\n", res.reply);
            R->tls_hint = true;
        }
        if (res.status == MW_SMTP_PERM) {
            if (!record(R, id, addr, MW_RS_FAILED, r))
                return MW_RS_SENDING;
            bool was = mw_report_state_suppressed(R->state, addr, time(NULL), NULL);
            if (!mw_report_state_dest_result(R->state, addr, true, cfg->report_suppress_5xx_after,
                                             cfg->report_suppress_5xx_for_s, time(NULL), err,
                                             sizeof err))
                fprintf(stderr, "mailwarden report: %s\n", err);
            bool now_s = mw_report_state_suppressed(R->state, addr, time(NULL), NULL);
            printf("  %s: failed at %s: %s%s\n", addr, res.stage ? res.stage : "?", res.reply,
                   !was && now_s ? " (destination now suppressed)" : "");
            return MW_RS_FAILED;
        }
        if (attempt >= cfg->report_retries) {
            if (!record(R, id, addr, MW_RS_DEFERRED, r))
                return MW_RS_SENDING;
            printf("  %s: deferred after %u attempt%s at %s: %s\n", addr, attempt + 1,
                   attempt ? "s" : "", res.stage ? res.stage : "?", res.reply);
            return MW_RS_DEFERRED;
        }
        unsigned delay = cfg->report_backoff_s << (attempt < 16 ? attempt : 16);
        printf("  %s: temporary failure at %s (%s); retry in %us\n", addr,
               res.stage ? res.stage : "?", res.reply, delay);
        fflush(stdout);
        if (R->smtp != NULL && !mw_smtp_usable(R->smtp))
            mw_smtp_close(&R->smtp);
        if (delay > 0)
            sleep(delay);
    }
}

/* s made printable for a log line (at most 120 input bytes rendered). */
static const char *esc(mw_buf *b, const char *s)
{
    mw_buf_reset(b);
    mw_str_printable(b, s, strlen(s), 120);
    return mw_buf_cstr(b);
}

/* One verified address of a report: journal state, suppression, size,
 * delivery.  Clears *all_final when the address is not final. */
static void send_one(run *R, const mw_report *r, const char *id, const char *filename,
                     const mw_buf *gz, const char *addr, unsigned long long limit,
                     const char *vwhy, bool *all_final)
{
    const mw_config *cfg = R->cfg;
    unsigned attempts = 0;
    mw_report_status st;

    st = R->state != NULL ? mw_report_state_get(R->state, id, addr, &attempts) : MW_RS_NONE;
    if (mw_report_status_final(st)) {
        printf("  %s: already %s\n", addr, mw_report_status_name(st));
        R->skipped++;
        return;
    }
    /* the same data under other ids: split differently by an earlier run */
    const char *other = NULL;
    if (R->state != NULL && st == MW_RS_NONE &&
        mw_report_state_sent_other(R->state, r->policy_domain, r->begin, r->end, addr,
                                   R->part_ids, R->npart_ids, &other)) {
        printf("  %s: already sent for this period as report %s (split differently by an "
               "earlier run): not sent again\n", addr, other);
        R->skipped++;
        return;
    }
    if (st == MW_RS_SENDING)
        printf("  %s: an earlier run was interrupted while sending: sending again\n", addr);
    time_t until = 0;
    if (R->state != NULL && mw_report_state_suppressed(R->state, addr, R->now, &until)) {
        char u[32];
        fmt_utc(until, u, sizeof u);
        printf("  %s: suppressed until %s after repeated 5xx\n", addr, u);
        R->suppressed++;
        if (!R->dry_run)
            (void)record(R, id, addr, MW_RS_SUPPRESSED, r);
        return;
    }
    mw_buf msg = MW_BUF_INIT;
    mw_report_mail mail = {.from = R->from, .to = addr, .filename = filename, .id = id,
                           .now = time(NULL), .msgid_host = R->receiver};
    mw_report_mime(r, &R->meta, &mail, gz, &msg);
    size_t nsig = 0;
    char swhy[300] = "";
    if (R->signer != NULL && cfg->dkim_sign)
        nsig = mw_report_sign(R->signer, R->from, &msg, swhy, sizeof swhy);
    unsigned long long max = cfg->report_max_size;
    if (limit > 0 && limit < max)
        max = limit;   /* a "!size" of the RFC 7489 format */
    if (msg.len > max) {
        printf("  %s: not sent: %zu bytes exceed the limit of %llu%s\n", addr, msg.len, max,
               max < cfg->report_max_size ? " (the rua's !size)" : "");
        R->toobig++;
        if (!R->dry_run)
            record(R, id, addr, MW_RS_TOOBIG, r);
        mw_buf_free(&msg);
        return;
    }
    if (R->dry_run) {
        printf("  %s: would send %zu bytes (%s; %s)\n", addr, msg.len, vwhy,
               nsig ? "DKIM-signed" : "unsigned");
        mw_buf_free(&msg);
        return;
    }
    if (nsig == 0 && swhy[0] != '\0')
        printf("  (not DKIM-signed: %s)\n", swhy);
    st = deliver(R, r, id, addr, &msg);
    mw_buf_free(&msg);
    switch (st) {
    case MW_RS_SENT: R->sent++; break;
    case MW_RS_FAILED: R->failed++; R->error = true; break;
    default: R->deferred++; R->error = true; *all_final = false; break;
    }
}

static bool seen_has(char **seen, size_t nseen, const char *addr)
{
    for (size_t k = 0; k < nseen; k++)
        if (strcasecmp(seen[k], addr) == 0)
            return true;
    return false;
}

/*
 * Handle every rua of one report.  Returns true when every destination
 * reached a final status.  A bad destination (not mailto:, malformed,
 * overlong, RFC 7489 size junk, past report.max_destinations) is refused
 * alone, printed escaped and counted; it is the same refusal on every run,
 * so it never holds its period open and never stops another destination
 * or report.  An external destination is verified first; when its
 * _report._dmarc record carries a rua, those addresses (same host)
 * replace it.  Only a journal the disk refuses stops the run (R->fatal).
 */
static bool send_report(run *R, const mw_report *r, const char *id, const char *filename,
                        const mw_buf *gz)
{
    const mw_config *cfg = R->cfg;
    bool all_final = true;
    char **seen = NULL;
    size_t nseen = 0;
    mw_buf eb = MW_BUF_INIT;

    if (r->nrua == 0)
        printf("  (no rua address published)\n");
    for (size_t i = 0; i < r->nrua && !R->fatal; i++) {
        char *addr = NULL, why[200] = "";
        unsigned long long limit = 0;

        if (!mw_report_rua_parse_fmt(r->rua[i], R->meta.format, &addr, &limit, why, sizeof why) ||
            !mw_report_state_key_ok(addr)) {
            printf("  \"%s\": refused: bad destination: %s\n", esc(&eb, r->rua[i]),
                   why[0] != '\0' ? why : "not recordable");
            R->bad_dest++;
            free(addr);
            continue;
        }
        if (seen_has(seen, nseen, addr)) {
            free(addr);
            continue;
        }
        /* final for this report already (sent, refused, ...): no DNS needed */
        unsigned attempts = 0;
        mw_report_status st = R->state != NULL ? mw_report_state_get(R->state, id, addr, &attempts)
                                               : MW_RS_NONE;
        if (mw_report_status_final(st) && nseen < cfg->report_max_destinations) {
            printf("  %s: already %s\n", addr, mw_report_status_name(st));
            R->skipped++;
            seen = mw_reallocarray(seen, nseen + 1, sizeof *seen);
            seen[nseen++] = addr;
            continue;
        }
        const mw_report_dest *v = verify_destination(R, r->policy_domain, addr_domain(addr));
        if (v->result == 0 || v->result < 0) {
            bool refused = v->result == 0;
            printf("  %s: %s (%s)\n", addr,
                   refused ? "refused: external destination not authorised"
                           : "deferred: cannot verify the external destination", v->why);
            if (refused)
                R->refused++;
            else {
                R->deferred++;
                all_final = false;
            }
            if (!R->dry_run)
                (void)record(R, id, addr, refused ? MW_RS_REFUSED : MW_RS_DEFERRED, r);
            free(addr);
            continue;
        }
        mw_report_target self = {addr, limit};
        const mw_report_target *t = v->noverride > 0 ? v->override : &self;
        size_t nt = v->noverride > 0 ? v->noverride : 1;
        if (v->noverride > 0)
            printf("  %s: replaced by the destination's own rua (%s)\n", addr, v->why);
        for (size_t k = 0; k < nt && !R->fatal; k++) {
            if (seen_has(seen, nseen, t[k].addr))
                continue;
            if (nseen >= cfg->report_max_destinations) {
                printf("  %s: refused: more than report.max_destinations (%u) destinations\n",
                       t[k].addr, cfg->report_max_destinations);
                R->over_limit++;
                continue;
            }
            seen = mw_reallocarray(seen, nseen + 1, sizeof *seen);
            seen[nseen++] = mw_strdup(t[k].addr);
            send_one(R, r, id, filename, gz, t[k].addr, t[k].limit, v->why, &all_final);
        }
        free(addr);
    }
    for (size_t k = 0; k < nseen; k++)
        free(seen[k]);
    free(seen);
    mw_buf_free(&eb);
    return all_final && !R->fatal;
}

/*
 * How many bytes of gzip XML fit in one report mail under report.max_size:
 * the mail of r with an empty attachment, the longest address and the
 * signature is the overhead (plus slack for the Date, counts and ids that
 * differ per part); base64 turns 57 bytes into a 78-byte line.
 */
static size_t gz_budget(run *R, const mw_report *r)
{
    mw_buf empty = MW_BUF_INIT, msg = MW_BUF_INIT;
    char to[255], id[33];

    memset(to, 'x', 64);
    to[64] = '@';
    for (size_t i = 65; i < 254; i++)
        to[i] = (i - 65) % 60 == 59 ? '.' : 'x';
    to[254] = '\0';
    memset(id, 'f', 32);
    id[32] = '\0';
    char *fname = mw_report_filename(r, &R->meta, id);
    mw_report_mail mail = {.from = R->from, .to = to, .filename = fname, .id = id,
                           .now = time(NULL), .msgid_host = R->receiver};
    mw_report_mime(r, &R->meta, &mail, &empty, &msg);
    char swhy[300];
    if (R->signer != NULL && R->cfg->dkim_sign)
        (void)mw_report_sign(R->signer, R->from, &msg, swhy, sizeof swhy);
    size_t overhead = msg.len + 512, max = R->cfg->report_max_size;
    free(fname);
    mw_buf_free(&msg);
    return max > overhead ? (max - overhead) / 78 * 57 : 1;
}

/* ---- one window ------------------------------------------------------------------------ */

/* Aggregate [from, to) and write/send its reports; the periods of the
 * window that are over are recorded as open, then done when every
 * destination of every report in them reached a final status. */
static void process_window(run *R, const char *const *dirs, size_t ndirs, time_t from, time_t to)
{
    mw_report_set set;
    char err[512], b[32], e[32];
    time_t pb[512], pe[512];
    bool pdone[512];
    size_t np = 0;

    fmt_utc(from, b, sizeof b);
    fmt_utc(to, e, sizeof e);
    if (!mw_report_aggregate(dirs, ndirs, from, to, R->cfg->report_interval_s, &set, err,
                             sizeof err)) {
        fprintf(stderr, "mailwarden report: %s\n", err);
        R->error = true;
    }
    printf("history %s .. %s: %zu records, %zu torn, %zu bad checksum, %zu other version, "
           "%zu files; %zu reports\n", b, e, set.stats.records, set.stats.torn,
           set.stats.bad_checksum, set.stats.bad_version, set.stats.files, set.n);
    if (set.bad_records > 0)
        printf("  %zu record%s refused alone (first: %s)\n", set.bad_records,
               set.bad_records == 1 ? "" : "s", set.bad_why);

    /* the periods of this window (for the journal) */
    bool sending = R->send && !R->dry_run && R->state != NULL;
    for (time_t t = from - from % R->cfg->report_interval_s; t < to && np < 512;
         t += R->cfg->report_interval_s) {
        if (t + (time_t)R->cfg->report_interval_s > R->now)
            break;   /* not over yet: never mailed */
        pb[np] = t;
        pe[np] = t + R->cfg->report_interval_s;
        pdone[np] = true;
        if (sending && !mw_report_state_period(R->state, pb[np], pe[np], false, time(NULL), err,
                                               sizeof err)) {
            fprintf(stderr, "mailwarden report: %s\n", err);
            R->fatal = R->error = true;
        }
        np++;
    }

    for (size_t i = 0; i < set.n && !R->fatal; i++) {
        const mw_report *r = &set.r[i];

        R->reports++;
        fmt_utc(r->begin, b, sizeof b);
        fmt_utc(r->end, e, sizeof e);
        /* the policy domain becomes a file name, a Subject, a journal field and
         * a DNS name: the aggregator refuses bad ones, this is the last gate */
        if (!mw_domain_valid(r->policy_domain) || !mw_report_state_key_ok(r->policy_domain)) {
            mw_buf eb = MW_BUF_INIT;
            mw_str_printable(&eb, r->policy_domain, strlen(r->policy_domain), 120);
            printf("report \"%s\" %s .. %s: refused: the policy domain is not a host name\n",
                   mw_buf_cstr(&eb), b, e);
            mw_buf_free(&eb);
            R->bad_reports++;
            goto next;
        }
        err[0] = '\0';
        mw_report_parts parts;
        if (!mw_report_split(r, &R->meta, gz_budget(R, r), &parts, err, sizeof err)) {
            printf("report %s %s .. %s: refused: %s\n", r->policy_domain, b, e, err);
            fprintf(stderr, "mailwarden report: %s: %s\n", r->policy_domain, err);
            R->bad_reports++;
            R->error = true;
            goto next;
        }
        if (parts.n > 1)
            printf("report %s %s .. %s rows=%zu messages=%llu: too large for report.max_size "
                   "(%u bytes): split by source range into %zu reports\n", r->policy_domain, b, e,
                   r->nrows, r->messages, R->cfg->report_max_size, parts.n);
        R->part_ids = mw_calloc(parts.n, sizeof *R->part_ids);
        R->npart_ids = parts.n;
        for (size_t k = 0; k < parts.n; k++)
            R->part_ids[k] = parts.p[k].id;
        for (size_t k = 0; k < parts.n && !R->fatal; k++) {
            const mw_report_part *pt = &parts.p[k];
            char *pname = mw_report_filename(&pt->view, &R->meta, pt->id);
            char range[160] = "";
            if (parts.n > 1)
                snprintf(range, sizeof range, " part=%zu/%zu sources=%s..%s", k + 1, parts.n,
                         pt->view.rows[0].source_ip, pt->view.rows[pt->view.nrows - 1].source_ip);
            printf("report %s %s .. %s id=%s rows=%zu messages=%llu file=%s%s\n", r->policy_domain,
                   b, e, pt->id, pt->view.nrows, pt->view.messages, pname, range);
            if (R->out_dir != NULL) {
                if (write_file(R->out_dir, pname, &pt->gz, err, sizeof err))
                    R->written++;
                else {
                    fprintf(stderr, "mailwarden report: %s\n", err);
                    R->error = true;
                }
            }
            if ((R->send || R->dry_run) && r->end > R->now) {
                printf("  (period not over yet: not mailed)\n");
            } else if (R->send || R->dry_run) {
                bool fin = send_report(R, &pt->view, pt->id, pname, &pt->gz);
                for (size_t q = 0; q < np; q++)
                    if (pb[q] == r->begin && !fin)
                        pdone[q] = false;
            }
            free(pname);
        }
        free(R->part_ids);
        R->part_ids = NULL;
        R->npart_ids = 0;
        mw_report_parts_free(&parts);
    next:;
    }
    if (sending && !R->fatal)
        for (size_t k = 0; k < np; k++)
            if (pdone[k] && !mw_report_state_period(R->state, pb[k], pe[k], true, time(NULL), err,
                                                    sizeof err)) {
                fprintf(stderr, "mailwarden report: %s\n", err);
                R->fatal = R->error = true;
            }
    mw_report_set_free(&set);
}

/* ---- the command ------------------------------------------------------------------------ */

/* v, or prefix + fallback when v is empty. */
static char *dflt(const char *v, const char *prefix, const char *fallback)
{
    mw_buf b = MW_BUF_INIT;
    if (v != NULL && v[0] != '\0')
        return mw_strdup(v);
    mw_buf_printf(&b, "%s%s", prefix, fallback);
    return mw_buf_steal(&b);
}

static bool setup_delivery(run *R)
{
    const mw_config *cfg = R->cfg;
    char err[512];
    mw_config_errors errs = {0};

    mw_dns_options dopt = {
        .forwarders = (const char *const *)cfg->dns_forwarders, .nforwarders = cfg->ndns_forwarders,
        .resolv_conf = cfg->dns_resolv_conf, .timeout_ms = cfg->dns_timeout_ms,
        .trust_anchor_file = cfg->dns_trust_anchor[0] != '\0' ? cfg->dns_trust_anchor : NULL,
        .use_tcp = cfg->dns_tcp};
    R->dns = mw_dns_create(&dopt, err, sizeof err);
    if (R->dns == NULL) {
        fprintf(stderr, "mailwarden report: resolver: %s\n", err);
        return false;
    }
    mw_dmarc_options mo = {.mode = cfg->dmarc_mode == MW_CFG_DMARC_RFC7489 ? MW_DMARC_MODE_RFC7489
                                                                            : MW_DMARC_MODE_RFC9989,
                           .psl_file = cfg->dmarc_psl_file, .timeout_ms = cfg->dns_timeout_ms};
    R->dmarc = mw_dmarc_create(R->dns, &mo, err, sizeof err);
    if (R->dmarc == NULL) {
        fprintf(stderr, "mailwarden report: dmarc: %s\n", err);
        return false;
    }
    R->signer = mw_dkim_signer_create(cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "mailwarden report: dkim: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    if (R->signer == NULL)
        return false;
    R->state = mw_report_state_open(cfg->report_state_dir, R->dry_run, R->now, err, sizeof err);
    if (R->state == NULL) {
        fprintf(stderr, "mailwarden report: state: %s\n", err);
        return false;
    }
    return true;
}

/* See the call.  false after a message on stderr. */
static bool report_drop_privileges(const mw_config *cfg)
{
    mw_privs pv;
    char err[512];

    if (geteuid() != 0)
        return true;
    if (mw_privs_resolve(cfg->user, cfg->group, &pv, err, sizeof err) != 0 ||
        mw_privs_drop(&pv, err, sizeof err) != 0) {
        fprintf(stderr, "mailwarden report: %s\n", err);
        return false;
    }
    if (geteuid() == 0)
        fprintf(stderr, "mailwarden report: warning: running as root with no `user` configured: the files "
                        "it writes (report.state_dir, --out) will belong to root\n");
    return true;
}

int mw_cmd_report(int argc, char **argv)
{
    mw_cli cli;
    const char *hist[MAX_HISTORY];
    size_t nhist = 0;
    const char *period = NULL, *format = NULL;
    run R;
    int rc = 2;
    bool failure = false;

    memset(&cli, 0, sizeof cli);
    memset(&R, 0, sizeof R);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int c;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--send") == 0) {
            R.send = true;
            continue;
        }
        if (strcmp(a, "--failure") == 0) {
            failure = true;
            continue;
        }
        if (strcmp(a, "--dry-run") == 0 || strcmp(a, "-n") == 0) {
            R.dry_run = true;
            continue;
        }
        if (strcmp(a, "--history") == 0 || strcmp(a, "--period") == 0 || strcmp(a, "--out") == 0 ||
            strcmp(a, "--format") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mailwarden: option %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (strcmp(a, "--history") == 0) {
                if (nhist == MAX_HISTORY) {
                    fprintf(stderr, "mailwarden: too many --history options\n");
                    return 2;
                }
                hist[nhist++] = v;
            } else if (strcmp(a, "--period") == 0)
                period = v;
            else if (strcmp(a, "--out") == 0)
                R.out_dir = v;
            else
                format = v;
            continue;
        }
        c = mw_cli_common(&cli, argc, argv, &i);
        if (c < 0)
            return 2;
        if (c == 0) {
            fprintf(stderr, "mailwarden report: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }

    R.cfg = mw_cli_load(&cli);
    if (R.cfg == NULL)
        return 2;
    signal(SIGPIPE, SIG_IGN);   /* a relay closing during a TLS write is an error, not death */
    const mw_config *cfg = R.cfg;
    /* Run by root (by hand, from cron): become the daemon's user before
     * anything is opened, so the state journal, its lock and the output
     * belong to the user the timer-run report and the daemon use. */
    if (!report_drop_privileges(cfg))
        goto out;
    R.now = time(NULL);
    const char *fake_now = getenv("MW_REPORT_TEST_NOW");
    if (fake_now != NULL && *fake_now != '\0')
        R.now = (time_t)strtoll(fake_now, NULL, 10);
    const char *die = getenv("MW_REPORT_TEST_DIE_AFTER");
    if (die != NULL && *die != '\0')
        R.die_after = strtoul(die, NULL, 10);

    if (86400 % cfg->report_interval_s != 0) {
        fprintf(stderr, "mailwarden report: report.interval (%u s) must divide a day\n",
                cfg->report_interval_s);
        goto out;
    }
    R.meta.format = cfg->report_format;
    if (format != NULL) {
        if (strcmp(format, "rfc9990") == 0)
            R.meta.format = MW_REPORT_FMT_RFC9990;
        else if (strcmp(format, "rfc7489") == 0)
            R.meta.format = MW_REPORT_FMT_RFC7489;
        else {
            fprintf(stderr, "mailwarden report: --format must be rfc9990 or rfc7489\n");
            goto out;
        }
    }
    R.org = dflt(cfg->report_org_name, "", cfg->hostname);
    R.email = dflt(cfg->report_email, "postmaster@", cfg->hostname);
    R.receiver = dflt(cfg->report_receiver, "", cfg->hostname);
    R.from = dflt(cfg->report_from, "", R.email);
    R.meta.org_name = R.org;
    R.meta.email = R.email;
    R.meta.extra_contact = cfg->report_extra_contact;
    R.meta.receiver = R.receiver;
    R.meta.generator = "mailwarden " MW_VERSION;
    if (failure) {   /* failure reports: report_failure.c */
        rc = mw_report_failure_cmd(cfg, R.from, R.dry_run);
        goto out;
    }

    if (nhist == 0) {
        for (size_t i = 0; i < cfg->nreport_history_dirs && nhist < MAX_HISTORY; i++)
            hist[nhist++] = cfg->report_history_dirs[i];
        if (nhist == 0 && cfg->history_dir[0] != '\0')
            hist[nhist++] = cfg->history_dir;
    }
    if (nhist == 0) {
        fprintf(stderr, "mailwarden report: no history directory (--history, report.history_dirs "
                        "or history.dir)\n");
        goto out;
    }
    time_t from, to;
    if (!parse_period(period != NULL ? period : "yesterday", R.now, &from, &to)) {
        fprintf(stderr, "mailwarden report: bad --period \"%s\" (yesterday, YYYY-MM-DD or "
                        "YYYY-MM-DD..YYYY-MM-DD)\n", period);
        goto out;
    }
    if (!R.send && !R.dry_run && R.out_dir == NULL)
        R.out_dir = ".";
    if (R.out_dir != NULL && mkdir(R.out_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "mailwarden report: %s: %s\n", R.out_dir, strerror(errno));
        goto out;
    }
    if ((R.send || R.dry_run) && !setup_delivery(&R)) {
        rc = 1;
        goto out;
    }

    /* periods an earlier run left open (crash, deferred mail), then the asked window */
    if ((R.send || R.dry_run) && R.state != NULL) {
        time_t cb[MAX_CATCHUP], ce[MAX_CATCHUP];
        size_t nc = mw_report_state_open_periods(R.state, R.now - CATCHUP_DAYS * 86400, cb, ce,
                                                 MAX_CATCHUP);
        for (size_t i = 0; i < nc && !R.fatal; i++) {
            if (cb[i] >= from && ce[i] <= to)
                continue;   /* inside the asked window anyway */
            printf("taking up period left open by an earlier run:\n");
            process_window(&R, hist, nhist, cb[i], ce[i]);
        }
    }
    if (!R.fatal)
        process_window(&R, hist, nhist, from, to);

    printf("summary: %u reports, %u files written, %u sent, %u already done, %u deferred, "
           "%u failed, %u refused, %u too big, %u suppressed, %u bad destinations, "
           "%u over the destination limit, %u reports refused\n", R.reports, R.written, R.sent,
           R.skipped, R.deferred, R.failed, R.refused, R.toobig, R.suppressed, R.bad_dest,
           R.over_limit, R.bad_reports);
    rc = R.error || R.fatal ? 1 : 0;
out:
    mw_smtp_close(&R.smtp);
    mw_report_state_close(&R.state);
    mw_dkim_signer_destroy(&R.signer);
    mw_dmarc_destroy(&R.dmarc);
    mw_dns_destroy(&R.dns);
    for (size_t i = 0; i < R.npaces; i++)
        free(R.paces[i].domain);
    free(R.paces);
    for (size_t i = 0; i < R.nverdicts; i++) {
        free(R.verdicts[i].key);
        mw_report_dest_clear(&R.verdicts[i].d);
    }
    mw_report_dest_clear(&R.vtmp);
    free(R.verdicts);
    free(R.org);
    free(R.email);
    free(R.receiver);
    free(R.from);
    mw_config_free(&R.cfg);
    return rc;
}
