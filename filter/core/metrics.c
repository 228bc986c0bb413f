/*
 * metrics.c - the metrics registry (metrics.h): static families, per-thread
 * sharded relaxed atomics, bounded interned label values, and the
 * Prometheus text exposition format 0.0.4.
 *
 * Storage
 *   One array of MW_METRICS_SHARDS rows; a row holds every counter and
 *   histogram slot of every family, aligned to a cache line, so threads on
 *   different rows never share a line.  A thread takes a row round-robin on
 *   its first update and keeps it.  A counter cell is one slot; a histogram
 *   cell is one slot per bucket (not cumulative), one for +Inf and one for
 *   the sum in nanoseconds.  Gauges use row 0 only (one shared atomic:
 *   "set" has no meaningful per-thread split).
 *
 *   Slot offsets are computed from the family table by a constructor that
 *   runs before main, so no call ever waits for an initialisation.
 *
 * Reading
 *   The renderer sums the rows with relaxed loads.  A scrape racing with
 *   updates may see a histogram's buckets and sum from slightly different
 *   instants; every value it reports did exist and counters never go back.
 *
 * Interned labels (rule names)
 *   A family's interned dimension has MW_METRICS_DYN_CAP slots of published
 *   (release-stored, never freed) strings, plus "_other".  Lookups scan
 *   without a lock; an insert takes the family's mutex.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

#ifndef MW_VERSION
#define MW_VERSION "unknown"
#endif

/* ---- the table --------------------------------------------------------------- */

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } ftype;

struct dim {
    const char        *name;   /* label name; NULL: no such dimension */
    const char *const *words;  /* fixed words, or NULL: interned */
    unsigned           n;      /* number of words */
};

struct bucket {
    uint64_t    le_ns;
    const char *le;            /* as rendered */
};

struct family {
    ftype                type;
    const char          *name;
    const char          *help;
    struct dim           d[2];
    const struct bucket *b;    /* histograms */
    unsigned             nb;
    const uint16_t      *valid;   /* optional: bit j of valid[i] says cell (i,j) exists */
};

#define DYN_N (MW_METRICS_DYN_CAP + 1)   /* interned values + "_other" */

static const char *const w_trust[] = {"inbound", "authenticated", "internal", "submission"};
static const char *const w_action[] = {"accept", "reject", "tempfail", "quarantine", "discard"};
static const char *const w_check[] = {"spf", "spf_helo", "dkim", "dmarc"};
static const char *const w_result[] = {"none", "pass", "fail", "softfail",
                                       "neutral", "policy", "temperror", "permerror"};
static const char *const w_rstage[] = {"connect", "mail", "rcpt", "eom"};
static const char *const w_alg[] = {"rsa-sha256", "ed25519-sha256"};
static const char *const w_keycache[] = {"hit", "miss"};
static const char *const w_rep[] = {"good", "bad", "neutral"};
static const char *const w_repsubj[] = {"ip", "net", "domain"};
static const char *const w_bool[] = {"false", "true"};
static const char *const w_repop[] = {"score", "record"};
static const char *const w_dns[] = {"ok", "nxdomain", "nodata", "tempfail", "permfail"};
static const char *const w_redis_op[] = {"exec", "scan"};
static const char *const w_store[] = {"ok", "notfound", "tempfail", "error"};
static const char *const w_fe[] = {"milter", "exim"};
static const char *const w_lsn[] = {"milter", "exim_scan", "exim_rcpt", "metrics"};
static const char *const w_refuse[] = {"limit", "peer"};
static const char *const w_hist[] = {"written", "failed"};
static const char *const w_failrep[] = {"queued", "rate_limited", "refused", "error"};
static const char *const w_reload[] = {"success", "failure"};
static const char *const w_stage[] = {"connect", "helo", "mail", "rcpt", "header", "eoh", "body", "eom"};
static const char *const w_chk[] = {"spf", "dkim_verify", "dkim_sign", "dmarc", "reputation",
                                    "ratelimit", "policy"};

#define WORDS(label, w) {label, w, sizeof w / sizeof w[0]}
#define INTERNED(label) {label, NULL, DYN_N}
#define NODIM {NULL, NULL, 1}

