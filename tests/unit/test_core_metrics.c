/*
 * test_core_metrics.c - the metrics registry: exact totals under
 * concurrent updates from 8 threads (while another thread renders), the
 * Prometheus text format (a small checker parses every line and checks
 * histogram invariants), exact text of chosen series, bounded interned
 * labels, escaping, ignored bad input, and metrics.listen parsing.
 */
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "mwtest.h"

#define NTHREADS 8
#define ITER     20000

/* ---- a tiny parser of the text format 0.0.4 ------------------------------------ */

struct sample {
    char   name[128];
    char   labels[512];   /* as written between the braces, "" when none */
    double value;
};

static bool name_ok(const char *p, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)p[0]) || p[0] == '_' || p[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)p[i]) || p[i] == '_' || p[i] == ':'))
            return false;
    return true;
}

/* Parse one sample line; false when malformed. */
static bool parse_sample(const char *line, struct sample *s)
{
    const char *p = line;
    size_t n = strcspn(p, "{ ");
    if (!name_ok(p, n) || n >= sizeof s->name)
        return false;
    memcpy(s->name, p, n);
    s->name[n] = '\0';
    p += n;
    s->labels[0] = '\0';
    if (*p == '{') {
        const char *start = ++p;
        for (;;) {   /* name="value" pairs, comma separated */
            size_t ln = strcspn(p, "=");
            if (!name_ok(p, ln) || p[ln] != '=' || p[ln + 1] != '"')
                return false;
            p += ln + 2;
            while (*p && *p != '"') {
                if (*p == '\n')
                    return false;
                if (*p == '\\') {
                    if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                        return false;
                    p++;
                }
                p++;
            }
            if (*p != '"')
                return false;
            p++;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == '}')
                break;
            return false;
        }
        if ((size_t)(p - start) >= sizeof s->labels)
            return false;
        memcpy(s->labels, start, (size_t)(p - start));
        s->labels[p - start] = '\0';
        p++;
    }
    if (*p != ' ')
        return false;
    p++;
    char *end;
    s->value = strtod(p, &end);
    if (end == p || *end != '\0')
        return false;
    return true;
}

struct parsed {
    struct sample *s;
    size_t         n;
    bool           ok;
};

static bool has_prefix(const char *s, const char *pre)
{
    return strncmp(s, pre, strlen(pre)) == 0;
}

/* Parse a whole rendering and check the structure: every sample belongs to
 * the family of the last TYPE line (name, or name_bucket/_sum/_count for a
 * histogram), every family has HELP then TYPE once, histogram buckets are
 * cumulative and end with +Inf equal to _count. */
static struct parsed parse_all(const char *text)
{
    struct parsed out = {NULL, 0, true};
    char family[128] = "", type[32] = "";
    char seen[256][128];
    size_t nseen = 0;
    double last_bucket = -1;
    char last_series[512] = "";
    double inf_value = -1;

