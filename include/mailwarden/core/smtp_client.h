/*
 * smtp_client.h - a small SMTP client for handing our own mail (DMARC
 * aggregate reports) to a relay: EHLO (HELO fallback), STARTTLS when the
 * relay offers it and the caller allows it (OpenSSL; the certificate chain
 * and the relay's host name or address are verified unless the caller opts
 * out), MAIL/RCPT/DATA with dot-stuffing, a deadline on every step, and
 * every outcome classified as done, temporary (4xx, connection trouble,
 * timeouts, TLS trouble including a failed verification: try again later)
 * or permanent (5xx, an address refused locally).
 *
 * One connection carries any number of messages (RSET between them after a
 * failed transaction).  After a temporary failure at the connection level
 * the handle is dead: close it and open a new one.
 *
 * Thread safety: a handle belongs to one thread.
 */
#ifndef MW_CORE_SMTP_CLIENT_H
#define MW_CORE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum mw_smtp_status {
    MW_SMTP_OK = 0,     /* accepted (2xx to the end of DATA) */
    MW_SMTP_TEMP,       /* 4xx, connection refused/lost, timeout, TLS trouble */
    MW_SMTP_PERM        /* 5xx (or a message the server's SIZE refuses) */
} mw_smtp_status;

const char *mw_smtp_status_name(mw_smtp_status s);   /* "ok", "temporary", "permanent" */

typedef struct mw_smtp_options {
    const char *host;         /* name or address */
    unsigned    port;         /* 0: 25 */
    const char *helo;         /* our name for EHLO (required) */
    bool        starttls;     /* use STARTTLS when offered */
    bool        tls_no_verify;   /* true: encrypt only, accept any certificate */
    const char *tls_ca_file;  /* PEM CA certificates; NULL or "": the system store */
    unsigned    timeout_ms;   /* per step: connect, each reply, each write (0: 60000) */
} mw_smtp_options;

/* What happened (filled by every call that takes it). */
typedef struct mw_smtp_result {
    mw_smtp_status status;
    int            code;          /* last reply code; 0 when none (connection trouble) */
    const char    *stage;         /* "connect", "greeting", "ehlo", "starttls", "mail",
                                     "rcpt", "data", "dot", "size" */
    char           reply[512];    /* last reply (lines joined by " / ") or the local reason */
} mw_smtp_result;

typedef struct mw_smtp mw_smtp;

/*
 * Connect, read the greeting, EHLO (HELO when EHLO is refused), STARTTLS
 * and EHLO again when offered and o->starttls.  NULL with res filled on
 * failure.  The handle is freed with mw_smtp_close().
 */
mw_smtp *mw_smtp_open(const mw_smtp_options *o, mw_smtp_result *res);
/* Is the session protected by TLS? */
bool mw_smtp_tls(const mw_smtp *s);

/*
 * One transaction: MAIL FROM:<from> (SIZE= when advertised), RCPT TO:<to>,
 * DATA, the message (msg, len; LF or CRLF line ends, no final dot) with
 * dot-stuffing, and the final dot.  from and to must be visible ASCII
 * without '<', '>' or blanks, 254 bytes at most: anything else is refused
 * locally (MW_SMTP_PERM, code 0, stage "mail"/"rcpt", nothing sent, the
 * handle stays usable), so no caller can inject an SMTP command.  The
 * DATA transfer has one deadline: timeout_ms per started MiB.  Returns
 * res->status.  After MW_SMTP_OK
 * or a reply-level failure the handle can carry the next message; after a
 * connection-level failure (code 0) it cannot.
 */
mw_smtp_status mw_smtp_sendmail(mw_smtp *s, const char *from, const char *to, const char *msg,
                                size_t len, mw_smtp_result *res);
/* Is the connection still usable for another transaction? */
bool mw_smtp_usable(const mw_smtp *s);

/* QUIT (best effort), close, free; NULLs *s. */
void mw_smtp_close(mw_smtp **s);

#endif
