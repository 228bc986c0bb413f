/*
 * check.c - `mailwarden check`: run the daemon's engine on one message from
 * stdin, with the envelope from flags, and print each check's result, the
 * verdict, the header edits and a trace of why.  No MTA involved.
 *
 * Exit 0 whatever the verdict; 2 for usage errors, 1 for config errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "tools.h"

#define MAX_RCPT 1000
#define MAX_HEADER_BYTES (1024 * 1024)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailwarden check [-c FILE] [--dns ADDR@PORT]... [--authserv-id ID]\n"
            "                        [--internal CIDR]... [--policy NAME] --ip IP [--helo NAME]\n"
            "                        --from ADDR --rcpt ADDR... [--auth USER] [--daemon-name NAME]\n"
            "                        [--queue-id ID] [--sign DOMAIN:SELECTOR:KEYFILE]... [--json] < message\n"
            "Runs the daemon's engine on one message and explains the result.\n"
            "--from '' means the null sender.  Exit 0 whatever the verdict.\n");
}

/* Feed one header to the session: name and value split at the first ':'. */
static void feed_header(mw_session *s, mw_buf *h)
{
    if (h->len == 0)
        return;
    char *colon = memchr(h->data, ':', h->len);
    if (!colon)
        return;
    *colon = '\0';
    /* value byte-exact after the colon, as the milter delivers it with
     * SMFIP_HDR_LEADSPC (DKIM simple canonicalization needs the blanks) */
    const char *v = colon + 1;
    size_t vlen = h->len - (size_t)(v - h->data);
    mw_session_header(s, h->data, v, vlen);
    mw_buf_reset(h);
}

static void read_message(FILE *in, mw_session *s)
{
    mw_buf h = MW_BUF_INIT;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool in_headers = true;
    while ((n = getline(&line, &cap, in)) > 0) {
        size_t len = (size_t)n;
        if (in_headers) {
            size_t l = len;
            if (l && line[l - 1] == '\n')
                l--;
            if (l && line[l - 1] == '\r')
                l--;
            if (l == 0) {
                feed_header(s, &h);
                mw_session_eoh(s);
                in_headers = false;
                continue;
            }
            if ((line[0] == ' ' || line[0] == '\t') && h.len) {
                if (h.len < MAX_HEADER_BYTES) {
                    mw_buf_putc(&h, '\n');
                    mw_buf_append(&h, line, l);
                }
                continue;
            }
            feed_header(s, &h);
            if (!memchr(line, ':', l)) {
                /* not a header: the body starts here (as an MTA would treat it) */
                mw_session_eoh(s);
                in_headers = false;
                mw_session_body(s, (const unsigned char *)line, len);
                continue;
            }
            mw_buf_append(&h, line, l);
        } else {
            mw_session_body(s, (const unsigned char *)line, len);
        }
    }
    if (in_headers) {
        feed_header(s, &h);
        mw_session_eoh(s);
    }
    free(line);
    mw_buf_free(&h);
}

static void json_spf(mw_json *w, const mw_spf_outcome *o, bool skipped)
{
    mw_json_obj_begin(w);
    mw_json_key(w, "result");
    if (o->evaluated)
        mw_json_string(w, mw_spf_result_name(o->result));
    else
        mw_json_null(w);
    mw_json_key(w, "skipped");
    mw_json_bool(w, skipped || !o->evaluated);
    mw_json_key(w, "domain");
    mw_json_string(w, o->domain);
    mw_json_key(w, "identity");
    mw_json_string(w, o->identity);
    mw_json_key(w, "scope");
    mw_json_string(w, o->evaluated ? (o->scope == MW_SPF_SCOPE_HELO ? "helo" : "mailfrom") : NULL);
    mw_json_key(w, "reason");
    mw_json_string(w, o->reason);
    mw_json_key(w, "explanation");
    mw_json_string(w, o->explanation);
    mw_json_obj_end(w);
}

