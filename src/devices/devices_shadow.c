/* devices_shadow.c -- the device shadow (issue 18, docs/devices.md
 * "Shadow"): per device a `desired` and a `reported` JSON document, each
 * with a version and an update time, and their delta (the keys of desired
 * whose value differs from reported, recursively on objects).
 *
 * What it owns: the table of shadows (a JSON object id -> record, the
 * record also what the store keeps under "\0shd/" ID:
 *   {"desired", "reported", "vd", "vr", "ud", "ur", "dl"}
 * vd/vr the versions, ud/ur the update times in ms, dl: a delta message is
 * retained now), an internal consumer of the devices' reports and one inbox
 * kind (WM_DEVICES: a message to publish, posted to the device's home
 * worker).
 *
 * Topics (PREFIX is devices.shadow.topic_prefix, "$shadow"):
 *   PREFIX/{id}/delta              to the device, QoS 1, RETAINED: a device
 *                                  that subscribes later gets the current
 *                                  delta; an empty retained message clears
 *                                  it when desired and reported agree
 *   PREFIX/{id}/reported           from the device: {"state", "version"?}
 *   PREFIX/{id}/reported/accepted  | rejected: the answer
 *   PREFIX/{id}/get                from the device: any payload
 *   PREFIX/{id}/get/accepted       the whole shadow (as the API's GET)
 * Clients publish only PREFIX/{own client id}/reported and .../get: the
 * topic guard (router_guard, on the publisher's worker) refuses the
 * rest under PREFIX as an ACL denial (another device's topics, a forged
 * delta or answer).  The consumer checks the message's origin again.
 *
 * Threads.  Every shadow is under st->shadow->mu: the API threads (GET,
 * PUT/PATCH desired) and the workers (the consumer, on the worker that
 * routed the report) hold it for the in-memory change, the store batch's
 * submission (asynchronous, so the store sees the changes in the mutex's
 * order) and the posting of the messages to publish (so a device gets its
 * deltas in order, all through its home worker's inbox).  An API write
 * then waits for its batch's commit outside the mutex (a 2xx survives a
 * restart); a worker never waits.  Nothing runs per message except for the
 * consumer's topics; with devices.shadow.enabled false nothing is set up.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"
#include "devices_int.h"
#include "inbox.h"
#include "log.h"
#include "msg.h"
#include "router.h"
#include "sess.h"
#include "store.h"
#include "util.h"

#define SHD_KEY_PREFIX "\0shd/"
#define SHD_KEY_PREFIX_LEN 5u

typedef struct dev_shadow_s {
    pthread_mutex_t mu;
    json_t *docs; /* id -> record (above) */
    router_consumer_t *consumer;
} dev_shadow_t;

/* ---- the documents (no state: unit-tested, tests/unit/test_devices_shadow.c) ---- */

void devices_shadow_merge(json_t *doc, const json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(doc, k);
            continue;
        }
        json_t *cur = json_object_get(doc, k);
        if (json_is_object(v)) {
            if (!json_is_object(cur)) {
                cur = json_object();
                json_object_set_new(doc, k, cur);
            }
            devices_shadow_merge(cur, v);
        } else {
            json_object_set_new(doc, k, json_deep_copy(v));
        }
    }
}

json_t *devices_shadow_delta(const json_t *desired, const json_t *reported)
{
    json_t *d = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)desired, k, v)
    {
        json_t *r = json_object_get(reported, k);
        if (json_is_object(v) && json_is_object(r)) {
            json_t *sub = devices_shadow_delta(v, r);
            if (json_object_size(sub))
                json_object_set_new(d, k, sub);
            else
                json_decref(sub);
        } else if (r == NULL || !json_equal(v, r)) {
            json_object_set_new(d, k, json_deep_copy(v));
        }
    }
    return d;
}

/* ---- records ---- */

static json_t *rec_get(dev_shadow_t *sh, const char *id, int create)
{
    json_t *r = json_object_get(sh->docs, id);
    if (r == NULL && create) {
        r = json_pack("{s:o,s:o,s:I,s:I,s:I,s:I,s:b}", "desired", json_object(), "reported",
                      json_object(), "vd", (json_int_t)0, "vr", (json_int_t)0, "ud", (json_int_t)0,
                      "ur", (json_int_t)0, "dl", 0);
        json_object_set_new(sh->docs, id, r);
    }
    return r;
}

