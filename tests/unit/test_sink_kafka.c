/* test_sink_kafka.c -- the Kafka sink driver (src/sinks/sink_kafka.c) on
 * its own, against librdkafka's mock cluster (3 brokers, in this process).
 *
 * The framework's side of sink.h is stubbed here: sink_out_* append into a
 * test buffer, records are built from it by hand, and sink_done() counts
 * each record's verdicts (exactly one is expected).  The driver's open,
 * send, poll, wake and close are called directly as the sink's thread
 * would; what arrived is read back with a librdkafka consumer.  Its
 * configuration is loaded from YAML through a conf section, so the errors
 * name file:line:key as in the broker.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "conf.h"
#include "module.h"
#include "msg.h"
#include "sinks/sink.h"
#include "util.h"

/* ---- the framework's side, stubbed ---- */

#define MAXREC 6000

struct sink_s {
    const void *conf;
};

struct sink_out_s {
    char key[1024], val[65536], hdr[4096];
    size_t kl, vl, hl;
};

static int results[MAXREC];
static int dones[MAXREC];
static int ndone;

static int app(char *buf, size_t cap, size_t *len, const char *p, size_t n)
{
    if (*len + n > cap)
        return -1;
    memcpy(buf + *len, p, n);
    *len += n;
    return 0;
}

int sink_out_key(sink_out_t *o, const char *p, size_t n)
{
    return app(o->key, sizeof(o->key), &o->kl, p, n);
}

int sink_out_value(sink_out_t *o, const char *p, size_t n)
{
    return app(o->val, sizeof(o->val), &o->vl, p, n);
}

int sink_out_header(sink_out_t *o, const char *name, const char *value, size_t vlen)
{
    if (app(o->hdr, sizeof(o->hdr), &o->hl, name, strlen(name) + 1) < 0 ||
        app(o->hdr, sizeof(o->hdr), &o->hl, value, vlen) < 0)
        return -1;
    return app(o->hdr, sizeof(o->hdr), &o->hl, "", 1);
}

void sink_done(sink_t *s, sink_rec_t *r, int result, const char *why)
{
    (void)s;
    (void)why;
    assert_true(r->seq < MAXREC);
    results[r->seq] = result;
    dones[r->seq]++;
    ndone++;
}

const char *sink_name(const sink_t *s)
{
    (void)s;
    return "k";
}

const void *sink_conf(const sink_t *s)
{
    return s->conf;
}

struct server_s *sink_server(const sink_t *s)
{
    (void)s;
    return NULL;
}

/* /metrics: the driver's lines, collected (module.c is not linked: it
 * would bring in every module, the sink framework with its sink_done) */
static char metrics_text[4096];

void module_metrics_printf(module_metrics_t *mm, const char *fmt, ...)
{
    (void)mm;
    size_t n = strlen(metrics_text);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(metrics_text + n, sizeof(metrics_text) - n, fmt, ap);
    va_end(ap);
}

/* ---- helpers ---- */

static conf_t *conf;

