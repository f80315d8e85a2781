/* rules.c -- the rule engine module: configuration, rules and rule sets,
 * the consumer and event handlers that evaluate them on the workers, the
 * deferred republish, the store and /metrics (docs/rules.md).
 *
 * Threads: conf_load, init and worker_init on the main thread; rule
 * changes under st->mu on the main thread or an API thread (rules_api.c);
 * evaluation on every worker, over the worker's own set pointer (no lock,
 * no atomic on the path); a new set reaches a worker as a WM_RULES item,
 * and the worker drops its reference to the old one (the last reference
 * frees it, wherever that is).  A republished message is routed by a
 * WM_RULES item the evaluating worker posts to itself.
 */
#include "rules.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "log.h"
#include "mqtt_codec.h"
#include "rules_int.h"
#include "server.h"
#include "store.h"
#include "trie.h"

#define RULES_STORE_PREFIX "\0rules/"
#define RULES_STORE_PREFIX_LEN 7
#define SCRATCH_BYTES (256u * 1024u)

enum { ITEM_SET = 1, ITEM_PUBLISH = 2 };

/* ---- rules and sets ---- */

static int id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= RULES_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)id[i]) || id[i] == '_' || id[i] == '-' || id[i] == '.'))
            return 0;
    return 1;
}

rules_rule_t *rules_rule_build(rules_state_t *st, json_t *def, char *err, size_t errlen,
                               uint32_t *column)
{
    if (column)
        *column = 0;
    const char *id = json_string_value(json_object_get(def, "id"));
    const char *sql = json_string_value(json_object_get(def, "sql"));
    json_t *en = json_object_get(def, "enabled"), *acts = json_object_get(def, "actions");
    if (!json_is_object(def)) {
        snprintf(err, errlen, "a rule is an object {\"id\", \"sql\", \"enabled\", \"actions\"}");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(def, k, v)
    {
        if (strcmp(k, "id") && strcmp(k, "sql") && strcmp(k, "enabled") && strcmp(k, "actions")) {
            snprintf(err, errlen, "unknown key \"%.40s\" (id, sql, enabled, actions)", k);
            return NULL;
        }
    }
    if (id == NULL || !id_valid(id)) {
        snprintf(err, errlen, "id: 1..%d characters of [A-Za-z0-9_.-] required", RULES_ID_MAX - 1);
        return NULL;
    }
    if (sql == NULL) {
        snprintf(err, errlen, "sql: a statement is required");
        return NULL;
    }
    if ((en && !json_is_boolean(en)) || (acts && !json_is_array(acts)) ||
        json_array_size(acts) > RULES_MAX_ACTIONS) {
        snprintf(err, errlen, "enabled is true or false; actions a list of at most %d",
                 RULES_MAX_ACTIONS);
        return NULL;
    }
    rules_err_t pe;
    rules_plan_t *plan = rules_parse(sql, &pe);
    if (plan == NULL) {
        snprintf(err, errlen, "sql: %s", pe.msg);
        if (column)
            *column = pe.column;
        return NULL;
    }
    uint32_t nw = st ? st->srv->nworkers : 1;
    rules_rule_t *r = an_calloc(1, sizeof(*r));
    atomic_init(&r->refs, 1);
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->enabled = en ? json_is_true(en) : 1;
    r->plan = plan;
    r->nworkers = nw;
    r->stats = aligned_alloc(64, sizeof(rules_stats_t) * nw);
    if (r->stats == NULL)
        abort();
    memset(r->stats, 0, sizeof(rules_stats_t) * nw);
    size_t i;
    json_t *a;
    json_array_foreach(acts, i, a)
    {
        char e[200];
        rules_action_t *act =
            rules_action_new(st ? st->srv : NULL, st ? st->index : 0, a, e, sizeof(e));
        if (act == NULL) {
            snprintf(err, errlen, "actions[%zu]: %s", i, e);
            rules_rule_unref(r);
            return NULL;
        }
        r->actions[r->nactions++] = act;
    }
    if (st && (plan->events & ~st->listened)) {
        for (int e = 0; e < RULES_EV_COUNT; e++)
            if ((plan->events >> e) & 1u & ~(st->listened >> e))
                snprintf(err, errlen,
                         "sql: $events/%s is not listened to: name it in rules.events (the "
                         "event registry is fixed at start)",
                         rules_event_names[e]);
        rules_rule_unref(r);
        return NULL;
    }
    /* the definition as given, normalised */
    r->def = json_pack("{s:s,s:s,s:b,s:O}", "id", id, "sql", sql, "enabled", r->enabled, "actions",
                       acts ? acts : json_array());
    if (acts == NULL)
        json_decref(json_object_get(r->def, "actions")); /* the temporary's own ref */
    return r;
}

void rules_rule_unref(rules_rule_t *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (uint32_t i = 0; i < r->nactions; i++)
        rules_action_free(r->actions[i]);
    rules_plan_free(r->plan);
    json_decref(r->def);
    free(r->stats);
    free(r);
}

static void set_unref(rules_set_t *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        rules_rule_unref(s->r[i]);
    free(s);
}

int rules_find(rules_state_t *st, const char *id)
{
    for (uint32_t i = 0; i < st->nall; i++)
        if (strcmp(st->all[i]->id, id) == 0)
            return (int)i;
    return -1;
}

static void on_message(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user);
static void on_consumer_free(router_consumer_t *c, void *user)
{
    (void)c, (void)user;
}
static const consumer_ops_t consumer_ops = {.on_message = on_message, .free = on_consumer_free};

int rules_commit(rules_state_t *st, char *err, size_t errlen)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->nall; i++)
        n += st->all[i]->enabled;
    rules_set_t *set = an_calloc(1, sizeof(*set) + n * sizeof(set->r[0]));
    for (uint32_t i = 0; i < st->nall; i++)
        if (st->all[i]->enabled) {
            atomic_fetch_add(&st->all[i]->refs, 1);
            set->r[set->n++] = st->all[i];
        }
    /* the consumer's filters: subscribe the new ones first, so a message of
     * a kept filter is never missed */
    char **want = NULL;
    uint32_t nwant = 0;
    for (uint32_t i = 0; i < set->n; i++)
        for (uint32_t f = 0; f < set->r[i]->plan->nfilters; f++) {
            const char *fl = set->r[i]->plan->filters[f];
            uint32_t j = 0;
            while (j < nwant && strcmp(want[j], fl) != 0)
                j++;
            if (j == nwant) {
                want = an_realloc(want, (nwant + 1) * sizeof(*want));
                want[nwant++] = an_strndup(fl, strlen(fl));
            }
        }
    if (nwant && st->consumer == NULL)
        st->consumer = router_consumer_new(st->srv, "rules", &consumer_ops, st);
    for (uint32_t j = 0; j < nwant; j++)
        if (router_consumer_subscribe(st->consumer, want[j], 0) < 0)
            snprintf(err, errlen, "cannot subscribe to %s", want[j]); /* checked by the parser */
    for (uint32_t j = 0; j < st->nsubs; j++) {
        uint32_t k = 0;
        while (k < nwant && strcmp(want[k], st->subs[j]) != 0)
            k++;
        if (k == nwant)
            router_consumer_unsubscribe(st->consumer, st->subs[j]);
        free(st->subs[j]);
    }
    free(st->subs);
    st->subs = want;
    st->nsubs = nwant;
    /* one reference per worker, one for st->cur */
    atomic_init(&set->refs, st->srv->nworkers + 1);
    for (uint32_t i = 0; i < st->srv->nworkers; i++) {
        worker_t *w = &st->srv->workers[i];
        if (w->modules == NULL || module_worker_ctx(w, st->index) == NULL) {
            set_unref(set); /* before worker_init: it takes st->cur */
            continue;
        }
        inbox_vec_t v = {0};
        inbox_vec_push(
            &v, &(inbox_item_t){.kind = WM_RULES, .flags = ITEM_SET, .sid = st->index, .ptr = set});
        inbox_post(&w->inbox, &v);
        inbox_vec_free(&v);
    }
    set_unref(st->cur);
    st->cur = set;
    return 0;
}

