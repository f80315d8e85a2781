/* commands.c -- downlink commands to devices (issue 18, docs/commands.md).
 *
 * What it owns: the table of commands (cmd_t, in memory, bounded by
 * commands.max_commands), an internal consumer of the devices' replies,
 * one inbox kind (WM_COMMANDS) and a tick per worker.
 *
 * Threads.  The table is written under st->mu by the API threads (POST,
 * DELETE), by the workers (send, acknowledgement, reply, timers) and read
 * by the API threads (GET, /metrics); a change of state signals st->cv for
 * the long polls.  A command is sent ONLY by its device's home worker
 * (worker_home of the client id): POST posts a WM_COMMANDS item there
 * (sid = the command's number), and the worker's tick (every 100 ms) sends
 * the queued ones whose device is now connected, resends the ones not
 * acknowledged after retry_interval and ends the late ones (timed_out,
 * expired).  The message goes to the session itself (sess_deliver), so a
 * device needs no subscription.
 *
 * A device's replies reach the consumer on $cmd/+/reply (MQTT 5: the
 * Correlation Data is the command id) and $cmd/+/reply/+ (MQTT 3.1.1: the
 * last level is the command id); a reply counts only when its publisher's
 * client id is the device of the topic, and only for that device's
 * commands.  The acknowledgement of the PUBLISH (PUBACK, or PUBREC for
 * QoS 2) comes through the message_acked event, asked only for messages
 * flagged MSG_F_COMMAND: other messages do not reach this module.
 *
 * GET ?wait= blocks an API thread on st->cv: one such request at a time
 * (the API has two threads), at most CMD_WAIT_MAX_MS.  Every change of
 * status is stored ("\0cmd/" seq) and emitted as command_status.
 *
 * The table is kept in seq (id) order, so a reply or an acknowledgement
 * finds its command by binary search; the ticks and the API's lists scan
 * it.  Group commands (selectors, concurrency and rate limits, progress,
 * cancel) are in commands_group.c, the $cmd ACL in commands_acl.c; what
 * the three share is commands_int.h.
 *
 * Nothing of this runs while commands.enabled is false (no state, no
 * consumer, no tick, no listener, no ACL).
 */
#include "commands.h"
#include "commands_int.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_snap.h"
#include "event.h"
#include "inbox.h"
#include "log.h"
#include "msg.h"
#include "router.h"
#include "sess.h"
#include "store.h"

const char *const cmd_state_names[CMD_STATES] = {
    "queued", "sent",      "delivered", "acked",     "succeeded",
    "failed", "timed_out", "expired",   "cancelled",
};

static void cmd_persist(server_t *srv, const struct cmd_s *c, int del, int sync);

uint64_t cmd_mono_ms(void)
{
    return an_now_ms();
}

/* ---- configuration ---- */

static void cmd_defaults(void *conf)
{
    cmd_conf_t *c = conf;
    c->enabled = 0;
    snprintf(c->prefix, sizeof(c->prefix), "%s", "$cmd");
    c->max_commands = 10000;
    c->reply_timeout = 30000;
    c->expiry = 3600000;
    c->retry_interval = 10000;
    c->retries = 2;
    c->group_concurrency = 1000;
    c->group_rate = 0;
    c->acl = 1;
    c->nadmins = 0;
}

static const conf_key_t cmd_keys[] = {
    CONF_KEY_BOOL(cmd_conf_t, enabled, "enabled"),
    CONF_KEY_STR(cmd_conf_t, prefix, "topic_prefix", CONF_SEC_NONEMPTY),
    CONF_KEY_U32(cmd_conf_t, max_commands, "max_commands", 1, 10000000),
    CONF_KEY_MS(cmd_conf_t, reply_timeout, "reply_timeout", 100, 86400000),
    CONF_KEY_MS(cmd_conf_t, expiry, "expiry", 100, 2000000000),
    CONF_KEY_MS(cmd_conf_t, retry_interval, "retry_interval", 100, 86400000),
    CONF_KEY_U32(cmd_conf_t, retries, "retries", 0, 100),
    CONF_KEY_U32(cmd_conf_t, group_concurrency, "group_concurrency", 1, 1000000),
    CONF_KEY_U32(cmd_conf_t, group_rate, "group_rate", 0, 1000000),
    CONF_KEY_BOOL(cmd_conf_t, acl, "acl"),
    CONF_KEY_NAMES(cmd_conf_t, admins, nadmins, "acl_admins", CMD_ADMINS_MAX),
};

static int cmd_load(conf_sec_t *s, void *conf)
{
    cmd_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(cmd_keys), c) < 0)
        return -1;
    if (strpbrk(c->prefix, "+#") != NULL || c->prefix[strlen(c->prefix) - 1] == '/')
        return conf_sec_fail(s, "topic_prefix",
                             "\"%.60s\": a topic prefix has no wildcards and no trailing '/'",
                             c->prefix);
    return 0;
}

static void cmd_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(cmd_keys), conf, fn, ud);
}

/* ---- the table (st->mu held) ---- */

static void cmd_free(cmd_state_st *st, cmd_t *c)
{
    if (c->grp)
        cmd_group_unref_locked(st, c->grp);
    free(c->device);
    free(c->name);
    free(c->params);
    json_decref(c->result);
    free(c);
}

