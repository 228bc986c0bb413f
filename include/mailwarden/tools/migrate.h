/*
 * migrate.h - the pieces of `mailwarden migrate` (filter/tools/migrate.c):
 * reading OpenDKIM/OpenDMARC-style configuration files and data sets
 * (migrate_src.c), and building the commented mailwarden.conf
 * (migrate_out.c).  Internal to the tools layer.
 */
#ifndef MW_TOOLS_MIGRATE_H
#define MW_TOOLS_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- source files (migrate_src.c) ---------------------------------------- */

/* One "Key value" line of an opendkim.conf / opendmarc.conf. */
typedef struct mw_mig_kv {
    char *key;     /* as written */
    char *val;     /* the rest of the line, blanks trimmed ("" when none) */
    char *where;   /* "FILE:LINE" */
    bool  used;    /* looked at by the mapping (else reported as not carried) */
} mw_mig_kv;

typedef struct mw_mig_conf {
    mw_mig_kv *kv;
    size_t     n;
} mw_mig_conf;

/* Read a config file.  Lines are "Key value", '#' starts a comment; lines
 * longer than 4096 bytes are an error.  false with a reason in err. */
bool mw_mig_conf_read(mw_mig_conf *c, const char *path, char *err, size_t errlen);
void mw_mig_conf_free(mw_mig_conf *c);
/* The last setting of key (case-insensitive) or NULL; marks every
 * occurrence used.  The returned entry belongs to c. */
mw_mig_kv *mw_mig_get(mw_mig_conf *c, const char *key);
/* OpenDKIM booleans: 1 (yes/true/1/on), 0 (no/false/0/off), -1 otherwise. */
int mw_mig_bool(const char *v);

/* A list of strings, each owned by the list. */
typedef struct mw_mig_list {
    char **v;
    size_t n;
} mw_mig_list;

void mw_mig_list_add(mw_mig_list *l, const char *s);
void mw_mig_list_free(mw_mig_list *l);

/* Read an OpenDKIM data set: "file:PATH", "refile:PATH", "/PATH" (one entry
 * per non-comment line, blanks trimmed; the whole line, so table lines keep
 * their fields) or a comma-separated list ("csl:" optional).  *refile tells
 * whether it was "refile:", *path (may be NULL) gets the file path or "".
 * false with a reason for the forms mailwarden cannot read (db:, ldap:,
 * lua:, ...) or an unreadable file. */
bool mw_mig_dataset(const char *spec, mw_mig_list *out, bool *refile, const char **path,
                    char *why, size_t whylen);

/* ---- the output file (migrate_out.c) -------------------------------------- */

typedef struct mw_mig_out mw_mig_out;

mw_mig_out *mw_mig_out_new(void);
void mw_mig_out_free(mw_mig_out **o);
/* Set group.key (group "" for the top level) to value, a libconfig literal,
 * with a comment (printf format; newlines start new comment lines).  A
 * second set of the same key replaces the value and adds to the comment. */
void mw_mig_set(mw_mig_out *o, const char *group, const char *key, const char *value,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A comment-only item in group. */
void mw_mig_note(mw_mig_out *o, const char *group, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A setting that is not carried: a comment in group, also listed in the
 * summary at the top of the file and counted. */
void mw_mig_gap(mw_mig_out *o, const char *group, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
size_t mw_mig_gaps(const mw_mig_out *o);
/* Whether group.key has been set. */
bool mw_mig_isset(const mw_mig_out *o, const char *group, const char *key);
/* Write the file: header comment, the summary of gaps, then the settings. */
void mw_mig_write(const mw_mig_out *o, FILE *f, const char *header);

/* "s" as a libconfig string literal (quotes and backslashes escaped).
 * Caller frees. */
char *mw_mig_quote(const char *s);
/* [ "a", "b" ] for the strings of l.  Caller frees. */
char *mw_mig_quote_list(const mw_mig_list *l);

/* ---- mappings -------------------------------------------------------------- */

/* OpenDKIM's signing setup (migrate_dkim.c): Domain, Selector, KeyFile,
 * SubDomains, KeyTable, SigningTable into dkim.keys/dkim.signing or
 * dkim.key_table/dkim.signing_table. */
void mw_mig_dkim_signing(mw_mig_conf *c, mw_mig_out *o);

#endif
