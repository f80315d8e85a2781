/* test_auth_http.c -- the webhook backend (auth_http) and its result cache
 * (auth_cache), against a real HTTP server in this process.
 *
 * The server is libmicrohttpd on 127.0.0.1 with an ephemeral port, one
 * thread per connection, HTTP/1.1 keep-alive; it counts requests and TCP
 * connections and answers as the test says (status, body, delay).  The
 * backend runs as in the broker: check() from the test thread, done() from
 * the backend's I/O thread, collected under a mutex and waited for with a
 * bounded timed wait.  Covered: the request body (json and OPA formats),
 * allow and deny from the status and from the body, the cache (hit, TTL,
 * errors not cached, the prefetch of done-less checks), a slow webhook
 * (timeout, also for requests queued behind a full pool), a webhook that is
 * down or answers garbage (on_error deny and pass), the bounded queue, and
 * connection reuse (the pool, never a connection per request).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "module.h"
#include "auth_acl.h"
#include "auth_async.h"
#include "auth_cache.h"
#include "auth_http.h"
#include "conf.h"
#include "log.h"
#include "util.h"

/* ---- the test webhook ---- */

typedef struct {
    struct MHD_Daemon *d;
    uint16_t port;
    atomic_int requests, connections;
    pthread_mutex_t mu;
    unsigned status;   /* to answer */
    char body[256];    /* to answer */
    unsigned delay_ms; /* before answering */
    char last[2048];   /* the last request body */
} websrv_t;

typedef struct {
    char *data;
    size_t len;
} upload_t;

