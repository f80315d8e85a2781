/* httpin.c -- the device-facing HTTP ingest listener (http_ingest).
 *
 * What it owns: a libmicrohttpd daemon on its own address and port (not
 * the management API's), a per-device rate table and the module's
 * counters.  Off (enabled: false, the default) nothing is set up: no
 * thread, no inbox kind used, no cost anywhere.
 *
 * Threads: MHD runs the listener on a pool of two threads (epoll), as the
 * management API does (api_http.c).  A request is handled entirely on its
 * MHD thread: the body is gathered in a per-request buffer capped at
 * max_body (413 past it), parsed (httpin_parse: one JSON object, a JSON
 * array of them, or the raw body with ?topic=), the device authenticated
 * and each message's topic checked for publish through the broker's auth
 * chain (auth_chain.h: the same backends and ACL as MQTT, the device being
 * client id {id}).  The MHD thread never routes: the accepted messages go
 * to one worker (by a hash of the device id, so a device's messages keep
 * their order) as one WM_HTTPIN inbox item carrying an httpin_job_t; the
 * worker calls router_publish for each (routed, retained and stored like
 * an MQTT PUBLISH) and signals; the MHD thread waits up to timeout_ms and
 * only then answers 200, so a 200 means what a PUBACK means.  The job is
 * reference-counted (MHD thread + worker) so a request that gives up after
 * its timeout leaves the job to the worker.
 *
 * Authentication runs the backends of auth.chain in order on the MHD
 * thread, calling each backend's check() with a completion that signals a
 * condition variable: an asynchronous backend (password_file's
 * verification threads, http, redis) simply makes this MHD thread wait
 * (bounded by timeout_ms), never a worker.  Bearer token: user = the
 * device id, password = the token; Basic: the user and password given.
 *
 * Rate: a fixed table of RATE_SLOTS token buckets under one mutex, a slot
 * per device by a hash of its id (two devices sharing a slot share a
 * budget: a deliberate bound on memory).
 *
 * GET routes to the downlink (httpin_down.c: long poll and server-sent
 * events), which shares this file's daemon, authentication and WM_HTTPIN
 * inbox kind (inbox_item_t.flags tells its items from publish jobs), and
 * needs MHD_ALLOW_SUSPEND_RESUME: before MHD stops, httpin_down_stop
 * resumes every suspended request.  HTTPS (tls_cert/tls_key): the PEM
 * texts are read at start and kept in httpin_t for MHD.
 */
#include "httpin.h"
#include "httpin_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth_chain.h"
#include "auth_wait.h"
#include "b64.h"
#include "ep_claim.h"
#include "log.h"
#include "mqtt_codec.h"
#include "msg.h"
#include "router.h"
#include "server.h"
#include "util.h"

#define RATE_SLOTS 4096
#define MAX_ID 128

typedef struct hi_rate_slot_s {
    uint64_t key;
    double tokens;
    uint64_t last_us;
} rate_slot_t;


/* Messages handed to a worker. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done;
    size_t n;
    msg_t **msgs;
    size_t *delivered; /* per message: sessions reached, or ROUTER_REFUSED */
} httpin_job_t;


static char *hi_strdup(const char *s)
{
    return an_strndup(s, strlen(s));
}

/* ---- the job on the worker ------------------------------------------------ */

static void job_release(httpin_job_t *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    for (size_t i = 0; i < j->n; i++)
        msg_unref(&j->msgs[i]);
    free(j->msgs);
    free(j->delivered);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void job_run(worker_t *w, inbox_item_t *it)
{
    if (it->flags != HI_OP_JOB) {
        httpin_down_run(w, it);
        return;
    }
    httpin_job_t *j = it->ptr;
    for (size_t i = 0; i < j->n; i++)
        j->delivered[i] = router_publish(w, j->msgs[i], NULL);
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_release(j);
}

static void job_drop(inbox_item_t *it)
{
    if (it->flags != HI_OP_JOB) {
        httpin_down_drop(it);
        return;
    }
    job_release(it->ptr); /* a stopped worker: the request times out */
}

static void deadline(struct timespec *dl, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, dl);
    dl->tv_sec += ms / 1000u;
    dl->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (dl->tv_nsec >= 1000000000L) {
        dl->tv_sec++;
        dl->tv_nsec -= 1000000000L;
    }
}

