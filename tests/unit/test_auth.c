/* test_auth.c -- the password hash formats (SCRAM verifiers and the older
 * PBKDF2 lines), ACL rules and filter relations with %u/%c substitution,
 * the ban table (per address and per user name), the password backend. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "auth_acl.h"
#include "auth_ban.h"
#include "auth_passwd.h"
#include "b64.h"

/* ---- password hashes ---- */

static void test_hash_roundtrip(void **state)
{
    (void)state;
    char h1[AUTH_PASSWD_HASH_MAX], h2[AUTH_PASSWD_HASH_MAX];
    assert_int_equal(auth_passwd_hash((const uint8_t *)"pw", 2, 1000, h1, sizeof(h1)), 0);
    assert_int_equal(auth_passwd_hash((const uint8_t *)"pw", 2, 1000, h2, sizeof(h2)), 0);
    assert_non_null(strstr(h1, "$scram-sha-512$1000$"));
    assert_string_not_equal(h1, h2); /* fresh salt each time */
    assert_int_equal(auth_passwd_verify(h1, (const uint8_t *)"pw", 2), 1);
    assert_int_equal(auth_passwd_verify(h2, (const uint8_t *)"pw", 2), 1);
    assert_int_equal(auth_passwd_verify(h1, (const uint8_t *)"pW", 2), 0);
    assert_int_equal(auth_passwd_verify(h1, (const uint8_t *)"pw!", 3), 0);
    assert_int_equal(auth_passwd_verify(h1, (const uint8_t *)"", 0), 0);
    auth_passwd_rec_t rec;
    assert_int_equal(auth_passwd_decode(h1, &rec, NULL), 0);
    assert_int_equal(rec.kind, AUTH_PASSWD_SCRAM);
    assert_int_equal(rec.iterations, 1000);
    assert_int_equal(rec.salt_len, AUTH_PASSWD_SALT_LEN);
    /* too small a buffer */
    assert_int_equal(auth_passwd_hash((const uint8_t *)"pw", 2, 1000, h1, 20), -1);
}

/* Known vectors computed with Python's hashlib.pbkdf2_hmac("sha512",
 * b"password", b"saltsalt", N, 64): the format is the one other tools make. */
static void test_hash_known_vector(void **state)
{
    (void)state;
    const char *one = "$pbkdf2-sha512$1$c2FsdHNhbHQ=$"
                      "y99Aqyh+xt2ovbJvGRltovGpWf8SfKJATk5ELfdRhStwvGAd6YSOUD0tNyMyqMpAiaYf7puo"
                      "lRhDkqtkfsdXOA==";
    const char *thousand = "$pbkdf2-sha512$1000$c2FsdHNhbHQ=$"
                           "Q6v4xwJ8a9nWPp2BeEoAYYhHSo2xRmPWART17vTpSxt2q6iNp7BOozW557qqa95eNjUO"
                           "4gKs0CyvJbYGGku1tA==";
    assert_int_equal(auth_passwd_verify(one, (const uint8_t *)"password", 8), 1);
    assert_int_equal(auth_passwd_verify(thousand, (const uint8_t *)"password", 8), 1);
    assert_int_equal(auth_passwd_verify(thousand, (const uint8_t *)"passwore", 8), 0);
    /* the same key with another iteration count does not verify */
    char other[200];
    snprintf(other, sizeof(other), "$pbkdf2-sha512$2%s", strchr(one + 15, '$'));
    assert_int_equal(auth_passwd_verify(other, (const uint8_t *)"password", 8), 0);
    /* the SCRAM form of "password", salt "saltsalt", 1000 iterations:
     * StoredKey and ServerKey of the SaltedPassword above (RFC 5802) */
    uint8_t salted[AUTH_PASSWD_DK_LEN], stored[AUTH_PASSWD_DK_LEN], server[AUTH_PASSWD_DK_LEN];
    auth_passwd_rec_t rec;
    assert_int_equal(auth_passwd_decode(thousand, &rec, NULL), 0);
    assert_int_equal(rec.kind, AUTH_PASSWD_PBKDF2);
    memcpy(salted, rec.key, sizeof(salted));
    auth_passwd_scram_keys(salted, stored, server);
    char s64[100], k64[100], v64[100], scram[AUTH_PASSWD_HASH_MAX];
    b64_encode(rec.salt, rec.salt_len, s64);
    b64_encode(stored, sizeof(stored), k64);
    b64_encode(server, sizeof(server), v64);
    snprintf(scram, sizeof(scram), "$scram-sha-512$1000$%s$%s$%s", s64, k64, v64);
    assert_int_equal(auth_passwd_verify(scram, (const uint8_t *)"password", 8), 1);
    assert_int_equal(auth_passwd_verify(scram, (const uint8_t *)"passwore", 8), 0);
    /* the stored key is not a password, nor is the older line's hash */
    assert_int_equal(auth_passwd_verify(scram, (const uint8_t *)k64, strlen(k64)), 0);
}

