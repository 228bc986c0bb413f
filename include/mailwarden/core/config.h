/*
 * config.h - the configuration: one libconfig file, validated completely
 * before use, read-only afterwards.
 *
 * Keys are declared once, in a table in config.c (name, type, default,
 * validator, target, one-line doc); the loader walks the file against that
 * table, so an unknown key, a wrong type, a bad CIDR or a bad socket spec is
 * an error reported as "FILE:LINE: message".  Every error is collected (not
 * just the first) so `config-test` can list them all.
 *
 * Command-line overrides (serve/check flags) are applied on top of the file
 * by the loader itself, so a SIGHUP reload re-applies them too.
 *
 * Reload model: a loaded mw_config is immutable.  Reload builds a new one;
 * the engine swaps it in for new messages (see engine.h).
 *
 * Ownership: mw_config_load() returns a config the caller frees with
 * mw_config_free().  Strings inside belong to the config.
 */
#ifndef MW_CORE_CONFIG_H
#define MW_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cidr.h"
#include "log.h"

/* Settings that command-line flags override (NULL/0 = not given).  They are
 * validated like the file's values; errors name the origin "command line". */
typedef struct mw_config_overrides {
    const char        *socket;        /* --socket SPEC */
    const char *const *dns;           /* --dns ADDR[@PORT] (repeatable): replaces
                                         dns.forwarders and implies dns.mode "forward" */
    size_t             ndns;
    const char        *authserv_id;   /* --authserv-id ID */
    const char *const *internal;      /* --internal CIDR (repeatable): replaces
                                         trust.internal_networks (list 127.0.0.0/8
                                         and ::1/128 again if you still want them) */
    size_t             ninternal;
    const char        *policy;        /* --policy NAME|FILE */
    const char        *pid_file;      /* --pid-file FILE */
    const char        *user;          /* --user NAME */
    const char        *group;         /* --group NAME */
    int                log_stderr;    /* 1: force log.target = stderr (serve -f) */
    const char        *history;       /* --history DIR: history.dir */
    const char *const *sign;          /* --sign DOMAIN:SELECTOR:KEYFILE (repeatable): adds
                                         a key ("SELECTOR._domainkey.DOMAIN") and, ahead
                                         of the file's rules, signing rules for DOMAIN
                                         and its subdomains; a relative KEYFILE is made
                                         absolute against the current directory */
    size_t             nsign;
    const char        *redis;         /* --redis HOST:PORT: state.backend "redis" at
                                         HOST:PORT (replaces redis.host, redis.port
                                         and clears redis.sentinels) */
} mw_config_overrides;

typedef enum { MW_SPF_POLICY_HELO_IF_NULL, MW_SPF_POLICY_HELO_ALWAYS } mw_spf_helo_mode;

/* dkim.identity: which address selects the signing keys. */
typedef enum mw_dkim_identity {
    MW_DKIM_ID_HEADER_FROM = 0,   /* the header From address (default) */
    MW_DKIM_ID_ENVELOPE,          /* the envelope sender (MAIL FROM) */
    MW_DKIM_ID_AUTH               /* the SASL login name ({auth_authen}) */
} mw_dkim_identity;

/* One dkim.keys entry (or one --sign key).  where is "FILE:LINE" of the
 * entry ("command line" for --sign), for the signer's error messages. */
typedef struct mw_config_dkim_key {
    char *name, *domain, *selector, *file;
    char *where;
} mw_config_dkim_key;

/* One dkim.signing rule: pattern -> key names (signed with every one). */
typedef struct mw_config_dkim_rule {
    char   *pattern;
    char  **keys;       /* NULL-terminated */
    size_t  nkeys;
    char   *where;
} mw_config_dkim_rule;

