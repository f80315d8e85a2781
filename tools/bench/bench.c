/* bench.c -- antenna-bench: options, the split into worker processes, and the
 * parent's loop (barrier, progress, broker sampling, aggregation).
 *
 *   antenna-bench conn|pub|sub|pubsub [options]      (--help lists them)
 *
 * Design: the parent never opens an MQTT connection.  It splits the clients
 * of each role into contiguous index ranges over N worker processes, N being
 * the smallest number that keeps every process under its open-file limit
 * (RLIMIT_NOFILE soft limit minus a reserve of 1,500 descriptors) unless
 * --procs asks for more, and forks them.  Each worker connects its clients
 * and reports READY; when all have, the parent writes --ready-file and sends
 * GO with one CLOCK_MONOTONIC origin, so publishing starts together and the
 * warm-up and measured windows are the same in every process.  While they
 * run it reads their cumulative TICKs, prints a progress line to stderr each
 * second, samples the broker's /proc (--broker-pid/--broker-pidfile), and
 * sends STOP on ^C, on --expect reached, or on --until-recovered.  At the end
 * it merges their FINALs (counters, histograms, per-publisher sent counts),
 * computes the expected deliveries by topic matching (pubsub), and prints the
 * summary (stdout, or stderr with --json) and one JSON line (stdout).
 * Every wait is bounded: a worker that does not report in time is killed and
 * the summary says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "util.h"

bench_opts_t g_opt;

#define FD_RESERVE 1500
#define MAX_PROCS 256

static volatile sig_atomic_t g_signalled;

static void on_signal(int sig)
{
    (void)sig;
    g_signalled = 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: antenna-bench conn|pub|sub|pubsub [options]\n"
        "       antenna-bench device -p PORT [-n N] ...   (devices answering commands;\n"
        "                                                   device --help)\n"
        "\n"
        "Modes:\n"
        "  conn     open and hold --count connections (connect rate, failures)\n"
        "  pub      --count publishers      sub   --count subscribers\n"
        "  pubsub   --pub-count publishers and --sub-count subscribers in one run:\n"
        "           latency, loss, duplicates and reordering per publisher/subscriber\n"
        "\n"
        "Connections:\n"
        "  -h, --host LIST         broker host(s), comma-separated, round-robin (127.0.0.1)\n"
        "  -p, --port LIST         broker port(s), comma-separated, round-robin (1883)\n"
        "  -c, --count N           clients (conn), or publishers and subscribers (10)\n"
        "      --pub-count N       publishers (pub, pubsub; default --count)\n"
        "      --sub-count N       subscribers (sub, pubsub; default --count)\n"
        "  -R, --conn-rate N       new connections per second, 0 = as fast as allowed (0)\n"
        "      --conn-pending N    handshakes in progress at once, all processes (1000)\n"
        "      --ifaddr LIST       bind source addresses round-robin (127.0.0.2,127.0.0.3)\n"
        "  -V, --mqtt-version V    3 (3.1) or 4 (3.1.1) (4); 5 is not supported yet\n"
        "  -C, --clean 0|1         clean session (1)\n"
        "  -k, --keepalive S       keepalive seconds, PINGREQ when idle (60)\n"
        "  -u, --username U        -P, --password P\n"
        "      --client-prefix S   client ids are S + c|p|s + index (bench_)\n"
        "      --user-prefix S     user name S + index per client (instead of -u)\n"
        "      --pass-file F       password per client: line index + 1 of F (instead of -P)\n"
        "      --conn-timeout S    TCP + CONNACK (+ SUBACK) deadline per attempt (10)\n"
        "      --setup-timeout S   the whole connect phase (60)\n"
        "      --tls               MQTT over TLS (OpenSSL; TLS 1.2 or later)\n"
        "      --cafile F          verify the broker's certificate chain against F\n"
        "                          (default: no verification)\n"
        "      --cert F --key F    present a client certificate (PEM)\n"
        "      --tls-resume        implies --tls: each process keeps the latest session\n"
        "                          and resumes it on new connections (full handshakes\n"
        "                          until the first ticket arrives)\n"
        "      --ws                MQTT over WebSocket (HTTP/1.1 upgrade, subprotocol mqtt,\n"
        "                          masked binary frames); with --tls: wss\n"
        "      --ws-path P         the upgrade request's path (/mqtt)\n"
        "\n"
        "Messages:\n"
        "  -q, --qos 0|1|2         publish QoS (0)\n"
        "      --sub-qos 0|1|2     subscription QoS (default --qos)\n"
        "  -s, --size N            payload bytes, >= 16 for pubsub (256)\n"
        "  -r, --rate N            aggregate messages/s paced by the clock, 0 = flat out (0)\n"
        "  -t, --topic T           publish topic; %%i client index, %%c client id,\n"
        "                          %%n message number (bench/%%i)\n"
        "      --sub-topic T       subscription filter, %%i and %%c expanded (default --topic)\n"
        "      --extra-sub F       sub: also subscribe to F (as is) in the same SUBSCRIBE,\n"
        "                          e.g. a broadcast topic; its messages are counted\n"
        "  -F, --inflight N        unacknowledged QoS 1/2 messages per publisher (100)\n"
        "      --e2e-window N      pubsub flat out (one process): at most N messages per\n"
        "                          publisher sent and not yet received, any QoS (0 = off:\n"
        "                          open-loop flood as fast as TCP takes it)\n"
        "  -L, --limit N           messages per publisher, then stop (0 = no limit)\n"
        "      --retain            publish with the retain flag\n"
        "      --expect N          sub: stop once N messages were received (time reported)\n"
        "\n"
        "Run:\n"
        "  -d, --duration S        measured seconds after the warm-up (10)\n"
        "  -w, --warmup S          seconds excluded from the statistics (0)\n"
        "      --drain S           at most this long for late messages and acks (5)\n"
        "      --procs N           worker processes (default: as the open-file limit needs)\n"
        "      --json              print one JSON line to stdout (summary goes to stderr)\n"
        "      --quiet             no progress lines\n"
        "      --ready-file F      write F when every client is connected (for scripts)\n"
        "      --broker-pid P      sample the broker's CPU and RSS from /proc\n"
        "      --broker-pidfile F  the same, PID read from F at every sample (restarts)\n"
        "\n"
        "Device simulation (conn mode):\n"
        "      --reconnect         reconnect dropped clients with backoff: first retry at\n"
        "                          once, then --backoff-steps steps of --backoff-base x 2^k\n"
        "                          (full jitter), then uniform in [--backoff-min, -max]\n"
        "      --backoff-base S (1)  --backoff-steps N (2)  --backoff-min S (5)\n"
        "      --backoff-max S (15)  --backoff-jitter 0|1 (1)\n"
        "      --until-recovered   end the run once every client is back after a drop\n"
        "\n"
        "  --help                  this text\n");
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "antenna-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

/* --pass-file: one password per line, client i takes line i + 1 (read
 * before the processes fork: every process sees the whole list). */
