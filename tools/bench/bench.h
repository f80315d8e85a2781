/* bench.h -- antenna-bench: the types shared by its files.
 *
 * antenna-bench is an MQTT load generator in the spirit of emqtt-bench.  One
 * parent process parses the options and forks one or more worker processes
 * (more than one only when the clients would not fit under one process's
 * open-file limit, or with --procs).  Each worker runs a single-threaded
 * epoll loop over its share of the clients and reports to the parent over a
 * pipe: READY once its clients are connected (and subscribed), a TICK of
 * cumulative counters every second, and a FINAL with its histograms and
 * per-publisher counts.  The parent starts every worker at once (GO, with a
 * common CLOCK_MONOTONIC origin, so send timestamps in payloads compare
 * across processes), prints the progress and the summary.
 *
 * Files:
 *   bench.c         main, options, process split, the parent's loop
 *   bench_worker.c  a worker process: epoll loop, phases, pacing, timers
 *   bench_client.c  one client connection: the MQTT client state machine
 *   bench_hist.c    log-linear latency histogram (HDR-like)
 *   bench_track.c   loss/duplicate/reorder tracking, topic templates, matching
 *   bench_ws.c      --ws: the WebSocket upgrade and framing
 *   bench_report.c  pipe protocol, aggregation, summary and JSON, /proc sampling
 *   bench_device.c  the device mode: devices that answer downlink commands
 *                   (threads of their own, nothing shared with the above)
 */
#ifndef ANTENNA_BENCH_H
#define ANTENNA_BENCH_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "mqtt_codec.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define NS_PER_US 1000ull

/* ---- clock --------------------------------------------------------------- */

#include <time.h>
static inline uint64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- options ------------------------------------------------------------- */

enum bench_mode { MODE_CONN, MODE_PUB, MODE_SUB, MODE_PUBSUB };
enum bench_role { ROLE_CONN = 0, ROLE_PUB = 1, ROLE_SUB = 2 };

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
} bench_addr_t;

/* A topic template split at its %n (message number) so a per-message topic
 * costs one formatted number; %i and %c are expanded once per client. */
typedef struct {
    char *text; /* the raw template */
    int has_n;  /* contains %n: the topic changes with every message */
} bench_tmpl_t;

typedef struct {
    int mode;
    bench_addr_t *hosts; /* port filled per client */
    uint32_t nhosts;
    uint16_t *ports;
    uint32_t nports;
    bench_addr_t *ifaddrs;
    uint32_t nifaddrs;
    uint32_t count;        /* conn mode: clients; pub/sub/pubsub: default for both */
    uint32_t pub_count;    /* publishers (pub, pubsub) */
    uint32_t sub_count;    /* subscribers (sub, pubsub) */
    double conn_rate;      /* new connections per second, 0 = as fast as allowed */
    uint32_t conn_pending; /* handshakes in progress at once (all processes) */
    uint8_t version;       /* MQTT_PROTO_V31 or MQTT_PROTO_V311 */
    uint8_t qos, sub_qos;
    uint8_t clean;
    uint8_t retain;
    uint32_t size; /* payload bytes */
    double rate;   /* aggregate messages/s, 0 = flat out */
    bench_tmpl_t topic, sub_topic;
    const char *extra_sub; /* sub: a second filter in the SUBSCRIBE, or NULL */
    uint16_t keepalive;
    const char *username, *password;
    const char *user_prefix; /* --user-prefix: user name = prefix + index */
    char **passwords;        /* --pass-file: password of client i = passwords[i] */
    uint32_t npasswords;
    uint32_t inflight;   /* unacknowledged QoS 1/2 per publisher */
    uint32_t e2e_window; /* pubsub flat out: messages per publisher sent, not yet received */
    double duration, warmup, drain;
    double conn_timeout;  /* one connection: TCP + CONNACK (+ SUBACK) */
    double setup_timeout; /* the whole connect phase */
    uint64_t limit;       /* messages per publisher, 0 = unlimited */
    uint64_t expect;      /* sub: stop once this many were received */
    const char *prefix;
    int json;
    int quiet;
    uint32_t procs;
    int reconnect;
    double backoff_base, backoff_min, backoff_max;
    uint32_t backoff_steps;
    int backoff_jitter;
    int until_recovered;
    const char *ready_file;
    int broker_pid;
    const char *broker_pidfile;
    int tls;                        /* --tls: every connection is MQTT over TLS */
    int tls_resume;                 /* --tls-resume: reuse one session per process */
    const char *cafile;             /* --cafile: verify the broker's chain against it */
    const char *certfile, *keyfile; /* --cert/--key: client certificate */
    int ws;                         /* --ws: MQTT over WebSocket (wss with --tls) */
    const char *ws_path;            /* --ws-path: the upgrade request's path (/mqtt) */
} bench_opts_t;

extern bench_opts_t g_opt;

/* ---- statistics ----------------------------------------------------------- */