static httpin_job_t *job_new(size_t n)
{
    httpin_job_t *j = an_calloc(1, sizeof(*j));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 1;
    j->msgs = an_calloc(n ? n : 1, sizeof(*j->msgs));
    j->delivered = an_calloc(n ? n : 1, sizeof(*j->delivered));
    return j;
}

/* 0 routed, -1 timeout. */
static int job_submit(httpin_t *h, httpin_job_t *j, const char *id)
{
    uint64_t hash = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        hash = (hash ^ (uint8_t)*p) * 1099511628211ull;
    uint32_t to = (uint32_t)(hash % h->srv->nworkers);
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_HTTPIN, .ptr = j};
    inbox_vec_push(&v, &it);
    inbox_post(&h->srv->workers[to].inbox, &v);
    inbox_vec_free(&v);
    struct timespec dl;
    deadline(&dl, h->c->timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (!j->done)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &dl) == ETIMEDOUT)
            break;
    int rc = j->done ? 0 : -1;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* ---- authentication --------------------------------------------------------- */

/* The chain on this MHD thread (auth_wait.h), then auth.default_policy:
 * AUTH_ALLOW with *acl (the backend's rules for the device, or NULL), else
 * AUTH_DENY. */
static auth_verdict_t authenticate(httpin_t *h, auth_chain_t *ch, const auth_request_t *r,
                                   auth_acl_t **acl)
{
    auth_verdict_t v = auth_wait_chain(ch, r, h->c->timeout_ms, acl);
    if (v == AUTH_PASS)
        v = h->srv->conf.auth.default_policy == CONF_POLICY_ALLOW ? AUTH_ALLOW : AUTH_DENY;
    return v;
}

/* ---- answers ---------------------------------------------------------------- */

static enum MHD_Result httpin_send_json(struct MHD_Connection *conn, unsigned status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    size_t len = text ? strlen(text) : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text ? text : (char *)"", MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer, Basic realm=\"devices\"");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static json_t *err_json(const char *code, const char *field, const char *text)
{
    json_t *o = json_pack("{s:s, s:s}", "error", text, "code", code);
    if (field)
        json_object_set_new(o, "field", json_string(field));
    return o;
}

enum MHD_Result httpin_send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                  const char *field, const char *text)
{
    return httpin_send_json(conn, status, err_json(code, field, text));
}

/* ---- parsing ---------------------------------------------------------------- */

typedef struct {
    const char *topic;
    size_t tlen;
    uint8_t *payload; /* malloc'd */
    size_t plen;
    uint8_t qos, retain;
} httpin_msg_t;

/* One message object; NULL, or the field at fault with *why. */
static const char *parse_one(json_t *o, httpin_msg_t *m, const char **why)
{
    if (!json_is_object(o))
        return *why = "a message must be a JSON object", "body";
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "topic") && strcmp(k, "payload") && strcmp(k, "encoding") &&
            strcmp(k, "qos") && strcmp(k, "retain"))
            return *why = "unknown field", k;
    }
    json_t *jt = json_object_get(o, "topic");
    if (!json_is_string(jt) || json_string_length(jt) == 0 || json_string_length(jt) > 65535 ||
        !mqtt_topic_name_valid((const uint8_t *)json_string_value(jt), json_string_length(jt)))
        return *why = "topic is required: a topic name (no wildcards)", "topic";
    m->topic = json_string_value(jt);
    m->tlen = json_string_length(jt);
    json_t *je = json_object_get(o, "encoding");
    int b64 = 0;
    if (je) {
        if (json_is_string(je) && strcmp(json_string_value(je), "base64") == 0)
            b64 = 1;
        else if (!json_is_string(je) || strcmp(json_string_value(je), "plain") != 0)
            return *why = "encoding must be \"plain\" or \"base64\"", "encoding";
    }
    json_t *jp = json_object_get(o, "payload");
    if (jp && !json_is_string(jp))
        return *why = "payload must be a string", "payload";
    const char *p = jp ? json_string_value(jp) : "";
    size_t plen = jp ? json_string_length(jp) : 0;
    m->payload = an_malloc(plen + 4);
    if (b64) {
        long n = b64_decode(p, plen, m->payload, plen + 4);
        if (n < 0)
            return *why = "payload is not valid base64", "payload";
        m->plen = (size_t)n;
    } else {
        memcpy(m->payload, p, plen);
        m->plen = plen;
    }
    json_t *jq = json_object_get(o, "qos");
    if (jq && (!json_is_integer(jq) || json_integer_value(jq) < 0 || json_integer_value(jq) > 2))
        return *why = "qos must be 0, 1 or 2", "qos";
    m->qos = jq ? (uint8_t)json_integer_value(jq) : 0;
    json_t *jr = json_object_get(o, "retain");
    if (jr && !json_is_boolean(jr))
        return *why = "retain must be true or false", "retain";
    m->retain = jr && json_is_true(jr);
    return NULL;
}