static void on_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                    enum MHD_ConnectionNotificationCode code)
{
    websrv_t *w = cls;
    (void)c;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&w->connections, 1);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    upload_t *u = *con_cls;
    if (u) {
        free(u->data);
        free(u);
        *con_cls = NULL;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    websrv_t *w = cls;
    (void)url;
    (void)version;
    if (strcmp(method, "POST") != 0)
        return MHD_NO;
    upload_t *u = *con_cls;
    if (u == NULL) {
        *con_cls = calloc(1, sizeof(upload_t));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        u->data = realloc(u->data, u->len + *upload_data_size + 1);
        memcpy(u->data + u->len, upload_data, *upload_data_size);
        u->len += *upload_data_size;
        u->data[u->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&w->mu);
    snprintf(w->last, sizeof(w->last), "%s", u->data ? u->data : "");
    unsigned status = w->status, delay = w->delay_ms;
    char body[256];
    snprintf(body, sizeof(body), "%s", w->body);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_add(&w->requests, 1);
    if (delay)
        usleep(delay * 1000u);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static void websrv_answer(websrv_t *w, unsigned status, const char *body, unsigned delay_ms)
{
    pthread_mutex_lock(&w->mu);
    w->status = status;
    snprintf(w->body, sizeof(w->body), "%s", body);
    w->delay_ms = delay_ms;
    pthread_mutex_unlock(&w->mu);
}

static websrv_t *websrv_start(void)
{
    websrv_t *w = calloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    websrv_answer(w, 204, "", 0);
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    w->d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                         NULL, on_request, w, MHD_OPTION_SOCK_ADDR, &sa,
                         MHD_OPTION_NOTIFY_CONNECTION, on_conn, w, MHD_OPTION_NOTIFY_COMPLETED,
                         on_done, w, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    assert_non_null(w->d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(w->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    w->port = info->port;
    return w;
}

static void websrv_stop(websrv_t *w)
{
    MHD_stop_daemon(w->d);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* A port nothing listens on: bound, then closed. */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- answers collected from the backend's thread ---- */

#define MAX_ANSWERS 64

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
    auth_answer_t a[MAX_ANSWERS];
    int token[MAX_ANSWERS];
    uint64_t at_ms[MAX_ANSWERS];
} answers_t;

typedef struct {
    answers_t *box;
    int id;
} token_t;

static void done_cb(void *token, const auth_answer_t *a)
{
    token_t *t = token;
    answers_t *box = t->box;
    pthread_mutex_lock(&box->mu);
    if (box->n < MAX_ANSWERS) {
        box->a[box->n] = *a;
        box->token[box->n] = t->id;
        box->at_ms[box->n] = an_now_ms();
        box->n++;
    }
    pthread_cond_broadcast(&box->cond);
    pthread_mutex_unlock(&box->mu);
    free(t);
}

static void box_init(answers_t *box)
{
    memset(box, 0, sizeof(*box));
    pthread_mutex_init(&box->mu, NULL);
    pthread_cond_init(&box->cond, NULL);
}

static void box_destroy(answers_t *box)
{
    pthread_cond_destroy(&box->cond);
    pthread_mutex_destroy(&box->mu);
}

/* Wait until `n` answers are in, at most timeout_ms; returns the count. */
static int box_wait(answers_t *box, int n, unsigned timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&box->mu);
    while (box->n < n && pthread_cond_timedwait(&box->cond, &box->mu, &ts) == 0)
        ;
    int got = box->n;
    pthread_mutex_unlock(&box->mu);
    return got;
}

/* ---- helpers ---- */

static conf_t *make_conf(const char *url)
{
    conf_t *c = calloc(1, sizeof(*c));
    conf_defaults(c);
    snprintf(c->auth_http.url, sizeof(c->auth_http.url), "%s", url);
    return c;
}

static char *url_of(websrv_t *w)
{
    static char buf[64]; /* the test runs on one thread */
    snprintf(buf, sizeof(buf), "http://127.0.0.1:%u/auth", w->port);
    return buf;
}

static auth_verdict_t ask(auth_backend_t *b, answers_t *box, int id, uint8_t action,
                          const char *client, const char *user, const char *pw, const char *topic,
                          auth_answer_t *now)
{
    auth_request_t r = {.action = action,
                        .client_id = client,
                        .username = user,
                        .password = (const uint8_t *)pw,
                        .password_len = pw ? strlen(pw) : 0,
                        .peer = "127.0.0.1:5555",
                        .listener = 0,
                        .topic = topic,
                        .qos = 1};
    token_t *t = malloc(sizeof(*t));
    t->box = box;
    t->id = id;
    auth_answer_t out;
    memset(&out, 0, sizeof(out));
    auth_verdict_t v = b->check(b, &r, &out, done_cb, t);
    if (v != AUTH_PENDING)
        free(t); /* answered now: done() is not called */
    if (now)
        *now = out;
    return v;
}

/* Ask once and wait for the answer from the thread. */
static auth_answer_t ask_wait(auth_backend_t *b, uint8_t action, const char *client,
                              const char *user, const char *pw)
{
    answers_t box;
    box_init(&box);
    assert_int_equal(ask(b, &box, 1, action, client, user, pw, NULL, NULL), AUTH_PENDING);
    assert_int_equal(box_wait(&box, 1, 5000), 1);
    auth_answer_t a = box.a[0];
    box_destroy(&box);
    return a;
}

static auth_backend_t *start(conf_t *c)
{
    char err[256] = "";
    auth_backend_t *b = auth_http_new(c, err, sizeof(err));
    if (b == NULL)
        fail_msg("auth_http_new: %s", err);
    return b;
}

/* ---- tests ---- */

static void test_allow_deny_status(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 0;
    auth_backend_t *b = start(c);

    websrv_answer(w, 204, "", 0);
    auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "dev1", "alice", "s3cret");
    assert_int_equal(a.verdict, AUTH_ALLOW);
    /* the body carried the request */
    json_t *j = json_loads(w->last, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "action")), "connect");
    assert_string_equal(json_string_value(json_object_get(j, "clientid")), "dev1");
    assert_string_equal(json_string_value(json_object_get(j, "username")), "alice");
    assert_string_equal(json_string_value(json_object_get(j, "password")), "s3cret");
    assert_string_equal(json_string_value(json_object_get(j, "peer")), "127.0.0.1:5555");
    assert_string_equal(json_string_value(json_object_get(j, "listener")), "mqtt");
    assert_true(json_is_null(json_object_get(j, "topic")));
    json_decref(j);

    websrv_answer(w, 403, "", 0);
    a = ask_wait(b, AUTH_ACT_CONNECT, "dev1", "alice", "wrong");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BAD_CREDENTIALS);
    websrv_answer(w, 401, "", 0);
    a = ask_wait(b, AUTH_ACT_SUBSCRIBE, "dev1", "alice", "wrong");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_NOT_AUTHORIZED);

    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(st.allowed, 1);
    assert_int_equal(st.denied, 2);
    assert_int_equal(st.errors, 0);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_json_body_results(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 0;
    auth_backend_t *b = start(c);

    websrv_answer(w, 200, "{\"result\": \"allow\"}", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_ALLOW);
    websrv_answer(w, 200, "{\"result\": \"deny\"}", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_DENY);
    websrv_answer(w, 200, "{\"result\": \"ignore\"}", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_PASS);
    websrv_answer(w, 200, "{\"result\": false}", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_DENY);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_opa_format(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 0;
    c->auth_http.format = CONF_AUTH_FORMAT_OPA;
    auth_backend_t *b = start(c);

    websrv_answer(w, 200, "{\"result\": true}", 0);
    answers_t box;
    box_init(&box);
    assert_int_equal(ask(b, &box, 1, AUTH_ACT_PUBLISH, "c9", "bob", "pw", "a/b", NULL),
                     AUTH_PENDING);
    assert_int_equal(box_wait(&box, 1, 5000), 1);
    assert_int_equal(box.a[0].verdict, AUTH_ALLOW);
    box_destroy(&box);
    json_t *j = json_loads(w->last, 0, NULL);
    assert_non_null(j);
    json_t *in = json_object_get(j, "input");
    assert_true(json_is_object(in));
    assert_string_equal(json_string_value(json_object_get(in, "action")), "publish");
    assert_string_equal(json_string_value(json_object_get(in, "topic")), "a/b");
    assert_int_equal(json_integer_value(json_object_get(in, "qos")), 1);
    json_decref(j);

    websrv_answer(w, 200, "{\"result\": false}", 0);
    auth_answer_t a = ask_wait(b, AUTH_ACT_PUBLISH, "c9", "bob", "pw");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_NOT_AUTHORIZED);
    /* OPA's answer for an undefined document: no "result" is an error */
    websrv_answer(w, 200, "{}", 0);
    a = ask_wait(b, AUTH_ACT_CONNECT, "c9", "bob", "pw");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
    /* strings are for the json format only */
    websrv_answer(w, 200, "{\"result\": \"allow\"}", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c9", "bob", "pw").cause,
                     AUTH_BACKEND_UNAVAILABLE);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_cache_hit_and_expiry(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 300;
    auth_backend_t *b = start(c);
    auth_answer_t now;
    answers_t box;
    box_init(&box);

    websrv_answer(w, 204, "", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c1", "u", "p").verdict, AUTH_ALLOW);
    /* within the TTL: answered at once, the webhook sees nothing */
    assert_int_equal(ask(b, &box, 1, AUTH_ACT_CONNECT, "c1", "u", "p", NULL, &now), AUTH_ALLOW);
    assert_int_equal(now.verdict, AUTH_ALLOW);
    assert_int_equal(atomic_load(&w->requests), 1);
    /* another password is another key */
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c1", "u", "other").verdict, AUTH_ALLOW);
    assert_int_equal(atomic_load(&w->requests), 2);
    /* a deny is cached too */
    websrv_answer(w, 403, "", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c2", "u", "p").verdict, AUTH_DENY);
    assert_int_equal(ask(b, &box, 2, AUTH_ACT_CONNECT, "c2", "u", "p", NULL, &now), AUTH_DENY);
    assert_int_equal(now.cause, AUTH_BAD_CREDENTIALS);
    assert_int_equal(atomic_load(&w->requests), 3);
    /* past the TTL: asked again */
    usleep(400 * 1000);
    websrv_answer(w, 204, "", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c1", "u", "p").verdict, AUTH_ALLOW);
    assert_int_equal(atomic_load(&w->requests), 4);

    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.cache_hits, 2);
    box_destroy(&box);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

/* An allow with rules: answer.acl, also from the cache; bad rules are an
 * error. */
static void test_acl_in_answer(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    auth_backend_t *b = start(c);
    answers_t box;
    box_init(&box);
    auth_answer_t now;

    websrv_answer(w, 200,
                  "{\"result\": \"allow\", \"acl\": [\"deny pub dev/%c/secret\", "
                  "\"allow all dev/%c/#\"]}",
                  0);
    auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "d1", "u", "p");
    assert_int_equal(a.verdict, AUTH_ALLOW);
    assert_non_null(a.acl);
    assert_int_equal(auth_acl_check(a.acl, "u", "d1", AUTH_ACT_PUBLISH, "dev/d1/t", 8, 0), 1);
    assert_int_equal(auth_acl_check(a.acl, "u", "d1", AUTH_ACT_PUBLISH, "dev/d1/secret", 13, 0), 0);
    assert_int_equal(auth_acl_check(a.acl, "u", "d1", AUTH_ACT_PUBLISH, "dev/d2/t", 8, 0), -1);
    auth_acl_free(a.acl);
    /* from the cache: the same rules, a new rule set */
    assert_int_equal(ask(b, &box, 1, AUTH_ACT_CONNECT, "d1", "u", "p", NULL, &now), AUTH_ALLOW);
    assert_non_null(now.acl);
    assert_int_equal(auth_acl_count(now.acl), 2);
    auth_acl_free(now.acl);
    assert_int_equal(atomic_load(&w->requests), 1);

    /* a policy document (OPA) */
    websrv_answer(w, 200, "{\"result\": {\"allow\": true, \"acl\": [\"sub x/+\"]}}", 0);
    a = ask_wait(b, AUTH_ACT_CONNECT, "d2", "u", "p");
    assert_int_equal(a.verdict, AUTH_ALLOW);
    assert_non_null(a.acl);
    assert_int_equal(auth_acl_check(a.acl, "u", "d2", AUTH_ACT_SUBSCRIBE, "x/y", 3, 1), 1);
    auth_acl_free(a.acl);
    websrv_answer(w, 200, "{\"result\": {\"allow\": false, \"acl\": [\"sub x/+\"]}}", 0);
    a = ask_wait(b, AUTH_ACT_CONNECT, "d3", "u", "p");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_null(a.acl);

    /* bad rules, or not an array of strings: errors */
    static const char *const bad[] = {
        "{\"result\": \"allow\", \"acl\": [\"allow pub a/#/b\"]}",
        "{\"result\": \"allow\", \"acl\": \"allow pub a\"}",
        "{\"result\": \"allow\", \"acl\": [1]}",
        "{\"result\": \"allow\", \"acl\": [\"allow pub a\\nallow sub b\"]}",
        "{\"result\": {\"acl\": []}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char cid[16];
        snprintf(cid, sizeof(cid), "bad%zu", i);
        websrv_answer(w, 200, bad[i], 0);
        a = ask_wait(b, AUTH_ACT_CONNECT, cid, "u", "p");
        assert_int_equal(a.verdict, AUTH_DENY);
        assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
        assert_null(a.acl);
    }
    box_destroy(&box);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_errors_not_cached(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    auth_backend_t *b = start(c);

    websrv_answer(w, 500, "oops", 0);
    auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
    websrv_answer(w, 204, "", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_ALLOW);
    assert_int_equal(atomic_load(&w->requests), 2);
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.errors, 1);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_garbage_body(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 0;
    auth_backend_t *b = start(c);

    static const char *const garbage[] = {"hello", "{\"result\": 1}", "[true]",
                                          "{\"result\": \"maybe\"}", "{\"result\": "};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        websrv_answer(w, 200, garbage[i], 0);
        auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p");
        assert_int_equal(a.verdict, AUTH_DENY);
        assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
    }
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.errors, 5);
    b->destroy(b);

    /* on_error: pass */
    c->auth_http.on_error = CONF_AUTH_ON_ERROR_PASS;
    b = start(c);
    websrv_answer(w, 200, "<html>", 0);
    assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p").verdict, AUTH_PASS);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_webhook_down(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth", closed_port());
    conf_t *c = make_conf(url);
    auth_backend_t *b = start(c);
    uint64_t t0 = an_now_ms();
    auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "c", "u", "p");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
    assert_true(an_now_ms() - t0 < 1000); /* refused at once, not a timeout */
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.timeouts, 0);
    b->destroy(b);
    free(c);
}

