/*
 * reports_in_out.c - what `mailwarden reports-in summary` and `html` show:
 * the per-source table, the p=reject readiness and the changes against the
 * period before, as text, JSON, or one self-contained HTML page.
 *
 * Definitions (docs/reports.md, "Reports you receive"):
 *   - DMARC pass: the receiver's policy_evaluated says DKIM or SPF passed
 *     aligned.  Readiness = DMARC-pass messages / all messages: the share
 *     that p=reject would still deliver.
 *   - Changes: sources seen now but not in the period before (new), seen
 *     before but not now (gone), and sources whose pass rate moved by at
 *     least MW_RIN_CHANGE_POINTS percentage points.
 *
 * Every string that came from a report (IPs are normalised by the parser,
 * but header_from and domains are the reporter's) is escaped for its
 * output: printable escaping for text, JSON string escaping, HTML entity
 * escaping.  The HTML page has inline CSS and SVG only: no script, no
 * network reference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "json.h"
#include "reports_in.h"
#include "strutil.h"

/* no libm: the two helpers the page needs */
static int iround(double x)
{
    return (int)(x + 0.5);
}

static double absd(double x)
{
    return x < 0 ? -x : x;
}

typedef struct change {
    const mw_rin_source *cur, *prev;   /* cur NULL: gone; prev NULL: new */
} change;

static double rate(const mw_rin_source *s)
{
    return s && s->messages ? 100.0 * (double)s->dmarc_pass / (double)s->messages : 0.0;
}

static double readiness(const mw_rin_period *p)
{
    return p->messages ? 100.0 * (double)p->dmarc_pass / (double)p->messages : 0.0;
}

static const mw_rin_source *find(const mw_rin_period *p, const char *ip)
{
    for (size_t i = 0; i < p->nsrc; i++)
        if (strcmp(p->src[i].ip, ip) == 0)
            return &p->src[i];
    return NULL;
}

/* The changes, in the order: new, changed (both by current volume), gone. */
static size_t changes(const mw_rin_summary *s, change **out)
{
    *out = NULL;
    if (!s->compared)
        return 0;
    size_t n = 0;
    change *c = mw_calloc(s->cur.nsrc + s->prev.nsrc + 1, sizeof *c);
    for (size_t i = 0; i < s->cur.nsrc; i++) {
        const mw_rin_source *p = find(&s->prev, s->cur.src[i].ip);
        if (p == NULL || absd(rate(&s->cur.src[i]) - rate(p)) >= MW_RIN_CHANGE_POINTS)
            c[n++] = (change){&s->cur.src[i], p};
    }
    for (size_t i = 0; i < s->prev.nsrc; i++)
        if (find(&s->cur, s->prev.src[i].ip) == NULL)
            c[n++] = (change){NULL, &s->prev.src[i]};
    *out = c;
    return n;
}

static void when(long long t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M", &tm) == 0)
        snprintf(buf, len, "%lld", t);
}

static void printable(mw_buf *out, const char *s, size_t max)
{
    mw_str_printable(out, s, strlen(s), max);
}

