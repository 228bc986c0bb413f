/*
 * metrics.h - the process-wide metrics registry and its Prometheus text
 * rendering (exposition format 0.0.4).
 *
 * Model
 *   Every metric family is declared once, at compile time, in metrics.c
 *   (name, type, help, label dimensions, histogram buckets).  A family has
 *   at most two label dimensions; each is either a small fixed word list
 *   (the MW_ML_* enums below) or a bounded interned set (rule names: at
 *   most MW_METRICS_DYN_CAP distinct values per family, later ones are
 *   counted under the value "_other").  No label value is ever unbounded.
 *
 * Cost
 *   Counters and histograms are sharded per thread: each thread writes its
 *   own cache-line-aligned row of relaxed atomics (MW_METRICS_SHARDS rows),
 *   the renderer sums the rows.  An increment is one thread-local load and
 *   one uncontended atomic add; an observation adds a bucket search over
 *   at most ~20 integer thresholds.  Gauges are one shared atomic each.
 *   Looking a cell up by label words (mw_metric_inc_l and friends) costs a
 *   few string compares on top: fine per message, use the index forms on
 *   per-query paths (DNS).
 *
 * No initialisation is needed: the registry is static storage and every
 * call is safe from any thread at any time (also before main, in tests and
 * in `check`, where nothing renders it).  Out-of-range indices and unknown
 * label words are ignored, never a crash.
 *
 * Counters are monotonic for the life of the process; a config reload does
 * not reset them.
 */
#ifndef MW_CORE_METRICS_H
#define MW_CORE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"

#define MW_METRICS_SHARDS  16   /* rows of counters; threads are spread over them */
#define MW_METRICS_DYN_CAP 32   /* distinct interned label values per family */

/* ---- families --------------------------------------------------------------- */

typedef enum mw_metric {
    /* counters */
    MW_M_MESSAGES = 0,         /* mailwarden_messages_total{trust,action}                      */
    MW_M_CHECK_RESULTS,        /* mailwarden_check_results_total{check,result}                 */
    MW_M_REJECTS,              /* mailwarden_rejects_total{stage,rule}        (rule interned)  */
    MW_M_TEMPFAILS,            /* mailwarden_tempfails_total{stage,rule}      (rule interned)  */
    MW_M_DKIM_SIGNATURES,      /* mailwarden_dkim_signatures_made_total{algorithm}             */
    MW_M_DKIM_KEY_CACHE,       /* mailwarden_dkim_key_cache_lookups_total{result}              */
    MW_M_RATELIMIT_HITS,       /* mailwarden_ratelimit_hits_total{rule}       (rule interned)  */
    MW_M_REPUTATION_OUTCOMES,  /* mailwarden_reputation_outcomes_total{outcome}                */
    MW_M_REPUTATION_SCORES,    /* mailwarden_reputation_scores_total{subject,known}            */
    MW_M_REPUTATION_ERRORS,    /* mailwarden_reputation_errors_total{op}                       */
    MW_M_DNS_QUERIES,          /* mailwarden_dns_queries_total{status}                         */
    MW_M_DNS_TIMEOUTS,         /* mailwarden_dns_timeouts_total                                */
    MW_M_DNS_CACHE_HITS,       /* mailwarden_dns_cache_hits_total                              */
    MW_M_DNS_CACHE_MISSES,     /* mailwarden_dns_cache_misses_total                            */
    MW_M_REDIS_REQUESTS,       /* mailwarden_redis_requests_total{op,result}                   */
    MW_M_REDIS_FAILURES,       /* mailwarden_redis_connection_failures_total                   */
    MW_M_CONNECTIONS,          /* mailwarden_connections_total{frontend}                       */
    MW_M_HISTORY_RECORDS,      /* mailwarden_history_records_total{result}                     */
    MW_M_HISTORY_FSYNC_FAILURES, /* mailwarden_history_fsync_failures_total                    */
    MW_M_CONFIG_RELOADS,       /* mailwarden_config_reloads_total{result}                      */
    MW_M_LISTENER_REFUSED,     /* mailwarden_listener_refused_total{listener,reason}           */
    MW_M_LISTENER_TIMEOUTS,    /* mailwarden_listener_timeouts_total{listener}                 */
    MW_M_POLICY_SHADOW_DIFFS,  /* mailwarden_policy_shadow_differences_total{rule} (interned)  */
    MW_M_FAILURE_REPORTS,      /* mailwarden_failure_reports_total{result}                     */
    /* histograms (seconds) */
    MW_M_STAGE_SECONDS,        /* mailwarden_milter_stage_duration_seconds{stage}              */
    MW_M_CHECK_SECONDS,        /* mailwarden_check_duration_seconds{check}                     */
    MW_M_MESSAGE_SECONDS,      /* mailwarden_message_duration_seconds (MAIL FROM -> verdict)   */
    MW_M_DNS_SECONDS,          /* mailwarden_dns_query_duration_seconds                        */
    MW_M_REDIS_SECONDS,        /* mailwarden_redis_request_duration_seconds{op}                */
    MW_M_HISTORY_FSYNC_LAG,    /* mailwarden_history_fsync_lag_seconds                         */
    /* gauges */
    MW_M_CONNECTIONS_OPEN,     /* mailwarden_connections_open{frontend}                        */
    MW_M_MESSAGES_IN_FLIGHT,   /* mailwarden_messages_in_flight                                */
    MW_M_CONFIG_GENERATION,    /* mailwarden_config_generation                                 */
    MW_M_CONFIG_RELOAD_TIME,   /* mailwarden_config_last_reload_success_timestamp_seconds      */
    MW_M_START_TIME,           /* mailwarden_start_time_seconds                                */
    MW_M__COUNT
    /* mailwarden_build_info{version} 1 is always rendered; it needs no call. */
} mw_metric;