static json_int_t rint_(const json_t *r, const char *k)
{
    return json_integer_value(json_object_get(r, k));
}

/* What the API's GET and PREFIX/{id}/get/accepted show. */
static json_t *rec_view(const char *id, const json_t *r)
{
    json_t *des = r ? json_object_get(r, "desired") : NULL;
    json_t *rep = r ? json_object_get(r, "reported") : NULL;
    json_t *empty = json_object();
    json_t *o = json_pack("{s:s,s:O,s:O,s:o,s:I,s:I,s:I,s:I}", "device", id, "desired",
                          des ? des : empty, "reported", rep ? rep : empty, "delta",
                          devices_shadow_delta(des ? des : empty, rep ? rep : empty),
                          "version_desired", r ? rint_(r, "vd") : 0, "version_reported",
                          r ? rint_(r, "vr") : 0, "updated_desired_ms", r ? rint_(r, "ud") : 0,
                          "updated_reported_ms", r ? rint_(r, "ur") : 0);
    json_decref(empty);
    json_int_t ud = r ? rint_(r, "ud") : 0, ur = r ? rint_(r, "ur") : 0;
    json_object_set_new(o, "updated_ms", json_integer(ud > ur ? ud : ur));
    return o;
}

/* The record's store write, submitted (sh->mu held: the store's order is
 * the mutex's); done/ud as store_submit.  -1: not submitted. */
static int rec_store(devices_state_t *st, const char *id, const json_t *r, store_done_fn done,
                     void *ud)
{
    if (st->srv->store == NULL)
        return 1; /* nothing to wait for */
    devices_buf_t k = {0};
    devices_buf_add(&k, SHD_KEY_PREFIX, SHD_KEY_PREFIX_LEN);
    devices_buf_add(&k, id, strlen(id));
    store_batch_t *b = store_batch_new();
    if (r) {
        char *v = json_dumps(r, JSON_COMPACT);
        store_batch_put(b, k.p, k.len, v, strlen(v));
        free(v);
    } else {
        store_batch_del(b, k.p, k.len);
    }
    free(k.p);
    int rc = store_submit(st->srv->store, b, done, ud);
    if (rc < 0) {
        log_warn("devices: storing the shadow of '%.200s': %s", id, store_strerror(rc));
        return -1;
    }
    return 0;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, err;
} waiter_t;

