/* coapgw.c -- the CoAP gateway (section coap): devices over UDP, on libcoap3.
 *
 * What it owns: one libcoap context with its endpoints (UDP, and DTLS, TCP,
 * TLS as configured: coapgw_sec.c), the
 * table of observations (GET + Observe on /ps/{filter}), one internal router
 * consumer subscribed to the observed filters (a reference count per
 * distinct filter), the gateway's thread and its counters.  Off (enabled:
 * false, the default) nothing is set up: no thread, no socket, no consumer,
 * no inbox kind used, no cost anywhere.
 *
 * Threads.  libcoap 4.3 is not thread-safe and its request handlers answer
 * synchronously, while the auth chain's backends may answer late
 * (password_file's PBKDF2 threads, http, redis): a worker must never wait
 * for them.  So libcoap runs on the module's own thread ("coap"), which has
 * its own ev_loop_t (ev.h) watching two descriptors: libcoap's epoll fd
 * (coap_context_get_coap_fd; its timers are a timerfd inside it, so
 * retransmissions wake it too), handled by epoll_wait on it and
 * coap_io_do_epoll per datagram, coap_io_prepare_epoll (timers) once per
 * turn, and the eventfd of the gateway's inbox (inbox.h).  A
 * one-second loop timeout sweeps expired observations.  The cost: one
 * thread, a request that authenticates blocks the other CoAP requests for
 * that time (bounded by timeout), and every message crosses threads twice
 * (worker -> gateway for a notification, gateway -> worker to publish).
 *
 * Publishing (POST/PUT /ps/{topic}): the request is authenticated and ACL
 * checked on the gateway thread, then the message goes to one worker (by a
 * hash of the client id, so a device's messages keep their order) as a
 * WM_COAP inbox item and is routed there with router_publish, as an MQTT
 * PUBLISH.  QoS 0 is answered at once and posted at the end of the
 * gateway's turn (one post per worker and turn); QoS 1 waits (at most timeout) for
 * the worker to have routed it, so its 2.04 means what a PUBACK means.
 *
 * Observing (GET + Observe=0 on /ps/{filter}): the consumer's callback runs
 * on the worker that routes a matching message; it takes a reference and
 * queues it in the worker's context; the module's turn_end posts the
 * turn's batch to the gateway's inbox (one lock per turn, not per message).
 * The gateway thread matches each message against the observations
 * (topic_matches, and the ACL per message when the filter was only partly
 * granted) and sends each match a notification (NON, or CON with
 * `confirmable`) with the observation's token and the next Observe number;
 * a payload larger than one datagram goes block-wise (libcoap's
 * coap_add_data_large_response with one shared bare GET as its request and
 * the registration's query, keeping a message reference until the transfer
 * ends).  Nothing else is
 * allocated per message than libcoap's PDU.  Matching walks
 * every observation: fine for thousands, an index is future work.
 *
 * An observation ends with a GET Observe=1 on the same token, a RST or a
 * give-up on a CON notification (libcoap's nack handler), or when it was
 * not refreshed (a new GET Observe=0 with the same token) within
 * observe_lifetime_s: the gateway then sends a 5.03 (RFC 7641: a non-2.xx
 * notification ends an observation) and forgets it.  An observation holds a
 * reference to its libcoap session.
 *
 * The downlink (GET + Observe on /cmd, coapgw_down.c): the observation is
 * an endpoint attached to the device's persistent session on its home
 * worker, which hands the session's deliveries to this thread (one
 * ITEM_DOWN per observation and worker turn); the acknowledgements go back
 * as WM_COAP items, gathered per worker like the QoS 0 publishes, when the
 * device ACKs a CON notification (io_once peeks at the datagram libcoap is
 * about to read while such a CON waits).  What
 * both files share is coapgw_int.h.
 *
 * The topic guards (router.h: $cmd/{id}/, $shadow/{id}/) judge a CoAP
 * publish as they judge an MQTT one, by the device's client id.
 */
#include "coapgw.h"
#include "coapgw_int.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <coap3/coap.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth_chain.h"
#include "auth_wait.h"
#include "coapgw_psk.h"
#include "ev.h"
#include "inbox.h"
#include "ep_claim.h"
#include "log.h"
#include "mqtt_codec.h"
#include "msg.h"
#include "retain.h"
#include "router.h"
#include "server.h"
#include "sess.h"
#include "trie.h"
#include "util.h"

/* An observation of /ps/{filter}. */
struct coapgw_obs_s {
    struct coapgw_obs_s *next;
    coap_session_t *session; /* a reference */
    uint8_t token[8];
    uint8_t token_len;
    uint8_t partial; /* the ACL granted part of the filter: check each topic */
    uint32_t seq;    /* the last Observe number sent */
    uint64_t refreshed_us;
    char *filter;
    size_t flen;
    auth_client_t *ac;
    coap_string_t *query; /* the registration's query: libcoap matches the Block2
                           * follow-ups of a large notification by it */
};

/* A QoS 1 message handed to a worker, waited for. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done;
    msg_t *m;
    size_t delivered;
} coapgw_job_t;

static void deadline_in(struct timespec *dl, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, dl);
    dl->tv_sec += ms / 1000u;
    dl->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (dl->tv_nsec >= 1000000000L) {
        dl->tv_sec++;
        dl->tv_nsec -= 1000000000L;
    }
}

static void mono_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* ---- publishing, on a worker ------------------------------------------------ */