    char *copy = strdup(text), *save = NULL;
    size_t len = strlen(text);
    if (len == 0 || text[len - 1] != '\n') {
        fprintf(stderr, "  rendering does not end in a newline\n");
        out.ok = false;
    }
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (has_prefix(line, "# HELP ")) {
            char nm[128];
            if (sscanf(line + 7, "%127s", nm) != 1 || !name_ok(nm, strlen(nm))) {
                fprintf(stderr, "  bad HELP: %s\n", line);
                out.ok = false;
            }
            for (size_t i = 0; i < nseen; i++)
                if (strcmp(seen[i], nm) == 0) {
                    fprintf(stderr, "  family twice: %s\n", nm);
                    out.ok = false;
                }
            if (nseen < 256)
                snprintf(seen[nseen++], sizeof seen[0], "%s", nm);
            snprintf(family, sizeof family, "%s", nm);
            type[0] = '\0';
            continue;
        }
        if (has_prefix(line, "# TYPE ")) {
            char nm[128], ty[32];
            if (sscanf(line + 7, "%127s %31s", nm, ty) != 2 || strcmp(nm, family) != 0 ||
                (strcmp(ty, "counter") && strcmp(ty, "gauge") && strcmp(ty, "histogram"))) {
                fprintf(stderr, "  bad TYPE: %s\n", line);
                out.ok = false;
            }
            snprintf(type, sizeof type, "%s", ty);
            continue;
        }
        if (line[0] == '#') {
            fprintf(stderr, "  stray comment: %s\n", line);
            out.ok = false;
            continue;
        }
        struct sample s;
        if (!parse_sample(line, &s)) {
            fprintf(stderr, "  malformed sample: %s\n", line);
            out.ok = false;
            continue;
        }
        if (type[0] == '\0') {
            fprintf(stderr, "  sample before TYPE: %s\n", line);
            out.ok = false;
        }
        bool belongs = strcmp(s.name, family) == 0;
        if (strcmp(type, "histogram") == 0) {
            char want[160];
            belongs = false;
            const char *suf[] = {"_bucket", "_sum", "_count"};
            for (int k = 0; k < 3; k++) {
                snprintf(want, sizeof want, "%s%s", family, suf[k]);
                if (strcmp(s.name, want) == 0)
                    belongs = true;
            }
            if (has_prefix(s.name, family) && strcmp(s.name + strlen(family), "_bucket") == 0) {
                /* series without le= */
                char *le = strstr(s.labels, "le=\"");
                char series[512];
                snprintf(series, sizeof series, "%.*s", le ? (int)(le - s.labels) : 0, s.labels);
                if (le == NULL) {
                    fprintf(stderr, "  bucket without le: %s\n", line);
                    out.ok = false;
                } else {
                    if (strcmp(series, last_series) != 0) {
                        snprintf(last_series, sizeof last_series, "%s", series);
                        last_bucket = -1;
                    }
                    if (s.value < last_bucket) {
                        fprintf(stderr, "  buckets not cumulative: %s\n", line);
                        out.ok = false;
                    }
                    last_bucket = s.value;
                    if (strstr(le, "le=\"+Inf\""))
                        inf_value = s.value;
                }
            }
            if (strcmp(s.name + strlen(family), "_count") == 0 && s.value != inf_value) {
                fprintf(stderr, "  _count %g != +Inf bucket %g: %s\n", s.value, inf_value, line);
                out.ok = false;
            }
        }
        if (!belongs) {
            fprintf(stderr, "  sample outside its family %s: %s\n", family, line);
            out.ok = false;
        }
        out.s = realloc(out.s, (out.n + 1) * sizeof *out.s);
        out.s[out.n++] = s;
    }
    free(copy);
    return out;
}

/* Value of the sample name{labels}; -1 when absent. */
static double find(const struct parsed *p, const char *name, const char *labels)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0)
            return p->s[i].value;
    return -1;
}

