/* test_ev.c -- the event loop (ev.h) on pipes, eventfds and socketpairs:
 * readiness reaches the right callback with the right bits, once per turn;
 * modify adds and drops interest; a watcher stopped by another callback of
 * the same batch (and freed, or started again) gets no stale event; a
 * callback may stop and free its own watcher; hang-ups arrive without
 * interest; exclusive watchers refuse modify; a watcher moves between
 * loops; many watchers with a small batch are each served exactly once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ev.h"

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* A watcher with a record of its calls and an action to run in them. */
typedef struct probe_s probe_t;
struct probe_s {
    ev_watcher_t ev;
    int calls;
    uint32_t last;       /* events of the last call */
    int drain;           /* read the fd (8 bytes: an eventfd) in the callback */
    probe_t *stop_other; /* stop this one in the callback ... */
    int free_other;      /* ... and free it */
    int restart_other;   /* ... or start it again at once */
    int stop_self, free_self;
    int *order; /* shared call counter: when this one was called */
    int seq;
};

static void probe_cb(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    probe_t *p = container_of(ev, probe_t, ev);
    p->calls++;
    p->last = events;
    if (p->order)
        p->seq = ++*p->order;
    if (p->drain) {
        uint64_t v;
        assert_int_equal(read(ev->fd, &v, sizeof(v)), (ssize_t)sizeof(v));
    }
    if (p->stop_other) {
        probe_t *o = p->stop_other;
        p->stop_other = NULL;
        ev_watch_stop(loop, &o->ev);
        if (p->restart_other)
            assert_int_equal(ev_watch_start(loop, &o->ev, EV_READ), 0);
        if (p->free_other) {
            close(o->ev.fd);
            free(o);
        }
    }
    if (p->stop_self || p->free_self)
        ev_watch_stop(loop, ev);
    if (p->free_self) {
        close(ev->fd);
        free(p);
    }
}

static int turns;
static void count_turn(ev_loop_t *loop)
{
    (void)loop;
    turns++;
}

static int efd_ready(void)
{
    int fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable now */
    assert_true(fd >= 0);
    return fd;
}

static void test_dispatch(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, count_turn), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    probe_t a = {0};
    ev_watcher_init(&a.ev, p[0], probe_cb);
    assert_int_equal(ev_watch_start(&loop, &a.ev, EV_READ), 0);
    assert_true(ev_watch_active(&a.ev));
    assert_int_equal(ev_watch_start(&loop, &a.ev, EV_READ), -1); /* twice */
    assert_int_equal(errno, EEXIST);

    turns = 0;
    assert_int_equal(ev_loop_run_once(&loop, 0), 0); /* nothing ready */
    assert_int_equal(a.calls, 0);
    assert_int_equal(turns, 1); /* after_poll runs on a timeout too */

    assert_int_equal(write(p[1], "x", 1), 1);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.last, EV_READ);
    /* level-triggered: still there next turn, gone once read */
    assert_int_equal(ev_loop_run_once(&loop, 0), 1);
    assert_int_equal(a.calls, 2);
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);
    assert_int_equal(a.calls, 2);

    /* the writer goes: a hang-up, delivered even without interest */
    assert_int_equal(ev_watch_modify(&loop, &a.ev, 0), 0);
    close(p[1]);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 1);
    assert_int_equal(a.calls, 3);
    assert_true(a.last & EV_HUP);
    assert_false(a.last & EV_READ);

    ev_watch_stop(&loop, &a.ev);
    ev_watch_stop(&loop, &a.ev); /* idempotent */
    assert_false(ev_watch_active(&a.ev));
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);
    assert_int_equal(a.calls, 3);
    close(p[0]);
    ev_loop_free(&loop);
    ev_loop_free(&loop); /* twice: harmless */
}

