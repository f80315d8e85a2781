/* cl_member.c -- membership through etcd (cl_int.h; docs/cluster.md,
 * "Membership").
 *
 * Everything here runs on the etcd thread (cl_etcd.h): the client's tick
 * (every CL_MEMBER_TICK_MS) drives the timers, the answers drive the rest.
 * Other threads touch only the atomics (lease id, last keep-alive, counters,
 * stopping) and, at start and stop, the little handshake under mu.
 *
 * The life of a lease:
 *   NEED_LEASE  grant a lease of cluster.lease_ttl (retried every
 *               CL_MEMBER_RETRY_MS while etcd does not answer);
 *   REGISTER    put /antenna/<name>/members/<node> = {"node","link","mqtt",
 *               "api","version","started"} under it, if absent (one txn).
 *               Present under a lease this process held before (etcd kept
 *               it through an outage): put again with a compare on that
 *               lease.  Present under any other lease: another live member
 *               has this name; at start the broker refuses to start, later
 *               it is logged and retried after lease_ttl;
 *   UP          keep the lease alive every lease_ttl / 3.  An answer without
 *               a TTL means etcd no longer knows the lease: NEED_LEASE.
 *               A keep-alive that fails is tried again after
 *               CL_MEMBER_RETRY_MS and holds the registry's batches until
 *               one is answered (cl_etcd_hold, CL_MEMBER_KA_HOLD_MS at
 *               most each time): under a storm of claims etcd answers
 *               keep-alives 503 once its applies lag a second, and the
 *               claims must not cost the lease they are made under.
 * Whatever the phase, once lease_ttl has passed since the last successful
 * keep-alive (or grant) the lease is lost as far as the others know:
 * lease_ok = 0, the door closes (SRV_DOOR_CLUSTER: new connections
 * refused, existing ones stay), one log line, and NEED_LEASE.  Back in UP:
 * lease_ok = 1, the door opens, one log line.
 *
 * The member list: a full read of the prefix, then a watch from the
 * revision after it.  The watch ending for any reason, or a message
 * saying it was cancelled or compacted, means a gap: a full read again
 * (every CL_MEMBER_RETRY_MS while etcd does not answer), then a new watch.
 * A full read every CL_MEMBER_RESYNC_MS is the safety net.  Each read is
 * compared with the members known (known[]), and only the differences go
 * to cl_member_seen / cl_member_gone.
 *
 * cl_member_fresh (the registry's, for a resuming CONNECT whose claim found
 * no owner): one more full read, sent after the call, applied like any
 * read, then the callers that waited for it are called; callers that come
 * while it is in flight wait for the next one.
 *
 * A clean stop revokes the lease (on the etcd thread, at its next tick):
 * the key goes at once and the others see this node leave without waiting
 * for lease_ttl.
 *
 * A dead member's lease (cl_member_dead, from the link thread: the member's
 * link went down and its link address refuses connections: no process
 * listens there) is revoked the same way, at the next tick, if it is still
 * the lease etcd last showed for that member (known[].lease): the key goes,
 * every node sees the member out at once, not lease_ttl later, and its
 * sessions are adopted (docs/cluster.md "A dead node's process").  A
 * member that registered again meanwhile has another lease: not touched.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"
#include "cl_etcd.h"
#include "cl_int.h"
#include "log.h"
#include "util.h"

#define CL_MEMBER_TICK_MS 100
#define CL_MEMBER_RETRY_MS 500
#define CL_MEMBER_KA_HOLD_MS 2000 /* a failed keep-alive holds the claims this long at most */
#define CL_MEMBER_RESYNC_MS 30000
#define CL_MEMBER_START_WAIT_MS 5000 /* at most: how long start waits for the first answer */
#define CL_MEMBER_LEAVE_WAIT_MS 2000 /* at most: how long stop waits for the revoke */

enum { PH_NEED_LEASE, PH_GRANTING, PH_REGISTER, PH_REGISTERING, PH_UP };

typedef struct {
    char name[CL_NAME_MAX];
    char link[CL_ADDR_MAX];
    int64_t lease; /* the lease its key is under (0: not said) */
} cl_known_t;

#define CL_MEMBER_DEAD_MAX 16 /* members reported dead between two ticks */

/* A caller of cl_member_fresh waiting for its read. */
typedef struct cl_fresh_s {
    void (*fn)(void *arg, int ok);
    void *arg;
    struct cl_fresh_s *next;
} cl_fresh_t;

