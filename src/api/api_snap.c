/* api_snap.c -- management API jobs run by the workers (see api_snap.h).
 *
 * api_job_submit runs on an API thread; everything else below api_job_run
 * runs on the worker that took the WM_API item, over that worker's own
 * sessions and connections only (the threading rule of server.h), so it
 * needs no lock but the job's own mutex, taken once to hand the answer over.
 */
#include "api_snap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "endpoint.h"
#include "log.h"
#include "migrate.h"
#include "mqtt_codec.h"
#include "persist.h"
#include "retain.h"
#include "router.h"
#include "sess.h"
#include "sess_acl.h"

api_job_t *api_job_new(api_job_kind_t kind)
{
    api_job_t *job = an_calloc(1, sizeof(*job));
    job->kind = kind;
    job->connected = -1;
    pthread_mutex_init(&job->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&job->cv, &ca);
    pthread_condattr_destroy(&ca);
    job->data = json_array();
    job->refs = 1;
    return job;
}

static void job_free(api_job_t *job)
{
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    free(job->client_id);
    free(job->client_id_prefix);
    free(job->username);
    free(job->address);
    free(job->topic);
    if (job->msg)
        msg_unref(&job->msg);
    json_decref(job->data);
    free(job);
}

/* Drop one reference; the last one frees.  Called with mu held. */
static void unref_locked(api_job_t *job)
{
    int last = --job->refs == 0;
    pthread_mutex_unlock(&job->mu);
    if (last)
        job_free(job);
}

void api_job_release(api_job_t *job)
{
    pthread_mutex_lock(&job->mu);
    unref_locked(job);
}

int api_job_submit(server_t *srv, api_job_t *job, int to, uint32_t timeout_ms)
{
    uint32_t first = to < 0 ? 0 : (uint32_t)to, last = to < 0 ? srv->nworkers : first + 1;
    pthread_mutex_lock(&job->mu);
    job->refs += (int)(last - first);
    job->pending = (int)(last - first);
    job->one = to >= 0;
    pthread_mutex_unlock(&job->mu);
    for (uint32_t i = first; i < last; i++) {
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_API, .ptr = job};
        inbox_vec_push(&v, &it);
        inbox_post(&srv->workers[i].inbox, &v);
        inbox_vec_free(&v);
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000u;
    dl.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&job->mu);
    while (job->pending > 0 && rc == 0)
        if (pthread_cond_timedwait(&job->cv, &job->mu, &dl) == ETIMEDOUT)
            rc = -1;
    if (job->pending == 0)
        rc = 0;
    pthread_mutex_unlock(&job->mu);
    return rc;
}

/* Worker: hand over `found` items (may be NULL) and the flags; wake the
 * API thread when this was the last worker.  `items` is dropped before the
 * mutex is released: its elements now belong to job->data too, and
 * jansson's reference counts order nothing (a plain read, then a release
 * decrement; no acquire before the free), so the worker's last touch of
 * them must happen before the API thread, which takes the mutex, sees them. */
static void answer_total(api_job_t *job, json_t *items, int found, uint64_t delivered,
                         uint64_t total)
{
    pthread_mutex_lock(&job->mu);
    job->total += total;
    if (items)
        json_array_extend(job->data, items);
    json_decref(items);
    job->found |= found;
    job->delivered += delivered;
    if (--job->pending == 0)
        pthread_cond_signal(&job->cv);
    unref_locked(job);
}

static void answer(api_job_t *job, json_t *items, int found, uint64_t delivered)
{
    answer_total(job, items, found, delivered, 0);
}

void api_job_cancel(api_job_t *job)
{
    answer(job, NULL, 0, 0);
}

static json_t *sub_json(const sess_t *s, const sess_sub_t *sub)
{
    json_t *o = json_object();
    json_object_set_new(o, "client_id", json_string(s->client_id));
    json_object_set_new(o, "topic", json_stringn((const char *)sess_sub_filter(sub), sub->len));
    json_object_set_new(o, "qos", json_integer(MQTT_SUBOPT_QOS(sub->opts)));
    json_object_set_new(o, "no_local", json_boolean(sub->opts & MQTT_SUBOPT_NO_LOCAL));
    json_object_set_new(o, "retain_as_published",
                        json_boolean(sub->opts & MQTT_SUBOPT_RETAIN_AS_PUBLISHED));
    json_object_set_new(o, "retain_handling", json_integer(MQTT_SUBOPT_RETAIN_HANDLING(sub->opts)));
    json_object_set_new(o, "identifier", json_integer(sub->subid));
    return o;
}

static const char *username_of(const sess_t *s)
{
    const char *owner = sess_acl_owner(s); /* kept while offline too */
    if (owner || s->ep == NULL)
        return owner;
    ep_info_t info;
    ep_describe(s->ep, &info, NULL, 0);
    return info.client.username;
}