static cmd_t *find_locked(cmd_state_st *st, const char *id)
{
    if (id[0] != 'c')
        return NULL;
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(id + 1, &end, 16);
    if (errno || *end || end == id + 1)
        return NULL;
    size_t lo = 0, hi = st->n; /* st->v is in seq order */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->v[mid]->seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->n && st->v[lo]->seq == seq ? st->v[lo] : NULL;
}

/* c into the table at its place in seq order (at the end, but for two
 * POSTs crossing); st->mu held. */
static void insert_locked(cmd_state_st *st, cmd_t *c)
{
    if (st->n % 64 == 0)
        st->v = an_realloc(st->v, (st->n + 64) * sizeof(*st->v));
    size_t i = st->n;
    while (i > 0 && st->v[i - 1]->seq > c->seq)
        i--;
    memmove(st->v + i + 1, st->v + i, (st->n - i) * sizeof(*st->v));
    st->v[i] = c;
    st->n++;
    if (c->grp && cmd_active(c->state))
        c->grp->active++;
}

static json_t *cmd_json(const cmd_t *c);

/* command_status to the event's listeners, on worker w (st->mu held: a
 * listener reads the command's strings; none calls back into this
 * module).  Nothing is built when nobody listens. */
static void emit_locked(worker_t *w, const cmd_t *c, cmd_state_t s)
{
    if (!event_wanted(w->srv, EVENT_COMMAND_STATUS))
        return;
    json_t *o = cmd_json(c);
    json_object_set_new(o, "status", json_string(cmd_state_names[s]));
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    event_command_status_t ev = {.client = {.client_id = c->device},
                                 .command_id = c->id,
                                 .name = c->name,
                                 .status = cmd_state_names[s],
                                 .json = text ? text : "{}"};
    event_emit(w, &w->srv->events, EVENT_COMMAND_STATUS, &ev);
    free(text);
}

/* A new status: counted, stored, signalled to the long polls and emitted
 * as command_status: on w, the worker making the change, or (w NULL: an
 * API thread) on the device's home worker through an inbox item. */
void cmd_set_state_locked(cmd_state_st *st, cmd_t *c, cmd_state_t s, worker_t *w)
{
    if (c->state == s)
        return;
    if (c->grp && cmd_active(c->state) != cmd_active(s)) {
        if (cmd_active(s))
            c->grp->active++;
        else
            c->grp->active--;
    }
    c->state = (uint8_t)s;
    c->updated_wall = an_wall_ms();
    st->by_state[s]++;
    cmd_persist(st->srv, c, 0, 0);
    pthread_cond_broadcast(&st->cv);
    log_debug("commands: %s to '%s': %s", c->id, c->device, cmd_state_names[s]);
    if (w)
        emit_locked(w, c, s);
    else if (event_wanted(st->srv, EVENT_COMMAND_STATUS)) {
        inbox_vec_t v = {0};
        inbox_item_t it = {
            .kind = WM_COMMANDS, .flags = 1, .qos = (uint8_t)s, .sid = c->seq, .ptr = st->mi};
        inbox_vec_push(&v, &it);
        inbox_post(&st->srv->workers[c->home].inbox, &v);
        inbox_vec_free(&v);
    }
}

static json_t *cmd_json(const cmd_t *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(c->id));
    json_object_set_new(o, "device", json_string(c->device));
    json_object_set_new(o, "name", json_string(c->name));
    json_t *p = json_loads(c->params, JSON_DECODE_ANY, NULL);
    json_object_set_new(o, "params", p ? p : json_null());
    json_object_set_new(o, "qos", json_integer(c->qos));
    json_object_set_new(o, "status", json_string(cmd_state_names[c->state]));
    json_object_set_new(o, "attempts", json_integer(c->attempts));
    json_object_set_new(o, "retries", json_integer(c->retries));
    json_object_set_new(o, "reply_timeout_ms", json_integer(c->reply_timeout));
    json_object_set_new(o, "expiry_ms", json_integer(c->expiry));
    json_object_set_new(o, "created_at", json_integer((json_int_t)c->created_wall));
    json_object_set_new(o, "updated_at", json_integer((json_int_t)c->updated_wall));
    json_object_set_new(o, "result", c->result ? json_incref(c->result) : json_null());
    if (c->group) {
        char g[24];
        snprintf(g, sizeof(g), "g%" PRIx64, c->group);
        json_object_set_new(o, "group", json_string(g));
    }
    return o;
}

/* ---- the store: "\0cmd/" u64 BE seq -> the command as JSON ---- */

#define CMD_KEY_PREFIX "\0cmd/"
#define CMD_KEY_PREFIX_LEN 5

static size_t cmd_key(uint64_t seq, char *out)
{
    memcpy(out, CMD_KEY_PREFIX, CMD_KEY_PREFIX_LEN);
    for (int i = 0; i < 8; i++)
        out[CMD_KEY_PREFIX_LEN + i] = (char)(uint8_t)(seq >> (56 - 8 * i));
    return CMD_KEY_PREFIX_LEN + 8;
}