struct cl_member_s {
    cl_t *cl;
    cl_etcd_t *client;             /* set at start, freed at free (main thread); read by all */
    cl_etcd_t *etcd;               /* the same, for the etcd thread (set by its first tick) */
    char prefix[CL_NAME_MAX + 32]; /* /antenna/<name>/members/ */
    char prefix_end[CL_NAME_MAX + 32];
    char key[2 * CL_NAME_MAX + 32];
    char value[1024];
    uint32_t ttl_ms;

    /* etcd thread */
    int phase;
    int64_t old_lease; /* a lease of this process that may still hold the key */
    uint64_t retry_at;
    int ka_inflight;
    uint64_t next_ka;
    int read_inflight, need_read;
    uint64_t read_at;       /* the next periodic full read */
    uint64_t read_retry_at; /* the next try of a needed one */
    uint64_t watch_id;
    cl_known_t known[CL_MAX_NODES];
    uint32_t nknown;
    int taken_logged;
    cl_fresh_t *fresh_wait, *fresh_sent; /* cl_member_fresh: for the next read, this one's */
    int fresh_inflight;

    /* any thread */
    _Atomic int64_t lease;  /* the current lease, 0 = none */
    _Atomic uint64_t ka_ok; /* monotonic ms of the last successful keep-alive or grant */
    _Atomic int stopping;
    an_counter_t renewals;

    /* start and stop wait here */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int first;   /* 0: no answer yet, 1: registered, -1: the name is taken */
    int revoked; /* 1: the lease is revoked, or the revoke failed, or there was none */
    /* etcd thread */
    int leave_sent;
    int64_t leave_lease;
    /* cl_member_dead (any thread, under mu): the names to revoke at the tick */
    char dead[CL_MEMBER_DEAD_MAX][CL_NAME_MAX];
    uint32_t ndead;
    an_counter_t revoked_dead; /* leases of dead members revoked */
};


/* ---- the first answer, the last one ---- */