static void job_release(coapgw_job_t *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    msg_unref(&j->m);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void pub_run(worker_t *w, inbox_item_t *it)
{
    if (it->flags >= COAP_OP_ATTACH) { /* the downlink (coapgw_down.c) */
        coapgw_down_run(w, it);
        return;
    }
    if (it->flags == COAP_OP_PUB0) { /* QoS 0: the message alone */
        msg_t *m = it->ptr;
        router_publish(w, m, NULL);
        msg_unref(&m);
        return;
    }
    coapgw_job_t *j = it->ptr;
    size_t d = router_publish(w, j->m, NULL);
    pthread_mutex_lock(&j->mu);
    j->delivered = d;
    j->done = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_release(j);
}

static void pub_drop(inbox_item_t *it)
{
    if (it->flags >= COAP_OP_ATTACH) {
        coapgw_down_drop(it);
    } else if (it->flags == COAP_OP_PUB0) {
        msg_t *m = it->ptr;
        msg_unref(&m);
    } else {
        job_release(it->ptr);
    }
}

/* The QoS 0 messages gathered for each worker during a turn of the gateway
 * thread go out at its end: one inbox post (lock, wake-up) per worker and
 * turn, not per message. */
static void flush_pending(coapgw_t *g)
{
    for (uint32_t i = 0; i < g->srv->nworkers; i++)
        if (g->pending[i].len)
            inbox_post(&g->srv->workers[i].inbox, &g->pending[i]);
}

/* 0 routed (or QoS 0 handed on), -1 not in time, -2 refused by a quota. */
static int publish(coapgw_t *g, msg_t *m, const char *client_id)
{
    uint64_t hash = 1469598103934665603ull;
    for (const char *p = client_id; *p; p++)
        hash = (hash ^ (uint8_t)*p) * 1099511628211ull;
    uint32_t to = (uint32_t)(hash % g->srv->nworkers);
    inbox_item_t it = {.kind = WM_COAP, .ptr = m};
    if (m->qos == 0) {
        inbox_vec_push(&g->pending[to], &it);
        return 0;
    }
    coapgw_job_t *j = an_calloc(1, sizeof(*j));
    pthread_mutex_init(&j->mu, NULL);
    mono_cond_init(&j->cv);
    j->refs = 2;
    j->m = m;
    it.ptr = j;
    it.flags = COAP_OP_PUB1;
    flush_pending(g); /* the QoS 0 messages before it stay before it */
    inbox_vec_t v = {0};
    inbox_vec_push(&v, &it);
    inbox_post(&g->srv->workers[to].inbox, &v);
    inbox_vec_free(&v);
    struct timespec dl;
    deadline_in(&dl, g->c->timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (!j->done)
        if (pthread_cond_timedwait(&j->cv, &j->mu, &dl) == ETIMEDOUT)
            break;
    int rc = !j->done ? -1 : j->delivered == ROUTER_REFUSED ? -2 : 0;
    pthread_mutex_unlock(&j->mu);
    job_release(j);
    return rc;
}

/* ---- authentication, on the gateway thread ---------------------------------- */

/* The chain on this thread (auth_wait.h), then auth.default_policy:
 * AUTH_ALLOW with *acl (the backend's rules, or NULL), else AUTH_DENY. */
static auth_verdict_t authenticate(coapgw_t *g, auth_chain_t *ch, const auth_request_t *r,
                                   auth_acl_t **acl)
{
    auth_verdict_t v = auth_wait_chain(ch, r, g->c->timeout_ms, acl);
    if (v == AUTH_PASS)
        v = g->srv->conf.auth.default_policy == CONF_POLICY_ALLOW ? AUTH_ALLOW : AUTH_DENY;
    return v;
}

/* ---- a request ---------------------------------------------------------------- */

/* 0, or the response code of the fault (404, 400) with *why. */
static int parse_request(const coap_pdu_t *req, coapgw_req_t *q, const char **why)
{
    coap_opt_filter_t f;
    coap_opt_iterator_t it;
    coap_opt_t *o;
    coap_option_filter_clear(&f);
    coap_option_filter_set(&f, COAP_OPTION_URI_PATH);
    coap_option_iterator_init(req, &it, &f);
    int seg = 0;
    q->tlen = 0;
    while ((o = coap_option_next(&it)) != NULL) {
        size_t l = coap_opt_length(o);
        const uint8_t *v = coap_opt_value(o);
        if (seg++ == 0) {
            if (l == 3 && memcmp(v, "cmd", 3) == 0)
                q->cmd = 1; /* the downlink: /cmd alone */
            else if (l != 2 || memcmp(v, "ps", 2) != 0)
                return *why = "no such resource: use /ps/{topic} or /cmd", 404;
            continue;
        }
        if (q->cmd)
            return *why = "no such resource: /cmd has no sub-path", 404;
        if (q->tlen + l + 1 >= sizeof(q->topic))
            return *why = "the topic is too long", 400;
        if (seg > 2)
            q->topic[q->tlen++] = '/';
        memcpy(q->topic + q->tlen, v, l);
        q->tlen += l;
    }
    if (seg == 0)
        return *why = "no such resource: use /ps/{topic} or /cmd", 404;
    if (seg == 1 && !q->cmd)
        return *why = "a topic is required: /ps/{topic}", 400;
    q->topic[q->tlen] = 0;

    coap_option_filter_clear(&f);
    coap_option_filter_set(&f, COAP_OPTION_URI_QUERY);
    coap_option_iterator_init(req, &it, &f);
    while ((o = coap_option_next(&it)) != NULL) {
        size_t l = coap_opt_length(o);
        const char *v = (const char *)coap_opt_value(o);
        const char *eq = memchr(v, '=', l);
        size_t kl = eq ? (size_t)(eq - v) : l;
        size_t vl = eq ? l - kl - 1 : 0;
        char *dst = NULL;
        uint8_t *has = NULL;
#define KEY(name)                                                                                  \
    if (kl == sizeof(#name) - 1 && memcmp(v, #name, kl) == 0) {                                    \
        dst = q->name;                                                                             \
        has = &q->has_##name;                                                                      \
    }
        KEY(qos)
        KEY(retain)
        KEY(token)
        KEY(u)
        KEY(p)
        KEY(c)
#undef KEY
        if (dst == NULL)
            continue; /* an unknown query argument is ignored */
        if (vl >= MAX_ARG)
            return *why = "a query argument is too long", 400;
        memcpy(dst, eq + 1, vl);
        dst[vl] = 0;
        *has = 1;
    }
    return 0;
}

void coapgw_answer(coap_pdu_t *resp, int code, const char *text)
{
    coap_pdu_set_code(resp, COAP_RESPONSE_CODE(code));
    if (text && code >= 400)
        coap_add_data(resp, strlen(text), (const uint8_t *)text);
}

void coapgw_peer_text(coap_session_t *s, char *out, size_t size)
{
    const coap_address_t *a = coap_session_get_addr_remote(s);
    out[0] = 0;
    if (a && a->addr.sa.sa_family == AF_INET) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->addr.sin.sin_addr, ip, sizeof(ip));
        snprintf(out, size, "%s:%u", ip, ntohs(a->addr.sin.sin_port));
    }
}

/* The client behind a request, authenticated: an auth_client_t, or NULL
 * (refused: counted). */
auth_client_t *coapgw_login(coapgw_t *g, coap_session_t *s, const coapgw_req_t *q, char *client_id,
                            size_t idsize)
{
    char peer[80];
    coapgw_peer_text(s, peer, sizeof(peer));
    auth_chain_t *ch = atomic_load(&g->srv->auth);
    char who[256];
    int wl = coapgw_secure_user(g, s, who, sizeof(who));
    if (wl < 0) {
        atomic_fetch_add(&g->refused, 1);
        return NULL;
    }
    if (wl > 0) {
        /* the handshake proved it (a PSK identity, a client certificate):
         * it is the user */
        auth_client_t *ac = an_calloc(1, sizeof(*ac));
        ac->user = an_strndup(who, (size_t)wl);
        snprintf(client_id, idsize, "%s", q->has_c ? q->c : ac->user);
        ac->client_id = an_strndup(client_id, strlen(client_id));
        ac->authed = 1;
        ac->gen = auth_chain_gen(ch);
        return ac;
    }
    const char *user = q->has_u ? q->u : q->has_token && q->has_c ? q->c : NULL;
    const char *pass = q->has_token ? q->token : q->has_p ? q->p : NULL;
    if (q->has_c)
        snprintf(client_id, idsize, "%s", q->c);
    else if (user)
        snprintf(client_id, idsize, "%s", user);
    else
        snprintf(client_id, idsize, "coap-%s", peer);
    auth_request_t r = {.action = AUTH_ACT_CONNECT,
                        .client_id = client_id,
                        .username = user,
                        .password = (const uint8_t *)pass,
                        .password_len = pass ? strlen(pass) : 0,
                        .peer = peer,
                        .listener = UINT32_MAX};
    auth_acl_t *acl = NULL;
    if (authenticate(g, ch, &r, &acl) != AUTH_ALLOW) {
        atomic_fetch_add(&g->refused, 1);
        return NULL;
    }
    auth_client_t *ac = an_calloc(1, sizeof(*ac));
    ac->user = user ? an_strndup(user, strlen(user)) : NULL;
    ac->client_id = an_strndup(client_id, strlen(client_id));
    ac->acl = acl;
    ac->authed = 1;
    ac->gen = auth_chain_gen(ch);
    return ac;
}

/* The topic guards (router.h: $cmd/{id}/..., $shadow/{id}/...) judge the
 * device by its client id and user, as they judge an MQTT client. */
static int guard_allows(coapgw_t *g, const auth_client_t *ac, const char *client_id,
                        const coapgw_req_t *q)
{
    router_who_t who = {client_id, strlen(client_id), ac->user};
    return router_guard_publish(g->srv, &who, (const uint8_t *)q->topic, q->tlen);
}

static void do_publish(coapgw_t *g, coap_session_t *s, const coap_pdu_t *req, const coapgw_req_t *q,
                       coap_pdu_t *resp)
{
    auth_client_t *ac = NULL;
    if (q->tlen == 0 || !mqtt_topic_name_valid((const uint8_t *)q->topic, q->tlen)) {
        coapgw_answer(resp, 400, "the topic must be a topic name (no wildcards)");
        goto out;
    }
    if (q->has_qos && strcmp(q->qos, "0") != 0 && strcmp(q->qos, "1") != 0) {
        coapgw_answer(resp, 400, "qos must be 0 or 1");
        goto out;
    }
    uint8_t retain = 0;
    if (q->has_retain) {
        if (strcmp(q->retain, "1") == 0 || strcasecmp(q->retain, "true") == 0)
            retain = 1;
        else if (strcmp(q->retain, "0") != 0 && strcasecmp(q->retain, "false") != 0) {
            coapgw_answer(resp, 400, "retain must be 0 or 1");
            goto out;
        }
    }
    size_t len = 0, offset = 0, total = 0;
    const uint8_t *data = NULL;
    if (!coap_get_data_large(req, &len, &data, &offset, &total))
        len = total = 0;
    if (total > g->c->max_body || len + q->tlen + 64 > g->srv->conf.max_packet_size) {
        coapgw_answer(resp, 413, "the payload is larger than coap.max_body");
        goto out;
    }
    char client_id[MAX_ARG + 96];
    ac = coapgw_login(g, s, q, client_id, sizeof(client_id));
    if (ac == NULL) {
        coapgw_answer(resp, 401, "not authorized");
        goto out;
    }
    auth_chain_t *ch = atomic_load(&g->srv->auth);
    if (!auth_chain_acl(ch, ac, AUTH_ACT_PUBLISH, (const uint8_t *)q->topic, q->tlen, 0)) {
        coapgw_answer(resp, 403, "publish to this topic is denied");
        goto out;
    }
    if (router_guard_first(g->srv, (uint8_t)q->topic[0]) && !guard_allows(g, ac, client_id, q)) {
        coapgw_answer(resp, 403, "publish to this topic is denied");
        goto out;
    }
    uint8_t qos = q->has_qos ? (uint8_t)(q->qos[0] - '0') : 0;
    msg_t *m = msg_new_v5((const uint8_t *)q->topic, (uint16_t)q->tlen, NULL, 0, data,
                          (uint32_t)len, qos, retain, 0);
    const msg_origin_t *origin =
        msg_origin_new(MSG_PROTO_API, client_id, strlen(client_id), ac->user, "coap");
    msg_set_origin(m, origin);
    msg_origin_unref(&origin);
    int rc = publish(g, m, client_id); /* takes m */
    if (rc == -1)
        coapgw_answer(resp, 503, "the broker did not route in time");
    else if (rc == -2)
        coapgw_answer(resp, 503, "a subscriber's queue is full");
    else {
        atomic_fetch_add(&g->published, 1);
        coapgw_answer(resp, 204, NULL);
    }
out:
    auth_client_free(ac);
}

/* ---- observations (the gateway thread) ---------------------------------------- */

static int filter_ref(coapgw_t *g, const char *filter)
{
    for (uint32_t i = 0; i < g->nfilters; i++)
        if (strcmp(g->filters[i].filter, filter) == 0) {
            g->filters[i].refs++;
            return 0;
        }
    if (router_consumer_subscribe(g->consumer, filter, 1) < 0)
        return -1;
    if (g->nfilters == g->capfilters) {
        g->capfilters = g->capfilters ? g->capfilters * 2 : 16;
        g->filters = an_realloc(g->filters, g->capfilters * sizeof(*g->filters));
    }
    g->filters[g->nfilters++] = (coapgw_filter_t){an_strndup(filter, strlen(filter)), 1};
    return 0;
}

static void filter_unref(coapgw_t *g, const char *filter)
{
    for (uint32_t i = 0; i < g->nfilters; i++)
        if (strcmp(g->filters[i].filter, filter) == 0) {
            if (--g->filters[i].refs == 0) {
                router_consumer_unsubscribe(g->consumer, filter);
                free(g->filters[i].filter);
                g->filters[i] = g->filters[--g->nfilters];
            }
            return;
        }
}

static coapgw_obs_t **obs_find(coapgw_t *g, coap_session_t *s, coap_bin_const_t tok)
{
    for (coapgw_obs_t **pp = &g->obs; *pp; pp = &(*pp)->next)
        if ((*pp)->session == s && (*pp)->token_len == tok.length &&
            memcmp((*pp)->token, tok.s, tok.length) == 0)
            return pp;
    return NULL;
}

static void obs_remove(coapgw_t *g, coapgw_obs_t **pp)
{
    coapgw_obs_t *o = *pp;
    *pp = o->next;
    filter_unref(g, o->filter);
    auth_client_free(o->ac);
    coap_delete_string(o->query);
    coap_session_release(o->session);
    free(o->filter);
    free(o);
    atomic_fetch_sub(&g->observers, 1);
}

void coapgw_add_observe(coap_pdu_t *pdu, uint32_t seq)
{
    uint8_t buf[4];
    coap_add_option(pdu, COAP_OPTION_OBSERVE, coap_encode_var_safe(buf, sizeof(buf), seq), buf);
}

static void retained_queue(coapgw_t *g, const coapgw_obs_t *o);
static void release_msg(coap_session_t *s, void *app_ptr);

static void first_retained(void *ud, msg_t *m)
{
    msg_t **out = ud;
    if (*out == NULL)
        *out = m;
    else
        msg_unref(&m);
}

/* A plain GET of /ps/{topic}: its retained message (2.05), 4.04 without
 * one; authenticated and checked by the ACL as a read. */
static void current_value(coapgw_t *g, coap_session_t *s, const coap_pdu_t *req,
                          const coapgw_req_t *q, coap_pdu_t *resp)
{
    char client_id[MAX_ARG + 96];
    if (!mqtt_topic_name_valid((const uint8_t *)q->topic, q->tlen)) {
        coapgw_answer(resp, 400, "a plain GET reads one topic (no wildcards): observe a filter");
        return;
    }
    auth_client_t *ac = coapgw_login(g, s, q, client_id, sizeof(client_id));
    if (ac == NULL) {
        coapgw_answer(resp, 401, "not authorized");
        return;
    }
    auth_chain_t *ch = atomic_load(&g->srv->auth);
    int ok = auth_chain_acl(ch, ac, AUTH_ACT_SUBSCRIBE, (const uint8_t *)q->topic, q->tlen, 0);
    auth_client_free(ac);
    if (!ok) {
        coapgw_answer(resp, 403, "reading this topic is denied");
        return;
    }
    msg_t *m = NULL;
    retain_match(g->srv->retain, (const uint8_t *)q->topic, q->tlen, first_retained, &m);
    if (m == NULL) {
        coapgw_answer(resp, 404, "no retained message on this topic");
        return;
    }
    coap_pdu_set_code(resp, COAP_RESPONSE_CODE(205));
    const uint8_t *payload = m->data + m->topic_len + m->props_len;
    if ((size_t)m->payload_len + 32 <= coap_session_max_pdu_size(s)) {
        coap_add_data(resp, m->payload_len, payload);
        msg_unref(&m);
    } else { /* block-wise: libcoap keeps the reference until the last block */
        coap_string_t *query = coap_get_query(req);
        if (!coap_add_data_large_response(g->res, s, req, resp, query,
                                          COAP_MEDIATYPE_APPLICATION_OCTET_STREAM, -1, 0,
                                          m->payload_len, payload, release_msg, m))
            coapgw_answer(resp, 500, "cannot send the retained message");
        coap_delete_string(query);
    }
}

static void do_observe(coapgw_t *g, coap_session_t *s, const coap_pdu_t *req, const coapgw_req_t *q,
                       coap_pdu_t *resp)
{
    auth_client_t *ac = NULL;
    coap_opt_iterator_t it;
    coap_opt_t *ob = coap_check_option(req, COAP_OPTION_OBSERVE, &it);
    int action = ob ? (int)coap_decode_var_bytes(coap_opt_value(ob), coap_opt_length(ob)) : -1;
    coap_bin_const_t tok = coap_pdu_get_token(req);
    if (q->tlen == 0 || !mqtt_topic_filter_valid((const uint8_t *)q->topic, q->tlen)) {
        coapgw_answer(resp, 400, "the path must be a topic filter");
        goto out;
    }
    if (action == COAP_OBSERVE_CANCEL) {
        coapgw_obs_t **pp = obs_find(g, s, tok);
        if (pp)
            obs_remove(g, pp);
        coapgw_answer(resp, 205, NULL);
        goto out;
    }
    if (action != COAP_OBSERVE_ESTABLISH) {
        current_value(g, s, req, q, resp); /* a plain GET */
        goto out;
    }
    coapgw_obs_t **pp = obs_find(g, s, tok);
    if (pp) { /* a re-registration: the observation lives on */
        (*pp)->refreshed_us = an_now_us();
        coapgw_answer(resp, 205, NULL);
        coapgw_add_observe(resp, (*pp)->seq);
        goto out;
    }
    if (tok.length > 8) {
        coapgw_answer(resp, 400, "a token is at most 8 bytes");
        goto out;
    }
    char client_id[MAX_ARG + 96];
    ac = coapgw_login(g, s, q, client_id, sizeof(client_id));
    if (ac == NULL) {
        coapgw_answer(resp, 401, "not authorized");
        goto out;
    }
    auth_chain_t *ch = atomic_load(&g->srv->auth);
    int v = auth_chain_acl(ch, ac, AUTH_ACT_SUBSCRIBE, (const uint8_t *)q->topic, q->tlen, 1);
    if (v == 0) {
        coapgw_answer(resp, 403, "subscribing to this filter is denied");
        goto out;
    }
    if (atomic_load(&g->observers) >= g->c->max_observers) {
        coapgw_answer(resp, 503, "too many observations (coap.max_observers)");
        goto out;
    }
    if (filter_ref(g, q->topic) < 0) {
        coapgw_answer(resp, 400, "the path must be a topic filter");
        goto out;
    }
    coapgw_obs_t *o = an_calloc(1, sizeof(*o));
    o->session = coap_session_reference(s);
    memcpy(o->token, tok.s, tok.length);
    o->token_len = (uint8_t)tok.length;
    o->partial = v == AUTH_ACL_PARTIAL;
    o->seq = 1;
    o->refreshed_us = an_now_us();
    o->filter = an_strndup(q->topic, q->tlen);
    o->flen = q->tlen;
    o->ac = ac;
    ac = NULL;
    o->query = coap_get_query(req);
    o->next = g->obs;
    g->obs = o;
    atomic_fetch_add(&g->observers, 1);
    coapgw_answer(resp, 205, NULL);
    coapgw_add_observe(resp, o->seq);
    retained_queue(g, o);
out:
    auth_client_free(ac);
}

/* ---- retained messages for a new observation ------------------------------------- */

/* The retained messages matching a new observation's filter, sent as its
 * first notifications once the registration's 2.05 has gone (an item of
 * the gateway's own inbox: handled in a later loop turn, after libcoap
 * sent the response the handler built). */
#define COAPGW_MAX_RETAINED 1000 /* per registration; more are not sent */

typedef struct {
    coap_session_t *session; /* a reference */
    uint8_t token[8];
    uint8_t token_len;
    uint32_t n, cap;
    msg_t **m; /* references */
} coapgw_retained_t;

static void collect_retained(void *ud, msg_t *m)
{
    coapgw_retained_t *r = ud;
    if (r->n == COAPGW_MAX_RETAINED) {
        msg_unref(&m);
        return;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->m = an_realloc(r->m, r->cap * sizeof(*r->m));
    }
    r->m[r->n++] = m;
}

static void retained_free(coapgw_retained_t *r)
{
    for (uint32_t i = 0; i < r->n; i++)
        msg_unref(&r->m[i]);
    free(r->m);
    coap_session_release(r->session);
    free(r);
}

/* After do_observe registered o: its retained messages, if any, queued. */
static void retained_queue(coapgw_t *g, const coapgw_obs_t *o)
{
    coapgw_retained_t *r = an_calloc(1, sizeof(*r));
    retain_match(g->srv->retain, (const uint8_t *)o->filter, o->flen, collect_retained, r);
    if (r->n == 0) {
        free(r->m);
        free(r);
        return;
    }
    r->session = coap_session_reference(o->session);
    memcpy(r->token, o->token, o->token_len);
    r->token_len = o->token_len;
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = ITEM_RETAINED, .ptr = r};
    inbox_vec_push(&v, &it);
    inbox_post(&g->inbox, &v); /* never refuses: the gateway's own inbox */
    inbox_vec_free(&v);
}