/* Counters: summed over processes.  Gauges (connected, ready, inflight) are
 * sums of current values. */
#define BENCH_COUNTERS(X)                                                                          \
    X(clients)      /* clients run by this process */                                              \
    X(connected)    /* gauge: CONNACK accepted and not dropped since */                            \
    X(ready)        /* gauge: connected and (subscribers) subscribed */                            \
    X(conn_started) /* TCP connects attempted */                                                   \
    X(conn_ok)      /* CONNACK accepted */                                                         \
    X(conn_fail)    /* failed attempts: TCP error, refusal, timeout */                             \
    X(conn_refused) /* CONNACK with a non-zero return code */                                      \
    X(conn_timeout) /* no CONNACK/SUBACK within --conn-timeout */                                  \
    X(drops)        /* established connections lost */                                             \
    X(reconnects)   /* CONNACKs after a drop */                                                    \
    X(sub_ok)                                                                                      \
    X(sub_fail)                                                                                    \
    X(pub_sent)      /* PUBLISH written, whole run */                                              \
    X(pub_sent_meas) /* ... inside the measured window */                                          \
    X(pub_acked)     /* PUBACK / PUBCOMP received */                                               \
    X(pub_inflight)  /* gauge */                                                                   \
    X(pub_missed)    /* paced sends given up (generator or broker behind) */                       \
    X(recv)          /* PUBLISH received, whole run */                                             \
    X(recv_meas)     /* ... inside the measured window */                                          \
    X(tracked)       /* received with a bench header (>= 16-byte payload) */                       \
    X(distinct)      /* tracked, first copy of (publisher, seq) */                                 \
    X(dup)           /* tracked, already seen */                                                   \
    X(reordered)     /* tracked, arrived after a later sequence number */                          \
    X(late)          /* tracked, too old for the window: dup or reordered */                       \
    X(gaps)          /* sequence numbers skipped, per pair (sub mode loss) */                      \
    X(pings)                                                                                       \
    X(errors)      /* protocol errors, unexpected packets, write errors */                         \
    X(tls_ok)      /* TLS handshakes completed */                                                  \
    X(tls_resumed) /* ... of which resumed a session (SSL_session_reused) */                       \
    X(tls_fail)    /* TLS handshakes failed (in conn_fail too) */                                  \
    X(bytes_in)    /* MQTT bytes (plaintext with --tls) */                                         \
    X(bytes_out)

#define BENCH_TIMES(X)                                                                             \
    X(first_conn, MIN) /* first connect started */                                                 \
    X(setup_done, MAX) /* last CONNACK/SUBACK of the connect phase */                              \
    X(first_drop, MIN) /* first established connection lost */                                     \
    X(all_back, MAX)   /* every client connected again after drops */                              \
    X(sub_sent, MIN)   /* first SUBSCRIBE written */                                               \
    X(first_recv, MIN)                                                                             \
    X(last_recv, MAX)                                                                              \
    X(expect_at, MAX) /* local receive count reached --expect */                                   \
    X(pubs_done, MAX) /* every publisher sent --limit and got its acks */                          \
    X(run_end, MAX)   /* publishing stopped (end, STOP, --limit, --expect) */

enum {
#define X(n) C_##n,
    BENCH_COUNTERS(X)
#undef X
        C_COUNT
};
enum {
#define X(n, a) T_##n,
    BENCH_TIMES(X)
#undef X
        T_COUNT
};

typedef struct {
    uint64_t c[C_COUNT];
    uint64_t t[T_COUNT]; /* CLOCK_MONOTONIC ns, 0 = never */
} bench_stats_t;

extern const char *const bench_counter_names[C_COUNT];
extern const char *const bench_time_names[T_COUNT];
extern const int bench_time_is_max[T_COUNT];

/* ---- histogram (bench_hist.c) --------------------------------------------- */

/* Values in ns.  Below 256 exact; above, 128 linear sub-buckets per power of
 * two (bucket width <= 1/128 of the value: ~0.4 % error with the midpoint),
 * up to 2^37 ns (137 s); larger values land in the last bucket. */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 37
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS - 1) * HIST_SUB)

typedef struct {
    uint64_t n, min, max;
    double sum;
    uint64_t counts[HIST_BUCKETS];
} bench_hist_t;

void hist_init(bench_hist_t *h);
void hist_record(bench_hist_t *h, uint64_t v);
void hist_merge(bench_hist_t *dst, const bench_hist_t *src);
/* Value at percentile p (0..100), ns; 0 when empty. */
uint64_t hist_pct(const bench_hist_t *h, double p);
double hist_mean(const bench_hist_t *h);

/* ---- tracking (bench_track.c) --------------------------------------------- */

/* Per subscriber: one entry per publisher heard from (open addressing). */
typedef struct {
    uint32_t pub;   /* publisher index + 1; 0 = empty slot */
    uint32_t next;  /* highest sequence number seen + 1 */
    uint32_t count; /* distinct sequence numbers seen */
    uint32_t pad;
    uint64_t win; /* bit i: sequence number next-1-i seen */
} bench_pair_t;