static void test_hash_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "plain",
        "$pbkdf2-sha256$1000$c2FsdHNhbHQ=$AAAA",
        "$pbkdf2-sha512$$c2FsdHNhbHQ=$AAAA",
        "$pbkdf2-sha512$0$c2FsdHNhbHQ=$AAAA",
        "$pbkdf2-sha512$01000$c2FsdHNhbHQ=$AAAA",
        "$pbkdf2-sha512$1000$c2FsdHNhbHQ=",
        "$pbkdf2-sha512$1000$c2Fs$AAAA",         /* salt too short */
        "$pbkdf2-sha512$1000$c2FsdHNhbHQ=$AAAA", /* hash not 64 bytes */
        "$pbkdf2-sha512$1000$c2Fsd*NhbHQ=$AAAA",
        "$pbkdf2-sha512$99999999999$c2FsdHNhbHQ=$AAAA",
        "$scram-sha-512$1000$c2FsdHNhbHQ=$AAAA$AAAA", /* keys not 64 bytes */
        ("$scram-sha-512$1000$c2FsdHNhbHQ=$"          /* ServerKey missing (one string) */
         "Q6v4xwJ8a9nWPp2BeEoAYYhHSo2xRmPWART17vTpSxt2q6iNp7BOozW557qqa95eNjUO4gKs0CyvJbYGGku1tA="
         "="),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *why = NULL;
        auth_passwd_rec_t rec;
        assert_int_equal(auth_passwd_decode(bad[i], &rec, &why), -1);
        assert_non_null(why);
        assert_int_equal(auth_passwd_verify(bad[i], (const uint8_t *)"x", 1), -1);
    }
}

/* ---- filter relations ---- */

static int covers(const char *r, const char *f)
{
    return auth_filter_covers(r, strlen(r), f, strlen(f));
}

static int inter(const char *r, const char *f)
{
    return auth_filter_intersects(r, strlen(r), f, strlen(f));
}

static void test_filter_covers(void **state)
{
    (void)state;
    assert_true(covers("#", "a/b"));
    assert_true(covers("#", "#"));
    assert_true(covers("a/#", "a"));
    assert_true(covers("a/#", "a/+/c"));
    assert_true(covers("a/+", "a/b"));
    assert_true(covers("a/+", "a/+"));
    assert_true(covers("a/+/c", "a/b/c"));
    assert_true(covers("a/b", "a/b"));
    assert_false(covers("a/b", "a/+"));
    assert_false(covers("a/+", "a/#"));
    assert_false(covers("a/+", "a/b/c"));
    assert_false(covers("a/b/c", "a/b"));
    assert_false(covers("a", "a/b"));
    assert_false(covers("#", "$SYS/x"));
    assert_false(covers("+/x", "$SYS/x"));
    assert_true(covers("$SYS/#", "$SYS/x"));
    assert_false(covers("a/#", "#"));
}

