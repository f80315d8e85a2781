/* cl_owner.c -- the client-id registry (cl_int.h; docs/cluster.md
 * "Client-id ownership").
 *
 * /antenna/<name>/clients/<client id> = the owning node's name, under the
 * owner's lease.  A CONNECT is parked by the connect gate (proto.h) on its
 * home worker while this node claims the id:
 *
 *   worker      own_gate: a claim (cl_claim_t) and one etcd txn "create if
 *               absent, else read" (cl_etcd_call: pipelined, the worker never
 *               waits);
 *   etcd thread on_claim: created, or already ours under our lease: go on.
 *               Held by a node that is not a member (or by an older lease
 *               of ours): put with a compare on its mod_revision, then go on
 *               (or start again when someone was faster).  Held by a member:
 *               ask it over the link (cl_post to the link thread);
 *   link thread send_take: CL_F_OWN_TAKE {req, client id} to the owner; the
 *               claim waits in pending (OWN_TAKE_MS at most);
 *   owner       the link thread posts WM_CL_OWNER to the client's home worker
 *               (own_take): the connection closes with 0x8E (Session taken
 *               over), the session ends there, the claim is deleted with a
 *               compare on the owner's own name, then CL_F_OWN_GIVEN {req};
 *   link thread GIVEN: the claim starts again (create if absent), at most
 *               OWN_TRIES times; then 0x89 (Server busy).
 * The answer goes back to the worker with proto_gate_post.  An etcd error,
 * a member without a link, a take not answered: 0x88 (Server unavailable);
 * the client retries.
 *
 * Releases: a session that ends here (a clean session's connection closed,
 * a session expired) deletes its claim with a compare on this node's name
 * (event handlers, on the worker).  Otherwise claims die with the lease.
 *
 * Not built yet (docs/cluster.md, Status): the session's state does not
 * travel with the take (the old node ends it; the new one starts empty:
 * session present 0), and ids are not claimed again after a new lease.
 *
 * Threads: own_gate, own_take and the event handlers on workers; on_* on
 * the etcd thread; the pending list and the frames on the link thread.
 * Counters are relaxed atomics.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cl_etcd.h"
#include "cl_link_int.h"
#include "event.h"
#include "log.h"
#include "mqtt_props.h"
#include "proto.h"
#include "sess.h"
#include "util.h"

#define OWN_TRIES 4       /* claims after a take before giving up (0x89) */
#define OWN_TAKE_MS 5000  /* a take not answered within this: 0x88 */

typedef struct cl_claim_s {
    cl_t *cl;
    proto_gate_t *g;
    struct cl_claim_s *next; /* pending (link thread) */
    uint32_t req;
    int idx; /* the owner's node index */
    int tries;
    int64_t rev; /* the owner's key's mod_revision */
    char owner[CL_NAME_MAX];
    tw_timer_t timer;
    char key[];
} cl_claim_t;

/* A take from another node, for the client's home worker. */
typedef struct {
    cl_t *cl;
    int idx;
    uint32_t req;
    char id[];
} cl_take_t;

struct cl_owner_s {
    cl_t *cl;
    char prefix[CL_NAME_MAX + 32]; /* /antenna/<name>/clients/ */
    /* link thread */
    cl_claim_t *pending;
    uint32_t next_req;
    /* any thread */
    _Atomic uint64_t claims, created, stolen, takes_sent, takes_served, refused, released;
};

#define OWN_INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)

static char *own_key(cl_owner_t *o, const char *id)
{
    size_t n = strlen(o->prefix) + strlen(id) + 1;
    char *k = an_malloc(n);
    snprintf(k, n, "%s%s", o->prefix, id);
    return k;
}

/* ---- the claim ---- */

static void answer(cl_claim_t *cm, uint8_t rc5)
{
    cl_owner_t *o = cm->cl->owner;
    if (rc5)
        OWN_INC(o->refused);
    cm->g->refuse_rc5 = rc5;
    proto_gate_post(cm->g); /* frees cm through g->release, now or later */
}

static void claim_release(proto_gate_t *g)
{
    free(g->arg);
    g->arg = NULL;
}

static void on_claim(void *arg, const cl_etcd_res_t *res);