json_t *cmd_record(const cmd_t *c)
{
    json_t *o = cmd_json(c);
    json_object_set_new(o, "retry_interval_ms", json_integer(c->retry_interval));
    json_object_set_new(o, "group_seq", json_integer((json_int_t)c->group));
    if (c->grp) {
        json_object_set_new(o, "group_concurrency", json_integer(c->grp->concurrency));
        json_object_set_new(o, "group_rate", json_integer(c->grp->rate));
    }
    return o;
}

/* The command's record as it is now (a put, or a delete with del), in a
 * batch: synchronous on an API thread (POST: 202 means stored), queued
 * from a worker (never waits). */
static void cmd_persist(server_t *srv, const struct cmd_s *c, int del, int sync)
{
    if (srv->store == NULL)
        return;
    char key[CMD_KEY_PREFIX_LEN + 8];
    size_t kl = cmd_key(c->seq, key);
    store_batch_t *b = store_batch_new();
    if (del) {
        store_batch_del(b, key, kl);
    } else {
        json_t *o = cmd_record(c);
        char *v = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        store_batch_put(b, key, kl, v, strlen(v));
        free(v);
    }
    int rc = sync ? store_submit_sync(srv->store, b) : store_submit(srv->store, b, NULL, NULL);
    if (rc < 0)
        log_warn("commands: storing %s: %s", c->id, store_strerror(rc));
}

static int state_parse(const char *s)
{
    for (int i = 0; s && i < CMD_STATES; i++)
        if (strcmp(s, cmd_state_names[i]) == 0)
            return i;
    return -1;
}

/* init: a stored command back in the table (st->mu not needed yet). */
static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    cmd_state_st *st = ud;
    if (kl != CMD_KEY_PREFIX_LEN + 8)
        return 0;
    json_t *o = json_loadb(v, vl, 0, NULL);
    const char *dev = json_string_value(json_object_get(o, "device"));
    const char *name = json_string_value(json_object_get(o, "name"));
    int state = state_parse(json_string_value(json_object_get(o, "status")));
    if (dev == NULL || name == NULL || state < 0) {
        json_decref(o);
        return 0;
    }
    cmd_t *c = an_calloc(1, sizeof(*c));
    const uint8_t *kp = (const uint8_t *)k + CMD_KEY_PREFIX_LEN;
    for (int i = 0; i < 8; i++)
        c->seq = c->seq << 8 | kp[i];
    snprintf(c->id, sizeof(c->id), "c%" PRIx64, c->seq);
    c->device = strdup(dev);
    c->name = strdup(name);
    c->params = json_dumps(json_object_get(o, "params"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *r = json_object_get(o, "result");
    c->result = r && !json_is_null(r) ? json_incref(r) : NULL;
    c->qos = (uint8_t)json_integer_value(json_object_get(o, "qos"));
    c->state = (uint8_t)state;
    c->attempts = (uint32_t)json_integer_value(json_object_get(o, "attempts"));
    c->retries = (uint32_t)json_integer_value(json_object_get(o, "retries"));
    c->reply_timeout = (uint32_t)json_integer_value(json_object_get(o, "reply_timeout_ms"));
    c->expiry = (uint32_t)json_integer_value(json_object_get(o, "expiry_ms"));
    c->retry_interval = (uint32_t)json_integer_value(json_object_get(o, "retry_interval_ms"));
    c->group = (uint64_t)json_integer_value(json_object_get(o, "group_seq"));
    if (c->group) {
        json_int_t gc = json_integer_value(json_object_get(o, "group_concurrency"));
        json_int_t gr = json_integer_value(json_object_get(o, "group_rate"));
        c->grp = cmd_group_get_locked(st, c->group, gc > 0 ? (uint32_t)gc : UINT32_MAX,
                                      gr > 0 ? (uint32_t)gr : 0);
        c->grp->ready = 1;
        c->grp->refs++;
    }
    c->created_wall = (uint64_t)json_integer_value(json_object_get(o, "created_at"));
    c->updated_wall = (uint64_t)json_integer_value(json_object_get(o, "updated_at"));
    json_decref(o);
    /* monotonic times from the wall clock: the expiry runs on across the
     * restart; a command sent before it waits a full reply_timeout again */
    uint64_t now = cmd_mono_ms(), wall = an_wall_ms();
    uint64_t age = wall > c->created_wall ? wall - c->created_wall : 0;
    c->created_ms = now > age ? now - age : 0;
    if (c->state != CMD_QUEUED && !cmd_final(c->state))
        c->first_sent_ms = c->sent_ms = now;
    insert_locked(st, c);
    if (c->seq > st->next_seq)
        st->next_seq = c->seq;
    if (c->group > st->next_group)
        st->next_group = c->group;
    return 0;
}

/* ---- sending (the device's home worker) ---- */

static size_t put_prop_bin(uint8_t *p, uint8_t id, const char *s, size_t n)
{
    p[0] = id;
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    memcpy(p + 3, s, n);
    return 3 + n;
}

/* Send c to its connected session s (w is its home); st->mu held. */
static void send_locked(module_inst_t *mi, worker_t *w, cmd_t *c, sess_t *s, uint64_t now)
{
    const cmd_conf_t *cf = mi->conf;
    cmd_state_st *st = mi->state;
    char topic[512], reply[512];
    int tl = snprintf(topic, sizeof(topic), "%s/%s/%s", cf->prefix, c->device, c->name);
    int rl = snprintf(reply, sizeof(reply), "%s/%s/reply", cf->prefix, c->device);
    if (tl <= 0 || (size_t)tl >= sizeof(topic) || rl <= 0 || (size_t)rl >= sizeof(reply))
        return; /* refused at POST (lengths) */
    json_t *pl = json_object();
    json_object_set_new(pl, "id", json_string(c->id));
    json_object_set_new(pl, "name", json_string(c->name));
    json_t *params = json_loads(c->params, JSON_DECODE_ANY, NULL);
    json_object_set_new(pl, "params", params ? params : json_null());
    /* for MQTT 3.1.1 devices, which get no properties */
    char r311[560];
    snprintf(r311, sizeof(r311), "%s/%s", reply, c->id);
    json_object_set_new(pl, "reply_topic", json_string(r311));
    char *payload = json_dumps(pl, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(pl);
    if (payload == NULL)
        return;
    uint8_t props[600];
    size_t pn = put_prop_bin(props, 0x08, reply, (size_t)rl);   /* Response Topic */
    pn += put_prop_bin(props + pn, 0x09, c->id, strlen(c->id)); /* Correlation Data */
    msg_t *m = msg_new_v5((const uint8_t *)topic, (uint16_t)tl, props, (uint32_t)pn,
                          (const uint8_t *)payload, (uint32_t)strlen(payload), c->qos, 0, 0);
    free(payload);
    m->flags |= MSG_F_COMMAND;
    c->attempts++;
    c->sent_ms = now;
    if (c->first_sent_ms == 0)
        c->first_sent_ms = now;
    cmd_set_state_locked(st, c, CMD_SENT, w);
    sess_deliver(w, s, m, c->qos, 0);
    msg_unref(&m);
    if (c->qos == 0)
        cmd_set_state_locked(st, c, CMD_DELIVERED, w); /* QoS 0: delivered when sent */
}

static sess_t *connected_session(worker_t *w, const char *device)
{
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)device, strlen(device));
    return s && s->ep ? s : NULL;
}