static void load_pass_file(bench_opts_t *o, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, n = 0, vcap = 0;
    ssize_t got;
    if (f == NULL)
        die("--pass-file: cannot open %s", path);
    while ((got = getline(&line, &cap, f)) >= 0) {
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (n == vcap) {
            vcap = vcap ? 2 * vcap : 1024;
            o->passwords = an_realloc(o->passwords, vcap * sizeof(*o->passwords));
        }
        o->passwords[n++] = an_strndup(line, (size_t)got);
    }
    free(line);
    fclose(f);
    o->npasswords = (uint32_t)n;
}

static double parse_num(const char *s, const char *opt, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "antenna-bench: bad value '%s' for %s (%g .. %g)\n", s, opt, lo, hi);
        exit(2);
    }
    return v;
}

/* Tokens point into *copy; the caller frees both. */
static char **split_list(const char *s, uint32_t *n, char **copy_out)
{
    char *copy = an_strndup(s, strlen(s));
    *copy_out = copy;
    uint32_t cap = 4, k = 0;
    char **v = an_calloc(cap, sizeof(*v));
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (k == cap) {
            cap *= 2;
            v = an_realloc(v, cap * sizeof(*v));
        }
        v[k++] = tok;
    }
    *n = k;
    return v;
}

static void resolve(const char *host, bench_addr_t *out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        die("cannot resolve '%s'", host);
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
}

