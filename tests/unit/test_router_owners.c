/* test_router_owners.c -- the router's dispatch through tagged route owners
 * (router.h, trie.h) and internal consumers, on a server with one worker
 * that is never started: router_publish() is called by hand, the LOCAL and
 * NODE rows are replaced by recorders, so every hand-off is seen.
 *
 * Checked: each kind reaches its own row with its owner index; a consumer
 * receives exactly the matching messages, once each however many of its
 * filters overlap, at min(published, granted) QoS, with the retain flag as
 * published; No Local and shared groups still hold for sessions; a kind
 * with no row is dropped; counts; unsubscribe; bad filters; and the
 * provenance of a message (msg_origin_t references).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "mqtt_codec.h"
#include "persist.h"
#include "retain.h"
#include "router.h"
#include "sess.h"
#include "shared.h"

#define MAXREC 64

typedef struct {
    uint8_t kind;
    uint64_t sid;
    uint16_t owner;
    uint8_t qos, flags;
    char topic[64];
} rec_t;

typedef struct {
    server_t srv;
    rec_t rec[MAXREC];
    int n;
    int freed;
} fixture_t;

static fixture_t *fx; /* the recorders' view of the running test */

static void record(uint8_t kind, uint64_t sid, uint16_t owner, const msg_t *m, uint8_t qos,
                   uint8_t flags)
{
    assert_true(fx->n < MAXREC);
    rec_t *r = &fx->rec[fx->n++];
    r->kind = kind;
    r->sid = sid;
    r->owner = owner;
    r->qos = qos;
    r->flags = flags;
    size_t l = m->topic_len < sizeof(r->topic) - 1 ? m->topic_len : sizeof(r->topic) - 1;
    memcpy(r->topic, msg_topic(m), l);
    r->topic[l] = '\0';
}

static void rec_local(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos,
                      uint8_t flags, void *user)
{
    (void)w;
    assert_ptr_equal(user, fx);
    record(ROUTE_OWNER_LOCAL, sid, owner, m, qos, flags);
}

static void rec_node(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos,
                     uint8_t flags, void *user)
{
    (void)w;
    (void)user;
    record(ROUTE_OWNER_NODE, sid, owner, m, qos, flags);
}

static void on_consumed(worker_t *w, router_consumer_t *c, msg_t *m, uint8_t qos, uint8_t flags,
                        void *user)
{
    assert_int_equal(w->id, 0);
    assert_ptr_equal(user, fx);
    assert_string_equal(router_consumer_name(c), "test");
    record(ROUTE_OWNER_CONSUMER, 0, 0, m, qos, flags);
}

static void on_consumer_free(router_consumer_t *c, void *user)
{
    (void)c;
    ((fixture_t *)user)->freed++;
}

static const consumer_ops_t ops = {.on_message = on_consumed, .free = on_consumer_free};

static int setup(void **state)
{
    fx = calloc(1, sizeof(*fx));
    server_t *srv = &fx->srv;
    conf_defaults(&srv->conf);
    srv->nworkers = 1;
    pthread_rwlock_init(&srv->trie_lock, NULL);
    srv->trie = trie_new();
    srv->retain = retain_new();
    srv->workers = calloc(1, sizeof(worker_t));
    srv->workers[0].srv = srv;
    srv->workers[0].rng = 88172645463325252ull;
    router_register_inbox(srv);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    server_t *srv = &f->srv;
    router_consumers_free(srv);
    shared_free_all(&srv->groups);
    trie_free(srv->trie);
    retain_free(srv->retain);
    free(srv->workers[0].matches);
    free(srv->workers);
    pthread_rwlock_destroy(&srv->trie_lock);
    free(f);
    fx = NULL;
    return 0;
}

static size_t publish(const char *topic, uint8_t qos, uint8_t retain, const sess_t *from)
{
    msg_t *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic), (const uint8_t *)"p", 1,
                       qos, retain);
    size_t n = router_publish(&fx->srv.workers[0], m, from);
    assert_int_equal(m->refs, 1u + retain); /* the recorders took none (the retained tree one) */
    msg_unref(&m);
    return n;
}

static void insert(const char *filter, sub_ref_t ref)
{
    assert_true(trie_insert(fx->srv.trie, (const uint8_t *)filter, strlen(filter), &ref) >= 0);
}