/* ITEM_RETAINED: to the observation, if it still exists (ACL per message
 * when its filter was only partly granted). */
static void retained_send(coapgw_t *g, coapgw_retained_t *r)
{
    coapgw_obs_t **pp = obs_find(g, r->session, (coap_bin_const_t){r->token_len, r->token});
    auth_chain_t *ch = atomic_load(&g->srv->auth);
    for (uint32_t i = 0; pp && i < r->n; i++) {
        coapgw_obs_t *o = *pp;
        const msg_t *m = r->m[i];
        if (o->partial && !auth_chain_acl(ch, o->ac, AUTH_ACT_SUBSCRIBE, m->data, m->topic_len, 0))
            continue;
        o->seq = (o->seq + 1) & 0xFFFFFF;
        coapgw_notify_one(g, o->session, o->token, o->token_len, o->query, o->seq,
                          g->c->confirmable, m);
    }
    retained_free(r);
}

/* ---- a rate per source address (coap.rate) ------------------------------------- */

/* A token bucket per IPv4 source address in a fixed table (allocated at
 * start when coap.rate is set, nothing per datagram): an address takes the
 * slot its hash picks, replacing another one there (which then starts with
 * a full bucket again: a collision can only let more through, never refuse
 * a legitimate address).  The gateway thread's only. */