static void parse_options(int argc, char **argv)
{
    enum {
        O_PUBC = 256,
        O_SUBC,
        O_PEND,
        O_IFADDR,
        O_SUBQOS,
        O_SUBTOPIC,
        O_EXTRASUB,
        O_RETAIN,
        O_EXPECT,
        O_DRAIN,
        O_CTO,
        O_STO,
        O_PREFIX,
        O_UPREFIX,
        O_PASSFILE,
        O_JSON,
        O_QUIET,
        O_PROCS,
        O_TLS,
        O_WS,
        O_WSPATH,
        O_RECONNECT,
        O_BBASE,
        O_BSTEPS,
        O_BMIN,
        O_BMAX,
        O_BJIT,
        O_UNTIL,
        O_READY,
        O_BPID,
        O_BPIDF,
        O_HELP,
        O_E2E,
        O_TLSRES,
        O_CAFILE,
        O_CERT,
        O_KEY
    };
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'c'},
        {"pub-count", required_argument, NULL, O_PUBC},
        {"sub-count", required_argument, NULL, O_SUBC},
        {"conn-rate", required_argument, NULL, 'R'},
        {"conn-pending", required_argument, NULL, O_PEND},
        {"ifaddr", required_argument, NULL, O_IFADDR},
        {"mqtt-version", required_argument, NULL, 'V'},
        {"qos", required_argument, NULL, 'q'},
        {"sub-qos", required_argument, NULL, O_SUBQOS},
        {"size", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'r'},
        {"topic", required_argument, NULL, 't'},
        {"sub-topic", required_argument, NULL, O_SUBTOPIC},
        {"extra-sub", required_argument, NULL, O_EXTRASUB},
        {"clean", required_argument, NULL, 'C'},
        {"keepalive", required_argument, NULL, 'k'},
        {"username", required_argument, NULL, 'u'},
        {"password", required_argument, NULL, 'P'},
        {"inflight", required_argument, NULL, 'F'},
        {"limit", required_argument, NULL, 'L'},
        {"e2e-window", required_argument, NULL, O_E2E},
        {"retain", no_argument, NULL, O_RETAIN},
        {"expect", required_argument, NULL, O_EXPECT},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"drain", required_argument, NULL, O_DRAIN},
        {"conn-timeout", required_argument, NULL, O_CTO},
        {"setup-timeout", required_argument, NULL, O_STO},
        {"client-prefix", required_argument, NULL, O_PREFIX},
        {"user-prefix", required_argument, NULL, O_UPREFIX},
        {"pass-file", required_argument, NULL, O_PASSFILE},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"procs", required_argument, NULL, O_PROCS},
        {"tls", no_argument, NULL, O_TLS},
        {"tls-resume", no_argument, NULL, O_TLSRES},
        {"cafile", required_argument, NULL, O_CAFILE},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"ws", no_argument, NULL, O_WS},
        {"ws-path", required_argument, NULL, O_WSPATH},
        {"reconnect", no_argument, NULL, O_RECONNECT},
        {"backoff-base", required_argument, NULL, O_BBASE},
        {"backoff-steps", required_argument, NULL, O_BSTEPS},
        {"backoff-min", required_argument, NULL, O_BMIN},
        {"backoff-max", required_argument, NULL, O_BMAX},
        {"backoff-jitter", required_argument, NULL, O_BJIT},
        {"until-recovered", no_argument, NULL, O_UNTIL},
        {"ready-file", required_argument, NULL, O_READY},
        {"broker-pid", required_argument, NULL, O_BPID},
        {"broker-pidfile", required_argument, NULL, O_BPIDF},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    bench_opts_t *o = &g_opt;
    const char *hosts = "127.0.0.1", *ports = "1883", *ifaddrs = NULL;
    long pubc = -1, subc = -1, subqos = -1;
    const char *sub_topic = NULL;
    memset(o, 0, sizeof(*o));
    o->count = 10;
    o->conn_pending = 1000;
    o->version = MQTT_PROTO_V311;
    o->clean = 1;
    o->size = 256;
    o->topic.text = "bench/%i";
    o->keepalive = 60;
    o->inflight = 100;
    o->duration = 10;
    o->drain = 5;
    o->conn_timeout = 10;
    o->setup_timeout = 60;
    o->prefix = "bench_";
    o->backoff_base = 1;
    o->backoff_steps = 2;
    o->backoff_min = 5;
    o->backoff_max = 15;
    o->backoff_jitter = 1;

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        exit(argc < 2 ? 2 : 0);
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "conn"))
        o->mode = MODE_CONN;
    else if (!strcmp(mode, "pub"))
        o->mode = MODE_PUB;
    else if (!strcmp(mode, "sub"))
        o->mode = MODE_SUB;
    else if (!strcmp(mode, "pubsub"))
        o->mode = MODE_PUBSUB;
    else
        die("unknown mode '%s' (conn, pub, sub or pubsub; --help)", mode);

    optind = 2;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h:p:c:R:V:q:s:r:t:C:k:u:P:F:L:d:w:", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            hosts = optarg;
            break;
        case 'p':
            ports = optarg;
            break;
        case 'c':
            o->count = (uint32_t)parse_num(optarg, "--count", 0, 10000000);
            break;
        case O_PUBC:
            pubc = (long)parse_num(optarg, "--pub-count", 0, 10000000);
            break;
        case O_SUBC:
            subc = (long)parse_num(optarg, "--sub-count", 0, 10000000);
            break;
        case 'R':
            o->conn_rate = parse_num(optarg, "--conn-rate", 0, 1e9);
            break;
        case O_PEND:
            o->conn_pending = (uint32_t)parse_num(optarg, "--conn-pending", 1, 1e7);
            break;
        case O_IFADDR:
            ifaddrs = optarg;
            break;
        case 'V': {
            int v = (int)parse_num(optarg, "--mqtt-version", 3, 5);
            if (v == 5)
                die("%s", "MQTT 5 (-V 5) is not supported yet");
            o->version = (uint8_t)v;
            break;
        }
        case 'q':
            o->qos = (uint8_t)parse_num(optarg, "--qos", 0, 2);
            break;
        case O_SUBQOS:
            subqos = (long)parse_num(optarg, "--sub-qos", 0, 2);
            break;
        case 's':
            o->size = (uint32_t)parse_num(optarg, "--size", 0, 256 * 1024 * 1024 - 65536);
            break;
        case 'r':
            o->rate = parse_num(optarg, "--rate", 0, 1e9);
            break;
        case 't':
            o->topic.text = optarg;
            break;
        case O_SUBTOPIC:
            sub_topic = optarg;
            break;
        case O_EXTRASUB:
            o->extra_sub = optarg;
            break;
        case 'C':
            o->clean = (uint8_t)parse_num(optarg, "--clean", 0, 1);
            break;
        case 'k':
            o->keepalive = (uint16_t)parse_num(optarg, "--keepalive", 0, 65535);
            break;
        case 'u':
            o->username = optarg;
            break;
        case 'P':
            o->password = optarg;
            break;
        case 'F':
            o->inflight = (uint32_t)parse_num(optarg, "--inflight", 1, 65535);
            break;
        case 'L':
            o->limit = (uint64_t)parse_num(optarg, "--limit", 0, 4e9);
            break;
        case O_RETAIN:
            o->retain = 1;
            break;
        case O_E2E:
            o->e2e_window = (uint32_t)parse_num(optarg, "--e2e-window", 0, 1e6);
            break;
        case O_EXPECT:
            o->expect = (uint64_t)parse_num(optarg, "--expect", 0, 1e15);
            break;
        case 'd':
            o->duration = parse_num(optarg, "--duration", 0, 1e7);
            break;
        case 'w':
            o->warmup = parse_num(optarg, "--warmup", 0, 1e7);
            break;
        case O_DRAIN:
            o->drain = parse_num(optarg, "--drain", 0, 3600);
            break;
        case O_CTO:
            o->conn_timeout = parse_num(optarg, "--conn-timeout", 0.001, 3600);
            break;
        case O_STO:
            o->setup_timeout = parse_num(optarg, "--setup-timeout", 0.001, 86400);
            break;
        case O_UPREFIX:
            o->user_prefix = optarg;
            break;
        case O_PASSFILE:
            load_pass_file(o, optarg);
            break;
        case O_PREFIX:
            o->prefix = optarg;
            break;
        case O_JSON:
            o->json = 1;
            break;
        case O_QUIET:
            o->quiet = 1;
            break;
        case O_PROCS:
            o->procs = (uint32_t)parse_num(optarg, "--procs", 1, MAX_PROCS);
            break;
        case O_TLS:
            o->tls = 1;
            break;
        case O_TLSRES:
            o->tls = o->tls_resume = 1;
            break;
        case O_CAFILE:
            o->cafile = optarg;
            break;
        case O_CERT:
            o->certfile = optarg;
            break;
        case O_KEY:
            o->keyfile = optarg;
            break;
        case O_WS:
            o->ws = 1;
            break;
        case O_WSPATH:
            o->ws_path = optarg;
            break;
        case O_RECONNECT:
            o->reconnect = 1;
            break;
        case O_BBASE:
            o->backoff_base = parse_num(optarg, "--backoff-base", 0, 3600);
            break;
        case O_BSTEPS:
            o->backoff_steps = (uint32_t)parse_num(optarg, "--backoff-steps", 0, 20);
            break;
        case O_BMIN:
            o->backoff_min = parse_num(optarg, "--backoff-min", 0, 86400);
            break;
        case O_BMAX:
            o->backoff_max = parse_num(optarg, "--backoff-max", 0, 86400);
            break;
        case O_BJIT:
            o->backoff_jitter = (int)parse_num(optarg, "--backoff-jitter", 0, 1);
            break;
        case O_UNTIL:
            o->until_recovered = 1;
            break;
        case O_READY:
            o->ready_file = optarg;
            break;
        case O_BPID:
            o->broker_pid = (int)parse_num(optarg, "--broker-pid", 1, 1e9);
            break;
        case O_BPIDF:
            o->broker_pidfile = optarg;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            die("unknown or incomplete option '%s' (--help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s'", argv[optind]);

    o->sub_qos = subqos >= 0 ? (uint8_t)subqos : o->qos;
    o->sub_topic.text = (char *)(sub_topic ? sub_topic : o->topic.text);
    if (o->extra_sub && o->mode != MODE_SUB)
        die("%s is for the sub mode (its messages are counted, not tracked)", "--extra-sub");
    if (o->extra_sub && (strlen(o->extra_sub) == 0 || strlen(o->extra_sub) > 1000))
        die("%s: 1 to 1000 bytes", "--extra-sub");
    o->topic.has_n = strstr(o->topic.text, "%n") != NULL;
    o->pub_count =
        o->mode == MODE_PUB || o->mode == MODE_PUBSUB ? (uint32_t)(pubc >= 0 ? pubc : o->count) : 0;
    o->sub_count =
        o->mode == MODE_SUB || o->mode == MODE_PUBSUB ? (uint32_t)(subc >= 0 ? subc : o->count) : 0;
    if (o->mode != MODE_CONN)
        o->count = o->pub_count + o->sub_count;
    if (o->mode == MODE_PUBSUB && o->size < 16)
        die("%s", "pubsub needs --size >= 16 (timestamp, publisher, sequence header)");
    if ((o->cafile || o->certfile || o->keyfile) && !o->tls)
        die("%s", "--cafile, --cert and --key need --tls");
    if (o->ws_path && !o->ws)
        die("%s", "--ws-path needs --ws");
    if (!o->ws_path)
        o->ws_path = "/mqtt";
    if (o->ws_path[0] != '/' || strlen(o->ws_path) > 1024 || strpbrk(o->ws_path, " \t\r\n"))
        die("bad --ws-path '%s' (an absolute path, no spaces)", o->ws_path);
    if (!o->certfile != !o->keyfile)
        die("%s", "--cert and --key go together");
    if (o->backoff_max < o->backoff_min)
        die("%s", "--backoff-max is below --backoff-min");
    if (o->version == MQTT_PROTO_V31 && strlen(o->prefix) + 11 > 23)
        fprintf(stderr,
                "antenna-bench: warning: MQTT 3.1 allows 23-byte client ids; "
                "--client-prefix '%s' may be too long\n",
                o->prefix);
    if (strpbrk(o->topic.text, "+#"))
        die("--topic '%s' contains a wildcard", o->topic.text);

    uint32_t n;
    char *copy;
    char **v = split_list(hosts, &n, &copy);
    if (!n)
        die("%s", "--host is empty");
    o->hosts = an_calloc(n, sizeof(*o->hosts));
    for (uint32_t i = 0; i < n; i++)
        resolve(v[i], &o->hosts[i]);
    o->nhosts = n;
    free(v);
    free(copy);
    v = split_list(ports, &n, &copy);
    if (!n)
        die("%s", "--port is empty");
    o->ports = an_calloc(n, sizeof(*o->ports));
    for (uint32_t i = 0; i < n; i++)
        o->ports[i] = (uint16_t)parse_num(v[i], "--port", 1, 65535);
    o->nports = n;
    free(v);
    free(copy);
    if (ifaddrs) {
        v = split_list(ifaddrs, &n, &copy);
        o->ifaddrs = an_calloc(n ? n : 1, sizeof(*o->ifaddrs));
        for (uint32_t i = 0; i < n; i++)
            resolve(v[i], &o->ifaddrs[i]);
        o->nifaddrs = n;
        free(v);
        free(copy);
    }
}