/* ---- evaluation (workers) ---- */

static void eval_rule(worker_t *w, rules_worker_t *rw, rules_rule_t *r, rules_input_t *in,
                      const msg_t *m)
{
    rules_stats_t *s = &r->stats[w->id];
    STAT_ADD(s->matched, 1);
    int ok = rules_eval_where(r->plan, in, &rw->scratch);
    json_t *row = NULL;
    if (ok == 1 && (row = rules_eval_row(r->plan, in, &rw->scratch)) == NULL)
        ok = -1;
    if (ok < 0) {
        STAT_ADD(s->failed, 1);
        log_limited(1000, AN_LOG_DEBUG, "rules: %s: %s", r->id, rw->scratch.err);
        return;
    }
    if (ok == 0)
        return;
    STAT_ADD(s->passed, 1);
    for (uint32_t i = 0; i < r->nactions; i++) {
        int res = r->actions[i]->ops->emit(r->actions[i], w, row, m);
        if (res >= 0 && res < RULES_EMIT_RESULTS)
            STAT_ADD(s->act[i][res], 1);
    }
    json_decref(row);
}

static const char *proto_name(uint8_t p)
{
    return p == MQTT_PROTO_V5     ? "mqtt5"
           : p == MQTT_PROTO_V311 ? "mqtt3.1.1"
           : p == MQTT_PROTO_V31  ? "mqtt3.1"
                                  : NULL;
}