/* The first refusal before the message (connect, MAIL, RCPT), as the
 * daemon would give it; stage "data" when the verdict is the message's. */
typedef struct refusal {
    const char *stage;
    const char *rcpt;      /* the first refused recipient (stage rcpt) */
    bool        partial;   /* some recipients refused, others accepted */
    mw_reply    reply;
} refusal;

static void note_refusal(refusal *rf, mw_session *s, const char *stage, const char *rcpt)
{
    const mw_reply *r = mw_session_refusal(s);
    if (r == NULL || rf->stage != NULL)
        return;
    rf->stage = stage;
    rf->rcpt = rcpt;
    rf->reply = *r;
}

static void print_json(mw_session *s, const mw_verdict *v, const refusal *rf)
{
    const mw_results *r = mw_session_results(s);
    mw_buf b = MW_BUF_INIT;
    mw_json w;
    mw_json_init(&w, &b);
    mw_json_obj_begin(&w);
    mw_json_key(&w, "trust");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "class");
    mw_json_string(&w, mw_trust_name(r->trust));
    mw_json_key(&w, "reason");
    mw_json_string(&w, r->trust_reason);
    mw_json_obj_end(&w);
    mw_json_key(&w, "spf");
    json_spf(&w, &r->spf, r->spf_skipped);
    mw_json_key(&w, "spf_helo");
    json_spf(&w, &r->spf_helo, r->spf_skipped);
    mw_json_key(&w, "from");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "count");
    mw_json_int(&w, r->nfrom);
    mw_json_key(&w, "status");
    mw_json_string(&w, r->nfrom ? mw_from_status_name(r->from.status) : "missing");
    mw_json_key(&w, "domain");
    mw_json_string(&w, r->from.status == MW_FROM_OK ? r->from.domain[0] : NULL);
    mw_json_obj_end(&w);
    mw_json_key(&w, "dkim");
    mw_json_arr_begin(&w);
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig; i++) {
        const mw_dkim_sig *g = &r->dkim.sig[i];
        mw_json_obj_begin(&w);
        mw_json_key(&w, "result");
        mw_json_string(&w, mw_dkim_result_name(g->result));
        mw_json_key(&w, "domain");
        mw_json_string(&w, g->domain);
        mw_json_key(&w, "selector");
        mw_json_string(&w, g->selector);
        mw_json_key(&w, "identity");
        mw_json_string(&w, g->identity);
        mw_json_key(&w, "algorithm");
        mw_json_string(&w, g->algorithm);
        mw_json_key(&w, "bits");
        mw_json_int(&w, g->bits);
        mw_json_key(&w, "b");
        mw_json_string(&w, g->b_prefix);
        mw_json_key(&w, "reason");
        mw_json_string(&w, g->reason);
        mw_json_obj_end(&w);
    }
    mw_json_arr_end(&w);
    mw_json_key(&w, "dkim_verified");
    mw_json_bool(&w, r->dkim_verified);
    mw_json_key(&w, "signatures_added");
    mw_json_arr_begin(&w);
    for (size_t i = 0; i < r->nsigned; i++) {
        mw_json_obj_begin(&w);
        mw_json_key(&w, "domain");
        mw_json_string(&w, r->signed_with[i].domain);
        mw_json_key(&w, "selector");
        mw_json_string(&w, r->signed_with[i].selector);
        mw_json_key(&w, "algorithm");
        mw_json_string(&w, r->signed_with[i].algorithm);
        mw_json_key(&w, "key");
        mw_json_string(&w, r->signed_with[i].name);
        mw_json_obj_end(&w);
    }
    mw_json_arr_end(&w);
    mw_json_key(&w, "not_signed");
    mw_json_string(&w, r->not_signed);
    mw_json_key(&w, "arc");
    if (r->arc_done) {
        mw_json_obj_begin(&w);
        mw_json_key(&w, "result");
        mw_json_string(&w, mw_arc_result_name(r->arc.result));
        mw_json_key(&w, "instances");
        mw_json_int(&w, (long long)r->arc.instances);
        mw_json_key(&w, "oldest_pass");
        mw_json_int(&w, (long long)r->arc.oldest_pass);
        mw_json_key(&w, "sealer");
        mw_json_string(&w, r->arc.sealer);
        mw_json_key(&w, "temporary");
        mw_json_bool(&w, r->arc.temporary);
        mw_json_key(&w, "reason");
        mw_json_string(&w, r->arc.reason);
        mw_json_obj_end(&w);
    } else {
        mw_json_null(&w);
    }
    mw_json_key(&w, "dmarc");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "result");
    if (r->dmarc_done)
        mw_json_string(&w, mw_dmarc_result_name(r->dmarc.result));
    else if (r->nfrom != 1 || r->from.status != MW_FROM_OK)
        mw_json_string(&w, r->trust == MW_TRUST_INBOUND ? "permerror" : NULL);
    else
        mw_json_null(&w);
    mw_json_key(&w, "policy");
    mw_json_string(&w, r->dmarc_done && r->dmarc.result != MW_DMARC_NONE ? mw_dmarc_policy_name(r->dmarc.policy) : NULL);
    mw_json_key(&w, "policy_source");
    mw_json_string(&w, r->dmarc_done ? r->dmarc.policy_source : NULL);
    mw_json_key(&w, "disposition");
    mw_json_string(&w, r->dmarc_done && r->dmarc.result != MW_DMARC_NONE ? mw_dmarc_policy_name(r->dmarc.disposition) : NULL);
    mw_json_key(&w, "testing");
    mw_json_bool(&w, r->dmarc_done && r->dmarc.testing);
    mw_json_key(&w, "domain");
    mw_json_string(&w, r->dmarc_done ? r->dmarc.from_domain : NULL);
    mw_json_key(&w, "policy_domain");
    mw_json_string(&w, r->dmarc_done ? r->dmarc.policy_domain : NULL);
    mw_json_key(&w, "org_domain");
    mw_json_string(&w, r->dmarc_done ? r->dmarc.org_domain : NULL);
    mw_json_key(&w, "alignment");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "spf");
    mw_json_bool(&w, r->dmarc_done && r->dmarc.spf_aligned);
    mw_json_key(&w, "dkim");
    mw_json_bool(&w, r->dmarc_done && r->dmarc.dkim_aligned);
    mw_json_obj_end(&w);
    /* why the disposition departs from the published policy: the reason
     * text (as in the A-R comment and the report) and the override kinds */
    mw_json_key(&w, "override");
    if (r->dmarc_override_text[0]) {
        static const struct { unsigned bit; const char *name; } kinds[] = {
            {MW_DMARC_OVR_NEVER_REJECT, "never_reject"},   {MW_DMARC_OVR_ALWAYS_ENFORCE, "always_enforce"},
            {MW_DMARC_OVR_ALLOW_NETWORK, "allow_network"}, {MW_DMARC_OVR_MAILING_LIST, "mailing_list"},
            {MW_DMARC_OVR_FORWARDER, "forwarder"},         {MW_DMARC_OVR_TRUSTED_ARC, "trusted_arc"}};
        mw_json_obj_begin(&w);
        mw_json_key(&w, "reason");
        mw_json_string(&w, r->dmarc_override_text);
        mw_json_key(&w, "kinds");
        mw_json_arr_begin(&w);
        for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (r->dmarc_override & kinds[i].bit)
                mw_json_string(&w, kinds[i].name);
        if (strncmp(r->dmarc_override_text, "local_policy", 12) == 0)
            mw_json_string(&w, "local_policy");
        mw_json_arr_end(&w);
        mw_json_obj_end(&w);
    } else {
        mw_json_null(&w);
    }
    mw_json_key(&w, "from_enforcing");
    mw_json_bool(&w, r->from_enforcing);
    mw_json_key(&w, "reason");
    mw_json_string(&w, r->dmarc_done ? r->dmarc.reason : NULL);
    mw_json_obj_end(&w);
    mw_json_key(&w, "reputation");
    if (r->reputation_done) {
        const mw_rep_score *sc[] = {&r->reputation.ip, &r->reputation.net, &r->reputation.domain};
        const char *names[] = {"ip", "net", "domain"};
        mw_json_obj_begin(&w);
        for (int i = 0; i < 3; i++) {
            mw_json_key(&w, names[i]);
            mw_json_obj_begin(&w);
            mw_json_key(&w, "known");
            mw_json_bool(&w, sc[i]->known);
            mw_json_key(&w, "score_milli");
            mw_json_int(&w, (long long)(sc[i]->score * 1000));
            mw_json_key(&w, "samples");
            mw_json_int(&w, sc[i]->samples);
            mw_json_obj_end(&w);
        }
        mw_json_obj_end(&w);
    } else {
        mw_json_null(&w);
    }
    mw_json_key(&w, "verdict");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "action");
    mw_json_string(&w, mw_action_name(v->action));
    mw_json_key(&w, "reply");
    if (v->text) {
        mw_buf rep = MW_BUF_INIT;
        mw_buf_printf(&rep, "%s %s%s%s", v->rcode, v->xcode, v->xcode[0] ? " " : "", v->text);
        mw_json_string(&w, mw_buf_cstr(&rep));
        mw_buf_free(&rep);
    } else {
        mw_json_null(&w);
    }
    mw_json_key(&w, "rule");
    mw_json_string(&w, v->rule);
    mw_json_key(&w, "stage");
    mw_json_string(&w, rf->partial ? "data" : rf->stage);
    mw_json_key(&w, "refused_rcpt");
    if (rf->partial || (rf->stage && strcmp(rf->stage, "rcpt") == 0)) {
        mw_json_obj_begin(&w);
        mw_json_key(&w, "rcpt");
        mw_json_string(&w, rf->rcpt);
        mw_json_key(&w, "reply");
        mw_buf rr = MW_BUF_INIT;
        mw_buf_printf(&rr, "%s %s%s%s", rf->reply.rcode, rf->reply.xcode, rf->reply.xcode[0] ? " " : "",
                      rf->reply.text);
        mw_json_string(&w, mw_buf_cstr(&rr));
        mw_buf_free(&rr);
        mw_json_key(&w, "rule");
        mw_json_string(&w, rf->reply.rule);
        mw_json_obj_end(&w);
    } else {
        mw_json_null(&w);
    }
    mw_json_obj_end(&w);
    mw_json_key(&w, "headers");
    mw_json_obj_begin(&w);
    mw_json_key(&w, "add");
    mw_json_arr_begin(&w);
    for (size_t i = 0; i < v->nadd; i++) {
        mw_json_arr_begin(&w);
        mw_json_string(&w, v->add[i].name);
        mw_json_string(&w, v->add[i].value);
        mw_json_arr_end(&w);
    }
    mw_json_arr_end(&w);
    mw_json_key(&w, "remove");
    mw_json_arr_begin(&w);
    for (size_t i = 0; i < v->nremove; i++) {
        mw_json_arr_begin(&w);
        mw_json_string(&w, v->remove[i].name);
        mw_json_int(&w, v->remove[i].index);
        mw_json_arr_end(&w);
    }
    mw_json_arr_end(&w);
    mw_json_obj_end(&w);
    mw_json_key(&w, "trace");
    mw_json_arr_begin(&w);
    for (size_t i = 0; i < mw_session_trace_count(s); i++)
        mw_json_string(&w, mw_session_trace(s, i));
    mw_json_arr_end(&w);
    mw_json_obj_end(&w);
    printf("%s\n", mw_buf_cstr(&b));
    mw_buf_free(&b);
}

