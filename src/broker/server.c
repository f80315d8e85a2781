/* server.c -- the server context: listeners, workers, start and stop.
 *
 * Listening sockets are opened here, before any worker starts, so a port in
 * use or a bad address stops the broker at start with a clear message.  One
 * socket per listener is shared by every worker's loop with EV_EXCLUSIVE
 * (one worker woken per incoming connection).  We do not bind one
 * SO_REUSEPORT socket per worker: a second antenna started on the same port
 * would then silently share it instead of failing.
 *
 * Two limits left at 0 in the configuration get a finite value here, once,
 * before any worker runs (logged): max_connections from the open-file limit
 * and memory_high_water from the memory the process may use.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "log.h"
#include "migrate.h"
#include "net_tls.h"
#include "persist.h"
#include "proto.h"
#include "conn.h"
#include "retain.h"
#include "router.h"
#include "rbits.h"
#include "rbloom.h"
#include "rtab.h"
#include "sess.h"
#include "shared.h"
#include "sys.h"
#include "auth_chain.h"
#include "auth_pwcache.h"
#include "module.h"

static int open_listener(server_t *srv, uint32_t i)
{
    conf_listener_t *l = &srv->conf.listeners[i];
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } a;
    socklen_t len;
    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET, l->address, &a.in4.sin_addr) == 1) {
        a.in4.sin_family = AF_INET;
        a.in4.sin_port = htons(l->port);
        len = sizeof(a.in4);
    } else if (inet_pton(AF_INET6, l->address, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons(l->port);
        len = sizeof(a.in6);
    } else {
        log_error("listener %s: bad address '%s'", l->name, l->address);
        return -1;
    }
    int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a.sa.sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, &a.sa, len) < 0 || listen(fd, 4096) < 0)
        goto fail;
    srv->listen_nodelay[i] = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0;
    len = sizeof(a);
    getsockname(fd, &a.sa, &len);
    srv->listen_ports[i] = ntohs(a.sa.sa_family == AF_INET6 ? a.in6.sin6_port : a.in4.sin_port);
    srv->listen_fds[i] = fd;
    return 0;
fail:
    log_error("listener %s: cannot listen on %s port %u: %s", l->name, l->address, l->port,
              strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Descriptors kept back from max_connections: listeners, epoll and eventfd
 * of each worker, the log, the API's sockets, the store's files. */
static uint64_t fd_reserve(uint64_t nofile, uint32_t nworkers)
{
    return 64u + 2u * (uint64_t)nworkers + nofile / 16u;
}

/* A number from a one-line file (a cgroup limit); 0 when absent or "max". */
static uint64_t read_limit_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned long long v = 0;
    int n = fscanf(f, "%llu", &v);
    fclose(f);
    return n == 1 ? (uint64_t)v : 0;
}

/* The memory this process may use: physical RAM, or less when its cgroup
 * (v2, else v1) says so.  *what names the source for the log. */
static uint64_t memory_available(const char **what)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
    uint64_t cg = 0;
    char line[512], path[640];
    FILE *f = fopen("/proc/self/cgroup", "r");
    while (f && cg == 0 && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "0::", 3) != 0)
            continue;
        line[strcspn(line, "\n")] = '\0';
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
        cg = read_limit_file(path);
    }
    if (f)
        fclose(f);
    if (cg == 0)
        cg = read_limit_file("/sys/fs/cgroup/memory.max");
    if (cg == 0)
        cg = read_limit_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    *what = "physical memory";
    if (cg && (ram == 0 || cg < ram)) {
        *what = "the cgroup's memory limit";
        return cg;
    }
    return ram;
}

static void derive_limits(server_t *srv)
{
    conf_t *cf = &srv->conf;
    if (cf->max_connections == 0) {
        struct rlimit rl;
        uint64_t nofile = 1024; /* the usual soft limit, if it cannot be read */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
            nofile = rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (uint64_t)rl.rlim_cur;
        uint64_t reserve = fd_reserve(nofile, srv->nworkers);
        uint64_t max = nofile > reserve + 16u ? nofile - reserve : 16u;
        cf->max_connections = (uint32_t)AN_MIN(max, (uint64_t)UINT32_MAX);
        log_info("limits: max_connections %" PRIu32 " (derived: the open-file limit %" PRIu64
                 " minus %" PRIu64 " kept for the broker's own files)",
                 cf->max_connections, nofile, reserve);
    }
    if (cf->memory_high_water == 0) {
        const char *what;
        uint64_t avail = memory_available(&what);
        if (avail == 0)
            avail = (uint64_t)1 << 32; /* unknown: assume 4 GiB */
        cf->memory_high_water = avail / 10u * 8u;
        log_info("limits: memory_high_water %" PRIu64 " bytes (derived: 80%% of %s, %" PRIu64
                 " bytes)",
                 cf->memory_high_water, what, avail);
    }
}