static void input_from_msg(rules_input_t *in, const msg_t *m)
{
    const msg_origin_t *o = m->origin;
    in->clientid = o ? o->client_id : NULL;
    in->username = o ? o->username : NULL;
    in->protocol = o ? msg_proto_name(o->proto) : NULL;
    in->topic = (const char *)msg_topic(m);
    in->topic_len = m->topic_len;
    in->payload = (const char *)msg_payload(m);
    in->payload_len = m->payload_len;
    in->qos = m->qos;
    in->retain = m->retain;
    in->timestamp = (int64_t)m->published_at;
    in->node = m->origin_node;
    in->props = m->props_len ? msg_props(m) : NULL;
    in->props_len = m->props_len;
}

static void on_message(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user)
{
    (void)c, (void)qos, (void)flags;
    rules_state_t *st = user;
    if (m->flags & MSG_F_RULES)
        return; /* a rule's own output: never evaluated again */
    rules_worker_t *rw = module_worker_ctx(w, st->index);
    rules_set_t *set = rw->set;
    rules_input_t in;
    int have = 0;
    for (uint32_t i = 0; set && i < set->n; i++) {
        rules_rule_t *r = set->r[i];
        uint32_t f = 0;
        while (f < r->plan->nfilters &&
               !topic_matches((const uint8_t *)r->plan->filters[f], strlen(r->plan->filters[f]),
                              msg_topic(m), m->topic_len))
            f++;
        if (f == r->plan->nfilters)
            continue;
        if (!have) {
            memset(&in, 0, sizeof(in));
            input_from_msg(&in, m);
            in.event = "message.publish";
            have = 1;
        }
        eval_rule(w, rw, r, &in, m);
    }
    if (have) {
        rules_input_done(&in);
        rules_scratch_reset(&rw->scratch);
    }
}

static void on_event(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    rules_state_t *st = user;
    rules_worker_t *rw = module_worker_ctx(w, st->index);
    if (rw == NULL || rw->set == NULL || rw->set->n == 0)
        return;
    int ev = kind == EVENT_CLIENT_CONNECTED      ? RULES_EV_CONNECTED
             : kind == EVENT_CLIENT_DISCONNECTED ? RULES_EV_DISCONNECTED
             : kind == EVENT_MESSAGE_DROPPED     ? RULES_EV_DROPPED
             : kind == EVENT_COMMAND_STATUS      ? RULES_EV_COMMAND
             : kind == EVENT_DEVICE_PRESENCE     ? RULES_EV_PRESENCE
                                                 : RULES_EV_DELIVERED;
    rules_input_t in;
    memset(&in, 0, sizeof(in));
    const event_client_t *cl = data; /* every kind's struct starts with its client */
    const msg_t *m = NULL;
    in.clientid = cl->client_id;
    in.username = cl->username;
    in.peer = cl->peer;
    in.protocol = proto_name(cl->proto);
    in.event = rules_event_names[ev];
    in.timestamp = (int64_t)an_wall_ms();
    if (kind == EVENT_CLIENT_DISCONNECTED) {
        in.reason = ((const event_disconnected_t *)data)->reason;
    } else if (kind == EVENT_MESSAGE_DROPPED) {
        const event_dropped_t *d = data;
        in.reason = event_drop_reason_name(d->reason);
        m = d->msg;
        if (m == NULL) {
            in.topic = (const char *)d->topic;
            in.topic_len = d->topic_len;
            in.qos = d->qos;
        }
    } else if (kind == EVENT_MESSAGE_DELIVERED) {
        m = ((const event_delivered_t *)data)->msg;
    } else if (kind == EVENT_COMMAND_STATUS) {
        /* reason: the status; topic: the command's name; payload: the
         * command as JSON (docs/commands.md) */
        const event_command_status_t *c = data;
        in.reason = c->status;
        in.topic = c->name;
        in.topic_len = (uint32_t)strlen(c->name);
        in.payload = c->json;
        in.payload_len = (uint32_t)strlen(c->json);
    } else if (kind == EVENT_DEVICE_PRESENCE) {
        /* clientid: the device; reason: "connected" or "disconnected";
         * payload: the presence as JSON (docs/devices.md) */
        const event_device_presence_t *p = data;
        in.clientid = p->device;
        in.reason = p->connected ? "connected" : "disconnected";
        in.payload = p->json;
        in.payload_len = (uint32_t)strlen(p->json);
        in.timestamp = (int64_t)p->at_ms;
    }
    if (m) {
        if (m->flags & MSG_F_RULES)
            return;
        const char *cid = in.clientid, *user_ = in.username, *proto = in.protocol;
        input_from_msg(&in, m);
        in.clientid = cid, in.username = user_, in.protocol = proto;
    }
    int any = 0;
    for (uint32_t i = 0; i < rw->set->n; i++)
        if ((rw->set->r[i]->plan->events >> ev) & 1u) {
            eval_rule(w, rw, rw->set->r[i], &in, m);
            any = 1;
        }
    if (any) {
        rules_input_done(&in);
        rules_scratch_reset(&rw->scratch);
    }
}

