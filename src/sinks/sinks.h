/* sinks.h -- the sink framework seen from the rest of the broker: the
 * module (the `sinks:` section, the sinks' threads, GET /api/v1/sinks,
 * /metrics) and what the rule engine's "sink" action calls.  The driver
 * interface is sink.h; the design is at the top of sink.c.
 *
 * A sink action is built on the thread that builds its rule (main, an API
 * thread), emitted on the worker that evaluated the rule (render into the
 * worker's buffer, append to the worker's list of the turn: no lock, no
 * system call per record) and freed wherever the rule's last reference
 * goes.  Sinks live from the module's init to its free, longer than any
 * rule (the rules module comes after this one in module_list).
 */
#ifndef ANTENNA_SINKS_H
#define ANTENNA_SINKS_H

#include <jansson.h>
#include <stddef.h>

#include "module.h"

struct msg_s;

typedef struct sink_action_s sink_action_t;

/* An action {"type": "sink", "sink": NAME, "ack": "store"|"sink", ...driver keys}
 * for server srv (NULL: a check of the file, where sinks are not known
 * yet: the keys of the framework are checked, and the action returned
 * is only good for sink_action_free).  NULL with err ("sink: no sink
 * named \"x\""). */
sink_action_t *sink_action_new(server_t *srv, json_t *def, char *err, size_t errlen);
/* On the evaluating worker: render the row and append the record;
 * RULES_EMIT_OK, _FAILED (render) or _DROPPED (a full buffer that refuses,
 * buffer.overflow: backpressure). */
int sink_action_emit(sink_action_t *a, worker_t *w, json_t *row, const struct msg_s *m);
void sink_action_free(sink_action_t *a);
/* For a rule's metrics (any thread): the sink's name and the records it
 * holds, sent or not yet confirmed ("queued": every action feeding that
 * sink counts there). */
void sink_action_describe(const sink_action_t *a, json_t *obj);

extern const module_t sinks_module;

#endif