#define COAPGW_RATE_SLOTS 4096

struct coapgw_rate_s {
    uint32_t addr;
    uint32_t milli; /* thousandths of a request */
    uint64_t at_ms;
};

/* 1: the request may go on; 0: over coap.rate (4.29). */
static int rate_take(coapgw_t *g, coap_session_t *s)
{
    const coap_address_t *a = coap_session_get_addr_remote(s);
    if (g->rate == NULL || a == NULL || a->addr.sa.sa_family != AF_INET)
        return 1;
    uint32_t ip = a->addr.sin.sin_addr.s_addr;
    struct coapgw_rate_s *r =
        &g->rate[(uint32_t)((ip * 0x9E3779B1u) >> 20) & (COAPGW_RATE_SLOTS - 1)];
    uint64_t now = an_now_us() / 1000u;
    uint64_t cap = (uint64_t)g->c->rate * 1000u; /* a second's worth */
    if (r->addr != ip || r->at_ms == 0) {
        *r = (struct coapgw_rate_s){
            .addr = ip, .milli = (uint32_t)AN_MIN(cap, UINT32_MAX), .at_ms = now};
    } else if (now > r->at_ms) {
        uint64_t m = r->milli + (now - r->at_ms) * g->c->rate;
        r->milli = (uint32_t)AN_MIN(AN_MIN(m, cap), UINT32_MAX);
        r->at_ms = now;
    }
    if (r->milli < 1000u) {
        atomic_fetch_add(&g->limited, 1);
        return 0;
    }
    r->milli -= 1000u;
    return 1;
}