static void test_modify(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, NULL), 0);
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp), 0);
    probe_t a = {0};
    ev_watcher_init(&a.ev, sp[0], probe_cb);
    /* modify before start: refused, nothing changes */
    assert_int_equal(ev_watch_modify(&loop, &a.ev, EV_READ), -1);
    assert_int_equal(errno, ENOENT);
    assert_false(ev_watch_active(&a.ev));

    assert_int_equal(ev_watch_start(&loop, &a.ev, EV_READ), 0);
    /* writable but not asked: no call */
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);
    assert_int_equal(a.calls, 0);
    assert_int_equal(ev_watch_modify(&loop, &a.ev, EV_READ | EV_WRITE), 0);
    assert_int_equal(ev_watch_modify(&loop, &a.ev, EV_READ | EV_WRITE), 0); /* unchanged */
    assert_int_equal(ev_loop_run_once(&loop, 1000), 1);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.last, EV_WRITE);
    /* readable and writable */
    assert_int_equal(write(sp[1], "ab", 2), 2);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 1);
    assert_int_equal(a.last, EV_READ | EV_WRITE);
    /* reads dropped: only the write side */
    assert_int_equal(ev_watch_modify(&loop, &a.ev, EV_WRITE), 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 1);
    assert_int_equal(a.last, EV_WRITE);
    /* nothing asked: no call although readable and writable */
    assert_int_equal(ev_watch_modify(&loop, &a.ev, 0), 0);
    int before = a.calls;
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);
    assert_int_equal(a.calls, before);
    assert_true(ev_watch_active(&a.ev));
    ev_watch_stop(&loop, &a.ev);
    assert_int_equal(ev_watch_modify(&loop, &a.ev, EV_READ), -1);
    assert_int_equal(errno, ENOENT);

    /* an exclusive watcher: start and stop only */
    probe_t x = {0};
    ev_watcher_init(&x.ev, sp[1], probe_cb);
    assert_int_equal(ev_watch_start(&loop, &x.ev, EV_READ | EV_EXCLUSIVE), 0);
    assert_int_equal(ev_watch_modify(&loop, &x.ev, EV_READ | EV_WRITE | EV_EXCLUSIVE), -1);
    assert_int_equal(errno, EINVAL);
    ev_watch_stop(&loop, &x.ev);
    close(sp[0]);
    close(sp[1]);
    ev_loop_free(&loop);
}

/* Two ready watchers; the first called stops the second: whichever order
 * the poller reports them in, the second is not called in that batch, nor
 * later. */
static void test_stop_other_in_batch(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, NULL), 0);
    probe_t a = {0}, b = {0};
    ev_watcher_init(&a.ev, efd_ready(), probe_cb);
    ev_watcher_init(&b.ev, efd_ready(), probe_cb);
    a.stop_other = &b;
    b.stop_other = &a;
    assert_int_equal(ev_watch_start(&loop, &a.ev, EV_READ), 0);
    assert_int_equal(ev_watch_start(&loop, &b.ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 2); /* both were ready */
    assert_int_equal(a.calls + b.calls, 1);
    probe_t *stopped = a.calls ? &b : &a;
    assert_false(ev_watch_active(&stopped->ev));
    assert_int_equal(ev_loop_run_once(&loop, 0), 1); /* the other, still ready */
    assert_int_equal(stopped->calls, 0);
    ev_watch_stop(&loop, &a.ev);
    ev_watch_stop(&loop, &b.ev);
    close(a.ev.fd);
    close(b.ev.fd);
    ev_loop_free(&loop);
}

/* The same, the stopped watcher freed at once (ASan: no use after free). */
static void test_stop_and_free_other(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, NULL), 0);
    probe_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    ev_watcher_init(&a->ev, efd_ready(), probe_cb);
    ev_watcher_init(&b->ev, efd_ready(), probe_cb);
    a->stop_other = b;
    a->free_other = 1;
    b->stop_other = a;
    b->free_other = 1;
    assert_int_equal(ev_watch_start(&loop, &a->ev, EV_READ), 0);
    assert_int_equal(ev_watch_start(&loop, &b->ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 2);
    probe_t *left = a->calls ? a : b; /* only the survivor can be read */
    assert_int_equal(left->calls, 1);
    ev_watch_stop(&loop, &left->ev);
    close(left->ev.fd);
    free(left);
    ev_loop_free(&loop);
}

/* Stopped and started again in the same batch: the stale event is still
 * dropped; the new registration reports next turn. */
static void test_stop_restart_in_batch(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, NULL), 0);
    probe_t a = {0}, b = {0};
    ev_watcher_init(&a.ev, efd_ready(), probe_cb);
    ev_watcher_init(&b.ev, efd_ready(), probe_cb);
    a.stop_other = &b;
    a.restart_other = 1;
    b.stop_other = &a;
    b.restart_other = 1;
    assert_int_equal(ev_watch_start(&loop, &a.ev, EV_READ), 0);
    assert_int_equal(ev_watch_start(&loop, &b.ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 2);
    assert_int_equal(a.calls + b.calls, 1);
    probe_t *restarted = a.calls ? &b : &a;
    assert_true(ev_watch_active(&restarted->ev));
    assert_int_equal(restarted->calls, 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 2);
    assert_int_equal(restarted->calls, 1);
    ev_watch_stop(&loop, &a.ev);
    ev_watch_stop(&loop, &b.ev);
    close(a.ev.fd);
    close(b.ev.fd);
    ev_loop_free(&loop);
}

/* A callback stops and frees its own watcher; the others of the batch are
 * still served. */
static void test_free_self(void **state)
{
    (void)state;
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 8, NULL), 0);
    int order = 0;
    probe_t *a = calloc(1, sizeof(*a));
    probe_t b = {.order = &order};
    ev_watcher_init(&a->ev, efd_ready(), probe_cb);
    a->free_self = 1;
    a->order = &order;
    ev_watcher_init(&b.ev, efd_ready(), probe_cb);
    assert_int_equal(ev_watch_start(&loop, &a->ev, EV_READ), 0);
    assert_int_equal(ev_watch_start(&loop, &b.ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&loop, 1000), 2);
    assert_int_equal(order, 2);
    assert_int_equal(b.calls, 1);
    ev_watch_stop(&loop, &b.ev);
    close(b.ev.fd);
    ev_loop_free(&loop);
}