/* 20 requests against a webhook that answers after 3 s, with a pool of
 * 2 connections and a 300 ms timeout: every one is denied at about 300 ms
 * (bound: 2.5 s, for loaded sanitizer runs), also the 18 that wait for a
 * pooled connection. */
static void test_slow_webhook_times_out(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.timeout_ms = 300;
    c->auth_http.pool_size = 2;
    auth_backend_t *b = start(c);
    answers_t box;
    box_init(&box);

    websrv_answer(w, 204, "", 3000);
    uint64_t t0 = an_now_ms();
    for (int i = 0; i < 20; i++) {
        char cid[16];
        snprintf(cid, sizeof(cid), "slow%d", i);
        assert_int_equal(ask(b, &box, i, AUTH_ACT_CONNECT, cid, "u", "p", NULL, NULL),
                         AUTH_PENDING);
    }
    assert_int_equal(box_wait(&box, 20, 5000), 20);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(box.a[i].verdict, AUTH_DENY);
        assert_int_equal(box.a[i].cause, AUTH_BACKEND_UNAVAILABLE);
        assert_true(box.at_ms[i] - t0 >= 250);
        if (box.at_ms[i] - t0 >= 2500)
            fail_msg("answer %d after %llu ms", i, (unsigned long long)(box.at_ms[i] - t0));
    }
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.timeouts, 20);
    /* the pool, not a connection per request: 2 at first, then a
     * replacement for each closed at a deadline while a request enqueued
     * a moment later still waited (which may itself time out before it is
     * sent): how many such waves there are depends on how far apart the
     * 20 asks were (ASan on a busy host: 3-6 connections, 2-3 requests on
     * the wire), never one per request */
    int conns = atomic_load(&w->connections), reqs = atomic_load(&w->requests);
    if (conns > 10 || reqs >= 20)
        fail_msg("%d connections, %d requests on the wire, of 20", conns, reqs);
    box_destroy(&box);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_queue_full(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.queue_size = 2;
    c->auth_http.timeout_ms = 500;
    auth_backend_t *b = start(c);
    answers_t box;
    box_init(&box);
    auth_answer_t now;

    websrv_answer(w, 204, "", 800);
    assert_int_equal(ask(b, &box, 1, AUTH_ACT_CONNECT, "q1", "u", "p", NULL, NULL), AUTH_PENDING);
    assert_int_equal(ask(b, &box, 2, AUTH_ACT_CONNECT, "q2", "u", "p", NULL, NULL), AUTH_PENDING);
    assert_int_equal(ask(b, &box, 3, AUTH_ACT_CONNECT, "q3", "u", "p", NULL, &now), AUTH_DENY);
    assert_int_equal(now.cause, AUTH_BUSY);
    assert_int_equal(box_wait(&box, 2, 5000), 2);
    /* room again once they are answered */
    websrv_answer(w, 204, "", 0);
    usleep(900 * 1000); /* let the server finish the slow ones */
    assert_int_equal(ask(b, &box, 4, AUTH_ACT_CONNECT, "q4", "u", "p", NULL, NULL), AUTH_PENDING);
    assert_int_equal(box_wait(&box, 3, 5000), 3);
    assert_int_equal(box.a[2].verdict, AUTH_ALLOW);
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.queue_full, 1);
    box_destroy(&box);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