static char *render(void)
{
    mw_buf b = MW_BUF_INIT;
    mw_metrics_render(&b);
    return mw_buf_steal(&b);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_empty_render_parses(void)
{
    char *t = render();
    struct parsed p = parse_all(t);
    MW_TEST_ASSERT(p.ok);
    MW_TEST_ASSERT(strstr(t, "# TYPE mailwarden_build_info gauge\nmailwarden_build_info{version=\"") != NULL);
    MW_TEST_ASSERT(find(&p, "mailwarden_messages_total", "trust=\"inbound\",action=\"accept\"") == 0);
    /* only the results a check can give are rendered */
    MW_TEST_ASSERT(find(&p, "mailwarden_check_results_total", "check=\"spf\",result=\"softfail\"") == 0);
    MW_TEST_ASSERT(find(&p, "mailwarden_check_results_total", "check=\"dmarc\",result=\"softfail\"") == -1);
    MW_TEST_ASSERT(find(&p, "mailwarden_check_results_total", "check=\"spf\",result=\"policy\"") == -1);
    MW_TEST_ASSERT(find(&p, "mailwarden_check_results_total", "check=\"dkim\",result=\"policy\"") == 0);
    /* interned families have no series before the first count */
    MW_TEST_ASSERT(strstr(t, "mailwarden_rejects_total{") == NULL);
    MW_TEST_ASSERT(strstr(t, "# TYPE mailwarden_rejects_total counter\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "mailwarden_dns_query_duration_seconds_bucket{le=\"+Inf\"} 0\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "mailwarden_dns_query_duration_seconds_sum 0.000000000\n") != NULL);
    free(p.s);
    free(t);
}

static atomic_bool stop_render;

static void *renderer(void *arg)
{
    (void)arg;
    double last = 0;
    while (!atomic_load(&stop_render)) {
        char *t = render();
        struct parsed p = parse_all(t);
        MW_TEST_ASSERT(p.ok);
        double v = find(&p, "mailwarden_messages_total", "trust=\"inbound\",action=\"reject\"");
        MW_TEST_ASSERT(v >= last);   /* counters never go back */
        last = v;
        free(p.s);
        free(t);
    }
    return NULL;
}

static void *worker(void *arg)
{
    unsigned id = (unsigned)(size_t)arg;
    char rule[32];
    snprintf(rule, sizeof rule, "rule-%u", id % 4);
    for (unsigned k = 0; k < ITER; k++) {
        mw_metric_inc(MW_M_MESSAGES, MW_ML_TRUST_INBOUND, MW_ML_ACTION_REJECT);
        mw_metric_inc_l(MW_M_MESSAGES, "submission", "accept");
        mw_metric_add(MW_M_DNS_QUERIES, MW_ML_DNS_OK, 0, 2);
        mw_metric_inc_l(MW_M_CHECK_RESULTS, "dkim", "pass");
        mw_metric_inc_l(MW_M_RATELIMIT_HITS, rule, NULL);
        mw_metric_inc_l(MW_M_REJECTS, "rcpt", rule);
        mw_metric_observe(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOM, (uint64_t)(k % 4) * 1000000ull); /* 0..3 ms */
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, 1);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, -1);
        mw_metric_gauge_add(MW_M_CONNECTIONS_OPEN, MW_ML_FE_EXIM, 1);
    }
    return NULL;
}

static void test_concurrent_totals(void)
{
    pthread_t th[NTHREADS], r;
    atomic_store(&stop_render, false);
    MW_TEST_ASSERT(pthread_create(&r, NULL, renderer, NULL) == 0);
    for (size_t i = 0; i < NTHREADS; i++)
        MW_TEST_ASSERT(pthread_create(&th[i], NULL, worker, (void *)i) == 0);
    for (size_t i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&stop_render, true);
    pthread_join(r, NULL);

    const uint64_t total = (uint64_t)NTHREADS * ITER;
    MW_TEST_EQ_INT(mw_metric_value(MW_M_MESSAGES, MW_ML_TRUST_INBOUND, MW_ML_ACTION_REJECT), total);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_MESSAGES, MW_ML_TRUST_SUBMISSION, MW_ML_ACTION_ACCEPT), total);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_DNS_QUERIES, MW_ML_DNS_OK, 0), 2 * total);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_CHECK_RESULTS, MW_ML_CHECK_DKIM, MW_ML_RESULT_PASS), total);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_STAGE_SECONDS, MW_ML_STAGE_EOM, 0), total);
    MW_TEST_EQ_INT((int64_t)mw_metric_value(MW_M_CONNECTIONS_OPEN, MW_ML_FE_MILTER, 0), 0);
    MW_TEST_EQ_INT((int64_t)mw_metric_value(MW_M_CONNECTIONS_OPEN, MW_ML_FE_EXIM, 0), total);

    char *t = render();
    struct parsed p = parse_all(t);
    MW_TEST_ASSERT(p.ok);
    char want[256];
    snprintf(want, sizeof want, "\nmailwarden_messages_total{trust=\"inbound\",action=\"reject\"} %llu\n",
             (unsigned long long)total);
    MW_TEST_ASSERT(strstr(t, want) != NULL);
    snprintf(want, sizeof want, "\nmailwarden_dns_queries_total{status=\"ok\"} %llu\n",
             (unsigned long long)(2 * total));
    MW_TEST_ASSERT(strstr(t, want) != NULL);
    /* every rule got exactly its share: threads id%4 == r, two threads each */
    for (unsigned rr = 0; rr < 4; rr++) {
        char lab[64];
        snprintf(lab, sizeof lab, "rule=\"rule-%u\"", rr);
        MW_TEST_ASSERT(find(&p, "mailwarden_ratelimit_hits_total", lab) == (double)(2 * ITER));
        snprintf(lab, sizeof lab, "stage=\"rcpt\",rule=\"rule-%u\"", rr);
        MW_TEST_ASSERT(find(&p, "mailwarden_rejects_total", lab) == (double)(2 * ITER));
    }
    /* histogram: k%4 ms -> 0, 1, 2, 3 ms each a quarter of the observations */
    const char *st = "stage=\"eom\",le=";
    char lab[96];
    snprintf(lab, sizeof lab, "%s\"0.0001\"", st);
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_bucket", lab) == (double)(total / 4));
    snprintf(lab, sizeof lab, "%s\"0.001\"", st);   /* le is inclusive: 0 and 1 ms */
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_bucket", lab) == (double)(total / 2));
    snprintf(lab, sizeof lab, "%s\"0.0025\"", st);
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_bucket", lab) == (double)(3 * total / 4));
    snprintf(lab, sizeof lab, "%s\"0.005\"", st);
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_bucket", lab) == (double)total);
    snprintf(lab, sizeof lab, "%s\"+Inf\"", st);
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_bucket", lab) == (double)total);
    MW_TEST_ASSERT(find(&p, "mailwarden_milter_stage_duration_seconds_count", "stage=\"eom\"") == (double)total);
    /* sum: total/4 * (0+1+2+3) ms = total * 1.5 ms, printed exactly */
    snprintf(want, sizeof want, "\nmailwarden_milter_stage_duration_seconds_sum{stage=\"eom\"} %llu.%09llu\n",
             (unsigned long long)(total * 1500000ull / 1000000000ull),
             (unsigned long long)(total * 1500000ull % 1000000000ull));
    MW_TEST_ASSERT(strstr(t, want) != NULL);
    snprintf(want, sizeof want, "\nmailwarden_connections_open{frontend=\"exim\"} %llu\n",
             (unsigned long long)total);
    MW_TEST_ASSERT(strstr(t, want) != NULL);
    free(p.s);
    free(t);
}

