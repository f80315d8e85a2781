/* test_sink_influx.c -- the InfluxDB sink driver (src/sinks/sink_influx.c)
 * on its own: its calls made directly, with the framework's few functions
 * (sink_done, sink_out_value, sink_conf, sink_name) and
 * module_metrics_printf stubbed here, so nothing else of the broker is
 * linked in.
 *
 * Covered: the line-protocol escaping of each part (table), float text,
 * render() of rows into lines (types, the i suffix, forced types, missing
 * columns, sorted tags, timestamps in each precision, a line longer than
 * the writer's buffer, the record bound), action_init's errors naming the
 * key; then send/poll against a real influxd started by the test on free
 * loopback ports in a temporary directory (every line written once, with
 * its type, special characters round trip, a field type conflict: the bad
 * lines fail and the rest are written, found by splitting the batch), a
 * refused connection (RETRY), and a tiny HTTP server in a thread for the
 * other answers (500, 404, 422, version 2's URL, token and gzip body, a
 * timeout).  Every wait is bounded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "module.h"
#include "msg.h"
#include "sinks/sink.h"
#include "sinks/sink_influx.h"
#include "util.h"

/* ---- the framework, stubbed ---- */

#define MAXREC 4096

struct sink_out_s {
    size_t n, max;
    char buf[65536];
};

struct sink_s {
    influx_conf_t conf;
    int result[MAXREC]; /* SINK_* + 1; 0: not completed */
    char why[MAXREC][160];
    int ndone, twice;
    unsigned long requests; /* run(): the requests the driver made */
};

struct module_metrics_s {
    size_t n;
    char buf[8192];
};

int sink_out_value(sink_out_t *o, const char *p, size_t n)
{
    if (o->n + n > o->max)
        return -1;
    memcpy(o->buf + o->n, p, n);
    o->n += n;
    return 0;
}

void sink_done(sink_t *s, sink_rec_t *r, int result, const char *why)
{
    if (r->seq >= MAXREC || s->result[r->seq]) {
        s->twice++;
        return;
    }
    s->result[r->seq] = result + 1;
    snprintf(s->why[r->seq], sizeof(s->why[0]), "%s", why ? why : "");
    s->ndone++;
}

const char *sink_name(const sink_t *s)
{
    (void)s;
    return "tsdb";
}

const void *sink_conf(const sink_t *s)
{
    return &s->conf;
}

void module_metrics_printf(module_metrics_t *mm, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(mm->buf + mm->n, sizeof(mm->buf) - mm->n, fmt, ap);
    va_end(ap);
    if (n > 0)
        mm->n = AN_MIN(mm->n + (size_t)n, sizeof(mm->buf) - 1);
}

static const sink_driver_t *D = &sink_influx_driver;

static sink_t *sink_new(void)
{
    sink_t *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    snprintf(s->conf.url, sizeof(s->conf.url), "http://127.0.0.1:1");
    s->conf.version = 1;
    snprintf(s->conf.database, sizeof(s->conf.database), "antenna");
    s->conf.precision = INFLUX_PREC_NS;
    s->conf.gzip = 1;
    s->conf.timeout_ms = 10000;
    s->conf.max_request_points = 5000;
    return s;
}

static void *action(sink_t *s, const char *def_json)
{
    json_error_t je;
    json_t *def = json_loads(def_json, 0, &je);
    assert_non_null(def);
    void *st = NULL;
    char err[256] = "";
    int rc = D->action_init(s, def, &st, err, sizeof(err));
    json_decref(def);
    if (rc != 0)
        fail_msg("action_init: %s", err);
    return st;
}

static const char *action_err(sink_t *s, const char *def_json)
{
    static char err[256];
    json_t *def = json_loads(def_json, 0, NULL);
    assert_non_null(def);
    void *st = NULL;
    err[0] = '\0';
    int rc = D->action_init(s, def, &st, err, sizeof(err));
    json_decref(def);
    if (rc == 0) {
        D->action_free(st);
        return NULL;
    }
    return err;
}