/* ---- label words (index = position; the renderer prints the word) ---------- */

/* trust: same order as mw_trust (engine/policy.h) */
enum { MW_ML_TRUST_INBOUND, MW_ML_TRUST_AUTHENTICATED, MW_ML_TRUST_INTERNAL,
       MW_ML_TRUST_SUBMISSION, MW_ML_TRUST__N };
/* action: same order as mw_action (engine/policy.h) */
enum { MW_ML_ACTION_ACCEPT, MW_ML_ACTION_REJECT, MW_ML_ACTION_TEMPFAIL, MW_ML_ACTION_QUARANTINE,
       MW_ML_ACTION_DISCARD, MW_ML_ACTION__N };
/* check of check_results_total */
enum { MW_ML_CHECK_SPF, MW_ML_CHECK_SPF_HELO, MW_ML_CHECK_DKIM, MW_ML_CHECK_DMARC, MW_ML_CHECK__N };
/* result of check_results_total: the union of the SPF, DKIM and DMARC words
 * (only the combinations a check can give are rendered) */
enum { MW_ML_RESULT_NONE, MW_ML_RESULT_PASS, MW_ML_RESULT_FAIL, MW_ML_RESULT_SOFTFAIL,
       MW_ML_RESULT_NEUTRAL, MW_ML_RESULT_POLICY, MW_ML_RESULT_TEMPERROR, MW_ML_RESULT_PERMERROR,
       MW_ML_RESULT__N };
/* stage of rejects/tempfails */
enum { MW_ML_RSTAGE_CONNECT, MW_ML_RSTAGE_MAIL, MW_ML_RSTAGE_RCPT, MW_ML_RSTAGE_EOM, MW_ML_RSTAGE__N };
/* algorithm of dkim_signatures_made_total */
enum { MW_ML_ALG_RSA_SHA256, MW_ML_ALG_ED25519_SHA256, MW_ML_ALG__N };
/* result of dkim_key_cache_lookups_total */
enum { MW_ML_KEYCACHE_HIT, MW_ML_KEYCACHE_MISS, MW_ML_KEYCACHE__N };
/* outcome of reputation_outcomes_total */
enum { MW_ML_REP_GOOD, MW_ML_REP_BAD, MW_ML_REP_NEUTRAL, MW_ML_REP__N };
/* subject of reputation_scores_total (x known: 0 "false", 1 "true") */
enum { MW_ML_REPSUBJ_IP, MW_ML_REPSUBJ_NET, MW_ML_REPSUBJ_DOMAIN, MW_ML_REPSUBJ__N };
/* op of reputation_errors_total */
enum { MW_ML_REPOP_SCORE, MW_ML_REPOP_RECORD, MW_ML_REPOP__N };
/* status of dns_queries_total: same order as mw_dns_status (core/dns.h) */
enum { MW_ML_DNS_OK, MW_ML_DNS_NXDOMAIN, MW_ML_DNS_NODATA, MW_ML_DNS_TEMPFAIL, MW_ML_DNS_PERMFAIL,
       MW_ML_DNS__N };