/* dns.mode: where the resolver sends its queries. */
/* dmarc.mode */
typedef enum mw_config_dmarc_mode { MW_CFG_DMARC_RFC9989 = 0, MW_CFG_DMARC_RFC7489 } mw_config_dmarc_mode;
/* dmarc.quarantine_action: what a "quarantine" verdict does */
typedef enum mw_quarantine_action {
    MW_QUARANTINE_HOLD = 0,   /* the MTA's quarantine (Postfix: hold queue) */
    MW_QUARANTINE_HEADER,     /* deliver with an X-Mailwarden-Quarantine header */
    MW_QUARANTINE_DELIVER     /* deliver as is (recorded only) */
} mw_quarantine_action;
/* history.on_error: when the history record cannot be written */
typedef enum mw_history_error_action { MW_HISTORY_ERR_ACCEPT = 0, MW_HISTORY_ERR_TEMPFAIL } mw_history_error_action;
/* report.format: the aggregate report XML schema */
typedef enum mw_report_format { MW_REPORT_FMT_RFC9990 = 0, MW_REPORT_FMT_RFC7489 } mw_report_format;
/* report.failure: RFC 9991 failure reports (off by default) */
typedef enum mw_failrep_mode { MW_FAILREP_OFF = 0, MW_FAILREP_REDACTED, MW_FAILREP_FULL } mw_failrep_mode;

typedef enum mw_dns_mode {
    MW_DNS_MODE_RESOLV_CONF = 0,  /* forward to /etc/resolv.conf's nameservers (default) */
    MW_DNS_MODE_FORWARD,          /* forward to dns_forwarders (non-empty) */
    MW_DNS_MODE_RECURSIVE         /* full recursion from the root */
} mw_dns_mode;

/* state.backend: where rate-limit and reputation state lives (store.h). */
typedef enum mw_state_backend {
    MW_STATE_MEMORY = 0,          /* in the daemon: one host (default) */
    MW_STATE_REDIS                /* Redis (or Sentinel-managed Redis): shared by a fleet */
} mw_state_backend;

/* redis.failure_action: what a rate limit does when the store fails. */
typedef enum mw_state_failure {
    MW_STATE_FAIL_ACCEPT = 0,     /* fail open: accept, log once per interval, count */
    MW_STATE_FAIL_TEMPFAIL        /* fail closed: 451 4.7.1 */
} mw_state_failure;

/* One ratelimit.rules entry (ratelimit.h explains the semantics).  The
 * loader validates every member and fills in the documented defaults, so
 * cost, stage, action, burst and the masks are always set; trust NULL means
 * any, reply NULL the default reply. */
typedef struct mw_config_ratelimit_rule {
    char    *name;                 /* [A-Za-z0-9_.-]+, unique */
    char   **key;                  /* selectors: ip, sasl_user, sender, sender_domain, recipient */
    size_t   nkey;
    char    *rate;                 /* "N/PERIOD" (mw_config_parse_rate) */
    unsigned burst;                /* default: N of the rate */
    char    *cost;                 /* "message" | "recipient" (default: recipient if a key is) */
    char    *stage;                /* "connect" | "mail" | "rcpt" | "eom" (default: rcpt for
                                      cost recipient, else mail) */
    char   **trust;                /* trust class words; NULL: any */
    size_t   ntrust;
    char    *action;               /* "tempfail" (default) | "reject" */
    char    *reply;                /* "451 4.7.1 text" with %{rule} %{limit} %{retry_after}; NULL */
    unsigned ipv4_mask;            /* default 32 */
    unsigned ipv6_mask;            /* default 64 */
    char   **allow_networks;       /* clients exempt from the rule; NULL: none */
    size_t   nallow_networks;
    char   **allow_senders;        /* envelope senders exempt: address globs (with @) or domains */
    size_t   nallow_senders;
    char    *skip_reputation_above; /* "0.5": exempt when the authenticated domains' reputation
                                      is known and above this (-1..1); NULL: never */
    char    *where;                /* "FILE:LINE" */
} mw_config_ratelimit_rule;

