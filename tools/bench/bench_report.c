/* bench_report.c -- the pipe protocol, aggregation, the summary and the JSON
 * line, and sampling the broker's /proc entries.
 *
 * Pipe protocol: each worker process has its own pipe to the parent (so no
 * two writers interleave) and writes messages of a fixed header (type,
 * length) and a body that is a plain struct: parent and workers are the same
 * binary, forked, so the layout is shared.  Counters travel cumulative, so a
 * late or lost TICK only delays the progress line.
 *
 * Broker figures: utime + stime from /proc/PID/stat (all threads, in clock
 * ticks, 10 ms here) and VmRSS from /proc/PID/status, sampled by the parent
 * at the edges of the measured window and once a second (peak CPU).  With
 * --broker-pidfile the PID is read again at every sample, so a broker that
 * is killed and restarted during a run (the storm scenario) keeps being
 * measured; CPU of the earlier process is carried over.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

const char *const bench_counter_names[C_COUNT] = {
#define X(n) #n,
    BENCH_COUNTERS(X)
#undef X
};
const char *const bench_time_names[T_COUNT] = {
#define X(n, a) #n,
    BENCH_TIMES(X)
#undef X
};
#define MIN 0
#define MAX 1
const int bench_time_is_max[T_COUNT] = {
#define X(n, a) a,
    BENCH_TIMES(X)
#undef X
};
#undef MIN
#undef MAX

int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int send_msg(int fd, uint32_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    bench_msg_hdr_t h = {.type = type, .len = (uint32_t)(alen + blen)};
    if (write_all(fd, &h, sizeof(h)) < 0)
        return -1;
    if (alen && write_all(fd, a, alen) < 0)
        return -1;
    if (blen && write_all(fd, b, blen) < 0)
        return -1;
    return 0;
}

void stats_zero(bench_stats_t *s)
{
    memset(s, 0, sizeof(*s));
}

void stats_merge(bench_stats_t *dst, const bench_stats_t *src)
{
    for (int i = 0; i < C_COUNT; i++)
        dst->c[i] += src->c[i];
    for (int i = 0; i < T_COUNT; i++) {
        uint64_t v = src->t[i];
        if (!v)
            continue;
        if (!dst->t[i] || (bench_time_is_max[i] ? v > dst->t[i] : v < dst->t[i]))
            dst->t[i] = v;
    }
}

/* ---- /proc ------------------------------------------------------------------- */

long clock_ticks(void)
{
    static long hz;
    if (!hz) {
        hz = sysconf(_SC_CLK_TCK);
        if (hz <= 0)
            hz = 100;
    }
    return hz;
}

int proc_sample(int pid, bench_proc_t *out)
{
    char path[64], buf[4096];
    memset(out, 0, sizeof(*out));
    out->pid = pid;
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    unsigned long long ut = 0, st = 0;
    char state;
    if (sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ut, &st) !=
        3)
        return -1;
    if (state == 'Z' || state == 'X')
        return -1;
    out->cpu_ticks = ut + st;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof(line), f)) {
            unsigned long long kb;
            if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
                out->rss_kb = kb;
                break;
            }
        }
        fclose(f);
    }
    out->ok = 1;
    return 0;
}