static void test_filter_intersects(void **state)
{
    (void)state;
    assert_true(inter("secret/#", "#"));
    assert_true(inter("secret/x", "+/x"));
    assert_true(inter("a/+", "a/b"));
    assert_true(inter("a/#", "a"));
    assert_true(inter("a", "a/#"));
    assert_false(inter("a/b", "a/c"));
    assert_false(inter("a/b", "a/b/c"));
    assert_false(inter("a/+", "a"));
    assert_false(inter("$SYS/#", "#"));
    assert_false(inter("#", "$SYS/x"));
    assert_true(inter("$SYS/#", "$SYS/+"));
}

/* ---- rule sets ---- */

static int chk(const auth_acl_t *a, const char *u, const char *c, uint8_t act, const char *t,
               int filter)
{
    return auth_acl_check(a, u, c, act, t, strlen(t), filter);
}

static void test_acl_rules(void **state)
{
    (void)state;
    char err[256];
    auth_acl_t *a = auth_acl_from_lines("# comment\n"
                                        "deny pub readonly/#\n"
                                        "allow all users/%u/#\n"
                                        "read clients/%c/in\n"
                                        "user alice\n"
                                        "allow write alice/#\n"
                                        "client gw\n"
                                        "readwrite gw/+\n"
                                        "pattern\n"
                                        "deny sub secret/#\n"
                                        "allow sub #\n",
                                        "test", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(auth_acl_count(a), 7);
    const uint8_t P = AUTH_ACT_PUBLISH, S = AUTH_ACT_SUBSCRIBE;
    assert_int_equal(chk(a, "bob", "c1", P, "readonly/x", 0), 0);
    assert_int_equal(chk(a, "bob", "c1", P, "users/bob/t", 0), 1);
    assert_int_equal(chk(a, "bob", "c1", P, "users/eve/t", 0), -1);
    assert_int_equal(chk(a, NULL, "c1", P, "users//t", 0), -1);   /* no user: no %u */
    assert_int_equal(chk(a, "b+", "c1", P, "users/b+/t", 0), -1); /* wildcard in name */
    assert_int_equal(chk(a, "bob", "c1", S, "clients/c1/in", 1), 1);
    assert_int_equal(chk(a, "bob", "c1", P, "clients/c1/in", 0), -1); /* read only */
    assert_int_equal(chk(a, "alice", "c1", P, "alice/x", 0), 1);
    assert_int_equal(chk(a, "bob", "c1", P, "alice/x", 0), -1);
    assert_int_equal(chk(a, "bob", "gw", P, "gw/1", 0), 1);
    assert_int_equal(chk(a, "bob", "gw2", P, "gw/1", 0), -1);
    assert_int_equal(chk(a, "bob", "c1", S, "secret/a", 1), 0);
    assert_int_equal(chk(a, "bob", "c1", S, "#", 1), AUTH_ACL_PARTIAL); /* but secret/# */
    assert_int_equal(chk(a, "bob", "c1", S, "public/#", 1), 1);
    assert_int_equal(chk(a, "bob", "c1", S, "secret/a", 0), 0); /* reading a topic */
    auth_acl_free(a);

    const char *bad[] = {"allow pub\n", "allow eat x\n", "allow pub a/#/b\n",
                         "user\n",      "any x\n",       "allow pub a b c\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_null(auth_acl_from_lines(bad[i], "f", err, sizeof(err)));
        assert_non_null(strstr(err, "f:1: "));
    }
    assert_null(auth_acl_from_lines("any\n\nallow pub ok\nnope\n", "f", err, sizeof(err)));
    assert_non_null(strstr(err, "f:4: "));
}

/* A SUBSCRIBE filter is judged by its topics: whole, none, or some
 * (granted, the rest filtered at delivery). */
static void test_acl_partial_filters(void **state)
{
    (void)state;
    char err[256];
    const uint8_t S = AUTH_ACT_SUBSCRIBE;
    auth_acl_t *a =
        auth_acl_from_lines("deny sub test/nosubscribe\nallow all #\n", "t", err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(chk(a, "u", "c", S, "#", 1), AUTH_ACL_PARTIAL);
    assert_int_equal(chk(a, "u", "c", S, "+/+", 1), AUTH_ACL_PARTIAL);
    assert_int_equal(chk(a, "u", "c", S, "test/+", 1), AUTH_ACL_PARTIAL);
    assert_int_equal(chk(a, "u", "c", S, "test/nosubscribe", 1), AUTH_ACL_DENY);
    assert_int_equal(chk(a, "u", "c", S, "test/other", 1), AUTH_ACL_ALLOW);
    assert_int_equal(chk(a, "u", "c", S, "+/+/+", 1), AUTH_ACL_ALLOW); /* no common topic */
    assert_int_equal(chk(a, "u", "c", S, "$SYS/#", 1), -1);            /* '#' is not '$' */
    assert_int_equal(chk(a, "u", "c", S, "test/nosubscribe", 0), 0);   /* reading it */
    assert_int_equal(chk(a, "u", "c", S, "test/x", 0), 1);
    auth_acl_free(a);

    /* first match, topic by topic: an allow before a covering deny still
     * allows its topics; a covering deny first leaves nothing */
    a = auth_acl_from_lines("allow sub a/b\ndeny sub a/#\n", "t", err, sizeof(err));
    assert_int_equal(chk(a, "u", "c", S, "a/#", 1), AUTH_ACL_PARTIAL);
    assert_int_equal(chk(a, "u", "c", S, "a/b", 1), AUTH_ACL_ALLOW);
    assert_int_equal(chk(a, "u", "c", S, "a/c", 1), AUTH_ACL_DENY);
    auth_acl_free(a);
    a = auth_acl_from_lines("deny sub a/#\nallow sub a/b\n", "t", err, sizeof(err));
    assert_int_equal(chk(a, "u", "c", S, "a/#", 1), AUTH_ACL_DENY);
    assert_int_equal(chk(a, "u", "c", S, "a/b", 1), AUTH_ACL_DENY);
    auth_acl_free(a);

    /* no rule covers: what overlaps is handed to the caller, who combines
     * it with the next rule set or the default */
    a = auth_acl_from_lines("user bob\nallow sub pub/#\ndeny sub priv/#\n", "t", err, sizeof(err));
    unsigned seen = 0;
    assert_int_equal(auth_acl_check_filter(a, "bob", "c", S, "#", 1, &seen), -1);
    assert_int_equal(seen, AUTH_ACL_SEEN_ALLOW | AUTH_ACL_SEEN_DENY);
    seen = 0;
    assert_int_equal(auth_acl_check_filter(a, "eve", "c", S, "#", 1, &seen), -1);
    assert_int_equal(seen, 0);
    seen = 0;
    assert_int_equal(auth_acl_check_filter(a, "bob", "c", S, "priv/+/x", 8, &seen), 0);
    assert_int_equal(seen, 0);
    auth_acl_free(a);
    assert_int_equal(auth_acl_combine(0, AUTH_ACL_SEEN_ALLOW), AUTH_ACL_PARTIAL);
    assert_int_equal(auth_acl_combine(0, AUTH_ACL_SEEN_DENY), AUTH_ACL_DENY);
    assert_int_equal(auth_acl_combine(1, AUTH_ACL_SEEN_DENY), AUTH_ACL_PARTIAL);
    assert_int_equal(auth_acl_combine(1, AUTH_ACL_SEEN_ALLOW), AUTH_ACL_ALLOW);
    assert_int_equal(auth_acl_combine(AUTH_ACL_PARTIAL, 0), AUTH_ACL_PARTIAL);
}

static void test_acl_long_substitution(void **state)
{
    (void)state;
    char user[700];
    memset(user, 'u', sizeof(user) - 1);
    user[sizeof(user) - 1] = '\0';
    auth_acl_t *a = auth_acl_new();
    assert_int_equal(auth_acl_add(a, 1, AUTH_ACT_PUBLISH, AUTH_ACL_ANY, NULL, "d/%u/%c"), 0);
    char topic[800];
    snprintf(topic, sizeof(topic), "d/%s/cid", user);
    assert_int_equal(chk(a, user, "cid", AUTH_ACT_PUBLISH, topic, 0), 1);
    assert_int_equal(chk(a, user, "cid2", AUTH_ACT_PUBLISH, topic, 0), -1);
    assert_int_equal(auth_acl_add(a, 1, AUTH_ACT_PUBLISH, AUTH_ACL_ANY, NULL, "bad/#/x"), -1);
    auth_acl_free(a);
}

/* ---- ban table ---- */

static void test_ban_table(void **state)
{
    (void)state;
    conf_auth_ban_t c = {
        .max_failures = 3, .window_s = 10, .ban_s = 5, .delay_ms = 0, .table_size = 16};
    auth_ban_t b;
    auth_ban_init(&b, &c, 0);
    uint8_t a1[16] = {127, 0, 0, 1}, a2[16] = {10, 0, 0, 2};
    uint64_t t = 1000000;
    assert_int_equal(auth_ban_failure(&b, 0, 2, a1, NULL, t), 0);
    assert_int_equal(auth_ban_failure(&b, 0, 2, a1, NULL, t + 1), 0);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, NULL, t + 2), 0);
    assert_int_equal(auth_ban_failure(&b, 0, 2, a1, NULL, t + 3), AUTH_BAN_ADDRESS);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, NULL, t + 4), 1);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a2, NULL, t + 4), 0);        /* another address */
    assert_int_equal(auth_ban_blocked(&b, 0, 10, a1, NULL, t + 4), 0);       /* another family */
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, NULL, t + 3 + 5000), 0); /* ban over */
    /* failures spread beyond the window do not ban */
    assert_int_equal(auth_ban_failure(&b, 0, 2, a2, NULL, t), 0);
    assert_int_equal(auth_ban_failure(&b, 0, 2, a2, NULL, t + 6000), 0);
    assert_int_equal(auth_ban_failure(&b, 0, 2, a2, NULL, t + 12000), 0);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a2, NULL, t + 12001), 0);
    /* bounded: many addresses, the table never grows */
    for (uint32_t i = 0; i < 10000; i++) {
        uint8_t a[16] = {0};
        memcpy(a, &i, sizeof(i));
        auth_ban_failure(&b, 0, 2, a, NULL, t + 20000 + i);
    }
    assert_int_equal(b.n, 16);
    auth_ban_destroy(&b);
    /* off */
    conf_auth_ban_t off = {.max_failures = 0};
    auth_ban_init(&b, &off, 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(auth_ban_failure(&b, 0, 2, a1, "u", t), 0);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, "u", t), 0);
    auth_ban_destroy(&b);
}

