/* test_httpc.c -- the asynchronous HTTP client (src/net/httpc.h) against a
 * tiny HTTP/1.1 server started by the test.
 *
 * The server: a listening socket on 127.0.0.1:0, an accept thread, one
 * thread per connection answering canned responses by path, keep-alive
 * (several requests per connection); it counts connections and requests.
 *   /ok        200 "hello"
 *   /echo      200 "METHOD|X-Test header|body"
 *   /status/N  N "status"
 *   /slow      200 after 2 s (cut short when the test stops the server)
 *   /close     closes the connection without answering
 *   /big       200 with a 100 000-byte body
 * Covered: methods, headers and bodies; statuses; the deadline (a slow
 * server, and a request waiting for a pooled connection); a closed
 * connection; connection refused; a response over max_response; the
 * keep-alive pool (at most max_host_conns connections); the bounded queue
 * (refused when full, room again once answered); a follow-up submitted from
 * a callback; httpc_free() cancelling what is left; the counters.  done()
 * runs on the client's I/O thread; the test collects results under a mutex
 * and waits with a bounded timed wait.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpc.h"
#include "util.h"

/* ---- the tiny server ---- */

#define SRV_MAX_CONNS 64

typedef struct srv srv_t;

typedef struct {
    srv_t *s;
    int fd;
    pthread_t t;
} sconn_t;

struct srv {
    int lfd;
    int stop_pipe[2]; /* readable once the server stops */
    uint16_t port;
    pthread_t accept_thread;
    pthread_mutex_t mu;
    sconn_t *conns[SRV_MAX_CONNS];
    int nconns;
    atomic_int connections, requests;
};

/* Wait up to ms for fd to be readable; 0 when the server stops first. */
static int wait_readable(srv_t *s, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
    if (poll(p, 2, ms) <= 0 || p[1].revents)
        return 0;
    return 1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int status, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n\r\n",
                     status, len);
    if (write_all(fd, head, (size_t)n) < 0)
        return -1;
    return write_all(fd, body, len);
}

