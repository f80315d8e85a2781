/* test_endpoint.c -- the session endpoint contract (endpoint.h), with an
 * endpoint that is not an MQTT connection: a recorder that keeps what the
 * session gave it.  A real session (sess.c) on a worker built by hand (no
 * thread, no socket, no store): the window (receive_max, acknowledgements
 * moving the queue), QoS 2 (PUBREL through ack()), max_packet, a refused
 * QoS 0, the retry flag on the worker's timer wheel, subscription
 * identifiers only with EP_F_SUBIDS, offline queueing and the resend with
 * dup on the next attach, a takeover (close with EP_CLOSE_TAKEN_OVER, the
 * session intact for the next endpoint), the session ended under its
 * endpoint, and describe() as events see it.  And where a session keeps
 * its bytes (issue 20): an exact filter once, in the trie; the queue's
 * byte count in its ring; incoming QoS 2 ids in sess_ext_t.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_chain.h"
#include "endpoint.h"
#include "sess.h"
#include "server.h"
#include "shared.h"
#include "trie.h"

/* ---- the recorder endpoint ---- */

typedef struct {
    char topic[32];
    uint8_t qos, retain, dup;
    uint16_t pid;
    uint32_t nsubids, subid0;
} delivery_t;

typedef struct {
    endpoint_t ep; /* embedded, as in conn_t */
    delivery_t d[16];
    size_t nd;
    struct {
        uint8_t type, reason;
        uint16_t pid;
        unsigned flags;
    } a[8];
    size_t na;
    int closes;
    ep_close_t why;
    char text[64];
    size_t backlog;
    int refuse_qos0;
} rec_t;

static rec_t *rec_of(const endpoint_t *ep)
{
    return container_of(ep, rec_t, ep);
}

static int rec_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                       uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    rec_t *r = rec_of(ep);
    if (qos == 0 && !retain && r->refuse_qos0)
        return -1;
    assert_true(r->nd < 16);
    delivery_t *d = &r->d[r->nd++];
    memset(d, 0, sizeof(*d));
    memcpy(d->topic, msg_topic(m), m->topic_len < 31 ? m->topic_len : 31);
    d->qos = qos;
    d->retain = retain;
    d->dup = dup;
    d->pid = pid;
    d->nsubids = nsubids;
    d->subid0 = nsubids ? subids[0] : 0;
    return 0;
}

static void rec_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags)
{
    rec_t *r = rec_of(ep);
    assert_true(r->na < 8);
    r->a[r->na].type = type;
    r->a[r->na].pid = pid;
    r->a[r->na].reason = reason;
    r->a[r->na].flags = flags;
    r->na++;
}

static void rec_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    rec_t *r = rec_of(ep);
    r->closes++;
    r->why = why;
    strncpy(r->text, text ? text : "", sizeof(r->text) - 1);
}

static size_t rec_backlog(const endpoint_t *ep)
{
    return rec_of(ep)->backlog;
}

static void rec_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    (void)ep;
    *out = (ep_info_t){.client = {.username = "alice"}};
    if (peer) {
        strncpy(peer, "recorder:1", size - 1);
        peer[size - 1] = '\0';
        out->client.peer = peer;
    }
}

static const endpoint_ops_t rec_ops = {.name = "recorder",
                                       .deliver = rec_deliver,
                                       .ack = rec_ack,
                                       .close = rec_close,
                                       .backlog = rec_backlog,
                                       .describe = rec_describe};

static void rec_init(rec_t *r, uint16_t receive_max, uint8_t flags)
{
    memset(r, 0, sizeof(*r));
    r->ep = (endpoint_t){.ops = &rec_ops, .receive_max = receive_max, .flags = flags};
}

/* ---- a worker without a thread ---- */

typedef struct {
    server_t *srv;
    worker_t *w;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    f->srv = calloc(1, sizeof(*f->srv));
    f->w = calloc(1, sizeof(*f->w));
    conf_defaults(&f->srv->conf);
    server_slabs_init(f->srv);
    f->srv->trie = trie_new();
    pthread_rwlock_init(&f->srv->trie_lock, NULL);
    f->w->srv = f->srv;
    f->w->now = 1000;
    tw_init(&f->w->tw, f->w->now);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    for (size_t b = 0; b < f->w->by_sid.nbuckets; b++)
        while (f->w->by_sid.buckets && f->w->by_sid.buckets[b])
            sess_destroy(f->w, f->w->by_sid.buckets[b]);
    sess_table_free(&f->w->by_id);
    sess_table_free(&f->w->by_sid);
    shared_free_all(&f->srv->groups);
    trie_free(f->srv->trie);
    pthread_rwlock_destroy(&f->srv->trie_lock);
    server_slabs_free(f->srv);
    free(f->w);
    free(f->srv);
    free(f);
    return 0;
}

