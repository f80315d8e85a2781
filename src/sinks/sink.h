/* sink.h -- data sinks: named destinations that rule actions feed, with a
 * disk-backed buffer, retries and a dead-letter topic (docs/sinks.md).
 *
 * A sink is a named instance of a driver (webhook, kafka, influxdb) from
 * the `sinks:` configuration section.  A rule action
 *     {"type": "sink", "sink": "NAME", ...the driver's per-action keys}
 * feeds it: on the worker that evaluated the rule, the driver's render()
 * turns the output row into a record (key, value, headers: bytes in the
 * driver's own encoding, e.g. a line of InfluxDB line protocol, a Kafka key
 * and value) and the framework appends the record to the sink's buffer.
 *
 * The buffer.  Each record gets the sink's next sequence number (order and
 * store key).  With persistence on, the record is written to the
 * evaluating worker's store batch of that turn ("\0sink/NAME/" + seq), so
 * the PUBACK of a QoS 1/2 message waits for its record to be stored, like a
 * queue entry for a durable subscriber (persist.h): a kill -9 loses no
 * record of an acknowledged message; at start-up the stored records are
 * read back, in order, and sent again.  A record is deleted from the store
 * once the driver confirmed it (or it went to the dead-letter topic).  The
 * buffer is bounded by buffer.max_messages and buffer.max_bytes; past a
 * bound, buffer.overflow applies: drop_oldest (counted) or backpressure
 * (new records are refused and counted, and the publishers of the rule's
 * topics are paused the way limits.publisher_backpressure pauses them).
 *
 * The sink's thread.  Each sink has one thread that takes records in
 * sequence order and hands them to the driver in batches of at most
 * batch.max_messages (waiting up to batch.linger for a batch to fill), with
 * at most max_inflight records sent and not yet completed.  Every driver
 * call below except render and the action hooks runs on that thread; the
 * driver completes each record it was given exactly once with sink_done(),
 * also from that thread (from inside poll(), normally).  SINK_RETRY makes
 * the framework send the record again after a backoff (retry.backoff,
 * doubling to retry.max_backoff) until retry.max_attempts, then it counts
 * as failed; SINK_FAIL (refused for good: a 4xx, a line the server cannot
 * parse) and exhausted retries publish the record's value to
 * dead_letter_topic (when set, as a QoS 1 message with user properties
 * naming the sink and the reason) and count it.  Records complete out of
 * order; the store deletion and the metrics follow completions.
 *
 * Acknowledgement after the sink.  An action with "ack": "sink" asks that
 * the publisher's PUBACK (QoS 1) or PUBREC (QoS 2) wait until the sink
 * confirmed the record (sink_done(SINK_OK)), not only until it is stored.
 *
 * Metrics per sink (/metrics, GET /api/v1/sinks): records queued (gauge,
 * and bytes), sent, succeeded, retried, failed, dropped (overflow),
 * dead-lettered, in flight, and the latency from the message's publish to
 * the driver's confirmation (histogram).
 */
#ifndef ANTENNA_SINK_H
#define ANTENNA_SINK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

struct msg_s;
struct server_s;

typedef struct sink_s sink_t;

/* One record: what render() made of one output row.  Immutable once
 * appended; the driver reads it between send() and its sink_done(). */
typedef struct sink_rec_s {
    uint64_t seq;            /* the sink's sequence number (store key, order) */
    uint64_t ts_ms;          /* the message's publish time (wall clock, ms) */
    uint32_t attempts;       /* sends so far (1 on the first send) */
    uint32_t klen;           /* key: Kafka's message key; empty for others */
    uint32_t vlen;           /* value: the payload, the line, the body */
    uint32_t hlen;           /* headers: "name\0value\0" pairs; empty when none */
    void *ack;               /* framework: the held acknowledgement ("ack": "sink") */
    struct sink_rec_s *next; /* framework: queue link */
    char data[];             /* key, then value, then headers */
} sink_rec_t;

static inline const char *sink_rec_key(const sink_rec_t *r)
{
    return r->data;
}
static inline const char *sink_rec_value(const sink_rec_t *r)
{
    return r->data + r->klen;
}
static inline const char *sink_rec_headers(const sink_rec_t *r)
{
    return r->data + r->klen + r->vlen;
}