_Static_assert(sizeof w_trust / sizeof w_trust[0] == MW_ML_TRUST__N, "trust words");
_Static_assert(sizeof w_action / sizeof w_action[0] == MW_ML_ACTION__N, "action words");
_Static_assert(sizeof w_check / sizeof w_check[0] == MW_ML_CHECK__N, "check words");
_Static_assert(sizeof w_result / sizeof w_result[0] == MW_ML_RESULT__N, "result words");
_Static_assert(sizeof w_rstage / sizeof w_rstage[0] == MW_ML_RSTAGE__N, "refusal stage words");
_Static_assert(sizeof w_alg / sizeof w_alg[0] == MW_ML_ALG__N, "algorithm words");
_Static_assert(sizeof w_keycache / sizeof w_keycache[0] == MW_ML_KEYCACHE__N, "key cache words");
_Static_assert(sizeof w_rep / sizeof w_rep[0] == MW_ML_REP__N, "reputation words");
_Static_assert(sizeof w_repsubj / sizeof w_repsubj[0] == MW_ML_REPSUBJ__N, "subject words");
_Static_assert(sizeof w_repop / sizeof w_repop[0] == MW_ML_REPOP__N, "rep op words");
_Static_assert(sizeof w_dns / sizeof w_dns[0] == MW_ML_DNS__N, "dns words");
_Static_assert(sizeof w_redis_op / sizeof w_redis_op[0] == MW_ML_REDIS__N, "redis op words");
_Static_assert(sizeof w_store / sizeof w_store[0] == MW_ML_STORE__N, "store words");
_Static_assert(sizeof w_fe / sizeof w_fe[0] == MW_ML_FE__N, "frontend words");
_Static_assert(sizeof w_lsn / sizeof w_lsn[0] == MW_ML_LSN__N, "listener words");
_Static_assert(sizeof w_refuse / sizeof w_refuse[0] == MW_ML_REFUSE__N, "refusal words");
_Static_assert(sizeof w_hist / sizeof w_hist[0] == MW_ML_HIST__N, "history words");
_Static_assert(sizeof w_failrep / sizeof w_failrep[0] == MW_ML_FAILREP__N, "failure report words");
_Static_assert(sizeof w_reload / sizeof w_reload[0] == MW_ML_RELOAD__N, "reload words");
_Static_assert(sizeof w_stage / sizeof w_stage[0] == MW_ML_STAGE__N, "stage words");
_Static_assert(sizeof w_chk / sizeof w_chk[0] == MW_ML_CHK__N, "check duration words");

/* Which results each check can give (bit = MW_ML_RESULT_*). */
#define RB(x) (1u << MW_ML_RESULT_##x)
static const uint16_t valid_check_results[MW_ML_CHECK__N] = {
    [MW_ML_CHECK_SPF] = RB(NONE) | RB(NEUTRAL) | RB(PASS) | RB(FAIL) | RB(SOFTFAIL) | RB(TEMPERROR) |
                        RB(PERMERROR),
    [MW_ML_CHECK_SPF_HELO] = RB(NONE) | RB(NEUTRAL) | RB(PASS) | RB(FAIL) | RB(SOFTFAIL) |
                             RB(TEMPERROR) | RB(PERMERROR),
    [MW_ML_CHECK_DKIM] = RB(NONE) | RB(PASS) | RB(FAIL) | RB(NEUTRAL) | RB(POLICY) | RB(TEMPERROR) |
                         RB(PERMERROR),
    [MW_ML_CHECK_DMARC] = RB(NONE) | RB(PASS) | RB(FAIL) | RB(TEMPERROR) | RB(PERMERROR),
};