/* render row (JSON text) into a NUL-terminated line; NULL when it fails */
static const char *render(sink_t *s, void *st, const char *row_json, const msg_t *m)
{
    static sink_out_t out;
    out.n = 0;
    out.max = sizeof(out.buf) - 1;
    json_t *row = json_loads(row_json, 0, NULL);
    assert_non_null(row);
    int rc = D->render(s, st, row, m, &out);
    json_decref(row);
    if (rc != 0)
        return NULL;
    out.buf[out.n] = '\0';
    return out.buf;
}

/* ---- line protocol ---- */

static void check_esc(const char *in, int kind, const char *want)
{
    char out[256];
    size_t n = influx_escape(out, sizeof(out), in, strlen(in), kind);
    assert_true(n < sizeof(out));
    out[n] = '\0';
    assert_string_equal(out, want);
    assert_int_equal(influx_escape(NULL, 0, in, strlen(in), kind), n);
}

static void test_escape(void **state)
{
    (void)state;
    check_esc("cpu", INFLUX_ESC_MEAS, "cpu");
    check_esc("my cpu,1", INFLUX_ESC_MEAS, "my\\ cpu\\,1");
    check_esc("a=b", INFLUX_ESC_MEAS, "a=b");
    check_esc("a=b c,d", INFLUX_ESC_KEY, "a\\=b\\ c\\,d");
    check_esc("say \"hi\"", INFLUX_ESC_KEY, "say\\ \"hi\"");
    check_esc("say \"hi\" \\o/", INFLUX_ESC_STR, "say \\\"hi\\\" \\\\o/");
    check_esc("line1\nline2", INFLUX_ESC_KEY, "line1\\ line2");
    check_esc("a\\b", INFLUX_ESC_KEY, "a\\b");       /* before a plain character: kept */
    check_esc("a\\", INFLUX_ESC_KEY, "a\\\\");       /* at the end: doubled */
    check_esc("a\\,b", INFLUX_ESC_KEY, "a\\\\\\,b"); /* before a special one: doubled */
    check_esc("a\\\\ b", INFLUX_ESC_KEY, "a\\\\\\\\\\ b");
    check_esc("\xc3\xa9t\xc3\xa9", INFLUX_ESC_KEY, "\xc3\xa9t\xc3\xa9");
    char small[4];
    assert_int_equal(influx_escape(small, sizeof(small), "a b c", 5, INFLUX_ESC_KEY), 7);

    char f[48];
    influx_fmt_float(f, sizeof(f), 21.5);
    assert_string_equal(f, "21.5");
    influx_fmt_float(f, sizeof(f), 0.1);
    assert_string_equal(f, "0.1");
    influx_fmt_float(f, sizeof(f), 3.0);
    assert_string_equal(f, "3");
    influx_fmt_float(f, sizeof(f), 1e300);
    assert_string_equal(f, "1e+300");
    influx_fmt_float(f, sizeof(f), 0.30000000000000004);
    assert_float_equal(strtod(f, NULL), 0.30000000000000004, 0);
}