/* ---- WM_RULES ---- */

int rules_republish_post(worker_t *w, uint32_t module_index, msg_t *m)
{
    rules_worker_t *rw = module_worker_ctx(w, module_index);
    const rules_state_t *st = w->srv->modules[module_index].state;
    if (rw->pending >= st->conf->max_pending) {
        msg_unref(&m);
        return RULES_EMIT_DROPPED;
    }
    rw->pending++;
    worker_post(
        w, w->id,
        &(inbox_item_t){.kind = WM_RULES, .flags = ITEM_PUBLISH, .sid = module_index, .ptr = m});
    return RULES_EMIT_OK;
}

static void on_item(worker_t *w, inbox_item_t *it)
{
    rules_worker_t *rw = module_worker_ctx(w, (uint32_t)it->sid); /* the module's index */
    if (it->flags == ITEM_SET) {
        rules_set_t *old = rw->set;
        rw->set = it->ptr;
        set_unref(old);
        return;
    }
    msg_t *m = it->ptr;
    rw->pending--;
    router_publish(w, m, NULL);
    msg_unref(&m);
}

static void drop_item(inbox_item_t *it)
{
    if (it->flags == ITEM_SET) {
        set_unref(it->ptr);
    } else {
        msg_t *m = it->ptr;
        msg_unref(&m);
    }
}

/* ---- configuration ---- */

static const char *const ev_names[] = {"client_connected",
                                       "client_disconnected",
                                       "message_dropped",
                                       "message_delivered",
                                       "command_status",
                                       "device_presence",
                                       NULL};

static void rules_defaults(void *conf)
{
    rules_conf_t *c = conf;
    c->enabled = 1;
    c->max_pending = 10000;
    snprintf(c->events[0], sizeof(c->events[0]), "client_connected");
    snprintf(c->events[1], sizeof(c->events[1]), "client_disconnected");
    c->nevents = 2;
    snprintf(c->json, sizeof(c->json), "[]");
}

typedef struct {
    json_t *list; /* the rules read so far */
    json_t *acts; /* the actions of the rule being read */
} load_ctx_t;

/* A sink action's driver keys (conf_sec_rest): plain scalars that read as
 * numbers or booleans become such, the rest strings. */
static int load_rest(conf_sec_t *s, const char *key, const char *value, int quoted, void *ud)
{
    (void)s;
    json_t *a = ud, *v = NULL;
    if (!quoted) {
        char *end;
        long long n = strtoll(value, &end, 10);
        if (value[0] && *end == '\0')
            v = json_integer(n);
        else if (strcmp(value, "true") == 0 || strcmp(value, "false") == 0)
            v = json_boolean(value[0] == 't');
    }
    json_object_set_new(a, key, v ? v : json_string(value));
    return 0;
}

static int load_action(conf_sec_t *s, uint32_t i, void *ud)
{
    (void)i;
    load_ctx_t *lc = ud;
    static const char *const types[] = {"republish", "sink", NULL};
    uint8_t type = 0, retain = 0;
    uint32_t qos = 0;
    char topic[1024] = "", payload[4096] = "";
    if (!conf_sec_has(s, "type"))
        return conf_sec_fail(s, "type", "an action needs a type (republish, sink)");
    if (conf_sec_enum(s, "type", types, &type) < 0)
        return -1;
    json_t *a;
    const char *errkey = "topic";
    if (type == 1) {
        char sink[64] = "", ack[16] = "";
        if (conf_sec_str(s, "sink", sink, sizeof(sink), CONF_SEC_NONEMPTY) < 0 ||
            conf_sec_str(s, "ack", ack, sizeof(ack), 0) < 0)
            return -1;
        a = json_pack("{s:s,s:s}", "type", "sink", "sink", sink);
        if (conf_sec_has(s, "ack"))
            json_object_set_new(a, "ack", json_string(ack));
        if (conf_sec_rest(s, load_rest, a) < 0) {
            json_decref(a);
            return -1;
        }
        errkey = conf_sec_has(s, "ack") ? "ack" : "sink";
    } else {
        if (conf_sec_str(s, "topic", topic, sizeof(topic), CONF_SEC_NONEMPTY) < 0 ||
            conf_sec_str(s, "payload", payload, sizeof(payload), 0) < 0 ||
            conf_sec_u32(s, "qos", 0, 2, &qos) < 0 || conf_sec_bool(s, "retain", &retain) < 0)
            return -1;
        a = json_pack("{s:s,s:s,s:i,s:b}", "type", types[type], "topic", topic, "qos", (int)qos,
                      "retain", retain);
        if (conf_sec_has(s, "payload"))
            json_object_set_new(a, "payload", json_string(payload));
    }
    /* checked without a server: a sink's name and driver keys are checked
     * when the rule is built at start-up (the sinks exist then) */
    char err[200];
    rules_action_t *act = rules_action_new(NULL, 0, a, err, sizeof(err));
    if (act == NULL) {
        json_decref(a);
        return conf_sec_fail(s, errkey, "%s", err);
    }
    rules_action_free(act);
    json_array_append_new(lc->acts, a);
    return 0;
}

