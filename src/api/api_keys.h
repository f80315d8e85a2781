/* api_keys.h -- credentials of the management API: API keys and users.
 *
 * An API key is 32 random bytes written as "ak_" + 64 hex digits.  Only
 * its SHA-256 (hex, of the whole key text) is stored, one "NAME:HEX" line
 * per key in the keys file, so a leaked file grants nothing.  Users (basic
 * auth) are "NAME:HASH" lines with HASH in the password-file format
 * "$7$ITERATIONS$SALT_B64$HASH_B64" (PBKDF2-HMAC-SHA512, 64 bytes; the
 * format mosquitto_passwd writes).
 *
 * A credential set is loaded by the main thread (start, SIGHUP) and then
 * read-only: the API keeps it behind a pointer swapped under its lock.
 */
#ifndef ANTENNA_API_KEYS_H
#define ANTENNA_API_KEYS_H

#include <stddef.h>

#define API_KEY_LEN 67              /* "ak_" + 64 hex */
#define API_PASSWD_ITERATIONS 10000 /* `antenna apikey passwd`'s default */

typedef struct api_creds api_creds_t;

/* Append NAME:sha256hex(key) to FILE (created 0600) and write the new key
 * into out (>= API_KEY_LEN + 1 bytes).  0, or -1 with err set. */
int api_keys_create(const char *file, const char *name, char *out, char *err, size_t errlen);

/* Load the keys file and the users file ("" = none).  NULL with err set
 * naming the file and line on a bad file, or on a user hashed with fewer
 * than min_iterations PBKDF2 iterations (api.min_password_iterations). */
api_creds_t *api_creds_load(const char *keys_file, const char *users_file, unsigned min_iterations,
                            char *err, size_t errlen);
void api_creds_free(api_creds_t *c);
/* Number of keys and users loaded. */
size_t api_creds_count(const api_creds_t *c);

/* Check an "Authorization" header value ("Bearer KEY" or "Basic B64").
 * Returns the name of the key or user (owned by c) or NULL. */
const char *api_creds_check(const api_creds_t *c, const char *authorization);

/* `antenna apikey create FILE NAME`, `antenna apikey passwd [-i N] FILE
 * NAME` (main.c's commands[]). */
int api_keys_cli(int argc, char **argv);

#endif