static void test_render(void **state)
{
    (void)state;
    sink_t *s = sink_new();
    msg_t *m = calloc(1, sizeof(msg_t) + 8);
    assert_non_null(m);
    m->published_at = 1700000000123ull;

    void *a = action(s, "{\"type\":\"sink\",\"sink\":\"tsdb\",\"ack\":\"sink\","
                        "\"measurement\":\"env ${room}\","
                        "\"tags\":{\"site\":\"${site}\",\"dev\":\"${clientid}\",\"zone\":\"z\"},"
                        "\"fields\":{\"t\":\"${t}\",\"n\":\"${n}\",\"ok\":\"${ok}\","
                        "\"s\":\"${s}\",\"txt\":\"at ${site}\",\"o\":\"${o}\"}}");
    const char *l = render(s, a,
                           "{\"room\":\"a,1\",\"site\":\"x y\",\"clientid\":\"d=1\",\"t\":21.5,"
                           "\"n\":7,\"ok\":true,\"s\":\"q\\\"\",\"o\":{\"k\":[1,2]}}",
                           m);
    assert_non_null(l);
    assert_string_equal(l, "env\\ a\\,1,dev=d\\=1,site=x\\ y,zone=z "
                           "t=21.5,n=7i,ok=true,s=\"q\\\"\",txt=\"at x y\",o=\"{\\\"k\\\":[1,2]}\""
                           " 1700000000123000000");
    /* missing columns: the tag and the fields are left out */
    l = render(s, a, "{\"room\":\"r\",\"t\":1}", m);
    assert_string_equal(l, "env\\ r,zone=z t=1i,txt=\"at \" 1700000000123000000");
    l = render(s, a, "{\"room\":\"r\",\"t\":null,\"ok\":false}", m);
    assert_string_equal(l, "env\\ r,zone=z ok=false,txt=\"at \" 1700000000123000000");
    D->action_free(a);

    /* only missing fields: no line */
    a = action(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"${v}\"}}");
    assert_null(render(s, a, "{\"w\":1}", m));
    assert_string_equal(render(s, a, "{\"v\":-3}", m), "m v=-3i 1700000000123000000");
    /* the precisions */
    s->conf.precision = INFLUX_PREC_MS;
    D->action_free(a);
    a = action(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"${v}\"}}");
    assert_string_equal(render(s, a, "{\"v\":1}", m), "m v=1i 1700000000123");
    D->action_free(a);
    s->conf.precision = INFLUX_PREC_S;
    a = action(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"${v}\"}}");
    assert_string_equal(render(s, a, "{\"v\":1}", m), "m v=1i 1700000000");
    D->action_free(a);
    s->conf.precision = INFLUX_PREC_US;
    a = action(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"${v}\"}}");
    assert_string_equal(render(s, a, "{\"v\":1}", m), "m v=1i 1700000000123000");
    D->action_free(a);
    s->conf.precision = INFLUX_PREC_NS;

    /* forced types and a timestamp template */
    a = action(s, "{\"measurement\":\"m\",\"timestamp\":\"${ts}\",\"fields\":{"
                  "\"f\":{\"value\":\"${a}\",\"type\":\"float\"},"
                  "\"i\":{\"value\":\"${b}\",\"type\":\"integer\"},"
                  "\"s\":{\"value\":\"${c}\",\"type\":\"string\"},"
                  "\"b\":{\"value\":\"${d}\",\"type\":\"boolean\"},"
                  "\"p\":{\"value\":\"1${e}\",\"type\":\"integer\"}}}");
    assert_string_equal(
        render(s, a, "{\"ts\":1234,\"a\":2,\"b\":\"42\",\"c\":5,\"d\":\"true\",\"e\":7}", m),
        "m f=2,i=42i,s=\"5\",b=true,p=17i 1234");
    assert_string_equal(render(s, a, "{\"ts\":\"99\",\"a\":\"2.5\",\"b\":3.0,\"d\":0}", m),
                        "m f=2.5,i=3i,b=false,p=1i 99");
    assert_null(render(s, a, "{\"ts\":1,\"b\":3.5}", m));       /* not an integer */
    assert_null(render(s, a, "{\"ts\":1,\"a\":\"abc\"}", m));   /* not a number */
    assert_null(render(s, a, "{\"ts\":\"12:00\",\"a\":1}", m)); /* not a timestamp */
    assert_null(render(s, a, "{\"a\":1}", m));                  /* no timestamp */
    D->action_free(a);

    /* the configuration file's flat form */
    a = action(s, "{\"measurement\":\"m\",\"tags.b\":\"${x}\",\"fields.t.type\":\"float\","
                  "\"tags.a\":\"k\",\"fields.t\":\"${t}\",\"fields.n\":\"${t}\"}");
    assert_string_equal(render(s, a, "{\"x\":\"y\",\"t\":3}", m),
                        "m,a=k,b=y t=3,n=3i 1700000000123000000");
    D->action_free(a);

    /* a line longer than the writer's stack buffer, and the record bound */
    a = action(s, "{\"measurement\":\"m\",\"tags\":{\"k\":\"${k}\"},\"fields\":{\"v\":\"${v}\"}}");
    static char big[20000], row[60000];
    memset(big, 'x', sizeof(big) - 1);
    for (int i = 0; i < 2000; i++)
        big[i * 9] = ' '; /* escaped: grows */
    snprintf(row, sizeof(row), "{\"k\":\"%s\",\"v\":\"%s\"}", big, big);
    l = render(s, a, row, NULL);
    assert_non_null(l);
    assert_true(strlen(l) > 2 * sizeof(big));
    assert_int_equal(strncmp(l, "m,k=\\ xxxxxxxx\\ x", 17), 0);
    assert_null(strchr(l, '\n'));
    static sink_out_t o2;
    o2.n = 0;
    o2.max = 1000;
    json_t *jr = json_loads(row, 0, NULL);
    assert_int_equal(D->render(s, a, jr, NULL, &o2), -1);
    json_decref(jr);
    D->action_free(a);
    free(m);
    free(s);
}