int broker_pid_now(void)
{
    if (g_opt.broker_pidfile) {
        FILE *f = fopen(g_opt.broker_pidfile, "r");
        int pid = 0;
        if (f) {
            if (fscanf(f, "%d", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        return pid;
    }
    return g_opt.broker_pid;
}

/* ---- summary -------------------------------------------------------------------- */

static const char *mode_name(int m)
{
    static const char *const n[] = {"conn", "pub", "sub", "pubsub"};
    return n[m];
}

static double secs(uint64_t a, uint64_t b)
{
    return (b > a) ? (double)(b - a) / 1e9 : 0.0;
}

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

/* Derived figures, shared by both outputs. */
typedef struct {
    double meas_s, setup_s, connect_rate;
    double sent_rate, recv_rate;
    int64_t lost;      /* -1 unknown */
    double recovery_s; /* -1: no drop; -2: not all back */
    double expect_s;
    double cpu_us_per_msg, cpu_us_per_connect, cpu_pct;
    uint64_t delivered_meas;
} derived_t;

static void derive(const bench_result_t *r, derived_t *d)
{
    const bench_stats_t *s = &r->st;
    memset(d, 0, sizeof(*d));
    d->meas_s = secs(r->t_meas, r->t_end_meas);
    d->setup_s = r->setup_s;
    d->connect_rate = d->setup_s > 0 ? (double)r->setup_conn_ok / d->setup_s : 0;
    d->sent_rate = d->meas_s > 0 ? (double)s->c[C_pub_sent_meas] / d->meas_s : 0;
    d->recv_rate = d->meas_s > 0 ? (double)s->c[C_recv_meas] / d->meas_s : 0;
    d->lost = -1;
    if (r->expected >= 0) {
        int64_t l = r->expected - (int64_t)s->c[C_distinct];
        d->lost = l > 0 ? l : 0;
    }
    d->recovery_s = -1;
    if (s->t[T_first_drop]) {
        if (s->c[C_connected] == s->c[C_clients] && s->t[T_all_back] > s->t[T_first_drop])
            d->recovery_s = secs(s->t[T_first_drop], s->t[T_all_back]);
        else
            d->recovery_s = -2;
    }
    d->expect_s = -1;
    if (g_opt.expect && s->c[C_recv] >= g_opt.expect && s->t[T_sub_sent])
        d->expect_s = secs(s->t[T_sub_sent], s->t[T_last_recv]);
    d->delivered_meas = s->c[C_recv_meas] ? s->c[C_recv_meas] : s->c[C_pub_sent_meas];
    d->cpu_us_per_msg =
        d->delivered_meas ? r->broker_cpu_meas_s * 1e6 / (double)d->delivered_meas : 0;
    d->cpu_us_per_connect =
        r->setup_conn_ok ? r->broker_cpu_setup_s * 1e6 / (double)r->setup_conn_ok : 0;
    d->cpu_pct = d->meas_s > 0 ? 100.0 * r->broker_cpu_meas_s / d->meas_s : 0;
}

static void fmt_lat(char *out, size_t size, uint64_t ns)
{
    if (ns < 1000000)
        snprintf(out, size, "%.1f us", us(ns));
    else if (ns < 1000000000ull)
        snprintf(out, size, "%.2f ms", (double)ns / 1e6);
    else
        snprintf(out, size, "%.3f s", (double)ns / 1e9);
}

static void print_hist(FILE *out, const char *name, const bench_hist_t *h)
{
    char a[32], b[32], c[32], d[32], e[32];
    fmt_lat(a, sizeof(a), hist_pct(h, 50));
    fmt_lat(b, sizeof(b), hist_pct(h, 90));
    fmt_lat(c, sizeof(c), hist_pct(h, 99));
    fmt_lat(d, sizeof(d), hist_pct(h, 99.9));
    fmt_lat(e, sizeof(e), h->max);
    fprintf(out, "  %-10s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%llu)\n", name, a, b, c, d,
            e, (unsigned long long)h->n);
}

void report_summary(FILE *out, const bench_result_t *r)
{
    const bench_stats_t *s = &r->st;
    derived_t d;
    derive(r, &d);
    fprintf(out, "\n== antenna-bench %s: ", mode_name(g_opt.mode));
    char rate[64];
    if (g_opt.rate > 0)
        snprintf(rate, sizeof(rate), "%.0f msg/s", g_opt.rate);
    else if (g_opt.e2e_window)
        snprintf(rate, sizeof(rate), "flat out, %u in flight end to end per publisher",
                 g_opt.e2e_window);
    else
        snprintf(rate, sizeof(rate), "flat out");
    switch (g_opt.mode) {
    case MODE_CONN:
        fprintf(out, "%u connections%s", g_opt.count, g_opt.reconnect ? " with --reconnect" : "");
        break;
    case MODE_PUB:
        fprintf(out, "%u publishers -> %s, QoS %u, %u B, %s", g_opt.pub_count, g_opt.topic.text,
                g_opt.qos, g_opt.size, rate);
        break;
    case MODE_SUB:
        fprintf(out, "%u subscribers on %s, QoS %u", g_opt.sub_count, g_opt.sub_topic.text,
                g_opt.sub_qos);
        break;
    default:
        fprintf(out, "%u pub (%s) -> %u sub (%s), QoS %u/%u, %u B, %s", g_opt.pub_count,
                g_opt.topic.text, g_opt.sub_count, g_opt.sub_topic.text, g_opt.qos, g_opt.sub_qos,
                g_opt.size, rate);
        break;
    }
    fprintf(out, ", %u process%s\n", r->procs, r->procs > 1 ? "es" : "");
    fprintf(out,
            "connect:   %llu/%llu connected in %.3f s (%.0f connects/s), %llu failed "
            "attempts (%llu refused, %llu timed out)\n",
            (unsigned long long)r->setup_conn_ok, (unsigned long long)s->c[C_clients], d.setup_s,
            d.connect_rate, (unsigned long long)s->c[C_conn_fail],
            (unsigned long long)s->c[C_conn_refused], (unsigned long long)s->c[C_conn_timeout]);
    if (g_opt.tls)
        fprintf(out,
                "tls:       %llu handshakes completed, %llu resumed (%.1f %%), %llu failed%s%s\n",
                (unsigned long long)s->c[C_tls_ok], (unsigned long long)s->c[C_tls_resumed],
                s->c[C_tls_ok] ? 100.0 * (double)s->c[C_tls_resumed] / (double)s->c[C_tls_ok] : 0.0,
                (unsigned long long)s->c[C_tls_fail], g_opt.tls_resume ? ", --tls-resume" : "",
                g_opt.cafile ? ", server verified" : ", server not verified");
    if (r->conn.n)
        print_hist(out, "connect", &r->conn);
    fprintf(out, "measured:  %.2f s (after %.1f s warm-up)\n", d.meas_s, g_opt.warmup);
    if (g_opt.mode != MODE_CONN) {
        fprintf(out,
                "  sent      %llu in window (%.0f msg/s), %llu total, %llu acked, %llu paced "
                "sends missed\n",
                (unsigned long long)s->c[C_pub_sent_meas], d.sent_rate,
                (unsigned long long)s->c[C_pub_sent], (unsigned long long)s->c[C_pub_acked],
                (unsigned long long)s->c[C_pub_missed]);
        if (g_opt.mode == MODE_PUB && s->c[C_recv] == 0)
            goto after_recv;
        fprintf(out, "  received  %llu in window (%.0f msg/s), %llu total\n",
                (unsigned long long)s->c[C_recv_meas], d.recv_rate,
                (unsigned long long)s->c[C_recv]);
        if (d.lost >= 0)
            fprintf(out,
                    "  expected  %lld deliveries: %llu distinct, lost %lld, duplicated %llu, "
                    "reordered %llu, late %llu\n",
                    (long long)r->expected, (unsigned long long)s->c[C_distinct], (long long)d.lost,
                    (unsigned long long)s->c[C_dup], (unsigned long long)s->c[C_reordered],
                    (unsigned long long)s->c[C_late]);
        else
            fprintf(out,
                    "  tracked   %llu: %llu distinct, sequence gaps %llu, duplicated %llu, "
                    "reordered %llu, late %llu\n",
                    (unsigned long long)s->c[C_tracked], (unsigned long long)s->c[C_distinct],
                    (unsigned long long)s->c[C_gaps], (unsigned long long)s->c[C_dup],
                    (unsigned long long)s->c[C_reordered], (unsigned long long)s->c[C_late]);
        if (r->lat.n)
            print_hist(out, "latency", &r->lat);
    after_recv:
        if (d.expect_s >= 0)
            fprintf(out, "  expect    %llu messages received %.3f s after the first SUBSCRIBE\n",
                    (unsigned long long)g_opt.expect, d.expect_s);
    }
    if (s->c[C_drops] || g_opt.reconnect) {
        fprintf(out, "drops:     %llu dropped, %llu reconnected, %llu connected at the end of %llu",
                (unsigned long long)s->c[C_drops], (unsigned long long)s->c[C_reconnects],
                (unsigned long long)s->c[C_connected], (unsigned long long)s->c[C_clients]);
        if (d.recovery_s >= 0)
            fprintf(out, "; all back %.3f s after the first drop\n", d.recovery_s);
        else if (d.recovery_s == -2 && g_opt.reconnect)
            fprintf(out, "; NOT all back by the end\n");
        else
            fprintf(out, "\n");
        if (r->recon.n)
            print_hist(out, "reconnect", &r->recon);
    }
    if (r->broker_pid) {
        fprintf(out, "broker:    pid %d, CPU %.2f s in the window (%.1f %% of a core)",
                r->broker_pid, r->broker_cpu_meas_s, d.cpu_pct);
        if (d.delivered_meas && g_opt.mode != MODE_CONN)
            fprintf(out, ", %.2f us per delivered message", d.cpu_us_per_msg);
        fprintf(
            out,
            "\n           CPU %.2f s during the connect phase (%.1f us per CONNECT), peak %.0f %% "
            "after GO (1-s samples)\n           RSS %.1f MB at the start of the window, %.1f MB at "
            "the "
            "end, %.1f MB peak\n",
            r->broker_cpu_setup_s, d.cpu_us_per_connect, r->broker_peak_cpu_pct,
            (double)r->broker_rss_start_kb / 1024, (double)r->broker_rss_end_kb / 1024,
            (double)r->broker_rss_peak_kb / 1024);
    }
    fprintf(out, "errors:    %llu protocol/IO errors, %llu pings%s\n",
            (unsigned long long)s->c[C_errors], (unsigned long long)s->c[C_pings],
            r->killed_workers ? ", WORKER PROCESSES LOST (killed or died before their final report)"
                              : "");
}

void report_json(FILE *out, const bench_result_t *r)
{
    const bench_stats_t *s = &r->st;
    derived_t d;
    derive(r, &d);
    fprintf(out,
            "{\"mode\":\"%s\",\"procs\":%u,\"clients\":%llu,\"pubs\":%u,\"subs\":%u,"
            "\"qos\":%u,\"sub_qos\":%u,\"size\":%u,\"rate_target\":%.0f,"
            "\"duration_s\":%.3f,\"warmup_s\":%.3f,",
            mode_name(g_opt.mode), r->procs, (unsigned long long)s->c[C_clients],
            g_opt.mode == MODE_SUB || g_opt.mode == MODE_CONN ? 0 : g_opt.pub_count,
            g_opt.mode == MODE_PUB || g_opt.mode == MODE_CONN ? 0 : g_opt.sub_count, g_opt.qos,
            g_opt.sub_qos, g_opt.size, g_opt.rate, d.meas_s, g_opt.warmup);
    fprintf(out,
            "\"conn_ok\":%llu,\"conn_fail\":%llu,\"conn_refused\":%llu,\"conn_timeout\":%llu,"
            "\"setup_s\":%.4f,\"connect_rate\":%.1f,\"conn_p50_us\":%.1f,"
            "\"conn_p99_us\":%.1f,\"conn_max_us\":%.1f,",
            (unsigned long long)r->setup_conn_ok, (unsigned long long)s->c[C_conn_fail],
            (unsigned long long)s->c[C_conn_refused], (unsigned long long)s->c[C_conn_timeout],
            d.setup_s, d.connect_rate, us(hist_pct(&r->conn, 50)), us(hist_pct(&r->conn, 99)),
            us(r->conn.max));
    fprintf(out,
            "\"tls\":%d,\"tls_resume\":%d,\"tls_handshakes\":%llu,\"tls_resumed\":%llu,"
            "\"tls_fail\":%llu,",
            g_opt.tls, g_opt.tls_resume, (unsigned long long)s->c[C_tls_ok],
            (unsigned long long)s->c[C_tls_resumed], (unsigned long long)s->c[C_tls_fail]);
    fprintf(out,
            "\"sent\":%llu,\"sent_meas\":%llu,\"sent_rate\":%.1f,\"acked\":%llu,"
            "\"missed\":%llu,\"recv\":%llu,\"recv_meas\":%llu,\"recv_rate\":%.1f,"
            "\"expected\":%lld,\"distinct\":%llu,\"lost\":%lld,\"dup\":%llu,"
            "\"reordered\":%llu,\"late\":%llu,\"gaps\":%llu,",
            (unsigned long long)s->c[C_pub_sent], (unsigned long long)s->c[C_pub_sent_meas],
            d.sent_rate, (unsigned long long)s->c[C_pub_acked],
            (unsigned long long)s->c[C_pub_missed], (unsigned long long)s->c[C_recv],
            (unsigned long long)s->c[C_recv_meas], d.recv_rate, (long long)r->expected,
            (unsigned long long)s->c[C_distinct], (long long)d.lost,
            (unsigned long long)s->c[C_dup], (unsigned long long)s->c[C_reordered],
            (unsigned long long)s->c[C_late], (unsigned long long)s->c[C_gaps]);
    fprintf(out,
            "\"lat_n\":%llu,\"lat_p50_us\":%.1f,\"lat_p90_us\":%.1f,\"lat_p99_us\":%.1f,"
            "\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,\"lat_mean_us\":%.1f,",
            (unsigned long long)r->lat.n, us(hist_pct(&r->lat, 50)), us(hist_pct(&r->lat, 90)),
            us(hist_pct(&r->lat, 99)), us(hist_pct(&r->lat, 99.9)), us(r->lat.max),
            hist_mean(&r->lat) / 1e3);
    fprintf(out,
            "\"expect_s\":%.4f,\"drops\":%llu,\"reconnects\":%llu,\"connected_end\":%llu,"
            "\"recovery_s\":%.3f,\"recon_p50_ms\":%.1f,\"recon_p99_ms\":%.1f,"
            "\"recon_max_ms\":%.1f,",
            d.expect_s, (unsigned long long)s->c[C_drops], (unsigned long long)s->c[C_reconnects],
            (unsigned long long)s->c[C_connected], d.recovery_s,
            (double)hist_pct(&r->recon, 50) / 1e6, (double)hist_pct(&r->recon, 99) / 1e6,
            (double)r->recon.max / 1e6);
    fprintf(out,
            "\"broker_pid\":%d,\"broker_cpu_s\":%.3f,\"broker_cpu_pct\":%.1f,"
            "\"broker_cpu_us_per_msg\":%.3f,\"broker_cpu_setup_s\":%.3f,"
            "\"broker_cpu_us_per_connect\":%.2f,\"broker_cpu_run_s\":%.3f,"
            "\"broker_peak_cpu_pct\":%.1f,\"broker_rss_start_kb\":%llu,"
            "\"broker_rss_end_kb\":%llu,\"broker_rss_peak_kb\":%llu,",
            r->broker_pid, r->broker_cpu_meas_s, d.cpu_pct, d.cpu_us_per_msg, r->broker_cpu_setup_s,
            d.cpu_us_per_connect, r->broker_cpu_run_s, r->broker_peak_cpu_pct,
            (unsigned long long)r->broker_rss_start_kb, (unsigned long long)r->broker_rss_end_kb,
            (unsigned long long)r->broker_rss_peak_kb);
    fprintf(out, "\"errors\":%llu,\"pings\":%llu,\"killed_workers\":%d}\n",
            (unsigned long long)s->c[C_errors], (unsigned long long)s->c[C_pings],
            r->killed_workers);
    fflush(out);
}
