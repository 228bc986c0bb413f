/*
 * milter_proto.h - a pure codec for the Sendmail milter protocol, version 6
 * (the wire format of libmilter's mfdef.h and Postfix's milter8.c).  No I/O:
 * the decoder reads packets from a byte buffer, the encoder appends packets
 * to an mw_buf.
 *
 * A packet is a 4-byte big-endian length (counting the command byte), one
 * command byte, then length-1 bytes of payload.  Every field is validated:
 * strings must be NUL-terminated inside the payload, counts and lengths
 * must fit.  Malformed or hostile input is an error (false / -1), never an
 * over-read.  Decoded strings point into the caller's buffer and live as
 * long as it does.
 */
#ifndef MW_FRONTENDS_MILTER_PROTO_H
#define MW_FRONTENDS_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define MW_MP_VERSION 6u
/* Body chunks are at most 64 KiB (MILTER_CHUNK_SIZE); a header can be
 * longer.  Anything above this is refused as hostile. */
#define MW_MP_MAX_PACKET ((1u << 20) + 4096u)

/* actions (SMFIF_*) */
#define MW_MP_F_ADDHDRS    0x001u
#define MW_MP_F_CHGBODY    0x002u
#define MW_MP_F_ADDRCPT    0x004u
#define MW_MP_F_DELRCPT    0x008u
#define MW_MP_F_CHGHDRS    0x010u
#define MW_MP_F_QUARANTINE 0x020u
#define MW_MP_F_CHGFROM    0x040u
#define MW_MP_F_ADDRCPT_PAR 0x080u
#define MW_MP_F_SETSYMLIST 0x100u

/* protocol steps (SMFIP_*) */
#define MW_MP_P_NOCONNECT   0x00000001u
#define MW_MP_P_NOHELO      0x00000002u
#define MW_MP_P_NOMAIL      0x00000004u
#define MW_MP_P_NORCPT      0x00000008u
#define MW_MP_P_NOBODY      0x00000010u
#define MW_MP_P_NOHDRS      0x00000020u
#define MW_MP_P_NOEOH       0x00000040u
#define MW_MP_P_NR_HDR      0x00000080u
#define MW_MP_P_NOUNKNOWN   0x00000100u
#define MW_MP_P_NODATA      0x00000200u
#define MW_MP_P_SKIP        0x00000400u
#define MW_MP_P_RCPT_REJ    0x00000800u
#define MW_MP_P_NR_CONN     0x00001000u
#define MW_MP_P_NR_HELO     0x00002000u
#define MW_MP_P_NR_MAIL     0x00004000u
#define MW_MP_P_NR_RCPT     0x00008000u
#define MW_MP_P_NR_DATA     0x00010000u
#define MW_MP_P_NR_UNKN     0x00020000u
#define MW_MP_P_NR_EOH      0x00040000u
#define MW_MP_P_NR_BODY     0x00080000u
#define MW_MP_P_HDR_LEADSPC 0x00100000u
/* an MTA that offers 0 means the version-1 sets (libmilter does the same) */
#define MW_MP_V1_ACTS 0x0000000Fu
#define MW_MP_V1_PROT 0x0000003Fu

/* Macro stages of the optneg reply's symbol lists (SMFIM_*). */
enum { MW_MP_SYM_CONNECT, MW_MP_SYM_HELO, MW_MP_SYM_ENVFROM, MW_MP_SYM_ENVRCPT,
       MW_MP_SYM_DATA, MW_MP_SYM_EOM, MW_MP_SYM_EOH, MW_MP_SYM__N };

/* Where macros of a D packet belong, in the order the MTA sends the steps. */
typedef enum {
    MW_MP_ST_CONNECT, MW_MP_ST_HELO, MW_MP_ST_MAIL, MW_MP_ST_RCPT, MW_MP_ST_DATA,
    MW_MP_ST_HEADER, MW_MP_ST_EOH, MW_MP_ST_BODY, MW_MP_ST_EOM, MW_MP_ST_UNKNOWN, MW_MP_ST__N
} mw_mp_stage;