void httpin_peer(struct MHD_Connection *conn, char *peer, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    peer[0] = '\0';
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ci->client_addr;
        char a[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
        snprintf(peer, size, "%s:%u", a, ntohs(sin->sin_port));
    }
}

/* The device behind a request (Bearer: user = id, password = the token;
 * Basic: the user and password given), through the auth chain: 0 and *acp
 * (the device's auth state: user, ACL), or -1 with the 401 queued
 * (*ret). */
int httpin_device_auth(httpin_t *h, struct MHD_Connection *conn, const char *id,
                       auth_client_t **acp, enum MHD_Result *ret)
{
    char *user = NULL, *pass = NULL;
    int rc = -1;
    *acp = NULL;
    /* credentials */
    const char *authz = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
        user = hi_strdup(id);
        pass = hi_strdup(authz + 7);
    } else if (authz && strncasecmp(authz, "Basic ", 6) == 0) {
        size_t l = strlen(authz + 6);
        char *dec = an_malloc(l + 4);
        long dl = b64_decode(authz + 6, l, (uint8_t *)dec, l + 4);
        char *colon = dl > 0 ? memchr(dec, ':', (size_t)dl) : NULL;
        if (colon) {
            dec[dl] = 0;
            *colon = 0;
            user = hi_strdup(dec);
            pass = hi_strdup(colon + 1);
        }
        free(dec);
    }
    if (user == NULL) {
        *ret = httpin_send_error(conn, 401, "unauthorized", NULL,
                                 "credentials required: Authorization: Bearer TOKEN or Basic");
        goto out;
    }

    /* the device, through the auth chain */
    auth_chain_t *ch = atomic_load(&h->srv->auth);
    char peer[80];
    httpin_peer(conn, peer, sizeof(peer));
    auth_request_t req = {.action = AUTH_ACT_CONNECT,
                          .client_id = id,
                          .username = user,
                          .password = (const uint8_t *)pass,
                          .password_len = strlen(pass),
                          .peer = peer,
                          .listener = UINT32_MAX};
    auth_acl_t *acl = NULL;
    if (authenticate(h, ch, &req, &acl) != AUTH_ALLOW) {
        atomic_fetch_add(&h->refused, 1);
        *ret = httpin_send_error(conn, 401, "unauthorized", NULL, "the device is not authorized");
        goto out;
    }
    auth_client_t *ac = an_calloc(1, sizeof(*ac));
    ac->user = user;
    user = NULL;
    ac->client_id = hi_strdup(id);
    ac->acl = acl;
    ac->authed = 1;
    ac->gen = auth_chain_gen(ch);
    *acp = ac;
    rc = 0;
out:
    free(user);
    free(pass);
    return rc;
}

/* ---- rate ------------------------------------------------------------------- */

static int rate_take(httpin_t *h, const char *id, uint32_t n)
{
    if (h->c->rate == 0)
        return 1;
    uint64_t key = 1469598103934665603ull;
    for (const char *p = id; *p; p++)
        key = (key ^ (uint8_t)*p) * 1099511628211ull;
    uint64_t now = an_now_us();
    pthread_mutex_lock(&h->rate_mu);
    rate_slot_t *s = &h->rate[key % RATE_SLOTS];
    if (s->key != key || s->last_us == 0) {
        s->key = key;
        s->tokens = h->c->rate;
        s->last_us = now;
    }
    s->tokens += (double)(now - s->last_us) * h->c->rate / 1e6;
    if (s->tokens > h->c->rate)
        s->tokens = h->c->rate;
    s->last_us = now;
    int ok = s->tokens >= n;
    if (ok)
        s->tokens -= n;
    pthread_mutex_unlock(&h->rate_mu);
    return ok;
}