/* The device's session is not connected here: it may live on another
 * worker now (a session that moved to its traffic's worker, migrate.h);
 * the command follows it, sent by that worker's next pass.  Under mu. */
static void follow_home(worker_t *w, cmd_t *c)
{
    if (w->srv->homes == NULL) /* sessions never move */
        return;
    uint32_t h = worker_home(w->srv, (const uint8_t *)c->device, strlen(c->device));
    if (h != w->id)
        c->home = h;
}

/* One pass over w's commands: send, resend, end. */
static void scan(module_inst_t *mi, worker_t *w, uint64_t only_seq)
{
    cmd_state_st *st = mi->state;
    pthread_mutex_lock(&st->mu);
    /* read under the lock: a command an API thread made since (created_ms
     * after a `now` read before) would look 2^64 ms old, and expire */
    uint64_t now = cmd_mono_ms();
    for (size_t i = 0; i < st->n; i++) {
        cmd_t *c = st->v[i];
        if (c->home != w->id || cmd_final(c->state) || (only_seq && c->seq != only_seq))
            continue;
        if (c->state == CMD_QUEUED) {
            if (now > c->created_ms && now - c->created_ms >= c->expiry) {
                cmd_set_state_locked(st, c, CMD_EXPIRED, w);
                continue;
            }
            if (c->grp && (!c->grp->ready || c->grp->active >= c->grp->concurrency))
                continue; /* the group's limits: it goes out as others end */
            sess_t *s = connected_session(w, c->device);
            if (s && (c->grp == NULL || cmd_group_may_send_locked(c->grp, now)))
                send_locked(mi, w, c, s, now);
            else if (s == NULL)
                follow_home(w, c);
            continue;
        }
        if (now - c->first_sent_ms >= c->reply_timeout) {
            cmd_set_state_locked(st, c, CMD_TIMED_OUT, w);
            continue;
        }
        if (c->state == CMD_SENT && c->attempts <= c->retries &&
            now - c->sent_ms >= c->retry_interval) {
            sess_t *s = connected_session(w, c->device);
            if (s)
                send_locked(mi, w, c, s, now);
            else
                follow_home(w, c);
        }
    }
    pthread_mutex_unlock(&st->mu);
}

static void run_item(worker_t *w, inbox_item_t *it)
{
    module_inst_t *mi = it->ptr;
    if (it->flags) { /* command_status for a change an API thread made (2: new) */
        cmd_state_st *st = mi->state;
        pthread_mutex_lock(&st->mu);
        for (size_t i = st->n; i-- > 0;)
            if (st->v[i]->seq == it->sid) {
                emit_locked(w, st->v[i], (cmd_state_t)it->qos);
                break;
            }
        pthread_mutex_unlock(&st->mu);
        if (it->flags == 1)
            return;
    }
    scan(mi, w, it->sid);
}

static uint64_t cmd_tick(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)ctx;
    scan(mi, w, 0);
    return CMD_TICK_MS;
}

/* ---- acknowledgements and replies (any worker) ---- */