static int count_kind(uint8_t kind, const char *topic)
{
    int n = 0;
    for (int i = 0; i < fx->n; i++)
        n += fx->rec[i].kind == kind && strcmp(fx->rec[i].topic, topic) == 0;
    return n;
}

static void test_consumer_once_per_matching_message(void **state)
{
    fixture_t *f = *state;
    router_consumer_t *c = router_consumer_new(&f->srv, "test", &ops, f);
    assert_int_equal(router_consumer_subscribe(c, "a/#", 1), 0);
    assert_int_equal(router_consumer_subscribe(c, "a/+/c", 2), 0);
    assert_int_equal(router_consumer_subscribe(c, "a/b/c", 0), 0);
    assert_int_equal(router_consumer_subscribe(c, "+/b/#", 1), 0);
    assert_int_equal(router_consumer_subscribe(c, "a/b/c", 0), 0); /* again: replaced */

    const char *hit[] = {"a/b/c", "a", "a/x", "z/b", "a/b/c/d"};
    const char *miss[] = {"b/a", "$SYS/a", "ab/c/b", "z/c/b"};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(hit) / sizeof(hit[0]); i++)
            assert_int_equal(publish(hit[i], 2, 0, NULL), 1);
        for (size_t i = 0; i < sizeof(miss) / sizeof(miss[0]); i++)
            assert_int_equal(publish(miss[i], 2, 0, NULL), 0);
    }
    assert_int_equal(f->n, 3 * 5);
    for (size_t i = 0; i < sizeof(hit) / sizeof(hit[0]); i++)
        assert_int_equal(count_kind(ROUTE_OWNER_CONSUMER, hit[i]), 3);
    assert_int_equal(router_consumer_delivered(c), 15);

    /* QoS: the highest granted among the matching filters, capped by the
     * message's; retain as published */
    f->n = 0;
    publish("a/b/c", 2, 0, NULL); /* a/+/c grants 2 */
    publish("a/x", 2, 0, NULL);   /* a/# grants 1 */
    publish("a/b/c", 0, 1, NULL);
    assert_int_equal(f->rec[0].qos, 2);
    assert_int_equal(f->rec[1].qos, 1);
    assert_int_equal(f->rec[2].qos, 0);
    assert_int_equal(f->rec[0].flags & DLV_RETAIN, 0);
    assert_int_equal(f->rec[2].flags & DLV_RETAIN, DLV_RETAIN);

    /* unsubscribe: a/x only matched a/# */
    assert_int_equal(router_consumer_unsubscribe(c, "a/#"), 1);
    assert_int_equal(router_consumer_unsubscribe(c, "a/#"), 0);
    f->n = 0;
    assert_int_equal(publish("a/x", 1, 0, NULL), 0);
    assert_int_equal(publish("a/b/c", 1, 0, NULL), 1);
    assert_int_equal(f->n, 1);
}

static void test_consumer_refuses_bad_filters(void **state)
{
    fixture_t *f = *state;
    router_consumer_t *c = router_consumer_new(&f->srv, "test", &ops, f);
    assert_int_equal(router_consumer_subscribe(c, "", 0), -1);
    assert_int_equal(router_consumer_subscribe(c, "a/#/b", 0), -1);
    assert_int_equal(router_consumer_subscribe(c, "a+", 0), -1);
    assert_int_equal(router_consumer_subscribe(c, "$share/g/a", 0), -1);
    assert_int_equal(router_consumer_subscribe(c, "a", 3), -1);
    assert_int_equal(trie_count(f->srv.trie), 0);
    router_consumers_free(&f->srv);
    assert_int_equal(f->freed, 1);
}