static sess_t *new_session(fixture_t *f, const char *id, uint32_t expiry)
{
    sess_t *s = sess_new(f->w, (const uint8_t *)id, (uint16_t)strlen(id), expiry);
    s->acl_gen = auth_chain_gen(NULL); /* no auth chain: every verdict current */
    return s;
}

static void deliver(fixture_t *f, sess_t *s, const char *topic, size_t payload, uint8_t qos)
{
    static const uint8_t zeros[256];
    assert_true(payload <= sizeof(zeros));
    msg_t *m =
        msg_new((const uint8_t *)topic, (uint16_t)strlen(topic), zeros, (uint32_t)payload, qos, 0);
    sess_deliver(f->w, s, m, qos, 0);
    msg_unref(&m);
}

/* ---- the contract ---- */

static void window_is_receive_max(void **state)
{
    fixture_t *f = *state;
    rec_t r;
    rec_init(&r, 2, 0);
    sess_t *s = new_session(f, "win", 0);
    sess_attach(s, &r.ep);
    deliver(f, s, "t/0", 1, 0);
    deliver(f, s, "t/1", 1, 1);
    deliver(f, s, "t/2", 1, 1);
    deliver(f, s, "t/3", 1, 1); /* the window (2) is full: queued */
    assert_int_equal(r.nd, 3);
    assert_int_equal(r.d[0].qos, 0);
    assert_int_equal(r.d[0].pid, 0);
    assert_int_equal(r.d[1].pid, 1);
    assert_int_equal(r.d[2].pid, 2);
    assert_int_equal(sq_len(&s->inflight), 2);
    assert_int_equal(sq_len(&s->queue), 1);
    assert_int_equal(sess_on_puback(s, 1, 0), 0); /* room: the queued one goes */
    assert_int_equal(r.nd, 4);
    assert_string_equal(r.d[3].topic, "t/3");
    assert_int_equal(r.d[3].pid, 3);
    assert_int_equal(r.d[3].dup, 0);
    assert_int_equal(sess_on_puback(s, 9, 0), -1); /* unknown id */
    assert_int_equal(r.na, 0);
    assert_int_equal(r.closes, 0);
    sess_detach(f->w, s); /* expiry 0: the session ends with its endpoint */
    assert_int_equal(r.closes, 0);
}

static void qos2_release_through_ack(void **state)
{
    fixture_t *f = *state;
    rec_t r;
    rec_init(&r, 10, 0);
    sess_t *s = new_session(f, "q2", 0);
    sess_attach(s, &r.ep);
    deliver(f, s, "x", 1, 2);
    assert_int_equal(r.nd, 1);
    uint16_t pid = r.d[0].pid;
    assert_int_equal(sess_on_pubrec(s, pid, 0), 0);
    assert_int_equal(r.na, 1);
    assert_int_equal(r.a[0].type, EP_ACK_PUBREL);
    assert_int_equal(r.a[0].pid, pid);
    assert_int_equal(r.a[0].flags, 0);
    assert_int_equal(sess_on_pubrec(s, pid, 0), 0); /* a PUBREC again: PUBREL again */
    assert_int_equal(r.na, 2);
    assert_int_equal(sess_on_pubcomp(s, pid), 0);
    assert_int_equal(sq_len(&s->inflight), 0);
    sess_detach(f->w, s);
}