static void test_interned_bounded_and_escaped(void)
{
    char name[32];
    for (unsigned i = 0; i < MW_METRICS_DYN_CAP + 10; i++) {
        snprintf(name, sizeof name, "t%u", i);
        mw_metric_inc_l(MW_M_TEMPFAILS, "eom", name);
    }
    mw_metric_inc_l(MW_M_TEMPFAILS, "eom", "t0");   /* an interned one again */
    char *t = render();
    struct parsed p = parse_all(t);
    MW_TEST_ASSERT(p.ok);
    MW_TEST_ASSERT(find(&p, "mailwarden_tempfails_total", "stage=\"eom\",rule=\"t0\"") == 2);
    snprintf(name, sizeof name, "stage=\"eom\",rule=\"t%u\"", MW_METRICS_DYN_CAP - 1);
    MW_TEST_ASSERT(find(&p, "mailwarden_tempfails_total", name) == 1);
    snprintf(name, sizeof name, "stage=\"eom\",rule=\"t%u\"", MW_METRICS_DYN_CAP);
    MW_TEST_ASSERT(find(&p, "mailwarden_tempfails_total", name) == -1);
    MW_TEST_ASSERT(find(&p, "mailwarden_tempfails_total", "stage=\"eom\",rule=\"_other\"") == 10);
    size_t series = 0;
    for (size_t i = 0; i < p.n; i++)
        series += strcmp(p.s[i].name, "mailwarden_tempfails_total") == 0;
    MW_TEST_EQ_INT(series, MW_METRICS_DYN_CAP + 1);
    free(p.s);
    free(t);

    /* escaping of label values, a long value is cut at 64 bytes */
    mw_metric_inc_l(MW_M_RATELIMIT_HITS, "a\"b\\c\nd", NULL);
    mw_metric_inc_l(MW_M_RATELIMIT_HITS,
                    "0123456789012345678901234567890123456789012345678901234567890123456789", NULL);
    t = render();
    p = parse_all(t);
    MW_TEST_ASSERT(p.ok);
    MW_TEST_ASSERT(strstr(t, "mailwarden_ratelimit_hits_total{rule=\"a\\\"b\\\\c\\nd\"} 1\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "{rule=\"0123456789012345678901234567890123456789012345678901234567890123\"} 1\n") !=
                   NULL);
    free(p.s);
    free(t);
}

static void test_bad_input_ignored(void)
{
    uint64_t before = mw_metric_value(MW_M_MESSAGES, 0, 0);
    mw_metric_inc(MW_M_MESSAGES, MW_ML_TRUST__N, 0);       /* out of range */
    mw_metric_inc(MW_M_MESSAGES, 0, MW_ML_ACTION__N);
    mw_metric_inc((mw_metric)MW_M__COUNT, 0, 0);
    mw_metric_inc((mw_metric)-1, 0, 0);
    mw_metric_inc_l(MW_M_MESSAGES, "unknown", "accept");   /* not a word of the dimension */
    mw_metric_inc_l(MW_M_MESSAGES, NULL, NULL);
    mw_metric_observe(MW_M_MESSAGES, 0, 5);                /* not a histogram */
    mw_metric_inc(MW_M_STAGE_SECONDS, 0, 0);               /* not a counter */
    mw_metric_gauge_set(MW_M_MESSAGES, 0, 7);              /* not a gauge */
    mw_metric_observe_l(MW_M_STAGE_SECONDS, "nosuchstage", 1);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_MESSAGES, 0, 0), before);
    MW_TEST_EQ_INT(mw_metric_value(MW_M_STAGE_SECONDS, 0, 0), 0);
    MW_TEST_EQ_INT(mw_metric_label_index(MW_M_MESSAGES, 1, "quarantine"), MW_ML_ACTION_QUARANTINE);
    MW_TEST_EQ_INT(mw_metric_label_index(MW_M_REJECTS, 1, "x"), -1);   /* interned */
    MW_TEST_EQ_INT(mw_metric_label_index(MW_M_DNS_TIMEOUTS, 0, "x"), -1);

    /* a family without labels, a gauge set, a huge observation */
    mw_metric_inc(MW_M_DNS_TIMEOUTS, 0, 0);
    mw_metric_gauge_set(MW_M_CONFIG_GENERATION, 0, 3);
    mw_metric_gauge_set(MW_M_MESSAGES_IN_FLIGHT, 0, -2);
    mw_metric_observe_l(MW_M_DNS_SECONDS, NULL, 3600ull * 1000000000ull);
    char *t = render();
    struct parsed p = parse_all(t);
    MW_TEST_ASSERT(p.ok);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_dns_timeouts_total 1\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_config_generation 3\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_messages_in_flight -2\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_dns_query_duration_seconds_bucket{le=\"30\"} 0\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_dns_query_duration_seconds_bucket{le=\"+Inf\"} 1\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_dns_query_duration_seconds_sum 3600.000000000\n") != NULL);
    MW_TEST_ASSERT(strstr(t, "\nmailwarden_dns_query_duration_seconds_count 1\n") != NULL);
    free(p.s);
    free(t);
}

