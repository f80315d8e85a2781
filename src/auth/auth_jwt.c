/* auth_jwt.c -- JWT verification with libjwt, JWKS keys via OpenSSL
 * (see auth_jwt.h).
 *
 * Keys are loaded at start and on SIGHUP (replaced whole under a
 * read-write lock; a bad file keeps the old keys).  Verification runs on
 * the worker: a signature check costs tens of microseconds, no I/O.
 */
#include "auth_jwt.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth_acl.h"
#include "b64.h"
#include "log.h"
#include "util.h"

#define MAX_KEYS 32

typedef struct {
    char kid[128]; /* "" = any */
    char *pem;     /* public key PEM, or the HMAC secret */
    size_t len;
} jwt_key_t;

typedef struct {
    auth_backend_t b;
    conf_auth_jwt_t conf;
    pthread_rwlock_t lock;
    jwt_key_t keys[MAX_KEYS];
    uint32_t nkeys;
} jwt_backend_t;

static const jwt_alg_t algs[] = {JWT_ALG_HS256, JWT_ALG_RS256, JWT_ALG_ES256};
static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

/* ---- key loading ---- */

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = an_malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    int bad = ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: cannot read (or larger than 1 MiB)", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* base64url (no padding) into a fresh buffer: length or -1 (then *out is
 * NULL). */
static long b64url_dup(const char *in, size_t len, uint8_t **out)
{
    *out = an_malloc(B64_DECODED_MAX(len) + 1);
    long n = b64_decode_url(in, len, *out, B64_DECODED_MAX(len));
    if (n < 0) {
        free(*out);
        *out = NULL;
    }
    return n;
}