/* Issue 13 item 5: guesses for one user interleaved with the attacker's own
 * valid login.  The success forgets nothing but its own user's failures. */
static void test_ban_success_resets_only_its_user(void **state)
{
    (void)state;
    conf_auth_ban_t c = {.max_failures = 5, .window_s = 60, .ban_s = 30, .table_size = 64};
    auth_ban_t b;
    auth_ban_init(&b, &c, 0);
    uint8_t a1[16] = {192, 0, 2, 1};
    uint64_t t = 5000000;
    int what = 0, i;
    for (i = 0; i < 20 && what == 0; i++) {
        what = auth_ban_failure(&b, 0, 2, a1, "victim", t + (uint64_t)i);
        if (i % 4 == 3)
            auth_ban_success(&b, 0, "attacker");
    }
    assert_int_equal(i, 5); /* the fifth guess bans */
    assert_true(what & AUTH_BAN_ADDRESS);
    assert_true(what & AUTH_BAN_USER);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, "attacker", t + 10), 1);
    /* the victim's name is locked from another address too */
    uint8_t a2[16] = {198, 51, 100, 7};
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a2, "victim", t + 10), 1);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a2, "someone", t + 10), 0);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a2, "victim", t + 30011), 0);
    /* guesses spread over addresses still lock the user; the user's own
     * success forgets its count */
    for (uint32_t k = 0; k < 4; k++) {
        uint8_t a[16] = {203, 0, 113, (uint8_t)k};
        assert_int_equal(auth_ban_failure(&b, 0, 2, a, "carol", t + 40000 + k), 0);
    }
    auth_ban_success(&b, 0, "carol");
    uint8_t a3[16] = {203, 0, 113, 99};
    assert_int_equal(auth_ban_failure(&b, 0, 2, a3, "carol", t + 40010), 0);
    /* an exempt listener neither counts nor blocks */
    auth_ban_destroy(&b);
    auth_ban_init(&b, &c, 1u << 1);
    for (i = 0; i < 10; i++)
        assert_int_equal(auth_ban_failure(&b, 1, 2, a1, "victim", t + (uint64_t)i), 0);
    assert_int_equal(auth_ban_blocked(&b, 1, 2, a1, "victim", t + 20), 0);
    assert_int_equal(auth_ban_blocked(&b, 0, 2, a1, "victim", t + 20), 0);
    auth_ban_destroy(&b);
}

