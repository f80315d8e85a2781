/* test_module.c -- configuration sections of modules (conf_section_add and
 * the conf_sec_* readers, conf.h) and the module list (module.h): values,
 * defaults, every error with its "PATH:LINE: section.key" prefix, a failed
 * load leaving the configuration as it was, the display walk.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "module.h"

typedef struct {
    uint32_t count;
    uint64_t bytes;
    uint8_t on;
    char name[16];
    uint8_t mode;
} demo_conf_t;

static const char *const demo_modes[] = {"fast", "slow", NULL};

static int demo_load(conf_sec_t *s, void *values)
{
    demo_conf_t *d = values;
    if (conf_sec_u32(s, "count", 1, 100, &d->count) < 0 ||
        conf_sec_u64(s, "bytes", 0, UINT64_MAX, &d->bytes) < 0 ||
        conf_sec_bool(s, "on", &d->on) < 0 ||
        conf_sec_str(s, "name", d->name, sizeof(d->name), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_enum(s, "mode", demo_modes, &d->mode) < 0)
        return -1;
    if (d->mode == 1 && !conf_sec_has(s, "count"))
        return conf_sec_fail(s, "count", "required when mode is slow");
    return 0;
}

static void demo_walk(const void *values, conf_visit_fn fn, void *ud)
{
    const demo_conf_t *d = values;
    fn(ud, CONF_V_UINT, "count", NULL, d->count);
    fn(ud, CONF_V_STR, "name", d->name, 0);
}

static demo_conf_t *demo_add(conf_t *c)
{
    conf_defaults(c);
    demo_conf_t *d = conf_section_add(c, "demo", demo_load, demo_walk, sizeof(*d));
    assert_non_null(d);
    d->count = 7;
    snprintf(d->name, sizeof(d->name), "x");
    return d;
}

static char tmp_path[64];

static int load_yaml(conf_t *c, const char *yaml, char *err, size_t errlen)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/antenna-test-module-XXXXXX");
    int fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    int rc = conf_load(c, tmp_path, err, errlen);
    unlink(tmp_path);
    return rc;
}

static void test_values_and_defaults(void **state)
{
    (void)state;
    conf_t *c = malloc(sizeof(*c));
    char err[512];
    demo_add(c);
    assert_int_equal(load_yaml(c, "workers: 2\n", err, sizeof(err)), 0);
    const demo_conf_t *d = conf_section_values(c, "demo");
    assert_non_null(d);
    assert_int_equal(d->count, 7); /* absent: the default */
    assert_string_equal(d->name, "x");
    assert_int_equal(load_yaml(c, "demo:\n", err, sizeof(err)), 0); /* empty section */
    assert_int_equal(load_yaml(c,
                               "demo:\n  count: 9\n  bytes: 18446744073709551615\n  on: yes\n"
                               "  name: abc\n  mode: slow\nworkers: 3\n",
                               err, sizeof(err)),
                     0);
    d = conf_section_values(c, "demo");
    assert_int_equal(d->count, 9);
    assert_true(d->bytes == UINT64_MAX);
    assert_int_equal(d->on, 1);
    assert_string_equal(d->name, "abc");
    assert_int_equal(d->mode, 1);
    assert_int_equal(c->workers, 3); /* keys after the section are read */
    /* a copy of the configuration carries the section */
    conf_t *copy = malloc(sizeof(*copy));
    memcpy(copy, c, sizeof(*c));
    assert_int_equal(((const demo_conf_t *)conf_section_values(copy, "demo"))->count, 9);
    assert_null(conf_section_values(c, "nope"));
    free(copy);
    free(c);
}

