/*
 * milter_server.h - our milter protocol 6 server (replaces libmilter).
 *
 * Listens on inet:PORT@HOST, inet6:PORT@HOST, unix:PATH or local:PATH
 * (listen.h: no host = loopback) and runs one detached thread per MTA
 * connection (explicit stack size), at most max_connections at a time (a
 * connection past the cap is accepted and closed at once).  A
 * connection reads through a buffer (one read() takes in as many packets
 * as the MTA has sent; the read blocks with SO_RCVTIMEO = the milter
 * timeout, no poll, while the connection is idle between commands; once
 * part of a packet is here, the rest must come within the step timeout,
 * however slowly it trickles), decodes with milter_proto (a packet is at
 * most 1 MiB + 4 KiB, so is the read buffer), calls the callbacks, and
 * writes the replies of a step with one write.  Steps the MTA agreed not
 * to answer (SMFIP_NR_*) get no reply.  Every way a connection ends (QUIT,
 * hang-up, timeout, a malformed packet) goes through one cleanup path that
 * calls the close callback once.
 *
 * Macros: a D packet replaces its stage's macros; CONNECT, HELO, MAIL and
 * RCPT drop the later stages' ones (as libmilter does); mw_ms_getsymval
 * searches the latest stage first ("{x}" and "x" match each other for
 * one-letter names, as smfi_getsymval does).
 *
 * Threads: callbacks for one connection run on that connection's thread,
 * one at a time.  The server object is shared read-only; stop is atomic.
 */
#ifndef MW_FRONTENDS_MILTER_SERVER_H
#define MW_FRONTENDS_MILTER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "milter_proto.h"

typedef struct mw_ms_server mw_ms_server;
typedef struct mw_ms_conn mw_ms_conn;

typedef enum { MW_MS_CONTINUE, MW_MS_REJECT, MW_MS_TEMPFAIL, MW_MS_DISCARD, MW_MS_ACCEPT } mw_ms_status;

/* Any callback may be NULL (CONTINUE).  Strings are valid during the call. */
typedef struct mw_ms_callbacks {
    /* addr: the client address as the MTA sent it ("" for family 'U') */
    mw_ms_status (*connect)(mw_ms_conn *c, const char *host, char family, uint16_t port, const char *addr);
    mw_ms_status (*helo)(mw_ms_conn *c, const char *helo);
    /* arg0: the address; the ESMTP arguments are not passed on */
    mw_ms_status (*mail)(mw_ms_conn *c, const char *arg0);
    mw_ms_status (*rcpt)(mw_ms_conn *c, const char *arg0);
    mw_ms_status (*header)(mw_ms_conn *c, const char *name, const char *value);
    mw_ms_status (*eoh)(mw_ms_conn *c);
    mw_ms_status (*body)(mw_ms_conn *c, const uint8_t *data, size_t len);
    /* may call mw_ms_addheader/insheader/chgheader/quarantine/setreply */
    mw_ms_status (*eom)(mw_ms_conn *c);
    void (*abort)(mw_ms_conn *c);
    /* end of the connection, or QUIT_NC (K): free what hangs on priv */
    void (*close)(mw_ms_conn *c);
} mw_ms_callbacks;

typedef struct mw_ms_options {
    const char *socket;        /* inet:PORT@HOST, inet6:PORT@HOST, unix:PATH, local:PATH */
    int         socket_mode;   /* mode a unix socket is created with (listen.h); 0: the umask's */
    unsigned    timeout;       /* seconds to wait on the MTA (read and write); 0: 7210 */
    uint32_t    actions;       /* MW_MP_F_* wanted (masked by what the MTA offers) */
    uint32_t    protocol;      /* MW_MP_P_NO* / HDR_LEADSPC wanted (masked likewise) */
    uint32_t    no_reply;      /* MW_MP_P_NR_* used when the MTA offers them */
    const char *symlists[MW_MP_SYM__N];   /* macro lists per stage (SETSYMLIST); NULL: none */
    size_t      stack_size;    /* per-connection thread stack; 0: the default below */
    unsigned    max_connections;  /* open connections at most; 0: MW_MS_MAX_CONNECTIONS.  A
                                     connection past it is accepted and closed at once
                                     (logged, rate-limited; counted in
                                     mailwarden_listener_refused_total) */
    unsigned    step_timeout;  /* seconds a packet may take to arrive complete once its first
                                  byte came, and our replies to be taken; 0: MW_MS_STEP_TIMEOUT */
} mw_ms_options;

#define MW_MS_STACK_SIZE      (512u * 1024u)
#define MW_MS_MAX_CONNECTIONS 256u
#define MW_MS_STEP_TIMEOUT    30u

/*
 * Bind and listen (call before dropping privileges): a stale unix socket
 * file is removed first, TCP gets SO_REUSEADDR (and TCP_NODELAY on every
 * connection), backlog 128.  The callbacks and options are copied (the
 * strings too).  NULL with a reason in err on failure.
 */
mw_ms_server *mw_ms_open(const mw_ms_options *o, const mw_ms_callbacks *cb, char *err, size_t errlen);
/* Accept until mw_ms_stop(); 0 on a clean stop, 1 on a fatal accept error. */
int mw_ms_run(mw_ms_server *s);
/* Stop accepting (any thread; not async-signal-safe).  Connections in
 * progress keep running until the MTA ends them or the process exits. */
void mw_ms_stop(mw_ms_server *s);
/* Connections currently open. */
unsigned mw_ms_connections(const mw_ms_server *s);
/* Threads waiting for a next connection (a finished connection's thread
 * waits up to 30 s to serve the next one instead of exiting; at most 64
 * wait).  0 once mw_ms_run has returned. */
unsigned mw_ms_idle_threads(const mw_ms_server *s);
/* Close the socket (removing a unix socket file) and free; only after
 * mw_ms_run returned and with no connection left. */
void mw_ms_free(mw_ms_server **s);

/* ---- per connection, from its callbacks ---- */

void       *mw_ms_getpriv(mw_ms_conn *c);
void        mw_ms_setpriv(mw_ms_conn *c, void *p);
const char *mw_ms_getsymval(mw_ms_conn *c, const char *name);
/* SMFIP_HDR_LEADSPC agreed: header values carry their leading blank */
bool        mw_ms_leadspc(const mw_ms_conn *c);
/* The reply text for a REJECT/TEMPFAIL returned by the current callback
 * (rcode "4xx" or "5xx" matching the status; else the plain r/t reply). */
void        mw_ms_setreply(mw_ms_conn *c, const char *rcode, const char *xcode, const char *text);
/* End of message only; false when the action was not negotiated. */
bool        mw_ms_addheader(mw_ms_conn *c, const char *name, const char *value);
bool        mw_ms_insheader(mw_ms_conn *c, uint32_t index, const char *name, const char *value);
bool        mw_ms_chgheader(mw_ms_conn *c, uint32_t index, const char *name, const char *value);
bool        mw_ms_quarantine(mw_ms_conn *c, const char *reason);

#endif
