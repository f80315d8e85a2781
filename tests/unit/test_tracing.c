/* test_tracing.c -- the W3C traceparent parser and writer of the tracing
 * module (src/modules/tracing): the one valid form, the ones refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "modules/tracing/tracing.h"

static const char GOOD[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_parse_and_format(void **state)
{
    (void)state;
    uint8_t trace[16], parent[8], flags = 0;
    assert_int_equal(tracing_parse_traceparent(GOOD, strlen(GOOD), trace, parent, &flags), 1);
    assert_int_equal(trace[0], 0x4b);
    assert_int_equal(trace[15], 0x36);
    assert_int_equal(parent[7], 0xb7);
    assert_int_equal(flags, 1);
    char out[56];
    tracing_format_traceparent(out, trace, parent, flags);
    assert_string_equal(out, GOOD);
}

static void test_refused(void **state)
{
    (void)state;
    uint8_t trace[16], parent[8], flags;
    const char *bad[] = {
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* not hex */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tracing_parse_traceparent(bad[i], strlen(bad[i]), trace, parent, &flags),
                         0);
    /* the length decides before any byte past it is read */
    assert_int_equal(tracing_parse_traceparent(GOOD, 54, trace, parent, &flags), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
