/* test_rules.c -- the rule engine's pure parts (src/rules): the parser
 * (good statements, errors with their column and token) and the evaluator
 * (every operator and function, JSON paths, nulls, errors), over inputs
 * built by hand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules_action.h"
#include "rules/rules_eval.h"
#include "rules/rules_parse.h"

/* ---- the parser ---- */

static void parse_ok(const char *sql)
{
    rules_err_t e;
    rules_plan_t *p = rules_parse(sql, &e);
    if (p == NULL)
        fail_msg("%s: %s", sql, e.msg);
    rules_plan_free(p);
}

static void parse_bad(const char *sql, uint32_t col, const char *token, const char *words)
{
    rules_err_t e;
    rules_plan_t *p = rules_parse(sql, &e);
    if (p != NULL) {
        rules_plan_free(p);
        fail_msg("accepted: %s", sql);
    }
    if (e.column != col || strcmp(e.token, token) != 0 || strstr(e.msg, words) == NULL)
        fail_msg("%s: got column %u token \"%s\" msg \"%s\"", sql, e.column, e.token, e.msg);
}

static void test_parse_good(void **state)
{
    (void)state;
    parse_ok("SELECT * FROM \"#\"");
    parse_ok("select clientid, payload.temp as t, timestamp from \"sensors/+/data\" where "
             "payload.temp > 30");
    parse_ok("SELECT topic FROM \"t\", \"u/#\"");
    parse_ok("SELECT clientid FROM \"$events/client_connected\", \"$events/client_disconnected\","
             " \"$events/message_dropped\", \"$events/message_delivered\"");
    parse_ok("SELECT lower(upper(concat(topic, '-', qos))) AS x FROM \"t\" WHERE NOT (qos IN "
             "(1, 2)) OR retain = true AND username IS NOT NULL AND topic NOT LIKE 'a%'");
    parse_ok("SELECT -1 + 2 * 3 / 4 % 5 - -qos AS n, 1.5e3, 'it''s' FROM \"t\"");
    parse_ok("SELECT user_property.site, payload.a.0.b FROM \"t\" WHERE payload.x <> 1 AND "
             "payload.y != 2 AND qos <= 1 AND qos >= 0 AND qos < 3");
    parse_ok("SELECT now_ms(), format_time(timestamp, '%Y'), md5(payload), sha256(payload), "
             "base64_encode(payload), base64_decode('YQ=='), hex_encode(payload), "
             "json_encode(payload.a), json_decode('{}'), abs(-1), round(1.5), floor(1.5), "
             "ceil(1.5), topic(1), length(topic), substr(topic, 1), replace(topic, 'a', 'b'), "
             "trim(' a '), int('1'), float('1'), str(1), coalesce(null, 1) FROM \"t\"");
    rules_err_t e;
    rules_plan_t *p = rules_parse("SELECT payload.temp AS t, qos FROM \"a/#\", "
                                  "\"$events/client_connected\" WHERE payload.temp > 1",
                                  &e);
    assert_non_null(p);
    assert_int_equal(p->ncols, 2);
    assert_string_equal(p->cols[0].name, "t");
    assert_string_equal(p->cols[1].name, "qos");
    assert_int_equal(p->nfilters, 1);
    assert_string_equal(p->filters[0], "a/#");
    assert_int_equal(p->events, 1u << RULES_EV_CONNECTED);
    assert_true(p->uses_json);
    assert_true(p->where_end > p->where_start);
    rules_plan_free(p);
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_bad("SELECT clientid, payload FORM \"t/#\"", 26, "FORM", "expected FROM");
    parse_bad("SELEC x FROM \"t\"", 1, "SELEC", "expected SELECT");
    parse_bad("SELECT FROM \"t\"", 8, "FROM", "expected an expression");
    parse_bad("SELECT topic FROM t", 19, "t", "topic filter");
    parse_bad("SELECT topic FROM \"a/#/b\"", 19, "\"a/#/b\"", "not a topic filter");
    parse_bad("SELECT topic FROM \"$share/g/t\"", 19, "\"$share/g/t\"", "not a topic filter");
    parse_bad("SELECT topic FROM \"$events/nope\"", 19, "\"$events/nope\"", "unknown event");
    parse_bad("SELECT nope FROM \"t\"", 8, "nope", "unknown field");
    parse_bad("SELECT nope(1) FROM \"t\"", 8, "nope", "unknown function");
    parse_bad("SELECT lower() FROM \"t\"", 14, ")", "takes 1..1 arguments, got 0");
    parse_bad("SELECT topic FROM \"t\" WHERE", 28, "", "unexpected end of statement");
    parse_bad("SELECT topic FROM \"t\" WHERE qos = 1 garbage", 37, "garbage", "end of the");
    parse_bad("SELECT 'abc FROM \"t\"", 8, "'abc FROM \"t\"", "unterminated string");
    parse_bad("SELECT topic ; FROM \"t\"", 14, ";", "unexpected character");
    parse_bad("SELECT (qos FROM \"t\"", 13, "FROM", "expected \")\"");
    parse_bad("SELECT qos IS 1 FROM \"t\"", 15, "1", "expected NULL");
    parse_bad("SELECT topic AS FROM \"t\"", 17, "FROM", "column name after AS");
    parse_bad("SELECT clientid.x FROM \"t\"", 16, ".", "only payload and user_property");
    parse_bad("SELECT \"t\" FROM \"t\"", 8, "\"t\"", "single quotes");
    parse_bad("SELECT 99999999999999999999 FROM \"t\"", 8, "99999999999999999999", "range");
    /* nesting is bounded */
    char deep[400] = "SELECT ";
    for (int i = 0; i < 100; i++)
        strcat(deep, "(");
    strcat(deep, "1");
    rules_err_t e;
    rules_plan_t *p = rules_parse(deep, &e);
    assert_null(p);
    assert_non_null(strstr(e.msg, "nested too deeply"));
}