typedef struct mw_config {
    char *path;                 /* file loaded, or NULL for embedded defaults */
    char **origin;              /* per key of the table (mw_config_key_name order): where its
                                   value came from, "FILE:LINE" or "command line"; NULL entry:
                                   the default (config_dump.h) */

    /* daemon */
    char *socket;               /* milter socket spec: inet:PORT@HOST, inet6:PORT@HOST, unix:PATH */
    char *pid_file;             /* "" = none */
    char *user, *group;         /* "" = do not drop privileges */
    int   socket_mode;          /* unix socket permissions (octal), e.g. 0660 */
    unsigned shutdown_timeout;  /* s to wait for in-flight messages on SIGTERM */
    unsigned milter_timeout;    /* s the milter server waits on the MTA (read/write timeout) */
    unsigned milter_command_timeout; /* s a command may take to arrive complete, a reply to be taken */
    unsigned milter_max_connections; /* open milter connections at most */

    /* identity */
    char *authserv_id;          /* default: the host name */
    char *hostname;             /* this host's name (for Received-SPF receiver=) */

    /* logging */
    mw_log_target log_target;
    mw_log_format log_format;
    mw_log_level  log_level;
    char         *log_facility;

    /* DNS */
    mw_dns_mode dns_mode;       /* the forwarders are non-empty iff mode is FORWARD */
    char   **dns_forwarders;    /* NULL-terminated; "ADDR" or "ADDR@PORT" */
    size_t   ndns_forwarders;
    bool     dns_resolv_conf;   /* == (dns_mode == MW_DNS_MODE_RESOLV_CONF), for mw_dns_options */
    bool     dns_tcp;           /* force TCP to upstream servers */
    unsigned dns_timeout_ms;
    char    *dns_trust_anchor;  /* "" = no DNSSEC validation */
    unsigned dns_cache_size;    /* answers in the in-process cache; 0 = off */
    unsigned dns_cache_min_ttl; /* seconds; the cached TTL is clamped to */
    unsigned dns_cache_max_ttl; /* [min_ttl, max_ttl] */

    /* trust classes */
    mw_cidr_set *internal_networks;
    char       **submission_daemons;   /* {daemon_name} values that mean submission */
    size_t       nsubmission_daemons;

    /* SPF */
    bool     spf_enabled;
    bool     spf_helo;              /* evaluate the HELO identity too */
    bool     spf_received_header;   /* add Received-SPF */
    unsigned spf_timeout_ms;        /* total evaluation deadline (RFC 7208 §4.6.4: 20 s) */

    /* DKIM */
    bool     dkim_verify;           /* verify signatures of inbound mail */
    bool     arc_verify;            /* verify ARC chains of inbound mail */
    bool     arc_seal;              /* seal inbound mail we relay */
    char    *arc_key;               /* sealing key's name in the DKIM key table */
    unsigned dkim_min_key_bits;     /* smaller RSA keys -> policy */
    unsigned dkim_max_signatures;   /* signatures verified per message */
    bool     dkim_sign;             /* sign outbound mail when a key matches */
    mw_config_dkim_key  *dkim_keys;      /* inline key table (+ --sign keys) */
    size_t               ndkim_keys;
    mw_config_dkim_rule *dkim_rules;     /* inline signing table (--sign rules first) */
    size_t               ndkim_rules;
    char    *dkim_key_table;        /* OpenDKIM KeyTable file ("" none; "file:" prefix ok) */
    char    *dkim_signing_table;    /* OpenDKIM SigningTable ("" none; "refile:" = patterns) */
    char    *dkim_canon;            /* "relaxed/relaxed", "simple/simple", "relaxed", ... */
    char   **dkim_sign_headers;     /* NULL-terminated; contains From */
    size_t   ndkim_sign_headers;
    char   **dkim_oversign_headers;
    size_t   ndkim_oversign_headers;
    mw_dkim_identity dkim_identity;
    bool     dkim_allow_unsafe_keys; /* accept group/world-readable key files */

    /* Authentication-Results */
    bool     ar_remove_forged;      /* remove A-R headers claiming our authserv-id */

    /* DMARC */
    bool     dmarc_enabled;
    mw_config_dmarc_mode dmarc_mode;
    char    *dmarc_psl_file;            /* RFC 7489 mode */
    char    *dmarc_reject_text;         /* "" = the policy rule's reply */
    mw_quarantine_action dmarc_quarantine_action;
    char   **dmarc_never_reject;        /* domain globs: passing DKIM d= / SPF domain */
    size_t   ndmarc_never_reject;
    char   **dmarc_always_enforce;      /* From domain globs: treat p=none as reject */
    size_t   ndmarc_always_enforce;
    mw_cidr_set *dmarc_allow_networks;  /* clients never refused by DMARC */
    char   **dmarc_trusted_arc_sealers; /* domain globs: trusted ARC sealers */
    size_t   ndmarc_trusted_arc_sealers;
    char   **dmarc_forwarders;          /* known forwarders: CIDRs (client) or domain globs
                                           (verified: passing DKIM d= or SPF domain) */
    size_t   ndmarc_forwarders;
    char   **dmarc_trusted_authserv_ids;  /* upstream A-R whose spf/dkim results count */
    size_t   ndmarc_trusted_authserv_ids;

    /* DMARC aggregate history */
    char    *history_dir;               /* "" = off */
    unsigned history_fsync_interval_ms;
    unsigned history_rotate_s;
    mw_history_error_action history_on_error;

    /* DMARC aggregate reports (`mailwarden report`; report.h) */
    char    *report_org_name;           /* "" = hostname */
    char    *report_email;              /* "" = postmaster@hostname */
    char    *report_extra_contact;      /* "" = none */
    char    *report_receiver;           /* file name / Submitter; "" = hostname */
    char    *report_from;               /* From of report mails; "" = report_email */
    unsigned report_interval_s;         /* period length; divides a day */
    mw_report_format report_format;
    char    *report_relay_host;
    unsigned report_relay_port;
    bool     report_starttls;           /* STARTTLS when the relay offers it */
    bool     report_tls_verify;         /* verify the relay's certificate and name */
    char    *report_tls_ca_file;        /* CA file; "" = system store */
    unsigned report_timeout_s;          /* per SMTP command */
    unsigned report_max_size;           /* bytes: largest report mail sent */
    unsigned report_max_destinations;   /* rua addresses mailed per report */
    unsigned report_pacing_s;           /* pause between mails to one destination domain */
    unsigned report_retries;            /* extra attempts after a 4xx (in one run) */
    unsigned report_backoff_s;          /* first retry delay, doubled each time */
    unsigned report_suppress_5xx_after; /* consecutive 5xx before a destination is suppressed */
    unsigned report_suppress_5xx_for_s; /* how long it stays suppressed */
    char    *report_state_dir;
    char   **report_history_dirs;       /* NULL-terminated; empty: history.dir */
    size_t   nreport_history_dirs;
    mw_failrep_mode report_failure;     /* RFC 9991 failure reports: off, redacted, full */
    unsigned report_failure_rate;       /* failure reports per destination per hour */
    char    *report_failure_dir;        /* spool of failure reports (daemon -> report tool) */

    /* Exim front end ("" = off) */
    char    *exim_listen;           /* rspamd-protocol scanner socket (end of DATA) */
    char    *exim_rcpt_listen;      /* ${readsocket} line-protocol socket (RCPT time) */
    mw_cidr_set *exim_allow_peers;  /* TCP peers served (default loopback) */
    unsigned exim_max_connections;  /* scan requests at once */
    unsigned exim_rcpt_max_connections; /* RCPT requests at once */
    unsigned exim_request_timeout;  /* s for a whole scan request to arrive */
    unsigned exim_rcpt_timeout;     /* s for a whole RCPT request to arrive */

    /* Prometheus endpoint (frontends/http_metrics.h; read at start, not on reload) */
    char    *metrics_listen;            /* "ADDR:PORT" / "[ADDR6]:PORT"; "" = off */
    unsigned metrics_max_connections;   /* concurrent scrape connections */
    unsigned metrics_timeout_s;         /* idle scrape connection timeout */

    /* policy */
    char *policy;                   /* name of a shipped/policy_dir policy, or a file path */
    char *policy_shadow;            /* a second policy only logged and counted, "" for none */
    char *policy_dir;               /* where named policies are looked up */

    /* shared state (store.h) */
    mw_state_backend state_backend;
    unsigned  state_max_keys;        /* memory backend: entries kept at most */
    char     *redis_host;
    unsigned  redis_port;
    char    **redis_sentinels;       /* NULL-terminated "HOST:PORT"; non-empty: use Sentinel */
    size_t    nredis_sentinels;
    char     *redis_master_name;     /* Sentinel's name of the master */
    char     *redis_username;        /* "" = AUTH with the password only */
    char     *redis_password;        /* "" = no AUTH */
    unsigned  redis_db;
    char     *redis_prefix;          /* prepended to every key */
    unsigned  redis_connect_timeout_ms;
    unsigned  redis_command_timeout_ms;
    unsigned  redis_pool_size;       /* connections per daemon at most */
    mw_state_failure redis_failure_action;
    char    **redis_cluster_nodes;   /* NULL-terminated "HOST:PORT" seeds; non-empty: Redis Cluster */
    size_t    nredis_cluster_nodes;
    bool      redis_allow_plaintext; /* a non-loopback Redis without TLS is allowed */

    /* rate limits (ratelimit.h) */
    mw_config_ratelimit_rule *ratelimit_rules;
    size_t    nratelimit_rules;

    /* reputation (reputation.h) */
    bool      reputation_enabled;
    unsigned  reputation_window_s;   /* outcomes older than this are forgotten */
    unsigned  reputation_bucket_s;   /* width of one time bucket */
    unsigned  reputation_half_life_s;/* a bucket this old counts half */
    unsigned  reputation_min_samples;/* fewer outcomes in the window: score unknown */
    unsigned  reputation_ipv4_prefix;/* network subject: /24 */
    unsigned  reputation_ipv6_prefix;/* network subject: /48 */
} mw_config;