static void *sconn_main(void *arg)
{
    sconn_t *c = arg;
    srv_t *s = c->s;
    char buf[16384];
    size_t have = 0;

    for (;;) {
        char *end = NULL;
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
            if (have == sizeof(buf) || !wait_readable(s, c->fd, 10000))
                goto out;
            ssize_t r = recv(c->fd, buf + have, sizeof(buf) - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char method[16] = "", path[256] = "", xtest[128] = "";
        sscanf(buf, "%15s %255s", method, path);
        size_t clen = 0;
        for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
            if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                clen = strtoul(l + 17, NULL, 10);
            else if (strncasecmp(l + 2, "X-Test:", 7) == 0)
                sscanf(l + 9, " %127[^\r]", xtest);
        }
        if (head_len + clen > sizeof(buf))
            goto out;
        while (have < head_len + clen) {
            if (!wait_readable(s, c->fd, 10000))
                goto out;
            ssize_t r = recv(c->fd, buf + have, sizeof(buf) - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        atomic_fetch_add(&s->requests, 1);
        char body[512];
        int rc = 0;
        if (strcmp(path, "/ok") == 0) {
            rc = respond(c->fd, 200, "hello", 5);
        } else if (strcmp(path, "/echo") == 0) {
            int n = snprintf(body, sizeof(body), "%s|%s|%.*s", method, xtest, (int)clen,
                             buf + head_len);
            rc = respond(c->fd, 200, body, (size_t)n);
        } else if (strncmp(path, "/status/", 8) == 0) {
            rc = respond(c->fd, atoi(path + 8), "status", 6);
        } else if (strcmp(path, "/slow") == 0) {
            struct pollfd stop = {.fd = s->stop_pipe[0], .events = POLLIN};
            if (poll(&stop, 1, 2000) != 0) /* stopping */
                goto out;
            rc = respond(c->fd, 200, "slow", 4);
        } else if (strcmp(path, "/close") == 0) {
            goto out;
        } else if (strcmp(path, "/big") == 0) {
            char *big = malloc(100000);
            memset(big, 'x', 100000);
            rc = respond(c->fd, 200, big, 100000);
            free(big);
        } else {
            rc = respond(c->fd, 404, "none", 4);
        }
        if (rc < 0)
            goto out;
        memmove(buf, buf + head_len + clen, have - head_len - clen);
        have -= head_len + clen;
    }
out:
    close(c->fd);
    c->fd = -1;
    return NULL;
}

static void *accept_main(void *arg)
{
    srv_t *s = arg;
    while (wait_readable(s, s->lfd, 60000)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->connections, 1);
        pthread_mutex_lock(&s->mu);
        if (s->nconns == SRV_MAX_CONNS) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        sconn_t *c = calloc(1, sizeof(*c));
        c->s = s;
        c->fd = fd;
        s->conns[s->nconns++] = c;
        pthread_create(&c->t, NULL, sconn_main, c);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static srv_t *srv_start(void)
{
    srv_t *s = calloc(1, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    pthread_mutex_init(&s->mu, NULL);
    assert_int_equal(pipe(s->stop_pipe), 0);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->accept_thread, NULL, accept_main, s), 0);
    return s;
}

static void srv_stop(srv_t *s)
{
    close(s->stop_pipe[1]); /* every wait_readable returns 0 now */
    pthread_join(s->accept_thread, NULL);
    for (int i = 0; i < s->nconns; i++) {
        pthread_join(s->conns[i]->t, NULL);
        free(s->conns[i]);
    }
    close(s->lfd);
    close(s->stop_pipe[0]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static char *url(const srv_t *s, const char *path)
{
    static _Thread_local char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%u%s", s->port, path);
    return u;
}

/* ---- collecting answers ---- */

typedef struct {
    int id;
    httpc_err_t err;
    long status;
    char body[256];
    size_t body_len;
    char error[128];
    uint64_t at_ms;
    int on_io_thread;
} answer_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    answer_t a[256];
    int n;
    pthread_t test_thread;
    httpc_t *client; /* for follow-ups */
    const char *follow_url;
} box_t;

typedef struct {
    box_t *box;
    int id;
} tag_t;

static void box_init(box_t *b)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->test_thread = pthread_self();
}

static void box_destroy(box_t *b)
{
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
}

static void on_done(void *arg, const httpc_result_t *r)
{
    tag_t *t = arg;
    box_t *b = t->box;
    pthread_mutex_lock(&b->mu);
    if (b->n < 256) {
        answer_t *a = &b->a[b->n++];
        a->id = t->id;
        a->err = r->err;
        a->status = r->status;
        a->body_len = r->body_len;
        snprintf(a->body, sizeof(a->body), "%s", r->body);
        snprintf(a->error, sizeof(a->error), "%s", r->error ? r->error : "");
        a->at_ms = an_now_ms();
        a->on_io_thread = !pthread_equal(pthread_self(), b->test_thread);
    }
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->mu);
    free(t);
}

/* Wait for n answers or ms: the number seen. */
static int box_wait(box_t *b, int n, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->mu);
    while (b->n < n && pthread_cond_timedwait(&b->cond, &b->mu, &ts) == 0)
        ;
    int got = b->n;
    pthread_mutex_unlock(&b->mu);
    return got;
}

static const answer_t *box_find(box_t *b, int id)
{
    for (int i = 0; i < b->n; i++)
        if (b->a[i].id == id)
            return &b->a[i];
    fail_msg("no answer for request %d", id);
    return NULL;
}

static int submit(httpc_t *c, box_t *b, int id, const char *method, const char *u, const char *body,
                  uint64_t deadline_ms)
{
    static const char *const hdrs[] = {"X-Test: forty-two", NULL};
    tag_t *t = malloc(sizeof(*t));
    t->box = b;
    t->id = id;
    httpc_req_t r = {.method = method,
                     .url = u,
                     .headers = hdrs,
                     .body = body,
                     .body_len = body ? strlen(body) : 0,
                     .deadline_ms = deadline_ms,
                     .done = on_done,
                     .arg = t};
    int rc = httpc_submit(c, &r);
    if (rc != HTTPC_QUEUED)
        free(t);
    return rc;
}

static httpc_t *client(size_t cap, uint32_t host_conns, uint32_t timeout_ms)
{
    char err[200] = "";
    httpc_opts_t o = {.queue_cap = cap,
                      .max_host_conns = host_conns,
                      .max_conns = host_conns,
                      .timeout_ms = timeout_ms,
                      .connect_timeout_ms = 1000};
    httpc_t *c = httpc_new(&o, err, sizeof(err));
    if (c == NULL)
        fail_msg("httpc_new: %s", err);
    return c;
}

/* ---- the tests ---- */