typedef struct {
    bench_pair_t *slots;
    uint32_t cap, n;
    uint32_t last; /* slot of the last lookup: consecutive messages often share it */
} bench_pairs_t;

/* Record (pub, seq) for one subscriber; updates distinct/dup/reordered/late/
 * gaps in st. */
void track_record(bench_pairs_t *t, uint32_t pub, uint32_t seq, bench_stats_t *st);
void track_free(bench_pairs_t *t);

/* Expand %i (index), %c (client id) and, when n is not NULL, %n (message
 * number) into out (size bytes).  Returns the length, or -1 if too long. */
int tmpl_expand(const char *tmpl, uint32_t idx, const char *client_id, const uint64_t *n, char *out,
                size_t size);
/* MQTT topic matching: filter with + and #, topic name. */
int topic_matches(const char *filter, size_t flen, const char *topic, size_t tlen);
/* Deliveries expected: sum over publishers p of sent[p] times the number of
 * subscribers whose filter matches p's topic.  Returns -1 when it cannot be
 * computed (per-message topics). */
int64_t track_expected(const uint64_t *sent, uint32_t npub, uint32_t nsub);
void client_id_for(int role, uint32_t idx, char *out, size_t size);

/* ---- TLS (bench_tls.c) ----------------------------------------------------- */

/* Parent, before forking: the client SSL_CTX from --cafile/--cert/--key;
 * exits 2 with OpenSSL's reason when a file is unusable.  No-op without --tls. */
void btls_setup(void);

/* ---- worker (bench_worker.c) ---------------------------------------------- */

/* What a worker process runs: index ranges per role. */
typedef struct {
    uint32_t id;
    uint32_t conn_first, nconn;
    uint32_t pub_first, npub;
    uint32_t sub_first, nsub;
    double share;      /* this worker's fraction of rates and pending handshakes */
    uint64_t t_origin; /* the parent's start: TICKs are aligned to its seconds */
} bench_split_t;

/* Runs the worker's loop; never returns (exits the process). */
void worker_main(const bench_split_t *sp, int rep_fd, int ctl_fd);

/* ---- pipe protocol and report (bench_report.c) ---------------------------- */

enum { MSG_READY = 1, MSG_TICK, MSG_FINAL }; /* worker -> parent */
enum { CTL_GO = 1, CTL_STOP };               /* parent -> worker */

typedef struct {
    uint32_t type;
    uint32_t len; /* bytes after this header */
} bench_msg_hdr_t;

typedef struct {
    uint32_t type;
    uint32_t pad;
    uint64_t t0; /* GO: common origin (CLOCK_MONOTONIC ns) */
} bench_ctl_t;

/* FINAL: header, stats, the three histograms, npub, sent[npub]. */
typedef struct {
    bench_stats_t st;
    bench_hist_t lat;   /* publish -> receive */
    bench_hist_t conn;  /* connect start -> first CONNACK of each client */
    bench_hist_t recon; /* drop -> connected again */
    uint32_t npub;
    uint32_t pad;
} bench_final_t;

/* Write all of buf (blocking); returns 0 or -1. */
int write_all(int fd, const void *buf, size_t len);
int send_msg(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen);

void stats_zero(bench_stats_t *s);
void stats_merge(bench_stats_t *dst, const bench_stats_t *src);

/* Broker /proc sampling. */
typedef struct {
    int pid;
    uint64_t cpu_ticks; /* utime + stime */
    uint64_t rss_kb;
    int ok;
} bench_proc_t;
int proc_sample(int pid, bench_proc_t *out);
int broker_pid_now(void); /* --broker-pid, or read --broker-pidfile; 0 = none */
long clock_ticks(void);

/* The results the parent prints. */
typedef struct {
    bench_stats_t st;
    bench_hist_t lat, conn, recon;
    uint32_t procs;
    uint64_t t0, t_meas, t_end_meas;
    int64_t expected; /* pubsub: deliveries expected, -1 unknown */
    /* broker figures (0/-1 when not sampled) */
    int broker_pid;
    double broker_cpu_meas_s;   /* over the measured window */
    double broker_cpu_setup_s;  /* over the connect phase */
    double broker_cpu_run_s;    /* from GO to the end (storms) */
    double broker_peak_cpu_pct; /* highest one-second sample */
    uint64_t broker_rss_start_kb, broker_rss_end_kb, broker_rss_peak_kb;
    double setup_s;         /* first connect -> last CONNACK/SUBACK */
    uint64_t setup_conn_ok; /* CONNACKs in the connect phase */
    int killed_workers;
} bench_result_t;

void report_summary(FILE *out, const bench_result_t *r);
void report_json(FILE *out, const bench_result_t *r);

/* antenna-bench device ...: argv[0] is "device"; the exit status. */
int bench_device_main(int argc, char **argv);

#endif