static void test_tagged_owners_dispatch(void **state)
{
    fixture_t *f = *state;
    server_t *srv = &f->srv;
    router_owner_register(srv, ROUTE_OWNER_LOCAL,
                          &(route_owner_kind_t){.deliver = rec_local, .user = f});
    router_owner_register(srv, ROUTE_OWNER_NODE, &(route_owner_kind_t){.deliver = rec_node});

    /* sessions 5 (worker 1) and 6 (worker 0); node 3 with overlapping
     * filters; a consumer */
    insert("t/#", (sub_ref_t){.sid = 5, .owner = 1, .opts = 1});
    insert("t/x", (sub_ref_t){.sid = 5, .owner = 1, .opts = 2});
    insert("t/+", (sub_ref_t){.sid = 6, .owner = 0, .opts = 1 | MQTT_SUBOPT_NO_LOCAL});
    insert("t/#",
           (sub_ref_t){.sid = ROUTE_SID_NODE | 3, .owner = 3, .opts = 0, .kind = ROUTE_OWNER_NODE});
    insert("t/x",
           (sub_ref_t){.sid = ROUTE_SID_NODE | 3, .owner = 3, .opts = 1, .kind = ROUTE_OWNER_NODE});
    router_consumer_t *c = router_consumer_new(srv, "test", &ops, f);
    assert_int_equal(router_consumer_subscribe(c, "t/x", 2), 0);

    assert_int_equal(publish("t/x", 2, 0, NULL), 4);
    assert_int_equal(f->n, 4);
    int seen = 0;
    for (int i = 0; i < f->n; i++) {
        const rec_t *r = &f->rec[i];
        if (r->kind == ROUTE_OWNER_LOCAL && r->sid == 5) {
            assert_int_equal(r->owner, 1);
            assert_int_equal(r->qos, 2); /* merged: t/x grants 2 */
            seen |= 1;
        } else if (r->kind == ROUTE_OWNER_LOCAL && r->sid == 6) {
            assert_int_equal(r->owner, 0);
            assert_int_equal(r->qos, 1);
            seen |= 2;
        } else if (r->kind == ROUTE_OWNER_NODE) {
            assert_int_equal(r->sid, ROUTE_SID_NODE | 3);
            assert_int_equal(r->owner, 3);
            assert_int_equal(r->qos, 1); /* once, at the highest grant */
            seen |= 4;
        } else {
            assert_int_equal(r->kind, ROUTE_OWNER_CONSUMER);
            seen |= 8;
        }
    }
    assert_int_equal(seen, 15);

    /* No Local: session 6 publishing does not get its own message */
    sess_t *from = calloc(1, sizeof(sess_t) + 8);
    from->sid = 6;
    memcpy(from->client_id, "pub", 4);
    from->client_id_len = 3;
    f->n = 0;
    assert_int_equal(publish("t/y", 1, 0, from), 2); /* session 5, node 3 */
    for (int i = 0; i < f->n; i++)
        assert_true(f->rec[i].sid != 6);

    /* a shared group: one member per message, flagged DLV_SHARED, and a
     * copy of its own beside an ordinary subscription of the same session */
    pthread_rwlock_wrlock(&srv->trie_lock);
    shared_join(srv->trie, &srv->groups, (const uint8_t *)"g", 1, (const uint8_t *)"s/#", 3,
                &(sub_ref_t){.sid = 7, .owner = 0, .opts = 1});
    shared_join(srv->trie, &srv->groups, (const uint8_t *)"g", 1, (const uint8_t *)"s/#", 3,
                &(sub_ref_t){.sid = 8, .owner = 1, .opts = 1});
    pthread_rwlock_unlock(&srv->trie_lock);
    insert("s/#", (sub_ref_t){.sid = 7, .owner = 0, .opts = 0});
    f->n = 0;
    for (int i = 0; i < 10; i++)
        publish("s/a", 1, 0, NULL);
    int shared = 0, plain = 0;
    for (int i = 0; i < f->n; i++) {
        if (f->rec[i].flags & DLV_SHARED) {
            shared++;
            assert_true(f->rec[i].sid == 7 || f->rec[i].sid == 8);
            assert_int_equal(f->rec[i].owner, f->rec[i].sid == 7 ? 0 : 1);
        } else {
            plain++;
            assert_int_equal(f->rec[i].sid, 7);
            assert_int_equal(f->rec[i].qos, 0);
        }
    }
    assert_int_equal(shared, 10);
    assert_int_equal(plain, 10);

    /* a kind without a row: dropped, nothing else disturbed */
    router_owner_register(srv, ROUTE_OWNER_NODE, &(route_owner_kind_t){.deliver = NULL});
    f->n = 0;
    assert_int_equal(publish("t/x", 1, 0, NULL), 4); /* matched, node dropped */
    assert_int_equal(f->n, 3);
    free(from);
}