/* ---- the parent ------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int rep, ctl;
    bench_split_t sp;
    uint8_t *buf;
    size_t len, cap;
    int ready, final, eof;
    bench_stats_t last, at_ready;
    bench_final_t *fin;
    uint64_t *sent;
} child_t;

static child_t *kids;
static uint32_t nkids;

/* Broker sampling across restarts. */
static struct {
    int pid;
    uint64_t acc, last; /* ticks of earlier processes; of the current one */
    uint64_t prev_total, prev_t;
    uint64_t rss;
} bs;

static uint64_t broker_ticks(uint64_t *rss)
{
    int pid = broker_pid_now();
    if (pid != bs.pid) {
        bs.acc += bs.last;
        bs.last = 0;
        bs.pid = pid;
    }
    bench_proc_t p;
    if (pid > 0 && proc_sample(pid, &p) == 0) {
        bs.last = p.cpu_ticks;
        bs.rss = p.rss_kb;
    }
    if (rss)
        *rss = bs.rss;
    return bs.acc + bs.last;
}

static double ticks_s(uint64_t t)
{
    return (double)t / (double)clock_ticks();
}

static void send_ctl(uint32_t type, uint64_t t0)
{
    bench_ctl_t m = {.type = type, .t0 = t0};
    for (uint32_t i = 0; i < nkids; i++)
        if (kids[i].ctl >= 0 && !kids[i].eof)
            (void)write_all(kids[i].ctl, &m, sizeof(m));
}