/* 100 distinct requests, 20 at a time, cache off: the webhook sees 100
 * requests over at most pool_size connections. */
static void test_connection_reuse(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    c->auth_http.cache_ttl_ms = 0;
    c->auth_http.pool_size = 4;
    auth_backend_t *b = start(c);

    websrv_answer(w, 204, "", 0);
    for (int round = 0; round < 5; round++) {
        answers_t box;
        box_init(&box);
        for (int i = 0; i < 20; i++) {
            char cid[16];
            snprintf(cid, sizeof(cid), "r%d", i);
            assert_int_equal(ask(b, &box, i, AUTH_ACT_CONNECT, cid, "u", "p", NULL, NULL),
                             AUTH_PENDING);
        }
        assert_int_equal(box_wait(&box, 20, 5000), 20);
        for (int i = 0; i < 20; i++)
            assert_int_equal(box.a[i].verdict, AUTH_ALLOW);
        box_destroy(&box);
    }
    assert_int_equal(atomic_load(&w->requests), 100);
    assert_true(atomic_load(&w->connections) >= 1);
    assert_true(atomic_load(&w->connections) <= 4);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

/* Several webhooks: round robin over the live ones; one that refuses
 * connections is skipped (failover within the deadline), no error. */
static void test_urls_round_robin_and_failover(void **state)
{
    (void)state;
    websrv_t *w1 = websrv_start(), *w2 = websrv_start();
    conf_t *c = make_conf("");
    c->auth_http.cache_ttl_ms = 0;
    snprintf(c->auth_http.urls[0], sizeof(c->auth_http.urls[0]), "http://127.0.0.1:%u/a", w1->port);
    snprintf(c->auth_http.urls[1], sizeof(c->auth_http.urls[1]), "http://127.0.0.1:%u/b",
             closed_port());
    snprintf(c->auth_http.urls[2], sizeof(c->auth_http.urls[2]), "http://127.0.0.1:%u/c", w2->port);
    c->auth_http.nurls = 3;
    auth_backend_t *b = start(c);
    websrv_answer(w1, 204, "", 0);
    websrv_answer(w2, 204, "", 0);
    for (int i = 0; i < 30; i++) {
        char cid[16];
        snprintf(cid, sizeof(cid), "rr%d", i);
        assert_int_equal(ask_wait(b, AUTH_ACT_CONNECT, cid, "u", "p").verdict, AUTH_ALLOW);
    }
    int n1 = atomic_load(&w1->requests), n2 = atomic_load(&w2->requests);
    assert_int_equal(n1 + n2, 30);
    assert_true(n1 >= 10 && n2 >= 10); /* 10 each, plus the 10 failed over */
    auth_http_stats_t st;
    auth_http_stats(b, &st);
    assert_int_equal(st.errors, 0);
    b->destroy(b);

    /* every webhook down: an error after trying each once */
    snprintf(c->auth_http.urls[0], sizeof(c->auth_http.urls[0]), "http://127.0.0.1:%u/a",
             closed_port());
    c->auth_http.nurls = 2;
    b = start(c);
    auth_answer_t a = ask_wait(b, AUTH_ACT_CONNECT, "down", "u", "p");
    assert_int_equal(a.verdict, AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BACKEND_UNAVAILABLE);
    auth_http_stats(b, &st);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.requests, 2);
    b->destroy(b);

    /* url and urls together: refused at start */
    char err[256] = "";
    snprintf(c->auth_http.url, sizeof(c->auth_http.url), "http://127.0.0.1:%u/", w1->port);
    assert_null(auth_http_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "not both"));
    free(c);
    websrv_stop(w1);
    websrv_stop(w2);
}