/* ---- text ---- */
void mw_rin_text(const mw_rin_summary *s, mw_buf *out)
{
    const mw_rin_period *c = &s->cur;
    char a[32], b[32];
    when(c->to, b, sizeof b);
    if (s->compared)
        when(c->from, a, sizeof a);
    mw_buf_puts(out, "DMARC reports received");
    if (s->domain) {
        mw_buf_puts(out, " for ");
        printable(out, s->domain, 255);
    }
    mw_buf_printf(out, ", %s%s%s UTC: %llu reports, %zu sources, %llu messages\n",
                  s->compared ? a : "up to ", s->compared ? " .. " : "", b, c->reports, c->nsrc, c->messages);
    if (s->ndomains && !s->domain) {
        mw_buf_puts(out, "policy domains:");
        for (size_t i = 0; i < s->ndomains; i++) {
            mw_buf_putc(out, ' ');
            printable(out, s->domains[i], 255);
        }
        mw_buf_putc(out, '\n');
    }
    if (c->messages == 0) {
        mw_buf_puts(out, "no messages reported in this period\n");
    } else {
        mw_buf_printf(out, "p=reject readiness: %.1f%% (%llu of %llu messages pass DMARC: aligned SPF or DKIM)\n",
                      readiness(c), c->dmarc_pass, c->messages);
        mw_buf_printf(out, "\n%-39s %10s %9s %9s %9s %9s %10s %6s %11s %9s  %s\n", "SOURCE", "MESSAGES",
                      "SPF-PASS", "DKIM-PASS", "SPF-ALIGN", "DKIM-ALGN", "DMARC-PASS", "PASS%", "QUARANTINED",
                      "REJECTED", "HEADER-FROM");
        for (size_t i = 0; i < c->nsrc; i++) {
            const mw_rin_source *x = &c->src[i];
            mw_buf_printf(out, "%-39s %10llu %9llu %9llu %9llu %9llu %10llu %5.1f%% %11llu %9llu  ", x->ip,
                          x->messages, x->spf_pass, x->dkim_pass, x->spf_aligned, x->dkim_aligned,
                          x->dmarc_pass, rate(x), x->quarantined, x->rejected);
            printable(out, x->header_from, 80);
            mw_buf_putc(out, '\n');
        }
    }
    if (!s->compared)
        return;
    change *ch;
    size_t n = changes(s, &ch);
    when(s->prev.from, a, sizeof a);
    when(s->prev.to, b, sizeof b);
    mw_buf_printf(out, "\nchanges against %s .. %s UTC (%llu reports, %llu messages, readiness %.1f%%):\n", a, b,
                  s->prev.reports, s->prev.messages, readiness(&s->prev));
    if (n == 0)
        mw_buf_puts(out, "  none\n");
    for (size_t i = 0; i < n; i++) {
        if (ch[i].prev == NULL)
            mw_buf_printf(out, "  new source %s: %llu messages, %.1f%% pass\n", ch[i].cur->ip,
                          ch[i].cur->messages, rate(ch[i].cur));
        else if (ch[i].cur == NULL)
            mw_buf_printf(out, "  gone source %s: had %llu messages, %.1f%% pass\n", ch[i].prev->ip,
                          ch[i].prev->messages, rate(ch[i].prev));
        else
            mw_buf_printf(out, "  pass rate of %s: %.1f%% -> %.1f%% (%llu -> %llu messages)\n", ch[i].cur->ip,
                          rate(ch[i].prev), rate(ch[i].cur), ch[i].prev->messages, ch[i].cur->messages);
    }
    free(ch);
}

/* ---- JSON ---- */
static void jkey(mw_buf *o, bool *first, const char *k)
{
    if (!*first)
        mw_buf_putc(o, ',');
    *first = false;
    mw_json_cstr(o, k);
    mw_buf_putc(o, ':');
}

static void jsource(mw_buf *o, const mw_rin_source *x)
{
    bool f = true;
    mw_buf_putc(o, '{');
    jkey(o, &f, "ip");
    mw_json_cstr(o, x->ip);
    const char *names[] = {"messages",     "spf_pass",   "dkim_pass",   "spf_aligned",
                           "dkim_aligned", "dmarc_pass", "quarantined", "rejected"};
    unsigned long long v[] = {x->messages,     x->spf_pass,   x->dkim_pass,   x->spf_aligned,
                              x->dkim_aligned, x->dmarc_pass, x->quarantined, x->rejected};
    for (int i = 0; i < 8; i++) {
        jkey(o, &f, names[i]);
        mw_buf_printf(o, "%llu", v[i]);
    }
    jkey(o, &f, "pass_pct");
    mw_buf_printf(o, "%.1f", rate(x));
    jkey(o, &f, "header_from");
    mw_json_cstr(o, x->header_from);
    mw_buf_putc(o, '}');
}

static void jperiod(mw_buf *o, const mw_rin_period *p, bool bounded)
{
    bool f = true;
    mw_buf_putc(o, '{');
    jkey(o, &f, "from");
    if (bounded)
        mw_buf_printf(o, "%lld", p->from);
    else
        mw_buf_puts(o, "null");
    jkey(o, &f, "to");
    mw_buf_printf(o, "%lld", p->to);
    jkey(o, &f, "reports");
    mw_buf_printf(o, "%llu", p->reports);
    jkey(o, &f, "messages");
    mw_buf_printf(o, "%llu", p->messages);
    jkey(o, &f, "dmarc_pass");
    mw_buf_printf(o, "%llu", p->dmarc_pass);
    jkey(o, &f, "readiness_pct");
    mw_buf_printf(o, "%.1f", readiness(p));
    jkey(o, &f, "sources");
    mw_buf_putc(o, '[');
    for (size_t i = 0; i < p->nsrc; i++) {
        if (i)
            mw_buf_putc(o, ',');
        jsource(o, &p->src[i]);
    }
    mw_buf_puts(o, "]}");
}