/* The command id of one of our payloads: {"id":"c...",... */
static int payload_id(const msg_t *m, char *out, size_t size)
{
    static const char pre[] = "{\"id\":\"";
    const char *p = (const char *)msg_payload(m);
    size_t n = m->payload_len, k = sizeof(pre) - 1;
    if (n <= k || memcmp(p, pre, k) != 0)
        return -1;
    size_t j = 0;
    for (size_t i = k; i < n && p[i] != '"'; i++) {
        if (j + 1 >= size)
            return -1;
        out[j++] = p[i];
    }
    out[j] = 0;
    return 0;
}

static void on_acked(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    (void)kind;
    module_inst_t *mi = user;
    cmd_state_st *st = mi->state;
    const event_acked_t *e = data;
    char id[24];
    if (e->msg == NULL || !(e->msg->flags & MSG_F_COMMAND) || e->reason_code >= 0x80 ||
        payload_id(e->msg, id, sizeof(id)) < 0)
        return;
    pthread_mutex_lock(&st->mu);
    cmd_t *c = find_locked(st, id);
    if (c && c->state == CMD_SENT)
        cmd_set_state_locked(st, c, CMD_DELIVERED, w);
    pthread_mutex_unlock(&st->mu);
}

/* The Correlation Data of a property block, or NULL. */
static const uint8_t *correlation(const msg_t *m, size_t *len)
{
    const uint8_t *p = msg_props(m), *end = p + m->props_len;
    while (p < end) {
        uint8_t id = *p++;
        switch (id) {
        case 0x01: /* payload format */
            p += 1;
            break;
        case 0x03: /* content type, response topic, correlation data */
        case 0x08:
        case 0x09: {
            if (end - p < 2)
                return NULL;
            size_t n = (size_t)p[0] << 8 | p[1];
            if ((size_t)(end - p) < 2 + n)
                return NULL;
            if (id == 0x09) {
                *len = n;
                return p + 2;
            }
            p += 2 + n;
            break;
        }
        case 0x26: /* user property: two strings */
            for (int k = 0; k < 2; k++) {
                if (end - p < 2)
                    return NULL;
                size_t n = (size_t)p[0] << 8 | p[1];
                p += 2 + n;
            }
            break;
        default:
            return NULL; /* not kept by msg_t (msg.h) */
        }
    }
    return NULL;
}

static void on_reply(worker_t *w, router_consumer_t *rc, msg_t *m, uint8_t qos, uint8_t flags,
                     void *user)
{
    (void)rc;
    (void)qos;
    (void)flags;
    module_inst_t *mi = user;
    const cmd_conf_t *cf = mi->conf;
    cmd_state_st *st = mi->state;
    /* PREFIX/{device}/reply[/{cmd id}] */
    const char *t = (const char *)msg_topic(m);
    size_t tl = m->topic_len, pl = strlen(cf->prefix);
    if (tl <= pl + 1 || memcmp(t, cf->prefix, pl) != 0 || t[pl] != '/')
        return;
    const char *dev = t + pl + 1, *slash = memchr(dev, '/', tl - pl - 1);
    if (slash == NULL || (size_t)(t + tl - slash) < 6 || memcmp(slash + 1, "reply", 5) != 0)
        return;
    size_t dl = (size_t)(slash - dev);
    /* only the device itself answers for its commands */
    const char *from = m->origin ? m->origin->client_id : NULL;
    if (from == NULL || strlen(from) != dl || memcmp(from, dev, dl) != 0)
        return;
    char id[24] = "";
    const char *rest = slash + 1 + 5; /* after "reply" */
    size_t restn = (size_t)(t + tl - rest);
    if (restn > 1 && rest[0] == '/' && restn - 1 < sizeof(id)) {
        memcpy(id, rest + 1, restn - 1);
        id[restn - 1] = 0;
    } else {
        size_t cl = 0;
        const uint8_t *cd = correlation(m, &cl);
        if (cd && cl < sizeof(id)) {
            memcpy(id, cd, cl);
            id[cl] = 0;
        }
    }
    json_t *j = json_loadb((const char *)msg_payload(m), m->payload_len, 0, NULL);
    if (id[0] == 0 && j && json_is_string(json_object_get(j, "id")))
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "id")));
    const char *status = j ? json_string_value(json_object_get(j, "status")) : NULL;
    pthread_mutex_lock(&st->mu);
    cmd_t *c = id[0] ? find_locked(st, id) : NULL;
    if (c && strcmp(c->device, from) == 0 && !cmd_final(c->state) && c->state != CMD_QUEUED) {
        if (status && (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0)) {
            json_t *r = json_object_get(j, "result");
            json_decref(c->result);
            c->result = r ? json_incref(r) : NULL;
            cmd_set_state_locked(st, c, status[0] == 's' ? CMD_SUCCEEDED : CMD_FAILED, w);
        } else if (c->state < CMD_ACKED) {
            cmd_set_state_locked(st, c, CMD_ACKED, w);
        }
    }
    pthread_mutex_unlock(&st->mu);
    json_decref(j);
}

/* ---- the API (API threads) ---- */

static int valid_level(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && strpbrk(s, "/+#") == NULL;
}

