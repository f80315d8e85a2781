/* test_devices_io.c -- the device registry's bulk formats (src/devices/
 * devices_io.c): JSON lines and CSV records, quoting, errors naming the
 * line and the field, the CSV writer read back by the reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "devices.h"

typedef struct {
    json_t *recs;
    json_t *lines;
} got_t;

static int collect(void *ud, uint32_t line, json_t *rec, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    got_t *g = ud;
    json_array_append(g->recs, rec);
    json_array_append_new(g->lines, json_integer(line));
    return 0;
}

static int parse(const char *s, int fmt, got_t *g, char *err)
{
    g->recs = json_array();
    g->lines = json_array();
    return devices_parse(s, strlen(s), fmt, collect, g, err, 256);
}

static void got_free(got_t *g)
{
    json_decref(g->recs);
    json_decref(g->lines);
}

static void test_sniff(void **state)
{
    (void)state;
    assert_int_equal(devices_sniff("  \n{\"id\":1}", 11), DEVICES_FMT_JSONL);
    assert_int_equal(devices_sniff("id,token\n", 9), DEVICES_FMT_CSV);
}

static void test_jsonl(void **state)
{
    (void)state;
    got_t g;
    char err[256] = "";
    assert_int_equal(
        parse("{\"id\":\"a\"}\r\n\n  {\"id\":\"b\",\"tags\":{\"k\":\"v\"}}", 1, &g, err), 0);
    assert_int_equal(json_array_size(g.recs), 2);
    assert_int_equal(json_integer_value(json_array_get(g.lines, 1)), 3);
    got_free(&g);
    assert_int_equal(parse("{\"id\":\"a\"}\n[1]\n", DEVICES_FMT_JSONL, &g, err), -1);
    assert_non_null(strstr(err, "line 2: field -"));
    got_free(&g);
}

static void test_csv(void **state)
{
    (void)state;
    got_t g;
    char err[256] = "";
    const char *csv = "id,tags,attributes,disabled,token\r\n"
                      "a,site=x;k=v,\"{\"\"n\"\": \"\"1,2\"\"}\",true,t\r\n"
                      "\"b,\"\"q\"\"\",,,,\n"
                      "\n"
                      "\"multi\nline\",,,0,\n";
    assert_int_equal(parse(csv, DEVICES_FMT_CSV, &g, err), 0);
    assert_int_equal(json_array_size(g.recs), 3);
    json_t *a = json_array_get(g.recs, 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "tags"), "k")), "v");
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "attributes"), "n")),
                        "1,2");
    assert_true(json_is_true(json_object_get(a, "disabled")));
    json_t *b = json_array_get(g.recs, 1);
    assert_string_equal(json_string_value(json_object_get(b, "id")), "b,\"q\"");
    assert_null(json_object_get(b, "tags")); /* empty: absent */
    json_t *c = json_array_get(g.recs, 2);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "multi\nline");
    assert_int_equal(json_integer_value(json_array_get(g.lines, 2)), 5);
    got_free(&g);
}

static void test_csv_errors(void **state)
{
    (void)state;
    got_t g;
    char err[256] = "";
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"token\nx\n", "line 1: field id:"},
        {"id,colour\n", "line 1: field colour:"},
        {"id,tags\na,k=v\nb,novalue\n", "line 3: field tags:"},
        {"id,attributes\na,[1]\n", "line 2: field attributes:"},
        {"id,token\na,t,extra\n", "line 2: field -: more fields"},
        {"id,token\na\n", "line 2: field token: missing"},
        {"id,token\n\"a,t\n", "line 2: field id: a malformed"},
        {"id,token\na\"b,t\n", "line 2: field id: a malformed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(parse(cases[i].in, DEVICES_FMT_CSV, &g, err), -1);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err, cases[i].want);
        got_free(&g);
    }
}

static void test_csv_round_trip(void **state)
{
    (void)state;
    json_t *d =
        json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s},s:b}", "id", "x,\"y\"", "token_hash", "00ff",
                  "tags", "a", "1", "b", "2", "attributes", "q", "a\"b,c", "disabled", 1);
    devices_buf_t t = {0};
    devices_csv_header(&t);
    devices_csv_line(&t, d);
    got_t g;
    char err[256] = "";
    assert_int_equal(parse(t.p, DEVICES_FMT_CSV, &g, err), 0);
    json_t *r = json_array_get(g.recs, 0);
    assert_true(json_equal(json_object_get(r, "tags"), json_object_get(d, "tags")));
    assert_true(json_equal(json_object_get(r, "attributes"), json_object_get(d, "attributes")));
    assert_string_equal(json_string_value(json_object_get(r, "id")), "x,\"y\"");
    assert_true(json_is_true(json_object_get(r, "disabled")));
    got_free(&g);
    free(t.p);
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