/* What render() fills: the parts of the record, in a buffer the framework
 * owns (one per worker, reused: no allocation in render).  sink_out_*
 * append; they return 0, or -1 when the record would pass
 * sinks.max_record_bytes (render then fails). */
typedef struct sink_out_s sink_out_t;
int sink_out_key(sink_out_t *o, const char *p, size_t n);
int sink_out_value(sink_out_t *o, const char *p, size_t n);
int sink_out_header(sink_out_t *o, const char *name, const char *value, size_t vlen);

enum { SINK_OK = 0, SINK_RETRY = 1, SINK_FAIL = 2 };

typedef struct {
    const char *name, *type, *help; /* a Prometheus family: "counter", "gauge" */
} sink_metric_family_t;

typedef struct {
    const char *type; /* "webhook", "kafka", "influxdb": the sink's `type:` */
    size_t conf_size; /* bytes of the driver's configuration */
    /* The driver's keys of one sink's section (conf_sec_* readers; the
     * framework reads name, type, buffer, batch, retry, max_inflight,
     * dead_letter_topic itself and leaves the rest to this), at start-up
     * and at a reload that checks the file.  0, or -1 from a conf_sec_*
     * call (file:line:key). */
    int (*conf_load)(conf_sec_t *s, void *conf);

    /* An action that names this sink: check its keys beyond type, sink and
     * ack, and keep what render needs (compiled templates) in *state.  Any
     * thread that builds rules (main, an API thread).  0, or -1 with err
     * naming the key ("topic: ..."). */
    int (*action_init)(sink_t *s, json_t *def, void **state, char *err, size_t errlen);
    void (*action_free)(void *state); /* wherever the rule's last ref goes */
    /* On the evaluating worker: the row (borrowed) and the message (NULL
     * for an event) into the record's parts.  Must not block or allocate
     * per call beyond its own reusable buffers.  0, or -1 (counted failed). */
    int (*render)(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out);

    /* The sink's thread.  open: create the driver's state (a producer, a
     * curl multi handle); connections may be made lazily.  0, or -1 with
     * err (logged; the framework retries open with the backoff). */
    int (*open)(sink_t *s, const void *conf, void **drv, char *err, size_t errlen);
    /* Send n records (n <= batch.max_messages); each completes later with
     * sink_done().  The array is the framework's; the records stay valid
     * until their sink_done(). */
    void (*send)(sink_t *s, void *drv, sink_rec_t **recs, size_t n);
    /* Drive the driver's I/O and call sink_done() for what completed;
     * return within timeout_ms (the framework's wakeups interrupt it
     * through wake()). */
    void (*poll)(sink_t *s, void *drv, int timeout_ms);
    /* Make a poll() in progress return soon (any thread). */
    void (*wake)(sink_t *s, void *drv);
    /* Complete everything still in flight (sink_done with SINK_RETRY: the
     * records stay in the buffer) and free drv. */
    void (*close)(sink_t *s, void *drv);
    /* Optional: the driver's own metric families (NULL-terminated by
     * name), and the lines of one of them for this sink (/metrics, with
     * module_metrics_printf).  The framework writes each family's header
     * once and then every sink's lines of it, so that a family's lines
     * stay together however many sinks of the type there are. */
    const sink_metric_family_t *metric_families;
    void (*metrics)(sink_t *s, void *drv, const char *family, void *out);
} sink_driver_t;

/* The driver's verdict on one record it was sent (the sink's thread).
 * why: a short reason for logs and the dead-letter message (NULL for OK). */
void sink_done(sink_t *s, sink_rec_t *r, int result, const char *why);

/* The sink's name and its driver's configuration (conf_size bytes). */
const char *sink_name(const sink_t *s);
const void *sink_conf(const sink_t *s);
struct server_s *sink_server(const sink_t *s);

/* The drivers (sink_webhook.c, sink_kafka.c, sink_influx.c). */
extern const sink_driver_t sink_webhook_driver;
extern const sink_driver_t sink_kafka_driver;
extern const sink_driver_t sink_influx_driver;

#endif
