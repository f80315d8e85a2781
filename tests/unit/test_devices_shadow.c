/* test_devices_shadow.c -- the device shadow's documents (src/devices/
 * devices_shadow.c): the JSON merge patch of desired and reported, and the
 * delta of desired over reported (recursive on objects). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices.h"

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    assert_non_null(j);
    return j;
}

/* doc merged with patch equals want */
static void merge_is(const char *doc, const char *patch, const char *want)
{
    json_t *d = J(doc), *p = J(patch), *w = J(want);
    devices_shadow_merge(d, p);
    if (!json_equal(d, w)) {
        char *got = json_dumps(d, JSON_SORT_KEYS);
        fail_msg("merge %s + %s: %s, want %s", doc, patch, got, want);
    }
    json_decref(d);
    json_decref(p);
    json_decref(w);
}

static void delta_is(const char *desired, const char *reported, const char *want)
{
    json_t *d = J(desired), *r = J(reported), *w = J(want);
    json_t *got = devices_shadow_delta(d, r);
    if (!json_equal(got, w)) {
        char *s = json_dumps(got, JSON_SORT_KEYS);
        fail_msg("delta %s over %s: %s, want %s", desired, reported, s, want);
    }
    json_decref(got);
    json_decref(d);
    json_decref(r);
    json_decref(w);
}

static void test_merge(void **state)
{
    (void)state;
    merge_is("{}", "{}", "{}");
    merge_is("{}", "{\"a\":1}", "{\"a\":1}");
    merge_is("{\"a\":1,\"b\":2}", "{\"a\":3}", "{\"a\":3,\"b\":2}");
    /* null deletes; deleting what is absent is nothing */
    merge_is("{\"a\":1,\"b\":2}", "{\"a\":null,\"z\":null}", "{\"b\":2}");
    /* objects merge recursively */
    merge_is("{\"c\":{\"x\":1,\"y\":2}}", "{\"c\":{\"y\":3,\"z\":4}}",
             "{\"c\":{\"x\":1,\"y\":3,\"z\":4}}");
    merge_is("{\"c\":{\"x\":1,\"y\":2}}", "{\"c\":{\"x\":null}}", "{\"c\":{\"y\":2}}");
    /* an object over a scalar, a scalar or an array over an object: replaced */
    merge_is("{\"c\":5}", "{\"c\":{\"x\":1}}", "{\"c\":{\"x\":1}}");
    merge_is("{\"c\":{\"x\":1}}", "{\"c\":[1,2]}", "{\"c\":[1,2]}");
    merge_is("{\"c\":[1,2,3]}", "{\"c\":[4]}", "{\"c\":[4]}");
    /* nulls inside a new object are dropped too (RFC 7386) */
    merge_is("{}", "{\"c\":{\"x\":null,\"y\":1}}", "{\"c\":{\"y\":1}}");
}

static void test_merge_copies(void **state)
{
    (void)state;
    json_t *d = J("{}"), *p = J("{\"a\":{\"b\":[1]},\"s\":\"v\"}");
    devices_shadow_merge(d, p);
    json_array_append_new(json_object_get(json_object_get(p, "a"), "b"), json_integer(2));
    json_t *want = J("{\"a\":{\"b\":[1]},\"s\":\"v\"}");
    assert_true(json_equal(d, want)); /* the patch's later change is not the doc's */
    json_decref(want);
    json_decref(d);
    json_decref(p);
}

static void test_delta(void **state)
{
    (void)state;
    delta_is("{}", "{}", "{}");
    delta_is("{}", "{\"a\":1}", "{}"); /* reported extra keys: no delta */
    delta_is("{\"a\":1}", "{}", "{\"a\":1}");
    delta_is("{\"a\":1}", "{\"a\":1}", "{}");
    delta_is("{\"a\":1}", "{\"a\":2}", "{\"a\":1}");
    delta_is("{\"a\":1}", "{\"a\":\"1\"}", "{\"a\":1}");
    delta_is("{\"a\":1.5}", "{\"a\":1.5}", "{}");
    delta_is("{\"a\":[1,2]}", "{\"a\":[1,2]}", "{}");
    delta_is("{\"a\":[1,2]}", "{\"a\":[2,1]}", "{\"a\":[1,2]}");
    /* recursive on objects: only the differing keys inside */
    delta_is("{\"c\":{\"x\":1,\"y\":2},\"d\":true}", "{\"c\":{\"x\":1,\"y\":3},\"d\":true}",
             "{\"c\":{\"y\":2}}");
    delta_is("{\"c\":{\"x\":{\"deep\":1}}}", "{\"c\":{\"x\":{\"deep\":1}}}", "{}");
    delta_is("{\"c\":{\"x\":{\"deep\":1}}}", "{\"c\":{\"x\":{\"deep\":2}}}",
             "{\"c\":{\"x\":{\"deep\":1}}}");
    /* an object against a scalar: the whole object */
    delta_is("{\"c\":{\"x\":1}}", "{\"c\":7}", "{\"c\":{\"x\":1}}");
    delta_is("{\"c\":3}", "{\"c\":{\"x\":1}}", "{\"c\":3}");
    /* an empty object desired over an absent key: the key */
    delta_is("{\"c\":{}}", "{}", "{\"c\":{}}");
    delta_is("{\"c\":{}}", "{\"c\":{\"x\":1}}", "{}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_merge_copies),
        cmocka_unit_test(test_delta),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
