/* reload.h -- live reload of the YAML configuration, and drain mode.
 *
 * Reload (SIGHUP on the main thread, POST /api/v1/reload on an API
 * thread; one at a time under the module's lock) does what SIGHUP always
 * did (reopen the log, reload TLS certificates, the auth files and the
 * API's credentials) and re-reads the YAML file the broker was started
 * with into a fresh conf_t, with start-up's validation: a bad file changes
 * nothing and the error names file:line:key.  The new file is compared
 * key by key (conf_walk) with what runs, and applied where it can be:
 *
 *   live: log.level; mqtt.max_packet_size, max_client_id_length,
 *         connect_timeout, max_keepalive, max_inflight, max_queued,
 *         retry_interval; every limits.* key except memory_high_water;
 *         auth.* (the chain is rebuilt and swapped; ACL, password and JWT
 *         files re-read); listeners added and removed (by name); a
 *         listener's TLS keys (cert_file, key_file, ca_file,
 *         require_client_cert, tls_min_version, ciphers); the keys a
 *         module names in module_t.live_keys (rules.rules), applied by its
 *         reload hook before the core's keys (a module that refuses stops
 *         the reload there).
 *   not live (named in restart_required): everything else: workers,
 *         log.file/format/target, the rest of mqtt.*, memory_high_water,
 *         persistence, api, events, modules' other keys, a listener's
 *         other keys (address, port, transport...).
 *
 * Limits are read by the workers through server_live(): an immutable
 * conf_t snapshot whose pointer the reloading thread publishes (release)
 * and the workers load (acquire) where they use it; an old snapshot is
 * kept until server exit (a reload that changes nothing live publishes
 * none).  An old auth chain is also kept until exit: a CONNECT waiting for
 * it, a SCRAM exchange or a worker that read the pointer may still use
 * it; the new chain's ACL generation follows the old one's, so cached
 * decisions are taken again.  Listener sockets are opened and closed by
 * the reloading thread; each worker starts or stops its watcher on its own
 * thread (a WM_CONTROL inbox item), and a removed socket is closed only
 * once every worker stopped watching it.  Its connections stay.
 *
 * Drain (POST /api/v1/drain): every listener is closed, /health/ready
 * answers 503 "draining", then each worker closes its clients at its
 * share of `rate` per second: MQTT 5 with DISCONNECT 0x9C (Use another
 * server) and the Server Reference when one is given, else 0x8B (Server
 * shutting down); MQTT 3.1.1 by closing the socket.  Sessions are kept as
 * at shutdown.  When no connection is left the broker stops (SIGTERM to
 * itself: the normal shutdown, exit 0) unless `stay` was asked.  A cluster
 * hooks in with reload_drain_hook_set(): its handover() is asked first for
 * each connected client (on the client's worker).
 */
#ifndef ANTENNA_RELOAD_H
#define ANTENNA_RELOAD_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

typedef struct reload_s reload_t;

#define RELOAD_MAX_NAMES 64
#define RELOAD_NAME_LEN 96

/* What a reload did: key paths ("limits.max_inflight", "listeners[ws]"). */
typedef struct {
    char applied[RELOAD_MAX_NAMES][RELOAD_NAME_LEN];
    uint32_t napplied;
    char restart_required[RELOAD_MAX_NAMES][RELOAD_NAME_LEN];
    uint32_t nrestart;
    char errors[4][512];
    uint32_t nerrors;
} reload_result_t;

/* Main thread, after server_init, before server_start: `path` is the YAML
 * file (NULL: none, only files are reloaded), `loaded` what it gave at
 * start (before command-line overrides). */
int reload_init(server_t *srv, const char *path, const conf_t *loaded);
/* After server_free's workers stopped (called by main after server_stop). */
void reload_free(server_t *srv);
/* Reload everything (see above); each result line logged.  Returns the
 * number of errors.  Main thread or an API thread. */
int reload_run(server_t *srv, reload_result_t *res);
/* Readers of srv->conf's listener entries outside the workers (the API's
 * display) hold this while reading. */
void reload_lock(server_t *srv);
void reload_unlock(server_t *srv);
/* 1 when listener slot i was removed by a reload (or a drain). */
int reload_listener_removed(server_t *srv, uint32_t i);

/* ---- drain ---- */
typedef struct {
    int draining;        /* 0/1 */
    uint64_t started_ms; /* wall clock */
    uint32_t rate;       /* clients per second */
    uint32_t stay;       /* the broker keeps running when empty */
    char server_reference[256];
    uint64_t disconnected;          /* clients closed by the drain */
    uint64_t clients_left;          /* connections still open */
    uint64_t sessions_to_hand_over; /* the cluster's pending(), 0 without one */
} reload_drain_status_t;

/* Start draining (any thread but a worker's).  0, or -1 with err set
 * (already draining). */
int reload_drain_start(server_t *srv, uint32_t rate, const char *server_reference, int stay,
                       char *err, size_t errlen);
void reload_drain_status(server_t *srv, reload_drain_status_t *st);
int reload_draining(const server_t *srv);

/* The cluster's hook: handover() runs on the client's worker for each
 * connected client before the drain closes it; return 1 when it took the
 * connection over (closed it itself), 0 to let the drain close it.
 * pending(): sessions still to be handed over (their clients reconnect on
 * other nodes, which take them): once no client is left, the broker waits
 * for it to be 0, or wait_ms, before it stops.  Set before
 * reload_drain_start; any member may be NULL. */
typedef struct {
    int (*handover)(worker_t *w, conn_t *c, void *user);
    void (*started)(server_t *srv, void *user);     /* on the thread that started it */
    uint64_t (*pending)(server_t *srv, void *user); /* any worker */
    uint32_t wait_ms;
    void *user;
} reload_drain_hook_t;
void reload_drain_hook_set(server_t *srv, const reload_drain_hook_t *h);

#endif