static void print_spf_text(const char *label, const mw_spf_outcome *o)
{
    if (!o->evaluated) {
        printf("%-10s not evaluated\n", label);
        return;
    }
    printf("%-10s %s  identity=%s domain=%s", label, mw_spf_result_name(o->result),
           o->identity ? o->identity : "-", o->domain ? o->domain : "-");
    if (o->explanation)
        printf("  explanation=\"%s\"", o->explanation);
    printf("\n");
}

static void print_text(mw_session *s, const mw_verdict *v, const refusal *rf)
{
    const mw_results *r = mw_session_results(s);
    printf("%-10s %s (%s)\n", "trust:", mw_trust_name(r->trust), r->trust_reason ? r->trust_reason : "");
    print_spf_text("spf:", &r->spf);
    print_spf_text("spf helo:", &r->spf_helo);
    if (r->dkim_verified && r->dkim.nsig == 0)
        printf("%-10s none (no signature)\n", "dkim:");
    for (size_t i = 0; r->dkim_verified && i < r->dkim.nsig; i++) {
        const mw_dkim_sig *g = &r->dkim.sig[i];
        printf("%-10s %s  d=%s s=%s a=%s bits=%u%s%s\n", "dkim:", mw_dkim_result_name(g->result),
               g->domain ? g->domain : "-", g->selector ? g->selector : "-", g->algorithm ? g->algorithm : "-",
               g->bits, g->reason ? "  " : "", g->reason ? g->reason : "");
    }
    for (size_t i = 0; i < r->nsigned; i++)
        printf("%-10s d=%s s=%s %s (key %s)\n", "signed:", r->signed_with[i].domain, r->signed_with[i].selector,
               r->signed_with[i].algorithm, r->signed_with[i].name);
    if (r->not_signed)
        printf("%-10s %s\n", "not signed:", r->not_signed);
    if (r->dmarc_done)
        printf("%-10s %s  header.from=%s policy=%s disposition=%s%s (spf %s, dkim %s)\n", "dmarc:",
               mw_dmarc_result_name(r->dmarc.result), r->dmarc.from_domain ? r->dmarc.from_domain : "-",
               mw_dmarc_policy_name(r->dmarc.policy), mw_dmarc_policy_name(r->dmarc.disposition),
               r->dmarc.testing ? " (t=y)" : "", r->dmarc.spf_aligned ? "aligned" : "unaligned",
               r->dmarc.dkim_aligned ? "aligned" : "unaligned");
    if (rf->partial)
        printf("%-10s %s refused at RCPT (rule %s): %s %s %s\n", "rcpt:", rf->rcpt,
               rf->reply.rule ? rf->reply.rule : "-", rf->reply.rcode, rf->reply.xcode, rf->reply.text);
    printf("%-10s %s at %s (rule %s)", "verdict:", mw_action_name(v->action),
           rf->partial ? "data" : rf->stage ? (strcmp(rf->stage, "mail") == 0 ? "MAIL" : strcmp(rf->stage, "rcpt") == 0
                                                ? "RCPT" : rf->stage) : "data",
           v->rule ? v->rule : "-");
    if (v->text)
        printf(": %s %s %s", v->rcode, v->xcode, v->text);
    printf("\n");
    for (size_t i = 0; i < v->nremove; i++)
        printf("remove header: %s #%u\n", v->remove[i].name, v->remove[i].index);
    for (size_t i = 0; i < v->nadd; i++)
        printf("add header: %s: %s\n", v->add[i].name, v->add[i].value);
    printf("trace:\n");
    for (size_t i = 0; i < mw_session_trace_count(s); i++)
        printf("  %s\n", mw_session_trace(s, i));
}