/* ---- the evaluator ---- */

static rules_input_t sample(void)
{
    static const char payload[] = "{\"temp\": 31.5, \"n\": 7, \"s\": \"Hi\", \"a\": {\"b\": [10, "
                                  "{\"c\": true}]}, \"z\": null}";
    rules_input_t in;
    memset(&in, 0, sizeof(in));
    in.clientid = "dev-1";
    in.username = "alice";
    in.topic = "sensors/d1/data";
    in.topic_len = (uint32_t)strlen(in.topic);
    in.payload = payload;
    in.payload_len = (uint32_t)strlen(payload);
    in.qos = 1;
    in.retain = 0;
    in.timestamp = 86400000; /* 1970-01-02 */
    in.protocol = "mqtt5";
    in.event = "message.publish";
    return in;
}

/* The value of expression expr (SELECT expr AS v FROM "#") as compact JSON,
 * or "ERR: message". */
static char *eval1(const char *expr, rules_input_t *in)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), "SELECT %s AS v FROM \"#\"", expr);
    rules_err_t e;
    rules_plan_t *p = rules_parse(sql, &e);
    if (p == NULL)
        fail_msg("%s: %s", sql, e.msg);
    rules_scratch_t sc;
    rules_scratch_init(&sc, 4096);
    json_t *row = rules_eval_row(p, in, &sc);
    char *out;
    if (row == NULL) {
        out = malloc(strlen(sc.err) + 6);
        sprintf(out, "ERR: %s", sc.err);
    } else {
        out = json_dumps(json_object_get(row, "v"), JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(row);
    }
    rules_scratch_free(&sc);
    rules_plan_free(p);
    return out;
}

static void expect(const char *expr, const char *want)
{
    rules_input_t in = sample();
    char *got = eval1(expr, &in);
    rules_input_done(&in);
    if (strncmp(want, "ERR", 3) == 0 ? strncmp(got, want, strlen(want)) != 0
                                     : strcmp(got, want) != 0) {
        fail_msg("%s: got %s, want %s", expr, got, want);
    }
    free(got);
}