static void on_request(coap_resource_t *r, coap_session_t *s, const coap_pdu_t *req,
                       const coap_string_t *query, coap_pdu_t *resp)
{
    (void)query;
    coapgw_t *g = coap_resource_get_userdata(r);
    atomic_fetch_add(&g->requests, 1);
    if (!rate_take(g, s)) {
        /* no diagnostic text: an answer to a spoofed address is no larger
         * than what came */
        coapgw_answer(resp, 429, NULL);
        return;
    }
    coapgw_req_t *q = an_calloc(1, sizeof(*q));
    const char *why = NULL;
    int code = parse_request(req, q, &why);
    if (code)
        coapgw_answer(resp, code, why);
    else if (q->cmd && coap_pdu_get_code(req) != COAP_REQUEST_CODE_GET)
        coapgw_answer(resp, 405, "/cmd is observed with GET");
    else if (q->cmd)
        coapgw_down_request(g, s, req, q, resp);
    else if (coap_pdu_get_code(req) == COAP_REQUEST_CODE_GET)
        do_observe(g, s, req, q, resp);
    else
        do_publish(g, s, req, q, resp);
    free(q);
}

/* A CON notification the client reset or never acknowledged: the
 * observation ends. */
static void on_nack(coap_session_t *s, const coap_pdu_t *sent, const coap_nack_reason_t reason,
                    const coap_mid_t mid)
{
    (void)mid;
    if (reason != COAP_NACK_RST && reason != COAP_NACK_TOO_MANY_RETRIES)
        return;
    coapgw_t *g = coap_get_app_data(coap_session_get_context(s));
    if (g == NULL || sent == NULL)
        return;
    coapgw_obs_t **pp = obs_find(g, s, coap_pdu_get_token(sent));
    if (pp)
        obs_remove(g, pp);
    else
        coapgw_down_nack(g, s, coap_pdu_get_token(sent));
}

/* libcoap is done with a block-wise notification's body. */
static void release_msg(coap_session_t *s, void *app_ptr)
{
    (void)s;
    msg_t *m = app_ptr;
    msg_unref(&m);
}

coap_mid_t coapgw_notify_one(coapgw_t *g, coap_session_t *s, const uint8_t *token,
                             uint8_t token_len, const coap_string_t *query, uint32_t seq, int con,
                             const msg_t *m)
{
    const uint8_t *payload = m->data + m->topic_len + m->props_len;
    size_t max = coap_session_max_pdu_size(s);
    coap_pdu_t *pdu = coap_pdu_init(con ? COAP_MESSAGE_CON : COAP_MESSAGE_NON,
                                    COAP_RESPONSE_CODE_CONTENT, coap_new_message_id(s), max);
    if (pdu == NULL) {
        atomic_fetch_add(&g->dropped, 1);
        return COAP_INVALID_MID;
    }
    coap_add_token(pdu, token_len, token);
    coapgw_add_observe(pdu, seq);
    if ((size_t)m->payload_len + 32 <= max) {
        coap_add_data(pdu, m->payload_len, payload);
    } else if (!coap_add_data_large_response(
                   g->res, s, g->get_req, pdu, query, COAP_MEDIATYPE_APPLICATION_OCTET_STREAM, -1,
                   0, m->payload_len, payload, release_msg, msg_ref((msg_t *)m))) {
        /* Block2: libcoap keeps the message (a reference) for the client's
         * follow-up requests of the other blocks */
        coap_delete_pdu(pdu);
        atomic_fetch_add(&g->dropped, 1);
        return COAP_INVALID_MID;
    }
    coap_mid_t mid = coap_send(s, pdu);
    if (mid == COAP_INVALID_MID) {
        atomic_fetch_add(&g->dropped, 1);
        return COAP_INVALID_MID;
    }
    atomic_fetch_add(&g->notified, 1);
    return mid;
}

