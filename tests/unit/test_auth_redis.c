/* test_auth_redis.c -- the Redis backend (auth_redis) against a real
 * redis-server started by the test on a free loopback port in a temporary
 * directory (no persistence), filled with hiredis.
 *
 * Covered: right and wrong password, no password, unknown user, a client
 * without username, publish/subscribe passing at once, ACL rules from a
 * list and from a set turned into a rule set that allows and denies, a
 * malformed hash and a bad rule (errors), AUTH and SELECT (requirepass,
 * db), the bounded queue, and Redis stopped (a clean, quick failure) then
 * started again on the same port (the backend reconnects by itself).
 * Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis_srv.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth_acl.h"
#include "auth_passwd.h"
#include "auth_redis.h"
#include "conf.h"
#include "log.h"
#include "util.h"

/* ---- the Redis server (redis_srv.h) ---- */

static redisContext *client(const redis_srv_t *s)
{
    struct timeval tv = {1, 0};
    return redisConnectWithTimeout("127.0.0.1", s->port, tv);
}

/* Start it on s->port (kept across restarts): no AOF, a password or none. */
static void redis_start(redis_srv_t *s, const char *requirepass)
{
    const char *args[] = {"--appendonly", "no", requirepass ? "--requirepass" : NULL, requirepass,
                          NULL};
    redis_srv_start(s, args);
}

static redis_srv_t *redis_new(const char *requirepass)
{
    redis_srv_t *s = calloc(1, sizeof(*s));
    redis_srv_init(s, "antenna-redis");
    redis_start(s, requirepass);
    return s;
}

static void redis_free(redis_srv_t *s)
{
    redis_srv_cleanup(s);
    free(s);
}

/* Run a command on a fresh connection (optionally AUTH + SELECT first). */
static void cmd(const redis_srv_t *s, const char *pass, int db, const char *fmt, ...)
{
    redisContext *c = client(s);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *r;
    if (pass) {
        r = redisCommand(c, "AUTH %s", pass);
        assert_non_null(r);
        freeReplyObject(r);
    }
    if (db) {
        r = redisCommand(c, "SELECT %d", db);
        assert_non_null(r);
        freeReplyObject(r);
    }
    va_list ap;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("redis: %s", r->str);
    freeReplyObject(r);
    redisFree(c);
}

static void add_user(const redis_srv_t *s, const char *pass, int db, const char *user,
                     const char *pw)
{
    char hash[AUTH_PASSWD_HASH_MAX];
    assert_int_equal(auth_passwd_hash((const uint8_t *)pw, strlen(pw), 1000, hash, sizeof(hash)),
                     0);
    cmd(s, pass, db, "HSET antenna:user:%s password %s", user, hash);
}

/* ---- answers from the backend's threads ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
    auth_answer_t a;
} box_t;

static void done_cb(void *token, const auth_answer_t *a)
{
    box_t *b = token;
    pthread_mutex_lock(&b->mu);
    b->a = *a;
    b->n++;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

typedef struct {
    auth_verdict_t now; /* what check() returned */
    auth_answer_t a;    /* the final answer */
    uint64_t ms;        /* how long it took */
} result_t;

static result_t ask(auth_backend_t *b, uint8_t action, const char *user, const char *pw)
{
    box_t box = {.n = 0};
    pthread_mutex_init(&box.mu, NULL);
    pthread_cond_init(&box.cond, NULL);
    auth_request_t r = {.action = action,
                        .client_id = "cid",
                        .username = user,
                        .password = (const uint8_t *)pw,
                        .password_len = pw ? strlen(pw) : 0,
                        .peer = "127.0.0.1:1",
                        .topic = action == AUTH_ACT_CONNECT ? NULL : "t"};
    result_t res;
    memset(&res, 0, sizeof(res));
    uint64_t t0 = an_now_ms();
    res.now = b->check(b, &r, &res.a, done_cb, &box);
    if (res.now == AUTH_PENDING) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        pthread_mutex_lock(&box.mu);
        while (box.n == 0 && pthread_cond_timedwait(&box.cond, &box.mu, &ts) == 0)
            ;
        assert_int_equal(box.n, 1);
        res.a = box.a;
        pthread_mutex_unlock(&box.mu);
    }
    res.ms = an_now_ms() - t0;
    pthread_cond_destroy(&box.cond);
    pthread_mutex_destroy(&box.mu);
    return res;
}