/* Latency buckets: 100 us .. 30 s. */
static const struct bucket b_latency[] = {
    {100000ull, "0.0001"},     {250000ull, "0.00025"},    {500000ull, "0.0005"},
    {1000000ull, "0.001"},     {2500000ull, "0.0025"},    {5000000ull, "0.005"},
    {10000000ull, "0.01"},     {25000000ull, "0.025"},    {50000000ull, "0.05"},
    {100000000ull, "0.1"},     {250000000ull, "0.25"},    {500000000ull, "0.5"},
    {1000000000ull, "1"},      {2500000000ull, "2.5"},    {5000000000ull, "5"},
    {10000000000ull, "10"},    {30000000000ull, "30"},
};
/* Durability lag of history records: 1 ms .. 60 s. */
static const struct bucket b_lag[] = {
    {1000000ull, "0.001"},     {5000000ull, "0.005"},     {10000000ull, "0.01"},
    {50000000ull, "0.05"},     {100000000ull, "0.1"},     {250000000ull, "0.25"},
    {500000000ull, "0.5"},     {1000000000ull, "1"},      {2000000000ull, "2"},
    {5000000000ull, "5"},      {10000000000ull, "10"},    {30000000000ull, "30"},
    {60000000000ull, "60"},
};
#define LAT b_latency, sizeof b_latency / sizeof b_latency[0]
#define LAG b_lag, sizeof b_lag / sizeof b_lag[0]