static int get_ms(json_t *body, const char *key, uint32_t def, uint32_t min, uint32_t max,
                  uint32_t *out)
{
    json_t *v = json_object_get(body, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return -1;
    double sec = json_number_value(v); /* seconds */
    if (sec * 1000.0 < min || sec * 1000.0 > max)
        return -1;
    *out = (uint32_t)(sec * 1000.0);
    return 0;
}

/* Room for one more: evict the oldest final command, or -1 when all are
 * live. */
static int make_room_locked(cmd_state_st *st, size_t max)
{
    if (st->n < max)
        return 0;
    for (size_t i = 0; i < st->n; i++)
        if (cmd_final(st->v[i]->state)) {
            cmd_persist(st->srv, st->v[i], 1, 0);
            cmd_free(st, st->v[i]);
            memmove(st->v + i, st->v + i + 1, (st->n - i - 1) * sizeof(*st->v));
            st->n--;
            return 0;
        }
    return -1;
}

/* commands_int.h */
int cmd_create(module_inst_t *mi, const char *device, json_t *b, cmd_group_t *grp,
               store_batch_t *batch, json_t **out)
{
    const cmd_conf_t *cf = mi->conf;
    cmd_state_st *st = mi->state;
    int status = 0;
    const char *name = json_string_value(json_object_get(b, "name"));
    if (name == NULL || !valid_level(name, 128)) {
        status = module_api_error(out, 400, "bad_request",
                                  "name: a string of 1..128 bytes without '/', '+', '#'");
        goto cleanup;
    }
    json_t *qv = json_object_get(b, "qos"), *rv = json_object_get(b, "retries");
    json_int_t qos = qv ? (json_is_integer(qv) ? json_integer_value(qv) : -1) : 1;
    json_int_t retries = rv ? (json_is_integer(rv) ? json_integer_value(rv) : -1) : cf->retries;
    uint32_t rto, exp, rint;
    if (qos < 0 || qos > 2 || retries < 0 || retries > 100 ||
        get_ms(b, "reply_timeout", cf->reply_timeout, 100, 86400000, &rto) < 0 ||
        get_ms(b, "expiry", cf->expiry, 100, 2000000000, &exp) < 0 ||
        get_ms(b, "retry_interval", cf->retry_interval, 100, 86400000, &rint) < 0) {
        status = module_api_error(out, 400, "bad_request",
                                  "qos 0..2, retries 0..100, reply_timeout, expiry and "
                                  "retry_interval in seconds (>= 0.1)");
        goto cleanup;
    }
    json_t *params = json_object_get(b, "params");
    char *ptext = json_dumps(params ? params : json_null(),
                             JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    cmd_t *c = an_calloc(1, sizeof(*c));
    c->device = strdup(device);
    c->name = strdup(name);
    c->params = ptext;
    c->qos = (uint8_t)qos;
    c->retries = (uint32_t)retries;
    c->reply_timeout = rto;
    c->expiry = exp;
    c->retry_interval = rint;
    c->created_ms = cmd_mono_ms();
    c->created_wall = c->updated_wall = an_wall_ms();
    c->home = worker_home(mi->srv, (const uint8_t *)device, strlen(device));
    c->group = grp ? grp->seq : 0;
    pthread_mutex_lock(&st->mu);
    c->seq = ++st->next_seq;
    pthread_mutex_unlock(&st->mu);
    snprintf(c->id, sizeof(c->id), "c%" PRIx64, c->seq);
    if (batch == NULL)
        cmd_persist(mi->srv, c, 0, 1); /* before the answer: a 202 survives a crash */
    pthread_mutex_lock(&st->mu);
    if (make_room_locked(st, cf->max_commands) < 0) {
        pthread_mutex_unlock(&st->mu);
        if (batch == NULL)
            cmd_persist(mi->srv, c, 1, 0);
        cmd_free(st, c);
        status = module_api_error(out, 503, "full", "%" PRIu32 " commands are in progress",
                                  cf->max_commands);
        goto cleanup;
    }
    if (grp) {
        c->grp = grp;
        grp->refs++;
    }
    insert_locked(st, c);
    st->by_state[CMD_QUEUED]++;
    uint64_t seq = c->seq;
    uint32_t home = c->home;
    *out = json_pack("{s:s, s:s}", "id", c->id, "status", "queued");
    if (batch && mi->srv->store) {
        char key[CMD_KEY_PREFIX_LEN + 8];
        size_t kl = cmd_key(c->seq, key);
        json_t *o = cmd_record(c);
        char *v = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        store_batch_put(batch, key, kl, v, strlen(v));
        free(v);
    }
    pthread_mutex_unlock(&st->mu);
    if (batch) { /* a group: the caller stores them all, then kicks the workers */
        if (event_wanted(mi->srv, EVENT_COMMAND_STATUS)) {
            inbox_vec_t v = {0};
            inbox_item_t it = {
                .kind = WM_COMMANDS, .flags = 1, .qos = CMD_QUEUED, .sid = seq, .ptr = mi};
            inbox_vec_push(&v, &it);
            inbox_post(&mi->srv->workers[home].inbox, &v);
            inbox_vec_free(&v);
        }
        return 202;
    }
    /* the send, on the device's home worker */
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_COMMANDS,
                       .flags = event_wanted(mi->srv, EVENT_COMMAND_STATUS) ? 2 : 0,
                       .qos = CMD_QUEUED,
                       .sid = seq,
                       .ptr = mi};
    inbox_vec_push(&v, &it);
    inbox_post(&mi->srv->workers[home].inbox, &v);
    inbox_vec_free(&v);
    status = 202;
cleanup:
    return status;
}

static int api_post(module_inst_t *mi, const char *device, const module_api_req_t *req,
                    json_t **out)
{
    json_t *b = req->body ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
    int status = json_is_object(b)
                     ? cmd_create(mi, device, b, NULL, NULL, out)
                     : module_api_error(out, 400, "bad_request", "the body is not a JSON object");
    json_decref(b);
    return status;
}

int cmd_parse_wait(const char *s, uint32_t *ms)
{
    char *end;
    double d = strtod(s, &end);
    if (end == s || d < 0)
        return -1;
    if (strcmp(end, "ms") == 0)
        d /= 1000.0;
    else if (*end && strcmp(end, "s") != 0)
        return -1;
    *ms = d * 1000.0 > CMD_WAIT_MAX_MS ? CMD_WAIT_MAX_MS : (uint32_t)(d * 1000.0);
    return 0;
}

static int api_get_one(module_inst_t *mi, const char *id, const module_api_req_t *req, json_t **out)
{
    cmd_state_st *st = mi->state;
    uint32_t wait = 0;
    const char *ws = module_api_query(req, "wait");
    if (ws && cmd_parse_wait(ws, &wait) < 0)
        return module_api_error(out, 400, "bad_request", "wait: a duration (\"10s\", \"500ms\")");
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait / 1000u;
    dl.tv_nsec += (long)(wait % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&st->mu);
    cmd_t *c = find_locked(st, id);
    if (c && wait && !cmd_final(c->state) && st->waiters < CMD_WAITERS_MAX) {
        /* one long poll at a time: the API's other thread keeps serving;
         * a second one answers at once (the client polls again) */
        st->waiters++;
        while (c && !cmd_final(c->state) && !st->stopping) {
            if (pthread_cond_timedwait(&st->cv, &st->mu, &dl) == ETIMEDOUT)
                break;
            c = find_locked(st, id); /* may have been evicted */
        }
        st->waiters--;
    }
    int status = 200;
    if (c)
        *out = cmd_json(c);
    else
        status = module_api_error(out, 404, "not_found", "no command %s", id);
    pthread_mutex_unlock(&st->mu);
    return status;
}

static int api_commands(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    cmd_state_st *st = mi->state;
    if (st == NULL)
        return module_api_error(out, 409, "commands_disabled",
                                "commands are off (commands.enabled)");
    const char *id = req->tail;
    if (!valid_level(id, 23))
        return module_api_error(out, 404, "not_found", "no command %s", id);
    if (strcmp(req->method, "GET") == 0)
        return api_get_one(mi, id, req, out);
    /* DELETE: cancel */
    int status = 200;
    pthread_mutex_lock(&st->mu);
    cmd_t *c = find_locked(st, id);
    if (c == NULL)
        status = module_api_error(out, 404, "not_found", "no command %s", id);
    else if (cmd_final(c->state))
        status = module_api_error(out, 409, "final", "command %s is %s already", id,
                                  cmd_state_names[c->state]);
    else {
        cmd_set_state_locked(st, c, CMD_CANCELLED, NULL);
        *out = cmd_json(c);
    }
    pthread_mutex_unlock(&st->mu);
    return status;
}

static int api_devices(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    cmd_state_st *st = mi->state;
    if (st == NULL)
        return module_api_error(out, 409, "commands_disabled",
                                "commands are off (commands.enabled)");
    /* {device}/commands */
    const char *t = req->tail, *slash = strrchr(t, '/');
    if (slash == NULL || strcmp(slash, "/commands") != 0 || slash == t)
        return module_api_error(out, 404, "not_found", "no endpoint devices/%s", t);
    char device[256];
    size_t dl = (size_t)(slash - t);
    if (dl >= sizeof(device) || memchr(t, '/', dl) || memchr(t, '+', dl) || memchr(t, '#', dl))
        return module_api_error(out, 400, "bad_request",
                                "a client id of 1..255 bytes "
                                "without '/', '+', '#'");
    memcpy(device, t, dl);
    device[dl] = 0;
    if (strcmp(req->method, "POST") == 0)
        return api_post(mi, device, req, out);
    json_t *items = json_array();
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->v[i]->device, device) == 0)
            json_array_append_new(items, cmd_json(st->v[i]));
    pthread_mutex_unlock(&st->mu);
    *out = json_pack("{s:o}", "data", items);
    return 200;
}