static int load_rule(conf_sec_t *s, uint32_t i, void *ud)
{
    (void)i;
    load_ctx_t *lc = ud;
    char id[RULES_ID_MAX] = "", *sql = calloc(1, RULES_MAX_SQL + 1);
    uint8_t enabled = 1;
    int rc = -1;
    lc->acts = json_array();
    if (conf_sec_str(s, "id", id, sizeof(id), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "sql", sql, RULES_MAX_SQL + 1, CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_bool(s, "enabled", &enabled) < 0 ||
        conf_sec_each(s, "actions", load_action, lc) < 0)
        goto done;
    if (!conf_sec_has(s, "id") || !id_valid(id)) {
        conf_sec_fail(s, "id", "1..%d characters of [A-Za-z0-9_.-] required", RULES_ID_MAX - 1);
        goto done;
    }
    if (!conf_sec_has(s, "sql")) {
        conf_sec_fail(s, "sql", "a statement is required");
        goto done;
    }
    size_t k;
    json_t *r;
    json_array_foreach(lc->list, k, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "id")), id) == 0) {
            conf_sec_fail(s, "id", "\"%s\" is the id of an earlier rule", id);
            goto done;
        }
    }
    rules_err_t pe;
    rules_plan_t *plan = rules_parse(sql, &pe);
    if (plan == NULL) {
        conf_sec_fail(s, "sql", "%s", pe.msg);
        goto done;
    }
    rules_plan_free(plan);
    json_array_append_new(lc->list, json_pack("{s:s,s:s,s:b,s:O}", "id", id, "sql", sql, "enabled",
                                              enabled, "actions", lc->acts));
    rc = 0;
done:
    json_decref(lc->acts);
    lc->acts = NULL;
    free(sql);
    return rc;
}

static int rules_load(conf_sec_t *s, void *conf)
{
    rules_conf_t *c = conf;
    if (conf_sec_bool(s, "enabled", &c->enabled) < 0 ||
        conf_sec_u32(s, "max_pending", 1, 10000000, &c->max_pending) < 0 ||
        conf_sec_names(s, "events", c->events[0], sizeof(c->events[0]), RULES_EV_COUNT,
                       &c->nevents) < 0)
        return -1;
    for (uint32_t i = 0; i < c->nevents; i++) {
        int ok = 0;
        for (int e = 0; ev_names[e]; e++)
            ok |= strcmp(ev_names[e], c->events[i]) == 0;
        if (!ok)
            return conf_sec_fail(
                s, "events",
                "\"%s\" is not an event (client_connected, client_disconnected, "
                "message_dropped, message_delivered, command_status, device_presence)",
                c->events[i]);
    }
    load_ctx_t lc = {.list = json_array()};
    if (conf_sec_each(s, "rules", load_rule, &lc) < 0) {
        json_decref(lc.list);
        return -1;
    }
    char *d = json_dumps(lc.list, JSON_COMPACT);
    json_decref(lc.list);
    if (d == NULL || strlen(d) >= sizeof(c->json)) {
        free(d);
        return conf_sec_fail(s, "rules",
                             "the rules take more than %d bytes; create the others through the "
                             "API (POST /api/v1/rules)",
                             RULES_FILE_JSON - 1);
    }
    snprintf(c->json, sizeof(c->json), "%s", d);
    free(d);
    return 0;
}