static json_t *client_json(const sess_t *s, int with_subs)
{
    const endpoint_t *ep = s->ep;
    json_t *o = json_object();
    json_object_set_new(o, "client_id", json_string(s->client_id));
    const char *user = username_of(s);
    json_object_set_new(o, "username", user ? json_string(user) : json_null());
    json_object_set_new(o, "connected", json_boolean(ep != NULL));
    json_object_set_new(o, "worker", json_integer(s->w->id)); /* its home (migrate.h) */
    if (ep) {
        char peer[INET6_ADDRSTRLEN + 8];
        ep_info_t info;
        ep_describe(ep, &info, peer, sizeof(peer));
        json_object_set_new(o, "address", json_string(info.client.peer));
        json_object_set_new(o, "listener",
                            info.client.listener ? json_string(info.client.listener) : json_null());
        int http = info.client.proto == EP_PROTO_HTTP; /* endpoint.h */
        int coap = info.client.proto == EP_PROTO_COAP;
        json_object_set_new(o, "protocol", json_string(http ? "http" : coap ? "coap" : "mqtt"));
        json_object_set_new(o, "protocol_version",
                            http || coap ? json_null() : json_integer(info.client.proto));
        json_object_set_new(o, "keepalive", json_integer(info.keepalive));
        json_object_set_new(o, "connected_at", json_integer(s->connected_at));
    } else {
        json_object_set_new(o, "address", json_null());
        json_object_set_new(o, "listener", json_null());
        json_object_set_new(o, "protocol", json_null());
        json_object_set_new(o, "protocol_version", json_null());
        json_object_set_new(o, "keepalive", json_null());
        json_object_set_new(o, "connected_at",
                            s->connected_at ? json_integer(s->connected_at) : json_null());
    }
    json_object_set_new(o, "persistent", json_boolean(s->expiry != 0));
    json_object_set_new(o, "session_expiry",
                        s->expiry == SESS_NEVER ? json_integer(-1) : json_integer(s->expiry));
    json_object_set_new(o, "inflight", json_integer(sq_len(&s->inflight)));
    json_object_set_new(o, "queued", json_integer(sq_len(&s->queue)));
    if (with_subs) {
        json_t *subs = json_array();
        for (uint32_t i = 0; i < s->nsubs; i++)
            json_array_append_new(subs, sub_json(s, &s->subs[i]));
        json_object_set_new(o, "subscriptions", subs);
    } else {
        json_object_set_new(o, "subscriptions", json_integer(s->nsubs));
    }
    return o;
}

