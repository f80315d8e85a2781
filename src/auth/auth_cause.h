/* auth_cause.h -- why authentication refused a client, in no protocol's
 * words, and the one map from a cause to MQTT's codes.
 *
 * A backend says why it denies (auth_answer_t.cause), the broker's own
 * checks say why they refuse (anonymous, banned, client id binding,
 * enhanced authentication), and the auth_failed event carries the same
 * value (event.h).  Only auth_cause_reason_v5() and auth_cause_connack_v3()
 * turn a cause into an MQTT CONNACK code; a gateway for another protocol
 * maps the same causes to its own codes.  Pure: any thread.
 */
#ifndef ANTENNA_AUTH_CAUSE_H
#define ANTENNA_AUTH_CAUSE_H

#include <stdint.h>

typedef enum {
    AUTH_OK = 0,              /* allowed; on a DENY: no cause given (the chain picks) */
    AUTH_BAD_CREDENTIALS,     /* wrong user name or password, a bad or expired token */
    AUTH_NOT_AUTHORIZED,      /* the credentials do not suffice (auth.default, a rule) */
    AUTH_ANONYMOUS,           /* no credentials where anonymous clients are refused */
    AUTH_BANNED,              /* the address or the user name is banned (auth.ban) */
    AUTH_BAD_METHOD,          /* an MQTT 5 authentication method nobody implements */
    AUTH_METHOD_FAILED,       /* the enhanced authentication exchange failed (SCRAM) */
    AUTH_CLIENT_ID_REFUSED,   /* the client id is not the user's (auth.client_id_binding) */
    AUTH_BACKEND_UNAVAILABLE, /* a backend could not answer (HTTP, Redis down or timed
                               * out) and its on_error is deny */
    AUTH_BUSY,                /* a backend's queue is full and its on_error is deny */
    AUTH_CAUSES
} auth_cause_t;

/* The name in events and logs ("bad_credentials", ...); "?" when unknown. */
const char *auth_cause_name(auth_cause_t c);
/* The MQTT 5 CONNACK reason code of a refusal for cause c (0 for AUTH_OK). */
uint8_t auth_cause_reason_v5(auth_cause_t c);
/* The MQTT 3.1/3.1.1 CONNACK return code (0 for AUTH_OK). */
uint8_t auth_cause_connack_v3(auth_cause_t c);

#endif