static void rules_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    const rules_conf_t *c = conf;
    fn(ud, CONF_V_BOOL, "enabled", NULL, c->enabled);
    fn(ud, CONF_V_UINT, "max_pending", NULL, c->max_pending);
    fn(ud, CONF_V_LIST, "events", NULL, 0);
    for (uint32_t i = 0; i < c->nevents; i++)
        fn(ud, CONF_V_STR, NULL, c->events[i], 0);
    fn(ud, CONF_V_END, "events", NULL, 0);
    fn(ud, CONF_V_STR, "rules", c->json, 0);
}

static const char *const rules_live_keys[] = {"rules", NULL};

/* ---- the store ---- */

static void store_key(const char *id, char *key, size_t *kl)
{
    memcpy(key, RULES_STORE_PREFIX, RULES_STORE_PREFIX_LEN);
    size_t n = strlen(id);
    memcpy(key + RULES_STORE_PREFIX_LEN, id, n);
    *kl = RULES_STORE_PREFIX_LEN + n;
}

int rules_store_put(rules_state_t *st, const char *id, json_t *def)
{
    if (st->srv->store == NULL)
        return 0;
    char key[RULES_STORE_PREFIX_LEN + RULES_ID_MAX];
    size_t kl;
    store_key(id, key, &kl);
    json_t *rec = def ? json_incref(def) : json_pack("{s:s,s:b}", "id", id, "deleted", 1);
    char *d = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    store_batch_t *b = store_batch_new();
    store_batch_put(b, key, kl, d, strlen(d));
    free(d);
    int rc = store_submit_sync(st->srv->store, b);
    if (rc < 0)
        log_error("rules: %s: storing the rule: %s", id, store_strerror(rc));
    return rc;
}

static void replace_rule(rules_state_t *st, const char *id, rules_rule_t *r)
{
    int i = rules_find(st, id);
    if (i >= 0) {
        rules_rule_unref(st->all[i]);
        if (r) {
            st->all[i] = r;
            return;
        }
        memmove(&st->all[i], &st->all[i + 1], (st->nall - (uint32_t)i - 1) * sizeof(st->all[0]));
        st->nall--;
        return;
    }
    if (r == NULL)
        return;
    st->all = an_realloc(st->all, (st->nall + 1) * sizeof(st->all[0]));
    st->all[st->nall++] = r;
}

static int load_stored(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    rules_state_t *st = ud;
    (void)k, (void)kl;
    json_t *def = json_loadb(v, vl, 0, NULL);
    const char *id = json_string_value(json_object_get(def, "id"));
    if (id == NULL) {
        log_warn("rules: a stored rule is not readable: skipped");
    } else if (json_is_true(json_object_get(def, "deleted"))) {
        replace_rule(st, id, NULL);
    } else {
        char err[300];
        rules_rule_t *r = rules_rule_build(st, def, err, sizeof(err), NULL);
        if (r == NULL)
            log_warn("rules: stored rule %s: %s: skipped", id, err);
        else
            replace_rule(st, id, r);
    }
    json_decref(def);
    return 0;
}

/* ---- module hooks ---- */

static int rules_init(module_inst_t *mi)
{
    const rules_conf_t *c = mi->conf;
    if (!c->enabled)
        return 0;
    rules_state_t *st = an_calloc(1, sizeof(*st));
    st->srv = mi->srv;
    st->conf = c;
    st->index = mi->index;
    pthread_mutex_init(&st->mu, NULL);
    mi->state = st;
    json_t *list = json_loads(c->json, 0, NULL);
    /* events: rules.events and those the file's rules name */
    uint32_t want = 0;
    for (uint32_t i = 0; i < c->nevents; i++)
        for (int e = 0; e < RULES_EV_COUNT; e++)
            if (strcmp(c->events[i], rules_event_names[e]) == 0)
                want |= 1u << e;
    size_t i;
    json_t *def;
    json_array_foreach(list, i, def)
    {
        rules_err_t pe;
        rules_plan_t *p = rules_parse(json_string_value(json_object_get(def, "sql")), &pe);
        if (p)
            want |= p->events;
        rules_plan_free(p);
    }
    static const event_kind_t kinds[RULES_EV_COUNT] = {
        EVENT_CLIENT_CONNECTED,  EVENT_CLIENT_DISCONNECTED, EVENT_MESSAGE_DROPPED,
        EVENT_MESSAGE_DELIVERED, EVENT_COMMAND_STATUS,      EVENT_DEVICE_PRESENCE};
    for (int e = 0; e < RULES_EV_COUNT; e++)
        if ((want >> e) & 1u) {
            if (event_listen(&mi->srv->events, kinds[e], on_event, st) < 0) {
                log_error("rules: cannot listen to %s", rules_event_names[e]);
                json_decref(list);
                return -1;
            }
            st->listened |= 1u << e;
        }
    worker_inbox_register(mi->srv, WM_RULES,
                          &(worker_inbox_kind_t){.run = on_item, .drop = drop_item});
    json_array_foreach(list, i, def)
    {
        char err[300];
        rules_rule_t *r = rules_rule_build(st, def, err, sizeof(err), NULL);
        if (r == NULL) { /* checked when the file was read */
            log_error("rules: %s", err);
            json_decref(list);
            return -1;
        }
        replace_rule(st, r->id, r);
    }
    json_decref(list);
    if (mi->srv->store) {
        int rc =
            store_scan(mi->srv->store, RULES_STORE_PREFIX, RULES_STORE_PREFIX_LEN, load_stored, st);
        if (rc < 0)
            log_warn("rules: reading the stored rules: %s", store_strerror(rc));
    }
    char err[200] = "";
    rules_commit(st, err, sizeof(err));
    log_info("rules: %" PRIu32 " rule(s)", st->nall);
    return 0;
}

