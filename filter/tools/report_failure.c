/*
 * report_failure.c - `mailwarden report --failure`: send the RFC 9991
 * failure reports the daemon queued in report.failure_dir.
 *
 * Purpose
 *   The daemon builds each report and queues it (checks/report_failure.c,
 *   engine/session_failrep.c); this sends them, from the same timer or by
 *   hand, with the machinery of the aggregate reports: external destination
 *   verification (report_dest.c, the destination's own rua/ruf override
 *   included), the SMTP client (core/smtp_client.c), DKIM signing with the
 *   report From (report_mail.c) and the state journal (report_state.c, in
 *   report.failure_dir/state).
 *
 * Delivery rules (docs/reports.md)
 *   - Each queued file is parsed again, every field and address checked; a
 *     file that fails is moved to bad/ and counted, never sent.
 *   - Per (report id, address): the journal says "sending" before and
 *     "sent" right after the relay's 250, so a crash resends at most the
 *     one in flight and a rerun never sends twice.  5xx: failed (and
 *     report.suppress_5xx_after of them suppress the address); 4xx or
 *     connection trouble, or DNS trouble verifying the destination:
 *     deferred, the file stays for the next run.
 *   - A destination outside the policy domain's organizational domain is
 *     used only when <policy-domain>._report._dmarc.<host> authorises it;
 *     its own rua replaces it (same host only).  Refused otherwise, alone.
 *   - When every address of a file is final the file is removed; a file
 *     still not done EXPIRE_DAYS after it was queued is dropped (counted).
 *
 * Exit status: 0 done, 1 something deferred, failed or a bad file, 2 setup.
 *
 * See also: report_failure.h, report.c (the hook), docs/reports.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "report_failure.h"
#include "smtp_client.h"
#include "strutil.h"
#include "tools.h"

#define EXPIRE_DAYS 3
#define MAX_FILES   100000   /* per run; the rest waits for the next run */

typedef struct frun {
    const mw_config *cfg;
    const char      *from;
    bool             dry_run;
    mw_dns          *dns;
    mw_dmarc        *dmarc;
    mw_dkim_signer  *signer;
    mw_report_state *state;
    mw_smtp         *smtp;
    time_t           now;
    unsigned files, sent, deferred, failed, refused, suppressed, bad, expired;
    bool     fatal;
} frun;

static bool record(frun *F, const mw_failrep_spooled *sp, const char *dest, mw_report_status st)
{
    char err[512];
    if (F->dry_run)
        return true;
    if (mw_report_state_set(F->state, sp->id, dest, st, sp->domain, sp->time, sp->time + 1,
                            time(NULL), err, sizeof err))
        return true;
    fprintf(stderr, "mailwarden report: cannot record the state, stopping: %s\n", err);
    F->fatal = true;
    return false;
}

/* One attempt to hand the report to addr; the outcome is journaled. */
static mw_report_status send_to(frun *F, const mw_failrep_spooled *sp, const char *addr)
{
    const mw_config *cfg = F->cfg;
    mw_smtp_result res = {0};
    mw_buf msg = MW_BUF_INIT;
    char why[300], err[512];

    if (F->dry_run) {
        printf("  %s: would send report %s\n", addr, sp->id);
        return MW_RS_SENT;
    }
    if (mw_report_state_suppressed(F->state, addr, time(NULL), NULL)) {
        printf("  %s: suppressed (repeated 5xx)\n", addr);
        F->suppressed++;
        return record(F, sp, addr, MW_RS_SUPPRESSED) ? MW_RS_SUPPRESSED : MW_RS_SENDING;
    }
    mw_buf_printf(&msg, "From: %s\r\nTo: %s\r\n", F->from, addr);
    mw_buf_append(&msg, sp->msg, sp->msg_len);
    (void)mw_report_sign(F->signer, F->from, &msg, why, sizeof why);
    if (F->smtp == NULL || !mw_smtp_usable(F->smtp)) {
        mw_smtp_close(&F->smtp);
        mw_smtp_options o = {.host = cfg->report_relay_host, .port = cfg->report_relay_port,
                             .helo = cfg->hostname, .starttls = cfg->report_starttls,
                             .tls_no_verify = !cfg->report_tls_verify,
                             .tls_ca_file = cfg->report_tls_ca_file,
                             .timeout_ms = cfg->report_timeout_s * 1000};
        F->smtp = mw_smtp_open(&o, &res);
    }
    mw_report_status st;
    if (F->smtp != NULL) {
        if (!record(F, sp, addr, MW_RS_SENDING)) {
            mw_buf_free(&msg);
            return MW_RS_SENDING;
        }
        mw_smtp_sendmail(F->smtp, F->from, addr, msg.data, msg.len, &res);
    }
    if (F->smtp != NULL && res.status == MW_SMTP_OK) {
        st = MW_RS_SENT;
        F->sent++;
        printf("  %s: sent report %s (%s)\n", addr, sp->id, res.reply);
        (void)mw_report_state_dest_result(F->state, addr, false, cfg->report_suppress_5xx_after,
                                          cfg->report_suppress_5xx_for_s, time(NULL), err,
                                          sizeof err);
    } else if (res.status == MW_SMTP_PERM) {
        st = MW_RS_FAILED;
        F->failed++;
        printf("  %s: failed at %s: %s\n", addr, res.stage ? res.stage : "?", res.reply);
        (void)mw_report_state_dest_result(F->state, addr, true, cfg->report_suppress_5xx_after,
                                          cfg->report_suppress_5xx_for_s, time(NULL), err,
                                          sizeof err);
    } else {
        st = MW_RS_DEFERRED;
        F->deferred++;
        printf("  %s: deferred at %s: %s\n", addr, res.stage ? res.stage : "?", res.reply);
        if (F->smtp != NULL && !mw_smtp_usable(F->smtp))
            mw_smtp_close(&F->smtp);
    }
    mw_buf_free(&msg);
    if (!record(F, sp, addr, st))
        return MW_RS_SENDING;
    return st;
}

