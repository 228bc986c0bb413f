/*
 * milter.c - milter glue on our protocol engine (milter_server.c).  Each
 * callback only moves MTA data into the session hung on mw_ms_setpriv and
 * calls the engine; end of message turns the verdict into header edits and
 * a reply.  One cleanup path: cb_close frees the session (abort only
 * forgets the message).
 *
 * Failure policy: a callback that finds no session (allocation failed or the
 * MTA skipped connect) creates one lazily; nothing here can crash on MTA
 * input.  If the daemon dies, the MTA applies milter_default_action.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "milter_server.h"

/* Set once in mw_milter_open() before any connection thread starts;
 * read-only afterwards. */
static mw_engine *the_engine;
static mw_ms_server *the_server;


/* Per-connection state hung on mw_ms_setpriv. */
typedef struct mconn {
    mw_session *s;
} mconn;

static mconn *conn(mw_ms_conn *ctx)
{
    mconn *c = mw_ms_getpriv(ctx);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        mw_ms_setpriv(ctx, c);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, 1);   /* until cb_close */
    }
    return c;
}

static mw_session *sess(mw_ms_conn *ctx)
{
    mconn *c = conn(ctx);
    if (!c)
        return NULL;
    if (!c->s) {
        const char *ip = mw_ms_getsymval(ctx, "{client_addr}");
        c->s = mw_session_new(the_engine, ip, mw_ms_getsymval(ctx, "{client_name}"));
    }
    return c->s;
}

static void copy_macros(mw_ms_conn *ctx, mw_session *s)
{
    static const char *const names[] = {"{auth_authen}", "{daemon_name}", "i"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = mw_ms_getsymval(ctx, names[i]);
        if (v)
            mw_session_macro(s, names[i], v);
    }
}

static mw_ms_status refused(mw_ms_conn *ctx, mw_session *s);

/* The client address of a C packet in canonical text form, "" when it is
 * not an IP address (Sendmail writes IPv6 ones as "IPv6:..."). */
static void client_ip(char family, const char *addr, char *ip, size_t iplen)
{
    unsigned char bin[sizeof(struct in6_addr)];
    ip[0] = '\0';
    if (family == '4' && inet_pton(AF_INET, addr, bin) == 1)
        inet_ntop(AF_INET, bin, ip, (socklen_t)iplen);
    else if (family == '6') {
        if (strncasecmp(addr, "IPv6:", 5) == 0)
            addr += 5;
        if (inet_pton(AF_INET6, addr, bin) == 1)
            inet_ntop(AF_INET6, bin, ip, (socklen_t)iplen);
    }
}

static mw_ms_status cb_connect(mw_ms_conn *ctx, const char *hostname, char family, uint16_t port, const char *addr)
{
    (void)port;
    /* Shutting down: let this connection be retried rather than start
     * work we may not finish (the MTA answers 4xx; nothing is lost). */
    if (mw_engine_draining(the_engine))
        return MW_MS_TEMPFAIL;
    char ip[INET6_ADDRSTRLEN];
    client_ip(family, addr, ip, sizeof ip);
    mconn *c = conn(ctx);
    if (!c)
        return MW_MS_TEMPFAIL;
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
        return MW_MS_TEMPFAIL

static mw_ms_status cb_helo(mw_ms_conn *ctx, const char *helo)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_helo(s, helo);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HELO, mw_metrics_now_ns() - t0);
    return MW_MS_CONTINUE;
}

static mw_ms_status cb_envfrom(mw_ms_conn *ctx, const char *addr)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    copy_macros(ctx, s);
    mw_session_mail(s, addr ? addr : "");
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_MAIL, mw_metrics_now_ns() - t0);
    return refused(ctx, s);
}

static mw_ms_status cb_envrcpt(mw_ms_conn *ctx, const char *addr)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_rcpt(s, addr ? addr : "");
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_RCPT, mw_metrics_now_ns() - t0);
    return refused(ctx, s);
}

static mw_ms_status cb_header(mw_ms_conn *ctx, const char *name, const char *value)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    const char *v = value ? value : "";
    if (!mw_ms_leadspc(ctx)) {
        /* an MTA without SMFIP_HDR_LEADSPC strips the blank after the colon;
         * the engine wants the value as written, so restore the usual one */
        mw_buf b = MW_BUF_INIT;
        mw_buf_putc(&b, ' ');
        mw_buf_puts(&b, v);
        mw_session_header(s, name, b.data, b.len);
        mw_buf_free(&b);
        mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HEADER, mw_metrics_now_ns() - t0);
        return MW_MS_CONTINUE;
    }
    mw_session_header(s, name, v, strlen(v));
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_HEADER, mw_metrics_now_ns() - t0);
    return MW_MS_CONTINUE;
}

static mw_ms_status cb_eoh(mw_ms_conn *ctx)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_eoh(s);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOH, mw_metrics_now_ns() - t0);
    return MW_MS_CONTINUE;
}

static mw_ms_status cb_body(mw_ms_conn *ctx, const uint8_t *chunk, size_t len)
{
    SESSION_OR_TEMPFAIL(s);
    uint64_t t0 = mw_metrics_now_ns();
    mw_session_body(s, chunk, len);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_BODY, mw_metrics_now_ns() - t0);
    return MW_MS_CONTINUE;
}