static conf_t *make_conf(uint16_t port)
{
    conf_t *c = calloc(1, sizeof(*c));
    conf_defaults(c);
    c->auth_redis.port = port;
    c->auth_redis.pool_size = 2;
    c->auth_redis.timeout_ms = 500;
    return c;
}

static auth_backend_t *start(conf_t *c)
{
    char err[256] = "";
    auth_backend_t *b = auth_redis_new(c, err, sizeof(err));
    if (b == NULL)
        fail_msg("auth_redis_new: %s", err);
    return b;
}

/* ---- tests ---- */

static void test_credentials_and_rules(void **state)
{
    (void)state;
    redis_srv_t *s = redis_new(NULL);
    add_user(s, NULL, 0, "alice", "right");
    cmd(s, NULL, 0, "RPUSH antenna:acl:alice %s %s %s", "deny pub dev/alice/secret",
        "allow all dev/alice/#", "sub public/+");
    add_user(s, NULL, 0, "bob", "pw");
    cmd(s, NULL, 0, "SADD antenna:acl:bob %s", "pub bob/out");
    add_user(s, NULL, 0, "carol", "pw"); /* no rules */
    conf_t *c = make_conf(s->port);
    auth_backend_t *b = start(c);

    result_t r = ask(b, AUTH_ACT_CONNECT, "alice", "right");
    assert_int_equal(r.now, AUTH_PENDING);
    assert_int_equal(r.a.verdict, AUTH_ALLOW);
    assert_non_null(r.a.acl);
    auth_acl_t *acl = r.a.acl;
    assert_int_equal(auth_acl_count(acl), 3);
    assert_int_equal(auth_acl_check(acl, "alice", "cid", AUTH_ACT_PUBLISH, "dev/alice/x", 11, 0),
                     1);
    assert_int_equal(
        auth_acl_check(acl, "alice", "cid", AUTH_ACT_PUBLISH, "dev/alice/secret", 16, 0), 0);
    assert_int_equal(auth_acl_check(acl, "alice", "cid", AUTH_ACT_SUBSCRIBE, "public/a", 8, 1), 1);
    assert_int_equal(auth_acl_check(acl, "alice", "cid", AUTH_ACT_PUBLISH, "public/a", 8, 0), -1);
    auth_acl_free(acl);

    r = ask(b, AUTH_ACT_CONNECT, "bob", "pw"); /* rules in a set */
    assert_int_equal(r.a.verdict, AUTH_ALLOW);
    assert_non_null(r.a.acl);
    assert_int_equal(auth_acl_check(r.a.acl, "bob", "cid", AUTH_ACT_PUBLISH, "bob/out", 7, 0), 1);
    auth_acl_free(r.a.acl);

    r = ask(b, AUTH_ACT_CONNECT, "carol", "pw");
    assert_int_equal(r.a.verdict, AUTH_ALLOW);
    assert_null(r.a.acl);

    r = ask(b, AUTH_ACT_CONNECT, "alice", "wrong");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BAD_CREDENTIALS);
    assert_null(r.a.acl);
    r = ask(b, AUTH_ACT_CONNECT, "alice", NULL);
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BAD_CREDENTIALS);

    r = ask(b, AUTH_ACT_CONNECT, "mallory", "x"); /* unknown: the next backend's */
    assert_int_equal(r.now, AUTH_PENDING);
    assert_int_equal(r.a.verdict, AUTH_PASS);

    /* answered at once, without Redis */
    r = ask(b, AUTH_ACT_CONNECT, NULL, NULL);
    assert_int_equal(r.now, AUTH_PASS);
    r = ask(b, AUTH_ACT_PUBLISH, "alice", NULL);
    assert_int_equal(r.now, AUTH_PASS);

    auth_redis_stats_t st;
    auth_redis_stats(b, &st);
    assert_int_equal(st.lookups, 6);
    assert_int_equal(st.allowed, 3);
    assert_int_equal(st.denied, 2);
    assert_int_equal(st.unknown, 1);
    assert_int_equal(st.errors, 0);
    assert_true(st.connects >= 1 && st.connects <= 2); /* one per pooled connection */
    b->destroy(b);
    free(c);
    redis_free(s);
}