/* A watcher leaves one loop and joins another (a connection handed to its
 * home worker). */
static void test_move_between_loops(void **state)
{
    (void)state;
    ev_loop_t l1, l2;
    assert_int_equal(ev_loop_init(&l1, 4, NULL), 0);
    assert_int_equal(ev_loop_init(&l2, 4, NULL), 0);
    probe_t a = {0};
    ev_watcher_init(&a.ev, efd_ready(), probe_cb);
    assert_int_equal(ev_watch_start(&l1, &a.ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&l1, 1000), 1);
    ev_watch_stop(&l1, &a.ev);
    assert_int_equal(ev_watch_start(&l2, &a.ev, EV_READ), 0);
    assert_int_equal(ev_loop_run_once(&l1, 0), 0);
    assert_int_equal(ev_loop_run_once(&l2, 1000), 1);
    assert_int_equal(a.calls, 2);
    ev_watch_stop(&l2, &a.ev);
    close(a.ev.fd);
    ev_loop_free(&l1);
    ev_loop_free(&l2);
}

/* Many ready watchers, a batch of 16: each is served exactly once per
 * readiness over several turns; in a second round each callback stops and
 * frees the other watcher of its pair, which is then never called. */
#define MANY 400
typedef struct {
    ev_watcher_t ev;
    int idx;
} many_t;
static struct {
    many_t **w; /* NULL once freed */
    int *calls; /* by index, outside the structs */
    int stop_pairs;
} many;

static void many_cb(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    many_t *m = container_of(ev, many_t, ev);
    uint64_t v;
    assert_int_equal(events, EV_READ);
    many.calls[m->idx]++;
    assert_int_equal(read(ev->fd, &v, sizeof(v)), (ssize_t)sizeof(v));
    many_t *o = many.stop_pairs ? many.w[m->idx ^ 1] : NULL;
    if (o) {
        ev_watch_stop(loop, &o->ev);
        close(o->ev.fd);
        free(o);
        many.w[m->idx ^ 1] = NULL;
    }
}

static void test_many(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < MANY + 64) {
        rl.rlim_cur = rl.rlim_max < MANY + 64 ? rl.rlim_max : MANY + 64;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    int n = rl.rlim_cur < MANY + 64 ? ((int)rl.rlim_cur - 64) & ~1 : MANY;
    assert_true(n >= 32);
    ev_loop_t loop;
    assert_int_equal(ev_loop_init(&loop, 16, NULL), 0);
    many.w = calloc((size_t)n, sizeof(*many.w));
    many.calls = calloc((size_t)n, sizeof(*many.calls));
    many.stop_pairs = 0;
    for (int i = 0; i < n; i++) {
        many.w[i] = calloc(1, sizeof(*many.w[i]));
        many.w[i]->idx = i;
        ev_watcher_init(&many.w[i]->ev, efd_ready(), many_cb);
        assert_int_equal(ev_watch_start(&loop, &many.w[i]->ev, EV_READ), 0);
    }
    int served = 0;
    for (int t = 0; t < n && served < n; t++) {
        int r = ev_loop_run_once(&loop, 1000);
        assert_true(r > 0 && r <= 16);
        served += r;
    }
    assert_int_equal(served, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(many.calls[i], 1);
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);

    /* round two: all ready again, pairs (2k, 2k+1) stop each other */
    for (int i = 0; i < n; i++) {
        uint64_t one = 1;
        assert_int_equal(write(many.w[i]->ev.fd, &one, sizeof(one)), (ssize_t)sizeof(one));
        many.calls[i] = 0;
    }
    many.stop_pairs = 1;
    for (int t = 0; t < n; t++)
        if (ev_loop_run_once(&loop, 0) == 0)
            break;
    for (int i = 0; i < n; i += 2) {
        int a = many.w[i] != NULL, b = many.w[i + 1] != NULL;
        assert_int_equal(a + b, 1);
        assert_int_equal(many.calls[i] + many.calls[i + 1], 1);
        assert_int_equal(many.calls[a ? i : i + 1], 1);
    }
    assert_int_equal(ev_loop_run_once(&loop, 0), 0);
    for (int i = 0; i < n; i++)
        if (many.w[i]) {
            ev_watch_stop(&loop, &many.w[i]->ev);
            close(many.w[i]->ev.fd);
            free(many.w[i]);
        }
    free(many.w);
    free(many.calls);
    ev_loop_free(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_modify),
        cmocka_unit_test(test_stop_other_in_batch),
        cmocka_unit_test(test_stop_and_free_other),
        cmocka_unit_test(test_stop_restart_in_batch),
        cmocka_unit_test(test_free_self),
        cmocka_unit_test(test_move_between_loops),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
