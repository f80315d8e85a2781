/* devices.h -- the device registry (issue 18): devices with credentials,
 * tags and attributes, kept in the store and in memory (devices.c), and
 * their bulk formats (devices_io.c: JSON lines and CSV).  docs/devices.md.
 */
#ifndef ANTENNA_DEVICES_H
#define ANTENNA_DEVICES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"

extern const module_t devices_module;

enum { DEVICES_FMT_JSONL = 1, DEVICES_FMT_CSV = 2 };

/* One record of an import (a JSON object with a device's fields, borrowed):
 * 0, or -1 with err "line N: field F: problem". */
typedef int (*devices_rec_fn)(void *ud, uint32_t line, json_t *rec, char *err, size_t errlen);

/* DEVICES_FMT_JSONL when the first non-blank byte is '{', else CSV. */
int devices_sniff(const char *buf, size_t len);
/* Every record of buf in order: 0, or -1 at the first problem (err set). */
int devices_parse(const char *buf, size_t len, int fmt, devices_rec_fn cb, void *ud, char *err,
                  size_t errlen);

/* A growing text buffer (p NUL-terminated, malloc'd). */
typedef struct {
    char *p;
    size_t len, cap;
} devices_buf_t;
void devices_buf_add(devices_buf_t *b, const char *s, size_t n);
/* CSV export: the header, then a line per device (its JSON as exported). */
void devices_csv_header(devices_buf_t *b);
void devices_csv_line(devices_buf_t *b, const json_t *dev);

/* The shadow's documents (devices_shadow.c): a JSON merge patch (RFC 7386:
 * null deletes a key, objects merge recursively, anything else replaces)
 * of patch into the object doc; the delta of desired over reported (a new
 * object: the keys of desired whose value differs from reported's,
 * recursively where both are objects; empty when they agree). */
void devices_shadow_merge(json_t *doc, const json_t *patch);
json_t *devices_shadow_delta(const json_t *desired, const json_t *reported);
/* The registry's devices whose tags hold every pair of `tags` (a JSON
 * object of strings; empty: all): cb(ud, id) for each, under the
 * registry's read lock (cb must not call into the registry).  Any thread.
 * The number of devices, or -1 when the registry is off. */
typedef void (*devices_id_fn)(void *ud, const char *id);
long devices_each_tagged(server_t *srv, json_t *tags, devices_id_fn cb, void *ud);

#endif