/* op of redis_requests_total / redis_request_duration_seconds */
enum { MW_ML_REDIS_EXEC, MW_ML_REDIS_SCAN, MW_ML_REDIS__N };
/* result of redis_requests_total: same order as mw_store_status (core/store.h) */
enum { MW_ML_STORE_OK, MW_ML_STORE_NOTFOUND, MW_ML_STORE_TEMPFAIL, MW_ML_STORE_ERROR, MW_ML_STORE__N };
/* frontend of connections_total / connections_open */
enum { MW_ML_FE_MILTER, MW_ML_FE_EXIM, MW_ML_FE__N };
/* result of history_records_total */
/* listener (a socket the daemon accepts on) and why a connection was refused or cut */
enum { MW_ML_LSN_MILTER, MW_ML_LSN_EXIM_SCAN, MW_ML_LSN_EXIM_RCPT, MW_ML_LSN_METRICS, MW_ML_LSN__N };
enum { MW_ML_REFUSE_LIMIT, MW_ML_REFUSE_PEER, MW_ML_REFUSE__N };
enum { MW_ML_HIST_WRITTEN, MW_ML_HIST_FAILED, MW_ML_HIST__N };
/* result of failure_reports_total (RFC 9991, per destination address) */
enum { MW_ML_FAILREP_QUEUED, MW_ML_FAILREP_RATE_LIMITED, MW_ML_FAILREP_REFUSED, MW_ML_FAILREP_ERROR,
       MW_ML_FAILREP__N };
/* result of config_reloads_total */
enum { MW_ML_RELOAD_SUCCESS, MW_ML_RELOAD_FAILURE, MW_ML_RELOAD__N };
/* stage of milter_stage_duration_seconds */
enum { MW_ML_STAGE_CONNECT, MW_ML_STAGE_HELO, MW_ML_STAGE_MAIL, MW_ML_STAGE_RCPT, MW_ML_STAGE_HEADER,
       MW_ML_STAGE_EOH, MW_ML_STAGE_BODY, MW_ML_STAGE_EOM, MW_ML_STAGE__N };
/* check of check_duration_seconds */
enum { MW_ML_CHK_SPF, MW_ML_CHK_DKIM_VERIFY, MW_ML_CHK_DKIM_SIGN, MW_ML_CHK_DMARC,
       MW_ML_CHK_REPUTATION, MW_ML_CHK_RATELIMIT, MW_ML_CHK_POLICY, MW_ML_CHK__N };

/* ---- updates ---------------------------------------------------------------- */

/* Counter: add n to the cell (i, j) (j = 0 for a family with one
 * dimension, i = j = 0 for none).  Not a counter, or out of range: ignored. */
void mw_metric_add(mw_metric m, unsigned i, unsigned j, uint64_t n);
static inline void mw_metric_inc(mw_metric m, unsigned i, unsigned j) { mw_metric_add(m, i, j, 1); }

/* Counter by label words: l1 for the first dimension, l2 for the second
 * (NULL where the family has none).  A fixed dimension must get one of its
 * words (else nothing is counted); an interned dimension (rule) takes any
 * text, trimmed to 64 bytes, and the first MW_METRICS_DYN_CAP distinct
 * values get their own series.  Example:
 *   mw_metric_inc_l(MW_M_MESSAGES, mw_trust_name(t), mw_action_name(a)); */
void mw_metric_inc_l(mw_metric m, const char *l1, const char *l2);

/* Histogram: one observation of ns nanoseconds in cell i. */
void mw_metric_observe(mw_metric m, unsigned i, uint64_t ns);
/* ... by label word (NULL for a family without labels). */
void mw_metric_observe_l(mw_metric m, const char *l1, uint64_t ns);

/* Gauge cell i: set, or add a (signed) delta. */
void mw_metric_gauge_set(mw_metric m, unsigned i, int64_t v);
void mw_metric_gauge_add(mw_metric m, unsigned i, int64_t d);

/* CLOCK_MONOTONIC in nanoseconds, for durations passed to observe. */
uint64_t mw_metrics_now_ns(void);

/* Index of word in dimension dim (0 or 1) of m, or -1 when the dimension
 * is not fixed or the word is not one of its words. */
int mw_metric_label_index(mw_metric m, unsigned dim, const char *word);

/* ---- reading ------------------------------------------------------------------ */

/* Current value of a counter cell (sum over the shards), a gauge cell
 * (as its two's-complement bits), or a histogram cell's count. */
uint64_t mw_metric_value(mw_metric m, unsigned i, unsigned j);

/* Append the whole registry in the Prometheus text format 0.0.4. */
void mw_metrics_render(mw_buf *out);

/* Content-Type of the rendering. */
#define MW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- listener address ----------------------------------------------------------- */

/* Parse "ADDR:PORT" (IPv4) or "[ADDR]:PORT" (IPv6), an address literal and a
 * port 1..65535, or "PORT" alone (127.0.0.1: a listener given without a host
 * binds loopback, never every interface), into *ss / *sslen (either may be
 * NULL for validation only).  false with a reason in why. */
bool mw_metrics_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sslen,
                             char *why, size_t whylen);

#endif