void coapgw_send_final(coap_session_t *s, const uint8_t *token, uint8_t token_len, int code)
{
    coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_NON, COAP_RESPONSE_CODE(code),
                                    coap_new_message_id(s), coap_session_max_pdu_size(s));
    if (pdu) {
        coap_add_token(pdu, token_len, token);
        coap_send(s, pdu);
    }
}

static void notify(coapgw_t *g, msg_t *m)
{
    const uint8_t *topic = m->data;
    auth_chain_t *ch = NULL;
    for (coapgw_obs_t *o = g->obs; o; o = o->next) {
        if (!topic_matches((const uint8_t *)o->filter, o->flen, topic, m->topic_len))
            continue;
        if (o->partial) {
            if (ch == NULL)
                ch = atomic_load(&g->srv->auth);
            if (!auth_chain_acl(ch, o->ac, AUTH_ACT_SUBSCRIBE, topic, m->topic_len, 0))
                continue;
        }
        o->seq = (o->seq + 1) & 0xFFFFFF;
        coapgw_notify_one(g, o->session, o->token, o->token_len, o->query, o->seq,
                          g->c->confirmable, m);
    }
}

/* Observations not refreshed within the lifetime end with a 5.03. */
static void sweep(coapgw_t *g)
{
    uint64_t now = an_now_us();
    if (now - g->last_sweep_us < 1000000)
        return;
    g->last_sweep_us = now;
    uint64_t life = (uint64_t)g->c->observe_lifetime_s * 1000000;
    coapgw_obs_t **pp = &g->obs;
    while (*pp) {
        coapgw_obs_t *o = *pp;
        if (now - o->refreshed_us < life) {
            pp = &o->next;
            continue;
        }
        coapgw_send_final(o->session, o->token, o->token_len, 503);
        atomic_fetch_add(&g->expired, 1);
        obs_remove(g, pp);
    }
    coapgw_down_sweep(g, now);
}

/* ---- the gateway thread --------------------------------------------------------- */

/* libcoap 4.3 consumes an empty ACK without telling the application, but
 * the downlink acknowledges a QoS 1/2 message when the device ACKs its CON
 * notification: while such a notification waits (con_waiting), the
 * datagram libcoap is about to read (it reads one per call, from the
 * endpoint's socket) is looked at first with MSG_PEEK.  An empty ACK is 4
 * bytes: version 1, type ACK, no token, code 0.  Nothing is peeked while no
 * CON waits; DTLS records are not readable here (coapgw_down.c
 * acknowledges those at the hand-off). */
static void io_once(coapgw_t *g)
{
    struct epoll_event ev[8];
    if (g->con_waiting && g->udp_fd >= 0) {
        uint8_t b[4];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(g->udp_fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&from, &fl);
        if (n == 4 && b[0] == 0x60 && b[1] == 0 && fl == sizeof(from) && from.sin_family == AF_INET)
            coapgw_down_acked(g, &from, (uint16_t)(b[2] << 8 | b[3]));
    }
    /* libcoap's own turn, split: the descriptors that are ready now (one
     * datagram per ready endpoint), without its timer work: that runs
     * once per gateway turn (io_timers), not per datagram (it re-arms
     * libcoap's timerfd each time: a system call per request) */
    int n = epoll_wait(g->coap_ev.fd, ev, (int)(sizeof(ev) / sizeof(ev[0])), 0);
    if (n > 0)
        coap_io_do_epoll(g->ctx, ev, (size_t)n);
}

/* libcoap's timers: retransmissions, idle sessions, the next wake-up (its
 * timerfd, inside coap_fd). */
static void io_timers(coapgw_t *g)
{
    coap_tick_t now;
    coap_ticks(&now);
    coap_io_prepare_epoll(g->ctx, now);
}

static void on_coap_fd(ev_loop_t *loop, ev_watcher_t *w, uint32_t events)
{
    (void)loop;
    (void)events;
    coapgw_t *g = container_of(w, coapgw_t, coap_ev);
    /* libcoap reads one datagram per call: take up to 64 while requests keep
     * coming (a call that handled none ends it) before handing the turn's
     * publishes on */
    for (int i = 0; i < 64; i++) {
        uint64_t before = atomic_load_explicit(&g->requests, memory_order_relaxed);
        io_once(g);
        if (atomic_load_explicit(&g->requests, memory_order_relaxed) == before)
            break;
    }
    io_timers(g);
    flush_pending(g);
}

static void on_inbox(ev_loop_t *loop, ev_watcher_t *w, uint32_t events)
{
    (void)loop;
    (void)events;
    coapgw_t *g = container_of(w, coapgw_t, inbox_ev);
    inbox_vec_t v = {0};
    inbox_take(&g->inbox, &v);
    for (size_t i = 0; i < v.len; i++) {
        if (v.items[i].kind == ITEM_DOWN || v.items[i].kind == ITEM_END) {
            coapgw_down_item(g, &v.items[i]);
            continue;
        }
        if (v.items[i].kind == ITEM_RETAINED) {
            retained_send(g, v.items[i].ptr);
            continue;
        }
        if (v.items[i].kind != ITEM_MSG)
            continue;
        msg_t *m = v.items[i].ptr;
        notify(g, m);
        msg_unref(&m);
    }
    flush_pending(g); /* the downlink's acknowledgements */
    inbox_vec_free(&v);
}

static void *gw_thread(void *arg)
{
    coapgw_t *g = arg;
    pthread_setname_np(pthread_self(), "coap");
    g->last_sweep_us = an_now_us();
    while (!atomic_load(&g->stopping)) {
        if (ev_loop_run_once(&g->loop, 1000) < 0 && errno != EINTR) {
            log_error("coap: event loop: %s", strerror(errno));
            break;
        }
        io_timers(g); /* what the sends armed */
        sweep(g);
        flush_pending(g);
    }
    return NULL;
}

/* ---- the consumer, on the workers --------------------------------------------- */

static void on_message(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                       void *user)
{
    (void)c;
    (void)qos;
    (void)flags;
    coapgw_t *g = user;
    coapgw_wctx_t *x = module_worker_ctx(w, g->mi->index);
    inbox_item_t it = {.kind = ITEM_MSG, .ptr = msg_ref(m)};
    inbox_vec_push(&x->out, &it);
    module_turn_end_ask(w, g->mi);
}

