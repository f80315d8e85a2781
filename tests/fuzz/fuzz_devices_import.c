/* fuzz_devices_import.c -- libFuzzer target for the device registry's bulk
 * formats (src/devices/devices_io.c).
 *
 * Input: an import body, parsed as JSON lines and as CSV.  Contract checks
 * (a violation aborts): an error starts "line N: field " with N at least
 * the line of the last record accepted; each CSV record accepted, written
 * back with the CSV writer (the fields it writes) and read again, gives
 * the same id, tags, attributes and disabled flag.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices.h"

typedef struct {
    uint32_t last;
} st_t;

static int reread(void *ud, uint32_t line, json_t *rec, char *err, size_t errlen)
{
    (void)line;
    (void)err;
    (void)errlen;
    json_t *orig = ud;
    static const char *const f[] = {"id", "tags", "attributes"};
    for (size_t i = 0; i < 3; i++) {
        json_t *a = json_object_get(orig, f[i]), *b = json_object_get(rec, f[i]);
        if (json_object_size(a) == 0 && json_is_object(a))
            a = NULL;
        if ((a || b) && !(a && b && json_equal(a, b)))
            abort();
    }
    if (json_is_true(json_object_get(orig, "disabled")) !=
        json_is_true(json_object_get(rec, "disabled")))
        abort();
    return 0;
}

static int on_rec(void *ud, uint32_t line, json_t *rec, char *err, size_t errlen)
{
    st_t *st = ud;
    if (line < st->last)
        abort();
    st->last = line;
    if (!json_is_string(json_object_get(rec, "id")) ||
        json_string_length(json_object_get(rec, "id")) == 0)
        return 0;
    /* the writer's fields only: ids, tags of strings without ; = , */
    json_t *tags = json_object_get(rec, "tags");
    if (tags && !json_is_object(tags))
        return 0;
    const char *k;
    json_t *v;
    json_object_foreach(tags, k, v) if (!json_is_string(v) || strpbrk(k, "=;,") || !*k ||
                                        strpbrk(json_string_value(v), ";,")) return 0;
    if (json_object_get(rec, "attributes") && !json_is_object(json_object_get(rec, "attributes")))
        return 0;
    if (json_object_get(rec, "disabled") && !json_is_boolean(json_object_get(rec, "disabled")))
        return 0;
    if (strlen(json_string_value(json_object_get(rec, "id"))) !=
        json_string_length(json_object_get(rec, "id")))
        return 0;
    devices_buf_t t = {0};
    devices_csv_header(&t);
    devices_csv_line(&t, rec);
    char e2[256];
    if (devices_parse(t.p, t.len, DEVICES_FMT_CSV, reread, rec, e2, sizeof(e2)) < 0)
        abort();
    free(t.p);
    (void)err;
    (void)errlen;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    for (int fmt = DEVICES_FMT_JSONL; fmt <= DEVICES_FMT_CSV; fmt++) {
        st_t st = {0};
        err[0] = '\0';
        if (devices_parse((const char *)data, size, fmt, on_rec, &st, err, sizeof(err)) < 0) {
            unsigned line = 0;
            if (sscanf(err, "line %u: field ", &line) != 1 || line < st.last)
                abort();
        }
    }
    return 0;
}
