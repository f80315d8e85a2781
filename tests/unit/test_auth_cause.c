/* test_auth_cause.c -- the one map from authentication causes
 * (src/auth/auth_cause.h) to MQTT's CONNACK codes: every cause has a name
 * and a refusing code in both protocol versions, the codes are the ones
 * the specifications give for each case, and the names are distinct (they
 * are the `cause` of the auth_failed event).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "auth_cause.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"

static void every_cause_refuses_and_is_named(void **state)
{
    (void)state;
    assert_int_equal(auth_cause_reason_v5(AUTH_OK), MQTT_RC_SUCCESS);
    assert_int_equal(auth_cause_connack_v3(AUTH_OK), MQTT_CONNACK_ACCEPTED);
    for (int c = 1; c < AUTH_CAUSES; c++) {
        const char *name = auth_cause_name((auth_cause_t)c);
        assert_string_not_equal(name, "?");
        assert_true(auth_cause_reason_v5((auth_cause_t)c) >= 0x80); /* a refusal */
        uint8_t rc3 = auth_cause_connack_v3((auth_cause_t)c);
        assert_true(rc3 >= MQTT_CONNACK_ID_REJECTED && rc3 <= MQTT_CONNACK_NOT_AUTHORIZED);
        for (int d = 0; d < c; d++)
            assert_string_not_equal(name, auth_cause_name((auth_cause_t)d));
    }
    /* out of range: still a refusal, never a success */
    assert_string_equal(auth_cause_name(AUTH_CAUSES), "?");
    assert_int_equal(auth_cause_reason_v5(AUTH_CAUSES), MQTT_RC_NOT_AUTHORIZED);
    assert_int_equal(auth_cause_connack_v3(AUTH_CAUSES), MQTT_CONNACK_NOT_AUTHORIZED);
}

static void the_codes(void **state)
{
    (void)state;
    static const struct {
        auth_cause_t cause;
        const char *name;
        uint8_t rc5, rc3;
    } want[] = {
        {AUTH_BAD_CREDENTIALS, "bad_credentials", 0x86, 4},
        {AUTH_NOT_AUTHORIZED, "not_authorized", 0x87, 5},
        {AUTH_ANONYMOUS, "anonymous", 0x87, 5},
        {AUTH_BANNED, "banned", 0x8A, 5},
        {AUTH_BAD_METHOD, "bad_method", 0x8C, 5},
        {AUTH_METHOD_FAILED, "method_failed", 0x86, 4},
        {AUTH_CLIENT_ID_REFUSED, "client_id_not_bound", 0x85, 2},
        {AUTH_BACKEND_UNAVAILABLE, "backend_unavailable", 0x88, 3},
        {AUTH_BUSY, "busy", 0x97, 3},
    };
    assert_int_equal(sizeof(want) / sizeof(want[0]), AUTH_CAUSES - 1); /* all of them */
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_string_equal(auth_cause_name(want[i].cause), want[i].name);
        assert_int_equal(auth_cause_reason_v5(want[i].cause), want[i].rc5);
        assert_int_equal(auth_cause_connack_v3(want[i].cause), want[i].rc3);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_cause_refuses_and_is_named),
        cmocka_unit_test(the_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