static void max_packet_and_refused_qos0(void **state)
{
    fixture_t *f = *state;
    rec_t r;
    rec_init(&r, 10, 0);
    r.ep.max_packet = 64;
    sess_t *s = new_session(f, "small", 0);
    sess_attach(s, &r.ep);
    uint64_t dropped = f->w->stats.msgs_dropped;
    deliver(f, s, "big", 200, 1); /* skipped for this peer, counted */
    deliver(f, s, "ok", 10, 1);
    assert_int_equal(r.nd, 1);
    assert_string_equal(r.d[0].topic, "ok");
    assert_int_equal(sq_len(&s->inflight), 1);
    assert_int_equal(f->w->stats.msgs_dropped, dropped + 1);
    r.refuse_qos0 = 1; /* output over its limit: QoS 0 goes, counted */
    deliver(f, s, "q0", 1, 0);
    assert_int_equal(r.nd, 1);
    assert_int_equal(f->w->stats.msgs_dropped, dropped + 2);
    /* memory short and the endpoint behind: QoS 0 is shed before the call */
    r.refuse_qos0 = 0;
    r.backlog = 100000;
    atomic_store(&f->srv->over_high_water, 1);
    deliver(f, s, "q0", 1, 0);
    assert_int_equal(r.nd, 1);
    atomic_store(&f->srv->over_high_water, 0);
    deliver(f, s, "q0", 1, 0);
    assert_int_equal(r.nd, 2);
    sess_detach(f->w, s);
}

static void retry_only_with_the_flag(void **state)
{
    fixture_t *f = *state;
    rec_t a, b;
    rec_init(&a, 10, EP_F_RETRY);
    rec_init(&b, 10, 0);
    sess_t *sa = new_session(f, "retry", 0), *sb = new_session(f, "noretry", 0);
    sess_attach(sa, &a.ep);
    sess_attach(sb, &b.ep);
    deliver(f, sa, "r", 1, 1);
    deliver(f, sb, "r", 1, 1);
    f->w->now += (uint64_t)f->srv->conf.retry_interval * 1000u + 1;
    tw_advance(&f->w->tw, f->w->now);
    assert_int_equal(a.nd, 2);
    assert_int_equal(a.d[1].dup, 1);
    assert_int_equal(a.d[1].pid, a.d[0].pid);
    assert_int_equal(b.nd, 1);
    sess_detach(f->w, sa);
    sess_detach(f->w, sb);
}

static void subids_only_with_the_flag(void **state)
{
    fixture_t *f = *state;
    rec_t a, b;
    rec_init(&a, 10, EP_F_SUBIDS);
    rec_init(&b, 10, 0);
    sess_t *sa = new_session(f, "ids", 0), *sb = new_session(f, "noids", 0);
    sess_subscribe(f->w, sa, (const uint8_t *)"a/#", 3, 1, 7);
    sess_subscribe(f->w, sb, (const uint8_t *)"a/#", 3, 1, 7);
    sess_attach(sa, &a.ep);
    sess_attach(sb, &b.ep);
    deliver(f, sa, "a/b", 1, 1);
    deliver(f, sb, "a/b", 1, 1);
    assert_int_equal(a.d[0].nsubids, 1);
    assert_int_equal(a.d[0].subid0, 7);
    assert_int_equal(b.d[0].nsubids, 0);
    sess_detach(f->w, sa);
    sess_detach(f->w, sb);
}

static void offline_then_resent_with_dup(void **state)
{
    fixture_t *f = *state;
    rec_t a, b;
    rec_init(&a, 10, 0);
    rec_init(&b, 10, 0);
    sess_t *s = new_session(f, "back", SESS_NEVER);
    sess_attach(s, &a.ep);
    deliver(f, s, "in-flight", 1, 1);
    sess_detach(f->w, s); /* a persistent session stays */
    assert_null(s->ep);
    deliver(f, s, "q0", 1, 0); /* QoS 0 is not queued offline */
    deliver(f, s, "queued", 1, 1);
    assert_int_equal(a.nd, 1);
    sess_attach(s, &b.ep);
    assert_int_equal(b.nd, 2);
    assert_string_equal(b.d[0].topic, "in-flight");
    assert_int_equal(b.d[0].dup, 1);
    assert_int_equal(b.d[0].pid, a.d[0].pid);
    assert_string_equal(b.d[1].topic, "queued");
    assert_int_equal(b.d[1].dup, 0);
    sess_detach(f->w, s);
}