void mw_rin_json(const mw_rin_summary *s, mw_buf *o)
{
    bool f = true;
    mw_buf_putc(o, '{');
    jkey(o, &f, "domain");
    if (s->domain)
        mw_json_cstr(o, s->domain);
    else
        mw_buf_puts(o, "null");
    jkey(o, &f, "domains");
    mw_buf_putc(o, '[');
    for (size_t i = 0; i < s->ndomains; i++) {
        if (i)
            mw_buf_putc(o, ',');
        mw_json_cstr(o, s->domains[i]);
    }
    mw_buf_putc(o, ']');
    jkey(o, &f, "period");
    jperiod(o, &s->cur, s->compared);
    jkey(o, &f, "previous");
    if (s->compared)
        jperiod(o, &s->prev, true);
    else
        mw_buf_puts(o, "null");
    jkey(o, &f, "changes");
    mw_buf_putc(o, '[');
    change *ch;
    size_t n = changes(s, &ch);
    for (size_t i = 0; i < n; i++) {
        bool g = true;
        mw_buf_puts(o, i ? ",{" : "{");
        jkey(o, &g, "ip");
        mw_json_cstr(o, ch[i].cur ? ch[i].cur->ip : ch[i].prev->ip);
        jkey(o, &g, "kind");
        mw_json_cstr(o, ch[i].prev == NULL ? "new" : ch[i].cur == NULL ? "gone" : "pass_rate");
        jkey(o, &g, "before_pct");
        if (ch[i].prev)
            mw_buf_printf(o, "%.1f", rate(ch[i].prev));
        else
            mw_buf_puts(o, "null");
        jkey(o, &g, "after_pct");
        if (ch[i].cur)
            mw_buf_printf(o, "%.1f", rate(ch[i].cur));
        else
            mw_buf_puts(o, "null");
        jkey(o, &g, "messages");
        mw_buf_printf(o, "%llu", ch[i].cur ? ch[i].cur->messages : 0ULL);
        mw_buf_putc(o, '}');
    }
    free(ch);
    mw_buf_puts(o, "]}\n");
}

/* ---- HTML ---- */
static void h(mw_buf *o, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': mw_buf_puts(o, "&amp;"); break;
        case '<': mw_buf_puts(o, "&lt;"); break;
        case '>': mw_buf_puts(o, "&gt;"); break;
        case '"': mw_buf_puts(o, "&quot;"); break;
        case '\'': mw_buf_puts(o, "&#39;"); break;
        default:
            if (c < 0x20 || c == 0x7f)
                mw_buf_printf(o, "&#%u;", c == '\t' || c == '\n' ? c : 0xfffd);
            else
                mw_buf_putc(o, (char)c);
        }
    }
}

#define BAR_W 560

static void svg_readiness(mw_buf *o, const mw_rin_period *p)
{
    double r = readiness(p);
    int w = iround(BAR_W * r / 100.0);
    mw_buf_printf(o,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"46\" role=\"img\" "
                  "aria-label=\"p=reject readiness %.1f%%\">"
                  "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"26\" fill=\"#c0392b\"/>"
                  "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"26\" fill=\"#27ae60\"/>"
                  "<text x=\"4\" y=\"42\" font-size=\"12\">%.1f%% pass DMARC (%llu of %llu)</text></svg>\n",
                  BAR_W, r, BAR_W, w, r, p->dmarc_pass, p->messages);
}

static void svg_sources(mw_buf *o, const mw_rin_period *p, size_t max)
{
    size_t n = p->nsrc < max ? p->nsrc : max;
    unsigned long long top = n ? p->src[0].messages : 1;
    if (top == 0)
        top = 1;
    int row = 22, lw = 250;
    mw_buf_printf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%zu\" role=\"img\" "
                     "aria-label=\"messages per source, passing and failing DMARC\">\n",
                  lw + BAR_W + 120, n * (size_t)row + 4);
    for (size_t i = 0; i < n; i++) {
        const mw_rin_source *x = &p->src[i];
        int y = (int)i * row;
        int wall = iround((double)BAR_W * (double)x->messages / (double)top);
        int wpass = x->messages ? iround((double)wall * (double)x->dmarc_pass / (double)x->messages) : 0;
        mw_buf_printf(o, "<text x=\"0\" y=\"%d\" font-size=\"12\">", y + 15);
        h(o, x->ip);
        mw_buf_printf(o, "</text><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"16\" fill=\"#c0392b\"/>"
                         "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"16\" fill=\"#27ae60\"/>"
                         "<text x=\"%d\" y=\"%d\" font-size=\"12\">%llu (%.0f%%)</text>\n",
                      lw, y + 2, wall, lw, y + 2, wpass, lw + wall + 6, y + 15, x->messages, rate(x));
    }
    mw_buf_puts(o, "</svg>\n");
}