static void signal_first(cl_member_t *m, int v)
{
    pthread_mutex_lock(&m->mu);
    if (m->first == 0)
        m->first = v;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static int wait_flag(cl_member_t *m, int *flag, uint32_t ms)
{
    uint64_t deadline = an_now_ms() + ms;
    pthread_mutex_lock(&m->mu);
    while (*flag == 0) {
        uint64_t now = an_now_ms();
        if (now >= deadline)
            break;
        struct timespec ts = an_wall_after(deadline - now);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    int v = *flag;
    pthread_mutex_unlock(&m->mu);
    return v;
}

/* ---- lease state ---- */

static void lease_up(cl_member_t *m)
{
    cl_t *cl = m->cl;
    m->phase = PH_UP;
    m->taken_logged = 0;
    m->next_ka = an_now_ms() + m->ttl_ms / 3;
    if (!atomic_load(&cl->lease_ok)) {
        int back = m->first != 0;
        atomic_store(&cl->lease_ok, 1);
        server_door_open(cl->srv, SRV_DOOR_CLUSTER);
        if (back) {
            log_info("cluster: lease back (%" PRId64 "): registered again, accepting connections",
                     atomic_load(&m->lease));
            cl_owner_lease_back(cl); /* the client ids died with the old lease */
        } else
            log_info("cluster: registered as %s (lease %" PRId64 ", ttl %u ms)", cl->conf->node,
                     atomic_load(&m->lease), m->ttl_ms);
    }
    signal_first(m, 1);
    m->need_read = 1; /* what happened while out */
}

static void lease_lost(cl_member_t *m, const char *why)
{
    cl_t *cl = m->cl;
    if (atomic_load(&cl->lease_ok)) {
        atomic_store(&cl->lease_ok, 0);
        server_door_close(cl->srv, SRV_DOOR_CLUSTER);
        log_warn("cluster: lease lost (%s): new connections refused until etcd answers again", why);
    }
    if (m->etcd != NULL)
        cl_etcd_hold(m->etcd, 0); /* nothing left to put first */
}

static void drop_lease(cl_member_t *m)
{
    int64_t id = atomic_exchange(&m->lease, 0);
    if (id != 0)
        m->old_lease = id;
    m->phase = PH_NEED_LEASE;
}

/* ---- registration ---- */

static void on_revoked_quietly(void *arg, const cl_etcd_res_t *res)
{
    (void)arg;
    (void)res;
}

static void on_registered(void *arg, const cl_etcd_res_t *res);

static void send_register(cl_member_t *m, int64_t held_by)
{
    int64_t lease = atomic_load(&m->lease);
    json_t *body = held_by ? cl_etcd_put_if_lease_req(m->key, m->value, lease, held_by)
                           : cl_etcd_create_req(m->key, m->value, lease);
    m->phase = PH_REGISTERING;
    if (cl_etcd_call(m->etcd, "/v3/kv/txn", body, 0, on_registered, m) < 0)
        m->phase = PH_REGISTER;
}

static void on_registered(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    if (res->err == CL_ETCD_ECANCELLED || atomic_load(&m->stopping))
        return;
    if (res->err != CL_ETCD_OK) {
        log_limited(10000, AN_LOG_WARN, "cluster: registering in etcd failed: %s", res->error);
        m->phase = PH_REGISTER;
        m->retry_at = an_now_ms() + CL_MEMBER_RETRY_MS;
        return;
    }
    if (cl_etcd_txn_ok(res->json)) {
        m->old_lease = 0;
        lease_up(m);
        return;
    }
    const json_t *kv = cl_etcd_txn_kv(res->json);
    int64_t holder = cl_etcd_int(kv, "lease");
    if (kv != NULL && holder != 0 && holder == m->old_lease) {
        send_register(m, holder); /* our own key from before an outage */
        return;
    }
    if (kv == NULL) { /* gone in between: try again */
        m->phase = PH_REGISTER;
        return;
    }
    /* another live member has this name */
    const char *v = json_string_value(json_object_get(kv, "value"));
    char val[512] = "";
    char kbuf[256];
    if (v != NULL)
        cl_etcd_kv(kv, kbuf, sizeof(kbuf), val, sizeof(val));
    if (!m->taken_logged)
        log_error("cluster: node name %s is taken by a live member of cluster %s (%s): %s",
                  m->cl->conf->node, m->cl->conf->name, m->key, val[0] ? val : "(no value)");
    m->taken_logged = 1;
    signal_first(m, -1);
    int64_t lease = atomic_exchange(&m->lease, 0);
    if (lease != 0)
        cl_etcd_call(m->etcd, "/v3/lease/revoke", cl_etcd_lease_req(lease), 0, on_revoked_quietly,
                     NULL);
    m->phase = PH_NEED_LEASE;
    m->retry_at = an_now_ms() + m->ttl_ms; /* the other's lease may expire */
}

static void on_granted(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    if (res->err == CL_ETCD_ECANCELLED)
        return;
    int64_t id = res->err == CL_ETCD_OK ? cl_etcd_int(res->json, "ID") : 0;
    if (atomic_load(&m->stopping)) {
        if (id != 0) /* granted while stopping: give it back */
            cl_etcd_call(m->etcd, "/v3/lease/revoke", cl_etcd_lease_req(id), 0, on_revoked_quietly,
                         NULL);
        return;
    }
    if (id == 0 || cl_etcd_int(res->json, "TTL") <= 0) {
        log_limited(10000, AN_LOG_WARN, "cluster: etcd lease grant failed: %s",
                    res->err == CL_ETCD_OK ? "no lease in the answer" : res->error);
        m->phase = PH_NEED_LEASE;
        m->retry_at = an_now_ms() + CL_MEMBER_RETRY_MS;
        return;
    }
    atomic_store(&m->lease, id);
    atomic_store(&m->ka_ok, an_now_ms());
    send_register(m, 0);
}

/* ---- keep-alive ---- */

static void on_keepalive(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    m->ka_inflight = 0;
    if (res->err == CL_ETCD_ECANCELLED || atomic_load(&m->stopping) || m->phase != PH_UP)
        return;
    uint64_t now = an_now_ms();
    if (res->err != CL_ETCD_OK) {
        log_limited(10000, AN_LOG_WARN, "cluster: etcd keep-alive failed: %s", res->error);
        m->next_ka = now + AN_MIN(CL_MEMBER_RETRY_MS, m->ttl_ms / 3);
        /* the lease first: no more claims until etcd renews it (a storm
         * of claims makes etcd answer keep-alives 503 once its applies
         * lag a second); the retry's answer lets them go */
        if (atomic_load(&m->cl->lease_ok))
            cl_etcd_hold(m->etcd, CL_MEMBER_KA_HOLD_MS);
        return;
    }
    cl_etcd_hold(m->etcd, 0);
    const json_t *r = json_object_get(res->json, "result");
    if (cl_etcd_int(r, "TTL") <= 0) { /* etcd no longer knows it: it expired */
        lease_lost(m, "etcd says the lease expired");
        drop_lease(m);
        return;
    }
    atomic_store(&m->ka_ok, now);
    STAT_ADD(m->renewals, 1);
    m->next_ka = now + m->ttl_ms / 3;
}

/* ---- the member list ---- */

static cl_known_t *known_find(cl_member_t *m, const char *name)
{
    for (uint32_t i = 0; i < m->nknown; i++)
        if (strcmp(m->known[i].name, name) == 0)
            return &m->known[i];
    return NULL;
}

static void known_put(cl_member_t *m, const char *name, const char *link, int64_t lease)
{
    cl_known_t *k = known_find(m, name);
    if (k != NULL)
        k->lease = lease;
    if (k != NULL && strcmp(k->link, link) == 0)
        return;
    if (k == NULL) {
        if (m->nknown == CL_MAX_NODES)
            return;
        k = &m->known[m->nknown++];
        snprintf(k->name, sizeof(k->name), "%s", name);
        k->lease = lease;
    }
    snprintf(k->link, sizeof(k->link), "%s", link);
    cl_member_seen(m->cl, name, link);
}

static void known_del(cl_member_t *m, const char *name)
{
    cl_known_t *k = known_find(m, name);
    if (k == NULL)
        return;
    cl_member_gone(m->cl, name);
    *k = m->known[--m->nknown];
}

/* A kv of the prefix: the member's name (from the key), its link address
 * (from the value; not for a deletion) and the lease it is under (lease may
 * be NULL).  Returns 0, or -1 when the kv is not a member entry. */
static int member_kv(cl_member_t *m, const json_t *kv, int with_value, char *name, char *link,
                     int64_t *lease)
{
    char key[512], val[1024];
    if (cl_etcd_kv(kv, key, sizeof(key), with_value ? val : NULL, sizeof(val)) < 0)
        return -1;
    size_t pl = strlen(m->prefix);
    if (strncmp(key, m->prefix, pl) != 0 || key[pl] == '\0' || strlen(key + pl) >= CL_NAME_MAX)
        return -1;
    snprintf(name, CL_NAME_MAX, "%s", key + pl);
    if (lease != NULL)
        *lease = cl_etcd_int(kv, "lease");
    if (!with_value)
        return 0;
    json_t *j = json_loads(val, 0, NULL);
    const char *l = json_string_value(json_object_get(j, "link"));
    snprintf(link, CL_ADDR_MAX, "%s", l ? l : "");
    json_decref(j);
    return 0;
}

static void on_watch_msg(void *arg, json_t *msg)
{
    cl_member_t *m = arg;
    if (atomic_load(&m->stopping))
        return;
    const json_t *r = json_object_get(msg, "result");
    if (r == NULL || json_is_true(json_object_get(r, "canceled")) ||
        cl_etcd_int(r, "compact_revision") > 0) {
        /* an error, or the watch was cancelled: a gap; read everything */
        cl_etcd_cancel(m->etcd, m->watch_id);
        m->need_read = 1;
        return;
    }
    size_t i;
    const json_t *ev;
    json_array_foreach(json_object_get(r, "events"), i, ev)
    {
        const char *type = json_string_value(json_object_get(ev, "type"));
        int del = type != NULL && strcmp(type, "DELETE") == 0;
        char name[CL_NAME_MAX], link[CL_ADDR_MAX];
        int64_t lease = 0;
        if (member_kv(m, json_object_get(ev, "kv"), !del, name, link, &lease) < 0)
            continue;
        if (del)
            known_del(m, name);
        else
            known_put(m, name, link, lease);
    }
}

static void on_watch_end(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    m->watch_id = 0;
    if (res->err == CL_ETCD_ECANCELLED && atomic_load(&m->stopping))
        return;
    if (res->err != CL_ETCD_ECANCELLED)
        log_limited(10000, AN_LOG_WARN, "cluster: the etcd watch of %s ended: %s", m->prefix,
                    res->error);
    m->need_read = 1;
}

/* The set read (a range answer) replaces the set known. */
static void apply_read(cl_member_t *m, const cl_etcd_res_t *res)
{
    char names[CL_MAX_NODES][CL_NAME_MAX];
    uint32_t n = 0;
    size_t i;
    const json_t *kv;
    json_array_foreach(json_object_get(res->json, "kvs"), i, kv)
    {
        char link[CL_ADDR_MAX];
        int64_t lease = 0;
        if (n == CL_MAX_NODES || member_kv(m, kv, 1, names[n], link, &lease) < 0)
            continue;
        known_put(m, names[n], link, lease);
        n++;
    }
    for (uint32_t k = 0; k < m->nknown;) {
        int found = 0;
        for (uint32_t j = 0; j < n && !found; j++)
            found = strcmp(names[j], m->known[k].name) == 0;
        if (found)
            k++;
        else
            known_del(m, m->known[k].name); /* moves the last one here */
    }
}

static void on_read(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    m->read_inflight = 0;
    if (res->err == CL_ETCD_ECANCELLED || atomic_load(&m->stopping))
        return;
    uint64_t now = an_now_ms();
    if (res->err != CL_ETCD_OK) {
        log_limited(10000, AN_LOG_WARN, "cluster: reading the members from etcd failed: %s",
                    res->error);
        m->need_read = 1;
        m->read_retry_at = now + CL_MEMBER_RETRY_MS;
        return;
    }
    apply_read(m, res);
    m->need_read = 0;
    m->read_at = now + CL_MEMBER_RESYNC_MS;
    if (m->watch_id == 0) {
        int64_t rev = cl_etcd_revision(res->json);
        m->watch_id = cl_etcd_stream(m->etcd, "/v3/watch",
                                     cl_etcd_watch_req(m->prefix, m->prefix_end, rev + 1),
                                     on_watch_msg, on_watch_end, m);
    }
}

static void member_read(cl_member_t *m)
{
    if (m->read_inflight)
        return;
    m->read_inflight = 1;
    if (cl_etcd_call(m->etcd, "/v3/kv/range", cl_etcd_range_req(m->prefix, m->prefix_end), 0,
                     on_read, m) < 0)
        m->read_inflight = 0;
}

/* ---- a view as new as etcd's (cl_member_fresh) ---- */

static void fresh_send(cl_member_t *m);

static void fresh_call(cl_fresh_t *f, int ok)
{
    while (f != NULL) {
        cl_fresh_t *next = f->next;
        f->fn(f->arg, ok);
        free(f);
        f = next;
    }
}

static void on_fresh(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    int ok = res->err == CL_ETCD_OK && !atomic_load(&m->stopping);
    if (ok)
        apply_read(m, res); /* the departures it finds: cl_member_gone, now */
    cl_fresh_t *f = m->fresh_sent;
    m->fresh_sent = NULL;
    m->fresh_inflight = 0;
    fresh_call(f, ok);
    if (m->fresh_wait != NULL && !m->fresh_inflight) {
        if (atomic_load(&m->stopping)) {
            f = m->fresh_wait;
            m->fresh_wait = NULL;
            fresh_call(f, 0);
        } else {
            fresh_send(m);
        }
    }
}

static void fresh_send(cl_member_t *m)
{
    m->fresh_sent = m->fresh_wait;
    m->fresh_wait = NULL;
    m->fresh_inflight = 1;
    if (cl_etcd_call(m->etcd, "/v3/kv/range", cl_etcd_range_req(m->prefix, m->prefix_end), 0,
                     on_fresh, m) < 0) {
        m->fresh_inflight = 0;
        cl_fresh_t *f = m->fresh_sent;
        m->fresh_sent = NULL;
        fresh_call(f, 0);
    }
}

void cl_member_fresh(cl_t *cl, void (*fn)(void *arg, int ok), void *arg)
{
    cl_member_t *m = cl->member;
    if (m == NULL || m->etcd == NULL || atomic_load(&m->stopping)) {
        fn(arg, 0);
        return;
    }
    cl_fresh_t *f = an_malloc(sizeof(*f));
    f->fn = fn;
    f->arg = arg;
    f->next = m->fresh_wait;
    m->fresh_wait = f;
    if (!m->fresh_inflight)
        fresh_send(m); /* else when the read in flight (sent before this) is answered */
}

/* ---- leaving ---- */

static void leave_done(cl_member_t *m)
{
    pthread_mutex_lock(&m->mu);
    m->revoked = 1;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

static void on_leave(void *arg, const cl_etcd_res_t *res)
{
    cl_member_t *m = arg;
    if (res->err == CL_ETCD_OK)
        log_info("cluster: left the cluster (lease %" PRId64 " revoked)", m->leave_lease);
    else if (res->err != CL_ETCD_ECANCELLED)
        log_warn("cluster: revoking the lease failed (%s): the others see this node leave after "
                 "%u ms",
                 res->error, m->ttl_ms);
    leave_done(m);
}

/* Stopping: revoke the lease, here on the etcd thread, where a grant
 * answered meanwhile cannot slip in between (on_granted gives back a lease
 * granted while stopping). */
static void member_leave(cl_member_t *m)
{
    if (m->leave_sent)
        return;
    m->leave_sent = 1;
    m->leave_lease = atomic_exchange(&m->lease, 0);
    if (m->leave_lease == 0 || cl_etcd_call(m->etcd, "/v3/lease/revoke",
                                            cl_etcd_lease_req(m->leave_lease), 0, on_leave, m) < 0)
        leave_done(m);
}

/* ---- a dead member's lease ---- */

typedef struct {
    cl_member_t *m;
    char name[CL_NAME_MAX];
    int64_t lease;
} cl_dead_t;

static void on_dead_revoked(void *arg, const cl_etcd_res_t *res)
{
    cl_dead_t *d = arg;
    if (res->err == CL_ETCD_OK) {
        STAT_ADD(d->m->revoked_dead, 1);
        log_info("cluster: node %s's lease %" PRId64 " revoked: its process is gone (its link "
                 "address refuses connections)",
                 d->name, d->lease);
    } else if (res->err != CL_ETCD_ECANCELLED) {
        /* gone already (expired, or it left), or etcd did not answer: the
         * lease expires by itself */
        log_info("cluster: revoking node %s's lease %" PRId64 " failed (%s): it goes at its "
                 "expiry",
                 d->name, d->lease, res->error);
    }
    free(d);
}

void cl_member_dead(cl_t *cl, const char *name)
{
    cl_member_t *m = cl->member;
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    int dup = 0;
    for (uint32_t i = 0; i < m->ndead && !dup; i++)
        dup = strcmp(m->dead[i], name) == 0;
    if (!dup && m->ndead < CL_MEMBER_DEAD_MAX)
        snprintf(m->dead[m->ndead++], CL_NAME_MAX, "%s", name);
    pthread_mutex_unlock(&m->mu);
}

/* The tick: revoke the leases of the members reported dead meanwhile. */
static void dead_revoke(cl_member_t *m)
{
    char names[CL_MEMBER_DEAD_MAX][CL_NAME_MAX];
    pthread_mutex_lock(&m->mu);
    uint32_t n = m->ndead;
    memcpy(names, m->dead, n * sizeof(names[0]));
    m->ndead = 0;
    pthread_mutex_unlock(&m->mu);
    for (uint32_t i = 0; i < n; i++) {
        cl_known_t *k = known_find(m, names[i]);
        if (k == NULL || k->lease == 0 || k->lease == atomic_load(&m->lease))
            continue; /* out already, or a lease not said (or ours: never) */
        cl_dead_t *d = an_malloc(sizeof(*d));
        d->m = m;
        snprintf(d->name, sizeof(d->name), "%s", k->name);
        d->lease = k->lease;
        log_warn("cluster: node %s's link address refuses connections after its link went "
                 "down: revoking its lease %" PRId64,
                 d->name, d->lease);
        if (cl_etcd_call(m->etcd, "/v3/lease/revoke", cl_etcd_lease_req(d->lease), 0,
                         on_dead_revoked, d) < 0)
            free(d);
    }
}

/* ---- the timers ---- */

static void member_tick(cl_etcd_t *e, void *arg)
{
    cl_member_t *m = arg;
    m->etcd = e;
    if (atomic_load(&m->stopping)) {
        member_leave(m);
        return;
    }
    uint64_t now = an_now_ms();
    uint64_t ok = atomic_load(&m->ka_ok);
    if (atomic_load(&m->cl->lease_ok) && now - ok >= m->ttl_ms) {
        char why[96];
        snprintf(why, sizeof(why), "no keep-alive answered for %" PRIu64 " ms", now - ok);
        lease_lost(m, why);
        drop_lease(m);
        /* give the old lease back if etcd still has it; its key is found
         * and taken over by lease (old_lease) if this does not get through */
        if (m->old_lease != 0)
            cl_etcd_call(m->etcd, "/v3/lease/revoke", cl_etcd_lease_req(m->old_lease), 0,
                         on_revoked_quietly, NULL);
    }
    switch (m->phase) {
    case PH_NEED_LEASE:
        if (now >= m->retry_at) {
            m->phase = PH_GRANTING;
            json_t *req = cl_etcd_grant_req((m->ttl_ms + 999) / 1000);
            if (cl_etcd_call(m->etcd, "/v3/lease/grant", req, 0, on_granted, m) < 0)
                m->phase = PH_NEED_LEASE;
        }
        break;
    case PH_REGISTER:
        if (now >= m->retry_at)
            send_register(m, 0);
        break;
    case PH_UP:
        if (!m->ka_inflight && now >= m->next_ka) {
            m->ka_inflight = 1;
            if (cl_etcd_call(m->etcd, "/v3/lease/keepalive",
                             cl_etcd_lease_req(atomic_load(&m->lease)), 0, on_keepalive, m) < 0)
                m->ka_inflight = 0;
        }
        break;
    default:
        break;
    }
    if (!m->read_inflight && (m->need_read ? now >= m->read_retry_at : now >= m->read_at))
        member_read(m);
    dead_revoke(m);
}

/* ---- the module's calls ---- */

static void member_value(cl_member_t *m)
{
    cl_t *cl = m->cl;
    const conf_t *conf = &cl->srv->conf;
    char mqtt[CL_ADDR_MAX] = "", api[CL_ADDR_MAX] = "";
    if (conf->nlisteners > 0) {
        const conf_listener_t *l = &conf->listeners[0];
        int v6 = strchr(l->address, ':') != NULL;
        snprintf(mqtt, sizeof(mqtt), "%s%s%s:%u", v6 ? "[" : "", l->address, v6 ? "]" : "",
                 l->port);
    }
    if (conf->api_enabled && conf->api_port != 0)
        snprintf(api, sizeof(api), "%s:%u", conf->api_bind, conf->api_port);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "node", cl->conf->node, "link",
                          cl->link_addr, "mqtt", mqtt, "api", api, "version", ANTENNA_VERSION,
                          "started", (json_int_t)cl->srv->started_wall);
    char *t = json_dumps(j, JSON_COMPACT);
    snprintf(m->value, sizeof(m->value), "%s", t ? t : "{}");
    free(t);
    json_decref(j);
}

int cl_member_start(cl_t *cl)
{
    const cl_conf_t *c = cl->conf;
    if (c->etcd[0] == '\0')
        return 0;
    cl_member_t *m = an_calloc(1, sizeof(*m));
    cl->member = m;
    m->cl = cl;
    m->ttl_ms = c->lease_ttl_ms;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    snprintf(m->prefix, sizeof(m->prefix), "/antenna/%s/members/", c->name);
    cl_etcd_prefix_end(m->prefix, m->prefix_end, sizeof(m->prefix_end));
    snprintf(m->key, sizeof(m->key), "%s%s", m->prefix, c->node);
    member_value(m);
    /* closed until registered (lease_up opens it) */
    server_door_close(cl->srv, SRV_DOOR_CLUSTER);
    m->phase = PH_NEED_LEASE;
    m->need_read = 1;
    atomic_store(&m->ka_ok, an_now_ms());
    char err[160];
    cl_etcd_opts_t o = {
        .endpoints = c->etcd,
        .timeout_ms = AN_MAX(1000u, AN_MIN(5000u, c->lease_ttl_ms / 3)),
        .tick_ms = CL_MEMBER_TICK_MS,
        .tick = member_tick,
        .tick_arg = m,
        .batch_end = cl_owner_batch_end,
        .batch_end_arg = cl,
    };
    m->client = cl_etcd_new(&o, err, sizeof(err));
    if (m->client == NULL) {
        log_error("cluster: the etcd client cannot start: %s", err);
        return -1;
    }
    /* wait for the first answer: a name taken refuses the start */
    int first = wait_flag(m, &m->first, AN_MIN(CL_MEMBER_START_WAIT_MS, c->lease_ttl_ms));
    if (first < 0) {
        log_error("cluster: refusing to start: another node named %s is a member", c->node);
        return -1;
    }
    if (first == 0) {
        log_warn("cluster: etcd (%s) did not answer yet: new connections refused until this node "
                 "is registered",
                 c->etcd);
    }
    return 0;
}

void cl_member_stop(cl_t *cl)
{
    cl_member_t *m = cl->member;
    if (m == NULL || m->client == NULL)
        return;
    atomic_store(&m->stopping, 1); /* the etcd thread's next tick revokes the lease */
    wait_flag(m, &m->revoked, CL_MEMBER_LEAVE_WAIT_MS + CL_MEMBER_TICK_MS);
    /* the client stays until cl_member_free, after the workers ended: a
     * worker that took it from cl_member_etcd just before `stopping` may
     * still be queueing a request on it (its thread answers it with
     * nothing more to do) */
}

void cl_member_free(cl_t *cl)
{
    cl_member_t *m = cl->member;
    if (m == NULL)
        return;
    cl_etcd_free(m->client);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    cl->member = NULL;
}

cl_etcd_t *cl_member_etcd(cl_t *cl)
{
    cl_member_t *m = cl->member;
    return m && !atomic_load(&m->stopping) ? m->client : NULL;
}

int64_t cl_member_lease(cl_t *cl)
{
    cl_member_t *m = cl->member;
    return m ? atomic_load(&m->lease) : 0;
}

void cl_member_metrics(cl_t *cl, module_metrics_t *mm)
{
    cl_member_t *m = cl->member;
    if (m == NULL || m->client == NULL)
        return;
    cl_etcd_stats_t st;
    cl_etcd_stats(m->client, &st);
    module_metrics_family(mm, "antenna_cluster_etcd_requests_total", "counter",
                          "Requests sent to etcd (each try of each request).");
    module_metrics_printf(mm, "antenna_cluster_etcd_requests_total %" PRIu64 "\n", st.requests);
    module_metrics_family(mm, "antenna_cluster_etcd_errors_total", "counter",
                          "etcd requests that failed (no answer, timeout, error status).");
    module_metrics_printf(mm, "antenna_cluster_etcd_errors_total %" PRIu64 "\n", st.errors);
    module_metrics_family(mm, "antenna_cluster_etcd_txn_batches_total", "counter",
                          "Batched requests of the client-id registry's txns sent to etcd.");
    module_metrics_printf(mm, "antenna_cluster_etcd_txn_batches_total %" PRIu64 "\n", st.batches);
    module_metrics_family(mm, "antenna_cluster_etcd_batched_txns_total", "counter",
                          "The client-id registry's txns, sent in those batches.");
    module_metrics_printf(mm, "antenna_cluster_etcd_batched_txns_total %" PRIu64 "\n", st.batched);
    module_metrics_family(mm, "antenna_cluster_etcd_txn_batches_retried_total", "counter",
                          "Batches whose creates failed (some key existed): sent again, nested.");
    module_metrics_printf(mm, "antenna_cluster_etcd_txn_batches_retried_total %" PRIu64 "\n",
                          st.retried);
    module_metrics_family(mm, "antenna_cluster_etcd_batches_held_total", "counter",
                          "Times the registry's batches were held while a keep-alive failed.");
    module_metrics_printf(mm, "antenna_cluster_etcd_batches_held_total %" PRIu64 "\n", st.held);
    module_metrics_family(mm, "antenna_cluster_etcd_slow_total", "counter",
                          "Times a batch answered in 1 s or more halved the batches in flight.");
    module_metrics_printf(mm, "antenna_cluster_etcd_slow_total %" PRIu64 "\n", st.slow);
    module_metrics_family(mm, "antenna_cluster_lease_renewals_total", "counter",
                          "Successful keep-alives of this node's membership lease.");
    module_metrics_printf(mm, "antenna_cluster_lease_renewals_total %" PRIu64 "\n",
                          (uint64_t)atomic_load(&m->renewals));
    module_metrics_family(mm, "antenna_cluster_dead_leases_revoked_total", "counter",
                          "Leases of members whose process was gone (their link address refused "
                          "connections) revoked by this node.");
    module_metrics_printf(mm, "antenna_cluster_dead_leases_revoked_total %" PRIu64 "\n",
                          (uint64_t)atomic_load(&m->revoked_dead));
    module_metrics_family(mm, "antenna_cluster_lease_keepalive_age_seconds", "gauge",
                          "Seconds since the last successful keep-alive (or grant) of the lease.");
    uint64_t age = an_now_ms() - atomic_load(&m->ka_ok);
    module_metrics_printf(mm, "antenna_cluster_lease_keepalive_age_seconds %.3f\n",
                          (double)age / 1000.0);
}