static void test_methods_headers_bodies(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(16, 2, 5000);
    box_t b;
    box_init(&b);
    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/ok"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 2, NULL, url(s, "/echo"), "{\"a\":1}", 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 3, "PUT", url(s, "/echo"), "put-body", 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 4, "DELETE", url(s, "/echo"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 5, NULL, url(s, "/status/404"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 6, "POST", url(s, "/echo"), "", 0), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 6, 10000), 6);

    const answer_t *a = box_find(&b, 1);
    assert_int_equal(a->err, HTTPC_OK);
    assert_int_equal(a->status, 200);
    assert_string_equal(a->body, "hello");
    assert_int_equal(a->body_len, 5);
    assert_string_equal(a->error, "");
    assert_true(a->on_io_thread);
    assert_string_equal(box_find(&b, 2)->body, "POST|forty-two|{\"a\":1}");
    assert_string_equal(box_find(&b, 3)->body, "PUT|forty-two|put-body");
    assert_string_equal(box_find(&b, 4)->body, "DELETE|forty-two|");
    a = box_find(&b, 5);
    assert_int_equal(a->err, HTTPC_OK); /* a status is an answer, not an error */
    assert_int_equal(a->status, 404);
    assert_string_equal(box_find(&b, 6)->body, "POST|forty-two|");

    httpc_stats_t st;
    httpc_stats(c, &st);
    assert_int_equal(st.submitted, 6);
    assert_int_equal(st.started, 6);
    assert_int_equal(st.responses, 6);
    assert_int_equal(st.failed, 0);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* A server slower than the deadline: the request ends at its deadline. */
static void test_deadline_slow_server(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(16, 2, 0);
    box_t b;
    box_init(&b);
    uint64_t t0 = an_now_ms();
    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/slow"), NULL, t0 + 300), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 1, 10000), 1);
    const answer_t *a = box_find(&b, 1);
    assert_int_equal(a->err, HTTPC_ETIMEOUT);
    assert_string_equal(a->error, "timed out");
    assert_true(a->at_ms >= t0 + 300);
    assert_true(a->at_ms < t0 + 1500);

    /* a deadline already past: never sent */
    assert_int_equal(submit(c, &b, 2, NULL, url(s, "/ok"), NULL, an_now_ms() - 1), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 2, 10000), 2);
    assert_int_equal(box_find(&b, 2)->err, HTTPC_ETIMEOUT);
    assert_string_equal(box_find(&b, 2)->error, "timed out before it was sent");

    httpc_stats_t st;
    httpc_stats(c, &st);
    assert_int_equal(st.timeouts, 2);
    assert_int_equal(st.started, 1);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* One pooled connection held by a slow request: the next request's
 * deadline counts while it waits for the connection. */
static void test_deadline_waiting_for_connection(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(16, 1, 0);
    box_t b;
    box_init(&b);
    uint64_t t0 = an_now_ms();
    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/slow"), NULL, t0 + 8000), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 2, NULL, url(s, "/ok"), NULL, t0 + 400), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 1, 10000), 1);
    const answer_t *a = &b.a[0];
    assert_int_equal(a->id, 2);
    assert_int_equal(a->err, HTTPC_ETIMEOUT);
    assert_true(a->at_ms < t0 + 1800);
    assert_int_equal(box_wait(&b, 2, 10000), 2);
    assert_int_equal(box_find(&b, 1)->err, HTTPC_OK);
    assert_int_equal(atomic_load(&s->connections), 1);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* The server closes without answering; nobody listens; too large a body. */
static void test_errors(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    char err[200];
    httpc_opts_t o = {
        .queue_cap = 16, .max_host_conns = 2, .timeout_ms = 5000, .max_response = 1000};
    httpc_t *c = httpc_new(&o, err, sizeof(err));
    assert_non_null(c);
    box_t b;
    box_init(&b);

    /* a port nobody listens on: bind one, read it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%u/ok", ntohs(a.sin_port));

    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/close"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 2, NULL, dead, NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 3, NULL, url(s, "/big"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 4, NULL, "ftp://127.0.0.1/x", NULL, 0), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 4, 10000), 4);
    const answer_t *r = box_find(&b, 1);
    assert_int_equal(r->err, HTTPC_EFAILED);
    assert_int_equal(r->status, 0);
    assert_true(r->error[0] != '\0');
    assert_int_equal(box_find(&b, 2)->err, HTTPC_ECONNECT);
    assert_int_equal(box_find(&b, 3)->err, HTTPC_ETOOBIG);
    assert_int_equal(box_find(&b, 4)->err, HTTPC_EFAILED); /* http and https only */

    /* bad submissions and options */
    httpc_req_t bad = {.url = NULL, .done = on_done};
    assert_int_equal(httpc_submit(c, &bad), HTTPC_BAD_REQUEST);
    httpc_opts_t zero = {.queue_cap = 0};
    assert_null(httpc_new(&zero, err, sizeof(err)));
    httpc_opts_t noca = {.queue_cap = 1, .ca_file = "/nonexistent/ca.pem"};
    assert_null(httpc_new(&noca, err, sizeof(err)));
    assert_non_null(strstr(err, "ca_file: /nonexistent/ca.pem"));

    httpc_stats_t st;
    httpc_stats(c, &st);
    assert_int_equal(st.failed, 4);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* 60 requests, 20 at a time, at most 2 connections per host: the server
 * sees 60 requests over at most 2 connections. */
static void test_keepalive_pool(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(64, 2, 10000);
    box_t b;
    box_init(&b);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 20; i++)
            assert_int_equal(submit(c, &b, round * 20 + i, NULL, url(s, "/ok"), NULL, 0),
                             HTTPC_QUEUED);
        assert_int_equal(box_wait(&b, (round + 1) * 20, 10000), (round + 1) * 20);
    }
    for (int i = 0; i < 60; i++)
        assert_int_equal(b.a[i].err, HTTPC_OK);
    assert_int_equal(atomic_load(&s->requests), 60);
    assert_true(atomic_load(&s->connections) <= 2);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* The bound covers requests in flight: full while two are slow, room again
 * as soon as they are answered (released before done() runs). */
static void test_queue_full(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(2, 4, 10000);
    box_t b;
    box_init(&b);
    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/slow"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 2, NULL, url(s, "/slow"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(submit(c, &b, 3, NULL, url(s, "/ok"), NULL, 0), HTTPC_QUEUE_FULL);
    assert_true(box_wait(&b, 1, 10000) >= 1); /* both slow ones may be in */
    assert_int_equal(submit(c, &b, 4, NULL, url(s, "/ok"), NULL, 0), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 3, 10000), 3);
    assert_int_equal(box_find(&b, 4)->err, HTTPC_OK);
    httpc_stats_t st;
    httpc_stats(c, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.submitted, 3);
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* A callback submits the next request (as a retry would): it is accepted
 * even with the queue full of others, and answered. */
static void on_done_follow(void *arg, const httpc_result_t *r)
{
    tag_t *t = arg;
    box_t *b = t->box;
    int id = t->id;
    on_done(arg, r); /* frees t */
    if (id < 3) {
        tag_t *n = malloc(sizeof(*n));
        n->box = b;
        n->id = id + 1;
        httpc_req_t rq = {
            .url = b->follow_url, .done = id + 1 < 3 ? on_done_follow : on_done, .arg = n};
        if (httpc_submit(b->client, &rq) != HTTPC_QUEUED)
            free(n);
    }
}

static void test_follow_up_from_callback(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(1, 2, 10000);
    box_t b;
    box_init(&b);
    b.client = c;
    char u[128];
    snprintf(u, sizeof(u), "%s", url(s, "/ok"));
    b.follow_url = u;
    tag_t *t = malloc(sizeof(*t));
    t->box = &b;
    t->id = 1;
    httpc_req_t rq = {.url = u, .done = on_done_follow, .arg = t};
    assert_int_equal(httpc_submit(c, &rq), HTTPC_QUEUED);
    assert_int_equal(box_wait(&b, 3, 10000), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.a[i].id, i + 1);
        assert_int_equal(b.a[i].err, HTTPC_OK);
    }
    httpc_free(c);
    box_destroy(&b);
    srv_stop(s);
}

/* httpc_free(): the request in flight and the queued ones are cancelled,
 * each answered once, on the freeing thread, before it returns. */
static void test_free_cancels(void **state)
{
    (void)state;
    srv_t *s = srv_start();
    httpc_t *c = client(8, 1, 10000);
    box_t b;
    box_init(&b);
    assert_int_equal(submit(c, &b, 1, NULL, url(s, "/slow"), NULL, 0), HTTPC_QUEUED);
    for (int i = 0; i < 200 && atomic_load(&s->requests) == 0; i++) {
        struct timespec d = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
        nanosleep(&d, NULL);
    }
    assert_int_equal(submit(c, &b, 2, NULL, url(s, "/ok"), NULL, 0), HTTPC_QUEUED);
    uint64_t t0 = an_now_ms();
    httpc_free(c);
    assert_true(an_now_ms() - t0 < 1500); /* did not wait for /slow */
    assert_int_equal(b.n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(b.a[i].err, HTTPC_ECANCELLED);
        assert_false(b.a[i].on_io_thread);
    }
    box_destroy(&b);
    srv_stop(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods_headers_bodies),
        cmocka_unit_test(test_deadline_slow_server),
        cmocka_unit_test(test_deadline_waiting_for_connection),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_keepalive_pool),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_follow_up_from_callback),
        cmocka_unit_test(test_free_cancels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