static void waiter_done(void *ud, int err)
{
    waiter_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* ---- publishing (WM_DEVICES: a message to route, on the device's home worker) ---- */

static void run_item(worker_t *w, inbox_item_t *it)
{
    msg_t *m = it->ptr;
    size_t n = router_publish(w, m, NULL);
    if (n == ROUTER_NO_RETAIN || n == ROUTER_REFUSED)
        log_warn("devices: the shadow message on '%.*s' was refused (%s)", (int)m->topic_len,
                 (const char *)msg_topic(m),
                 n == ROUTER_NO_RETAIN ? "limits.max_retained" : "a full queue");
    msg_unref(&m);
}

static void drop_item(inbox_item_t *it)
{
    msg_t *m = it->ptr;
    msg_unref(&m);
}

/* Publish PREFIX/{id}/{suffix} with payload o (NULL: empty) at QoS 1
 * through the device's home worker (sh->mu held: the posting order is
 * the mutex's). */
static void post(devices_state_t *st, const char *id, const char *suffix, const json_t *o,
                 int retain)
{
    const devices_conf_t *c = st->conf;
    devices_buf_t t = {0};
    devices_buf_add(&t, c->shadow_prefix, strlen(c->shadow_prefix));
    devices_buf_add(&t, "/", 1);
    devices_buf_add(&t, id, strlen(id));
    devices_buf_add(&t, "/", 1);
    devices_buf_add(&t, suffix, strlen(suffix));
    char *p = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (t.len <= 65535) {
        msg_t *m = msg_new((const uint8_t *)t.p, (uint16_t)t.len, (const uint8_t *)p,
                           p ? (uint32_t)strlen(p) : 0, 1, (uint8_t)retain);
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_DEVICES, .ptr = m};
        inbox_vec_push(&v, &it);
        uint32_t home = worker_home(st->srv, (const uint8_t *)id, strlen(id));
        inbox_post(&st->srv->workers[home].inbox, &v);
        inbox_vec_free(&v);
    }
    free(p);
    free(t.p);
}

/* After a change of r: the delta to the device (retained), or the retained
 * delta cleared when none is left (sh->mu held). */
static void post_delta(devices_state_t *st, const char *id, json_t *r, uint64_t now)
{
    json_t *d = devices_shadow_delta(json_object_get(r, "desired"), json_object_get(r, "reported"));
    if (json_object_size(d)) {
        json_t *o = json_pack("{s:O,s:I,s:I}", "state", d, "version", rint_(r, "vd"), "timestamp",
                              (json_int_t)now);
        post(st, id, "delta", o, 1);
        json_decref(o);
        json_object_set_new(r, "dl", json_true());
    } else if (json_is_true(json_object_get(r, "dl"))) {
        post(st, id, "delta", NULL, 1);
        json_object_set_new(r, "dl", json_false());
    }
    json_decref(d);
}

/* ---- the device's side: reports and gets (the consumer, on a worker) ---- */

static void reject(devices_state_t *st, const char *id, int code, const char *why,
                   json_int_t version)
{
    json_t *o = json_pack("{s:i,s:s,s:I}", "code", code, "error", why, "version", version);
    post(st, id, "reported/rejected", o, 0);
    json_decref(o);
}

static void on_report(devices_state_t *st, const char *id, const msg_t *m)
{
    dev_shadow_t *sh = st->shadow;
    json_error_t je;
    json_t *in = json_loadb((const char *)msg_payload(m), m->payload_len, 0, &je);
    json_t *state = json_object_get(in, "state"), *ver = json_object_get(in, "version");
    uint64_t now = an_wall_ms();
    pthread_mutex_lock(&sh->mu);
    json_t *r = rec_get(sh, id, 0);
    json_int_t vr = r ? rint_(r, "vr") : 0;
    if (!json_is_object(state) || (ver && !json_is_integer(ver))) {
        reject(st, id, 400,
               in ? "the body is {\"state\": {...}, \"version\": N}" : "the payload is not JSON",
               vr);
        goto done;
    }
    if (ver && json_integer_value(ver) != vr) {
        reject(st, id, 409, "version conflict", vr);
        goto done;
    }
    r = rec_get(sh, id, 1);
    json_t *rep = json_deep_copy(json_object_get(r, "reported"));
    devices_shadow_merge(rep, state);
    char *text = json_dumps(rep, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    free(text);
    if (len > st->conf->shadow_max_bytes) {
        json_decref(rep);
        reject(st, id, 413, "reported is over devices.shadow.max_bytes", vr);
        goto done;
    }
    json_object_set_new(r, "reported", rep);
    json_object_set_new(r, "vr", json_integer(vr + 1));
    json_object_set_new(r, "ur", json_integer((json_int_t)now));
    json_t *ok =
        json_pack("{s:O,s:I,s:I}", "state", rep, "version", vr + 1, "timestamp", (json_int_t)now);
    post(st, id, "reported/accepted", ok, 0);
    json_decref(ok);
    post_delta(st, id, r, now);
    rec_store(st, id, r, NULL, NULL);
done:
    pthread_mutex_unlock(&sh->mu);
    json_decref(in);
}

static void on_message(worker_t *w, router_consumer_t *rc, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user)
{
    AN_UNUSED(w);
    AN_UNUSED(rc);
    AN_UNUSED(qos);
    AN_UNUSED(flags);
    devices_state_t *st = user;
    const char *t = (const char *)msg_topic(m);
    size_t tl = m->topic_len, pl = strlen(st->conf->shadow_prefix);
    if (tl <= pl + 1 || t[pl] != '/')
        return;
    const char *id0 = t + pl + 1, *slash = memchr(id0, '/', tl - pl - 1);
    if (slash == NULL)
        return;
    size_t il = (size_t)(slash - id0);
    const char *from = m->origin ? m->origin->client_id : NULL;
    if (from == NULL || strlen(from) != il || memcmp(from, id0, il) != 0) {
        log_info("devices: a shadow message on '%.*s' from client '%.200s' ignored: only the "
                 "device itself reports",
                 (int)AN_MIN(tl, 300u), t, from ? from : "-");
        return;
    }
    const char *what = slash + 1;
    size_t wl = (size_t)(t + tl - what);
    pthread_rwlock_rdlock(&st->lock);
    int known = devices_find(st, from, NULL) != NULL;
    pthread_rwlock_unlock(&st->lock);
    if (!known) {
        log_info("devices: a shadow message from '%.200s', not in the registry: ignored", from);
        return;
    }
    if (wl == 8 && memcmp(what, "reported", 8) == 0) {
        on_report(st, from, m);
    } else if (wl == 3 && memcmp(what, "get", 3) == 0) {
        pthread_mutex_lock(&st->shadow->mu);
        json_t *o = rec_view(from, rec_get(st->shadow, from, 0));
        post(st, from, "get/accepted", o, 0);
        pthread_mutex_unlock(&st->shadow->mu);
        json_decref(o);
    }
}

/* The topic guard (router.h): under PREFIX/, a client publishes only to
 * PREFIX/{its client id}/reported and .../get. */
static int guard(const router_who_t *who, const uint8_t *topic, size_t len, void *user)
{
    const devices_state_t *st = user;
    size_t pl = strlen(st->conf->shadow_prefix); /* the router matched PREFIX/ */
    size_t cl = who->id_len;
    const uint8_t *rest = topic + pl + 1;
    size_t rl = len - pl - 1;
    if (rl <= cl || memcmp(rest, who->client_id, cl) != 0 || rest[cl] != '/')
        return 0;
    rest += cl + 1;
    rl -= cl + 1;
    return (rl == 8 && memcmp(rest, "reported", 8) == 0) ||
           (rl == 3 && memcmp(rest, "get", 3) == 0);
}

/* ---- the API (API threads) ---- */

int devices_shadow_api(devices_state_t *st, const char *id, const char *verb,
                       const module_api_req_t *req, json_t **out)
{
    dev_shadow_t *sh = st->shadow;
    if (sh == NULL)
        return module_api_error(out, 409, "shadow_disabled",
                                "the device shadow is off (devices.shadow.enabled)");
    int get = strcmp(req->method, "GET") == 0;
    int desired = strcmp(verb, "shadow/desired") == 0;
    if (!(get && strcmp(verb, "shadow") == 0) &&
        !(desired && (strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0)))
        return module_api_error(out, 405, "method_not_allowed",
                                "GET .../shadow, PUT or PATCH .../shadow/desired");
    pthread_rwlock_rdlock(&st->lock);
    int known = devices_find(st, id, NULL) != NULL;
    pthread_rwlock_unlock(&st->lock);
    if (!known)
        return module_api_error(out, 404, "not_found", "no device %.200s", id);
    if (get) {
        pthread_mutex_lock(&sh->mu);
        *out = rec_view(id, rec_get(sh, id, 0));
        pthread_mutex_unlock(&sh->mu);
        return 200;
    }
    json_error_t je;
    json_t *in = req->body ? json_loadb(req->body, req->body_len, 0, &je) : NULL;
    json_t *state = json_object_get(in, "state"), *ver = json_object_get(in, "version");
    int status;
    if (!json_is_object(state) || (ver && !json_is_integer(ver))) {
        status = module_api_error(out, 400, "bad_request",
                                  "the body is {\"state\": {...}, \"version\": N}");
        goto done;
    }
    waiter_t wt = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    uint64_t now = an_wall_ms();
    pthread_mutex_lock(&sh->mu);
    json_t *r = rec_get(sh, id, 1);
    json_int_t vd = rint_(r, "vd");
    if (ver && json_integer_value(ver) != vd) {
        pthread_mutex_unlock(&sh->mu);
        *out = json_pack("{s:s,s:s,s:I}", "error",
                         "version conflict: the desired state is at "
                         "another version",
                         "code", "version_conflict", "version", vd);
        status = 409;
        goto done;
    }
    json_t *des = strcmp(req->method, "PATCH") == 0 ? json_deep_copy(json_object_get(r, "desired"))
                                                    : json_object();
    devices_shadow_merge(des, state);
    char *text = json_dumps(des, JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    free(text);
    if (len > st->conf->shadow_max_bytes) {
        pthread_mutex_unlock(&sh->mu);
        json_decref(des);
        status = module_api_error(out, 413, "too_large",
                                  "desired is %zu bytes, over devices.shadow.max_bytes (%u)", len,
                                  st->conf->shadow_max_bytes);
        goto done;
    }
    json_object_set_new(r, "desired", des);
    json_object_set_new(r, "vd", json_integer(vd + 1));
    json_object_set_new(r, "ud", json_integer((json_int_t)now));
    post_delta(st, id, r, now);
    int rc = rec_store(st, id, r, waiter_done, &wt);
    *out = rec_view(id, r);
    pthread_mutex_unlock(&sh->mu);
    if (rc == 0) {
        pthread_mutex_lock(&wt.mu);
        while (!wt.done)
            pthread_cond_wait(&wt.cv, &wt.mu);
        pthread_mutex_unlock(&wt.mu);
        rc = wt.err;
    }
    pthread_mutex_destroy(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    if (rc < 0) {
        json_decref(*out);
        status = module_api_error(out, 503, "store", "cannot store: %s", store_strerror(rc));
        goto done;
    }
    status = 200;
done:
    json_decref(in);
    return status;
}

void devices_shadow_forget(devices_state_t *st, const char *id)
{
    dev_shadow_t *sh = st->shadow;
    if (sh == NULL)
        return;
    pthread_mutex_lock(&sh->mu);
    json_t *r = rec_get(sh, id, 0);
    if (r) {
        if (json_is_true(json_object_get(r, "dl")))
            post(st, id, "delta", NULL, 1); /* the retained delta goes too */
        json_object_del(sh->docs, id);
        rec_store(st, id, NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&sh->mu);
}

/* ---- life cycle (main thread) ---- */

static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    dev_shadow_t *sh = ud;
    json_error_t je;
    json_t *r = json_loadb(v, vl, 0, &je);
    char *id = an_strndup((const char *)k + SHD_KEY_PREFIX_LEN, kl - SHD_KEY_PREFIX_LEN);
    if (r == NULL || !json_is_object(json_object_get(r, "desired")) ||
        !json_is_object(json_object_get(r, "reported")))
        log_warn("devices: a malformed shadow in the store (%.80s): skipped", id);
    else
        json_object_set(sh->docs, id, r);
    json_decref(r);
    free(id);
    return 0;
}

int devices_shadow_init(devices_state_t *st)
{
    if (!st->conf->shadow_enabled)
        return 0;
    dev_shadow_t *sh = an_calloc(1, sizeof(*sh));
    pthread_mutex_init(&sh->mu, NULL);
    sh->docs = json_object();
    st->shadow = sh;
    if (st->srv->store) {
        int rc = store_scan(st->srv->store, SHD_KEY_PREFIX, SHD_KEY_PREFIX_LEN, load_one, sh);
        if (rc < 0) {
            log_error("devices: cannot read the shadows from the store: %s", store_strerror(rc));
            return -1;
        }
    }
    static const worker_inbox_kind_t kind = {.run = run_item, .drop = drop_item};
    worker_inbox_register(st->srv, WM_DEVICES, &kind);
    static const consumer_ops_t ops = {.on_message = on_message, .free = NULL};
    sh->consumer = router_consumer_new(st->srv, "devices.shadow", &ops, st);
    char f[96];
    snprintf(f, sizeof(f), "%s/+/reported", st->conf->shadow_prefix);
    if (router_consumer_subscribe(sh->consumer, f, 1) < 0)
        goto fail;
    snprintf(f, sizeof(f), "%s/+/get", st->conf->shadow_prefix);
    if (router_consumer_subscribe(sh->consumer, f, 1) < 0)
        goto fail;
    snprintf(f, sizeof(f), "%s/", st->conf->shadow_prefix);
    if (router_guard(st->srv, f, &(router_guard_t){.publish = guard, .ud = st}) < 0) {
        log_error("devices: devices.shadow.topic_prefix %s: another module guards these topics",
                  st->conf->shadow_prefix);
        return -1;
    }
    log_info("devices: shadows on (%zu stored), topics %s/{id}/delta|reported|get",
             json_object_size(sh->docs), st->conf->shadow_prefix);
    return 0;
fail:
    log_error("devices: cannot subscribe to %s/+/reported", st->conf->shadow_prefix);
    return -1;
}

void devices_shadow_free(devices_state_t *st)
{
    dev_shadow_t *sh = st->shadow;
    if (sh == NULL)
        return;
    json_decref(sh->docs);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
    st->shadow = NULL;
}