static void test_action_errors(void **state)
{
    (void)state;
    sink_t *s = sink_new();
    const char *e;
    e = action_err(s, "{\"fields\":{\"v\":\"${v}\"}}");
    assert_non_null(e);
    assert_non_null(strstr(e, "measurement"));
    e = action_err(s, "{\"measurement\":\"m\"}");
    assert_non_null(strstr(e, "fields"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{}}");
    assert_non_null(strstr(e, "fields"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"${v\"}}");
    assert_non_null(strstr(e, "fields.v: unclosed"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{\"v\":3}}");
    assert_non_null(strstr(e, "fields.v"));
    e = action_err(
        s, "{\"measurement\":\"m\",\"fields\":{\"v\":{\"value\":\"${v}\",\"type\":\"int\"}}}");
    assert_non_null(strstr(e, "fields.v.type"));
    e = action_err(s, "{\"measurement\":\"m\",\"tags\":{\"t\":\"\"},\"fields\":{\"v\":\"1\"}}");
    assert_non_null(strstr(e, "tags.t"));
    e = action_err(s, "{\"measurement\":\"m\",\"tags\":[1],\"fields\":{\"v\":\"1\"}}");
    assert_non_null(strstr(e, "tags"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"1\"},\"topic\":\"x\"}");
    assert_non_null(strstr(e, "topic: unknown key"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"1\"},\"timestamp\":5}");
    assert_non_null(strstr(e, "timestamp"));
    assert_null(action_err(s, "{\"type\":\"sink\",\"sink\":\"x\",\"measurement\":\"m\","
                              "\"fields\":{\"v\":\"1\"}}"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields\":{\"v\":\"1\"},\"fields.v\":\"2\"}");
    assert_non_null(strstr(e, "fields.v: fields.v is given twice"));
    char longkey[700];
    memset(longkey, 'k', 600);
    snprintf(longkey + 600, 100, "\":\"1\"}}");
    char def[800];
    snprintf(def, sizeof(def), "{\"measurement\":\"m\",\"fields\":{\"%s", longkey);
    e = action_err(s, def);
    assert_non_null(strstr(e, "a key longer than 512 bytes"));
    e = action_err(s, "{\"measurement\":\"m\",\"tags.\":\"2\"}");
    assert_non_null(strstr(e, "tags.: a name"));
    e = action_err(s, "{\"measurement\":\"m\",\"fields.v.type\":\"int\",\"fields.v\":\"${v}\"}");
    assert_non_null(strstr(e, "fields.v.type"));
    free(s);
}

/* ---- HTTP helpers ---- */

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

typedef struct {
    char *p;
    size_t n;
} buf_t;

static size_t buf_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t n = size * nmemb;
    char *np = realloc(b->p, b->n + n + 1);
    if (np == NULL)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* A blocking request; the status (0: no answer); *body when asked. */
static long http(const char *url, const char *post, char **body)
{
    CURL *e = curl_easy_init();
    buf_t b = {NULL, 0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    if (post)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    if (body)
        *body = b.p;
    else
        free(b.p);
    return status;
}

static sink_rec_t *rec(uint64_t seq, const char *line)
{
    size_t n = strlen(line);
    sink_rec_t *r = calloc(1, sizeof(*r) + n);
    assert_non_null(r);
    r->seq = seq;
    r->vlen = (uint32_t)n;
    r->attempts = 1;
    memcpy(r->data, line, n);
    return r;
}

/* open, send recs in batches of `batch`, poll until every one completed
 * (deadline 60 s: the machine may be busy), close */
static void run(sink_t *s, sink_rec_t **recs, size_t n, size_t batch)
{
    void *drv = NULL;
    char err[256];
    assert_int_equal(D->open(s, &s->conf, &drv, err, sizeof(err)), 0);
    for (size_t i = 0; i < n; i += batch)
        D->send(s, drv, recs + i, AN_MIN(batch, n - i));
    uint64_t until = an_wall_ms() + 60000;
    while ((size_t)s->ndone < n && an_wall_ms() < until)
        D->poll(s, drv, 100);
    D->wake(s, drv);
    D->poll(s, drv, 1000); /* returns at once: woken */
    module_metrics_t mm = {0};
    for (const sink_metric_family_t *f = D->metric_families; f->name; f++)
        D->metrics(s, drv, f->name, &mm);
    const char *rq = strstr(mm.buf, "antenna_sink_influx_requests_total{sink=\"tsdb\"} ");
    assert_non_null(rq);
    s->requests =
        strtoul(rq + strlen("antenna_sink_influx_requests_total{sink=\"tsdb\"} "), NULL, 10);
    D->close(s, drv);
    assert_int_equal(s->ndone, n);
    assert_int_equal(s->twice, 0);
}

/* ---- a real influxd ---- */

typedef struct {
    pid_t pid;
    uint16_t port;
    char dir[64], base[64];
} influxd_t;

static influxd_t IX;

static int influxd_setup(void **state)
{
    (void)state;
    snprintf(IX.dir, sizeof(IX.dir), "/tmp/antenna-influx-XXXXXX");
    assert_non_null(mkdtemp(IX.dir));
    IX.port = free_port();
    uint16_t rpc = free_port();
    char cfg[128];
    snprintf(cfg, sizeof(cfg), "%s/influxdb.conf", IX.dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "reporting-disabled = true\nbind-address = \"127.0.0.1:%u\"\n"
            "[meta]\n  dir = \"%s/meta\"\n"
            "[data]\n  dir = \"%s/data\"\n  wal-dir = \"%s/wal\"\n  query-log-enabled = false\n"
            "[http]\n  bind-address = \"127.0.0.1:%u\"\n  log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n",
            rpc, IX.dir, IX.dir, IX.dir, IX.port);
    fclose(f);
    snprintf(IX.base, sizeof(IX.base), "http://127.0.0.1:%u", IX.port);
    IX.pid = fork();
    assert_true(IX.pid >= 0);
    if (IX.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execlp("influxd", "influxd", "run", "-config", cfg, (char *)NULL);
        _exit(127);
    }
    char url[128];
    snprintf(url, sizeof(url), "%s/ping", IX.base);
    for (int i = 0; i < 600; i++) { /* 60 s */
        if (http(url, NULL, NULL) == 204)
            return 0;
        if (waitpid(IX.pid, NULL, WNOHANG) == IX.pid)
            break;
        usleep(100 * 1000);
    }
    fprintf(stderr, "influxd did not start on port %u\n", IX.port);
    return -1;
}

static int influxd_teardown(void **state)
{
    (void)state;
    if (IX.pid > 0) {
        kill(IX.pid, SIGKILL);
        waitpid(IX.pid, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", IX.dir);
    if (system(cmd) != 0)
        return -1;
    return 0;
}

/* POST /query q=...; the parsed answer */
static json_t *query(const char *db, const char *q)
{
    CURL *e = curl_easy_init();
    char *eq = curl_easy_escape(e, q, 0);
    curl_easy_cleanup(e);
    char url[1024], post[1024];
    snprintf(url, sizeof(url), "%s/query?db=%s", IX.base, db);
    snprintf(post, sizeof(post), "q=%s", eq);
    curl_free(eq);
    char *body = NULL;
    long st = http(url, post, &body);
    assert_int_equal(st, 200);
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(j);
    return j;
}

/* results[0].series[0].values */
static json_t *values(json_t *ans)
{
    json_t *s = json_array_get(
        json_object_get(json_array_get(json_object_get(ans, "results"), 0), "series"), 0);
    return json_object_get(s, "values");
}

static sink_t *influx_sink(const char *db)
{
    sink_t *s = sink_new();
    snprintf(s->conf.url, sizeof(s->conf.url), "%s/", IX.base);
    s->conf.url[strlen(s->conf.url) - 1] = '\0';
    snprintf(s->conf.database, sizeof(s->conf.database), "%s", db);
    char q[96];
    snprintf(q, sizeof(q), "CREATE DATABASE \"%s\"", db);
    json_decref(query(db, q));
    return s;
}

static void test_influx_write(void **state)
{
    (void)state;
    sink_t *s = influx_sink("w");
    void *a = action(s, "{\"measurement\":\"env\",\"tags\":{\"dev\":\"${clientid}\"},"
                        "\"fields\":{\"n\":\"${n}\",\"t\":\"${t}\",\"ok\":\"${ok}\","
                        "\"s\":\"${s}\"},\"timestamp\":\"${ts}\"}");
    enum { N = 2000 };
    static sink_rec_t *recs[N + 1];
    char row[512];
    for (int i = 0; i < N; i++) {
        snprintf(row, sizeof(row),
                 "{\"clientid\":\"dev %d\",\"n\":%d,\"t\":%d.25,\"ok\":%s,\"s\":\"v%d\","
                 "\"ts\":%d}",
                 i % 7, i, i, i % 2 ? "true" : "false", i, 1000000 + i);
        recs[i] = rec((uint64_t)i, render(s, a, row, NULL));
    }
    /* the special characters, read back as they were */
    recs[N] = rec(N, render(s, a,
                            "{\"clientid\":\"a,b=c d\\\\e\",\"n\":1,\"t\":0.1,\"ok\":true,"
                            "\"s\":\"q\\\"uote \\\\ back\\nslash \xc3\xa9\",\"ts\":5}",
                            NULL));
    s->conf.max_request_points = 700; /* 2001 lines sent in batches of 500: 3 requests */
    run(s, recs, N + 1, 500);
    for (int i = 0; i <= N; i++)
        assert_int_equal(s->result[i], SINK_OK + 1);
    assert_int_equal(s->requests, 3);
    json_t *ans = query("w", "SELECT count(n), sum(n) FROM env");
    json_t *v = json_array_get(values(ans), 0);
    assert_int_equal(json_integer_value(json_array_get(v, 1)), N + 1);
    assert_int_equal(json_integer_value(json_array_get(v, 2)), N * (N - 1) / 2 + 1);
    json_decref(ans);
    ans = query("w", "SHOW FIELD KEYS FROM env");
    json_t *fk = values(ans), *it;
    size_t i;
    int seen = 0;
    json_array_foreach(fk, i, it)
    {
        const char *k = json_string_value(json_array_get(it, 0));
        const char *t = json_string_value(json_array_get(it, 1));
        if (strcmp(k, "n") == 0)
            assert_string_equal(t, "integer"), seen++;
        if (strcmp(k, "t") == 0)
            assert_string_equal(t, "float"), seen++;
        if (strcmp(k, "ok") == 0)
            assert_string_equal(t, "boolean"), seen++;
        if (strcmp(k, "s") == 0)
            assert_string_equal(t, "string"), seen++;
    }
    assert_int_equal(seen, 4);
    json_decref(ans);
    ans = query("w", "SELECT s, dev, t FROM env WHERE time = 5");
    v = json_array_get(values(ans), 0);
    assert_string_equal(json_string_value(json_array_get(v, 1)), "q\"uote \\ back\nslash \xc3\xa9");
    assert_string_equal(json_string_value(json_array_get(v, 2)), "a,b=c d\\e");
    assert_float_equal(json_real_value(json_array_get(v, 3)), 0.1, 0);
    json_decref(ans);
    for (int k = 0; k <= N; k++)
        free(recs[k]);
    D->action_free(a);
    free(s);
}

static void test_influx_conflict(void **state)
{
    (void)state;
    sink_t *s = influx_sink("c");
    sink_rec_t *first = rec(0, "m v=1.5 1");
    run(s, &first, 1, 1);
    free(first);
    memset(s->result, 0, sizeof(s->result));
    s->ndone = 0;
    enum { N = 100 };
    sink_rec_t *recs[N];
    char line[64];
    for (int i = 0; i < N; i++) {
        int bad = i == 3 || i == 50 || i == 97;
        snprintf(line, sizeof(line), bad ? "m v=\"str%d\" %d" : "m v=%d.5 %d", i, 100 + i);
        recs[i] = rec((uint64_t)i, line);
    }
    run(s, recs, N, N);
    for (int i = 0; i < N; i++) {
        int bad = i == 3 || i == 50 || i == 97;
        if (bad) {
            assert_int_equal(s->result[i], SINK_FAIL + 1);
            assert_non_null(strstr(s->why[i], "influxdb 400"));
            assert_non_null(strstr(s->why[i], "conflict"));
        } else {
            assert_int_equal(s->result[i], SINK_OK + 1);
        }
        free(recs[i]);
    }
    json_t *ans = query("c", "SELECT count(v) FROM m");
    assert_int_equal(json_integer_value(json_array_get(json_array_get(values(ans), 0), 1)),
                     N - 3 + 1);
    json_decref(ans);
    free(s);
}

static void test_refused(void **state)
{
    (void)state;
    sink_t *s = sink_new();
    snprintf(s->conf.url, sizeof(s->conf.url), "http://127.0.0.1:%u", free_port());
    sink_rec_t *recs[3] = {rec(0, "m v=1"), rec(1, "m v=2"), rec(2, "m v=3")};
    run(s, recs, 3, 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s->result[i], SINK_RETRY + 1);
        free(recs[i]);
    }
    free(s);
}

/* ---- a tiny HTTP server: one answer for every request ---- */

typedef struct {
    int lfd;
    uint16_t port;
    int status; /* 0: never answer */
    const char *body;
    char req[8192]; /* the last request: head, then the body */
    size_t reqlen, headlen;
    pthread_t th;
} stub_t;

static void *stub_main(void *arg)
{
    stub_t *st = arg;
    for (;;) {
        int fd = accept(st->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        { /* one request per connection (Connection: close): concurrent
           * requests wait in the backlog */
            size_t n = 0, head = 0, clen = 0;
            char buf[sizeof(st->req)];
            while (n < sizeof(buf)) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - n);
                if (k <= 0)
                    goto next;
                n += (size_t)k;
                char *e = memmem(buf, n, "\r\n\r\n", 4);
                if (e && head == 0) {
                    head = (size_t)(e - buf) + 4;
                    char *cl = strcasestr(buf, "Content-Length:");
                    clen = cl && cl < e ? strtoul(cl + 15, NULL, 10) : 0;
                }
                if (head && n >= head + clen)
                    break;
            }
            memcpy(st->req, buf, n);
            st->reqlen = n;
            st->headlen = head;
            if (st->status == 0) {
                char c;
                while (read(fd, &c, 1) > 0) /* until the client gives up */
                    ;
                goto next;
            }
            char ans[512];
            int al =
                snprintf(ans, sizeof(ans),
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         st->status, strlen(st->body), st->body);
            if (write(fd, ans, (size_t)al) != al)
                goto next;
        }
    next:
        close(fd);
    }
}

static void stub_start(stub_t *st, int status, const char *body)
{
    memset(st, 0, sizeof(*st));
    st->status = status;
    st->body = body;
    st->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(st->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(st->lfd, 8), 0);
    assert_int_equal(getsockname(st->lfd, (struct sockaddr *)&sa, &len), 0);
    st->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&st->th, NULL, stub_main, st), 0);
}

static void stub_stop(stub_t *st)
{
    shutdown(st->lfd, SHUT_RDWR);
    close(st->lfd);
    pthread_join(st->th, NULL);
}

static int stub_case(int status, const char *body, int version, uint32_t timeout_ms, stub_t *st)
{
    stub_start(st, status, body);
    sink_t *s = sink_new();
    snprintf(s->conf.url, sizeof(s->conf.url), "http://127.0.0.1:%u", st->port);
    s->conf.timeout_ms = timeout_ms;
    if (version == 3) { /* version 1 with basic authentication */
        snprintf(s->conf.username, sizeof(s->conf.username), "u");
        snprintf(s->conf.password, sizeof(s->conf.password), "p");
    }
    if (version == 2) {
        s->conf.version = 2;
        s->conf.database[0] = '\0';
        snprintf(s->conf.org, sizeof(s->conf.org), "my org");
        snprintf(s->conf.bucket, sizeof(s->conf.bucket), "b");
        snprintf(s->conf.token, sizeof(s->conf.token), "tok");
        s->conf.precision = INFLUX_PREC_MS;
    }
    sink_rec_t *recs[2] = {rec(0, "m v=1 1"), rec(1, "m v=2 2")};
    run(s, recs, 2, 2);
    int r0 = s->result[0], r1 = s->result[1];
    free(recs[0]);
    free(recs[1]);
    free(s);
    stub_stop(st);
    assert_int_equal(r0, r1);
    return r0 - 1;
}

static void test_stub_answers(void **state)
{
    (void)state;
    stub_t st;
    assert_int_equal(stub_case(500, "{\"error\":\"boom\"}", 1, 5000, &st), SINK_RETRY);
    assert_int_equal(stub_case(503, "{}", 1, 5000, &st), SINK_RETRY);
    assert_int_equal(stub_case(404, "{\"error\":\"database not found\"}", 1, 5000, &st),
                     SINK_RETRY);
    assert_int_equal(stub_case(422, "{\"error\":\"no\"}", 1, 5000, &st), SINK_FAIL);
    /* 400 from a server that refuses every line: split down to each, both fail */
    assert_int_equal(stub_case(400, "{\"error\":\"unable to parse\"}", 1, 5000, &st), SINK_FAIL);
    /* version 1 URL */
    assert_int_equal(stub_case(204, "", 1, 5000, &st), SINK_OK);
    assert_non_null(strstr(st.req, "POST /write?db=antenna&precision=n HTTP/1.1\r\n"));
    /* version 2: the URL, the token, the gzip body */
    assert_int_equal(stub_case(204, "", 2, 5000, &st), SINK_OK);
    assert_non_null(strstr(st.req, "POST /api/v2/write?org=my%20org&bucket=b&precision=ms "));
    assert_non_null(strstr(st.req, "Authorization: Token tok\r\n"));
    assert_non_null(strstr(st.req, "Content-Encoding: gzip\r\n"));
    char plain[256];
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)st.req + st.headlen;
    z.avail_in = (uInt)(st.reqlen - st.headlen);
    z.next_out = (Bytef *)plain;
    z.avail_out = sizeof(plain) - 1;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    plain[sizeof(plain) - 1 - z.avail_out] = '\0';
    inflateEnd(&z);
    assert_string_equal(plain, "m v=1 1\nm v=2 2\n");
    /* basic authentication (u:p) */
    assert_int_equal(stub_case(204, "", 3, 5000, &st), SINK_OK);
    assert_non_null(strstr(st.req, "Authorization: Basic dTpw\r\n"));
    /* a 413 split down to single lines, which fail */
    assert_int_equal(stub_case(413, "{\"error\":\"too large\"}", 1, 5000, &st), SINK_FAIL);
    /* splitting is bounded: 300 lines all refused cost at most 16 + 16 x 9
     * requests after the first, and every line fails */
    stub_start(&st, 400, "{\"error\":\"partial write: x\"}");
    sink_t *s = sink_new();
    snprintf(s->conf.url, sizeof(s->conf.url), "http://127.0.0.1:%u", st.port);
    static sink_rec_t *many[300];
    for (int i = 0; i < 300; i++)
        many[i] = rec((uint64_t)i, "m v=1");
    run(s, many, 300, 300);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(s->result[i], SINK_FAIL + 1);
        free(many[i]);
    }
    assert_true(s->requests > 2 && s->requests <= 1 + 16 + 16 * 9);
    assert_non_null(strstr(s->why[0], "influxdb 400: partial write: x"));
    free(s);
    stub_stop(&st);
    /* no answer: the timeout */
    assert_int_equal(stub_case(0, "", 1, 300, &st), SINK_RETRY);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_escape),        cmocka_unit_test(test_render),
        cmocka_unit_test(test_action_errors), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_stub_answers),
    };
    const struct CMUnitTest server[] = {
        cmocka_unit_test(test_influx_write),
        cmocka_unit_test(test_influx_conflict),
    };
    int rc = cmocka_run_group_tests(plain, NULL, NULL);
    if (access("/usr/bin/influxd", X_OK) == 0)
        rc |= cmocka_run_group_tests(server, influxd_setup, influxd_teardown);
    else
        fprintf(stderr, "influxd not installed: the tests against it are skipped\n");
    curl_global_cleanup();
    return rc;
}