/* Live reload (module_t.reload): the file's rules again.  The new set is
 * built as at start (the file's rules, then the store's: the API's
 * changes win), all under st->mu; a rule whose definition did not change
 * keeps its object, so its counters go on.  A file rule that does not
 * build (an event not listened to) refuses the reload: nothing changes.
 * rules.enabled, .events and .max_pending need a restart (not live keys). */
static int rules_reload(module_inst_t *mi, const void *conf, char *err, size_t errlen)
{
    const rules_conf_t *c = conf;
    rules_state_t *st = mi->state;
    if (st == NULL) {
        snprintf(err, errlen, "the rule engine is off since start (rules.enabled): restart");
        return -1;
    }
    json_t *list = json_loads(c->json, 0, NULL);
    pthread_mutex_lock(&st->mu);
    rules_rule_t **old = st->all;
    uint32_t nold = st->nall;
    st->all = NULL;
    st->nall = 0;
    size_t i;
    json_t *def;
    json_array_foreach(list, i, def)
    {
        char e[300];
        rules_rule_t *r = rules_rule_build(st, def, e, sizeof(e), NULL);
        if (r == NULL) {
            snprintf(err, errlen, "rule %s: %s", json_string_value(json_object_get(def, "id")), e);
            for (uint32_t k = 0; k < st->nall; k++)
                rules_rule_unref(st->all[k]);
            free(st->all);
            st->all = old;
            st->nall = nold;
            pthread_mutex_unlock(&st->mu);
            json_decref(list);
            return -1;
        }
        replace_rule(st, r->id, r);
    }
    json_decref(list);
    if (st->srv->store) {
        int rc =
            store_scan(st->srv->store, RULES_STORE_PREFIX, RULES_STORE_PREFIX_LEN, load_stored, st);
        if (rc < 0)
            log_warn("rules: reading the stored rules: %s", store_strerror(rc));
    }
    /* unchanged rules keep their objects (and counters) */
    uint32_t kept = 0;
    for (uint32_t k = 0; k < st->nall; k++)
        for (uint32_t o = 0; o < nold; o++)
            if (old[o] && strcmp(old[o]->id, st->all[k]->id) == 0) {
                if (json_equal(old[o]->def, st->all[k]->def)) {
                    rules_rule_unref(st->all[k]);
                    st->all[k] = old[o];
                    old[o] = NULL;
                    kept++;
                }
                break;
            }
    for (uint32_t o = 0; o < nold; o++)
        if (old[o])
            rules_rule_unref(old[o]);
    free(old);
    char e[200] = "";
    if (rules_commit(st, e, sizeof(e)) < 0)
        log_warn("rules: reload: %s", e);
    log_info("rules: reloaded: %" PRIu32 " rule(s), %" PRIu32 " unchanged", st->nall, kept);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

static int rules_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    (void)w;
    rules_state_t *st = mi->state;
    if (st == NULL)
        return 0;
    rules_worker_t *rw = an_calloc(1, sizeof(*rw));
    rules_scratch_init(&rw->scratch, SCRATCH_BYTES);
    pthread_mutex_lock(&st->mu);
    rw->set = st->cur;
    atomic_fetch_add(&rw->set->refs, 1);
    pthread_mutex_unlock(&st->mu);
    *ctx = rw;
    return 0;
}

static void rules_worker_free(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)mi, (void)w;
    rules_worker_t *rw = ctx;
    if (rw == NULL)
        return;
    set_unref(rw->set);
    rules_scratch_free(&rw->scratch);
    free(rw);
}