/* A check without done() (publish/subscribe on the hot path) passes at once
 * and fills the cache in the background. */
static void test_prefetch_without_done(void **state)
{
    (void)state;
    websrv_t *w = websrv_start();
    conf_t *c = make_conf(url_of(w));
    auth_backend_t *b = start(c);
    websrv_answer(w, 403, "", 0);
    auth_request_t r = {.action = AUTH_ACT_PUBLISH,
                        .client_id = "p1",
                        .username = "u",
                        .peer = "127.0.0.1:1",
                        .topic = "x/y"};
    auth_answer_t out;
    assert_int_equal(b->check(b, &r, &out, NULL, NULL), AUTH_PASS);
    for (int i = 0; i < 200 && atomic_load(&w->requests) < 1; i++)
        usleep(10 * 1000);
    auth_verdict_t v = AUTH_PASS;
    for (int i = 0; i < 200; i++) { /* the answer lands in the cache a moment later */
        v = b->check(b, &r, &out, NULL, NULL);
        if (v != AUTH_PASS)
            break;
        usleep(10 * 1000);
    }
    assert_int_equal(v, AUTH_DENY);
    assert_int_equal(out.cause, AUTH_NOT_AUTHORIZED);
    b->destroy(b);
    free(c);
    websrv_stop(w);
}

