/*
 * json.c - minimal JSON writer.  Output is always valid JSON: invalid UTF-8
 * bytes are written as \u00XX of the byte (so nothing is silently dropped).
 */
#include <stdio.h>
#include <string.h>

#include "json.h"

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (c == 0xe0 && s[1] < 0xa0)
        return 0;
    if (c == 0xed && s[1] >= 0xa0)
        return 0; /* surrogates */
    if (c == 0xf0 && s[1] < 0x90)
        return 0;
    if (c == 0xf4 && s[1] >= 0x90)
        return 0;
    return len;
}

void mw_json_str(mw_buf *b, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    mw_buf_putc(b, '"');
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            mw_buf_putc(b, '\\');
            mw_buf_putc(b, (char)c);
            i++;
        } else if (c == '\n') {
            mw_buf_puts(b, "\\n");
            i++;
        } else if (c == '\r') {
            mw_buf_puts(b, "\\r");
            i++;
        } else if (c == '\t') {
            mw_buf_puts(b, "\\t");
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            mw_buf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            mw_buf_putc(b, (char)c);
            i++;
        } else {
            size_t l = utf8_len(p + i, len - i);
            if (l) {
                mw_buf_append(b, p + i, l);
                i += l;
            } else {
                mw_buf_printf(b, "\\u%04x", c);
                i++;
            }
        }
    }
    mw_buf_putc(b, '"');
}

void mw_json_cstr(mw_buf *b, const char *s)
{
    if (!s)
        mw_buf_puts(b, "null");
    else
        mw_json_str(b, s, strlen(s));
}

void mw_json_init(mw_json *w, mw_buf *out)
{
    memset(w, 0, sizeof *w);
    w->out = out;
}

static void sep(mw_json *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0 && w->depth < 32) {
        if (w->need_comma[w->depth])
            mw_buf_putc(w->out, ',');
        w->need_comma[w->depth] = true;
    }
}

static void open_(mw_json *w, char c)
{
    sep(w);
    mw_buf_putc(w->out, c);
    w->depth++;
    if (w->depth < 32)
        w->need_comma[w->depth] = false;
}

static void close_(mw_json *w, char c)
{
    mw_buf_putc(w->out, c);
    if (w->depth > 0)
        w->depth--;
}

void mw_json_obj_begin(mw_json *w) { open_(w, '{'); }
void mw_json_obj_end(mw_json *w) { close_(w, '}'); }
void mw_json_arr_begin(mw_json *w) { open_(w, '['); }
void mw_json_arr_end(mw_json *w) { close_(w, ']'); }

void mw_json_key(mw_json *w, const char *key)
{
    sep(w);
    mw_json_cstr(w->out, key);
    mw_buf_putc(w->out, ':');
    w->after_key = true;
}

void mw_json_string(mw_json *w, const char *s)
{
    sep(w);
    mw_json_cstr(w->out, s);
}

void mw_json_string_n(mw_json *w, const char *s, size_t len)
{
    sep(w);
    mw_json_str(w->out, s, len);
}

void mw_json_int(mw_json *w, long long v)
{
    sep(w);
    mw_buf_printf(w->out, "%lld", v);
}

void mw_json_bool(mw_json *w, bool v)
{
    sep(w);
    mw_buf_puts(w->out, v ? "true" : "false");
}

void mw_json_null(mw_json *w)
{
    sep(w);
    mw_buf_puts(w->out, "null");
}