static void test_eval_fields(void **state)
{
    (void)state;
    expect("clientid", "\"dev-1\"");
    expect("username", "\"alice\"");
    expect("topic", "\"sensors/d1/data\"");
    expect("qos", "1");
    expect("retain", "false");
    expect("timestamp", "86400000");
    expect("node", "0");
    expect("peer", "null");
    expect("protocol", "\"mqtt5\"");
    expect("event", "\"message.publish\"");
    expect("payload.temp", "31.5");
    expect("payload.a.b.0", "10");
    expect("payload.a.b.1.c", "true");
    expect("payload.a.b.5", "null");
    expect("payload.z", "null");
    expect("payload.missing.deeper", "null");
    expect("payload.a", "{\"b\":[10,{\"c\":true}]}");
    expect("user_property.k", "null");
    rules_input_t in = sample();
    in.user_props = json_pack("{s:s}", "k", "v");
    char *got = eval1("user_property.k", &in);
    assert_string_equal(got, "\"v\"");
    free(got);
    json_decref(in.user_props);
    rules_input_done(&in);
    /* a payload that is no JSON: paths are null */
    in = sample();
    in.payload = "not json";
    in.payload_len = 8;
    got = eval1("payload.temp", &in);
    assert_string_equal(got, "null");
    free(got);
    rules_input_done(&in);
}

static void test_eval_operators(void **state)
{
    (void)state;
    expect("1 + 2 * 3", "7");
    expect("(1 + 2) * 3", "9");
    expect("7 / 2", "3");
    expect("7 % 3", "1");
    expect("7.0 / 2", "3.5");
    expect("-qos", "-1");
    expect("1 - 0.5", "0.5");
    expect("5 % 0", "ERR: division by zero");
    expect("1 / 0", "ERR: division by zero");
    expect("'a' + 1", "ERR: + on string and int");
    expect("null + 1", "null");
    expect("1 = 1.0", "true");
    expect("1 != 2", "true");
    expect("1 <> 1", "false");
    expect("2 < 3", "true");
    expect("3 <= 3", "true");
    expect("'b' > 'a'", "true");
    expect("2 >= 3", "false");
    expect("'1' = 1", "false");
    expect("null = null", "null");
    expect("true AND false", "false");
    expect("true OR null", "true");
    expect("false AND null", "false");
    expect("true AND null", "null");
    expect("NOT true", "false");
    expect("NOT null", "null");
    expect("1 AND true", "ERR: AND takes booleans");
    expect("qos IN (0, 1)", "true");
    expect("qos IN (2, 3)", "false");
    expect("qos NOT IN (2, 3)", "true");
    expect("null IN (1)", "null");
    expect("topic LIKE 'sensors/%/data'", "true");
    expect("topic LIKE 'sensors/__/data'", "true");
    expect("topic LIKE 'sensors/_/data'", "false");
    expect("topic NOT LIKE '%x%'", "true");
    expect("qos LIKE 'a'", "ERR: LIKE takes strings");
    expect("peer IS NULL", "true");
    expect("clientid IS NOT NULL", "true");
    expect("payload.temp > 30 AND payload.s = 'Hi'", "true");
}