static void test_bad_url(void **state)
{
    (void)state;
    char err[256] = "";
    conf_t *c = make_conf("");
    assert_null(auth_http_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "auth.http.url"));
    snprintf(c->auth_http.url, sizeof(c->auth_http.url), "%s", "ftp://x/");
    assert_null(auth_http_new(c, err, sizeof(err)));
    snprintf(c->auth_http.url, sizeof(c->auth_http.url), "%s", "https://x/");
    snprintf(c->auth_http.ca_file, sizeof(c->auth_http.ca_file), "%s", "/nonexistent/ca.pem");
    assert_null(auth_http_new(c, err, sizeof(err)));
    assert_non_null(strstr(err, "auth.http.ca_file: /nonexistent/ca.pem"));
    free(c);
}

/* ---- the failure log limiter ---- */

static void test_ratelog(void **state)
{
    (void)state;
    auth_ratelog_t r;
    memset(&r, 0, sizeof(r));
    int ok = 0;
    for (int i = 0; i < 25; i++)
        ok += auth_ratelog_ok(&r, "test");
    assert_int_equal(ok, AUTH_LOG_BURST);
    assert_int_equal(r.held, 25 - AUTH_LOG_BURST);
    r.second_ms -= 1000; /* the next second */
    assert_int_equal(auth_ratelog_ok(&r, "test"), 1);
    assert_int_equal(r.held, 0);
    assert_int_equal(r.logged, 1);
}

/* ---- the cache alone ---- */