static int write_tmp(char *path, size_t pathlen, const char *text)
{
    snprintf(path, pathlen, "/tmp/antenna_test_kafka_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return 0;
}

/* Load `yaml` (a "kafka:" section); the driver's configuration, or NULL
 * with err ("PATH:LINE: key: problem", PATH cut off). */
static const void *load(const char *yaml, char *err, size_t errlen)
{
    char path[64], e[512];
    free(conf);
    conf = calloc(1, sizeof(*conf));
    conf_defaults(conf);
    assert_non_null(conf_section_add(conf, "kafka", sink_kafka_driver.conf_load, NULL,
                                     sink_kafka_driver.conf_size));
    write_tmp(path, sizeof(path), yaml);
    int rc = conf_load(conf, path, e, sizeof(e));
    unlink(path);
    if (rc < 0) {
        const char *p = strncmp(e, path, strlen(path)) == 0 ? e + strlen(path) : e;
        snprintf(err, errlen, "%s", p);
        return NULL;
    }
    return conf_section_values(conf, "kafka");
}

static void expect_error(const char *yaml, const char *want)
{
    char err[512] = "";
    assert_null(load(yaml, err, sizeof(err)));
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static sink_rec_t *mkrec(const sink_out_t *o, uint64_t seq)
{
    sink_rec_t *r = calloc(1, sizeof(*r) + o->kl + o->vl + o->hl);
    r->seq = seq;
    r->ts_ms = an_wall_ms();
    r->attempts = 1;
    r->klen = (uint32_t)o->kl;
    r->vlen = (uint32_t)o->vl;
    r->hlen = (uint32_t)o->hl;
    memcpy(r->data, o->key, o->kl);
    memcpy(r->data + o->kl, o->val, o->vl);
    memcpy(r->data + o->kl + o->vl, o->hdr, o->hl);
    return r;
}

static rd_kafka_t *mrk;
static rd_kafka_mock_cluster_t *mc;
static char bootstraps[256];

static int setup(void **st)
{
    (void)st;
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof(e));
    mrk = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof(e));
    assert_non_null(mrk);
    mc = rd_kafka_mock_cluster_new(mrk, 3);
    assert_non_null(mc);
    snprintf(bootstraps, sizeof(bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    free(conf);
    return 0;
}

/* Every message of topic (partitions 0..np-1) from the start, until `want`
 * arrived or 60 s passed: fn(key, value) per message.  The count. */
static int consume(const char *topic, int np, int want,
                   void (*fn)(const rd_kafka_message_t *m, void *ud), void *ud)
{
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof(e));
    rd_kafka_conf_set(c, "group.id", "test", e, sizeof(e));
    rd_kafka_conf_set(c, "enable.auto.commit", "false", e, sizeof(e));
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof(e));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, e, sizeof(e));
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int p = 0; p < np; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    uint64_t until = an_wall_ms() + 60000;
    while (n < want && an_wall_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL)
            continue;
        if (m->err == 0) {
            fn(m, ud);
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    /* anything beyond `want` (a duplicate) within a short while */
    for (uint64_t t = an_wall_ms() + 500; an_wall_ms() < t;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m && m->err == 0) {
            fn(m, ud);
            n++;
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

/* Poll d until `n` verdicts arrived (60 s at most). */
static void poll_until(sink_t *s, void *d, int n)
{
    uint64_t until = an_wall_ms() + 60000;
    while (ndone < n && an_wall_ms() < until)
        sink_kafka_driver.poll(s, d, 100);
    assert_int_equal(ndone, n);
}

static void reset_verdicts(void)
{
    memset(results, -1, sizeof(results));
    memset(dones, 0, sizeof(dones));
    ndone = 0;
}

/* ---- cases ---- */

static void test_conf(void **st)
{
    (void)st;
    char err[512];
    expect_error("kafka:\n  topic: t\n", ":1: kafka.bootstrap_servers: required");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  acks: 1\n",
                 ":3: kafka.acks: enable_idempotence needs acks: all");
    assert_non_null(load("kafka:\n  bootstrap_servers: x:9092\n  acks: 1\n"
                         "  enable_idempotence: false\n",
                         err, sizeof(err)));
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  acks: some\n", ":3: kafka.acks:");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  topic: 'a b'\n",
                 ":3: kafka.topic: \"a b\" is not a Kafka topic name");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  key: '${clientid'\n",
                 ":3: kafka.key: unclosed \"${\"");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  compression: brotli\n",
                 ":3: kafka.compression:");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  properties:\n    no.such.thing: 1\n",
                 ":4: kafka.properties.no.such.thing: librdkafka: No such configuration property");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  tls:\n    cafile: /x\n",
                 ":4: kafka.tls.cafile: unknown key");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  tls:\n    ca_file: /nonexistent/ca.pem\n",
                 ":4: kafka.tls.ca_file: cannot read \"/nonexistent/ca.pem\"");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  sasl:\n    username: u\n",
                 ":3: kafka.sasl.mechanism: required");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  linger: 10h\n", ":3: kafka.linger:");
    expect_error("kafka:\n  bootstrap_servers: x:9092\n  headers:\n    h: '${a'\n",
                 ":4: kafka.headers.h: unclosed");
    assert_non_null(load("kafka:\n  bootstrap_servers: x:9092\n  compression: zstd\n"
                         "  linger: 20ms\n  batch_size: 65536\n  message_timeout: 10s\n"
                         "  sasl:\n    mechanism: SCRAM-SHA-256\n    username: u\n"
                         "    password: p\n  properties:\n    queue.buffering.max.kbytes: 1024\n",
                         err, sizeof(err)));
}

