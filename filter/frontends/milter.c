/*
 * milter.c - libmilter glue.  Each callback only moves MTA data into the
 * session hung on smfi_setpriv and calls the engine; end of message turns
 * the verdict into smfi_* calls.  One cleanup path: xxfi_close frees the
 * session (abort only forgets the message).
 *
 * Failure policy: a callback that finds no session (allocation failed or the
 * MTA skipped connect) creates one lazily; nothing here can crash on MTA
 * input.  If the daemon dies, the MTA applies milter_default_action.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <libmilter/mfapi.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"

/* Set once in mw_milter_open() before libmilter starts any thread;
 * read-only afterwards. */
static mw_engine *the_engine;

/* Per-connection state hung on smfi_setpriv. */
typedef struct mconn {
    mw_session *s;
    bool        leadspc;   /* SMFIP_HDR_LEADSPC agreed: header values carry
                              their leading blank, in both directions */
} mconn;

static mconn *conn(SMFICTX *ctx)
{
    mconn *c = smfi_getpriv(ctx);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        smfi_setpriv(ctx, c);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, 1);   /* until cb_close */
    }
    return c;
}

static mw_session *sess(SMFICTX *ctx)
{
    mconn *c = conn(ctx);
    if (!c)
        return NULL;
    if (!c->s) {
        const char *ip = smfi_getsymval(ctx, "{client_addr}");
        c->s = mw_session_new(the_engine, ip, smfi_getsymval(ctx, "{client_name}"));
    }
    return c->s;
}

static void copy_macros(SMFICTX *ctx, mw_session *s)
{
    static const char *const names[] = {"{auth_authen}", "{daemon_name}", "i"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = smfi_getsymval(ctx, (char *)names[i]);
        if (v)
            mw_session_macro(s, names[i], v);
    }
}

static sfsistat cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    unsigned long want = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE;
    *pf0 = want & f0;
    if (f0 & SMFIF_SETSYMLIST)
        *pf0 |= SMFIF_SETSYMLIST;
    /* Steps we do not use: unknown commands, DATA.  Headers are wanted
     * byte-exact (leading space kept) for DKIM simple canonicalization. */
    unsigned long want1 = SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_HDR_LEADSPC;
    *pf1 = want1 & f1;
    mconn *c = conn(ctx);
    if (c)
        c->leadspc = (*pf1 & SMFIP_HDR_LEADSPC) != 0;
    *pf2 = 0;
    *pf3 = 0;
    if (*pf0 & SMFIF_SETSYMLIST) {
        /* Ask for the macros we need, so no MTA configuration is required. */
        smfi_setsymlist(ctx, SMFIM_CONNECT, "j {daemon_name} {client_addr} {client_name}");
        smfi_setsymlist(ctx, SMFIM_ENVFROM, "i {auth_authen} {auth_type} {daemon_name} {mail_addr}");
        smfi_setsymlist(ctx, SMFIM_EOM, "i {auth_authen} {daemon_name}");
    }
    return SMFIS_CONTINUE;
}

static sfsistat refused(SMFICTX *ctx, mw_session *s);

static sfsistat cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
    /* Shutting down: let this connection be retried rather than start
     * work we may not finish (the MTA answers 4xx; nothing is lost). */
    if (mw_engine_draining(the_engine))
        return SMFIS_TEMPFAIL;
    char ip[INET6_ADDRSTRLEN] = "";
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)sa)->sin_addr, ip, sizeof ip);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr, ip, sizeof ip);
    mconn *c = conn(ctx);
    if (!c)
        return SMFIS_TEMPFAIL;
    mw_metric_inc(MW_M_CONNECTIONS, MW_ML_FE_MILTER, 0);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_free(&c->s);
    c->s = mw_session_new(the_engine, ip[0] ? ip : NULL, hostname);
    copy_macros(ctx, c->s);
    mw_session_connect(c->s);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_CONNECT, mw_metrics_now_ns() - t0);
    return refused(ctx, c->s);
}

/* Allocation failure is the only way to have no session: tempfail. */
#define SESSION_OR_TEMPFAIL(s)      \
    mw_session *s = sess(ctx);      \
    if (!s)                         \
        return SMFIS_TEMPFAIL

static sfsistat cb_helo(SMFICTX *ctx, char *helo)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_helo(s, helo);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HELO, mw_metrics_now_ns() - t0);
    return SMFIS_CONTINUE;
}