static void claim_send(cl_claim_t *cm)
{
    cl_t *cl = cm->cl;
    cl_etcd_t *e = cl_member_etcd(cl);
    int64_t lease = cl_member_lease(cl);
    if (e == NULL || lease == 0) {
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    OWN_INC(cl->owner->claims);
    if (cl_etcd_call(e, "/v3/kv/txn", cl_etcd_create_req(cm->key, cl->conf->node, lease), 0,
                     on_claim, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

/* Is `name` a member now (the API's copy of the member table)?  Its index,
 * or -1. */
static int member_index(cl_t *cl, const char *name)
{
    int idx = -1;
    pthread_mutex_lock(&cl->snap_mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->snap[i].used && cl->snap[i].member && strcmp(cl->snap[i].name, name) == 0) {
            idx = i;
            break;
        }
    pthread_mutex_unlock(&cl->snap_mu);
    return idx;
}

static void on_stolen(void *arg, const cl_etcd_res_t *res)
{
    cl_claim_t *cm = arg;
    if (res->err != CL_ETCD_OK) {
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    if (cl_etcd_txn_ok(res->json)) {
        OWN_INC(cm->cl->owner->stolen);
        answer(cm, 0);
        return;
    }
    if (++cm->tries > OWN_TRIES) { /* someone else was faster, again and again */
        answer(cm, MQTT_RC_SERVER_BUSY);
        return;
    }
    claim_send(cm);
}

static void take_timeout(tw_timer_t *t);

/* Link thread: ask the owner to let go. */
static void send_take(cl_t *cl, void *arg)
{
    cl_claim_t *cm = arg;
    cl_owner_t *o = cl->owner;
    int idx = cm->idx;
    cl_conn_t *c = cl->links->peers[idx].conn;
    if (atomic_load(&cl->stopping) || c == NULL || !c->up) {
        log_limited(5000, AN_LOG_WARN,
                    "cluster: client '%s' is owned by %s, which has no link up: refused (0x88)",
                    cm->g->client_id, cm->owner);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    cm->req = ++o->next_req;
    cm->next = o->pending;
    o->pending = cm;
    tw_timer_init(&cm->timer, take_timeout);
    tw_add(&cl->tw, &cm->timer, cl->now + OWN_TAKE_MS);
    size_t idlen = cm->g->id_len;
    cl_buf_reserve(&c->out, 11 + idlen);
    uint8_t *p = c->out.p + c->out.len;
    uint32_t flen = (uint32_t)(1 + 4 + 2 + idlen);
    p[0] = (uint8_t)(flen >> 24), p[1] = (uint8_t)(flen >> 16), p[2] = (uint8_t)(flen >> 8);
    p[3] = (uint8_t)flen, p[4] = CL_F_OWN_TAKE;
    p[5] = (uint8_t)(cm->req >> 24), p[6] = (uint8_t)(cm->req >> 16), p[7] = (uint8_t)(cm->req >> 8);
    p[8] = (uint8_t)cm->req, p[9] = (uint8_t)(idlen >> 8), p[10] = (uint8_t)idlen;
    memcpy(p + 11, cm->g->client_id, idlen);
    c->out.len += 11 + idlen;
    OWN_INC(o->takes_sent);
    if (!(c->ev.events & EV_WRITE))
        cl_conn_flush(cl, c);
}

static void pending_unlink(cl_owner_t *o, cl_claim_t *cm)
{
    for (cl_claim_t **pp = &o->pending; *pp; pp = &(*pp)->next)
        if (*pp == cm) {
            *pp = cm->next;
            return;
        }
}

static void take_timeout(tw_timer_t *t)
{
    cl_claim_t *cm = container_of(t, cl_claim_t, timer);
    pending_unlink(cm->cl->owner, cm);
    log_limited(5000, AN_LOG_WARN, "cluster: %s did not hand client '%s' over in time: refused",
                cm->owner, cm->g->client_id);
    answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

static void on_claim(void *arg, const cl_etcd_res_t *res)
{
    cl_claim_t *cm = arg;
    cl_t *cl = cm->cl;
    if (res->err != CL_ETCD_OK) {
        if (res->err != CL_ETCD_ECANCELLED)
            log_limited(5000, AN_LOG_WARN, "cluster: claiming client '%s' failed: %s",
                        cm->g->client_id, res->error);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    if (cl_etcd_txn_ok(res->json)) {
        OWN_INC(cl->owner->created);
        answer(cm, 0);
        return;
    }
    const json_t *kv = cl_etcd_txn_kv(res->json);
    char val[CL_NAME_MAX];
    size_t kcap = strlen(cm->key) + 2;
    char *kbuf = an_malloc(kcap);
    int bad = kv == NULL || cl_etcd_kv(kv, kbuf, kcap, val, sizeof(val)) < 0;
    free(kbuf);
    if (bad) {
        if (++cm->tries > OWN_TRIES) {
            answer(cm, MQTT_RC_SERVER_BUSY);
            return;
        }
        claim_send(cm); /* gone meanwhile: again */
        return;
    }
    cm->rev = cl_etcd_int(kv, "mod_revision");
    int64_t lease = cl_member_lease(cl);
    if (strcmp(val, cl->conf->node) == 0 && cl_etcd_int(kv, "lease") == lease) {
        answer(cm, 0); /* ours: a takeover on this node, as without a cluster */
        return;
    }
    snprintf(cm->owner, sizeof(cm->owner), "%s", val);
    int idx = strcmp(val, cl->conf->node) == 0 ? -1 : member_index(cl, val);
    if (idx < 0) {
        /* a node that left (its lease outlives it by a little), or an older
         * lease of ours: take the key over if nobody changed it */
        cl_etcd_t *e = cl_member_etcd(cl);
        if (e == NULL || lease == 0 ||
            cl_etcd_call(e, "/v3/kv/txn",
                         cl_etcd_put_if_mod_req(cm->key, cl->conf->node, lease, cm->rev), 0,
                         on_stolen, cm) < 0)
            answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
        return;
    }
    cm->idx = idx;
    if (cl_post(cl, send_take, cm) < 0)
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
}

/* The connect gate, on the client's home worker. */
static int own_gate(worker_t *w, proto_gate_t *g, void *user)
{
    (void)w;
    cl_t *cl = user;
    cl_owner_t *o = cl->owner;
    size_t n = strlen(o->prefix) + g->id_len + 1;
    cl_claim_t *cm = an_calloc(1, sizeof(*cm) + n);
    cm->cl = cl;
    cm->g = g;
    snprintf(cm->key, n, "%s%s", o->prefix, g->client_id);
    g->arg = cm;
    g->release = claim_release;
    claim_send(cm);
    return 1;
}

/* ---- the owner's side ---- */

static void send_given(cl_t *cl, void *arg)
{
    cl_take_t *tk = arg;
    cl_conn_t *c = cl->links->peers[tk->idx].conn;
    if (c != NULL && c->up && !atomic_load(&cl->stopping)) {
        cl_buf_reserve(&c->out, 9);
        uint8_t *p = c->out.p + c->out.len;
        p[0] = 0, p[1] = 0, p[2] = 0, p[3] = 5, p[4] = CL_F_OWN_GIVEN;
        p[5] = (uint8_t)(tk->req >> 24), p[6] = (uint8_t)(tk->req >> 16);
        p[7] = (uint8_t)(tk->req >> 8), p[8] = (uint8_t)tk->req;
        c->out.len += 9;
        if (!(c->ev.events & EV_WRITE))
            cl_conn_flush(cl, c);
    }
    free(tk);
}

static void on_released_for(void *arg, const cl_etcd_res_t *res)
{
    cl_take_t *tk = arg;
    (void)res; /* whatever the answer: the requester claims again and sees */
    if (cl_post(tk->cl, send_given, tk) < 0)
        free(tk);
}

/* WM_CL_OWNER on the client's home worker: close and end its session here,
 * release the claim, answer the requester. */
static void own_take(worker_t *w, inbox_item_t *it)
{
    cl_take_t *tk = it->ptr;
    cl_t *cl = tk->cl;
    size_t idlen = strlen(tk->id);
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)tk->id, idlen);
    if (s != NULL) {
        if (s->ep)
            sess_take_over(s, "session taken over by another node");
        sess_destroy(w, s);
    }
    OWN_INC(cl->owner->takes_served);
    cl_etcd_t *e = cl_member_etcd(cl);
    char *k = own_key(cl->owner, tk->id);
    if (e == NULL || cl_etcd_call(e, "/v3/kv/txn", cl_etcd_del_if_value_req(k, cl->conf->node), 0,
                                  on_released_for, tk) < 0) {
        if (cl_post(cl, send_given, tk) < 0)
            free(tk);
    }
    free(k);
}

static void drop_take(inbox_item_t *it)
{
    free(it->ptr);
}

int cl_owner_recv(cl_t *cl, int idx, uint8_t type, const uint8_t *body, uint32_t len)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return 0; /* no registry here (static members) */
    if (len < 4)
        return -1;
    uint32_t req = (uint32_t)body[0] << 24 | (uint32_t)body[1] << 16 | (uint32_t)body[2] << 8 |
                   body[3];
    if (type == CL_F_OWN_GIVEN) {
        if (len != 4)
            return -1;
        for (cl_claim_t *cm = o->pending; cm; cm = cm->next)
            if (cm->req == req && cm->idx == idx) {
                pending_unlink(o, cm);
                tw_del(&cl->tw, &cm->timer);
                if (++cm->tries > OWN_TRIES)
                    answer(cm, MQTT_RC_SERVER_BUSY);
                else
                    claim_send(cm);
                break;
            }
        return 0;
    }
    if (len < 6)
        return -1;
    uint16_t idlen = (uint16_t)(body[4] << 8 | body[5]);
    if (len != 6u + idlen || memchr(body + 6, 0, idlen) != NULL)
        return -1;
    cl_take_t *tk = an_malloc(sizeof(*tk) + idlen + 1u);
    tk->cl = cl;
    tk->idx = idx;
    tk->req = req;
    memcpy(tk->id, body + 6, idlen);
    tk->id[idlen] = '\0';
    uint32_t home = worker_home(cl->srv, body + 6, idlen);
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_CL_OWNER, .ptr = tk};
    inbox_vec_push(&v, &it);
    inbox_post(&cl->srv->workers[home].inbox, &v);
    inbox_vec_free(&v);
    return 0;
}

/* ---- releases ---- */

static void on_released(void *arg, const cl_etcd_res_t *res)
{
    (void)arg;
    (void)res;
}

static void release(cl_t *cl, const char *id)
{
    cl_etcd_t *e = cl_member_etcd(cl);
    if (e == NULL || id == NULL)
        return;
    char *k = own_key(cl->owner, id);
    cl_etcd_call(e, "/v3/kv/txn", cl_etcd_del_if_value_req(k, cl->conf->node), 0, on_released,
                 NULL);
    free(k);
    OWN_INC(cl->owner->released);
}

static void on_event(worker_t *w, event_kind_t kind, const void *data, void *user)
{
    cl_t *cl = user;
    if (kind == EVENT_SESSION_EXPIRED) {
        release(cl, ((const event_session_expired_t *)data)->client.client_id);
        return;
    }
    const event_disconnected_t *d = data;
    const char *id = d->client.client_id;
    if (id == NULL || d->reason_code == MQTT_RC_SESSION_TAKEN_OVER)
        return; /* taken over here: the new connection keeps the claim */
    sess_t *s = sess_table_find_id(&w->by_id, (const uint8_t *)id, strlen(id));
    if (s == NULL || s->expiry == 0)
        release(cl, id);
}

/* ---- life ---- */

int cl_owner_init(cl_t *cl)
{
    if (cl->conf->etcd[0] == '\0')
        return 0;
    cl_owner_t *o = an_calloc(1, sizeof(*o));
    o->cl = cl;
    snprintf(o->prefix, sizeof(o->prefix), "/antenna/%s/clients/", cl->conf->name);
    cl->owner = o;
    static const worker_inbox_kind_t kind = {.run = own_take, .drop = drop_take};
    worker_inbox_register(cl->srv, WM_CL_OWNER, &kind);
    proto_gate_register(cl->srv, own_gate, cl);
    if (event_listen(&cl->srv->events, EVENT_CLIENT_DISCONNECTED, on_event, cl) < 0 ||
        event_listen(&cl->srv->events, EVENT_SESSION_EXPIRED, on_event, cl) < 0) {
        log_error("cluster: cannot listen to session events");
        return -1;
    }
    return 0;
}

void cl_owner_stop(cl_t *cl)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    while (o->pending) {
        cl_claim_t *cm = o->pending;
        o->pending = cm->next;
        tw_del(&cl->tw, &cm->timer);
        answer(cm, MQTT_RC_SERVER_UNAVAILABLE);
    }
}

void cl_owner_free(cl_t *cl)
{
    free(cl->owner);
    cl->owner = NULL;
}

void cl_owner_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_owner_t *o = cl->owner;
    if (o == NULL)
        return;
    module_metrics_family(mm, "antenna_cluster_client_claims_total", "counter",
                          "Client-id claims by outcome (docs/cluster.md).");
#define OWN_LINE(what, x)                                                                          \
    module_metrics_printf(mm, "antenna_cluster_client_claims_total{outcome=\"" what "\"} %" PRIu64 \
                              "\n",                                                                \
                          atomic_load_explicit(&(x), memory_order_relaxed))
    OWN_LINE("sent", o->claims);
    OWN_LINE("created", o->created);
    OWN_LINE("taken_from_gone", o->stolen);
    OWN_LINE("asked_owner", o->takes_sent);
    OWN_LINE("handed_over", o->takes_served);
    OWN_LINE("refused", o->refused);
    OWN_LINE("released", o->released);
#undef OWN_LINE
}