static void test_parse_listen(void)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    char why[200];
    MW_TEST_ASSERT(mw_metrics_parse_listen("127.0.0.1:9108", &ss, &sl, why, sizeof why));
    MW_TEST_EQ_INT(ss.ss_family, AF_INET);
    MW_TEST_EQ_INT(sl, sizeof(struct sockaddr_in));
    MW_TEST_ASSERT(mw_metrics_parse_listen("[::1]:9108", &ss, &sl, why, sizeof why));
    MW_TEST_EQ_INT(ss.ss_family, AF_INET6);
    MW_TEST_ASSERT(mw_metrics_parse_listen("0.0.0.0:1", NULL, NULL, why, sizeof why));
    MW_TEST_ASSERT(mw_metrics_parse_listen("[2001:db8::1]:65535", NULL, NULL, why, sizeof why));
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                         "localhost:9108", "::1:9108", "[::1]9108", "[::1]:", "[127.0.0.1]:9108",
                         "1.2.3.4:91x8", "[]:9108", ":9108", "127.0.0.1:-1", NULL};
    for (size_t i = 0; bad[i]; i++) {
        why[0] = '\0';
        if (!MW_TEST_ASSERT(!mw_metrics_parse_listen(bad[i], &ss, &sl, why, sizeof why)))
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        MW_TEST_ASSERT(why[0] != '\0');
    }
}

int main(void)
{
    MW_TEST_RUN(test_empty_render_parses);
    MW_TEST_RUN(test_concurrent_totals);
    MW_TEST_RUN(test_interned_bounded_and_escaped);
    MW_TEST_RUN(test_bad_input_ignored);
    MW_TEST_RUN(test_parse_listen);
    return MW_TEST_SUMMARY();
}