static void key_of(const char *client, uint8_t *key)
{
    assert_int_equal(
        auth_cache_key(AUTH_ACT_CONNECT, client, "u", (const uint8_t *)"p", 1, NULL, NULL, key), 0);
}

static void test_cache_bounded_fifo(void **state)
{
    (void)state;
    auth_cache_t *c = auth_cache_new(3, 1000);
    uint8_t k[5][AUTH_CACHE_KEY_LEN];
    char name[8];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        key_of(name, k[i]);
    }
    auth_verdict_t v;
    auth_cause_t reason;
    for (int i = 0; i < 5; i++)
        auth_cache_put(c, k[i], 100, i % 2 ? AUTH_DENY : AUTH_ALLOW, (auth_cause_t)i, NULL);
    assert_int_equal(auth_cache_len(c), 3);
    assert_int_equal(auth_cache_get(c, k[0], 100, &v, &reason, NULL), 0);
    assert_int_equal(auth_cache_get(c, k[1], 100, &v, &reason, NULL), 0);
    assert_int_equal(auth_cache_get(c, k[3], 100, &v, &reason, NULL), 1);
    assert_int_equal(v, AUTH_DENY);
    assert_int_equal(reason, (auth_cause_t)3);
    /* TTL: alive before expiry, gone at it */
    assert_int_equal(auth_cache_get(c, k[4], 1099, &v, &reason, NULL), 1);
    assert_int_equal(auth_cache_get(c, k[4], 1100, &v, &reason, NULL), 0);
    assert_int_equal(auth_cache_len(c), 2);
    /* a key differs with every field */
    uint8_t a[AUTH_CACHE_KEY_LEN], b[AUTH_CACHE_KEY_LEN];
    auth_cache_key(AUTH_ACT_PUBLISH, "c", "u", NULL, 0, NULL, "t", a);
    auth_cache_key(AUTH_ACT_PUBLISH, "c", "u", NULL, 0, NULL, "t2", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN);
    auth_cache_key(AUTH_ACT_PUBLISH, "c", "u", (const uint8_t *)"", 0, NULL, "t", b);
    assert_memory_not_equal(a, b, AUTH_CACHE_KEY_LEN); /* empty password != none */
    auth_cache_free(c);
    assert_null(auth_cache_new(0, 1000));
    assert_null(auth_cache_new(10, 0));
}

/* ---- the auth.http and auth.redis configuration keys ---- */

static int load_text(conf_t *c, const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/antenna-conf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    int rc = conf_load(c, path, err, errlen);
    unlink(path);
    return rc;
}