static void expect_error(const char *yaml, const char *want)
{
    conf_t *c = malloc(sizeof(*c)), *before = malloc(sizeof(*c));
    char err[512], full[600];
    demo_add(c);
    memcpy(before, c, sizeof(*c));
    assert_int_equal(load_yaml(c, yaml, err, sizeof(err)), -1);
    snprintf(full, sizeof(full), "%s:%s", tmp_path, want);
    assert_string_equal(err, full);
    assert_memory_equal(c, before, sizeof(*c)); /* left as it was */
    free(c);
    free(before);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("demo:\n  count: 0\n", "2: demo.count: 0 is out of range 1..100");
    expect_error("demo:\n  count: 5\n  bytes: x\n",
                 "3: demo.bytes: expected an integer, got \"x\"");
    expect_error("demo:\n  on: maybe\n",
                 "2: demo.on: expected true or false (yes/no, on/off), got \"maybe\"");
    expect_error("demo:\n  name: \"\"\n", "2: demo.name: must not be empty");
    expect_error("demo:\n  name: abcdefghijklmnopq\n",
                 "2: demo.name: too long (17 characters, max 15)");
    expect_error("demo:\n  mode: odd\n",
                 "2: demo.mode: unknown value \"odd\" (one of: fast, slow)");
    expect_error("demo:\n  count: 5\n  other: 1\n", "3: demo.other: unknown key");
    expect_error("demo:\n  count: 5\n  count: 6\n", "3: demo.count: duplicate key");
    expect_error("demo:\n  count: 5\ndemo:\n  count: 6\n", "3: demo: duplicate key");
    expect_error("demo: 5\n", "1: demo: expected a mapping, got a scalar");
    expect_error("demo:\n  - 1\n", "1: demo: expected a mapping, got a sequence");
    expect_error("demo:\n  mode: slow\n", "1: demo.count: required when mode is slow");
    expect_error("demo:\n  count: 3\n  mode: slow\n  name: \"\"\n",
                 "4: demo.name: must not be empty");
    expect_error("dem:\n  count: 1\n", "1: dem: unknown key (did you mean \"demo\"?)");
}

static void test_add_refuses(void **state)
{
    (void)state;
    conf_t *c = malloc(sizeof(*c));
    demo_add(c);
    /* a name taken by the core or another section; no load function */
    assert_null(conf_section_add(c, "demo", demo_load, NULL, 8));
    assert_null(conf_section_add(c, "mqtt", demo_load, NULL, 8));
    assert_null(conf_section_add(c, "other", NULL, NULL, 8));
    assert_null(conf_section_add(c, "big", demo_load, NULL, CONF_SECTION_BYTES));
    free(c);
}

typedef struct {
    char text[4096];
    size_t len;
} shown_t;

static void show(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    shown_t *o = ud;
    o->len += (size_t)snprintf(o->text + o->len, sizeof(o->text) - o->len, "%d:%s:%s:%llu;", kind,
                               key ? key : "-", s ? s : "-", (unsigned long long)u);
}

static void test_walk(void **state)
{
    (void)state;
    conf_t *c = malloc(sizeof(*c));
    shown_t *o = calloc(1, sizeof(*o));
    demo_add(c);
    conf_walk(c, show, o);
    char want[128];
    snprintf(want, sizeof(want), "%d:demo:-:0;%d:count:-:7;%d:name:x:0;%d:demo:-:0;",
             CONF_V_SECTION, CONF_V_UINT, CONF_V_STR, CONF_V_END);
    assert_non_null(strstr(o->text, want));
    free(o);
    free(c);
}

/* The real list: every module with a section declares it, with defaults. */
static void test_module_list(void **state)
{
    (void)state;
    conf_t *c = malloc(sizeof(*c));
    char err[512];
    conf_defaults(c);
    module_conf_defaults(c);
    size_t n = 0;
    for (const module_t *const *m = module_list; *m; m++, n++) {
        assert_non_null((*m)->name);
        if ((*m)->section)
            assert_non_null(conf_section_values(c, (*m)->section));
    }
    assert_true(n >= 3);
    assert_int_equal(load_yaml(c, "heartbeat:\n  interval: 5\n  topic: a/b\n", err, sizeof(err)),
                     0);
    assert_int_equal(load_yaml(c, "heartbeat:\n  topic: a/#\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":2: heartbeat.topic: \"a/#\": a topic to publish on has no "
                                "wildcards"));
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_defaults), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_add_refuses),         cmocka_unit_test(test_walk),
        cmocka_unit_test(test_module_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