static void test_held_targets_keep_their_kind(void **state)
{
    /* the second half of a publish that waited for a commit */
    fixture_t *f = *state;
    server_t *srv = &f->srv;
    router_owner_register(srv, ROUTE_OWNER_LOCAL,
                          &(route_owner_kind_t){.deliver = rec_local, .user = f});
    router_consumer_t *c = router_consumer_new(srv, "test", &ops, f);
    route_target_t t[2] = {
        {.sid = 9, .owner = 0, .qos = 1, .flags = DLV_DURABLE, .kind = ROUTE_OWNER_LOCAL},
        {.sid = ROUTE_SID_CONSUMER | (uint64_t)(uintptr_t)c,
         .qos = 1,
         .kind = ROUTE_OWNER_CONSUMER}};
    msg_t *m = msg_new((const uint8_t *)"h", 1, NULL, 0, 1, 0);
    router_hand_targets(&srv->workers[0], m, t, 2);
    msg_unref(&m);
    assert_int_equal(f->n, 2);
    assert_int_equal(f->rec[0].kind, ROUTE_OWNER_LOCAL);
    assert_int_equal(f->rec[0].flags, DLV_DURABLE);
    assert_int_equal(f->rec[1].kind, ROUTE_OWNER_CONSUMER);
    assert_int_equal(router_consumer_delivered(c), 1);
}

static void test_publish_time_and_origins_wanted(void **state)
{
    /* router_publish stamps the publish time from the worker's turn clock
     * (a message that has one keeps it); a consumer turns origins on */
    fixture_t *f = *state;
    server_t *srv = &f->srv;
    assert_int_equal(atomic_load(&srv->origins_wanted), 0);
    srv->workers[0].wall_ms = 1700000000123ull;
    msg_t *m = msg_new((const uint8_t *)"p/t", 3, NULL, 0, 0, 0);
    router_publish(&srv->workers[0], m, NULL);
    assert_int_equal(m->published_at, 1700000000123ull);
    srv->workers[0].wall_ms = 1700000009999ull;
    router_publish(&srv->workers[0], m, NULL); /* published again: time kept */
    assert_int_equal(m->published_at, 1700000000123ull);
    msg_unref(&m);
    router_consumer_new(srv, "wants", &ops, f);
    assert_int_equal(atomic_load(&srv->origins_wanted), 1);
}

static void test_provenance(void **state)
{
    (void)state;
    msg_origin_t *o = msg_origin_new(MSG_PROTO_MQTT5, "cid-xyz", 3, "alice", "mqtt");
    assert_string_equal(o->client_id, "cid");
    assert_string_equal(o->username, "alice");
    assert_string_equal(o->listener, "mqtt");
    assert_string_equal(msg_proto_name(o->proto), "mqtt5");
    const msg_origin_t *mine = o;

    msg_t *a = msg_new((const uint8_t *)"t", 1, NULL, 0, 0, 0);
    msg_t *b = msg_new((const uint8_t *)"t", 1, NULL, 0, 0, 0);
    assert_null(a->origin);
    assert_int_equal(a->published_at, 0); /* stamped by router_publish */
    assert_int_equal(a->origin_node, 0);
    assert_int_equal(a->hops, 0);
    msg_set_origin(a, mine);
    msg_set_origin(b, mine);
    assert_int_equal(o->refs, 3);
    msg_origin_unref(&mine); /* the connection closes: its messages keep it */
    assert_null(mine);
    assert_string_equal(b->origin->client_id, "cid");
    msg_unref(&a);
    assert_int_equal(o->refs, 1);
    msg_unref(&b); /* the last reference: freed (ASan) */

    msg_t *s = msg_new((const uint8_t *)"$SYS/x", 6, NULL, 0, 0, 0);
    msg_set_origin(s, &msg_origin_sys);
    assert_int_equal(msg_origin_sys.refs, 0); /* static: never counted */
    assert_string_equal(msg_proto_name(s->origin->proto), "sys");
    assert_null(s->origin->client_id);
    msg_unref(&s);
    assert_string_equal(msg_proto_name(msg_origin_api.proto), "api");
    assert_string_equal(msg_proto_name(200), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_consumer_once_per_matching_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_refuses_bad_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tagged_owners_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_targets_keep_their_kind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_time_and_origins_wanted, setup, teardown),
        cmocka_unit_test(test_provenance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