static void on_consumer_free(router_consumer_t *c, void *user)
{
    (void)c;
    (void)user; /* the module's state is freed by its free hook */
}

static const consumer_ops_t consumer_ops = {.on_message = on_message, .free = on_consumer_free};

static void gw_turn_end(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)w;
    coapgw_t *g = mi->state;
    coapgw_wctx_t *x = ctx;
    if (x->out.len)
        inbox_post(&g->inbox, &x->out);
}

/* ---- libcoap's log --------------------------------------------------------------- */

static void coap_log_to_ours(coap_log_t level, const char *text)
{
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n')
        n--;
    if (level <= LOG_ERR)
        log_warn("coap: libcoap: %.*s", (int)n, text);
    else
        log_debug("coap: libcoap: %.*s", (int)n, text);
}

/* ---- the module ------------------------------------------------------------------ */

/* cert_username, by CONF_CERT_USER_* (none is refused: the handshake's
 * identity must name the user) */
static const char *const cert_user_names[] = {"none", "cn", "san", NULL};

static void gw_defaults(void *conf)
{
    coapgw_conf_t *c = conf;
    c->enabled = 0;
    c->confirmable = 0;
    snprintf(c->bind, sizeof(c->bind), "%s", "127.0.0.1");
    c->port = 5683;
    c->max_body = 64 * 1024;
    c->max_observers = 10000;
    c->max_idle_sessions = 10000;
    c->observe_lifetime_s = 300;
    c->timeout_ms = 5000;
    c->psk_file[0] = 0;
    c->dtls_port = 5684;
    c->cert_file[0] = c->key_file[0] = c->ca_file[0] = 0;
    c->cert_username = CONF_CERT_USER_CN;
    c->tcp = 0;
    c->tcp_port = 5683;
    c->tls_port = 5684;
    c->rate = 0;
    c->session_expiry = 3600;
    c->nsubs = 1;
    snprintf(c->subs[0], sizeof(c->subs[0]), "%s", "$cmd/{id}/#");
}

static const conf_key_t gw_keys[] = {
    CONF_KEY_BOOL(coapgw_conf_t, enabled, "enabled"),
    CONF_KEY_STR(coapgw_conf_t, bind, "bind", CONF_SEC_NONEMPTY),
    CONF_KEY_U32(coapgw_conf_t, port, "port", 0, 65535),
    CONF_KEY_U32(coapgw_conf_t, max_body, "max_body", 16, 16u * 1024 * 1024),
    CONF_KEY_U32(coapgw_conf_t, max_observers, "max_observers", 1, 10000000),
    CONF_KEY_U32(coapgw_conf_t, max_idle_sessions, "max_idle_sessions", 1, 10000000),
    CONF_KEY_U32(coapgw_conf_t, observe_lifetime_s, "observe_lifetime_s", 1, 86400 * 7),
    CONF_KEY_BOOL(coapgw_conf_t, confirmable, "confirmable"),
    CONF_KEY_MS(coapgw_conf_t, timeout_ms, "timeout", 10, 600000),
    CONF_KEY_STR(coapgw_conf_t, psk_file, "psk_file", 0),
    CONF_KEY_U32(coapgw_conf_t, dtls_port, "dtls_port", 0, 65535),
    CONF_KEY_STR(coapgw_conf_t, cert_file, "cert_file", 0),
    CONF_KEY_STR(coapgw_conf_t, key_file, "key_file", 0),
    CONF_KEY_STR(coapgw_conf_t, ca_file, "ca_file", 0),
    CONF_KEY_ENUM(coapgw_conf_t, cert_username, "cert_username", cert_user_names),
    CONF_KEY_BOOL(coapgw_conf_t, tcp, "tcp"),
    CONF_KEY_U32(coapgw_conf_t, tcp_port, "tcp_port", 0, 65535),
    CONF_KEY_U32(coapgw_conf_t, tls_port, "tls_port", 0, 65535),
    CONF_KEY_U32(coapgw_conf_t, rate, "rate", 0, 10000000),
    CONF_KEY_U32(coapgw_conf_t, session_expiry, "session_expiry", 0, 100u * 365 * 86400),
    CONF_KEY_NAMES(coapgw_conf_t, subs, nsubs, "subscriptions", COAPGW_MAX_SUBS),
};

static int gw_load(conf_sec_t *s, void *conf)
{
    coapgw_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(gw_keys), c) < 0)
        return -1;
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (!ep_claim_template_ok(c->subs[i]))
            return conf_sec_fail(s, "subscriptions", "\"%.80s\": a topic filter ({id}: the device)",
                                 c->subs[i]);
    if (c->cert_username == CONF_CERT_USER_NONE)
        return conf_sec_fail(s, "cert_username", "cn or san");
    if (coapgw_sec_check(s, c) < 0)
        return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, c->bind, &a) != 1)
        return conf_sec_fail(s, "bind", "\"%.60s\": an IPv4 address", c->bind);
    return 0;
}

static void gw_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(gw_keys), conf, fn, ud);
}

static int gw_init(module_inst_t *mi)
{
    const coapgw_conf_t *c = mi->conf;
    if (!c->enabled)
        return 0;
    coapgw_t *g = an_calloc(1, sizeof(*g));
    g->srv = mi->srv;
    g->mi = mi;
    g->c = c;
    g->loop.epfd = -1;
    pthread_mutex_init(&g->down_mu, NULL);
    g->udp_fd = -1;
    if (c->rate)
        g->rate = an_calloc(COAPGW_RATE_SLOTS, sizeof(*g->rate));
    mi->state = g;
    if (inbox_init(&g->inbox) != 0) {
        log_error("coap: inbox: %s", strerror(errno));
        return -1;
    }
    g->inbox_ok = 1;
    g->pending = an_calloc(mi->srv->nworkers, sizeof(*g->pending));
    g->consumer = router_consumer_new(mi->srv, "coap", &consumer_ops, g);
    static const worker_inbox_kind_t kind = {.run = pub_run, .drop = pub_drop};
    worker_inbox_register(mi->srv, WM_COAP, &kind);
    return 0;
}

static int gw_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    (void)w;
    if (mi->state)
        *ctx = an_calloc(1, sizeof(coapgw_wctx_t));
    return 0;
}

static void gw_worker_free(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)mi;
    (void)w;
    coapgw_wctx_t *x = ctx;
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->out.len; i++) {
        if (x->out.items[i].kind != ITEM_MSG) {
            coapgw_down_item_drop(&x->out.items[i]);
            continue;
        }
        msg_t *m = x->out.items[i].ptr;
        msg_unref(&m);
    }
    inbox_vec_free(&x->out);
    free(x);
}