static void test_render(void **st)
{
    (void)st;
    char err[256];
    struct sink_s s = {.conf = load("kafka:\n  bootstrap_servers: x:9092\n  topic: dev.${kind}\n"
                                    "  headers:\n    origin: '${clientid}/${n}'\n",
                                    err, sizeof(err))};
    assert_non_null(s.conf);
    json_t *def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    void *state = NULL;
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    json_t *row =
        json_pack("{s:s, s:s, s:i, s:f, s:b, s:n, s:[i,s], s:{s:s}}", "clientid", "d-1", "kind",
                  "temp", "n", 7, "t", 21.5, "ok", 1, "none", "a", 1, "q\"\n", "o", "k", "v\x01");
    sink_out_t out = {0};
    assert_int_equal(sink_kafka_driver.render(&s, state, row, NULL, &out), 0);
    /* key: [length]topic then the Kafka key */
    assert_int_equal((uint8_t)out.key[0], 8);
    assert_memory_equal(out.key + 1, "dev.temp", 8);
    assert_int_equal(out.kl, 1 + 8 + 3);
    assert_memory_equal(out.key + 9, "d-1", 3);
    /* value: the row as JSON, as jansson writes it */
    char *want = json_dumps(row, JSON_COMPACT);
    assert_int_equal(out.vl, strlen(want));
    assert_memory_equal(out.val, want, out.vl);
    free(want);
    assert_int_equal(out.hl, strlen("origin") + 1 + strlen("d-1/7") + 1);
    assert_string_equal(out.hdr + 7, "d-1/7");
    sink_kafka_driver.action_free(state);

    /* an action's own topic, key, payload and headers; a bad rendered topic */
    json_decref(def);
    def = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s}}", "type", "sink", "sink", "k", "topic",
                    "out", "key", "${n}", "payload", "${kind}=${t}", "headers", "x", "1");
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    memset(&out, 0, sizeof(out));
    assert_int_equal(sink_kafka_driver.render(&s, state, row, NULL, &out), 0);
    assert_int_equal(out.kl, 1 + 3 + 1);
    assert_memory_equal(out.key, "\3out7", 5);
    assert_int_equal(out.vl, strlen("temp=21.5"));
    assert_memory_equal(out.val, "temp=21.5", out.vl);
    assert_memory_equal(out.hdr,
                        "x\0"
                        "1\0",
                        4);
    sink_kafka_driver.action_free(state);
    json_decref(def);

    def = json_pack("{s:s, s:s, s:s}", "type", "sink", "sink", "k", "topic", "${clientid}!");
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    memset(&out, 0, sizeof(out));
    assert_int_equal(sink_kafka_driver.render(&s, state, row, NULL, &out), -1);
    sink_kafka_driver.action_free(state);
    json_decref(def);

    def = json_pack("{s:s, s:s, s:s}", "type", "sink", "sink", "k", "topik", "x");
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "topik: unknown key"));
    json_decref(def);
    def = json_pack("{s:s, s:s, s:s}", "type", "sink", "sink", "k", "topic", "a b");
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "topic: \"a b\" is not a Kafka topic name"));
    json_decref(def);
    /* no default topic and none in the action */
    s.conf = load("kafka:\n  bootstrap_servers: x:9092\n", err, sizeof(err));
    def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "topic: required"));
    json_decref(def);
    json_decref(row);
}

/* n records for topic, keys "dev0".."dev{nkeys-1}", values {"dev":..,"i":seq}
 * (padded to vbytes when vbytes > 0), from seq0. */
