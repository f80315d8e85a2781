/* auth_cause.c -- names of authentication causes and their MQTT codes
 * (auth_cause.h).  One table: a cause added without its codes and name
 * fails the unit test (test_auth_cause). */
#include "auth_cause.h"

#include "mqtt_codec.h"
#include "mqtt_props.h"

static const struct {
    const char *name;
    uint8_t rc5, rc3;
} causes[AUTH_CAUSES] = {
    [AUTH_OK] = {"ok", MQTT_RC_SUCCESS, MQTT_CONNACK_ACCEPTED},
    [AUTH_BAD_CREDENTIALS] = {"bad_credentials", MQTT_RC_BAD_USERNAME_OR_PASSWORD,
                              MQTT_CONNACK_BAD_CREDENTIALS},
    [AUTH_NOT_AUTHORIZED] = {"not_authorized", MQTT_RC_NOT_AUTHORIZED, MQTT_CONNACK_NOT_AUTHORIZED},
    [AUTH_ANONYMOUS] = {"anonymous", MQTT_RC_NOT_AUTHORIZED, MQTT_CONNACK_NOT_AUTHORIZED},
    /* 3.1.1 has no "banned": not authorized */
    [AUTH_BANNED] = {"banned", MQTT_RC_BANNED, MQTT_CONNACK_NOT_AUTHORIZED},
    /* only an MQTT 5 CONNECT names a method; 3.1.1 for completeness */
    [AUTH_BAD_METHOD] = {"bad_method", MQTT_RC_BAD_AUTHENTICATION_METHOD,
                         MQTT_CONNACK_NOT_AUTHORIZED},
    [AUTH_METHOD_FAILED] = {"method_failed", MQTT_RC_BAD_USERNAME_OR_PASSWORD,
                            MQTT_CONNACK_BAD_CREDENTIALS},
    [AUTH_CLIENT_ID_REFUSED] = {"client_id_not_bound", MQTT_RC_CLIENT_ID_NOT_VALID,
                                MQTT_CONNACK_ID_REJECTED},
    /* the client should come back later, not change its credentials */
    [AUTH_BACKEND_UNAVAILABLE] = {"backend_unavailable", MQTT_RC_SERVER_UNAVAILABLE,
                                  MQTT_CONNACK_UNAVAILABLE},
    [AUTH_BUSY] = {"busy", MQTT_RC_QUOTA_EXCEEDED, MQTT_CONNACK_UNAVAILABLE},
};

const char *auth_cause_name(auth_cause_t c)
{
    return (unsigned)c < AUTH_CAUSES && causes[c].name ? causes[c].name : "?";
}

uint8_t auth_cause_reason_v5(auth_cause_t c)
{
    /* an unknown cause refuses all the same */
    return (unsigned)c < AUTH_CAUSES ? causes[c].rc5 : MQTT_RC_NOT_AUTHORIZED;
}

uint8_t auth_cause_connack_v3(auth_cause_t c)
{
    return (unsigned)c < AUTH_CAUSES ? causes[c].rc3 : MQTT_CONNACK_NOT_AUTHORIZED;
}
