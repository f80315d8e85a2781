/* sink_influx.h -- the InfluxDB sink's parts shared by sink_influx.c (the
 * configuration, the HTTP side, the driver table sink_influx_driver),
 * sink_influx_lp.c (the line protocol: actions and render) and the unit
 * test (tests/unit/test_sink_influx.c).
 *
 * influx_escape and influx_fmt_float are pure functions: any thread.
 */
#ifndef ANTENNA_SINK_INFLUX_H
#define ANTENNA_SINK_INFLUX_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "sink.h"

/* The sink's configuration: its section's keys past the framework's
 * (docs/sinks.md); sink_conf() of an InfluxDB sink. */
enum { INFLUX_PREC_NS = 0, INFLUX_PREC_US, INFLUX_PREC_MS, INFLUX_PREC_S };
typedef struct {
    char url[256];    /* the server's base URL, "http://127.0.0.1:8086" (no trailing /) */
    uint32_t version; /* 1: /write, 2: /api/v2/write */
    char database[64], retention_policy[64]; /* version 1 */
    char username[64], password[128];        /* version 1, basic auth */
    char org[64], bucket[64], token[256];    /* version 2 */
    uint8_t precision;                       /* INFLUX_PREC_* */
    uint8_t gzip;                            /* gzip the bodies (default on) */
    uint32_t timeout_ms;                     /* one request, default 10 s */
    uint32_t max_request_points;             /* batches joined up to this, default 5000 */
} influx_conf_t;

/* Where a piece of text goes in a line: what it escapes.
 *   INFLUX_ESC_MEAS   a measurement: ',' and ' '
 *   INFLUX_ESC_KEY    a tag key, tag value or field key: ',', '=' and ' '
 *   INFLUX_ESC_STR    inside a string field's quotes: '"' and '\'
 * In the first two, a '\' that would otherwise escape the next character
 * (one of those, another '\' or the end of the text) is doubled, and a
 * newline or carriage return, which no version of the protocol accepts
 * there, becomes a space. */
enum { INFLUX_ESC_MEAS = 0, INFLUX_ESC_KEY, INFLUX_ESC_STR };

/* p[0..n) escaped for `kind` into out[cap]; the length written, or the
 * length needed when it is larger than cap (nothing past cap written). */
size_t influx_escape(char *out, size_t cap, const char *p, size_t n, int kind);

/* A float value as line protocol writes it: the shortest of %.15g and
 * %.17g that reads back the same; into out[cap] (cap >= 32); its length. */
size_t influx_fmt_float(char *out, size_t cap, double v);

/* The driver's action hooks (sink.h): action_init and action_free on the
 * thread building the rule, render on the workers. */
int influx_action_init(sink_t *s, json_t *def, void **state, char *err, size_t errlen);
void influx_action_free(void *state);
int influx_render(sink_t *s, void *state, json_t *row, const struct msg_s *m, sink_out_t *out);

#endif