void mw_rin_html(const mw_rin_summary *s, mw_buf *o)
{
    const mw_rin_period *c = &s->cur;
    char a[32], b[32];
    when(c->to, b, sizeof b);
    when(c->from, a, sizeof a);
    mw_buf_puts(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                   "style-src 'unsafe-inline'; img-src data:\">"
                   "<title>DMARC reports received");
    if (s->domain) {
        mw_buf_puts(o, " for ");
        h(o, s->domain);
    }
    mw_buf_puts(o, "</title><style>body{font-family:sans-serif;margin:2em;color:#222}"
                   "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
                   "td:first-child,th:first-child,td.l{text-align:left}.bad{color:#c0392b}.good{color:#27ae60}"
                   "</style></head><body>\n<h1>DMARC reports received");
    if (s->domain) {
        mw_buf_puts(o, " for ");
        h(o, s->domain);
    }
    mw_buf_printf(o, "</h1>\n<p>%s%s%s UTC: %llu reports, %zu sources, %llu messages.",
                  s->compared ? a : "up to ", s->compared ? " .. " : "", b, c->reports, c->nsrc, c->messages);
    if (s->ndomains) {
        mw_buf_puts(o, " Policy domains:");
        for (size_t i = 0; i < s->ndomains; i++) {
            mw_buf_putc(o, ' ');
            h(o, s->domains[i]);
        }
        mw_buf_putc(o, '.');
    }
    mw_buf_puts(o, "</p>\n<h2>Readiness for p=reject</h2>\n<p>The share of messages that pass DMARC "
                   "(aligned SPF or DKIM) and would still be delivered under p=reject.</p>\n");
    svg_readiness(o, c);
    mw_buf_puts(o, "<h2>Sources</h2>\n<p>Messages per sending IP (top 40), green passing DMARC, red "
                   "failing.</p>\n");
    svg_sources(o, c, 40);
    mw_buf_puts(o, "<table><tr><th>source</th><th>messages</th><th>SPF pass</th><th>DKIM pass</th>"
                   "<th>SPF aligned</th><th>DKIM aligned</th><th>DMARC pass</th><th>pass %</th>"
                   "<th>quarantined</th><th>rejected</th><th>header from</th></tr>\n");
    for (size_t i = 0; i < c->nsrc; i++) {
        const mw_rin_source *x = &c->src[i];
        mw_buf_puts(o, "<tr><td>");
        h(o, x->ip);
        mw_buf_printf(o, "</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>"
                         "<td class=\"%s\">%.1f</td><td>%llu</td><td>%llu</td><td class=\"l\">",
                      x->messages, x->spf_pass, x->dkim_pass, x->spf_aligned, x->dkim_aligned, x->dmarc_pass,
                      rate(x) >= 99.95 ? "good" : "bad", rate(x), x->quarantined, x->rejected);
        h(o, x->header_from);
        mw_buf_puts(o, "</td></tr>\n");
    }
    mw_buf_puts(o, "</table>\n");
    if (s->compared) {
        when(s->prev.from, a, sizeof a);
        when(s->prev.to, b, sizeof b);
        mw_buf_printf(o, "<h2>Changes since the period before</h2>\n<p>Against %s .. %s UTC: %llu reports, "
                         "%llu messages, readiness %.1f%%.</p>\n<ul>\n",
                      a, b, s->prev.reports, s->prev.messages, readiness(&s->prev));
        change *ch;
        size_t n = changes(s, &ch);
        if (n == 0)
            mw_buf_puts(o, "<li>none</li>\n");
        for (size_t i = 0; i < n; i++) {
            mw_buf_puts(o, "<li>");
            if (ch[i].prev == NULL) {
                mw_buf_puts(o, "new source ");
                h(o, ch[i].cur->ip);
                mw_buf_printf(o, ": %llu messages, %.1f%% pass", ch[i].cur->messages, rate(ch[i].cur));
            } else if (ch[i].cur == NULL) {
                mw_buf_puts(o, "gone source ");
                h(o, ch[i].prev->ip);
                mw_buf_printf(o, ": had %llu messages", ch[i].prev->messages);
            } else {
                mw_buf_puts(o, "pass rate of ");
                h(o, ch[i].cur->ip);
                mw_buf_printf(o, ": %.1f%% &rarr; %.1f%%", rate(ch[i].prev), rate(ch[i].cur));
            }
            mw_buf_puts(o, "</li>\n");
        }
        free(ch);
        mw_buf_puts(o, "</ul>\n");
    }
    mw_buf_puts(o, "<p><small>mailwarden reports-in</small></p>\n</body></html>\n");
}