void server_slabs_init(server_t *srv)
{
    slab_init(&srv->conn_slab, sizeof(conn_t));
    for (size_t i = 0; i < SESS_SLAB_CLASSES; i++)
        slab_init(&srv->sess_slab[i], sess_slab_size(i));
    for (size_t i = 0; i < SUB_SLAB_CLASSES; i++)
        slab_init(&srv->sub_slab[i], sess_sub_slab_size(i));
}

void server_slabs_free(server_t *srv)
{
    slab_destroy(&srv->conn_slab);
    for (size_t i = 0; i < SESS_SLAB_CLASSES; i++)
        slab_destroy(&srv->sess_slab[i]);
    for (size_t i = 0; i < SUB_SLAB_CLASSES; i++)
        slab_destroy(&srv->sub_slab[i]);
}

int server_init(server_t *srv, const conf_t *conf)
{
    memset(srv, 0, sizeof(*srv));
    srv->conf = *conf;
    server_slabs_init(srv);
    for (uint32_t i = 0; i < CONF_MAX_LISTENERS; i++)
        srv->listen_fds[i] = -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    srv->nworkers = conf->workers ? conf->workers : (uint32_t)(ncpu > 0 ? ncpu : 1);
    an_random_key(srv->home_key);
    derive_limits(srv);
    pthread_rwlock_init(&srv->trie_lock, NULL);
    pthread_mutex_init(&srv->tls_lock, NULL);
    srv->trie = trie_new();
    an_random_key(srv->route_key);
    srv->retain = retain_new();
    atomic_init(&srv->next_sid, 1);
    srv->started_wall = an_wall_s();
    srv->started_ms = an_now_ms();
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    snprintf(srv->node_name, sizeof(srv->node_name), "antenna@%s", host);

    if (persist_open(srv) < 0)
        return -1;

    char aerr[512];
    srv->auth = auth_chain_new(&srv->conf, aerr, sizeof(aerr));
    if (srv->auth == NULL) {
        log_error("%s", aerr);
        return -1;
    }
    if (auth_pwcache_setup(srv->auth, srv->store, &srv->conf, aerr, sizeof(aerr)) < 0) {
        log_error("%s", aerr);
        return -1;
    }

    srv->nlisteners = conf->nlisteners;
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        const conf_listener_t *l = &srv->conf.listeners[i];
        if (l->transport == CONF_TRANSPORT_TLS || l->transport == CONF_TRANSPORT_WSS) {
            char err[512];
            srv->tls_ctx[i] = tls_ctx_new(l, err, sizeof(err));
            if (srv->tls_ctx[i] == NULL) {
                log_error("%s", err);
                return -1;
            }
        }
    }
    for (uint32_t i = 0; i < srv->nlisteners; i++)
        if (open_listener(srv, i) < 0)
            return -1;

    /* inbox kinds, each registered by the module that handles it (the
     * management API registers its own in api_start) */
    worker_register_inbox(srv);
    router_register_inbox(srv);
    proto_register_inbox(srv);
    persist_register_inbox(srv);
    migrate_register_inbox(srv);
    if (migrate_init(srv) < 0)
        return -1;

    srv->workers = an_calloc(srv->nworkers, sizeof(*srv->workers));
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        srv->workers[i].loop.epfd = -1;
        srv->workers[i].inbox.evfd = -1;
    }
    for (uint32_t i = 0; i < srv->nworkers; i++)
        if (worker_init(&srv->workers[i], srv, i) < 0)
            return -1;
    if (persist_load_sessions(srv) < 0)
        return -1;
    if (module_init_all(srv) < 0) /* $SYS, events.log, ...: before any worker runs */
        return -1;
    if (srv->conf.memory_high_water) {
        worker_t *w0 = &srv->workers[0];
        tw_timer_init(&w0->mem_timer, sys_on_mem_timer);
        tw_add(&w0->tw, &w0->mem_timer, w0->now + 1000u);
    }
    {
        worker_t *w0 = &srv->workers[0];
        tw_timer_init(&w0->sweep_timer, persist_on_sweep_timer);
        tw_add(&w0->tw, &w0->sweep_timer, w0->now + PERSIST_SWEEP_MS);
    }
    return 0;
}

int server_listener_open(server_t *srv, uint32_t i)
{
    return open_listener(srv, i);
}