void cmd_kick_all(module_inst_t *mi)
{
    for (uint32_t i = 0; i < mi->srv->nworkers; i++) {
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_COMMANDS, .sid = 0, .ptr = mi};
        inbox_vec_push(&v, &it);
        inbox_post(&mi->srv->workers[i].inbox, &v);
        inbox_vec_free(&v);
    }
}

static const module_api_route_t cmd_routes[] = {
    {"devices/*/commands", 0, MODULE_API_GET | MODULE_API_POST, api_devices},
    {"commands/", 1, MODULE_API_GET | MODULE_API_DELETE, api_commands},
    {"groups/commands", 1, MODULE_API_GET | MODULE_API_POST | MODULE_API_DELETE, cmd_api_groups},
    {NULL, 0, 0, NULL},
};

static void cmd_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    cmd_state_st *st = mi->state;
    if (st == NULL)
        return;
    uint64_t now[CMD_STATES] = {0}, ever[CMD_STATES];
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->n; i++)
        now[st->v[i]->state]++;
    memcpy(ever, st->by_state, sizeof(ever));
    pthread_mutex_unlock(&st->mu);
    module_metrics_family(mm, "antenna_commands", "gauge", "Commands kept in memory, by status");
    for (int s = 0; s < CMD_STATES; s++)
        module_metrics_printf(mm, "antenna_commands{status=\"%s\"} %" PRIu64 "\n",
                              cmd_state_names[s], now[s]);
    module_metrics_family(mm, "antenna_commands_status_total", "counter",
                          "Commands that reached each status");
    for (int s = 0; s < CMD_STATES; s++)
        module_metrics_printf(mm, "antenna_commands_status_total{status=\"%s\"} %" PRIu64 "\n",
                              cmd_state_names[s], ever[s]);
    module_metrics_family(mm, "antenna_commands_in_flight", "gauge",
                          "Commands sent and waiting for a reply");
    module_metrics_printf(mm, "antenna_commands_in_flight %" PRIu64 "\n",
                          now[CMD_SENT] + now[CMD_DELIVERED] + now[CMD_ACKED]);
}