/* One decoded MTA command.  Only the fields of its command are set. */
typedef struct mw_mp_cmd {
    char        cmd;            /* 'O' 'D' 'C' 'H' 'M' 'R' 'T' 'L' 'N' 'B' 'E' 'A' 'Q' 'K' 'U' */
    /* O */
    uint32_t    version, actions, protocol;
    /* D: stage, and n name\0value\0 pairs packed in [strs, strs+strs_len) */
    mw_mp_stage stage;
    char        stage_cmd;
    /* D, M, R: packed NUL-terminated strings (D: names and values alternate) */
    const char *strs;
    size_t      strs_len;
    size_t      n;              /* D: pairs; M, R: arguments (>= 1) */
    /* C */
    const char *host;
    char        family;         /* '4' '6' 'L' 'U' */
    uint16_t    port;           /* host order; 0 for 'L' and 'U' */
    const char *addr;           /* "" for 'U' */
    /* H: helo; L: name + value; U: the command line */
    const char *str1, *str2;
    /* B, E */
    const uint8_t *data;
    size_t         len;
} mw_mp_cmd;

/*
 * Frame one packet at the start of [buf, buf+len).  1: a whole packet,
 * *cmd / *payload / *plen set and *used the bytes it takes; 0: need more
 * bytes; -1: a length of 0 or above MW_MP_MAX_PACKET (reason in *why).
 */
int mw_mp_frame(const uint8_t *buf, size_t len, char *cmd, const uint8_t **payload, size_t *plen,
                size_t *used, const char **why);

/* Decode an MTA command's payload.  false with a static reason in *why for
 * an unknown command or a malformed payload. */
bool mw_mp_decode(char cmd, const uint8_t *payload, size_t plen, mw_mp_cmd *out, const char **why);

/* The string after *p in a packed list ending at end (NULL when none);
 * the first is strs itself. */
const char *mw_mp_next(const char *p, const char *end);

/* The stage a D packet's command byte names (-1 for none). */
int mw_mp_stage_of(char stage_cmd);

/* ---- encoding (appending whole packets to b) ---- */

void mw_mp_put(mw_buf *b, char cmd, const void *payload, size_t len);
/* 'c' 'r' 't' 'd' 'a' 'p' and the MTA's 'T' 'N' 'A' 'Q' 'K' */
void mw_mp_put_simple(mw_buf *b, char cmd);
/* 'y': "550 5.7.1 text"; text lines split at '\n' become RFC 5321
 * continuation lines ("550-5.7.1 a\r\n550 5.7.1 b").  No xcode, or one
 * of another class than rcode: x.0.0.
 * Control characters become blanks.  '%' is doubled: Sendmail uses the
 * text as a format string and Postfix undoes the doubling. */
void mw_mp_put_replycode(mw_buf *b, const char *rcode, const char *xcode, const char *text);
void mw_mp_put_addheader(mw_buf *b, const char *name, const char *value);
void mw_mp_put_insheader(mw_buf *b, uint32_t index, const char *name, const char *value);
/* value "" deletes the header */
void mw_mp_put_chgheader(mw_buf *b, uint32_t index, const char *name, const char *value);
void mw_mp_put_quarantine(mw_buf *b, const char *reason);
/* 'O' reply or request: version, actions, protocol, then for every
 * non-NULL symlists[i] (i < MW_MP_SYM__N): uint32 i + "list\0" */
void mw_mp_put_optneg(mw_buf *b, uint32_t version, uint32_t actions, uint32_t protocol,
                      const char *const *symlists);

/* MTA side (tests, load generators) */
void mw_mp_put_macros(mw_buf *b, char stage_cmd, const char *const *pairs, size_t npairs);
void mw_mp_put_connect(mw_buf *b, const char *host, char family, uint16_t port, const char *addr);
void mw_mp_put_str(mw_buf *b, char cmd, const char *s);          /* 'H', 'U' */
void mw_mp_put_args(mw_buf *b, char cmd, const char *const *argv, size_t argc); /* 'M', 'R' */
void mw_mp_put_header(mw_buf *b, const char *name, const char *value);
void mw_mp_put_body(mw_buf *b, char cmd, const void *data, size_t len);          /* 'B', 'E' */

/* ---- decoding a filter's reply (tests, fuzzing) ---- */

typedef struct mw_mp_reply {
    char        cmd;
    uint32_t    version, actions, protocol;   /* 'O' */
    const char *symlists[MW_MP_SYM__N];       /* 'O': NULL when not sent */
    uint32_t    index;                        /* 'i' 'm' */
    const char *str1, *str2;                  /* 'y' 'q': text; 'h' 'i' 'm': name, value */
} mw_mp_reply;

bool mw_mp_decode_reply(char cmd, const uint8_t *payload, size_t plen, mw_mp_reply *out, const char **why);

#endif
