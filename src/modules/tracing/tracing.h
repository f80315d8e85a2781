/* tracing.h -- OpenTelemetry traces of a message's path (tracing.c). */
#ifndef ANTENNA_TRACING_H
#define ANTENNA_TRACING_H

#include "module.h"

extern const module_t tracing_module;

/* W3C trace context (https://www.w3.org/TR/trace-context/) "traceparent":
 * "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>".  Parses s[0..len)
 * (version 00 only, lower-case hex, ids not all zero): 1 and the fields, or
 * 0.  Pure; unit-tested. */
int tracing_parse_traceparent(const char *s, size_t len, uint8_t trace_id[16], uint8_t parent_id[8],
                              uint8_t *flags);
/* Writes the 55 characters and a NUL into out[56]. */
void tracing_format_traceparent(char out[56], const uint8_t trace_id[16], const uint8_t span_id[8],
                                uint8_t flags);

#endif
