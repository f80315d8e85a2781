/* devices_int.h -- what devices.c and devices_auth.c share: the
 * configuration, the table and its locks.
 *
 * Locks: `lock` (a rwlock) guards the table: the API's readers and the
 * workers (the auth backend, on CONNECT) share it; a writer takes it
 * exclusively only to change the table, never across a store write.
 * `wmu` serialises the writers (the API's changes): a writer holds it
 * from reading the old record to the table's change, the store's write
 * in between, so the store and the table see the changes in one order.
 */
#ifndef ANTENNA_DEVICES_INT_H
#define ANTENNA_DEVICES_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "server.h"

enum { DEVICES_UNKNOWN_PASS = 0, DEVICES_UNKNOWN_DENY = 1 };

typedef struct {
    uint8_t enabled;
    uint8_t auth_unknown;      /* DEVICES_UNKNOWN_*: an id not in the registry */
    uint32_t import_plain_max; /* plain passwords an import may hash */
    uint8_t shadow_enabled;    /* devices.shadow.enabled */
    uint32_t shadow_max_bytes; /* each of desired and reported, as compact JSON */
    char shadow_prefix[64];    /* topics: PREFIX/{id}/delta, ... */
} devices_conf_t;

/* A device's presence (devices_presence.c): in memory only (after a
 * restart every device is offline).  Written by the workers on the
 * client_connected/client_disconnected events, read by the API: under the
 * entry's spin flag (a few stores; the table's read lock held too). */
typedef struct {
    atomic_flag busy;
    uint32_t conns; /* connections of this device now (a takeover: 2 for a moment) */
    uint8_t proto;  /* of the last CONNECT: MQTT_PROTO_* */
    uint64_t since_ms;
    uint64_t connects;
    char peer[56];
    char listener[40];
} dev_presence_t;

typedef struct dev_ent {
    struct dev_ent *next;
    uint64_t hash;
    json_t *rec; /* the record (never changed in place: replaced); "id" is its key */
    dev_presence_t pres;
} dev_ent_t;

typedef struct devices_state {
    pthread_rwlock_t lock;
    pthread_mutex_t wmu;
    dev_ent_t **b;
    size_t nb, n;
    uint64_t key[2];
    server_t *srv;
    const devices_conf_t *conf;
    struct dev_shadow_s *shadow; /* devices_shadow.c's, NULL when the shadow is off */
} devices_state_t;

/* The device `id`, or NULL; under st->lock (or wmu).  *hash_out (may be
 * NULL) gets the id's hash. */
dev_ent_t *devices_find(devices_state_t *st, const char *id, uint64_t *hash_out);

/* devices_presence.c: listen to the connection events (init, main
 * thread); the presence of an entry as JSON (st->lock held). */
int devices_presence_init(devices_state_t *st);
json_t *devices_presence_json(devices_state_t *st, dev_ent_t *e);
int devices_presence_connected(dev_ent_t *e);

/* devices_shadow.c (docs/devices.md "Shadow"): init and free (main
 * thread; nothing with devices.shadow.enabled false); the routes
 * devices/{id}/shadow[/desired] (API threads, verb "shadow" or
 * "shadow/desired"); forget a deleted device's shadow. */
struct module_api_req_s;
int devices_shadow_init(devices_state_t *st);
void devices_shadow_free(devices_state_t *st);
int devices_shadow_api(devices_state_t *st, const char *id, const char *verb,
                       const struct module_api_req_s *req, json_t **out);
void devices_shadow_forget(devices_state_t *st, const char *id);

/* devices_auth.c: the `devices` backend of auth.chain.  Made by the chain
 * (auth_chain.c's table of constructors) before the modules' init; the
 * module binds it to the registry (devices_auth_bind, main thread, before
 * the workers run).  Unbound it passes. */
struct auth_backend;
struct auth_backend *devices_auth_new(const conf_t *conf, char *err, size_t errlen);
void devices_auth_bind(struct auth_backend *b, devices_state_t *st);

#endif