static void test_eval_functions(void **state)
{
    (void)state;
    expect("lower('AbC')", "\"abc\"");
    expect("upper(payload.s)", "\"HI\"");
    expect("concat(clientid, '/', qos, '/', 1.5, '/', true, null)", "\"dev-1/1/1.5/true\"");
    expect("substr('hello', 1, 3)", "\"ell\"");
    expect("substr('hello', 3)", "\"lo\"");
    expect("substr('hello', 9)", "\"\"");
    expect("length('héllo')", "6");
    expect("length(payload.a.b)", "2");
    expect("replace('a-b-c', '-', '+')", "\"a+b+c\"");
    expect("trim('  x ')", "\"x\"");
    expect("abs(-3)", "3");
    expect("abs(-2.5)", "2.5");
    expect("round(2.5)", "3");
    expect("floor(-1.5)", "-2");
    expect("ceil(1.2)", "2");
    expect("round(4)", "4");
    expect("topic(1)", "\"sensors\"");
    expect("topic(3)", "\"data\"");
    expect("topic(4)", "null");
    expect("topic(0)", "null");
    expect("json_encode(payload.a)", "\"{\\\"b\\\":[10,{\\\"c\\\":true}]}\"");
    expect("json_decode('{\"x\": [1]}')", "{\"x\":[1]}");
    expect("json_decode('nope')", "ERR: json_decode");
    expect("format_time(timestamp, '%Y-%m-%dT%H:%M:%SZ')", "\"1970-01-02T00:00:00Z\"");
    expect("md5('a')", "\"0cc175b9c0f1b6a831c399e269772661\"");
    expect("sha256('a')", "\"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb\"");
    expect("base64_encode('hello')", "\"aGVsbG8=\"");
    expect("base64_decode('aGVsbG8=')", "\"hello\"");
    expect("base64_decode('!!')", "ERR: base64_decode");
    expect("hex_encode('AZ')", "\"415a\"");
    expect("int('42')", "42");
    expect("int(2.9)", "2");
    expect("int('x')", "ERR: int");
    expect("float('1.25')", "1.25");
    expect("str(12)", "\"12\"");
    expect("coalesce(null, peer, 'd')", "\"d\"");
    expect("lower(null)", "null");
    expect("lower(1)", "ERR: lower takes a string");
    rules_input_t in = sample();
    char *got = eval1("now_ms() > 1600000000000", &in);
    assert_string_equal(got, "true");
    free(got);
    rules_input_done(&in);
}

static void test_eval_where_and_star(void **state)
{
    (void)state;
    rules_err_t e;
    rules_plan_t *p = rules_parse("SELECT * FROM \"#\" WHERE payload.temp > 40", &e);
    assert_non_null(p);
    rules_scratch_t sc;
    rules_scratch_init(&sc, 4096);
    rules_input_t in = sample();
    assert_int_equal(rules_eval_where(p, &in, &sc), 0);
    rules_plan_free(p);
    p = rules_parse("SELECT * FROM \"#\" WHERE payload.temp > 30", &e);
    assert_int_equal(rules_eval_where(p, &in, &sc), 1);
    json_t *row = rules_eval_row(p, &in, &sc);
    assert_string_equal(json_string_value(json_object_get(row, "clientid")), "dev-1");
    assert_int_equal(json_integer_value(json_object_get(row, "qos")), 1);
    assert_null(json_object_get(row, "peer")); /* nulls left out of * */
    json_decref(row);
    rules_plan_free(p);
    p = rules_parse("SELECT 1 FROM \"#\" WHERE payload.missing > 1", &e);
    assert_int_equal(rules_eval_where(p, &in, &sc), 0); /* null does not pass */
    rules_plan_free(p);
    p = rules_parse("SELECT 1 FROM \"#\" WHERE 1 / 0 = 1", &e);
    assert_int_equal(rules_eval_where(p, &in, &sc), -1);
    assert_non_null(strstr(sc.err, "division by zero"));
    rules_plan_free(p);
    rules_input_done(&in);
    rules_scratch_free(&sc);
}

static void test_templates(void **state)
{
    (void)state;
    json_t *row = json_pack("{s:s,s:i,s:[i],s:n}", "a", "x/y", "n", 5, "l", 1, "z");
    char out[64];
    long n = rules_template_render("t/${a}/${n}/${l}/${z}/${missing}", row, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "t/x/y/5/[1]//");
    assert_int_equal(rules_template_render("${a}${a}${a}", row, out, 5), -1);
    char err[80];
    assert_int_equal(rules_template_check("a ${b", err, sizeof(err)), -1);
    assert_int_equal(rules_template_check("a ${b}", err, sizeof(err)), 0);
    json_decref(row);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),     cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_eval_fields),    cmocka_unit_test(test_eval_operators),
        cmocka_unit_test(test_eval_functions), cmocka_unit_test(test_eval_where_and_star),
        cmocka_unit_test(test_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
