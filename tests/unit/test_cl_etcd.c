/* test_cl_etcd.c -- src/cluster/cl_etcd: the request builders and answer
 * readers of the etcd client (no etcd needed): the end of a prefix range,
 * keys and values in base64, 64-bit integers as strings, the put-if-absent
 * and compare-on-lease transactions, the watch request, reading a txn's
 * outcome and its kv, a kv's key and value decoded (and refused when not
 * base64 or too long); a flat create's and delete-if's text (written without
 * jansson) equal to the builders' JSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cluster/cl_etcd.h"

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

static void test_prefix_end(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(cl_etcd_prefix_end("/antenna/a/members/", out, sizeof(out)), 0);
    assert_string_equal(out, "/antenna/a/members0");
    assert_int_equal(cl_etcd_prefix_end("ab\xff", out, sizeof(out)), 0);
    assert_string_equal(out, "ac");
    assert_int_equal(cl_etcd_prefix_end("", out, sizeof(out)), -1);
    assert_int_equal(cl_etcd_prefix_end("\xff", out, sizeof(out)), -1);
    assert_int_equal(cl_etcd_prefix_end("abcdef", out, 4), -1);
}

static void test_requests(void **state)
{
    (void)state;
    char *s = dump(cl_etcd_range_req("/a/", "/a0"));
    assert_string_equal(s, "{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\"}");
    free(s);
    s = dump(cl_etcd_range_req("k", NULL));
    assert_string_equal(s, "{\"key\":\"aw==\"}");
    free(s);
    s = dump(cl_etcd_put_req("k", "v", 7587869038318141444LL));
    assert_string_equal(s,
                        "{\"key\":\"aw==\",\"lease\":\"7587869038318141444\",\"value\":\"dg==\"}");
    free(s);
    s = dump(cl_etcd_put_req("k", "", 0));
    assert_string_equal(s, "{\"key\":\"aw==\",\"value\":\"\"}");
    free(s);
    s = dump(cl_etcd_lease_req(42));
    assert_string_equal(s, "{\"ID\":\"42\"}");
    free(s);
    s = dump(cl_etcd_grant_req(10));
    assert_string_equal(s, "{\"TTL\":\"10\"}");
    free(s);
    s = dump(cl_etcd_watch_req("/a/", "/a0", 12));
    assert_string_equal(
        s,
        "{\"create_request\":{\"key\":\"L2Ev\",\"range_end\":\"L2Ew\",\"start_revision\":\"12\"}}");
    free(s);
}

static void test_txns(void **state)
{
    (void)state;
    char *s = dump(cl_etcd_create_req("k", "v", 5));
    assert_string_equal(s, "{\"compare\":[{\"create_revision\":\"0\",\"key\":\"aw==\",\"result\":"
                           "\"EQUAL\",\"target\":\"CREATE\"}],\"failure\":[{\"request_range\":{"
                           "\"key\":\"aw==\"}}],\"success\":[{\"request_put\":{\"key\":\"aw==\","
                           "\"lease\":\"5\",\"value\":\"dg==\"}}]}");
    free(s);
    s = dump(cl_etcd_put_if_lease_req("k", "v", 6, 5));
    assert_string_equal(s, "{\"compare\":[{\"key\":\"aw==\",\"lease\":\"5\",\"result\":\"EQUAL\","
                           "\"target\":\"LEASE\"}],\"failure\":[{\"request_range\":{\"key\":"
                           "\"aw==\"}}],\"success\":[{\"request_put\":{\"key\":\"aw==\",\"lease\":"
                           "\"6\",\"value\":\"dg==\"}}]}");
    free(s);
    /* the client-id registry's (cl_owner.c) */
    s = dump(cl_etcd_put_if_mod_req("k", "v", 6, 42));
    assert_string_equal(s, "{\"compare\":[{\"key\":\"aw==\",\"mod_revision\":\"42\",\"result\":"
                           "\"EQUAL\",\"target\":\"MOD\"}],\"failure\":[{\"request_range\":{"
                           "\"key\":\"aw==\"}}],\"success\":[{\"request_put\":{\"key\":\"aw==\","
                           "\"lease\":\"6\",\"value\":\"dg==\"}}]}");
    free(s);
    s = dump(cl_etcd_del_if_value_req("k", "v"));
    assert_string_equal(s, "{\"compare\":[{\"key\":\"aw==\",\"result\":\"EQUAL\",\"target\":"
                           "\"VALUE\",\"value\":\"dg==\"}],\"success\":[{"
                           "\"request_delete_range\":{\"key\":\"aw==\"}}]}");
    free(s);
}

