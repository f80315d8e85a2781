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
 *
 * The presence names this node (server_t.node_name: cluster.node when
 * the cluster is on, else "antenna@" the host name, as GET /api/v1/info).  A change
 * of a device between connected and disconnected (its first connection,
 * its last one's end; not a takeover) is emitted as device_presence
 * (event.h) on the same worker, after the table's lock is released; its
 * JSON is built only when somebody listens (event_wanted).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
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

static const char *proto_name(uint8_t proto)
{
    return proto == 5               ? "5.0"
           : proto == 4             ? "3.1.1"
           : proto == 3             ? "3.1"
           : proto == EP_PROTO_HTTP ? "http"
           : proto == EP_PROTO_COAP ? "coap"
                                    : "";
}

/* device_presence for the device `id` (the event's client id or user
 * name), on worker w; p: a copy of the presence after the change. */
static void emit(struct worker_s *w, devices_state_t *st, const event_client_t *c, const char *id,
                 const dev_presence_t *p, int connected, uint64_t now)
{
    json_t *o = json_pack("{s:s,s:b,s:s,s:s,s:s,s:s,s:I}", "device", id, "connected", connected,
                          "peer", p->peer, "protocol", proto_name(p->proto), "listener",
                          p->listener, "node", st->srv->node_name, "at_ms", (json_int_t)now);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    event_device_presence_t ev = {.client = *c,
                                  .device = id,
                                  .node = st->srv->node_name,
                                  .json = text ? text : "{}",
                                  .at_ms = now,
                                  .connected = (uint8_t)connected};
    event_emit(w, &st->srv->events, EVENT_DEVICE_PRESENCE, &ev);
    free(text);
}

static void on_event(struct worker_s *w, event_kind_t kind, const void *data, void *user)
{
    devices_state_t *st = user;
    const event_client_t *c = data; /* first member of both structs */
    uint64_t now = an_wall_ms();
    int changed = 0; /* 1: became connected, 2: disconnected */
    const char *id = NULL;
    dev_presence_t copy;
    pthread_rwlock_rdlock(&st->lock);
    dev_ent_t *e = find(st, c);
    if (e) {
        dev_presence_t *p = &e->pres;
        lock(p);
        if (kind == EVENT_CLIENT_CONNECTED) {
            if (p->conns++ == 0) {
                p->since_ms = now;
                changed = 1;
            }
            p->connects++;
            p->proto = c->proto;
            snprintf(p->peer, sizeof(p->peer), "%s", c->peer ? c->peer : "");
            snprintf(p->listener, sizeof(p->listener), "%s", c->listener ? c->listener : "");
        } else if (p->conns > 0 && --p->conns == 0) {
            p->since_ms = now;
            changed = 2;
        }
        if (changed)
            memcpy(&copy, p, sizeof(copy));
        unlock(p);
        /* the event's own strings, valid during the call (not the record's) */
        id = c->client_id && devices_find(st, c->client_id, NULL) == e ? c->client_id : c->username;
    }
    pthread_rwlock_unlock(&st->lock);
    if (changed && id && event_wanted(st->srv, EVENT_DEVICE_PRESENCE))
        emit(w, st, c, id, &copy, changed == 1, now);
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

json_t *devices_presence_json(devices_state_t *st, dev_ent_t *e)
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
        json_object_set_new(o, "peer", json_string(v.peer));
        json_object_set_new(o, "listener", json_string(v.listener));
        json_object_set_new(o, "protocol", json_string(proto_name(v.proto)));
    }
    json_object_set_new(o, "node", json_string(st->srv->node_name));
    return o;
}
