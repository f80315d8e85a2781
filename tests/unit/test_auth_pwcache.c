/* test_auth_pwcache.c -- the persistent verification cache's pure parts
 * (src/auth/auth_pwcache.h): the record encoding (exactly 10 bytes, strict
 * decoder), the store key under the meta prefix, the MAC (it changes with
 * the user, the password, the verifier and K), the key file (made 0600
 * with 32 bytes, read back the same, refused when looser or of another
 * size), and a round trip through a memory store: a record made, reloaded
 * by a second open, expired past its TTL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth_pwcache.h"
#include "store_rec.h"

static void record_encoding(void **state)
{
    (void)state;
    uint8_t v[AUTH_PWCACHE_VALUE_LEN];
    uint64_t t = 0;
    auth_pwcache_encode(0x0102030405060708ull, v);
    assert_int_equal(v[0], 'P');
    assert_int_equal(v[1], 1);
    assert_int_equal(v[2], 1);
    assert_int_equal(v[9], 8);
    assert_int_equal(auth_pwcache_decode(v, sizeof(v), &t), 0);
    assert_true(t == 0x0102030405060708ull);
    assert_int_equal(auth_pwcache_decode(v, sizeof(v) - 1, &t), -1);
    v[1] = 2;
    assert_int_equal(auth_pwcache_decode(v, sizeof(v), &t), -1);
    v[1] = 1;
    v[0] = 'Q';
    assert_int_equal(auth_pwcache_decode(v, sizeof(v), &t), -1);

    uint8_t mac[AUTH_PWCACHE_MAC_LEN], key[64];
    memset(mac, 0xab, sizeof(mac));
    size_t n = auth_pwcache_store_key('f', mac, key);
    assert_int_equal(n, AUTH_PWCACHE_PREFIX_LEN + 2 + AUTH_PWCACHE_MAC_LEN);
    store_key_info_t ki;
    assert_int_equal(store_key_parse(key, n, &ki), 0);
    assert_int_equal(ki.kind, STORE_KEY_META); /* skipped by export, import, inspect */
    assert_memory_equal(key + n - AUTH_PWCACHE_MAC_LEN, mac, AUTH_PWCACHE_MAC_LEN);
}

static void mac_depends_on_everything(void **state)
{
    (void)state;
    uint8_t k[AUTH_PWCACHE_KEY_LEN], k2[AUTH_PWCACHE_KEY_LEN];
    uint8_t a[32], b[32];
    memset(k, 1, sizeof(k));
    memset(k2, 2, sizeof(k2));
    const uint8_t *pw = (const uint8_t *)"secret";
    assert_int_equal(auth_pwcache_mac(k, "alice", pw, 6, "$scram-sha-512$1$x", a), 0);
    assert_int_equal(auth_pwcache_mac(k, "alice", pw, 6, "$scram-sha-512$1$x", b), 0);
    assert_memory_equal(a, b, 32);
    assert_int_equal(auth_pwcache_mac(k2, "alice", pw, 6, "$scram-sha-512$1$x", b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(auth_pwcache_mac(k, "alicf", pw, 6, "$scram-sha-512$1$x", b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(auth_pwcache_mac(k, "alice", pw, 5, "$scram-sha-512$1$x", b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(auth_pwcache_mac(k, "alice", pw, 6, "$scram-sha-512$1$y", b), 0);
    assert_memory_not_equal(a, b, 32);
    /* the field boundaries count: ("ab", "c") is not ("a", "bc") */
    assert_int_equal(auth_pwcache_mac(k, "ab", (const uint8_t *)"c", 1, "$v", a), 0);
    assert_int_equal(auth_pwcache_mac(k, "a", (const uint8_t *)"bc", 2, "$v", b), 0);
    assert_memory_not_equal(a, b, 32);
}

static void key_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/antenna-pwcache-XXXXXX", path[128], err[256];
    uint8_t k[AUTH_PWCACHE_KEY_LEN], k2[AUTH_PWCACHE_KEY_LEN];
    int created = 0;
    struct stat st;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/%s", dir, AUTH_PWCACHE_KEYFILE);
    assert_int_equal(auth_pwcache_key_file(path, k, &created, err, sizeof(err)), 0);
    assert_int_equal(created, 1);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, AUTH_PWCACHE_KEY_LEN);
    assert_int_equal(auth_pwcache_key_file(path, k2, &created, err, sizeof(err)), 0);
    assert_int_equal(created, 0);
    assert_memory_equal(k, k2, sizeof(k));
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(auth_pwcache_key_file(path, k2, &created, err, sizeof(err)), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "0640"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(truncate(path, 16), 0);
    assert_int_equal(auth_pwcache_key_file(path, k2, &created, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "16 bytes, expected 32"));
    unlink(path);
    rmdir(dir);
}

static void round_trip_through_a_store(void **state)
{
    (void)state;
    char dir[] = "/tmp/antenna-pwcache-XXXXXX", err[256], path[128];
    assert_non_null(mkdtemp(dir));
    store_opts_t o = {.backend = STORE_BACKEND_ROCKSDB, .path = dir, .sync = STORE_SYNC_NONE};
    char sdir[128];
    snprintf(sdir, sizeof(sdir), "%s/store", dir);
    o.path = sdir;
    store_t *s = store_open(&o, err, sizeof(err));
    assert_non_null(s);
    const uint8_t *pw = (const uint8_t *)"pw";
    auth_pwcache_t *pc = auth_pwcache_open(s, dir, 'f', 100, 3600, err, sizeof(err));
    assert_non_null(pc);
    assert_int_equal(auth_pwcache_loaded(pc), 0);
    assert_int_equal(auth_pwcache_lookup(pc, "u", pw, 2, "$v1"), 0);
    auth_pwcache_record(pc, "u", pw, 2, "$v1");
    assert_int_equal(auth_pwcache_lookup(pc, "u", pw, 2, "$v1"), 1);
    assert_int_equal(auth_pwcache_lookup(pc, "u", pw, 2, "$v2"), 0);
    auth_pwcache_free(pc); /* waits for the record's write */

    pc = auth_pwcache_open(s, dir, 'f', 100, 3600, err, sizeof(err));
    assert_non_null(pc);
    assert_int_equal(auth_pwcache_loaded(pc), 1);
    assert_int_equal(auth_pwcache_lookup(pc, "u", pw, 2, "$v1"), 1);
    auth_pwcache_free(pc);
    /* another backend's tag does not see it */
    pc = auth_pwcache_open(s, dir, 'r', 100, 3600, err, sizeof(err));
    assert_non_null(pc);
    assert_int_equal(auth_pwcache_loaded(pc), 0);
    auth_pwcache_free(pc);
    /* a new key file: the old entries are dropped */
    snprintf(path, sizeof(path), "%s/%s", dir, AUTH_PWCACHE_KEYFILE);
    unlink(path);
    pc = auth_pwcache_open(s, dir, 'f', 100, 3600, err, sizeof(err));
    assert_non_null(pc);
    assert_int_equal(auth_pwcache_loaded(pc), 0);
    assert_int_equal(auth_pwcache_lookup(pc, "u", pw, 2, "$v1"), 0);
    auth_pwcache_free(pc);
    store_close(s);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(record_encoding),
        cmocka_unit_test(mac_depends_on_everything),
        cmocka_unit_test(key_file),
        cmocka_unit_test(round_trip_through_a_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
