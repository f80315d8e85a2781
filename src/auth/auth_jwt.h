/* auth_jwt.h -- the `jwt` backend: a JSON Web Token in the CONNECT password
 * (or user name) field, verified with libjwt.
 *
 * HS256 with auth.jwt.secret; RS256/ES256 with a PEM public key
 * (auth.jwt.public_key_file) or a JWKS file (auth.jwt.jwks_file: libjwt 1.10
 * reads no JWKS, so each key is turned into PEM with OpenSSL at load, and
 * the token's "kid" picks one).  The header's alg must be the configured
 * one (no alg confusion, no "none").  exp and nbf are checked when present
 * (with auth.jwt.leeway_s); a token without exp is refused unless
 * auth.jwt.require_exp is off.  auth.jwt.audience (one of aud),
 * auth.jwt.issuer (iss) and auth.jwt.required_claims (present, not null)
 * are checked when set.  The claim auth.jwt.username_claim names the
 * user; the claim auth.jwt.acl_claim, when present, carries the client's
 * rules: {"pub": [filters], "sub": [filters], "all": [filters]} (allow).
 * A field that is not a JWT at all (no two dots) is PASS: the next
 * backend may know it; a bad or expired token is DENY 0x86.
 */
#ifndef ANTENNA_AUTH_JWT_H
#define ANTENNA_AUTH_JWT_H

#include <stddef.h>

#include "auth.h"
#include "conf.h"

auth_backend_t *auth_jwt_new(const conf_t *conf, char *err, size_t errlen);

#endif