/* ---- the request ------------------------------------------------------------ */

static int query_flag(const char *v)
{
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0);
}

static enum MHD_Result handle_post(httpin_t *h, struct MHD_Connection *conn, const char *id,
                                   httpin_req_t *rq)
{
    enum MHD_Result ret = MHD_YES;
    json_t *root = NULL, *results = NULL;
    httpin_msg_t *ms = NULL;
    size_t n = 0;
    auth_client_t *ac = NULL;
    httpin_job_t *job = NULL;

    /* body */
    const char *qtopic = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "topic");
    if (qtopic) {
        size_t tl = strlen(qtopic);
        if (tl == 0 || tl > 65535 || !mqtt_topic_name_valid((const uint8_t *)qtopic, tl)) {
            ret = httpin_send_error(conn, 400, "bad_request", "topic",
                                    "topic must be a topic name (no wildcards)");
            goto out;
        }
        const char *q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "qos");
        if (q && strcmp(q, "0") && strcmp(q, "1") && strcmp(q, "2")) {
            ret = httpin_send_error(conn, 400, "bad_request", "qos", "qos must be 0, 1 or 2");
            goto out;
        }
        ms = an_calloc(1, sizeof(*ms));
        n = 1;
        ms[0].topic = qtopic;
        ms[0].tlen = tl;
        ms[0].payload = an_malloc(rq->len + 1);
        memcpy(ms[0].payload, rq->body ? rq->body : "", rq->len);
        ms[0].plen = rq->len;
        ms[0].qos = q ? (uint8_t)(q[0] - '0') : 0;
        ms[0].retain =
            (uint8_t)query_flag(MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "retain"));
    } else {
        json_error_t jerr;
        root = rq->len ? json_loadb(rq->body, rq->len, 0, &jerr) : NULL;
        if (root == NULL) {
            ret = httpin_send_error(conn, 400, "bad_request", "body",
                                    "the body must be a JSON message or array of messages, or use "
                                    "?topic= with a raw body");
            goto out;
        }
        int batch = json_is_array(root);
        n = batch ? json_array_size(root) : 1;
        if (batch && n == 0) {
            ret = httpin_send_error(conn, 400, "bad_request", "body", "an empty batch");
            goto out;
        }
        if (n > h->c->max_messages) {
            ret = httpin_send_error(conn, 413, "too_many_messages", "body",
                                    "more messages than http_ingest.max_messages");
            goto out;
        }
        ms = an_calloc(n, sizeof(*ms));
        for (size_t i = 0; i < n; i++) {
            const char *why = NULL;
            const char *field = parse_one(batch ? json_array_get(root, i) : root, &ms[i], &why);
            if (field) {
                char f[160];
                if (batch)
                    snprintf(f, sizeof(f), "[%zu].%s", i, field);
                else
                    snprintf(f, sizeof(f), "%s", field);
                ret = httpin_send_error(conn, 400, "bad_request", f, why);
                goto out;
            }
        }
        if (batch)
            results = json_array();
    }
    for (size_t i = 0; i < n; i++)
        if (ms[i].plen + ms[i].tlen + 64 > h->srv->conf.max_packet_size) {
            ret = httpin_send_error(conn, 413, "too_large", "payload",
                                    "a message is larger than max_packet_size");
            goto out;
        }

    /* the device, through the auth chain */
    auth_chain_t *ch = atomic_load(&h->srv->auth);
    if (httpin_device_auth(h, conn, id, &ac, &ret) < 0)
        goto out;

    /* rate, then publish rights per topic */
    if (!rate_take(h, id, (uint32_t)n)) {
        ret = httpin_send_error(conn, 429, "rate_limited", NULL,
                                "the device sends faster than http_ingest.rate");
        goto out;
    }
    job = job_new(n);
    uint8_t *allowed = an_calloc(n, 1);
    const msg_origin_t *origin =
        msg_origin_new(MSG_PROTO_API, id, strlen(id), ac->user, "http_ingest");
    router_who_t who = {id, strlen(id), ac->user};
    for (size_t i = 0; i < n; i++) {
        /* a module's topics ($cmd/{id}/..., $shadow/{id}/...: router.h's
         * topic guards), then the ACL, as for an MQTT PUBLISH */
        allowed[i] = router_guard_publish(h->srv, &who, (const uint8_t *)ms[i].topic, ms[i].tlen) &&
                     auth_chain_acl(ch, ac, AUTH_ACT_PUBLISH, (const uint8_t *)ms[i].topic,
                                    ms[i].tlen, 0) != 0;
        if (!allowed[i])
            continue;
        msg_t *m = msg_new_v5((const uint8_t *)ms[i].topic, (uint16_t)ms[i].tlen, NULL, 0,
                              ms[i].payload, (uint32_t)ms[i].plen, ms[i].qos, ms[i].retain, 0);
        msg_set_origin(m, origin);
        job->msgs[job->n++] = m;
    }
    msg_origin_unref(&origin);
    int routed = job->n == 0 || job_submit(h, job, id) == 0;
    if (!routed) {
        free(allowed);
        ret = httpin_send_error(conn, 503, "timeout", NULL, "the broker did not route in time");
        goto out;
    }
    atomic_fetch_add(&h->messages, job->n);
    if (results == NULL) {
        if (!allowed[0])
            ret = httpin_send_error(conn, 403, "forbidden", "topic",
                                    "publish to this topic is denied");
        else if (job->delivered[0] == ROUTER_REFUSED)
            ret = httpin_send_error(conn, 429, "quota_exceeded", NULL,
                                    "a subscriber's queue is full");
        else
            ret = httpin_send_json(conn, 200,
                                   json_pack("{s:I}", "delivered", (json_int_t)job->delivered[0]));
    } else {
        size_t k = 0, ok = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *o;
            if (!allowed[i]) {
                o = err_json("forbidden", "topic", "publish to this topic is denied");
                json_object_set_new(o, "status", json_integer(403));
            } else if (job->delivered[k] == ROUTER_REFUSED) {
                k++;
                o = err_json("quota_exceeded", NULL, "a subscriber's queue is full");
                json_object_set_new(o, "status", json_integer(429));
            } else {
                o = json_pack("{s:i, s:I}", "status", 200, "delivered",
                              (json_int_t)job->delivered[k++]);
                ok++;
            }
            json_array_append_new(results, o);
        }
        json_t *o = json_pack("{s:I, s:I, s:o}", "accepted", (json_int_t)ok, "refused",
                              (json_int_t)(n - ok), "results", results);
        results = NULL;
        ret = httpin_send_json(conn, 200, o);
    }
    free(allowed);