static void takeover_closes_the_old_endpoint(void **state)
{
    fixture_t *f = *state;
    rec_t a, b;
    rec_init(&a, 10, 0);
    rec_init(&b, 10, 0);
    sess_t *s = new_session(f, "taken", SESS_NEVER);
    sess_attach(s, &a.ep);
    deliver(f, s, "m", 1, 1);
    sess_take_over(s, "session taken over");
    assert_int_equal(a.closes, 1);
    assert_int_equal(a.why, EP_CLOSE_TAKEN_OVER);
    assert_string_equal(a.text, "session taken over");
    assert_null(s->ep);
    assert_int_equal(sq_len(&s->inflight), 1); /* the session is intact */
    sess_attach(s, &b.ep);
    assert_int_equal(b.nd, 1);
    assert_int_equal(b.d[0].dup, 1);
    assert_int_equal(b.closes, 0);
    sess_detach(f->w, s);
}

static void session_ended_under_its_endpoint(void **state)
{
    fixture_t *f = *state;
    rec_t r;
    rec_init(&r, 10, 0);
    sess_t *s = new_session(f, "gone", SESS_NEVER);
    sess_attach(s, &r.ep);
    sess_destroy(f->w, s);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.why, EP_CLOSE_SESSION_ENDED);
}

static char seen_user[16], seen_peer[32], seen_id[16];

/* ---- a session's memory (issue 20): what it keeps, and where ---- */

static int subscribe(fixture_t *f, sess_t *s, const char *filter)
{
    return sess_subscribe(f->w, s, (const uint8_t *)filter, (uint16_t)strlen(filter), 1, 0);
}

static int unsubscribe(fixture_t *f, sess_t *s, const char *filter)
{
    return sess_unsubscribe(f->w, s, (const uint8_t *)filter, (uint16_t)strlen(filter));
}

static const sess_sub_t *sub_of(const sess_t *s, const char *filter)
{
    return sess_sub_find(s, (const uint8_t *)filter, (uint16_t)strlen(filter));
}

/* An exact filter is kept once, by the trie (sess.h): two sessions'
 * subscriptions point at the same bytes, which stay while either is
 * subscribed; wildcard and shared filters are copies. */
static void exact_filters_kept_once(void **state)
{
    fixture_t *f = *state;
    sess_t *a = new_session(f, "a", 0), *b = new_session(f, "b", 0);
    assert_int_equal(subscribe(f, a, "dev/x/in"), 1);
    assert_int_equal(subscribe(f, b, "dev/x/in"), 1);
    assert_int_equal(subscribe(f, a, "dev/x/in"), 0); /* again: replaced */
    assert_int_equal(subscribe(f, a, "a/+/c"), 1);
    assert_int_equal(subscribe(f, a, "$share/g/dev/x/in"), 1);
    const sess_sub_t *sa = sub_of(a, "dev/x/in"), *sb = sub_of(b, "dev/x/in");
    assert_non_null(sa);
    assert_non_null(sb);
    assert_true(sa->by_ref && sb->by_ref);
    assert_ptr_equal(sess_sub_filter(sa), sess_sub_filter(sb));
    assert_false(sub_of(a, "a/+/c")->by_ref);
    assert_false(sub_of(a, "$share/g/dev/x/in")->by_ref);
    assert_memory_equal(sess_sub_filter(sub_of(a, "$share/g/dev/x/in")), "$share/g/dev/x/in", 17);
    assert_int_equal(unsubscribe(f, a, "dev/x/in"), 1);
    assert_null(sub_of(a, "dev/x/in"));
    sb = sub_of(b, "dev/x/in"); /* still there, its bytes too */
    assert_non_null(sb);
    assert_int_equal(sb->len, 8);
    assert_memory_equal(sess_sub_filter(sb), "dev/x/in", 8);
    /* many: the session's index (above SUBIDX_MIN) reads each filter
     * before its route goes; the pointer array shrinks back through the
     * slab sizes */
    char fl[32];
    for (int i = 0; i < 40; i++) {
        snprintf(fl, sizeof(fl), "dev/%d/in", i);
        assert_int_equal(subscribe(f, a, fl), 1);
    }
    assert_int_equal(a->nsubs, 42);
    for (int i = 39; i >= 0; i -= 2) { /* odd ones first, then even */
        snprintf(fl, sizeof(fl), "dev/%d/in", i);
        assert_int_equal(unsubscribe(f, a, fl), 1);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(fl, sizeof(fl), "dev/%d/in", i);
        const sess_sub_t *x = sub_of(a, fl);
        if (i % 2) {
            assert_null(x);
        } else {
            assert_non_null(x);
            assert_memory_equal(sess_sub_filter(x), fl, strlen(fl));
            assert_int_equal(unsubscribe(f, a, fl), 1);
        }
    }
    assert_int_equal(a->nsubs, 2);
    /* b's dev/x/in, a's a/+/c, the group's entry for a's shared one */
    assert_int_equal(trie_count(f->srv->trie), 3);
    sess_destroy(f->w, a);
    assert_int_equal(trie_count(f->srv->trie), 1);
}

