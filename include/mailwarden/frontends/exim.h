/*
 * exim.h - the Exim front end.  Exim has no milter client, so the daemon
 * serves it through two small protocols that Exim's ACLs already speak:
 *
 *   scan socket (end of DATA)  the rspamd protocol of Exim's
 *       `spam = nobody:true/defer_ok` condition with
 *       `spamd_address = ... variant=rspamd`: one request per message
 *       ("CHECK RSPAMC/1.3", envelope lines, then Content-length bytes of an
 *       mbox-form message), one reply, close.  The verdict travels back as
 *       the Action line plus report lines ("MW-Add: ...", "MW-Remove: ...",
 *       "MW-Keep: ...", "MW-Reply: ...") that contrib/exim/mailwarden.acl
 *       turns into add_header/remove_header/deny/defer.
 *   rcpt socket (RCPT time)    one line "RCPT ip=.. helo=.. from=.. rcpt=..
 *       auth=.. port=..\n" from ${readsocket}; reply "OK", "DEFER text" or
 *       "REJECT text", close.
 *
 * Thread model: one acceptor thread per listener (poll on the listening
 * socket and a stop pipe); each accepted connection is served by its own
 * detached thread.  Scan and RCPT connections have separate pools, each
 * with its own cap (max_connections, rcpt_max_connections), so a flood on
 * one socket cannot starve the other.  At accept: a TCP peer outside
 * allow_peers is closed at once; a connection whose pool is full waits up
 * to 1 s for a slot (a burst is served a moment later), then is closed.
 * Both are logged (a few lines a minute) and counted
 * (mailwarden_listener_refused_total).  A connection thread owns its
 * engine session from start to close.  Every read has a timeout, and the
 * whole request has a deadline from accept (request_timeout for a scan,
 * rcpt_timeout for RCPT), however slowly the bytes trickle in; a reply
 * must be taken within timeout.  Memory per connection: a 64 KiB read
 * buffer, request lines of at most 8 KiB, at most 2100 request headers,
 * at most MW_EXIM_MAX_RCPTS recipients kept; a request larger than
 * max_message is answered with an error and logged.
 *
 * Process-global like the milter front end: open once, start once, stop
 * once.  The engine is borrowed and must outlive mw_exim_stop().
 */
#ifndef MW_FRONTENDS_EXIM_H
#define MW_FRONTENDS_EXIM_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "cidr.h"
#include "engine.h"

/* Hard cap on one scan request (Content-length), whatever the options say. */
#define MW_EXIM_MAX_MESSAGE_CAP ((size_t)64 * 1024 * 1024)
/* Report lines longer than this are not emitted (RFC 5322 line limit). */
#define MW_EXIM_MAX_LINE 998
/* Exim's spam.c reads the reply into a 32600-byte buffer and ignores the
 * rest: a reply stays under this, with a margin. */
#define MW_EXIM_MAX_REPLY 32000
/* Header section bound of a scan request: Exim's own header_maxsize
 * default (1 MiB), plus room for the Received header Exim adds after
 * counting.  Exim refuses larger header sections itself, so only a peer
 * that is not Exim (or an Exim with a raised header_maxsize) sends more;
 * such a message is answered with a temporary failure. */
#define MW_EXIM_MAX_HEADER_SECTION ((size_t)1024 * 1024 + 64 * 1024)

typedef struct mw_exim_options {
    const char *scan_socket;      /* inet:PORT@HOST, inet6:PORT@HOST, unix:/PATH; NULL/"" = off */
    const char *rcpt_socket;      /* same syntax; NULL/"" = off */
    int         socket_mode;      /* unix sockets; 0 = 0660 */
    unsigned    timeout;          /* seconds per read, and for sending a reply; 0 = 30 */
    size_t      max_message;      /* bytes; 0 or above the cap = MW_EXIM_MAX_MESSAGE_CAP */
    unsigned    max_connections;  /* scan connections at once; 0 = 64 */
    unsigned    rcpt_max_connections; /* RCPT connections at once; 0 = 64 */
    unsigned    request_timeout;  /* s from accept until a scan request has arrived whole; 0 = 60 */
    unsigned    rcpt_timeout;     /* s from accept until a RCPT line has arrived whole; 0 = 10 */
    const mw_cidr_set *allow_peers; /* TCP peers served (copied); NULL = 127.0.0.0/8 and ::1 */
} mw_exim_options;

/*
 * Bind and listen on the configured sockets (call before dropping
 * privileges; a stale unix socket file is replaced).  Neither socket
 * configured is not an error: mw_exim_start() then does nothing.
 * false with a reason in err on failure (nothing is left open).
 */
bool mw_exim_open(mw_engine *e, const mw_exim_options *o, char *err, size_t errlen);
/* Start the acceptor threads.  Call after the privilege drop, with the
 * signals the worker handles itself blocked (threads inherit the mask). */
bool mw_exim_start(char *err, size_t errlen);
/*
 * Graceful stop: close the listeners, then wait up to wait_ms for
 * connections in progress to finish; connections still open after that
 * are shut down (their reads fail, the engine session is freed).  Call
 * after mw_engine_set_draining() + mw_engine_wait_idle(), like the
 * milter's stop.  Safe to call when never opened or started.
 */
void mw_exim_stop(unsigned wait_ms);

/* ---- protocol pieces, exposed for the unit tests ---- */

#define MW_EXIM_MAX_RCPTS 1000