static BIGNUM *bn_from_b64url(const char *s)
{
    uint8_t *raw = NULL;
    long n = s ? b64url_dup(s, strlen(s), &raw) : -1;
    if (n <= 0) {
        free(raw);
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    free(raw);
    return bn;
}

/* One JWK (RSA n/e or EC P-256 x/y) to a PEM public key. */
static char *jwk_to_pem(json_t *k, const char **why)
{
    const char *kty = json_string_value(json_object_get(k, "kty"));
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    uint8_t *x = NULL, *y = NULL;
    uint8_t point[65]; /* read by OSSL_PARAM_BLD_to_param below */
    BIO *bio = NULL;
    char *pem = NULL;
    *why = "unsupported key type (RSA or EC P-256)";
    if (kty && strcmp(kty, "RSA") == 0) {
        n = bn_from_b64url(json_string_value(json_object_get(k, "n")));
        e = bn_from_b64url(json_string_value(json_object_get(k, "e")));
        *why = "bad RSA key (n, e)";
        if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto out;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(k, "crv"));
        const char *xs = json_string_value(json_object_get(k, "x"));
        const char *ys = json_string_value(json_object_get(k, "y"));
        *why = "bad EC key (crv P-256, x, y)";
        if (!crv || strcmp(crv, "P-256") != 0 || !xs || !ys)
            goto out;
        long xl = b64url_dup(xs, strlen(xs), &x), yl = b64url_dup(ys, strlen(ys), &y);
        if (xl != 32 || yl != 32)
            goto out;
        point[0] = 4;
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
            goto out;
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else {
        goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    if (!ctx || !params || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (!bio || !PEM_write_bio_PUBKEY(bio, pkey))
        goto out;
    char *data;
    long len = BIO_get_mem_data(bio, &data);
    pem = an_strndup(data, (size_t)len);
    *why = NULL;
out:
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(x);
    free(y);
    return pem;
}

static void keys_free(jwt_key_t *keys, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        OPENSSL_cleanse(keys[i].pem, keys[i].len);
        free(keys[i].pem);
    }
}

static int keys_load(const conf_auth_jwt_t *c, jwt_key_t *keys, uint32_t *nkeys, char *err,
                     size_t errlen)
{
    *nkeys = 0;
    if (c->alg == CONF_JWT_HS256) {
        if (c->secret[0] == '\0') {
            snprintf(err, errlen, "auth.jwt.secret: required with alg HS256");
            return -1;
        }
        keys[0].kid[0] = '\0';
        keys[0].len = strlen(c->secret);
        keys[0].pem = an_strndup(c->secret, keys[0].len);
        *nkeys = 1;
        return 0;
    }
    if (c->public_key_file[0]) {
        size_t len;
        char *pem = read_file(c->public_key_file, &len, err, errlen);
        if (pem == NULL)
            return -1;
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (pk == NULL) {
            snprintf(err, errlen, "%s: not a PEM public key", c->public_key_file);
            free(pem);
            return -1;
        }
        EVP_PKEY_free(pk);
        keys[0].kid[0] = '\0';
        keys[0].pem = pem;
        keys[0].len = len;
        *nkeys = 1;
        return 0;
    }
    if (c->jwks_file[0] == '\0') {
        snprintf(err, errlen, "auth.jwt: public_key_file or jwks_file required with alg %s",
                 alg_names[c->alg]);
        return -1;
    }
    json_error_t je;
    json_t *root = json_load_file(c->jwks_file, 0, &je);
    if (root == NULL) {
        snprintf(err, errlen, "%s:%d: %s", c->jwks_file, je.line, je.text);
        return -1;
    }
    json_t *arr = json_object_get(root, "keys");
    size_t i;
    json_t *k;
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        snprintf(err, errlen, "%s: no \"keys\" array", c->jwks_file);
        goto fail;
    }
    json_array_foreach(arr, i, k)
    {
        const char *why = NULL;
        if (*nkeys == MAX_KEYS) {
            snprintf(err, errlen, "%s: more than %d keys", c->jwks_file, MAX_KEYS);
            goto fail;
        }
        char *pem = jwk_to_pem(k, &why);
        if (pem == NULL) {
            snprintf(err, errlen, "%s: key %zu: %s", c->jwks_file, i, why);
            goto fail;
        }
        const char *kid = json_string_value(json_object_get(k, "kid"));
        snprintf(keys[*nkeys].kid, sizeof(keys[0].kid), "%s", kid ? kid : "");
        keys[*nkeys].pem = pem;
        keys[*nkeys].len = strlen(pem);
        (*nkeys)++;
    }
    json_decref(root);
    return 0;
fail:
    keys_free(keys, *nkeys);
    *nkeys = 0;
    json_decref(root);
    return -1;
}

/* ---- verification ---- */

static auth_verdict_t deny(auth_answer_t *out, const auth_request_t *r, const char *why)
{
    log_fields_t f = {.event = "auth_backend_refused",
                      .client_id = r->client_id,
                      .username = r->username,
                      .peer = r->peer,
                      .reason = auth_cause_name(AUTH_BAD_CREDENTIALS),
                      .backend = "jwt"};
    log_ev(AN_LOG_INFO, &f, "JWT refused for client '%s' (%s): %s", r->client_id,
           r->peer ? r->peer : "?", why);
    out->cause = AUTH_BAD_CREDENTIALS;
    return out->verdict = AUTH_DENY;
}

/* A time claim as seconds (integer or real); 0 absent, -1 malformed. */
static int time_claim(json_t *claims, const char *name, double *v)
{
    json_t *j = json_object_get(claims, name);
    if (j == NULL)
        return 0;
    if (!json_is_number(j))
        return -1;
    *v = json_number_value(j);
    return 1;
}

/* aud (a string or an array of strings, RFC 7519 4.1.3) names want. */
static int aud_has(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *e;
    if (!json_is_array(aud))
        return 0;
    json_array_foreach(aud, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), want) == 0)
            return 1;
    }
    return 0;
}

/* auth.jwt.audience, issuer and required_claims: NULL when the claims
 * satisfy them, else why not. */