/* The queue's byte count lives in its ring; the incoming QoS 2 ids in
 * sess_ext_t, given back with the last PUBREL. */
static void queue_bytes_and_qos2_ids_outside_the_session(void **state)
{
    fixture_t *f = *state;
    sess_t *s = new_session(f, "q", 60);
    deliver(f, s, "t/1", 10, 1); /* offline: queued */
    deliver(f, s, "t/2", 20, 1);
    assert_int_equal(sq_len(&s->queue), 2);
    assert_int_equal(sess_queued_bytes(s), 3 + 10 + 3 + 20);
    rec_t r;
    rec_init(&r, 1, 0);
    sess_attach(s, &r.ep); /* one into the window, one left */
    assert_int_equal(sq_len(&s->queue), 1);
    assert_int_equal(sess_queued_bytes(s), 3 + 20);
    assert_int_equal(sess_on_puback(s, r.d[0].pid, 0), 0);
    assert_int_equal(sq_len(&s->queue), 0);
    assert_int_equal(sess_queued_bytes(s), 0);
    assert_int_equal(sess_on_puback(s, r.d[1].pid, 0), 0);

    sess_t *p = new_session(f, "pub", 0);
    assert_null(p->x);
    assert_int_equal(sess_qos2_in_begin(p, 7), 1);
    assert_int_equal(sess_qos2_in_begin(p, 7), 0); /* a resend */
    for (uint16_t id = 100; id < 110; id++)
        assert_int_equal(sess_qos2_in_begin(p, id), 1);
    assert_int_equal(sess_qos2_in_count(p), 11);
    assert_true(sess_qos2_in_known(p, 105));
    assert_int_equal(sess_qos2_in_end(p, 7), 1);
    assert_int_equal(sess_qos2_in_end(p, 7), 0);
    for (uint16_t id = 100; id < 110; id++)
        assert_int_equal(sess_qos2_in_end(p, id), 1);
    assert_int_equal(sess_qos2_in_count(p), 0);
    assert_null(p->x); /* nothing else in it: given back */
    sess_detach(f->w, s);
}

static void on_delivered(struct worker_s *w, event_kind_t kind, const void *data, void *user)
{
    (void)w;
    (void)kind;
    (void)user;
    const event_delivered_t *e = data;
    strncpy(seen_user, e->client.username ? e->client.username : "", sizeof(seen_user) - 1);
    strncpy(seen_peer, e->client.peer ? e->client.peer : "", sizeof(seen_peer) - 1);
    strncpy(seen_id, e->client.client_id ? e->client.client_id : "", sizeof(seen_id) - 1);
}

static void describe_feeds_events(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(event_listen(&f->srv->events, EVENT_MESSAGE_DELIVERED, on_delivered, NULL), 0);
    rec_t r;
    rec_init(&r, 10, 0);
    sess_t *s = new_session(f, "described", 0);
    sess_attach(s, &r.ep);
    deliver(f, s, "e", 1, 1);
    assert_string_equal(seen_user, "alice");
    assert_string_equal(seen_peer, "recorder:1");
    assert_string_equal(seen_id, "described");
    sess_detach(f->w, s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(window_is_receive_max, setup, teardown),
        cmocka_unit_test_setup_teardown(qos2_release_through_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(max_packet_and_refused_qos0, setup, teardown),
        cmocka_unit_test_setup_teardown(retry_only_with_the_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(subids_only_with_the_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(offline_then_resent_with_dup, setup, teardown),
        cmocka_unit_test_setup_teardown(takeover_closes_the_old_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(session_ended_under_its_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(describe_feeds_events, setup, teardown),
        cmocka_unit_test_setup_teardown(exact_filters_kept_once, setup, teardown),
        cmocka_unit_test_setup_teardown(queue_bytes_and_qos2_ids_outside_the_session, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
