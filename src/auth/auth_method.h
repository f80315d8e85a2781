/* auth_method.h -- MQTT 5 enhanced authentication: the method plug-in
 * interface (CONNECT -> AUTH 0x18 ... -> CONNACK, and re-authentication
 * with AUTH 0x19 after CONNACK).
 *
 * proto.c drives the exchange: the CONNECT's Authentication Method picks a
 * method (none found: CONNACK 0x8C), start() gets the CONNECT's
 * Authentication Data, step() the data of each AUTH 0x18 from the client.
 * CONTINUE sends out->data in an AUTH 0x18; SUCCESS ends it (out->data, if
 * any, goes in the CONNACK, or in an AUTH 0x00 on re-authentication) and
 * names the user; FAIL refuses (CONNACK 0x86, or DISCONNECT 0x86 on
 * re-authentication).  One state per exchange, owned by the connection's
 * worker; free() releases it whatever the outcome.
 *
 * Methods: SCRAM-SHA-512 (auth_scram.c) over the password file.
 */
#ifndef ANTENNA_AUTH_METHOD_H
#define ANTENNA_AUTH_METHOD_H

#include <stddef.h>
#include <stdint.h>

struct auth_chain;
typedef struct auth_method_state auth_method_state_t;

typedef enum { AUTH_METHOD_CONTINUE = 0, AUTH_METHOD_SUCCESS, AUTH_METHOD_FAIL } auth_method_rc_t;

typedef struct {
    uint8_t *data; /* to send (malloc'd), or NULL */
    size_t len;
    char *user;      /* SUCCESS: the authenticated user; FAIL: the user name
                     * tried, when known (malloc'd), or NULL */
    const char *why; /* FAIL: for the log */
} auth_method_out_t;

typedef struct auth_method {
    const char *name;
    auth_method_rc_t (*start)(struct auth_chain *ch, auth_method_state_t **st, const uint8_t *in,
                              size_t len, auth_method_out_t *out);
    auth_method_rc_t (*step)(auth_method_state_t *st, const uint8_t *in, size_t len,
                             auth_method_out_t *out);
    void (*free)(auth_method_state_t *st);
} auth_method_t;

/* The method called `name`, when this broker offers it (its backend is
 * configured), else NULL. */
const auth_method_t *auth_method_find(struct auth_chain *ch, const uint8_t *name, size_t len);

/* SCRAM-SHA-512 (auth_scram.c). */
extern const auth_method_t auth_scram_sha512;

#endif