/* ---- the password file backend ---- */

static void test_passwd_backend(void **state)
{
    (void)state;
    char path[] = "/tmp/antenna-test-pw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char h[AUTH_PASSWD_HASH_MAX];
    assert_int_equal(auth_passwd_hash((const uint8_t *)"s", 1, 1000, h, sizeof(h)), 0);
    dprintf(fd, "# c\nann:%s\n", h);
    close(fd);
    conf_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.auth.password_file, sizeof(c.auth.password_file), "%s", path);
    char err[256];
    auth_backend_t *b = auth_passwd_new(&c, err, sizeof(err));
    assert_non_null(b);
    auth_request_t r = {.action = AUTH_ACT_CONNECT,
                        .client_id = "x",
                        .username = "ann",
                        .password = (const uint8_t *)"s",
                        .password_len = 1};
    auth_answer_t a = {0};
    assert_int_equal(b->check(b, &r, &a, NULL, NULL), AUTH_ALLOW);
    r.password = (const uint8_t *)"t";
    assert_int_equal(b->check(b, &r, &a, NULL, NULL), AUTH_DENY);
    assert_int_equal(a.cause, AUTH_BAD_CREDENTIALS);
    r.username = "zed";
    assert_int_equal(b->check(b, &r, &a, NULL, NULL), AUTH_PASS);
    /* a bad file on reload keeps the users */
    FILE *f = fopen(path, "w");
    fprintf(f, "ann:%s\nbroken line\n", h);
    fclose(f);
    assert_int_equal(b->reload(b), -1);
    r.username = "ann";
    r.password = (const uint8_t *)"s";
    assert_int_equal(b->check(b, &r, &a, NULL, NULL), AUTH_ALLOW);
    b->destroy(b);
    /* and at start it names the line */
    assert_null(auth_passwd_new(&c, err, sizeof(err)));
    assert_non_null(strstr(err, ":2: expected user:hash"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_roundtrip),
        cmocka_unit_test(test_hash_known_vector),
        cmocka_unit_test(test_hash_malformed),
        cmocka_unit_test(test_filter_covers),
        cmocka_unit_test(test_filter_intersects),
        cmocka_unit_test(test_acl_rules),
        cmocka_unit_test(test_acl_partial_filters),
        cmocka_unit_test(test_acl_long_substitution),
        cmocka_unit_test(test_ban_table),
        cmocka_unit_test(test_ban_success_resets_only_its_user),
        cmocka_unit_test(test_passwd_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