out:
    if (job)
        job_release(job);
    auth_client_free(ac);
    for (size_t i = 0; i < n && ms; i++)
        free(ms[i].payload);
    free(ms);
    json_decref(root);
    json_decref(results);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    httpin_t *h = cls;
    httpin_req_t *rq = *con_cls;
    if (rq == NULL) {
        rq = an_calloc(1, sizeof(*rq));
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!rq->too_big) {
            if (rq->len + *upload_data_size > h->c->max_body) {
                rq->too_big = 1;
            } else {
                if (rq->len + *upload_data_size + 1 > rq->cap) {
                    rq->cap = (rq->len + *upload_data_size + 1) * 2;
                    if (rq->cap > (size_t)h->c->max_body + 1)
                        rq->cap = (size_t)h->c->max_body + 1;
                    rq->body = an_realloc(rq->body, rq->cap);
                }
                memcpy(rq->body + rq->len, upload_data, *upload_data_size);
                rq->len += *upload_data_size;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->hd) /* a downlink request, resumed */
        return httpin_down_get(h, conn, NULL, 0, rq);
    atomic_fetch_add(&h->requests, 1);
    /* /devices/{id}/messages, /devices/{id}/events */
    const char *p = strncmp(url, "/devices/", 9) == 0 ? url + 9 : NULL;
    const char *slash = p ? strchr(p, '/') : NULL;
    int events = slash && strcmp(slash, "/events") == 0;
    if (p == NULL || slash == NULL || slash == p || (strcmp(slash, "/messages") != 0 && !events))
        return httpin_send_error(conn, 404, "not_found", NULL, "no such route");
    size_t idlen = (size_t)(slash - p);
    if (idlen >= MAX_ID)
        return httpin_send_error(conn, 400, "bad_request", "id", "the device id is too long");
    char id[MAX_ID];
    memcpy(id, p, idlen);
    id[idlen] = 0;
    if (strcmp(method, "GET") == 0)
        return httpin_down_get(h, conn, id, events, rq);
    if (strcmp(method, "POST") != 0 || events)
        return httpin_send_error(conn, 405, "method_not_allowed", NULL,
                                 events ? "GET the event stream" : "POST a message, or GET");
    if (rq->too_big)
        return httpin_send_error(conn, 413, "too_large", "body",
                                 "the body is larger than http_ingest.max_body");
    return handle_post(h, conn, id, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    httpin_req_t *rq = *con_cls;
    if (rq) {
        if (rq->hd)
            httpin_down_completed(cls, rq);
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- the module --------------------------------------------------------------- */

static void hi_defaults(void *conf)
{
    httpin_conf_t *c = conf;
    c->enabled = 0;
    snprintf(c->bind, sizeof(c->bind), "%s", "127.0.0.1");
    c->port = 8880;
    c->max_body = 256 * 1024;
    c->max_messages = 100;
    c->rate = 0;
    c->max_connections = 1024;
    c->timeout_ms = 5000;
    c->idle_timeout_s = 60;
    c->max_wait_ms = 30000;
    c->heartbeat_ms = 15000;
    c->session_expiry = 3600;
    c->nsubs = 1;
    snprintf(c->subs[0], sizeof(c->subs[0]), "%s", "$cmd/{id}/#");
}

static const conf_key_t hi_keys[] = {
    CONF_KEY_BOOL(httpin_conf_t, enabled, "enabled"),
    CONF_KEY_STR(httpin_conf_t, bind, "bind", CONF_SEC_NONEMPTY),
    CONF_KEY_U32(httpin_conf_t, port, "port", 0, 65535),
    CONF_KEY_U32(httpin_conf_t, max_body, "max_body", 64, 64u * 1024 * 1024),
    CONF_KEY_U32(httpin_conf_t, max_messages, "max_messages", 1, 100000),
    CONF_KEY_U32(httpin_conf_t, rate, "rate", 0, 10000000),
    CONF_KEY_U32(httpin_conf_t, max_connections, "max_connections", 1, 1000000),
    CONF_KEY_MS(httpin_conf_t, timeout_ms, "timeout", 10, 600000),
    CONF_KEY_U32(httpin_conf_t, idle_timeout_s, "idle_timeout_s", 1, 86400),
    CONF_KEY_MS(httpin_conf_t, max_wait_ms, "max_wait", 0, 3600000),
    CONF_KEY_MS(httpin_conf_t, heartbeat_ms, "heartbeat", 1000, 3600000),
    CONF_KEY_U32(httpin_conf_t, session_expiry, "session_expiry", 0, 100u * 365 * 86400),
    CONF_KEY_NAMES(httpin_conf_t, subs, nsubs, "subscriptions", HTTPIN_MAX_SUBS),
    CONF_KEY_STR(httpin_conf_t, tls_cert, "tls_cert", 0),
    CONF_KEY_STR(httpin_conf_t, tls_key, "tls_key", 0),
};

static int hi_load(conf_sec_t *s, void *conf)
{
    httpin_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(hi_keys), c) < 0)
        return -1;
    if (!c->tls_cert[0] != !c->tls_key[0])
        return conf_sec_fail(s, c->tls_cert[0] ? "tls_key" : "tls_cert",
                             "HTTPS needs both tls_cert and tls_key");
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (!ep_claim_template_ok(c->subs[i]))
            return conf_sec_fail(s, "subscriptions", "\"%.80s\": a topic filter ({id}: the device)",
                                 c->subs[i]);
    struct in_addr a;
    if (inet_pton(AF_INET, c->bind, &a) != 1)
        return conf_sec_fail(s, "bind", "\"%.60s\": an IPv4 address", c->bind);
    return 0;
}

static void hi_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(hi_keys), conf, fn, ud);
}