static sfsistat cb_envfrom(SMFICTX *ctx, char **argv)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    copy_macros(ctx, s);
    mw_session_mail(s, argv && argv[0] ? argv[0] : "");
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_MAIL, mw_metrics_now_ns() - t0);
    return refused(ctx, s);
}

static sfsistat cb_envrcpt(SMFICTX *ctx, char **argv)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_rcpt(s, argv && argv[0] ? argv[0] : "");
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_RCPT, mw_metrics_now_ns() - t0);
    return refused(ctx, s);
}

static sfsistat cb_header(SMFICTX *ctx, char *name, char *value)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    const char *v = value ? value : "";
    if (!conn(ctx)->leadspc) {
        /* an MTA without SMFIP_HDR_LEADSPC strips the blank after the colon;
         * the engine wants the value as written, so restore the usual one */
        mw_buf b = MW_BUF_INIT;
        mw_buf_putc(&b, ' ');
        mw_buf_puts(&b, v);
        mw_session_header(s, name, b.data, b.len);
        mw_buf_free(&b);
        mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HEADER, mw_metrics_now_ns() - t0);
        return SMFIS_CONTINUE;
    }
    mw_session_header(s, name, v, strlen(v));
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HEADER, mw_metrics_now_ns() - t0);
    return SMFIS_CONTINUE;
}

static sfsistat cb_eoh(SMFICTX *ctx)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_eoh(s);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOH, mw_metrics_now_ns() - t0);
    return SMFIS_CONTINUE;
}

static sfsistat cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_body(s, chunk, len);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_BODY, mw_metrics_now_ns() - t0);
    return SMFIS_CONTINUE;
}

/* smfi_setreply treats '%' specially: double it. */
static void set_reply_text(SMFICTX *ctx, const char *rcode, const char *xcode, const char *text)
{
    mw_buf t = MW_BUF_INIT;
    for (const char *p = text ? text : ""; *p; p++) {
        if (*p == '%')
            mw_buf_putc(&t, '%');
        mw_buf_putc(&t, *p);
    }
    if (smfi_setreply(ctx, (char *)rcode, xcode && *xcode ? (char *)xcode : NULL, (char *)mw_buf_cstr(&t)) !=
        MI_SUCCESS)
        mw_warn("smfi_setreply failed for \"%s %s\"", rcode, xcode ? xcode : "");
    mw_buf_free(&t);
}

/* A rate-limit refusal of the step just taken, as the milter status. */
static sfsistat refused(SMFICTX *ctx, mw_session *s)
{
    const mw_reply *r = mw_session_refusal(s);
    if (!r)
        return SMFIS_CONTINUE;
    set_reply_text(ctx, r->rcode, r->xcode, r->text);
    return r->action == MW_ACTION_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
}

static void set_reply(SMFICTX *ctx, const mw_verdict *v)
{
    mw_buf t = MW_BUF_INIT;
    for (const char *p = v->text ? v->text : ""; *p; p++) {
        if (*p == '%')
            mw_buf_putc(&t, '%');
        mw_buf_putc(&t, *p);
    }
    if (smfi_setreply(ctx, (char *)v->rcode, v->xcode[0] ? (char *)v->xcode : NULL,
                      (char *)mw_buf_cstr(&t)) != MI_SUCCESS)
        mw_warn("smfi_setreply failed for \"%s %s\"", v->rcode, v->xcode);
    mw_buf_free(&t);
}