static void test_bad_data(void **state)
{
    (void)state;
    redis_srv_t *s = redis_new(NULL);
    cmd(s, NULL, 0, "HSET antenna:user:broken password %s", "$pbkdf2-sha512$nope");
    add_user(s, NULL, 0, "badrule", "pw");
    cmd(s, NULL, 0, "RPUSH antenna:acl:badrule %s", "allow pub a/#/b");
    cmd(s, NULL, 0, "SET antenna:user:str %s", "not a hash");
    conf_t *c = make_conf(s->port);
    auth_backend_t *b = start(c);

    result_t r = ask(b, AUTH_ACT_CONNECT, "broken", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    r = ask(b, AUTH_ACT_CONNECT, "badrule", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    assert_null(r.a.acl);
    r = ask(b, AUTH_ACT_CONNECT, "str", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    auth_redis_stats_t st;
    auth_redis_stats(b, &st);
    assert_int_equal(st.errors, 3);
    b->destroy(b);

    c->auth_redis.on_error = CONF_AUTH_ON_ERROR_PASS;
    b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "broken", "pw").a.verdict, AUTH_PASS);
    b->destroy(b);
    free(c);
    redis_free(s);
}

static void test_auth_and_db(void **state)
{
    (void)state;
    redis_srv_t *s = redis_new("hunter2");
    add_user(s, "hunter2", 3, "dave", "pw");
    conf_t *c = make_conf(s->port);
    snprintf(c->auth_redis.password, sizeof(c->auth_redis.password), "%s", "hunter2");
    c->auth_redis.db = 3;
    auth_backend_t *b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "dave", "pw").a.verdict, AUTH_ALLOW);
    b->destroy(b);

    c->auth_redis.db = 0; /* dave is not in db 0 */
    b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "dave", "pw").a.verdict, AUTH_PASS);
    b->destroy(b);

    snprintf(c->auth_redis.password, sizeof(c->auth_redis.password), "%s", "wrong");
    b = start(c);
    result_t r = ask(b, AUTH_ACT_CONNECT, "dave", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    b->destroy(b);
    free(c);
    redis_free(s);
}

static void test_down_and_back(void **state)
{
    (void)state;
    redis_srv_t *s = redis_new(NULL);
    add_user(s, NULL, 0, "erin", "pw");
    conf_t *c = make_conf(s->port);
    c->auth_redis.pool_size = 1;
    auth_backend_t *b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "erin", "pw").a.verdict, AUTH_ALLOW);

    redis_srv_kill(s);
    /* the pooled connection is dead: retried once on a new one, refused,
     * answered at once (not after the timeout) */
    result_t r = ask(b, AUTH_ACT_CONNECT, "erin", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    assert_true(r.ms < 400);
    /* during the backoff: no connect attempt, an error at once */
    r = ask(b, AUTH_ACT_CONNECT, "erin", "pw");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_true(r.ms < 100);

    redis_start(s, NULL); /* same port, empty data */
    add_user(s, NULL, 0, "erin", "pw");
    int allowed = 0;
    for (int i = 0; i < 60 && !allowed; i++) { /* backoff is at most 2 s */
        r = ask(b, AUTH_ACT_CONNECT, "erin", "pw");
        allowed = r.a.verdict == AUTH_ALLOW;
        if (!allowed)
            usleep(100 * 1000);
    }
    assert_true(allowed);
    auth_redis_stats_t st;
    auth_redis_stats(b, &st);
    assert_true(st.errors >= 2);
    assert_true(st.connects >= 2);
    b->destroy(b);

    /* a restart between two requests costs nobody an error: the broken
     * pooled connection is replaced at once */
    b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "erin", "pw").a.verdict, AUTH_ALLOW);
    redis_srv_kill(s);
    redis_start(s, NULL);
    add_user(s, NULL, 0, "erin", "pw");
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "erin", "pw").a.verdict, AUTH_ALLOW);
    b->destroy(b);
    free(c);
    redis_free(s);
}

