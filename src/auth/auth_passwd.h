/* auth_passwd.h -- the password file: salted PBKDF2-SHA512 verifiers, the
 * `password_file` backend and the `antenna passwd` subcommand.
 *
 * One line per user, in one of three formats:
 *   user:$scram-sha-512$ITERATIONS$SALT_B64$STOREDKEY_B64$SERVERKEY_B64
 *   user:$pbkdf2-sha512$ITERATIONS$SALT_B64$HASH_B64        (older files)
 *   user:$7$ITERATIONS$SALT_B64$HASH_B64       (mosquitto_passwd 2.x files)
 * (standard base64, 16-byte salt (12 in mosquitto's), 64-byte keys; the
 * last two are the same PBKDF2 record under two names, so a Mosquitto
 * password file is read as it is).  `antenna passwd` writes
 * the first: SaltedPassword = PBKDF2(password, salt, iterations) is not
 * stored, only StoredKey = SHA512(HMAC(SaltedPassword, "Client Key")) and
 * ServerKey = HMAC(SaltedPassword, "Server Key") (RFC 5802), so the file's
 * contents log nobody in: a plain CONNECT password is checked by deriving
 * StoredKey again, SCRAM-SHA-512 (auth_scram.c) uses both keys as RFC 5802
 * says.  A line in the older formats holds SaltedPassword itself, which
 * SCRAM would accept as a password: such users can log in with a plain
 * password only (SCRAM is refused, with a log line asking to re-run
 * `antenna passwd`).  Blank lines and lines starting with '#' are ignored.
 *
 * PBKDF2 never runs on a worker: check() answers from a cache of
 * successful checks, or queues the check (auth_async.h's job queue) to
 * auth.password_threads threads and returns AUTH_PENDING; the chain's
 * asynchronous path brings the answer back to the worker.  An unknown user
 * costs the same PBKDF2 (against a dummy verifier with the file's usual
 * iteration count) so that the answer's timing does not tell which users
 * exist.  With auth.password_cache: persistent the cache is an
 * auth_pwcache_t (auth_pwcache.h), kept in the store across restarts.
 */
#ifndef ANTENNA_AUTH_PASSWD_H
#define ANTENNA_AUTH_PASSWD_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "conf.h"

#define AUTH_PASSWD_ITERATIONS 10000 /* default; the file says per line */
#define AUTH_PASSWD_SALT_LEN 16
#define AUTH_PASSWD_DK_LEN 64
#define AUTH_PASSWD_SALT_MAX 48
#define AUTH_PASSWD_HASH_MAX 320 /* longest hash text, with its NUL */

enum { AUTH_PASSWD_PBKDF2 = 1, AUTH_PASSWD_SCRAM };

/* A decoded hash text. */
typedef struct {
    uint8_t kind; /* AUTH_PASSWD_PBKDF2 or AUTH_PASSWD_SCRAM */
    uint32_t iterations;
    uint8_t salt[AUTH_PASSWD_SALT_MAX];
    size_t salt_len;
    uint8_t key[AUTH_PASSWD_DK_LEN];        /* PBKDF2: SaltedPassword; SCRAM: StoredKey */
    uint8_t server_key[AUTH_PASSWD_DK_LEN]; /* SCRAM: ServerKey */
} auth_passwd_rec_t;

/* Hash `pw` with a fresh random salt into out ("$scram-sha-512$..."):
 * returns 0, or -1 (RAND_bytes or PBKDF2 failed, out too small). */
int auth_passwd_hash(const uint8_t *pw, size_t len, uint32_t iterations, char *out, size_t outlen);
/* The same in mosquitto_passwd 2.x's format, "$7$ITERATIONS$SALT$HASH"
 * (the PBKDF2 output itself, a 12-byte salt): readable by mosquitto and by
 * antenna's api.users_file; no SCRAM for such a line. */
int auth_passwd_hash_mosquitto(const uint8_t *pw, size_t len, uint32_t iterations, char *out,
                               size_t outlen);
/* Decode a hash text of either format: 0, or -1 when it is malformed (why
 * set). */
int auth_passwd_decode(const char *hash, auth_passwd_rec_t *rec, const char **why);
/* StoredKey and ServerKey of a SaltedPassword (RFC 5802). */
void auth_passwd_scram_keys(const uint8_t salted[AUTH_PASSWD_DK_LEN],
                            uint8_t stored[AUTH_PASSWD_DK_LEN], uint8_t server[AUTH_PASSWD_DK_LEN]);
/* 1 when pw matches hash, 0 when not, -1 when hash is malformed.  Constant
 * time in the comparison (CRYPTO_memcmp). */
int auth_passwd_verify(const char *hash, const uint8_t *pw, size_t len);

/* The `password_file` backend over conf->auth.password_file: NULL with err
 * set ("FILE:LINE: problem") when the file cannot be loaded.  reload()
 * keeps the old users when the new file is bad, and forgets the cached
 * checks when it loads a new file.  check() of a CONNECT: an unknown user
 * is PASS, a wrong password DENY 0x86, a right one ALLOW, a full queue
 * DENY 0x97; with done() it answers at once only from the cache (or when
 * no password was given), else PENDING; without done() it verifies on the
 * caller's thread. */
auth_backend_t *auth_passwd_new(const conf_t *conf, char *err, size_t errlen);
/* The stored hash of `user` copied into out (AUTH_PASSWD_HASH_MAX): 0, or
 * -1 when unknown. */
int auth_passwd_lookup(auth_backend_t *b, const char *user, char *out, size_t outlen);
/* What SCRAM-SHA-512 offers `user`: 1 and the user's record (SCRAM
 * format), or 0 and a fake record that looks like one (same iteration
 * count, a salt derived from the user name with a per-process secret, so
 * the same on every try) when the user is unknown or its line is in the
 * older format (then logged, at most once a minute). */
int auth_passwd_scram_record(auth_backend_t *b, const char *user, auth_passwd_rec_t *rec);

typedef struct {
    uint64_t verified;          /* PBKDF2 runs on the threads */
    uint64_t cache_hits;        /* CONNECTs answered from the cache */
    uint64_t queue_full;        /* refused at once: too many checks waiting */
    uint64_t persistent_loaded; /* auth.password_cache: persistent: entries loaded at start */
} auth_passwd_stats_t;
/* b must be a backend made by auth_passwd_new(). */
void auth_passwd_stats(auth_backend_t *b, auth_passwd_stats_t *out);

struct auth_pwcache;
/* auth.password_cache: persistent (before the workers start): checks are
 * answered from pc (auth_pwcache.h), which replaces the in-memory cache and
 * is owned by the backend from now on. */
void auth_passwd_use_pwcache(auth_backend_t *b, struct auth_pwcache *pc);

/* `antenna passwd [-b] [-D] [-i ITER] FILE USER [PASSWORD]` */
int auth_passwd_cli(int argc, char **argv);

#endif