/* Every address of one queued report; true when all are final. */
static bool send_file(frun *F, const mw_failrep_spooled *sp)
{
    bool all_final = true;

    printf("failure report %s for %s:\n", sp->id, sp->domain);
    for (size_t i = 0; i < sp->ndest && !F->fatal; i++) {
        const char *dest = sp->dest[i];
        if (mw_report_status_final(mw_report_state_get(F->state, sp->id, dest, NULL))) {
            printf("  %s: done earlier\n", dest);
            continue;
        }
        mw_report_dest d = {0};
        mw_report_dest_verify(F->dns, F->dmarc, sp->domain, mw_addr_domain(dest),
                              MW_REPORT_FMT_RFC9990, &d);
        if (d.result == -1) {
            printf("  %s: deferred: destination not verified now: %s\n", dest, d.why);
            F->deferred++;
            all_final = false;
        } else if (d.result == 0) {
            printf("  %s: refused: external destination not authorised: %s\n", dest, d.why);
            F->refused++;
            (void)record(F, sp, dest, MW_RS_REFUSED);
        } else {
            bool done = true;
            for (size_t k = 0; k < (d.noverride ? d.noverride : 1) && !F->fatal; k++) {
                const char *to = d.noverride ? d.override[k].addr : dest;
                if (d.noverride && mw_report_status_final(
                                       mw_report_state_get(F->state, sp->id, to, NULL)))
                    continue;
                if (d.noverride)
                    printf("  %s: replaced by %s (%s)\n", dest, to, d.why);
                mw_report_status st = send_to(F, sp, to);
                done &= mw_report_status_final(st);
            }
            /* the published address is done when every address replacing it is */
            if (done && d.noverride && !F->dry_run)
                (void)record(F, sp, dest, MW_RS_SENT);
            all_final &= done;
        }
        mw_report_dest_clear(&d);
    }
    return all_final && !F->fatal;
}

/* Move a file that cannot be sent out of the way (dir/bad), else remove it. */
static void set_aside(const char *dir, const char *name, const char *path)
{
    mw_buf bad = MW_BUF_INIT, to = MW_BUF_INIT;
    mw_buf_printf(&bad, "%s/bad", dir);
    mw_buf_printf(&to, "%s/%s", mw_buf_cstr(&bad), name);
    if ((mkdir(mw_buf_cstr(&bad), 0750) != 0 && errno != EEXIST) ||
        rename(path, mw_buf_cstr(&to)) != 0)
        (void)unlink(path);
    mw_buf_free(&bad);
    mw_buf_free(&to);
}