static const char *claims_check(const conf_auth_jwt_t *c, json_t *claims)
{
    if (c->audience[0] && !aud_has(json_object_get(claims, "aud"), c->audience))
        return "aud does not name auth.jwt.audience";
    if (c->issuer[0]) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, c->issuer) != 0)
            return "iss is not auth.jwt.issuer";
    }
    for (uint32_t i = 0; i < c->nrequired_claims; i++) {
        json_t *v = json_object_get(claims, c->required_claims[i]);
        if (v == NULL || json_is_null(v))
            return "a claim of auth.jwt.required_claims is missing";
    }
    return NULL;
}

static auth_acl_t *acl_from_claim(json_t *j, const char **why)
{
    static const struct {
        const char *key;
        uint8_t access;
    } lists[] = {{"pub", AUTH_ACT_PUBLISH},
                 {"sub", AUTH_ACT_SUBSCRIBE},
                 {"all", AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE}};
    *why = "ACL claim: expected {\"pub\": [...], \"sub\": [...], \"all\": [...]}";
    if (!json_is_object(j))
        return NULL;
    auth_acl_t *a = auth_acl_new();
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        size_t k = 0;
        while (k < 3 && strcmp(lists[k].key, key) != 0)
            k++;
        if (k == 3 || !json_is_array(v))
            goto bad;
        size_t i;
        json_t *f;
        json_array_foreach(v, i, f)
        {
            if (!json_is_string(f) ||
                auth_acl_add(a, 1, lists[k].access, AUTH_ACL_ANY, NULL, json_string_value(f)) < 0)
                goto bad;
        }
    }
    return a;
bad:
    auth_acl_free(a);
    return NULL;
}

static auth_verdict_t jwt_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                                auth_done_fn done, void *token_)
{
    (void)done;
    (void)token_;
    jwt_backend_t *jb = (jwt_backend_t *)b;
    const conf_auth_jwt_t *c = &jb->conf;
    if (r->action != AUTH_ACT_CONNECT)
        return out->verdict = AUTH_PASS;
    const char *src = c->field == CONF_JWT_FROM_USERNAME ? r->username : (const char *)r->password;
    size_t slen = c->field == CONF_JWT_FROM_USERNAME ? (src ? strlen(src) : 0) : r->password_len;
    if (src == NULL || slen == 0 || slen > 16384)
        return out->verdict = AUTH_PASS;
    char *token = an_strndup(src, slen);
    char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    jwt_t *jwt = NULL;
    json_t *hdr = NULL, *claims = NULL;
    char *claims_text = NULL;
    uint8_t *raw = NULL;
    auth_verdict_t v;
    if (strlen(token) != slen || dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.')) {
        v = out->verdict = AUTH_PASS; /* not a JWT: not ours */
        goto out;
    }
    long hl = b64url_dup(token, (size_t)(dot1 - token), &raw);
    hdr = hl > 0 ? json_loadb((const char *)raw, (size_t)hl, 0, NULL) : NULL;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    if (alg == NULL || strcmp(alg, alg_names[c->alg]) != 0) {
        v = deny(out, r, "header alg is not the configured one");
        goto out;
    }
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    int rc = -1;
    pthread_rwlock_rdlock(&jb->lock);
    for (uint32_t i = 0; i < jb->nkeys && rc != 0; i++) {
        if (kid && jb->keys[i].kid[0] && strcmp(kid, jb->keys[i].kid) != 0)
            continue;
        rc = jwt_decode(&jwt, token, (const unsigned char *)jb->keys[i].pem, (int)jb->keys[i].len);
        if (rc != 0)
            jwt = NULL;
    }
    pthread_rwlock_unlock(&jb->lock);
    if (rc != 0 || jwt == NULL || jwt_get_alg(jwt) != algs[c->alg]) {
        v = deny(out, r, "bad signature or malformed token");
        goto out;
    }
    claims_text = jwt_get_grants_json(jwt, NULL);
    claims = claims_text ? json_loads(claims_text, 0, NULL) : NULL;
    if (!json_is_object(claims)) {
        v = deny(out, r, "claims are not a JSON object");
        goto out;
    }
    double now = (double)time(NULL), exp = 0, nbf = 0;
    int he = time_claim(claims, "exp", &exp), hn = time_claim(claims, "nbf", &nbf);
    if (he < 0 || hn < 0) {
        v = deny(out, r, "exp or nbf is not a number");
        goto out;
    }
    if (!he && c->require_exp) {
        v = deny(out, r, "no exp claim (auth.jwt.require_exp)");
        goto out;
    }
    if (he && now >= exp + c->leeway_s) {
        v = deny(out, r, "expired (exp)");
        goto out;
    }
    if (hn && now + c->leeway_s < nbf) {
        v = deny(out, r, "not valid yet (nbf)");
        goto out;
    }
    const char *why_claims = claims_check(c, claims);
    if (why_claims) {
        v = deny(out, r, why_claims);
        goto out;
    }
    const char *user = json_string_value(json_object_get(claims, c->username_claim));
    if (user == NULL || user[0] == '\0') {
        v = deny(out, r, "no user name claim");
        goto out;
    }
    json_t *acl = c->acl_claim[0] ? json_object_get(claims, c->acl_claim) : NULL;
    if (acl) {
        const char *why = NULL;
        out->acl = acl_from_claim(acl, &why);
        if (out->acl == NULL) {
            v = deny(out, r, why);
            goto out;
        }
    }
    out->username = an_strndup(user, strlen(user));
    v = out->verdict = AUTH_ALLOW;
out:
    free(raw);
    json_decref(hdr);
    json_decref(claims);
    free(claims_text);
    if (jwt)
        jwt_free(jwt);
    OPENSSL_cleanse(token, slen);
    free(token);
    return v;
}