/* answers as etcd 3.4's gateway writes them */
static void test_answers(void **state)
{
    (void)state;
    json_t *ok = json_loads("{\"header\":{\"revision\":\"2\"},\"succeeded\":true,\"responses\":"
                            "[{\"response_put\":{\"header\":{\"revision\":\"2\"}}}]}",
                            0, NULL);
    assert_non_null(ok);
    assert_true(cl_etcd_txn_ok(ok));
    assert_int_equal(cl_etcd_revision(ok), 2);
    assert_null(cl_etcd_txn_kv(ok));
    json_decref(ok);
    json_t *no = json_loads(
        "{\"header\":{\"revision\":\"9\"},\"responses\":[{\"response_range\":{\"header\":{},"
        "\"kvs\":[{\"key\":\"YQ==\",\"create_revision\":\"2\",\"value\":\"eA==\",\"lease\":"
        "\"4111120477921796871\"}],\"count\":\"1\"}}]}",
        0, NULL);
    assert_non_null(no);
    assert_false(cl_etcd_txn_ok(no));
    const json_t *kv = cl_etcd_txn_kv(no);
    assert_non_null(kv);
    assert_int_equal(cl_etcd_int(kv, "lease"), 4111120477921796871LL);
    char k[8], v[8];
    assert_int_equal(cl_etcd_kv(kv, k, sizeof(k), v, sizeof(v)), 0);
    assert_string_equal(k, "a");
    assert_string_equal(v, "x");
    json_decref(no);
    /* integers as numbers too; missing: 0 */
    json_t *j = json_loads("{\"TTL\":10,\"ID\":\"-3\"}", 0, NULL);
    assert_int_equal(cl_etcd_int(j, "TTL"), 10);
    assert_int_equal(cl_etcd_int(j, "ID"), -3);
    assert_int_equal(cl_etcd_int(j, "nope"), 0);
    assert_int_equal(cl_etcd_revision(j), 0);
    json_decref(j);
}

static void test_kv(void **state)
{
    (void)state;
    char k[8], v[8];
    /* a DELETE event: a key, no value */
    json_t *del = json_loads("{\"key\":\"YQ==\",\"mod_revision\":\"3\"}", 0, NULL);
    assert_int_equal(cl_etcd_kv(del, k, sizeof(k), NULL, 0), 0);
    assert_string_equal(k, "a");
    /* an empty value is left out of the JSON */
    assert_int_equal(cl_etcd_kv(del, k, sizeof(k), v, sizeof(v)), 0);
    assert_string_equal(v, "");
    json_decref(del);
    json_t *bad = json_loads("{\"key\":\"Y!==\",\"value\":\"eA==\"}", 0, NULL);
    assert_int_equal(cl_etcd_kv(bad, k, sizeof(k), v, sizeof(v)), -1);
    json_decref(bad);
    json_t *nokey = json_loads("{\"value\":\"eA==\"}", 0, NULL);
    assert_int_equal(cl_etcd_kv(nokey, k, sizeof(k), v, sizeof(v)), -1);
    json_decref(nokey);
    /* "abcdefgh" does not fit 8 bytes with its NUL */
    json_t *big = json_loads("{\"key\":\"YWJjZGVmZ2g=\"}", 0, NULL);
    assert_int_equal(cl_etcd_kv(big, k, sizeof(k), NULL, 0), -1);
    json_decref(big);
}