static const struct family fams[MW_M__COUNT] = {
    [MW_M_MESSAGES] = {T_COUNTER, "mailwarden_messages_total",
        "Messages decided, by trust class and final action.",
        {WORDS("trust", w_trust), WORDS("action", w_action)}, NULL, 0, NULL},
    [MW_M_CHECK_RESULTS] = {T_COUNTER, "mailwarden_check_results_total",
        "Authentication check results (spf: MAIL FROM identity; dkim: per signature, none when unsigned).",
        {WORDS("check", w_check), WORDS("result", w_result)}, NULL, 0, valid_check_results},
    [MW_M_REJECTS] = {T_COUNTER, "mailwarden_rejects_total",
        "Permanent refusals (5xx), by SMTP stage and the rule that decided.",
        {WORDS("stage", w_rstage), INTERNED("rule")}, NULL, 0, NULL},
    [MW_M_TEMPFAILS] = {T_COUNTER, "mailwarden_tempfails_total",
        "Temporary refusals (4xx), by SMTP stage and the rule that decided.",
        {WORDS("stage", w_rstage), INTERNED("rule")}, NULL, 0, NULL},
    [MW_M_DKIM_SIGNATURES] = {T_COUNTER, "mailwarden_dkim_signatures_made_total",
        "DKIM signatures added to outbound mail, by algorithm.",
        {WORDS("algorithm", w_alg), NODIM}, NULL, 0, NULL},
    [MW_M_DKIM_KEY_CACHE] = {T_COUNTER, "mailwarden_dkim_key_cache_lookups_total",
        "Parsed DKIM public keys looked up in the key cache (RSA keys only), by result.",
        {WORDS("result", w_keycache), NODIM}, NULL, 0, NULL},
    [MW_M_RATELIMIT_HITS] = {T_COUNTER, "mailwarden_ratelimit_hits_total",
        "Rate-limit refusals, by rule.",
        {INTERNED("rule"), NODIM}, NULL, 0, NULL},
    [MW_M_REPUTATION_OUTCOMES] = {T_COUNTER, "mailwarden_reputation_outcomes_total",
        "Reputation outcomes of messages (neutral ones are not recorded in the store).",
        {WORDS("outcome", w_rep), NODIM}, NULL, 0, NULL},
    [MW_M_REPUTATION_SCORES] = {T_COUNTER, "mailwarden_reputation_scores_total",
        "Reputation scores looked up, by subject and whether enough samples made them known.",
        {WORDS("subject", w_repsubj), WORDS("known", w_bool)}, NULL, 0, NULL},
    [MW_M_REPUTATION_ERRORS] = {T_COUNTER, "mailwarden_reputation_errors_total",
        "Reputation operations that failed in the state store.",
        {WORDS("op", w_repop), NODIM}, NULL, 0, NULL},
    [MW_M_DNS_QUERIES] = {T_COUNTER, "mailwarden_dns_queries_total",
        "DNS queries, by answer class.",
        {WORDS("status", w_dns), NODIM}, NULL, 0, NULL},
    [MW_M_DNS_TIMEOUTS] = {T_COUNTER, "mailwarden_dns_timeouts_total",
        "DNS queries that hit their deadline (also counted as status tempfail).",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_DNS_CACHE_HITS] = {T_COUNTER, "mailwarden_dns_cache_hits_total",
        "DNS lookups answered by the in-process answer cache (also counted in dns_queries_total).",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_DNS_CACHE_MISSES] = {T_COUNTER, "mailwarden_dns_cache_misses_total",
        "DNS lookups the answer cache could not answer (asked libunbound).",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_REDIS_REQUESTS] = {T_COUNTER, "mailwarden_redis_requests_total",
        "Redis state-store requests (a batch of commands), by operation and result.",
        {WORDS("op", w_redis_op), WORDS("result", w_store)}, NULL, 0, NULL},
    [MW_M_REDIS_FAILURES] = {T_COUNTER, "mailwarden_redis_connection_failures_total",
        "Redis connection or I/O failures (each starts or extends the backoff).",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_CONNECTIONS] = {T_COUNTER, "mailwarden_connections_total",
        "SMTP connections (milter) or requests (exim) handled, by front end.",
        {WORDS("frontend", w_fe), NODIM}, NULL, 0, NULL},
    [MW_M_HISTORY_RECORDS] = {T_COUNTER, "mailwarden_history_records_total",
        "DMARC history records, by whether they were written.",
        {WORDS("result", w_hist), NODIM}, NULL, 0, NULL},
    [MW_M_HISTORY_FSYNC_FAILURES] = {T_COUNTER, "mailwarden_history_fsync_failures_total",
        "Failed fdatasync calls on the DMARC history.",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_CONFIG_RELOADS] = {T_COUNTER, "mailwarden_config_reloads_total",
        "Configuration reloads (SIGHUP), by result.",
        {WORDS("result", w_reload), NODIM}, NULL, 0, NULL},
    [MW_M_LISTENER_REFUSED] = {T_COUNTER, "mailwarden_listener_refused_total",
        "Connections closed at accept, by listener and reason (limit: at the connection cap; "
        "peer: address not allowed).",
        {WORDS("listener", w_lsn), WORDS("reason", w_refuse)}, NULL, 0, NULL},
    [MW_M_LISTENER_TIMEOUTS] = {T_COUNTER, "mailwarden_listener_timeouts_total",
        "Connections closed because a request or command did not arrive complete within its deadline, "
        "or an idle connection waited too long.",
        {WORDS("listener", w_lsn), NODIM}, NULL, 0, NULL},
    [MW_M_POLICY_SHADOW_DIFFS] = {T_COUNTER, "mailwarden_policy_shadow_differences_total",
        "Messages on which the shadow policy (policy_shadow) would have taken another action, by "
        "the shadow policy's rule.",
        {INTERNED("rule"), NODIM}, NULL, 0, NULL},
    [MW_M_FAILURE_REPORTS] = {T_COUNTER, "mailwarden_failure_reports_total",
        "RFC 9991 failure reports per destination address: queued for `mailwarden report "
        "--failure`, rate_limited (report.failure_rate), refused (unusable ruf), error (spool write).",
        {WORDS("result", w_failrep), NODIM}, NULL, 0, NULL},
    [MW_M_STAGE_SECONDS] = {T_HISTOGRAM, "mailwarden_milter_stage_duration_seconds",
        "Time the filter spent in each milter stage.",
        {WORDS("stage", w_stage), NODIM}, LAT, NULL},
    [MW_M_CHECK_SECONDS] = {T_HISTOGRAM, "mailwarden_check_duration_seconds",
        "Time spent in each check.",
        {WORDS("check", w_chk), NODIM}, LAT, NULL},
    [MW_M_MESSAGE_SECONDS] = {T_HISTOGRAM, "mailwarden_message_duration_seconds",
        "Time from MAIL FROM to the verdict (includes the MTA and the client).",
        {NODIM, NODIM}, LAT, NULL},
    [MW_M_DNS_SECONDS] = {T_HISTOGRAM, "mailwarden_dns_query_duration_seconds",
        "DNS query latency, timeouts included.",
        {NODIM, NODIM}, LAT, NULL},
    [MW_M_REDIS_SECONDS] = {T_HISTOGRAM, "mailwarden_redis_request_duration_seconds",
        "Redis state-store request latency.",
        {WORDS("op", w_redis_op), NODIM}, LAT, NULL},
    [MW_M_HISTORY_FSYNC_LAG] = {T_HISTOGRAM, "mailwarden_history_fsync_lag_seconds",
        "Time from the first unsynced DMARC history record to its fdatasync.",
        {NODIM, NODIM}, LAG, NULL},
    [MW_M_CONNECTIONS_OPEN] = {T_GAUGE, "mailwarden_connections_open",
        "Open SMTP connections (milter) or requests in progress (exim).",
        {WORDS("frontend", w_fe), NODIM}, NULL, 0, NULL},
    [MW_M_MESSAGES_IN_FLIGHT] = {T_GAUGE, "mailwarden_messages_in_flight",
        "Messages between MAIL FROM and their verdict.",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_CONFIG_GENERATION] = {T_GAUGE, "mailwarden_config_generation",
        "Generation of the running configuration (1 = as started).",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_CONFIG_RELOAD_TIME] = {T_GAUGE, "mailwarden_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        {NODIM, NODIM}, NULL, 0, NULL},
    [MW_M_START_TIME] = {T_GAUGE, "mailwarden_start_time_seconds",
        "Unix time the serving process started.",
        {NODIM, NODIM}, NULL, 0, NULL},
};

/* ---- storage ------------------------------------------------------------------- */

#define MAX_SLOTS 2048

struct row {
    alignas(64) _Atomic uint64_t s[MAX_SLOTS];
};
static struct row rows[MW_METRICS_SHARDS];

static unsigned off[MW_M__COUNT];     /* first slot of the family */
static unsigned spc[MW_M__COUNT];     /* slots per cell */
static unsigned ncells[MW_M__COUNT];
static atomic_uint next_shard;
static _Thread_local int my_shard = -1;

struct interned {
    _Atomic(char *) v[MW_METRICS_DYN_CAP];
    pthread_mutex_t mu;
};
static struct interned dyn[MW_M__COUNT];

__attribute__((constructor)) static void metrics_layout(void)
{
    unsigned o = 0;
    for (unsigned m = 0; m < MW_M__COUNT; m++) {
        const struct family *f = &fams[m];
        ncells[m] = f->d[0].n * f->d[1].n;
        spc[m] = f->type == T_HISTOGRAM ? f->nb + 2 : 1;
        off[m] = o;
        o += ncells[m] * spc[m];
        pthread_mutex_init(&dyn[m].mu, NULL);
    }
    if (o > MAX_SLOTS) {
        fprintf(stderr, "metrics: %u slots needed, MAX_SLOTS is %u\n", o, (unsigned)MAX_SLOTS);
        abort();
    }
}

static inline _Atomic uint64_t *my_row(void)
{
    int s = my_shard;
    if (s < 0)
        s = my_shard = (int)(atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) %
                             MW_METRICS_SHARDS);
    return rows[s].s;
}