static int jwt_reload(auth_backend_t *b)
{
    jwt_backend_t *jb = (jwt_backend_t *)b;
    if (jb->conf.alg == CONF_JWT_HS256)
        return 0;
    jwt_key_t keys[MAX_KEYS];
    uint32_t n;
    char err[512];
    if (keys_load(&jb->conf, keys, &n, err, sizeof(err)) < 0) {
        log_error("JWT keys not reloaded, the previous ones stay: %s", err);
        return -1;
    }
    pthread_rwlock_wrlock(&jb->lock);
    jwt_key_t old[MAX_KEYS];
    uint32_t nold = jb->nkeys;
    memcpy(old, jb->keys, sizeof(old));
    memcpy(jb->keys, keys, sizeof(keys));
    jb->nkeys = n;
    pthread_rwlock_unlock(&jb->lock);
    keys_free(old, nold);
    log_info("JWT keys reloaded: %u", n);
    return 0;
}

static void jwt_destroy(auth_backend_t *b)
{
    jwt_backend_t *jb = (jwt_backend_t *)b;
    keys_free(jb->keys, jb->nkeys);
    pthread_rwlock_destroy(&jb->lock);
    free(jb);
}

auth_backend_t *auth_jwt_new(const conf_t *conf, char *err, size_t errlen)
{
    jwt_backend_t *jb = an_calloc(1, sizeof(*jb));
    jb->conf = conf->auth.jwt;
    if (keys_load(&jb->conf, jb->keys, &jb->nkeys, err, errlen) < 0) {
        free(jb);
        return NULL;
    }
    pthread_rwlock_init(&jb->lock, NULL);
    jb->b.name = "jwt";
    jb->b.check = jwt_check;
    jb->b.reload = jwt_reload;
    jb->b.destroy = jwt_destroy;
    log_info("JWT backend: %s, %u key(s), token in the %s", alg_names[jb->conf.alg], jb->nkeys,
             jb->conf.field == CONF_JWT_FROM_USERNAME ? "user name" : "password");
    return &jb->b;
}