/* a batch (cl_etcd.h): creates flat, other txns nested in both branches */
static void test_batch(void **state)
{
    (void)state;
    const char *c1 = "{\"c\":1}{\"request_put\":{\"p\":1}}{\"request_range\":{\"r\":1}}";
    const char *c2 = "{\"c\":2}{\"request_delete_range\":{\"d\":2}}";
    const char *t = "{\"t\":3}";
    cl_etcd_part_t parts[] = {
        {.text = c1, .len = strlen(c1), .cmp_len = 7, .req_len = 23},
        {.text = c2, .len = strlen(c2), .cmp_len = 7, .req_len = strlen(c2) - 7},
        {.text = t, .len = strlen(t)},
    };
    size_t len;
    char *s = cl_etcd_batch_body(parts, 2, 3, &len);
    assert_string_equal(s,
                        "{\"compare\":[{\"c\":1},{\"c\":2}],\"success\":[{\"request_put\":{\"p\":"
                        "1}},{\"request_delete_range\":{\"d\":2}},{\"request_txn\":{\"t\":3}}],"
                        "\"failure\":[{\"request_txn\":{\"t\":3}}]}");
    assert_int_equal(len, strlen(s));
    free(s);
    /* nested only: no compare, no failure branch */
    s = cl_etcd_batch_body(parts + 2, 0, 1, &len);
    assert_string_equal(s, "{\"success\":[{\"request_txn\":{\"t\":3}}]}");
    assert_int_equal(len, strlen(s));
    free(s);
    /* creates only: no failure branch (a failed batch is sent again, nested) */
    s = cl_etcd_batch_body(parts, 1, 1, &len);
    assert_string_equal(s, "{\"compare\":[{\"c\":1}],\"success\":[{\"request_put\":{\"p\":1}}]}");
    assert_int_equal(len, strlen(s));
    free(s);
    /* a failed batch's answer, as etcd 3.4 writes it: the nested txns' */
    json_t *a = json_loads("{\"header\":{\"revision\":\"427\"},\"responses\":[{\"response_txn\":{"
                           "\"header\":{},\"succeeded\":true,\"responses\":[{\"response_put\":{"
                           "\"header\":{}}}]}}]}",
                           0, NULL);
    assert_non_null(a);
    assert_false(cl_etcd_txn_ok(a));
    assert_true(cl_etcd_txn_ok(cl_etcd_batch_txn(a, 0)));
    assert_null(cl_etcd_batch_txn(a, 1));
    json_decref(a);
}

/* part [off, off + len) of a flat txn's text equals want (json_equal) */
static void part_is(const char *text, size_t off, size_t len, const json_t *want)
{
    json_t *got = json_loadb(text + off, len, 0, NULL);
    assert_non_null(got);
    assert_true(json_equal(got, want));
    json_decref(got);
}

static void test_flat_parts(void **state)
{
    (void)state;
    /* a create: the same compare, op and failure op as cl_etcd_create_req */
    const char *keys[] = {"/antenna/antenna/clients/n12_s1234", "k", "/a/b/\xc3\xa9\"q"};
    const int64_t leases[] = {7587869038318141444LL, 0, 1};
    for (size_t i = 0; i < 3; i++) {
        cl_etcd_part_t p = cl_etcd_create_part(keys[i], "node12", leases[i]);
        json_t *want = cl_etcd_create_req(keys[i], "node12", leases[i]);
        assert_int_equal(strlen(p.text), p.len);
        assert_true(p.cmp_len > 0 && p.req_len > 0 && p.cmp_len + p.req_len < p.len);
        part_is(p.text, 0, p.cmp_len, json_array_get(json_object_get(want, "compare"), 0));
        part_is(p.text, p.cmp_len, p.req_len, json_array_get(json_object_get(want, "success"), 0));
        part_is(p.text, p.cmp_len + p.req_len, p.len - p.cmp_len - p.req_len,
                json_array_get(json_object_get(want, "failure"), 0));
        json_decref(want);
        free((char *)p.text);
    }
    /* a delete-if: cl_etcd_del_if_value_req's, no failure op */
    cl_etcd_part_t p = cl_etcd_delete_if_part(keys[0], "node12");
    json_t *want = cl_etcd_del_if_value_req(keys[0], "node12");
    assert_int_equal(strlen(p.text), p.len);
    assert_int_equal(p.cmp_len + p.req_len, p.len);
    part_is(p.text, 0, p.cmp_len, json_array_get(json_object_get(want, "compare"), 0));
    part_is(p.text, p.cmp_len, p.req_len, json_array_get(json_object_get(want, "success"), 0));
    json_decref(want);
    free((char *)p.text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_end), cmocka_unit_test(test_requests),
        cmocka_unit_test(test_txns),       cmocka_unit_test(test_answers),
        cmocka_unit_test(test_kv),         cmocka_unit_test(test_batch),
        cmocka_unit_test(test_flat_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