static void split_roles(uint32_t nprocs)
{
    uint64_t total = (uint64_t)g_opt.count;
    uint32_t nconn = g_opt.mode == MODE_CONN ? g_opt.count : 0;
    for (uint32_t k = 0; k < nprocs; k++) {
        bench_split_t *s = &kids[k].sp;
        s->id = k;
#define RANGE(N, first, n)                                                                         \
    do {                                                                                           \
        uint64_t a = (uint64_t)(N)*k / nprocs, b = (uint64_t)(N) * (k + 1) / nprocs;               \
        first = (uint32_t)a;                                                                       \
        n = (uint32_t)(b - a);                                                                     \
    } while (0)
        RANGE(nconn, s->conn_first, s->nconn);
        RANGE(g_opt.pub_count, s->pub_first, s->npub);
        RANGE(g_opt.sub_count, s->sub_first, s->nsub);
#undef RANGE
        uint32_t mine = s->nconn + s->npub + s->nsub;
        s->share = total ? (double)mine / (double)total : 1.0 / nprocs;
    }
}

/* Parse complete messages in a child's buffer. */
static void child_parse(child_t *k)
{
    size_t off = 0;
    while (k->len - off >= sizeof(bench_msg_hdr_t)) {
        bench_msg_hdr_t h;
        memcpy(&h, k->buf + off, sizeof(h));
        if (k->len - off - sizeof(h) < h.len)
            break;
        const uint8_t *body = k->buf + off + sizeof(h);
        if ((h.type == MSG_READY || h.type == MSG_TICK) && h.len == sizeof(bench_stats_t)) {
            memcpy(&k->last, body, sizeof(k->last));
            if (h.type == MSG_READY && !k->ready) {
                k->ready = 1;
                k->at_ready = k->last;
            }
        } else if (h.type == MSG_FINAL && h.len >= sizeof(bench_final_t)) {
            k->fin = an_malloc(sizeof(*k->fin));
            memcpy(k->fin, body, sizeof(*k->fin));
            k->last = k->fin->st;
            size_t ns = (h.len - sizeof(bench_final_t)) / sizeof(uint64_t);
            k->sent = an_calloc(ns ? ns : 1, sizeof(uint64_t));
            memcpy(k->sent, body + sizeof(bench_final_t), ns * sizeof(uint64_t));
            k->final = 1;
            if (!k->ready) {
                k->ready = 1;
                k->at_ready = k->last;
            }
        }
        off += sizeof(h) + h.len;
    }
    if (off) {
        memmove(k->buf, k->buf + off, k->len - off);
        k->len -= off;
    }
}