/* A Redis that stops answering (SIGSTOP): the lookup in flight times out
 * (timeout_ms) and, with queue_size 1, a second CONNECT is refused at once
 * with 0x97 instead of waiting behind it. */
static void test_hung_and_queue_full(void **state)
{
    (void)state;
    redis_srv_t *s = redis_new(NULL);
    add_user(s, NULL, 0, "fay", "pw");
    conf_t *c = make_conf(s->port);
    c->auth_redis.pool_size = 1;
    c->auth_redis.queue_size = 1;
    c->auth_redis.timeout_ms = 400;
    auth_backend_t *b = start(c);
    assert_int_equal(ask(b, AUTH_ACT_CONNECT, "fay", "pw").a.verdict, AUTH_ALLOW);

    kill(s->pid, SIGSTOP);
    box_t box = {.n = 0};
    pthread_mutex_init(&box.mu, NULL);
    pthread_cond_init(&box.cond, NULL);
    auth_request_t r = {.action = AUTH_ACT_CONNECT,
                        .client_id = "hung",
                        .username = "fay",
                        .password = (const uint8_t *)"pw",
                        .password_len = 2,
                        .peer = "127.0.0.1:1"};
    auth_answer_t out;
    uint64_t t0 = an_now_ms();
    assert_int_equal(b->check(b, &r, &out, done_cb, &box), AUTH_PENDING);
    result_t full = ask(b, AUTH_ACT_CONNECT, "fay", "pw");
    assert_int_equal(full.now, AUTH_DENY);
    assert_int_equal(full.a.cause, AUTH_BUSY);
    assert_true(full.ms < 100);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&box.mu);
    while (box.n == 0 && pthread_cond_timedwait(&box.cond, &box.mu, &ts) == 0)
        ;
    assert_int_equal(box.n, 1);
    pthread_mutex_unlock(&box.mu);
    uint64_t took = an_now_ms() - t0;
    assert_int_equal(box.a.verdict, AUTH_DENY);
    assert_int_equal(box.a.cause, AUTH_BACKEND_UNAVAILABLE);
    /* one command timeout, and one connect timeout for the retry on a
     * fresh connection (the server accepts in the kernel, never answers) */
    assert_true(took >= 350 && took < 2500);
    kill(s->pid, SIGCONT);
    pthread_cond_destroy(&box.cond);
    pthread_mutex_destroy(&box.mu);

    auth_redis_stats_t st;
    auth_redis_stats(b, &st);
    assert_int_equal(st.queue_full, 1);
    assert_true(st.errors >= 1);
    b->destroy(b);
    free(c);
    redis_free(s);
}

/* Redis never started: the broker can start, and answers are errors. */
static void test_never_up(void **state)
{
    (void)state;
    conf_t *c = make_conf(redis_srv_free_port());
    auth_backend_t *b = start(c);
    result_t r = ask(b, AUTH_ACT_CONNECT, "x", "y");
    assert_int_equal(r.a.verdict, AUTH_DENY);
    assert_int_equal(r.a.cause, AUTH_BACKEND_UNAVAILABLE);
    b->destroy(b);
    free(c);
}

int main(void)
{
    log_open(NULL, AN_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credentials_and_rules), cmocka_unit_test(test_bad_data),
        cmocka_unit_test(test_auth_and_db),           cmocka_unit_test(test_down_and_back),
        cmocka_unit_test(test_hung_and_queue_full),   cmocka_unit_test(test_never_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