/* ---- life cycle ---- */

static void drop_item(inbox_item_t *it)
{
    (void)it; /* carries nothing of its own */
}

static int cmd_init(module_inst_t *mi)
{
    const cmd_conf_t *cf = mi->conf;
    if (!cf->enabled)
        return 0;
    cmd_state_st *st = an_calloc(1, sizeof(*st));
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    mi->state = st;
    st->srv = mi->srv;
    st->mi = mi;
    if (mi->srv->store) {
        int rc = store_scan(mi->srv->store, CMD_KEY_PREFIX, CMD_KEY_PREFIX_LEN, load_one, st);
        if (rc < 0)
            log_warn("commands: reading the stored commands: %s", store_strerror(rc));
        size_t live = 0;
        for (size_t i = 0; i < st->n; i++) {
            cmd_t *c = st->v[i];
            c->home = worker_home(mi->srv, (const uint8_t *)c->device, strlen(c->device));
            live += !cmd_final(c->state);
        }
        if (st->n)
            log_info("commands: %zu stored command(s), %zu in progress", st->n, live);
    }
    static const worker_inbox_kind_t kind = {.run = run_item, .drop = drop_item};
    worker_inbox_register(mi->srv, WM_COMMANDS, &kind);
    static const consumer_ops_t ops = {.on_message = on_reply, .free = NULL};
    st->consumer = router_consumer_new(mi->srv, "commands", &ops, mi);
    char f[96];
    snprintf(f, sizeof(f), "%s/+/reply", cf->prefix);
    if (router_consumer_subscribe(st->consumer, f, 1) < 0)
        goto fail;
    snprintf(f, sizeof(f), "%s/+/reply/+", cf->prefix);
    if (router_consumer_subscribe(st->consumer, f, 1) < 0)
        goto fail;
    if (event_listen_msgs(&mi->srv->events, EVENT_MESSAGE_ACKED, MSG_F_COMMAND, on_acked, mi) < 0)
        goto fail;
    if (cf->acl && cmd_acl_register(mi->srv, cf) < 0) {
        log_error("commands: the prefix %s: another module guards these topics", cf->prefix);
        return -1;
    }
    return 0;
fail:
    log_error("commands: cannot subscribe to the replies under %s", cf->prefix);
    return -1;
}

static int cmd_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    (void)ctx;
    if (mi->state)
        module_tick_arm(w, mi, CMD_TICK_MS);
    return 0;
}

static int cmd_start(module_inst_t *mi)
{
    const cmd_conf_t *cf = mi->conf;
    if (mi->state)
        log_info("commands: on, topics %s/{client id}/{name}, replies on %s/{client id}/reply",
                 cf->prefix, cf->prefix);
    return 0;
}

static void cmd_stop(module_inst_t *mi)
{
    cmd_state_st *st = mi->state;
    if (st == NULL)
        return;
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void cmd_free_mod(module_inst_t *mi)
{
    cmd_state_st *st = mi->state;
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++)
        cmd_free(st, st->v[i]);
    free(st->v);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
    mi->state = NULL;
}

const module_t commands_module = {
    .name = "commands",
    .section = "commands",
    .conf_size = sizeof(cmd_conf_t),
    .conf_defaults = cmd_defaults,
    .conf_load = cmd_load,
    .conf_walk = cmd_walk,
    .init = cmd_init,
    .start = cmd_start,
    .stop = cmd_stop,
    .free = cmd_free_mod,
    .worker_init = cmd_worker_init,
    .tick = cmd_tick,
    .api_routes = cmd_routes,
    .metrics = cmd_metrics,
};
