/*
 * config_dump.h - the effective configuration as mailwarden.conf text
 * (`mailwarden config-dump`, like `postconf -n` / `postconf -d`).
 *
 * The dump is generated from the one key table in config.c, through
 * mw_config_key_info(): every key, its value, and where the value came from
 * ("default", "FILE:LINE" or "command line") as a trailing comment.  The
 * output is valid mailwarden.conf syntax (values written the way the loader
 * reads them), so `config-dump --defaults > x.conf` loads back to the same
 * configuration.
 */
#ifndef MW_CORE_CONFIG_DUMP_H
#define MW_CORE_CONFIG_DUMP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "config.h"

/* The value types of the key table (config.c). */
typedef enum mw_config_kind {
    MW_CK_STRING,       /* char *                                   */
    MW_CK_BOOL,         /* bool                                     */
    MW_CK_UINT,         /* unsigned                                 */
    MW_CK_MODE,         /* int, written as an octal string "0660"   */
    MW_CK_ENUM,         /* int; enum_word is its word               */
    MW_CK_DURATION,     /* unsigned seconds                         */
    MW_CK_DURATION_MS,  /* unsigned milliseconds                    */
    MW_CK_STRLIST,      /* char ** + count                          */
    MW_CK_CIDRLIST,     /* mw_cidr_set *                            */
    MW_CK_GROUPLIST     /* array of elem_size structs + count       */
} mw_config_kind;

/* One member of a MW_CK_GROUPLIST element. */
typedef enum { MW_CM_STRING, MW_CM_STRLIST, MW_CM_UINT } mw_config_member_kind;
typedef struct mw_config_member {
    const char           *name;
    mw_config_member_kind kind;
    size_t                off, off_n;   /* within the element (off_n: MW_CM_STRLIST count) */
} mw_config_member;

#define MW_CONFIG_MAX_MEMBERS 24

/* What the table knows about one key, and (with a config) its value. */
typedef struct mw_config_key_info {
    const char       *name;        /* dotted: "dns.timeout" */
    const char       *doc;
    mw_config_kind    kind;
    long long         min, max;    /* MW_CK_UINT / MODE / DURATION(_MS) bounds, in the key's unit */
    bool              def_host;    /* MW_CK_STRING default: this host's name */
    /* with a config (NULL otherwise): */
    const void       *field;       /* the target field in the config */
    size_t            count;       /* MW_CK_STRLIST / MW_CK_GROUPLIST element count */
    const char       *enum_word;   /* MW_CK_ENUM: the word of the current value */
    const char       *origin;      /* "FILE:LINE", "command line", or NULL: the default */
    /* MW_CK_GROUPLIST */
    size_t            elem_size;
    mw_config_member  members[MW_CONFIG_MAX_MEMBERS];
    size_t            nmembers;
} mw_config_key_info;

/* Fill *out for the i-th key of the table, with cfg's value when cfg is not
 * NULL.  false past the end.  Pointers stay valid while cfg lives. */
bool mw_config_key_info_get(const mw_config *cfg, size_t i, mw_config_key_info *out);

/* What mw_config_dump writes. */
typedef enum mw_config_dump_mode {
    MW_DUMP_ALL,          /* every key, with its origin */
    MW_DUMP_NON_DEFAULT,  /* only keys set in the file or on the command line (-n) */
    MW_DUMP_DEFAULTS      /* every key's default (cfg: a config loaded without a file) */
} mw_config_dump_mode;

/* Append cfg as mailwarden.conf text to out.  Keys of a group ("dns.*") go
 * into one "dns = { ... };" block, in table order; each line ends with
 * "# ORIGIN" (or "# default"). */
void mw_config_dump(const mw_config *cfg, mw_config_dump_mode mode, mw_buf *out);

/* Append the key list of mailwarden.conf(5) generated from the table: for
 * each key a ".TP" / ".B name" entry with its type, bounds, default and doc. */
void mw_config_dump_man(mw_buf *out);

/* Append s as a libconfig string literal ("..." with \" \\ \n \t \xHH
 * escapes), the way the libconfig scanner reads it back. */
void mw_config_quote(mw_buf *out, const char *s);

/* Append a duration of ms milliseconds in its largest exact unit: "7d",
 * "6h", "15m", "5s", "300ms" (0 is "0s"). */
void mw_config_format_duration_ms(mw_buf *out, unsigned long long ms);

#endif