static inline bool cell_ok(mw_metric m, unsigned i, unsigned j)
{
    return (unsigned)m < MW_M__COUNT && i < fams[m].d[0].n && j < fams[m].d[1].n;
}

void mw_metric_add(mw_metric m, unsigned i, unsigned j, uint64_t n)
{
    if (!cell_ok(m, i, j) || fams[m].type != T_COUNTER)
        return;
    atomic_fetch_add_explicit(&my_row()[off[m] + i * fams[m].d[1].n + j], n, memory_order_relaxed);
}

void mw_metric_observe(mw_metric m, unsigned i, uint64_t ns)
{
    if (!cell_ok(m, i, 0) || fams[m].type != T_HISTOGRAM)
        return;
    const struct family *f = &fams[m];
    _Atomic uint64_t *c = my_row() + off[m] + i * spc[m];
    unsigned k = 0;
    while (k < f->nb && ns > f->b[k].le_ns)
        k++;
    atomic_fetch_add_explicit(&c[k], 1, memory_order_relaxed);           /* k == nb: +Inf */
    atomic_fetch_add_explicit(&c[f->nb + 1], ns, memory_order_relaxed);  /* sum */
}

void mw_metric_gauge_set(mw_metric m, unsigned i, int64_t v)
{
    if (!cell_ok(m, i, 0) || fams[m].type != T_GAUGE)
        return;
    atomic_store_explicit(&rows[0].s[off[m] + i], (uint64_t)v, memory_order_relaxed);
}