static sink_rec_t **make_recs(sink_t *s, void *state, int seq0, int n, int nkeys, size_t vbytes)
{
    sink_rec_t **recs = calloc((size_t)n, sizeof(*recs));
    char *pad = calloc(1, vbytes + 1);
    memset(pad, 'x', vbytes);
    for (int i = 0; i < n; i++) {
        char dev[16];
        snprintf(dev, sizeof(dev), "dev%d", (seq0 + i) % nkeys);
        json_t *row =
            json_pack("{s:s, s:i, s:s}", "clientid", dev, "i", seq0 + i, "pad", vbytes ? pad : "");
        sink_out_t *out = calloc(1, sizeof(*out));
        assert_int_equal(sink_kafka_driver.render(s, state, row, NULL, out), 0);
        recs[i] = mkrec(out, (uint64_t)(seq0 + i));
        free(out);
        json_decref(row);
    }
    free(pad);
    return recs;
}

static void free_recs(sink_rec_t **recs, int n)
{
    for (int i = 0; i < n; i++)
        free(recs[i]);
    free(recs);
}

typedef struct {
    int seen[MAXREC];
    int last[64]; /* per key: the last i */
    int disorder;
    int partition_of[64];
    int moved; /* a key seen on two partitions */
} check_t;

static void check_msg(const rd_kafka_message_t *m, void *ud)
{
    check_t *c = ud;
    json_error_t je;
    json_t *v = json_loadb(m->payload, m->len, 0, &je);
    assert_non_null(v);
    int i = (int)json_integer_value(json_object_get(v, "i"));
    const char *dev = json_string_value(json_object_get(v, "clientid"));
    assert_non_null(dev);
    assert_int_equal(m->key_len, strlen(dev));
    assert_memory_equal(m->key, dev, m->key_len);
    int k = atoi(dev + 3);
    assert_true(i >= 0 && i < MAXREC && k >= 0 && k < 64);
    c->seen[i]++;
    if (i <= c->last[k])
        c->disorder++;
    c->last[k] = i;
    if (c->partition_of[k] >= 0 && c->partition_of[k] != m->partition)
        c->moved++;
    c->partition_of[k] = m->partition;
    json_decref(v);
}

static check_t *check_new(void)
{
    check_t *c = calloc(1, sizeof(*c));
    for (int k = 0; k < 64; k++) {
        c->last[k] = -1;
        c->partition_of[k] = -1;
    }
    return c;
}

/* Delivered once each, in order per key, with broker failures injected
 * between batches: produce errors pushed and a broker down then up. */
static void test_deliver(void **st)
{
    (void)st;
    char err[512], yaml[512];
    enum { N = 3000, BATCH = 250, KEYS = 10 };
    assert_int_equal(rd_kafka_mock_topic_create(mc, "deliver", 6, 3), 0);
    snprintf(yaml, sizeof(yaml),
             "kafka:\n  bootstrap_servers: '%s'\n  topic: deliver\n  linger: 2ms\n"
             "  headers:\n    dev: '${clientid}'\n",
             bootstraps);
    struct sink_s s = {.conf = load(yaml, err, sizeof(err))};
    assert_non_null(s.conf);
    json_t *def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    void *state = NULL, *d = NULL;
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    assert_int_equal(sink_kafka_driver.open(&s, s.conf, &d, err, sizeof(err)), 0);
    reset_verdicts();
    sink_rec_t **recs = make_recs(&s, state, 0, N, KEYS, 0);
    for (int b = 0; b < N / BATCH; b++) {
        if (b == 3) /* produce requests fail, then succeed when sent again */
            rd_kafka_mock_push_request_errors(
                mc, 0 /* Produce */, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE);
        if (b == 6)
            rd_kafka_mock_broker_set_down(mc, 2);
        if (b == 9)
            rd_kafka_mock_broker_set_up(mc, 2);
        sink_kafka_driver.send(&s, d, recs + b * BATCH, BATCH);
        sink_kafka_driver.poll(&s, d, 10);
    }
    poll_until(&s, d, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dones[i], 1);
        assert_int_equal(results[i], SINK_OK);
    }
    sink_kafka_driver.close(&s, d);
    assert_int_equal(ndone, N);

    check_t *c = check_new();
    int got = consume("deliver", 6, N, check_msg, c);
    assert_int_equal(got, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(c->seen[i], 1);
    assert_int_equal(c->disorder, 0);
    assert_int_equal(c->moved, 0);
    free(c);
    free_recs(recs, N);
    sink_kafka_driver.action_free(state);
    json_decref(def);
}