static int prefix_of(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int client_matches(const api_job_t *job, const sess_t *s)
{
    if (job->connected >= 0 && (s->ep != NULL) != job->connected)
        return 0;
    if (job->client_id_prefix && !prefix_of(s->client_id, job->client_id_prefix))
        return 0;
    if (job->username) {
        const char *u = username_of(s);
        if (u == NULL || strcmp(u, job->username) != 0)
            return 0;
    }
    if (job->address) {
        char peer[INET6_ADDRSTRLEN + 8];
        ep_info_t info;
        if (s->ep == NULL)
            return 0;
        ep_describe(s->ep, &info, peer, sizeof(peer));
        if (!prefix_of(info.client.peer, job->address))
            return 0;
    }
    return 1;
}

static sess_t *find(worker_t *w, const char *client_id)
{
    return sess_table_find_id(&w->by_id, (const uint8_t *)client_id, strlen(client_id));
}

static void run_kick(worker_t *w, api_job_t *job, int drop)
{
    sess_t *s = find(w, job->client_id);
    int found = 0;
    if (s && s->ep) {
        ep_close(s->ep, drop ? EP_CLOSE_DISCARDED : EP_CLOSE_KICKED,
                 "kicked by the management API");
        found = 1;
    }
    if (drop) {
        s = find(w, job->client_id); /* a clean session ended with its connection */
        if (s) {
            sess_destroy(w, s);
            found = 1;
        }
        if (found)
            log_ev(AN_LOG_INFO,
                   &(log_fields_t){.event = "session_dropped",
                                   .client_id = job->client_id,
                                   .reason = "administrative_action"},
                   "client '%s': session dropped by the "
                   "management API",
                   job->client_id);
    }
    answer(job, NULL, found, 0);
}

static void run_retain_del(worker_t *w, api_job_t *job)
{
    /* the same as a client publishing an empty retained message, without
     * delivering it: the retained tree and the store forget the topic */
    msg_t *m = msg_new((const uint8_t *)job->topic, (uint16_t)strlen(job->topic), NULL, 0, 0, 1);
    retain_set(w->srv->retain, m);
    persist_retained(w, m);
    msg_unref(&m);
    answer(job, NULL, 1, 0);
}

static int by_id(const void *a, const void *b)
{
    return strcmp((*(const sess_t *const *)a)->client_id, (*(const sess_t *const *)b)->client_id);
}

/* The matching sessions sorted by client id; JSON for the first job->keep
 * only: the page asked for is among them whatever the other workers hold,
 * so a first page of 100 costs 100 objects per worker, not one per client. */
static void run_clients(worker_t *w, api_job_t *job)
{
    size_t n = 0, cap = 64;
    const sess_t **v = an_malloc(cap * sizeof(*v));
    for (size_t b = 0; b < w->by_sid.nbuckets; b++)
        for (const sess_t *s = w->by_sid.buckets[b]; s; s = s->sid_next)
            if (client_matches(job, s)) {
                if (n == cap)
                    v = an_realloc(v, (cap *= 2) * sizeof(*v));
                v[n++] = s;
            }
    size_t keep = job->keep && job->keep < n ? job->keep : n;
    if (keep < n)
        qsort(v, n, sizeof(*v), by_id);
    json_t *items = json_array();
    for (size_t i = 0; i < keep; i++)
        json_array_append_new(items, client_json(v[i], 0));
    free(v);
    answer_total(job, items, 1, 0, n);
}

typedef struct {
    const sess_t *s;
    const sess_sub_t *sub;
} sub_pair_t;

static int by_id_filter(const void *a, const void *b)
{
    const sub_pair_t *x = a, *y = b;
    int c = strcmp(x->s->client_id, y->s->client_id);
    if (c)
        return c;
    int m =
        memcmp(sess_sub_filter(x->sub), sess_sub_filter(y->sub), AN_MIN(x->sub->len, y->sub->len));
    return m ? m : (int)x->sub->len - (int)y->sub->len;
}

/* The subscriptions matching the filters; as for clients, only the first
 * job->keep (by client id, then filter) become JSON. */
static void run_subs(worker_t *w, api_job_t *job)
{
    size_t n = 0, cap = 64, tlen = job->topic ? strlen(job->topic) : 0;
    sub_pair_t *v = an_malloc(cap * sizeof(*v));
    for (size_t b = 0; b < w->by_sid.nbuckets; b++)
        for (const sess_t *s = w->by_sid.buckets[b]; s; s = s->sid_next) {
            if (job->client_id && strcmp(job->client_id, s->client_id) != 0)
                continue;
            for (uint32_t i = 0; i < s->nsubs; i++) {
                const sess_sub_t *sub = &s->subs[i];
                if (job->topic &&
                    (tlen != sub->len || memcmp(job->topic, sess_sub_filter(sub), tlen) != 0))
                    continue;
                if (n == cap)
                    v = an_realloc(v, (cap *= 2) * sizeof(*v));
                v[n++] = (sub_pair_t){s, sub};
            }
        }
    size_t keep = job->keep && job->keep < n ? job->keep : n;
    if (keep < n)
        qsort(v, n, sizeof(*v), by_id_filter);
    json_t *items = json_array();
    for (size_t i = 0; i < keep; i++)
        json_array_append_new(items, sub_json(v[i].s, v[i].sub));
    free(v);
    answer_total(job, items, 1, 0, n);
}

void api_job_run(worker_t *w, api_job_t *job)
{
    switch (job->kind) {
    case API_JOB_PING:
        answer(job, NULL, 1, 0);
        return;
    case API_JOB_KICK:
        run_kick(w, job, 0);
        return;
    case API_JOB_DROP:
        run_kick(w, job, 1);
        return;
    case API_JOB_PUBLISH: {
        size_t n = router_publish(w, job->msg, NULL);
        answer(job, NULL, 1, n);
        return;
    }
    case API_JOB_RETAIN_DEL:
        run_retain_del(w, job);
        return;
    case API_JOB_CLIENT: {
        sess_t *s = find(w, job->client_id);
        json_t *items = json_array();
        if (s)
            json_array_append_new(items, client_json(s, 1));
        answer(job, items, s != NULL, 0);
        return;
    }
    case API_JOB_CLIENTS:
        run_clients(w, job);
        return;
    case API_JOB_SUBS:
        run_subs(w, job);
        return;
    }
    answer(job, NULL, 0, 0);
}

static void run_job(worker_t *w, inbox_item_t *it)
{
    api_job_t *job = it->ptr;
    /* a job for one client id whose session moved to another worker after
     * the API thread read its home follows it (migrate.h) */
    if (job->one && job->client_id != NULL && find(w, job->client_id) == NULL &&
        migrate_hand_on(w, job->client_id, strlen(job->client_id), it))
        return;
    api_job_run(w, job);
}

static void drop_job(inbox_item_t *it)
{
    api_job_cancel(it->ptr);
}

void api_snap_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t job = {.run = run_job, .drop = drop_job};
    worker_inbox_register(srv, WM_API, &job);
}