void mw_metric_gauge_add(mw_metric m, unsigned i, int64_t d)
{
    if (!cell_ok(m, i, 0) || fams[m].type != T_GAUGE)
        return;
    atomic_fetch_add_explicit(&rows[0].s[off[m] + i], (uint64_t)d, memory_order_relaxed);
}

uint64_t mw_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- label lookup ----------------------------------------------------------- */

int mw_metric_label_index(mw_metric m, unsigned dim, const char *word)
{
    if ((unsigned)m >= MW_M__COUNT || dim > 1 || word == NULL)
        return -1;
    const struct dim *d = &fams[m].d[dim];
    if (d->name == NULL || d->words == NULL)
        return -1;
    for (unsigned k = 0; k < d->n; k++)
        if (strcmp(d->words[k], word) == 0)
            return (int)k;
    return -1;
}

#define DYN_MAXLEN 64

/* Slot of value in m's interned dimension; MW_METRICS_DYN_CAP = "_other". */
static unsigned intern(mw_metric m, const char *value)
{
    struct interned *t = &dyn[m];
    char v[DYN_MAXLEN + 1];
    snprintf(v, sizeof v, "%s", value && *value ? value : "_none");
    unsigned k;
    for (k = 0; k < MW_METRICS_DYN_CAP; k++) {
        char *p = atomic_load_explicit(&t->v[k], memory_order_acquire);
        if (p == NULL)
            break;
        if (strcmp(p, v) == 0)
            return k;
    }
    if (k == MW_METRICS_DYN_CAP)
        return MW_METRICS_DYN_CAP;
    pthread_mutex_lock(&t->mu);
    for (; k < MW_METRICS_DYN_CAP; k++) {   /* entries below k were checked already */
        char *p = atomic_load_explicit(&t->v[k], memory_order_acquire);
        if (p == NULL) {
            atomic_store_explicit(&t->v[k], mw_strdup(v), memory_order_release);
            break;
        }
        if (strcmp(p, v) == 0)
            break;
    }
    pthread_mutex_unlock(&t->mu);
    return k;
}

/* Index for a label word of dimension dim; -1 when unusable. */
static int resolve(mw_metric m, unsigned dim, const char *word)
{
    const struct dim *d = &fams[m].d[dim];
    if (d->name == NULL)
        return 0;
    if (d->words == NULL)
        return (int)intern(m, word);
    return mw_metric_label_index(m, dim, word);
}

void mw_metric_inc_l(mw_metric m, const char *l1, const char *l2)
{
    if ((unsigned)m >= MW_M__COUNT || fams[m].type != T_COUNTER)
        return;
    int i = resolve(m, 0, l1), j = resolve(m, 1, l2);
    if (i >= 0 && j >= 0)
        mw_metric_add(m, (unsigned)i, (unsigned)j, 1);
}

void mw_metric_observe_l(mw_metric m, const char *l1, uint64_t ns)
{
    if ((unsigned)m >= MW_M__COUNT || fams[m].type != T_HISTOGRAM)
        return;
    int i = resolve(m, 0, l1);
    if (i >= 0)
        mw_metric_observe(m, (unsigned)i, ns);
}

/* ---- reading ------------------------------------------------------------------- */

static uint64_t sum_slot(unsigned slot)
{
    uint64_t v = 0;
    for (unsigned r = 0; r < MW_METRICS_SHARDS; r++)
        v += atomic_load_explicit(&rows[r].s[slot], memory_order_relaxed);
    return v;
}

uint64_t mw_metric_value(mw_metric m, unsigned i, unsigned j)
{
    if (!cell_ok(m, i, j))
        return 0;
    const struct family *f = &fams[m];
    unsigned cell = i * f->d[1].n + j;
    switch (f->type) {
    case T_GAUGE:
        return atomic_load_explicit(&rows[0].s[off[m] + cell], memory_order_relaxed);
    case T_HISTOGRAM: {
        uint64_t n = 0;
        for (unsigned k = 0; k <= f->nb; k++)
            n += sum_slot(off[m] + cell * spc[m] + k);
        return n;
    }
    default:
        return sum_slot(off[m] + cell);
    }
}