/* A local queue of 20 messages: the rest waits, in order, for the next
 * polls; a message over message.max.bytes is refused for good. */
static void test_queue_full_and_too_large(void **st)
{
    (void)st;
    char err[512], yaml[512];
    enum { N = 400, KEYS = 4 };
    assert_int_equal(rd_kafka_mock_topic_create(mc, "small", 2, 3), 0);
    snprintf(yaml, sizeof(yaml),
             "kafka:\n  bootstrap_servers: '%s'\n  topic: small\n  linger: 1ms\n"
             "  properties:\n    queue.buffering.max.messages: 20\n"
             "    message.max.bytes: 2000\n",
             bootstraps);
    struct sink_s s = {.conf = load(yaml, err, sizeof(err))};
    assert_non_null(s.conf);
    json_t *def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    void *state = NULL, *d = NULL;
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    assert_int_equal(sink_kafka_driver.open(&s, s.conf, &d, err, sizeof(err)), 0);
    reset_verdicts();
    sink_rec_t **recs = make_recs(&s, state, 0, N, KEYS, 0);
    sink_rec_t **big = make_recs(&s, state, N, 1, KEYS, 5000);
    sink_kafka_driver.send(&s, d, big, 1);
    assert_int_equal(ndone, 1);
    assert_int_equal(results[N], SINK_FAIL);
    sink_kafka_driver.send(&s, d, recs, N);
    poll_until(&s, d, N + 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dones[i], 1);
        assert_int_equal(results[i], SINK_OK);
    }
    metrics_text[0] = '\0';
    for (const sink_metric_family_t *f = sink_kafka_driver.metric_families; f->name; f++)
        sink_kafka_driver.metrics(&s, d, f->name, NULL);
    assert_non_null(strstr(metrics_text, "antenna_sink_kafka_queue_length{sink=\"k\"} 0\n"));
    assert_non_null(strstr(metrics_text, "antenna_sink_kafka_produce_errors_total{sink=\"k\","
                                         "code=\"MSG_SIZE_TOO_LARGE\"} 1\n"));
    sink_kafka_driver.close(&s, d);
    check_t *c = check_new();
    assert_int_equal(consume("small", 2, N, check_msg, c), N);
    assert_int_equal(c->disorder, 0);
    free(c);
    free_recs(recs, N);
    free_recs(big, 1);
    sink_kafka_driver.action_free(state);
    json_decref(def);
}

struct waker {
    void *d;
    sink_t *s;
};

static void *wake_later(void *arg)
{
    struct waker *w = arg;
    usleep(200 * 1000);
    sink_kafka_driver.wake(w->s, w->d);
    return NULL;
}

/* wake() ends a long poll at once; close() with every broker down reports
 * what is in flight as RETRY, within its bound. */
