/* devices_presence.c -- presence of the registry's devices: connected or
 * not, since when, from which address, protocol and listener.
 *
 * The client_connected and client_disconnected events (event.h), on the
 * worker of the session, find the device (the client id, else the user
 * name: the auth backend's user is the device id) under the table's read
 * lock and update its dev_presence_t under the entry's spin flag.  A
 * connection count (not a flag) so that a takeover, whose new connection
 * may be announced before the old one's end, leaves the device connected.
 * Clients that are not devices cost one hash lookup per CONNECT and
 * disconnect, and only with the registry on.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "devices_int.h"
#include "endpoint.h"
#include "event.h"
#include "util.h"

static void lock(dev_presence_t *p)
{
    while (atomic_flag_test_and_set_explicit(&p->busy, memory_order_acquire))
        ;
}

static void unlock(dev_presence_t *p)
{
    atomic_flag_clear_explicit(&p->busy, memory_order_release);
}

static dev_ent_t *find(devices_state_t *st, const event_client_t *c)
{
    dev_ent_t *e = c->client_id ? devices_find(st, c->client_id, NULL) : NULL;
    if (e == NULL && c->username)
        e = devices_find(st, c->username, NULL);
    return e;
}

static void on_event(struct worker_s *w, event_kind_t kind, const void *data, void *user)
{
    AN_UNUSED(w);
    devices_state_t *st = user;
    const event_client_t *c = data; /* first member of both structs */
    uint64_t now = an_wall_ms();
    pthread_rwlock_rdlock(&st->lock);
    dev_ent_t *e = find(st, c);
    if (e) {
        dev_presence_t *p = &e->pres;
        lock(p);
        if (kind == EVENT_CLIENT_CONNECTED) {
            if (p->conns++ == 0)
                p->since_ms = now;
            p->connects++;
            p->proto = c->proto;
            snprintf(p->peer, sizeof(p->peer), "%s", c->peer ? c->peer : "");
            snprintf(p->listener, sizeof(p->listener), "%s", c->listener ? c->listener : "");
        } else if (p->conns > 0 && --p->conns == 0) {
            p->since_ms = now;
        }
        unlock(p);
    }
    pthread_rwlock_unlock(&st->lock);
}

int devices_presence_init(devices_state_t *st)
{
    if (event_listen(&st->srv->events, EVENT_CLIENT_CONNECTED, on_event, st) < 0 ||
        event_listen(&st->srv->events, EVENT_CLIENT_DISCONNECTED, on_event, st) < 0)
        return -1;
    return 0;
}

int devices_presence_connected(dev_ent_t *e)
{
    lock(&e->pres);
    int c = e->pres.conns > 0;
    unlock(&e->pres);
    return c;
}

json_t *devices_presence_json(dev_ent_t *e)
{
    dev_presence_t *p = &e->pres, v;
    lock(p);
    memcpy(&v, p, sizeof(v));
    unlock(p);
    json_t *o =
        json_pack("{s:b,s:I}", "connected", v.conns > 0, "connects", (json_int_t)v.connects);
    if (v.since_ms)
        json_object_set_new(o, "since_ms", json_integer((json_int_t)v.since_ms));
    if (v.connects) {
        const char *proto = v.proto == 5               ? "5.0"
                            : v.proto == 4             ? "3.1.1"
                            : v.proto == 3             ? "3.1"
                            : v.proto == EP_PROTO_HTTP ? "http"
                                                       : "";
        json_object_set_new(o, "peer", json_string(v.peer));
        json_object_set_new(o, "listener", json_string(v.listener));
        json_object_set_new(o, "protocol", json_string(proto));
    }
    return o;
}