static int hi_init(module_inst_t *mi)
{
    const httpin_conf_t *c = mi->conf;
    if (!c->enabled)
        return 0;
    httpin_t *h = an_calloc(1, sizeof(*h));
    h->srv = mi->srv;
    h->c = c;
    pthread_mutex_init(&h->rate_mu, NULL);
    pthread_mutex_init(&h->mu, NULL);
    h->rate = an_calloc(RATE_SLOTS, sizeof(*h->rate));
    mi->state = h;
    static const worker_inbox_kind_t kind = {.run = job_run, .drop = job_drop};
    worker_inbox_register(mi->srv, WM_HTTPIN, &kind);
    return 0;
}

/* A PEM file's text, or NULL (errno set). */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = an_malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = an_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int hi_start(module_inst_t *mi)
{
    httpin_t *h = mi->state;
    if (h == NULL)
        return 0;
    int tls = h->c->tls_cert[0] != '\0';
    if (tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            log_error("http_ingest: tls_cert/tls_key set but this libmicrohttpd has no TLS");
            return -1;
        }
        h->tls_cert = read_pem(h->c->tls_cert);
        h->tls_key = h->tls_cert ? read_pem(h->c->tls_key) : NULL;
        if (h->tls_key == NULL) {
            log_error("http_ingest: cannot read %s: %s",
                      h->tls_cert ? h->c->tls_key : h->c->tls_cert, strerror(errno));
            return -1;
        }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->c->port)};
    inet_pton(AF_INET, h->c->bind, &sa.sin_addr);
    /* suspend/resume: a waiting poll or an idle stream holds no thread */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    if (tls)
        flags |= MHD_USE_TLS;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->c->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->c->idle_timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            /* without TLS the options end here */
                            tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->tls_cert,
                            MHD_OPTION_HTTPS_MEM_KEY, h->tls_key, MHD_OPTION_END);
    if (h->d == NULL) {
        log_error("http_ingest: cannot listen on %s:%u%s", h->c->bind, h->c->port,
                  tls ? " (check tls_cert and tls_key)" : "");
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    log_info("http_ingest: listening on %s:%u%s", h->c->bind, di ? di->port : h->c->port,
             tls ? " (HTTPS)" : "");
    return 0;
}

