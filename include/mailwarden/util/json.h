/*
 * json.h - minimal JSON writer into an mw_buf (for `check --json` and JSON
 * logs).  The caller drives structure; this module escapes strings
 * correctly (control characters, quotes, invalid UTF-8 as \u00XX of the
 * byte so the output is always valid JSON).
 */
#ifndef MW_UTIL_JSON_H
#define MW_UTIL_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* Append a JSON string literal for s[0..len) (quotes included). */
void mw_json_str(mw_buf *b, const char *s, size_t len);
/* Same for a NUL-terminated string; NULL writes null. */
void mw_json_cstr(mw_buf *b, const char *s);

/*
 * Streaming writer that inserts commas for you.  Usage:
 *   mw_json w; mw_json_init(&w, &buf);
 *   mw_json_obj_begin(&w); mw_json_key(&w, "a"); mw_json_string(&w, "x"); ...
 */
typedef struct mw_json {
    mw_buf  *out;
    int      depth;
    bool     need_comma[32];
    bool     after_key;
} mw_json;

void mw_json_init(mw_json *w, mw_buf *out);
void mw_json_obj_begin(mw_json *w);
void mw_json_obj_end(mw_json *w);
void mw_json_arr_begin(mw_json *w);
void mw_json_arr_end(mw_json *w);
void mw_json_key(mw_json *w, const char *key);
void mw_json_string(mw_json *w, const char *s);          /* NULL -> null */
void mw_json_string_n(mw_json *w, const char *s, size_t len);
void mw_json_int(mw_json *w, long long v);
void mw_json_bool(mw_json *w, bool v);
void mw_json_null(mw_json *w);

#endif
