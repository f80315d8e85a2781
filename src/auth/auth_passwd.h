/* auth_passwd.h -- the password file: salted PBKDF2-SHA512 hashes, the
 * `password_file` backend and the `antenna passwd` subcommand.
 *
 * One line per user: `user:$pbkdf2-sha512$ITERATIONS$SALT_B64$HASH_B64`
 * (standard base64, 16-byte salt, 64-byte derived key).  Blank lines and
 * lines starting with '#' are ignored.  A password is never stored in
 * clear.  The same salted hash is the SaltedPassword of SCRAM-SHA-512
 * (auth_scram.c), so the file needs no other secret for that method.
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
#define AUTH_PASSWD_HASH_MAX 200     /* longest hash text, with its NUL */

/* Hash `pw` with a fresh random salt into out ("$pbkdf2-sha512$..."):
 * returns 0, or -1 (RAND_bytes or PBKDF2 failed). */
int auth_passwd_hash(const uint8_t *pw, size_t len, uint32_t iterations, char *out,
                     size_t outlen);
/* Split a hash text: returns 0 or -1 when it is malformed (why set). */
int auth_passwd_parse(const char *hash, uint32_t *iterations, uint8_t *salt, size_t *salt_len,
                      uint8_t dk[AUTH_PASSWD_DK_LEN], const char **why);
/* 1 when pw matches hash, 0 when not, -1 when hash is malformed.  Constant
 * time in the comparison (CRYPTO_memcmp). */
int auth_passwd_verify(const char *hash, const uint8_t *pw, size_t len);

/* The `password_file` backend over conf->auth.password_file: NULL with err
 * set ("FILE:LINE: problem") when the file cannot be loaded.  reload()
 * keeps the old users when the new file is bad.  check(): an unknown user
 * is PASS, a wrong password DENY 0x86, a right one ALLOW. */
auth_backend_t *auth_passwd_new(const conf_t *conf, char *err, size_t errlen);
/* The stored hash of `user` copied into out (AUTH_PASSWD_HASH_MAX): 0, or
 * -1 when unknown (for SCRAM). */
int auth_passwd_lookup(auth_backend_t *b, const char *user, char *out, size_t outlen);

/* `antenna passwd [-b] [-D] [-i ITER] FILE USER [PASSWORD]` */
int auth_passwd_cli(int argc, char **argv);

#endif