/* The reply text goes out verbatim in a 'y' packet; milter_proto doubles
 * '%' there (Sendmail uses the text as a format, Postfix undoes it). */
static void set_reply_text(mw_ms_conn *ctx, const char *rcode, const char *xcode, const char *text)
{
    mw_ms_setreply(ctx, rcode, xcode, text);
}

/* A rate-limit refusal of the step just taken, as the milter status. */
static mw_ms_status refused(mw_ms_conn *ctx, mw_session *s)
{
    const mw_reply *r = mw_session_refusal(s);
    if (!r)
        return MW_MS_CONTINUE;
    set_reply_text(ctx, r->rcode, r->xcode, r->text);
    return r->action == MW_ACTION_REJECT ? MW_MS_REJECT : MW_MS_TEMPFAIL;
}

static void set_reply(mw_ms_conn *ctx, const mw_verdict *v)
{
    mw_ms_setreply(ctx, v->rcode, v->xcode, v->text);
}

static mw_ms_status cb_eom(mw_ms_conn *ctx)
{
    SESSION_OR_TEMPFAIL(s);
    bool leadspc = mw_ms_leadspc(ctx);
    copy_macros(ctx, s);
    uint64_t t0 = mw_metrics_now_ns();
    const mw_verdict *v = mw_session_eom(s);
    mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOM, mw_metrics_now_ns() - t0);
    switch (v->action) {
    case MW_ACTION_REJECT:
        set_reply(ctx, v);
        return MW_MS_REJECT;
    case MW_ACTION_TEMPFAIL:
        set_reply(ctx, v);
        return MW_MS_TEMPFAIL;
    case MW_ACTION_DISCARD:
        return MW_MS_DISCARD;
    default:
        break;
    }
    for (size_t i = 0; i < v->nremove; i++)
        if (!mw_ms_chgheader(ctx, v->remove[i].index, v->remove[i].name, ""))
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
        if (!mw_ms_insheader(ctx, 0, v->add[i].name, mw_buf_cstr(&hv)))
            mw_warn("%s: cannot add header %s", mw_session_id(s), v->add[i].name);
    }
    mw_buf_free(&hv);
    if (v->action == MW_ACTION_QUARANTINE &&
        !mw_ms_quarantine(ctx, v->quarantine_reason ? v->quarantine_reason : "mailwarden"))
        mw_warn("%s: quarantine request failed", mw_session_id(s));
    return MW_MS_CONTINUE;
}

static void cb_abort(mw_ms_conn *ctx)
{
    mconn *c = mw_ms_getpriv(ctx);
    if (c && c->s)
        mw_session_abort(c->s);
}

/* The one cleanup path for a connection. */
static void cb_close(mw_ms_conn *ctx)
{
    mconn *c = mw_ms_getpriv(ctx);
    if (c) {
        mw_session_free(&c->s);
        free(c);
        mw_ms_setpriv(ctx, NULL);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, -1);
    }
}

static const mw_ms_callbacks callbacks = {
    .connect = cb_connect,
    .helo = cb_helo,
    .mail = cb_envfrom,
    .rcpt = cb_envrcpt,
    .header = cb_header,
    .eoh = cb_eoh,
    .body = cb_body,
    .eom = cb_eom,
    .abort = cb_abort,
    .close = cb_close,
};

bool mw_milter_open(mw_engine *e, const mw_milter_options *o, char *err, size_t errlen)
{
    the_engine = e;
    mw_ms_options so = {
        .socket = o->socket,
        .socket_mode = o->socket_mode,
        .timeout = o->timeout,
        .step_timeout = o->command_timeout,
        .max_connections = o->max_connections,
        .actions = MW_MP_F_ADDHDRS | MW_MP_F_CHGHDRS | MW_MP_F_QUARANTINE,
        /* Steps we do not use: unknown commands, DATA.  Headers are wanted
         * byte-exact (leading space kept) for DKIM simple canonicalization. */
        .protocol = MW_MP_P_NOUNKNOWN | MW_MP_P_NODATA | MW_MP_P_HDR_LEADSPC,
        /* Steps that never refuse need no reply (connect, MAIL and RCPT can
         * be refused by rate limits and keep theirs). */
        .no_reply = MW_MP_P_NR_HELO | MW_MP_P_NR_HDR | MW_MP_P_NR_EOH | MW_MP_P_NR_BODY,
        /* Ask for the macros we need, so no MTA configuration is required. */
        .symlists = {[MW_MP_SYM_CONNECT] = "j {daemon_name} {client_addr} {client_name}",
                     [MW_MP_SYM_ENVFROM] = "i {auth_authen} {auth_type} {daemon_name} {mail_addr}",
                     [MW_MP_SYM_EOM] = "i {auth_authen} {daemon_name}"},
    };
    the_server = mw_ms_open(&so, &callbacks, err, errlen);
    return the_server != NULL;
}

int mw_milter_run(void)
{
    return mw_ms_run(the_server);
}

void mw_milter_stop(void)
{
    if (the_server)
        mw_ms_stop(the_server);
}