int mw_cmd_check(int argc, char **argv)
{
    mw_cli cli = {0};
    const char *ip = NULL, *helo = NULL, *from = NULL, *auth = NULL, *daemon = NULL, *qid = NULL;
    const char *rcpt[MAX_RCPT];
    size_t nrcpt = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r = mw_cli_common(&cli, argc, argv, &i);
        if (r < 0)
            return 2;
        if (r)
            continue;
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "--ip") == 0)
            slot = &ip;
        else if (strcmp(a, "--helo") == 0)
            slot = &helo;
        else if (strcmp(a, "--from") == 0)
            slot = &from;
        else if (strcmp(a, "--auth") == 0)
            slot = &auth;
        else if (strcmp(a, "--daemon-name") == 0)
            slot = &daemon;
        else if (strcmp(a, "--queue-id") == 0)
            slot = &qid;
        else if (strcmp(a, "--json") == 0) {
            json = true;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--rcpt") == 0) {
            if (i + 1 >= argc || nrcpt >= MAX_RCPT) {
                fprintf(stderr, "mailwarden check: --rcpt needs a value (at most %d)\n", MAX_RCPT);
                return 2;
            }
            rcpt[nrcpt++] = argv[++i];
            continue;
        } else {
            fprintf(stderr, "mailwarden check: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mailwarden check: %s needs a value\n", a);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!ip || !from || nrcpt == 0) {
        fprintf(stderr, "mailwarden check: --ip, --from and at least one --rcpt are required\n");
        usage(stderr);
        return 2;
    }
    cli.ov.log_stderr = 1;
    mw_config *cfg = mw_cli_load(&cli);
    if (!cfg)
        return 1;
    /* A checked message is not mail received: no DMARC history record (it
     * would be reported to the domain's owner), and no file created with
     * the ids of whoever runs check (root would leave a history file the
     * daemon's user cannot append to). */
    free(cfg->history_dir);
    cfg->history_dir = mw_strdup("");
    cfg->report_failure = MW_FAILREP_OFF;   /* likewise: no failure report queued */
    /* stdout carries the result; the summary log line goes to stderr */
    mw_log_configure(MW_LOG_TO_STDERR, cfg->log_format, "mailwarden", NULL, MW_LOG_WARN);
    char err[512];
    mw_engine *e = mw_engine_create(cfg, err, sizeof err);
    if (!e) {
        fprintf(stderr, "mailwarden check: %s\n", err);
        mw_config_free(&cfg);
        return 1;
    }
    mw_session *s = mw_session_new(e, ip, NULL);
    if (auth)
        mw_session_macro(s, "{auth_authen}", auth);
    if (daemon)
        mw_session_macro(s, "{daemon_name}", daemon);
    if (qid)
        mw_session_macro(s, "i", qid);
    /* The daemon's steps, in its order: the first refusal at connect, MAIL,
     * or of every recipient is the verdict, as the MTA would give it; the
     * message is then not evaluated (the daemon never sees it). */
    refusal rf = {0};
    mw_session_connect(s);
    note_refusal(&rf, s, "connect", NULL);
    if (!rf.stage && helo)
        mw_session_helo(s, helo);
    if (!rf.stage) {
        mw_session_mail(s, from);
        note_refusal(&rf, s, "mail", NULL);
    }
    size_t accepted = 0;
    for (size_t i = 0; !rf.stage && i < nrcpt; i++) {
        mw_session_rcpt(s, rcpt[i]);
        if (mw_session_refusal(s) != NULL)
            note_refusal(&rf, s, "rcpt", rcpt[i]);
        else
            accepted++;
    }
    const mw_verdict *v;
    mw_verdict early = {0};
    if (rf.stage && (strcmp(rf.stage, "rcpt") != 0 || accepted == 0)) {
        early.action = rf.reply.action;
        memcpy(early.rcode, rf.reply.rcode, sizeof early.rcode);
        memcpy(early.xcode, rf.reply.xcode, sizeof early.xcode);
        early.text = rf.reply.text;
        early.rule = rf.reply.rule;
        v = &early;
    } else {
        read_message(stdin, s);
        v = mw_session_eom(s);
        if (rf.stage == NULL)
            rf.stage = "data";
        else
            rf.partial = true;   /* some recipients refused, the message goes on */
    }
    if (json)
        print_json(s, v, &rf);
    else
        print_text(s, v, &rf);
    mw_session_free(&s);
    mw_engine_destroy(&e);
    return 0;
}