/* Label value escaping of the text format: backslash, double quote, newline. */
static void put_label_value(mw_buf *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            mw_buf_puts(out, "\\\\");
        else if (*p == '"')
            mw_buf_puts(out, "\\\"");
        else if (*p == '\n')
            mw_buf_puts(out, "\\n");
        else
            mw_buf_putc(out, *p);
    }
}

/* The label value of index k in dimension dim of m, or NULL when that
 * interned slot is unused. */
static const char *label_value(mw_metric m, unsigned dim, unsigned k)
{
    const struct dim *d = &fams[m].d[dim];
    if (d->words != NULL)
        return d->words[k];
    if (k == MW_METRICS_DYN_CAP)
        return "_other";
    return atomic_load_explicit(&dyn[m].v[k], memory_order_acquire);
}

/* "{a="x",b="y"" (no closing brace: a histogram appends le), or "" */
static void put_labels(mw_buf *out, mw_metric m, const char *v0, const char *v1)
{
    const struct family *f = &fams[m];
    bool any = false;
    for (unsigned dim = 0; dim < 2; dim++) {
        if (f->d[dim].name == NULL)
            continue;
        mw_buf_puts(out, any ? "," : "{");
        mw_buf_printf(out, "%s=\"", f->d[dim].name);
        put_label_value(out, dim == 0 ? v0 : v1);
        mw_buf_putc(out, '"');
        any = true;
    }
}

static bool has_labels(const struct family *f)
{
    return f->d[0].name != NULL || f->d[1].name != NULL;
}

static void put_ns_seconds(mw_buf *out, uint64_t ns)
{
    mw_buf_printf(out, "%llu.%09llu", (unsigned long long)(ns / 1000000000ull),
                  (unsigned long long)(ns % 1000000000ull));
}

static void render_cell(mw_buf *out, mw_metric m, unsigned i, unsigned j, const char *v0, const char *v1)
{
    const struct family *f = &fams[m];
    unsigned cell = i * f->d[1].n + j;
    unsigned base = off[m] + cell * spc[m];

    if (f->type == T_COUNTER || f->type == T_GAUGE) {
        mw_buf_puts(out, f->name);
        put_labels(out, m, v0, v1);
        if (has_labels(f))
            mw_buf_putc(out, '}');
        if (f->type == T_GAUGE)
            mw_buf_printf(out, " %lld\n",
                          (long long)(int64_t)atomic_load_explicit(&rows[0].s[base], memory_order_relaxed));
        else
            mw_buf_printf(out, " %llu\n", (unsigned long long)sum_slot(base));
        return;
    }
    /* histogram: read every slot once, then print cumulative buckets */
    uint64_t cnt[64], cum = 0;
    unsigned nb = f->nb;
    for (unsigned k = 0; k <= nb && k < 63; k++)
        cnt[k] = sum_slot(base + k);
    uint64_t sum = sum_slot(base + nb + 1);
    for (unsigned k = 0; k <= nb; k++) {
        cum += cnt[k];
        mw_buf_printf(out, "%s_bucket", f->name);
        put_labels(out, m, v0, v1);
        mw_buf_printf(out, "%sle=\"%s\"} %llu\n", has_labels(f) ? "," : "{",
                      k < nb ? f->b[k].le : "+Inf", (unsigned long long)cum);
    }
    mw_buf_printf(out, "%s_sum", f->name);
    put_labels(out, m, v0, v1);
    if (has_labels(f))
        mw_buf_putc(out, '}');
    mw_buf_putc(out, ' ');
    put_ns_seconds(out, sum);
    mw_buf_printf(out, "\n%s_count", f->name);
    put_labels(out, m, v0, v1);
    if (has_labels(f))
        mw_buf_putc(out, '}');
    mw_buf_printf(out, " %llu\n", (unsigned long long)cum);
}