static void test_wake_and_close(void **st)
{
    (void)st;
    char err[512], yaml[512];
    enum { N = 50 };
    assert_int_equal(rd_kafka_mock_topic_create(mc, "down", 3, 3), 0);
    snprintf(yaml, sizeof(yaml), "kafka:\n  bootstrap_servers: '%s'\n  topic: down\n", bootstraps);
    struct sink_s s = {.conf = load(yaml, err, sizeof(err))};
    assert_non_null(s.conf);
    json_t *def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    void *state = NULL, *d = NULL;
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    assert_int_equal(sink_kafka_driver.open(&s, s.conf, &d, err, sizeof(err)), 0);
    /* let the producer settle (metadata, producer id), then a quiet poll */
    reset_verdicts();
    sink_rec_t **first = make_recs(&s, state, 0, 1, 1, 0);
    sink_kafka_driver.send(&s, d, first, 1);
    poll_until(&s, d, 1);
    pthread_t th;
    struct waker w = {.d = d, .s = &s};
    uint64_t t0 = an_wall_ms();
    assert_int_equal(pthread_create(&th, NULL, wake_later, &w), 0);
    sink_kafka_driver.poll(&s, d, 20000);
    uint64_t took = an_wall_ms() - t0;
    pthread_join(th, NULL);
    assert_true(took < 10000);

    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_down(mc, b);
    reset_verdicts();
    sink_rec_t **recs = make_recs(&s, state, 0, N, 5, 0);
    sink_kafka_driver.send(&s, d, recs, N);
    sink_kafka_driver.poll(&s, d, 100);
    t0 = an_wall_ms();
    sink_kafka_driver.close(&s, d);
    took = an_wall_ms() - t0;
    assert_true(took < 20000);
    assert_int_equal(ndone, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dones[i], 1);
        assert_int_equal(results[i], SINK_RETRY);
    }
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_up(mc, b);
    free_recs(first, 1);
    free_recs(recs, N);
    sink_kafka_driver.action_free(state);
    json_decref(def);
}

/* A fatal idempotent-producer error (a gap in the sequence with
 * enable.gapless.guarantee): every record still gets exactly one verdict,
 * and the driver replaces its producer, which delivers what comes next. */
static void test_fatal_error_replaces_producer(void **st)
{
    (void)st;
    char err[512], yaml[512];
    enum { N = 200 };
    assert_int_equal(rd_kafka_mock_topic_create(mc, "fatal", 2, 3), 0);
    snprintf(yaml, sizeof(yaml),
             "kafka:\n  bootstrap_servers: '%s'\n  topic: fatal\n  linger: 1ms\n"
             "  properties:\n    enable.gapless.guarantee: true\n",
             bootstraps);
    struct sink_s s = {.conf = load(yaml, err, sizeof(err))};
    assert_non_null(s.conf);
    json_t *def = json_pack("{s:s, s:s}", "type", "sink", "sink", "k");
    void *state = NULL, *d = NULL;
    assert_int_equal(sink_kafka_driver.action_init(&s, def, &state, err, sizeof(err)), 0);
    assert_int_equal(sink_kafka_driver.open(&s, s.conf, &d, err, sizeof(err)), 0);
    reset_verdicts();
    sink_rec_t **recs = make_recs(&s, state, 0, N, 4, 0);
    sink_kafka_driver.send(&s, d, recs, 10);
    poll_until(&s, d, 10);
    rd_kafka_mock_push_request_errors(mc, 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER);
    sink_kafka_driver.send(&s, d, recs + 10, N / 2 - 10);
    poll_until(&s, d, N / 2);
    int retried = 0;
    for (int i = 0; i < N / 2; i++) {
        assert_int_equal(dones[i], 1);
        assert_true(results[i] == SINK_OK || results[i] == SINK_RETRY);
        retried += results[i] == SINK_RETRY;
    }
    /* the rest goes through (a new producer if the first one died) */
    sink_kafka_driver.send(&s, d, recs + N / 2, N / 2);
    poll_until(&s, d, N);
    for (int i = N / 2; i < N; i++) {
        assert_int_equal(dones[i], 1);
        assert_int_equal(results[i], SINK_OK);
    }
    print_message("fatal: %d of %d records reported RETRY\n", retried, N / 2);
    sink_kafka_driver.close(&s, d);
    free_recs(recs, N);
    sink_kafka_driver.action_free(state);
    json_decref(def);
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    /* librdkafka starts its threads with glibc's thrd_create, which
     * ThreadSanitizer does not intercept: its allocator crashes in them */
    printf("test_sink_kafka: skipped under ThreadSanitizer (librdkafka's threads)\n");
    return 0;
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf),           cmocka_unit_test(test_render),
        cmocka_unit_test(test_deliver),        cmocka_unit_test(test_queue_full_and_too_large),
        cmocka_unit_test(test_wake_and_close), cmocka_unit_test(test_fatal_error_replaces_producer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