/* The envelope part of a scan request. */
typedef struct mw_exim_request {
    char    *command;          /* "CHECK" */
    char    *queue_id;         /* Queue-Id: (Exim message id) */
    char    *from;             /* From: "<addr>" as sent; "<>" for the null sender */
    char   **rcpts;            /* Rcpt: (each "<addr>"), at most MW_EXIM_MAX_RCPTS kept */
    size_t   nrcpts;
    char    *helo;             /* Helo: */
    char    *hostname;         /* Hostname: (verified PTR name) */
    char    *ip;               /* IP: */
    char    *user;             /* User: ($authenticated_id) */
    size_t   content_length;
    bool     have_length;
} mw_exim_request;

void mw_exim_request_clear(mw_exim_request *r);
/* First line: "CHECK RSPAMC/1.3" (also SYMBOLS/REPORT/REPORT_IFSPAM/
 * PROCESS/PING with RSPAMC or SPAMC).  false + reason otherwise. */
bool mw_exim_request_line(mw_exim_request *r, const char *line, size_t len, char *err, size_t errlen);
/* One request header line ("Name: value", no CR/LF).  Unknown names are
 * ignored.  false + reason for a malformed line or Content-length. */
bool mw_exim_request_header(mw_exim_request *r, const char *line, size_t len, char *err, size_t errlen);

/*
 * Streaming normaliser for the mbox-form message: drops the "From " line
 * and Exim's X-Envelope-From / X-Envelope-To lines, splits the header
 * block into (name, value) with the value byte-exact after the colon and
 * continuation lines joined with "\n" (as the milter delivers them),
 * reports end of headers, and passes the body on with LF made CRLF.
 * Exim's own new Received header is passed on like any other header.
 * Bounded: once the message's header lines (after the envelope lines)
 * exceed MW_EXIM_MAX_HEADER_SECTION bytes, header_over is set and nothing
 * more is passed on (no header, no end of headers, no body): the caller
 * must not evaluate the message.
 */
typedef struct mw_exim_mbox_cb {
    void (*header)(void *ctx, const char *name, const char *value, size_t vlen);
    void (*eoh)(void *ctx);
    void (*body)(void *ctx, const unsigned char *p, size_t n);
} mw_exim_mbox_cb;

typedef struct mw_exim_mbox {
    const mw_exim_mbox_cb *cb;
    void   *ctx;
    int     state;          /* private */
    mw_buf  line;           /* current header-section line */
    mw_buf  hdr;            /* current (possibly folded) header */
    mw_buf  out;            /* body conversion scratch */
    bool    line_over;      /* current line exceeded the cap */
    size_t  line_raw;       /* bytes of the current line, kept or not */
    bool    candidate;      /* hdr is a name without its colon yet (Exim
                             * takes "Name\n : value" for a header) */
    bool    prev_cr;        /* body: last byte passed was CR */
    size_t  nheaders;
    size_t  nbad_headers;   /* lines refused as headers (empty name, NUL in the name) */
    size_t  header_bytes;   /* bytes of the message's header lines so far */
    bool    header_over;    /* header_bytes passed MW_EXIM_MAX_HEADER_SECTION */
} mw_exim_mbox;

void mw_exim_mbox_init(mw_exim_mbox *m, const mw_exim_mbox_cb *cb, void *ctx);
void mw_exim_mbox_feed(mw_exim_mbox *m, const unsigned char *p, size_t n);
/* End of input: flushes a pending header and end of headers if not seen. */
void mw_exim_mbox_finish(mw_exim_mbox *m);
void mw_exim_mbox_free(mw_exim_mbox *m);

/*
 * Render the reply for a verdict (v NULL: an error reply, see below).
 * When the verdict removes any Authentication-Results header (v->ar, the
 * engine's list of every A-R header with its fate), the reply says
 * "MW-Remove: Authentication-Results" (Exim removes headers by name only,
 * and its header_testname() matches "Authentication-Results :" too, so
 * every A-R goes, forged or not) and lists the kept ones as "MW-Keep:"
 * lines so the ACL re-adds them.  Header values are unfolded onto one
 * line.  MW-Add lines come bottom-most first (the ACL adds each with
 * :at_start:, so the last listed, add[0], ends up on top) and before the
 * Keep lines.  A line that would exceed MW_EXIM_MAX_LINE, a Keep line
 * that would take the reply past MW_EXIM_MAX_REPLY (Exim reads no more), or
 * a kept A-R holding control bytes (re-adding it would rewrite it), is left
 * out and counted in *dropped (may be NULL).
 */
/*
 * stay: indexes (as in v->ar) of A-R headers whose name Exim's remove_header
 * cannot match (a fold or CR between the name and the colon: Exim keeps
 * "Authentication-Results\n : ..." as a header, but header_testname()
 * skips only blanks).  Such a header is never re-added (it never left); if
 * the verdict removes one, the reply is a reject (550 5.7.1) instead and
 * false is returned (the caller logs it): a forged A-R is never delivered.
 */
bool mw_exim_reply(const mw_verdict *v, const unsigned *stay, size_t nstay, mw_buf *out, size_t *dropped);
/* A reply that makes the ACL defer ("soft reject") with text, used for
 * malformed or oversized requests and while shutting down. */
void mw_exim_reply_tempfail(const char *text, mw_buf *out);

/* RCPT-time request ("RCPT k=v ..."). */
typedef struct mw_exim_rcpt {
    char *ip, *helo, *from, *rcpt, *auth, *port;
} mw_exim_rcpt;

void mw_exim_rcpt_clear(mw_exim_rcpt *r);
/* Parse one line (trailing CR/LF allowed).  Unknown keys are ignored;
 * missing keys stay NULL.  false + reason when it is not a RCPT line. */
bool mw_exim_rcpt_parse(mw_exim_rcpt *r, const char *line, size_t len, char *err, size_t errlen);

#endif