int server_start(server_t *srv)
{
    event_freeze(&srv->events); /* the workers read it without a lock */
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        int rc = pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
        if (rc != 0) {
            log_error("cannot start worker %u: %s", i, strerror(rc));
            return -1;
        }
    }
    if (module_start_all(srv) < 0)
        return -1;
    /* the management API last: its requests go to running workers */
    return api_start(srv);
}

void server_stop(server_t *srv)
{
    api_stop(srv);        /* first: no API request waits for a stopped worker */
    module_stop_all(srv); /* their threads end while the workers still run */
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        inbox_vec_t v = {0};
        inbox_item_t it = {.kind = WM_STOP};
        inbox_vec_push(&v, &it);
        inbox_post(&srv->workers[i].inbox, &v);
        inbox_vec_free(&v);
    }
    for (uint32_t i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].thread)
            pthread_join(srv->workers[i].thread, NULL);
}

void server_free(server_t *srv)
{
    /* the workers have stopped: no connection waits any more, and the
     * backends' threads end before the inboxes they post to go */
    auth_chain_free(srv->auth);
    srv->auth = NULL;
    for (uint32_t i = 0; srv->workers && i < srv->nworkers; i++)
        worker_free(&srv->workers[i]);
    free(srv->workers);
    srv->workers = NULL;
    migrate_free(srv);    /* after the sessions that moved */
    module_free_all(srv); /* after every worker's context */
    persist_close(srv);   /* after the workers saved their sessions */
    for (uint32_t i = 0; i < CONF_MAX_LISTENERS; i++) {
        if (srv->listen_fds[i] >= 0)
            close(srv->listen_fds[i]);
        tls_ctx_free(srv->tls_ctx[i]);
        srv->tls_ctx[i] = NULL;
    }
    router_consumers_free(srv); /* before the trie: they leave it */
    router_guard_free(srv);
    shared_free_all(&srv->groups);
    trie_free(srv->trie);
    rtab_free(srv->rtab);
    srv->rtab = NULL;
    for (uint32_t i = 0; i < srv->rblooms.n; i++)
        rbloom_free(srv->rblooms.v[i].f);
    free(srv->rblooms.v);
    srv->rblooms = (rpeers_t){0};
    for (uint32_t i = 0; i < srv->rbits.n; i++)
        rbits_free(srv->rbits.v[i].f);
    free(srv->rbits.v);
    srv->rbits = (rpeers_t){0};
    retain_free(srv->retain);
    pthread_rwlock_destroy(&srv->trie_lock);
    pthread_mutex_destroy(&srv->tls_lock);
    server_slabs_free(srv); /* every connection and session is gone */
}

struct ssl_st *server_tls_new(server_t *srv, uint32_t listener, int fd)
{
    pthread_mutex_lock(&srv->tls_lock);
    struct ssl_st *ssl = tls_new(srv->tls_ctx[listener], fd);
    pthread_mutex_unlock(&srv->tls_lock);
    return ssl;
}

void server_door_close(server_t *srv, uint32_t why)
{
    atomic_fetch_or(&srv->door_closed, why);
}

void server_door_open(server_t *srv, uint32_t why)
{
    atomic_fetch_and(&srv->door_closed, ~why);
}

int server_tls_reload(server_t *srv)
{
    int failed = 0, reloaded = 0;
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        const conf_listener_t *l = &srv->conf.listeners[i];
        if (l->transport != CONF_TRANSPORT_TLS && l->transport != CONF_TRANSPORT_WSS)
            continue;
        char err[512];
        struct ssl_ctx_st *ctx = tls_ctx_new(l, err, sizeof(err));
        if (ctx == NULL) {
            log_error("%s: TLS certificates not reloaded, the previous ones stay in use", err);
            failed++;
            continue;
        }
        /* only the main thread replaces contexts: reading ours is safe */
        if (tls_ctx_copy_ticket_keys(ctx, srv->tls_ctx[i]) < 0)
            log_warn("listener %s: session ticket keys not carried over: sessions resumed "
                     "before the reload need a full handshake",
                     l->name);
        pthread_mutex_lock(&srv->tls_lock);
        struct ssl_ctx_st *old = srv->tls_ctx[i];
        srv->tls_ctx[i] = ctx;
        pthread_mutex_unlock(&srv->tls_lock);
        tls_ctx_free(old); /* live SSLs hold their own references */
        log_info("listener %s: TLS certificates reloaded (%s)", l->name, l->cert_file);
        reloaded++;
    }
    if (reloaded || failed)
        log_info("TLS certificates reloaded: %d listener(s), %d failed", reloaded, failed);
    return failed;
}