static void child_read(child_t *k)
{
    for (int i = 0; i < 64; i++) {
        if (k->cap - k->len < 65536) {
            k->cap = k->cap ? k->cap * 2 : 262144;
            k->buf = an_realloc(k->buf, k->cap);
        }
        ssize_t n = read(k->rep, k->buf + k->len, k->cap - k->len);
        if (n > 0) {
            k->len += (size_t)n;
            continue;
        }
        if (n == 0)
            k->eof = 1;
        else if (errno != EAGAIN && errno != EINTR)
            k->eof = 1;
        break;
    }
    child_parse(k);
}

static void sum_last(bench_stats_t *s)
{
    stats_zero(s);
    for (uint32_t i = 0; i < nkids; i++)
        stats_merge(s, &kids[i].last);
}

static const char *phase_name(int p)
{
    static const char *const n[] = {"connect", "run", "drain"};
    return n[p];
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "device"))
        return bench_device_main(argc - 1, argv + 1);
    parse_options(argc, argv);
    btls_setup();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* How many processes the open-file limit needs. */
    struct rlimit rl;
    uint64_t fdmax = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        fdmax = rl.rlim_cur;
    else if (rl.rlim_cur == RLIM_INFINITY)
        fdmax = 1u << 20;
    uint64_t per = fdmax > 2 * FD_RESERVE ? fdmax - FD_RESERVE : fdmax / 2;
    uint64_t total = g_opt.count;
    uint32_t need = (uint32_t)((total + per - 1) / per);
    if (need < 1)
        need = 1;
    if (need > MAX_PROCS) {
        fprintf(stderr,
                "antenna-bench: %llu clients need %u processes (open-file limit %llu), "
                "more than %d\n",
                (unsigned long long)total, need, (unsigned long long)fdmax, MAX_PROCS);
        return 2;
    }
    uint32_t nprocs = need;
    if (g_opt.procs) {
        if (g_opt.procs < need) {
            fprintf(stderr,
                    "antenna-bench: --procs %u is too few: %llu clients with an "
                    "open-file limit of %llu need %u processes\n",
                    g_opt.procs, (unsigned long long)total, (unsigned long long)fdmax, need);
            return 2;
        }
        nprocs = g_opt.procs;
    }
    if (g_opt.e2e_window && (g_opt.mode != MODE_PUBSUB || nprocs > 1)) {
        fprintf(stderr, "antenna-bench: --e2e-window needs pubsub mode in one process\n");
        return 2;
    }
    nkids = nprocs;
    kids = an_calloc(nkids, sizeof(*kids));
    split_roles(nprocs);

    bench_result_t r;
    memset(&r, 0, sizeof(r));
    r.procs = nprocs;
    r.expected = -1;
    hist_init(&r.lat);
    hist_init(&r.conn);
    hist_init(&r.recon);
    r.broker_pid = broker_pid_now();
    uint64_t rss;
    uint64_t cpu_start = broker_ticks(&rss);

    if (!g_opt.quiet)
        fprintf(stderr, "antenna-bench: %llu clients in %u process%s (open-file limit %llu)\n",
                (unsigned long long)total, nprocs, nprocs > 1 ? "es" : "",
                (unsigned long long)fdmax);
    fflush(stdout);
    fflush(stderr);
    uint64_t start = bench_now();
    for (uint32_t i = 0; i < nkids; i++)
        kids[i].sp.t_origin = start;
    for (uint32_t i = 0; i < nkids; i++) {
        int rp[2], cp[2];
        if (pipe2(rp, O_CLOEXEC) < 0 || pipe2(cp, O_CLOEXEC) < 0) {
            perror("antenna-bench: pipe");
            return 2;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("antenna-bench: fork");
            return 2;
        }
        if (pid == 0) {
            for (uint32_t j = 0; j < i; j++) {
                close(kids[j].rep);
                close(kids[j].ctl);
            }
            close(rp[0]);
            close(cp[1]);
            worker_main(&kids[i].sp, rp[1], cp[0]);
            _exit(0);
        }
        close(rp[1]);
        close(cp[0]);
        kids[i].pid = pid;
        kids[i].rep = rp[0];
        kids[i].ctl = cp[1];
        fcntl(rp[0], F_SETFL, O_NONBLOCK);
    }

    struct pollfd *pf = an_calloc(nkids, sizeof(*pf));
    int phase = 0; /* 0 connect, 1 run, 2 stopping */
    uint64_t setup_deadline = start + (uint64_t)((g_opt.setup_timeout + 10) * 1e9);
    uint64_t t0 = 0, t_meas = 0, t_endm = 0, deadline = 0;
    uint64_t cpu_setup_end = 0, cpu_meas0 = 0, cpu_go = 0;
    int meas0_done = 0, meas1_done = 0, stop_sent = 0;
    uint64_t next_print = start + NS_PER_S;
    bench_stats_t prev;
    stats_zero(&prev);
    uint64_t prev_t = start;
    uint64_t prev_cpu = cpu_start, prev_cpu_t = start;

    for (;;) {
        uint64_t now = bench_now();
        /* deadlines and samples */
        uint64_t wake = next_print;
        if (phase >= 1 && !meas0_done && t_meas < wake)
            wake = t_meas;
        if (phase >= 1 && !meas1_done && t_endm < wake)
            wake = t_endm;
        int timeout = wake > now ? (int)((wake - now + NS_PER_MS - 1) / NS_PER_MS) : 0;
        if (timeout > 200)
            timeout = 200;
        uint32_t open = 0;
        for (uint32_t i = 0; i < nkids; i++) {
            pf[i].fd = kids[i].eof ? -1 : kids[i].rep;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
            if (!kids[i].eof)
                open++;
        }
        int n = poll(pf, nkids, timeout);
        now = bench_now();
        if (n > 0)
            for (uint32_t i = 0; i < nkids; i++)
                if (pf[i].revents)
                    child_read(&kids[i]);

        uint32_t nready = 0, nfinal = 0;
        for (uint32_t i = 0; i < nkids; i++) {
            nready += kids[i].ready;
            nfinal += kids[i].final;
        }
        if (g_signalled && !stop_sent) {
            fprintf(stderr, "antenna-bench: stopping\n");
            send_ctl(CTL_STOP, 0);
            stop_sent = 1;
            if (!deadline)
                deadline = now + (uint64_t)((g_opt.drain + 10) * 1e9);
        }
        if (phase == 0 && nready == nkids) {
            uint64_t s_rss;
            cpu_setup_end = broker_ticks(&s_rss);
            r.broker_cpu_setup_s = ticks_s(cpu_setup_end - cpu_start);
            bench_stats_t rs;
            stats_zero(&rs);
            for (uint32_t i = 0; i < nkids; i++)
                stats_merge(&rs, &kids[i].at_ready);
            r.setup_s = rs.t[T_setup_done] > rs.t[T_first_conn]
                            ? (double)(rs.t[T_setup_done] - rs.t[T_first_conn]) / 1e9
                            : 0;
            r.setup_conn_ok = rs.c[C_conn_ok];
            if (g_opt.ready_file) {
                FILE *f = fopen(g_opt.ready_file, "w");
                if (f) {
                    fprintf(f, "ready %llu %llu\n", (unsigned long long)rs.c[C_ready],
                            (unsigned long long)rs.c[C_clients]);
                    fclose(f);
                }
            }
            if (!g_opt.quiet)
                fprintf(stderr,
                        "antenna-bench: connect phase done in %.3f s: %llu/%llu ready, "
                        "%llu failed attempts\n",
                        r.setup_s, (unsigned long long)rs.c[C_ready],
                        (unsigned long long)rs.c[C_clients], (unsigned long long)rs.c[C_conn_fail]);
            if (rs.c[C_ready] == 0 && rs.c[C_clients] > 0 && !g_opt.reconnect) {
                fprintf(stderr, "antenna-bench: no client could connect (is the broker running "
                                "on the given --host/--port?); stopping\n");
                g_signalled = 1; /* stop at once, as on ^C */
            }
            t0 = now;
            t_meas = t0 + (uint64_t)(g_opt.warmup * 1e9);
            t_endm = t_meas + (uint64_t)(g_opt.duration * 1e9);
            uint64_t dl = t_endm + (uint64_t)((g_opt.drain + 15) * 1e9);
            if (!deadline || dl < deadline)
                deadline = dl;
            cpu_go = cpu_setup_end;
            r.t0 = t0;
            r.t_meas = t_meas;
            r.t_end_meas = t_endm;
            send_ctl(CTL_GO, t0);
            phase = 1;
        }
        if (phase >= 1 && !meas0_done && now >= t_meas) {
            cpu_meas0 = broker_ticks(&r.broker_rss_start_kb);
            meas0_done = 1;
        }
        if (phase >= 1 && !meas1_done && now >= t_endm) {
            uint64_t c1 = broker_ticks(&r.broker_rss_end_kb);
            r.broker_cpu_meas_s = ticks_s(c1 - cpu_meas0);
            meas1_done = 1;
        }
        if (now >= next_print) {
            bench_stats_t cur;
            sum_last(&cur);
            uint64_t b_rss = 0;
            uint64_t cpu = broker_ticks(&b_rss);
            double dt = (double)(now - prev_t) / 1e9;
            double cpu_pct = 0;
            if (r.broker_pid || g_opt.broker_pidfile) {
                double cdt = (double)(now - prev_cpu_t) / 1e9;
                cpu_pct = cdt > 0 ? 100.0 * ticks_s(cpu - prev_cpu) / cdt : 0;
                if (phase >= 1 && cpu_pct > r.broker_peak_cpu_pct)
                    r.broker_peak_cpu_pct = cpu_pct;
                if (b_rss > r.broker_rss_peak_kb)
                    r.broker_rss_peak_kb = b_rss;
                prev_cpu = cpu;
                prev_cpu_t = now;
            }
            if (!g_opt.quiet) {
                int ph = phase == 0 ? 0 : (stop_sent || (t_endm && now >= t_endm)) ? 2 : 1;
                fprintf(stderr,
                        "[%7.1fs] %-7s conns %llu/%llu ready %llu (+%llu fail %llu drop %llu) | "
                        "pub %.0f/s recv %.0f/s | inflight %llu | err %llu",
                        (double)(now - start) / 1e9, phase_name(ph),
                        (unsigned long long)cur.c[C_connected],
                        (unsigned long long)cur.c[C_clients], (unsigned long long)cur.c[C_ready],
                        (unsigned long long)(cur.c[C_conn_ok] - prev.c[C_conn_ok]),
                        (unsigned long long)cur.c[C_conn_fail], (unsigned long long)cur.c[C_drops],
                        dt > 0 ? (double)(cur.c[C_pub_sent] - prev.c[C_pub_sent]) / dt : 0,
                        dt > 0 ? (double)(cur.c[C_recv] - prev.c[C_recv]) / dt : 0,
                        (unsigned long long)cur.c[C_pub_inflight],
                        (unsigned long long)cur.c[C_errors]);
                if (r.broker_pid || g_opt.broker_pidfile)
                    fprintf(stderr, " | broker %.0f%% %.1f MB", cpu_pct, (double)b_rss / 1024);
                fprintf(stderr, "\n");
            }
            /* parent-side stop conditions */
            if (phase == 1 && !stop_sent) {
                if (g_opt.expect && cur.c[C_recv] >= g_opt.expect) {
                    send_ctl(CTL_STOP, 0);
                    stop_sent = 1;
                }
                if (g_opt.until_recovered && cur.t[T_first_drop] &&
                    cur.c[C_connected] == cur.c[C_clients]) {
                    send_ctl(CTL_STOP, 0);
                    stop_sent = 1;
                }
            }
            prev = cur;
            prev_t = now;
            next_print += NS_PER_S;
            if (next_print <= now)
                next_print = now + NS_PER_S;
        }
        if (nfinal == nkids)
            break;
        if (open == 0)
            break; /* every worker gone */
        if ((phase == 0 && now >= setup_deadline) || (deadline && now >= deadline)) {
            fprintf(stderr, "antenna-bench: workers did not report in time; killing them\n");
            for (uint32_t i = 0; i < nkids; i++)
                if (!kids[i].final) {
                    kill(kids[i].pid, SIGKILL);
                    r.killed_workers++;
                }
            break;
        }
    }
    uint64_t cpu_end = broker_ticks(NULL);
    r.broker_cpu_run_s = cpu_go ? ticks_s(cpu_end - cpu_go) : 0;
    if (!meas1_done && meas0_done) { /* stopped early: measure up to now */
        r.broker_cpu_meas_s = ticks_s(cpu_end - cpu_meas0);
        r.broker_rss_end_kb = bs.rss;
    }
    if (t_endm && r.killed_workers) {
        uint64_t end = bench_now();
        if (end < r.t_end_meas)
            r.t_end_meas = end;
    }

    /* Aggregate. */
    stats_zero(&r.st);
    uint64_t *sent = an_calloc(g_opt.pub_count ? g_opt.pub_count : 1, sizeof(uint64_t));
    int all_final = 1;
    for (uint32_t i = 0; i < nkids; i++) {
        child_t *k = &kids[i];
        if (k->final) {
            stats_merge(&r.st, &k->fin->st);
            hist_merge(&r.lat, &k->fin->lat);
            hist_merge(&r.conn, &k->fin->conn);
            hist_merge(&r.recon, &k->fin->recon);
            for (uint32_t j = 0; j < k->fin->npub && j < k->sp.npub; j++)
                sent[k->sp.pub_first + j] = k->sent[j];
        } else {
            all_final = 0;
            stats_merge(&r.st, &k->last);
            if (k->eof)
                r.killed_workers++; /* died without a final report */
        }
    }
    /* the window ends where publishing ended, if that was earlier */
    if (r.st.t[T_run_end] && r.st.t[T_run_end] < r.t_end_meas && r.st.t[T_run_end] > r.t_meas)
        r.t_end_meas = r.st.t[T_run_end];
    if (g_opt.mode == MODE_PUBSUB && all_final)
        r.expected = track_expected(sent, g_opt.pub_count, g_opt.sub_count);

    /* Reap the workers (bounded). */
    uint64_t reap_deadline = bench_now() + 3 * NS_PER_S;
    for (uint32_t i = 0; i < nkids; i++) {
        for (;;) {
            int st;
            pid_t p = waitpid(kids[i].pid, &st, WNOHANG);
            if (p == kids[i].pid || (p < 0 && errno == ECHILD))
                break;
            if (bench_now() >= reap_deadline) {
                kill(kids[i].pid, SIGKILL);
                waitpid(kids[i].pid, &st, 0);
                break;
            }
            usleep(10000);
        }
    }

    report_summary(g_opt.json ? stderr : stdout, &r);
    if (g_opt.json)
        report_json(stdout, &r);
    fflush(stdout);
    int bad = r.killed_workers || (total && r.st.c[C_conn_ok] == 0);

    for (uint32_t i = 0; i < nkids; i++) {
        free(kids[i].buf);
        free(kids[i].fin);
        free(kids[i].sent);
        close(kids[i].rep);
        close(kids[i].ctl);
    }
    free(kids);
    free(pf);
    free(sent);
    free(g_opt.hosts);
    free(g_opt.ports);
    free(g_opt.ifaddrs);
    return bad ? 1 : 0;
}
