/* bench_worker.h -- inside one worker process: the client and loop state
 * shared by bench_worker.c (the loop, phases, pacing, timers) and
 * bench_client.c (one connection's MQTT state machine).
 *
 * One worker per process and one thread per worker, so the loop state is a
 * single global (W).  Clients live in one array and are named by their index
 * in it (epoll data, timer heap, dirty and active lists), never by pointer.
 */
#ifndef ANTENNA_BENCH_WORKER_H
#define ANTENNA_BENCH_WORKER_H

#include "bench.h"

enum client_state {
    CS_IDLE = 0, /* not started yet */
    CS_TCP,      /* non-blocking connect in progress */
    CS_CONNACK,  /* CONNECT written */
    CS_SUBACK,   /* SUBSCRIBE written */
    CS_READY,    /* connected (and subscribed) */
    CS_BACKOFF,  /* waiting to reconnect */
    CS_DEAD,     /* failed for good, or closed at the end */
    CS_CLOSING,  /* DISCONNECT written at the end, waiting for the close */
    CS_TLS,      /* --tls: TCP connected, TLS handshake in progress */
    CS_WS        /* --ws: upgrade request written, waiting for the 101 */
};

enum client_flag {
    F_DIRTY = 1,    /* in W.dirty: has output to write this turn */
    F_WANT_OUT = 2, /* EPOLLOUT armed: the socket refused bytes */
    F_ACTIVE = 4,   /* in W.active (flat-out publisher able to send) */
    F_PING_OUT = 8, /* PINGREQ sent, no PINGRESP yet */
    F_EVER_UP = 16, /* connected at least once */
    F_SETTLED = 32, /* counted in W.settled (connect phase) */
    F_DOWN = 64     /* dropped and not back yet (counted in W.down) */
};

typedef struct {
    uint16_t id;
    uint8_t st; /* 0 free, 1 waiting PUBACK/PUBREC, 2 waiting PUBCOMP */
    uint8_t pad;
} pid_slot_t;

typedef struct {
    char *topic; /* expanded (without %n) */
    uint16_t topic_len;
    uint16_t next_pid;
    uint32_t mask; /* ring size - 1 */
    uint32_t inflight;
    uint32_t seq;  /* next sequence number */
    uint32_t fan;  /* --e2e-window: local subscribers matching the topic */
    uint32_t done; /* sent --limit messages, all acknowledged */
    uint64_t sent;
    pid_slot_t *ring;
} pub_t;

typedef struct {
    int fd;
    uint32_t idx; /* index within its role (the %i of templates) */
    uint32_t g;   /* global number: host/port/source address round-robin */
    uint8_t role, state, flags, attempts;
    uint32_t heap_pos; /* 1-based position in the timer heap, 0 = none */
    uint64_t deadline;
    uint64_t t_conn;    /* this attempt started */
    uint64_t t_last_tx; /* last bytes queued (keepalive) */
    uint64_t t_drop;    /* dropped at (while F_DOWN) */
    mqtt_parser_t ps;
    uint8_t *obuf;
    uint32_t olen, ooff, ocap;
    pub_t *pub;
    bench_pairs_t *pairs; /* subscribers */
    struct ssl_st *ssl;   /* --tls: the connection's SSL, NULL otherwise */
    struct bench_ws *ws;  /* --ws: framing state (bench_ws.c), NULL otherwise */
} client_t;
typedef struct bench_ws bench_ws_t;

enum phase { PH_SETUP, PH_WAIT, PH_RUN, PH_DRAIN, PH_CLOSING };

typedef struct {
    const bench_split_t *sp;
    client_t *cl;
    uint32_t ncl;
    int epfd, rep_fd, ctl_fd;
    uint64_t now;
    int phase;
    int stop_requested;
    uint64_t t_setup_start, setup_deadline;
    uint64_t t0, t_meas, t_end, t_drain, t_close_deadline;
    uint64_t last_recv; /* local, for the drain */
    /* connect phase */
    uint32_t next_start, pending, pending_max, settled;
    double conn_rate;
    /* publishing */
    double pub_rate;
    uint64_t issued;
    uint32_t rr;
    uint32_t *pubs, npubs;
    uint32_t pubs_done; /* publishers that reached --limit with no inflight */
    uint64_t fan_total; /* --e2e-window: sum of the publishers' fan */
    uint64_t exp_deliv; /* --e2e-window: deliveries owed for what was sent */
    /* lists */
    uint32_t *dirty, ndirty;
    uint32_t *active, nactive;
    uint32_t *heap, nheap;
    uint32_t down; /* clients dropped and not back */
    /* buffers */
    uint8_t *rbuf;
    size_t rbuf_size;
    uint8_t *payload;
    uint64_t rng;
    bench_stats_t st;
    bench_hist_t lat, conn, recon;
    uint64_t next_tick;
    int spin; /* more work right now: do not sleep in epoll_wait */
} wk_t;

extern wk_t W;

/* bench_client.c */
void client_init(client_t *c, int role, uint32_t idx, uint32_t g);
void client_start(client_t *c);
void client_on_event(client_t *c, uint32_t events);
void client_on_timer(client_t *c);
void client_flush(client_t *c);
int client_can_publish(const client_t *c);
void client_publish(client_t *c);
void client_begin_close(client_t *c);
void client_close_now(client_t *c);

/* The broker's MQTT bytes (plain, or a WebSocket payload): frame and handle
 * them; -1 when the connection was dropped meanwhile. */
int client_mqtt_in(client_t *c, const uint8_t *buf, size_t n);
/* --ws: the 101 was accepted; write CONNECT.  -1 when dropped. */
int client_ws_open(client_t *c);
/* Append n bytes to the output (counted as MQTT bytes to frame with --ws). */
uint8_t *client_reserve(client_t *c, size_t n);

/* bench_ws.c */
enum { WS_OK = 0, WS_FAIL = -1, WS_PROTO = -2, WS_CLOSED = -3, WS_GONE = -4 };
void ws_client_init(client_t *c); /* allocate the framing state */
void ws_reset(client_t *c);       /* the socket closed */
void ws_start(client_t *c);       /* queue the upgrade request */
int ws_open(const client_t *c);   /* upgrade done: output is framed */
void ws_count_raw(client_t *c, size_t n);
void ws_seal(client_t *c); /* frame the MQTT bytes queued since the last frame */
/* Bytes from the broker: the upgrade response, then frames.  WS_OK; WS_FAIL
 * (upgrade failed) / WS_PROTO (framing error) / WS_CLOSED (close frame) with
 * the reason in why; WS_GONE when the connection was dropped meanwhile. */
int ws_input(client_t *c, uint8_t *buf, size_t n, char *why, size_t wsize);

/* bench_tls.c: a new client SSL on fd (with the process's session when
 * --tls-resume has one), NULL on failure. */
struct ssl_st *btls_new(int fd);
/* The handshake of ssl completed: count it (and whether it resumed). */
void btls_handshake_done(struct ssl_st *ssl);
/* The reason of the last TLS failure (OpenSSL error queue, verification
 * result, errno) after a call returned ret with SSL_get_error err. */
void btls_reason(struct ssl_st *ssl, int ret, int err, const char *what, char *out, size_t size);


/* bench_worker.c */
void timer_set(client_t *c, uint64_t deadline);
void timer_cancel(client_t *c);
void mark_dirty(client_t *c);
void set_active(client_t *c);
void on_client_ready(client_t *c, int first_time);
void on_client_settled_failed(client_t *c);
uint64_t rng_next(void);

#endif
