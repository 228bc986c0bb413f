/*
 * rptin.h - reading DMARC aggregate reports that others send us
 * (`mailwarden reports-in`): the XML report parser (checks/rptin_xml.c) and
 * the container decoder that finds the XML inside gzip, zip and MIME mail
 * (checks/rptin_unpack.c, checks/rptin_zip.c, checks/rptin_mime.c).
 *
 * Everything here reads hostile input: every size is capped (the limits
 * below) and exceeding a cap is an error that names the cap, never a
 * silent truncation.  Nothing here touches the disk or the network.
 */
#ifndef MW_CHECKS_RPTIN_H
#define MW_CHECKS_RPTIN_H

#include <stdbool.h>
#include <stddef.h>

/* ---- limits (documented in docs/reports.md, "Reports you receive") ---- */
/* one input file (a report, a mail, a whole mbox) */
#define MW_RPTIN_MAX_INPUT      (256u * 1024 * 1024)
/* one XML report after decompression (gzip, zip entry) and MIME decoding */
#define MW_RPTIN_MAX_XML        (64u * 1024 * 1024)
/* all decompressed output of one input file together */
#define MW_RPTIN_MAX_TOTAL      (256u * 1024 * 1024)
/* nesting: mail in mail, gzip in zip, ... */
#define MW_RPTIN_MAX_DEPTH      6
/* zip entries in one archive, MIME parts in one message */
#define MW_RPTIN_MAX_ENTRIES    64
#define MW_RPTIN_MAX_PARTS      256
/* <record> elements in one report */
#define MW_RPTIN_MAX_RECORDS    1000000

/* ---- the parsed report ---- */
typedef struct mw_rptin_row {
    char              *source_ip;      /* normalised (inet_ntop) */
    unsigned long long count;
    char              *disposition;    /* lower case; "" when absent */
    char              *dkim_aligned;   /* policy_evaluated/dkim: "pass", "fail" or "" */
    char              *spf_aligned;    /* policy_evaluated/spf */
    char              *header_from;    /* lower case; "" when absent */
    char              *envelope_from;
    char              *dkim_result;    /* best auth_results/dkim result ("pass" wins), "" when none */
    char              *dkim_domain;    /* its domain */
    char              *spf_result;     /* auth_results/spf result, "" when none */
    char              *spf_domain;
    char              *reason;         /* policy_evaluated/reason/type, lower case, "" */
} mw_rptin_row;

typedef struct mw_rptin_report {
    int           format;              /* 9990 (dmarc-2.0 namespace) or 7489 */
    char         *org_name;            /* trimmed; the email's domain when empty */
    char         *email;
    char         *report_id;
    long long     begin, end;          /* date_range, seconds since the epoch */
    char         *domain;              /* policy_published/domain, lower case */
    char         *p, *sp;              /* lower case, "" when absent */
    int           pct;                 /* -1 when absent */
    mw_rptin_row *rows;
    size_t        nrows;
} mw_rptin_report;

/*
 * Parse one aggregate report of len bytes.  libxml2 runs with no network,
 * no entity substitution, no DTD loading, and any DOCTYPE is refused (XXE,
 * billion laughs).  Element names are matched by local name, case-blind,
 * in any namespace (the sloppy variants receivers send); enum values are
 * lower-cased and trimmed.  Returns true and fills *out (release with
 * mw_rptin_report_clear), or false with a one-line reason in why (and
 * *out empty).  len above MW_RPTIN_MAX_XML is refused.
 */
bool mw_rptin_parse(const char *xml, size_t len, mw_rptin_report *out, char *why, size_t whylen);
void mw_rptin_report_clear(mw_rptin_report *r);

/* ---- containers ---- */
/*
 * Called for each XML document found (name says where: "mail.eml: part 2:
 * report.xml"); return false to stop.  The data is valid during the call.
 */
typedef bool (*mw_rptin_doc_cb)(const char *name, const char *xml, size_t len, void *arg);
/* Called for each error (a bomb, a bad zip, a mail without report, ...). */
typedef void (*mw_rptin_err_cb)(const char *name, const char *why, void *arg);

/*
 * Find the reports in one input: plain XML, gzip, zip, or an RFC 5322
 * message (multipart, base64 / quoted-printable, application/gzip,
 * application/zip, text/xml parts, message/rfc822 inside).  Returns the
 * number of errors reported through err (0: all fine).
 */
size_t mw_rptin_unpack(const char *name, const unsigned char *data, size_t len, mw_rptin_doc_cb doc,
                       mw_rptin_err_cb err, void *arg);

/* ---- internal pieces, exported for the fuzz targets and the unpacker ---- */
typedef struct mw_rptin_budget {
    size_t total;       /* decompressed bytes so far (against MW_RPTIN_MAX_TOTAL) */
} mw_rptin_budget;

/* gunzip (one or more members) into *out (malloc'd, caller frees); false + why
 * on bad data or when the output would pass max bytes or the budget. */
bool mw_rptin_gunzip(const unsigned char *in, size_t len, size_t max, mw_rptin_budget *b,
                     unsigned char **out, size_t *outlen, char *why, size_t whylen);

/* One zip entry, as given to the callback of mw_rptin_unzip. */
typedef bool (*mw_rptin_zip_cb)(const char *entry, const unsigned char *data, size_t len, void *arg);
/* Strict zip reader (stored and deflate entries only; no zip64, no
 * encryption; CRC and sizes checked).  Returns false + why on any defect or
 * cap; entries already handed to cb stay handed. */
bool mw_rptin_unzip(const unsigned char *in, size_t len, size_t max, mw_rptin_budget *b,
                    mw_rptin_zip_cb cb, void *arg, char *why, size_t whylen);

/*
 * MIME (rptin_mime.c): walk the message msg (headers, empty line, body),
 * descending into multipart/ *; each leaf part, with its transfer encoding
 * (base64, quoted-printable, 7bit/8bit/binary) undone, goes to cb with its
 * lower-cased media type ("" when none) and file name (Content-Disposition
 * filename or Content-Type name, "" when none).  *nparts counts the parts
 * seen (against MW_RPTIN_MAX_PARTS).  False + why on a malformed structure
 * or a cap; leaves already handed to cb stay handed.
 */
typedef bool (*mw_rptin_part_cb)(const char *ctype, const char *filename, const unsigned char *body,
                                 size_t len, void *arg);
bool mw_rptin_mime(const unsigned char *msg, size_t len, int depth, unsigned *nparts, mw_rptin_part_cb cb,
                   void *arg, char *why, size_t whylen);

#endif