static sfsistat cb_eom(SMFICTX *ctx)
{
    SESSION_OR_TEMPFAIL(s);
    bool leadspc = conn(ctx)->leadspc;
    copy_macros(ctx, s);
    uint64_t t0 = mw_metrics_now_ns();
    const mw_verdict *v = mw_session_eom(s);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOM, mw_metrics_now_ns() - t0);
    switch (v->action) {
    case MW_ACTION_REJECT:
        set_reply(ctx, v);
        return SMFIS_REJECT;
    case MW_ACTION_TEMPFAIL:
        set_reply(ctx, v);
        return SMFIS_TEMPFAIL;
    case MW_ACTION_DISCARD:
        return SMFIS_DISCARD;
    default:
        break;
    }
    for (size_t i = 0; i < v->nremove; i++)
        if (smfi_chgheader(ctx, v->remove[i].name, (int)v->remove[i].index, NULL) != MI_SUCCESS)
            mw_warn("%s: cannot remove header %s #%u", mw_session_id(s), v->remove[i].name,
                    v->remove[i].index);
    /* insert bottom-most first at index 0, so add[0] ends up on top; with
     * SMFIP_HDR_LEADSPC the MTA writes "Name:" + value, so the value must
     * bring its own blank (DKIM simple canonicalization sees it) */
    mw_buf hv = MW_BUF_INIT;
    for (size_t i = v->nadd; i-- > 0;) {
        mw_buf_reset(&hv);
        if (leadspc)
            mw_buf_putc(&hv, ' ');
        mw_buf_puts(&hv, v->add[i].value);
        if (smfi_insheader(ctx, 0, v->add[i].name, (char *)mw_buf_cstr(&hv)) != MI_SUCCESS)
            mw_warn("%s: cannot add header %s", mw_session_id(s), v->add[i].name);
    }
    mw_buf_free(&hv);
    if (v->action == MW_ACTION_QUARANTINE &&
        smfi_quarantine(ctx, v->quarantine_reason ? v->quarantine_reason : (char *)"mailwarden") != MI_SUCCESS)
        mw_warn("%s: quarantine request failed", mw_session_id(s));
    return SMFIS_CONTINUE;
}

static sfsistat cb_abort(SMFICTX *ctx)
{
    mconn *c = smfi_getpriv(ctx);
    if (c && c->s)
        mw_session_abort(c->s);
    return SMFIS_CONTINUE;
}

/* The one cleanup path for a connection. */
static sfsistat cb_close(SMFICTX *ctx)
{
    mconn *c = smfi_getpriv(ctx);
    if (c) {
        mw_session_free(&c->s);
        free(c);
        smfi_setpriv(ctx, NULL);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, -1);
    }
    return SMFIS_CONTINUE;
}

static struct smfiDesc desc = {
    .xxfi_name = "mailwarden",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_QUARANTINE,
    .xxfi_connect = cb_connect,
    .xxfi_helo = cb_helo,
    .xxfi_envfrom = cb_envfrom,
    .xxfi_envrcpt = cb_envrcpt,
    .xxfi_header = cb_header,
    .xxfi_eoh = cb_eoh,
    .xxfi_body = cb_body,
    .xxfi_eom = cb_eom,
    .xxfi_abort = cb_abort,
    .xxfi_close = cb_close,
    .xxfi_negotiate = cb_negotiate,
};

/*
 * libmilter writes a reply as several small segments (e.g. insheader, then
 * continue); on a TCP socket Nagle's algorithm then waits for the delayed
 * ACK, ~40 ms per message.  libmilter does not expose its listening
 * socket, so find it (the only listening TCP socket at this point) and set
 * TCP_NODELAY, which accepted sockets inherit on Linux.
 */
static void nodelay_listeners(void)
{
    for (int fd = 3; fd < 1024; fd++) {
        int acc = 0, one = 1;
        socklen_t l = sizeof acc;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) != 0 || !acc)
            continue;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
            (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
            continue;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            mw_warn_errno("TCP_NODELAY on the milter socket");
    }
}

bool mw_milter_open(mw_engine *e, const mw_milter_options *o, char *err, size_t errlen)
{
    the_engine = e;
    char spec[512];
    snprintf(spec, sizeof spec, "%s", o->socket);
    if (smfi_setconn(spec) != MI_SUCCESS) {
        snprintf(err, errlen, "bad milter socket \"%s\"", o->socket);
        return false;
    }
    if (o->timeout)
        smfi_settimeout((int)o->timeout);
    smfi_setbacklog(128);
    if (smfi_register(desc) != MI_SUCCESS) {
        snprintf(err, errlen, "smfi_register failed");
        return false;
    }
    if (smfi_opensocket(1) != MI_SUCCESS) {
        snprintf(err, errlen, "cannot listen on %s (in use, or no permission?)", o->socket);
        return false;
    }
    nodelay_listeners();
    const char *path = NULL;
    if (strncmp(o->socket, "unix:", 5) == 0)
        path = o->socket + 5;
    else if (strncmp(o->socket, "local:", 6) == 0)
        path = o->socket + 6;
    if (path && o->socket_mode && chmod(path, (mode_t)o->socket_mode) != 0)
        mw_warn_errno("chmod %o %s", (unsigned)o->socket_mode, path);
    return true;
}

int mw_milter_run(void)
{
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}

void mw_milter_stop(void)
{
    smfi_stop();
}