void mw_metrics_render(mw_buf *out)
{
    mw_buf_puts(out, "# HELP mailwarden_build_info Build of the running daemon (value is always 1).\n"
                     "# TYPE mailwarden_build_info gauge\n"
                     "mailwarden_build_info{version=\"");
    put_label_value(out, MW_VERSION);
    mw_buf_puts(out, "\"} 1\n");

    for (unsigned mi = 0; mi < MW_M__COUNT; mi++) {
        mw_metric m = (mw_metric)mi;
        const struct family *f = &fams[m];
        const char *tname = f->type == T_COUNTER ? "counter" : f->type == T_GAUGE ? "gauge" : "histogram";
        /* HELP text: escape backslash and newline */
        mw_buf_printf(out, "# HELP %s ", f->name);
        for (const char *p = f->help; *p; p++) {
            if (*p == '\\')
                mw_buf_puts(out, "\\\\");
            else if (*p == '\n')
                mw_buf_puts(out, "\\n");
            else
                mw_buf_putc(out, *p);
        }
        mw_buf_printf(out, "\n# TYPE %s %s\n", f->name, tname);
        bool dyn0 = f->d[0].name && !f->d[0].words, dyn1 = f->d[1].name && !f->d[1].words;
        for (unsigned i = 0; i < f->d[0].n; i++) {
            const char *v0 = f->d[0].name ? label_value(m, 0, i) : "";
            if (v0 == NULL)
                continue;   /* unused interned slot */
            for (unsigned j = 0; j < f->d[1].n; j++) {
                const char *v1 = f->d[1].name ? label_value(m, 1, j) : "";
                if (v1 == NULL)
                    continue;
                if (f->valid != NULL && !(f->valid[i] & (1u << j)))
                    continue;
                /* interned series appear once counted (the "_other" one too) */
                if ((dyn0 || dyn1) && mw_metric_value(m, i, j) == 0)
                    continue;
                render_cell(out, m, i, j, v0, v1);
            }
        }
    }
}

/* ---- listener address ------------------------------------------------------------ */

static bool why_fail(char *why, size_t whylen, const char *msg)
{
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "%s", msg);
    return false;
}

bool mw_metrics_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sslen,
                             char *why, size_t whylen)
{
    char host[64];
    const char *port;
    size_t hl;
    bool v6 = false;

    if (s == NULL || *s == '\0')
        return why_fail(why, whylen, "empty address");
    if (strspn(s, "0123456789") == strlen(s)) {
        /* a port alone: loopback, like every listener given without a host */
        snprintf(host, sizeof host, "127.0.0.1");
        hl = strlen(host);
        port = s;
    } else if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return why_fail(why, whylen, "expected \"[IPV6]:PORT\", e.g. \"[::1]:8895\"");
        hl = (size_t)(close - s - 1);
        if (hl == 0 || hl >= sizeof host)
            return why_fail(why, whylen, "bad IPv6 address");
        memcpy(host, s + 1, hl);
        port = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL || strchr(s, ':') != colon)
            return why_fail(why, whylen,
                            "expected \"ADDR:PORT\" (\"127.0.0.1:8895\") or \"[ADDR]:PORT\" (\"[::1]:8895\")");
        hl = (size_t)(colon - s);
        if (hl == 0 || hl >= sizeof host)
            return why_fail(why, whylen, "bad IPv4 address");
        memcpy(host, s, hl);
        port = colon + 1;
    }
    host[hl] = '\0';

    unsigned long p = 0;
    size_t pl = strlen(port);
    if (pl == 0 || pl > 5 || strspn(port, "0123456789") != pl)
        return why_fail(why, whylen, "port must be a number from 1 to 65535");
    p = strtoul(port, NULL, 10);
    if (p < 1 || p > 65535)
        return why_fail(why, whylen, "port must be a number from 1 to 65535");

    struct sockaddr_storage tmp;
    memset(&tmp, 0, sizeof tmp);
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&tmp;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)p);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return why_fail(why, whylen, "not an IPv6 address literal");
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)(void *)&tmp;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)p);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return why_fail(why, whylen, "not an IPv4 address literal (IPv6 needs brackets: \"[::1]:8895\")");
        len = sizeof *a;
    }
    if (ss != NULL)
        *ss = tmp;
    if (sslen != NULL)
        *sslen = len;
    return true;
}