static void rules_free(module_inst_t *mi)
{
    rules_state_t *st = mi->state;
    if (st == NULL)
        return;
    set_unref(st->cur);
    for (uint32_t i = 0; i < st->nall; i++)
        rules_rule_unref(st->all[i]);
    for (uint32_t i = 0; i < st->nsubs; i++)
        free(st->subs[i]);
    free(st->subs);
    free(st->all);
    pthread_mutex_destroy(&st->mu);
    free(st);
    mi->state = NULL;
}

json_t *rules_rule_json(const rules_rule_t *r)
{
    uint64_t matched = 0, passed = 0, failed = 0,
             act[RULES_MAX_ACTIONS][RULES_EMIT_RESULTS] = {{0}};
    for (uint32_t w = 0; w < r->nworkers; w++) {
        const rules_stats_t *s = &r->stats[w];
        matched += STAT_GET(s->matched);
        passed += STAT_GET(s->passed);
        failed += STAT_GET(s->failed);
        for (uint32_t a = 0; a < r->nactions; a++)
            for (int k = 0; k < RULES_EMIT_RESULTS; k++)
                act[a][k] += STAT_GET(s->act[a][k]);
    }
    json_t *acts = json_array();
    for (uint32_t a = 0; a < r->nactions; a++) {
        const rules_action_t *ra = r->actions[a];
        json_t *o = json_pack("{s:s,s:I,s:I,s:I}", "type", ra->ops->type, "success",
                              (json_int_t)act[a][RULES_EMIT_OK], "failed",
                              (json_int_t)act[a][RULES_EMIT_FAILED], "dropped",
                              (json_int_t)act[a][RULES_EMIT_DROPPED]);
        if (ra->ops->describe)
            ra->ops->describe(ra, o);
        json_array_append_new(acts, o);
    }
    json_t *j = json_deep_copy(r->def);
    json_object_set_new(j, "metrics",
                        json_pack("{s:I,s:I,s:I,s:o}", "matched", (json_int_t)matched, "passed",
                                  (json_int_t)passed, "failed", (json_int_t)failed, "actions",
                                  acts));
    return j;
}

static void rules_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    rules_state_t *st = mi->state;
    if (st == NULL)
        return;
    static const char *const fams[][2] = {
        {"antenna_rule_matched_total", "Messages and events a rule's FROM selected"},
        {"antenna_rule_passed_total", "Messages and events that passed a rule's WHERE"},
        {"antenna_rule_failed_total", "Evaluations of a rule that failed (an error)"}};
    pthread_mutex_lock(&st->mu);
    json_t *rows = json_array();
    for (uint32_t i = 0; i < st->nall; i++)
        json_array_append_new(rows, rules_rule_json(st->all[i]));
    pthread_mutex_unlock(&st->mu);
    static const char *const keys[] = {"matched", "passed", "failed"};
    size_t i;
    json_t *r;
    for (int f = 0; f < 3; f++) {
        module_metrics_family(mm, fams[f][0], "counter", fams[f][1]);
        json_array_foreach(rows, i, r)
        {
            module_metrics_printf(
                mm, "%s{rule=\"%s\"} %" JSON_INTEGER_FORMAT "\n", fams[f][0],
                json_string_value(json_object_get(r, "id")),
                json_integer_value(json_object_get(json_object_get(r, "metrics"), keys[f])));
        }
    }
    module_metrics_family(mm, "antenna_rule_action_total", "counter",
                          "Outcomes of a rule's actions (result: success, failed, dropped)");
    static const char *const res[] = {"success", "failed", "dropped"};
    json_array_foreach(rows, i, r)
    {
        json_t *acts = json_object_get(json_object_get(r, "metrics"), "actions");
        size_t a;
        json_t *av;
        json_array_foreach(acts, a, av)
        {
            for (int k = 0; k < 3; k++)
                module_metrics_printf(mm,
                                      "antenna_rule_action_total{rule=\"%s\",action=\"%zu\",type="
                                      "\"%s\",result=\"%s\"} %" JSON_INTEGER_FORMAT "\n",
                                      json_string_value(json_object_get(r, "id")), a,
                                      json_string_value(json_object_get(av, "type")), res[k],
                                      json_integer_value(json_object_get(av, res[k])));
        }
    }
    json_decref(rows);
}

const module_t rules_module = {
    .name = "rules",
    .section = "rules",
    .conf_size = sizeof(rules_conf_t),
    .conf_defaults = rules_defaults,
    .conf_load = rules_load,
    .conf_walk = rules_walk,
    .live_keys = rules_live_keys,
    .reload = rules_reload,
    .init = rules_init,
    .free = rules_free,
    .worker_init = rules_worker_init,
    .worker_free = rules_worker_free,
    .api_routes = rules_api_routes,
    .metrics = rules_metrics,
};