static void test_conf_keys(void **state)
{
    (void)state;
    conf_t *c = calloc(1, sizeof(*c)), *d = calloc(1, sizeof(*d));
    char err[512] = "";
    conf_defaults(d);
    /* the example file documents every key with its default */
    conf_defaults(c);
    module_conf_defaults(c); /* and the modules' sections */
    memset(&c->auth_http, 0x5a, sizeof(c->auth_http));
    memset(&c->auth_redis, 0x5a, sizeof(c->auth_redis));
    const char *example = ANTENNA_SOURCE_DIR "/config.example.yaml";
    if (conf_load(c, example, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(c->auth_http.url, d->auth_http.url);
    assert_string_equal(c->auth_http.ca_file, d->auth_http.ca_file);
    assert_int_equal(c->auth_http.nurls, 0);
    assert_int_equal(c->auth_http.format, d->auth_http.format);
    assert_int_equal(c->auth_http.on_error, d->auth_http.on_error);
    assert_int_equal(c->auth_http.timeout_ms, d->auth_http.timeout_ms);
    assert_int_equal(c->auth_http.connect_timeout_ms, d->auth_http.connect_timeout_ms);
    assert_int_equal(c->auth_http.cache_ttl_ms, d->auth_http.cache_ttl_ms);
    assert_int_equal(c->auth_http.cache_size, d->auth_http.cache_size);
    assert_int_equal(c->auth_http.pool_size, d->auth_http.pool_size);
    assert_int_equal(c->auth_http.queue_size, d->auth_http.queue_size);
    assert_string_equal(c->auth_redis.host, d->auth_redis.host);
    assert_int_equal(c->auth_redis.port, d->auth_redis.port);
    assert_string_equal(c->auth_redis.password, d->auth_redis.password);
    assert_int_equal(c->auth_redis.db, d->auth_redis.db);
    assert_string_equal(c->auth_redis.prefix, d->auth_redis.prefix);
    assert_int_equal(c->auth_redis.pool_size, d->auth_redis.pool_size);
    assert_int_equal(c->auth_redis.timeout_ms, d->auth_redis.timeout_ms);
    assert_int_equal(c->auth_redis.queue_size, d->auth_redis.queue_size);
    assert_int_equal(c->auth_redis.on_error, d->auth_redis.on_error);

    conf_defaults(c);
    int rc = load_text(c,
                       "auth:\n"
                       "  http:\n"
                       "    url: https://auth.example/mqtt\n"
                       "    ca_file: /etc/ssl/certs/ca-certificates.crt\n"
                       "    urls: [\"http://a/x\", \"https://b/y\"]\n"
                       "    format: opa\n"
                       "    timeout_ms: 750\n"
                       "    connect_timeout_ms: 250\n"
                       "    cache_ttl_ms: 0\n"
                       "    cache_size: 10\n"
                       "    pool_size: 3\n"
                       "    queue_size: 99\n"
                       "    on_error: pass\n"
                       "  redis:\n"
                       "    host: redis.local\n"
                       "    port: 6380\n"
                       "    password: pw\n"
                       "    db: 2\n"
                       "    prefix: \"mq:\"\n"
                       "    pool_size: 5\n"
                       "    timeout_ms: 100\n"
                       "    queue_size: 7\n"
                       "    on_error: pass\n",
                       err, sizeof(err));
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(c->auth_http.url, "https://auth.example/mqtt");
    assert_string_equal(c->auth_http.ca_file, "/etc/ssl/certs/ca-certificates.crt");
    assert_int_equal(c->auth_http.nurls, 2);
    assert_string_equal(c->auth_http.urls[1], "https://b/y");
    assert_int_equal(c->auth_http.format, CONF_AUTH_FORMAT_OPA);
    assert_int_equal(c->auth_http.timeout_ms, 750);
    assert_int_equal(c->auth_http.connect_timeout_ms, 250);
    assert_int_equal(c->auth_http.cache_ttl_ms, 0);
    assert_int_equal(c->auth_http.cache_size, 10);
    assert_int_equal(c->auth_http.pool_size, 3);
    assert_int_equal(c->auth_http.queue_size, 99);
    assert_int_equal(c->auth_http.on_error, CONF_AUTH_ON_ERROR_PASS);
    assert_string_equal(c->auth_redis.host, "redis.local");
    assert_int_equal(c->auth_redis.port, 6380);
    assert_string_equal(c->auth_redis.password, "pw");
    assert_int_equal(c->auth_redis.db, 2);
    assert_string_equal(c->auth_redis.prefix, "mq:");
    assert_int_equal(c->auth_redis.pool_size, 5);
    assert_int_equal(c->auth_redis.timeout_ms, 100);
    assert_int_equal(c->auth_redis.queue_size, 7);
    assert_int_equal(c->auth_redis.on_error, CONF_AUTH_ON_ERROR_PASS);

    /* bad values name the line and the key */
    assert_int_equal(load_text(c, "auth:\n  http:\n    format: xml\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: auth.http.format: unknown value \"xml\""));
    assert_int_equal(load_text(c, "auth:\n  http:\n    pool_size: 0\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: auth.http.pool_size: 0 is out of range"));
    assert_int_equal(load_text(c, "auth:\n  redis:\n    port: 0\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: auth.redis.port"));
    assert_int_equal(load_text(c, "auth:\n  redis:\n    host: \"\"\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "auth.redis.host: must not be empty"));
    assert_int_equal(load_text(c, "auth:\n  redis:\n    nope: 1\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":3: auth.redis.nope: unknown key"));
    free(c);
    free(d);
}

int main(void)
{
    log_open(NULL, AN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_keys),
        cmocka_unit_test(test_cache_bounded_fifo),
        cmocka_unit_test(test_ratelog),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_allow_deny_status),
        cmocka_unit_test(test_json_body_results),
        cmocka_unit_test(test_opa_format),
        cmocka_unit_test(test_cache_hit_and_expiry),
        cmocka_unit_test(test_acl_in_answer),
        cmocka_unit_test(test_errors_not_cached),
        cmocka_unit_test(test_garbage_body),
        cmocka_unit_test(test_webhook_down),
        cmocka_unit_test(test_slow_webhook_times_out),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_prefetch_without_done),
        cmocka_unit_test(test_urls_round_robin_and_failover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