static bool read_file(const char *path, mw_buf *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s", fd < 0 ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return false;
    }
    char chunk[65536];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0 && out->len <= MW_FAILREP_MAX_FILE)
        mw_buf_append(out, chunk, (size_t)n);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return false;
    }
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void process_spool(frun *F)
{
    const char *dir = F->cfg->report_failure_dir;
    mw_buf nd = MW_BUF_INIT;
    char **names = NULL;
    size_t n = 0;

    mw_buf_printf(&nd, "%s/new", dir);
    DIR *d = opendir(mw_buf_cstr(&nd));
    if (d == NULL) {
        if (errno != ENOENT)
            fprintf(stderr, "mailwarden report: %s: %s\n", mw_buf_cstr(&nd), strerror(errno));
        mw_buf_free(&nd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < MAX_FILES) {
        if (de->d_name[0] == '.')
            continue;
        names = mw_reallocarray(names, n + 1, sizeof *names);
        names[n++] = mw_strdup(de->d_name);
    }
    closedir(d);
    if (n > 1)   /* oldest first: names start with the time (qsort of NULL is UB) */
        qsort(names, n, sizeof *names, cmp_str);

    for (size_t i = 0; i < n && !F->fatal; i++) {
        mw_buf path = MW_BUF_INIT, data = MW_BUF_INIT, esc = MW_BUF_INIT;
        mw_failrep_spooled sp;
        char why[300];
        mw_buf_printf(&path, "%s/%s", mw_buf_cstr(&nd), names[i]);
        mw_str_printable(&esc, names[i], strlen(names[i]), 120);
        F->files++;
        if (!read_file(mw_buf_cstr(&path), &data, why, sizeof why) ||
            !mw_failrep_spool_parse(data.data ? data.data : "", data.len, &sp, why, sizeof why)) {
            fprintf(stderr, "mailwarden report: failure report %s refused: %s\n",
                    mw_buf_cstr(&esc), why);
            F->bad++;
            if (!F->dry_run)
                set_aside(dir, names[i], mw_buf_cstr(&path));
            mw_failrep_spooled_clear(&sp);
        } else {
            if (send_file(F, &sp)) {
                if (!F->dry_run)
                    (void)unlink(mw_buf_cstr(&path));
            } else if (!F->fatal && sp.time + EXPIRE_DAYS * 86400 < F->now) {
                printf("  report %s dropped: not delivered within %d days\n", sp.id, EXPIRE_DAYS);
                F->expired++;
                if (!F->dry_run)
                    (void)unlink(mw_buf_cstr(&path));
            }
            mw_failrep_spooled_clear(&sp);
        }
        mw_buf_free(&path);
        mw_buf_free(&data);
        mw_buf_free(&esc);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    mw_buf_free(&nd);
}

int mw_report_failure_cmd(const mw_config *cfg, const char *from, bool dry_run)
{
    frun F = {.cfg = cfg, .from = from, .dry_run = dry_run, .now = time(NULL)};
    mw_config_errors errs = {0};
    char err[512];
    int rc = 2;

    mw_dns_options dopt = {
        .forwarders = (const char *const *)cfg->dns_forwarders, .nforwarders = cfg->ndns_forwarders,
        .resolv_conf = cfg->dns_resolv_conf, .timeout_ms = cfg->dns_timeout_ms,
        .trust_anchor_file = cfg->dns_trust_anchor[0] != '\0' ? cfg->dns_trust_anchor : NULL,
        .use_tcp = cfg->dns_tcp};
    F.dns = mw_dns_create(&dopt, err, sizeof err);
    if (F.dns == NULL) {
        fprintf(stderr, "mailwarden report: resolver: %s\n", err);
        goto out;
    }
    mw_dmarc_options mo = {.mode = cfg->dmarc_mode == MW_CFG_DMARC_RFC7489 ? MW_DMARC_MODE_RFC7489
                                                                            : MW_DMARC_MODE_RFC9989,
                           .psl_file = cfg->dmarc_psl_file, .timeout_ms = cfg->dns_timeout_ms};
    F.dmarc = mw_dmarc_create(F.dns, &mo, err, sizeof err);
    if (F.dmarc == NULL) {
        fprintf(stderr, "mailwarden report: dmarc: %s\n", err);
        goto out;
    }
    F.signer = mw_dkim_signer_create(cfg, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "mailwarden report: dkim: %s\n", errs.msg[i]);
    mw_config_errors_free(&errs);
    if (F.signer == NULL)
        goto out;
    mw_buf sd = MW_BUF_INIT;
    mw_buf_printf(&sd, "%s/state", cfg->report_failure_dir);
    if (!dry_run && mkdir(cfg->report_failure_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "mailwarden report: %s: %s\n", cfg->report_failure_dir, strerror(errno));
        mw_buf_free(&sd);
        goto out;
    }
    F.state = mw_report_state_open(mw_buf_cstr(&sd), dry_run, F.now, err, sizeof err);
    mw_buf_free(&sd);
    if (F.state == NULL) {
        fprintf(stderr, "mailwarden report: failure report state: %s\n", err);
        goto out;
    }
    process_spool(&F);
    printf("summary: %u failure reports queued, %u sent, %u deferred, %u failed, %u refused, "
           "%u suppressed, %u bad files, %u expired\n", F.files, F.sent, F.deferred, F.failed,
           F.refused, F.suppressed, F.bad, F.expired);
    rc = F.fatal || F.deferred || F.failed || F.bad ? 1 : 0;
out:
    mw_smtp_close(&F.smtp);
    mw_report_state_close(&F.state);
    mw_dkim_signer_destroy(&F.signer);
    mw_dmarc_destroy(&F.dmarc);
    mw_dns_destroy(&F.dns);
    return rc;
}