static int gw_start(module_inst_t *mi)
{
    coapgw_t *g = mi->state;
    if (g == NULL)
        return 0;
    coap_startup();
    coap_set_log_handler(coap_log_to_ours);
    coap_set_log_level(LOG_WARNING);
    g->ctx = coap_new_context(NULL);
    if (g->ctx == NULL) {
        log_error("coap: cannot create a libcoap context");
        return -1;
    }
    coap_set_app_data(g->ctx, g);
    /* libcoap keeps a session per source address: bounded, so that a flood
     * from spoofed addresses recycles the oldest idle one (an observation's
     * session is held, not idle; DTLS answers with a cookie first) */
    coap_context_set_max_idle_sessions(g->ctx, g->c->max_idle_sessions);
    coap_context_set_block_mode(g->ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
    if (coapgw_listen(g) < 0)
        return -1;
    g->get_req = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_GET, 0, 16);
    if (g->get_req == NULL) {
        log_error("coap: out of memory");
        return -1;
    }
    g->res = coap_resource_unknown_init2(on_request, 0);
    coap_register_request_handler(g->res, COAP_REQUEST_POST, on_request);
    coap_register_request_handler(g->res, COAP_REQUEST_GET, on_request);
    coap_resource_set_userdata(g->res, g);
    coap_add_resource(g->ctx, g->res);
    coap_register_nack_handler(g->ctx, on_nack);
    int fd = coap_context_get_coap_fd(g->ctx);
    if (fd < 0) {
        log_error("coap: libcoap was built without epoll: no descriptor to watch");
        return -1;
    }
    if (ev_loop_init(&g->loop, 64, NULL) < 0) {
        log_error("coap: event loop: %s", strerror(errno));
        return -1;
    }
    ev_watcher_init(&g->coap_ev, fd, on_coap_fd);
    ev_watcher_init(&g->inbox_ev, g->inbox.evfd, on_inbox);
    if (ev_watch_start(&g->loop, &g->coap_ev, EV_READ) < 0 ||
        ev_watch_start(&g->loop, &g->inbox_ev, EV_READ) < 0) {
        log_error("coap: event loop: %s", strerror(errno));
        return -1;
    }
    if (pthread_create(&g->thread, NULL, gw_thread, g) != 0) {
        log_error("coap: cannot start its thread");
        return -1;
    }
    g->thread_started = 1;
    return 0;
}

static void gw_stop(module_inst_t *mi)
{
    coapgw_t *g = mi->state;
    if (g == NULL || !g->thread_started)
        return;
    atomic_store(&g->stopping, 1);
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = ITEM_WAKE};
    inbox_vec_push(&v, &it);
    inbox_post(&g->inbox, &v);
    inbox_vec_free(&v);
    pthread_join(g->thread, NULL);
    g->thread_started = 0;
}

static void gw_free(module_inst_t *mi)
{
    coapgw_t *g = mi->state;
    if (g == NULL)
        return;
    gw_stop(mi);
    while (g->obs)
        obs_remove(g, &g->obs);
    coapgw_down_free(g);
    for (uint32_t i = 0; i < g->nfilters; i++)
        free(g->filters[i].filter);
    free(g->filters);
    for (uint32_t i = 0; g->pending && i < g->srv->nworkers; i++) {
        for (size_t k = 0; k < g->pending[i].len; k++)
            pub_drop(&g->pending[i].items[k]);
        inbox_vec_free(&g->pending[i]);
    }
    free(g->pending);
    if (g->inbox_ok) {
        inbox_vec_t v = {0};
        inbox_take(&g->inbox, &v);
        for (size_t i = 0; i < v.len; i++)
            if (v.items[i].kind == ITEM_MSG) {
                msg_t *m = v.items[i].ptr;
                msg_unref(&m);
            } else if (v.items[i].kind == ITEM_RETAINED) {
                retained_free(v.items[i].ptr); /* before the context goes */
            } else if (v.items[i].kind != ITEM_WAKE) {
                coapgw_down_item_drop(&v.items[i]);
            }
        inbox_vec_free(&v);
        inbox_destroy(&g->inbox);
    }
    if (g->loop.epfd >= 0)
        ev_loop_free(&g->loop);
    coap_delete_pdu(g->get_req);
    if (g->ctx) {
        coap_free_context(g->ctx); /* frees the resource and the endpoint */
        coap_cleanup();
    }
    coapgw_psk_free(g->psk);
    pthread_mutex_destroy(&g->down_mu);
    free(g->rate);
    free(g);
    mi->state = NULL;
}

static void gw_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    coapgw_t *g = mi->state;
    if (g == NULL)
        return;
    static const module_counter_t ctr[] = {
        {"antenna_coap_requests_total", "CoAP requests handled", offsetof(coapgw_t, requests)},
        {"antenna_coap_published_total", "messages published by CoAP devices",
         offsetof(coapgw_t, published)},
        {"antenna_coap_notifications_total", "Observe notifications sent",
         offsetof(coapgw_t, notified)},
        {"antenna_coap_auth_refused_total", "CoAP requests refused by the auth chain",
         offsetof(coapgw_t, refused)},
        {"antenna_coap_handshakes_failed_total",
         "DTLS/TLS handshakes failed (unknown PSK identity, a certificate not trusted)",
         offsetof(coapgw_t, handshakes_failed)},
        {"antenna_coap_dropped_total", "notifications not sent (libcoap refused them)",
         offsetof(coapgw_t, dropped)},
        {"antenna_coap_observations_expired_total",
         "observations dropped after coap.observe_lifetime_s", offsetof(coapgw_t, expired)},
        {"antenna_coap_rate_limited_total",
         "requests refused with 4.29 (coap.rate per source address)", offsetof(coapgw_t, limited)},
        {"antenna_coap_downlink_attached_total",
         "observations of /cmd attached to their device's session",
         offsetof(coapgw_t, down_attached)},
        {"antenna_coap_downlink_delivered_total", "session messages sent as /cmd notifications",
         offsetof(coapgw_t, down_delivered)},
        {"antenna_coap_downlink_takeovers_total", "sessions an observation of /cmd took over",
         offsetof(coapgw_t, down_takeovers)},
    };
    module_metrics_counters(mm, g, ctr, sizeof(ctr) / sizeof(ctr[0]));
    module_metrics_family(mm, "antenna_coap_observers", "gauge", "CoAP observations held");
    module_metrics_printf(mm, "antenna_coap_observers %u\n", atomic_load(&g->observers));
}

const module_t coapgw_module = {
    .name = "coap",
    .section = "coap",
    .conf_size = sizeof(coapgw_conf_t),
    .conf_defaults = gw_defaults,
    .conf_load = gw_load,
    .conf_walk = gw_walk,
    .init = gw_init,
    .start = gw_start,
    .stop = gw_stop,
    .free = gw_free,
    .worker_init = gw_worker_init,
    .worker_free = gw_worker_free,
    .turn_end = gw_turn_end,
    .metrics = gw_metrics,
};