/* A list of error strings ("FILE:LINE: message"), owned by the caller. */
typedef struct mw_config_errors {
    char  **msg;
    size_t  n;
} mw_config_errors;

void mw_config_errors_free(mw_config_errors *e);
/* Append one formatted message (used by the config and policy loaders). */
void mw_config_errors_addf(mw_config_errors *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Load path (NULL: embedded defaults only), apply overrides (may be NULL)
 * and validate everything.  On success returns the config and leaves
 * errs empty; on any error returns NULL with every problem in errs.
 */
mw_config *mw_config_load(const char *path, const mw_config_overrides *ov, mw_config_errors *errs);
void mw_config_free(mw_config **cfg);

/* Validate a milter socket spec; false with a reason in why.
 * Accepted: inet:PORT[@HOST], inet6:PORT[@HOST], unix:/PATH, local:/PATH. */
bool mw_config_socket_valid(const char *spec, char *why, size_t whylen);

/* Iterate the documented keys (for the man-page test and `config-test --keys`):
 * returns the i-th dotted key name ("dns.forwarders"), or NULL past the end. */
const char *mw_config_key_name(size_t i);
/* Where key's value in cfg came from: "FILE:LINE", "command line", or NULL
 * (the default, or no such key). */
const char *mw_config_origin(const mw_config *cfg, const char *key);
/* The one-line description of the i-th key, or NULL past the end. */
const char *mw_config_key_doc(size_t i);

/* "N/PERIOD" rate: N >= 1, PERIOD an optional count and a unit s, m, h or d
 * ("100/1h", "5/10m", "30/m").  Out: count and period in seconds.  false on
 * bad syntax (reason in why, may be NULL). */
bool mw_config_parse_rate(const char *s, unsigned long long *count, unsigned long long *period_s,
                          char *why, size_t whylen);
/* Duration "90", "90s", "15m", "6h", "7d" -> seconds.  false on bad syntax. */
bool mw_config_parse_duration(const char *s, unsigned long long *seconds);
/* Duration "300ms", "5s", "15m", "6h", "7d", or bare digits worth bare_ms
 * milliseconds each (the key's own unit: 1000 for a key in seconds) -> *ms.
 * false on bad syntax.  mw_config_parse_duration is this with bare_ms 1000,
 * refusing what is not whole seconds. */
bool mw_config_parse_duration_ms(const char *s, unsigned long long bare_ms, unsigned long long *ms);

#endif