static void hi_stop(module_inst_t *mi)
{
    httpin_t *h = mi->state;
    if (h && h->d) {
        httpin_down_stop(h);   /* resumes what waits: MHD refuses to stop otherwise */
        MHD_stop_daemon(h->d); /* joins its threads */
        h->d = NULL;
    }
}

static void hi_free(module_inst_t *mi)
{
    httpin_t *h = mi->state;
    if (h == NULL)
        return;
    if (h->d) {
        httpin_down_stop(h);
        MHD_stop_daemon(h->d);
    }
    pthread_mutex_destroy(&h->rate_mu);
    pthread_mutex_destroy(&h->mu);
    free(h->tls_cert);
    free(h->tls_key);
    free(h->rate);
    free(h);
    mi->state = NULL;
}

static void hi_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    httpin_t *h = mi->state;
    if (h == NULL)
        return;
    static const module_counter_t ctr[] = {
        {"antenna_http_ingest_requests_total", "requests to the device HTTP ingest listener",
         offsetof(httpin_t, requests)},
        {"antenna_http_ingest_messages_total", "messages routed from HTTP devices",
         offsetof(httpin_t, messages)},
        {"antenna_http_ingest_auth_refused_total", "requests refused by the auth chain",
         offsetof(httpin_t, refused)},
        {"antenna_http_ingest_polls_total", "long polls of the device downlink",
         offsetof(httpin_t, polls)},
        {"antenna_http_ingest_streams_total", "event streams of the device downlink",
         offsetof(httpin_t, streams)},
        {"antenna_http_ingest_delivered_total", "messages handed to polls and streams",
         offsetof(httpin_t, delivered)},
        {"antenna_http_ingest_takeovers_total",
         "polls and streams that took a session over from another", offsetof(httpin_t, takeovers)},
    };
    module_metrics_counters(mm, h, ctr, sizeof(ctr) / sizeof(ctr[0]));
}

const module_t httpin_module = {
    .name = "http_ingest",
    .section = "http_ingest",
    .conf_size = sizeof(httpin_conf_t),
    .conf_defaults = hi_defaults,
    .conf_load = hi_load,
    .conf_walk = hi_walk,
    .init = hi_init,
    .start = hi_start,
    .stop = hi_stop,
    .free = hi_free,
    .metrics = hi_metrics,
};
