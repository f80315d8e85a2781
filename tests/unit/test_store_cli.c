/* test_store_cli.c -- `antenna store` (store_cli.c) called in process on
 * RocksDB stores in mkdtemp() directories: what the integration tests cannot
 * build through the broker or the tool itself.
 *
 *   - records with byte fields of every length 0..7 (all base64 paddings),
 *     non-UTF-8 topics and client ids, v5 property blocks, every outgoing
 *     state and incoming QoS 2 ids survive export + import byte for byte
 *     (the raw keys and values of the two stores are compared), a queued
 *     message's publish id ('Q' version 2) too;
 *   - an export without publish ids (an older one) imports: its messages
 *     have none; a broken id is refused with its line;
 *   - a store with another format version, or keys but no version, is
 *     refused by every action with exit status 1 and a message naming the
 *     path (stderr is redirected to a file and read back).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_cli.h"
#include "store_rec.h"

typedef struct {
    char dir[64];
    char a[128], b[128], file[128], errf[128];
} fx_t;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/antenna-storecli.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->a, sizeof(fx->a), "%s/a", fx->dir);
    snprintf(fx->b, sizeof(fx->b), "%s/b", fx->dir);
    snprintf(fx->file, sizeof(fx->file), "%s/backup.jsonl", fx->dir);
    snprintf(fx->errf, sizeof(fx->errf), "%s/stderr.txt", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static store_t *open_at(const char *path)
{
    char err[512];
    store_opts_t o = {.backend = STORE_BACKEND_ROCKSDB, .path = path, .sync = STORE_SYNC_NONE};
    store_t *s = store_open(&o, err, sizeof(err));
    if (s == NULL)
        fail_msg("%s", err);
    return s;
}

/* Runs `antenna store ARGS...` in process with stderr (and stdout) in a
 * file; returns the exit status and the captured stderr in out. */
static int run(const fx_t *fx, char *out, size_t outlen, ...)
{
    char *argv[8];
    int argc = 0;
    va_list ap;
    va_start(ap, outlen);
    argv[argc++] = "store";
    for (char *a; argc < 7 && (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    int saved_err = dup(2), saved_out = dup(1);
    int fd = open(fx->errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    dup2(fd, 1);
    close(fd);
    int rc = store_cli_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_err, 2);
    dup2(saved_out, 1);
    close(saved_err);
    close(saved_out);
    FILE *f = fopen(fx->errf, "r");
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    fclose(f);
    return rc;
}

/* ---- every kind of record, byte for byte -------------------------------- */

static void put(store_batch_t *b, const uint8_t *k, size_t kl, size_t vl, void **v)
{
    assert_true(kl > 0 && vl > 0);
    *v = store_batch_put_reserve(b, k, kl, vl);
}

static void fill(store_t *s)
{
    static const uint8_t odd_topic[] = {'t', 0xff, 0xfe, '/', 0x00, 'x'}; /* not UTF-8 */
    static const uint8_t odd_cid[] = {0xc3, 0x28, 'c'};
    static const uint8_t props[] = {0x03, 0x00, 0x04, 't', 'e', 'x', 't'};
    uint8_t key[STORE_KEY_MAX], payload[8] = {0, 1, 2, 0xff, 0x80, 'a', '=', '/'};
    store_batch_t *b = store_batch_new();
    void *v;
    for (size_t len = 0; len < 8; len++) { /* payloads of every base64 padding */
        char topic[16];
        snprintf(topic, sizeof(topic), "len/%zu", len);
        store_retained_t r = {.qos = (uint8_t)(len % 3),
                              .flags = (uint8_t)len,
                              .expiry = len ? 4000000000u + len : 0,
                              .topic = (const uint8_t *)topic,
                              .topic_len = strlen(topic),
                              .props = props,
                              .props_len = len % 2 ? sizeof(props) : 0,
                              .payload = payload,
                              .payload_len = len};
        size_t kl = store_key_retained(key, sizeof(key), topic, strlen(topic));
        size_t vl = store_rec_encode_retained(&r, NULL, 0);
        put(b, key, kl, vl, &v);
        store_rec_encode_retained(&r, v, vl);
    }
    store_retained_t r = {.qos = 1,
                          .topic = odd_topic,
                          .topic_len = sizeof(odd_topic),
                          .payload = payload,
                          .payload_len = 3};
    size_t kl = store_key_retained(key, sizeof(key), odd_topic, sizeof(odd_topic));
    size_t vl = store_rec_encode_retained(&r, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_retained(&r, v, vl);

    store_sub_t subs[2] = {
        {.filter = (const uint8_t *)"a/+/#", .filter_len = 5, .options = 0x2d, .sub_id = 268435455},
        {.filter = odd_topic, .filter_len = 2, .options = 0}};
    store_session_t sess = {
        .flags = 3, .expiry_interval = UINT32_MAX, .next_pid = 65535, .nsubs = 2, .subs = subs};
    kl = store_key_session(key, sizeof(key), odd_cid, sizeof(odd_cid));
    vl = store_rec_encode_session(&sess, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_session(&sess, v, vl);
    store_session_t empty = {.expiry_interval = 60, .expiry_deadline = 4000000000u, .next_pid = 1};
    kl = store_key_session(key, sizeof(key), "e", 1);
    vl = store_rec_encode_session(&empty, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_session(&empty, v, vl);
    /* version 2: an owner, and a known absence of one */
    store_session_t owned = {.expiry_interval = 60,
                             .next_pid = 7,
                             .owner_known = true,
                             .owner = (const uint8_t *)"alice",
                             .owner_len = 5};
    kl = store_key_session(key, sizeof(key), "o1", 2);
    vl = store_rec_encode_session(&owned, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_session(&owned, v, vl);
    owned.owner = NULL;
    owned.owner_len = 0;
    kl = store_key_session(key, sizeof(key), "o2", 2);
    vl = store_rec_encode_session(&owned, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_session(&owned, v, vl);

    for (uint8_t st = STORE_OUT_QUEUED; st <= STORE_OUT_WAIT_PUBCOMP; st++) {
        store_outmsg_t m = {.state = st,
                            .qos = st == STORE_OUT_WAIT_PUBACK ? 1 : 2,
                            .retain = st == 2,
                            .dup = st != STORE_OUT_QUEUED,
                            .pid = st == STORE_OUT_QUEUED ? 0 : (uint16_t)(100 + st),
                            .expiry = st == 1 ? 4100000000u : 0,
                            .topic = odd_topic,
                            .topic_len = sizeof(odd_topic),
                            .props = props,
                            .props_len = sizeof(props),
                            .payload = payload,
                            .payload_len = (size_t)st + 4};
        kl = store_key_queue(key, sizeof(key), odd_cid, sizeof(odd_cid), 1000000007u + st);
        vl = store_rec_encode_outmsg(&m, NULL, 0);
        put(b, key, kl, vl, &v);
        store_rec_encode_outmsg(&m, v, vl);
    }
    /* a publish id (msg.h): a 'Q' version 2 record; an epoch past
     * INT64_MAX, as a random one often is */
    store_outmsg_t idm = {.state = STORE_OUT_QUEUED,
                          .qos = 1,
                          .topic = (const uint8_t *)"id/t",
                          .topic_len = 4,
                          .payload = payload,
                          .payload_len = 2,
                          .id_epoch = 0xfedcba9876543210ull,
                          .id_seq = 4000000000u};
    kl = store_key_queue(key, sizeof(key), "e", 1, 77);
    vl = store_rec_encode_outmsg(&idm, NULL, 0);
    put(b, key, kl, vl, &v);
    store_rec_encode_outmsg(&idm, v, vl);
    for (uint16_t pid = 1; pid <= 3; pid++) {
        kl =
            store_key_incoming(key, sizeof(key), odd_cid, sizeof(odd_cid), (uint16_t)(pid * 20000));
        vl = store_rec_encode_incoming(NULL, 0);
        put(b, key, kl, vl, &v);
        store_rec_encode_incoming(v, vl);
    }
    assert_int_equal(store_submit_sync(s, b), 0);
}

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t n;
} dump_t;

static int dump_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    dump_t *d = ud;
    d->buf = realloc(d->buf, d->len + 8 + kl + vl);
    uint32_t k32 = (uint32_t)kl, v32 = (uint32_t)vl;
    memcpy(d->buf + d->len, &k32, 4);
    memcpy(d->buf + d->len + 4, &v32, 4);
    memcpy(d->buf + d->len + 8, k, kl);
    memcpy(d->buf + d->len + 8 + kl, v, vl);
    d->len += 8 + kl + vl;
    d->n++;
    return 0;
}

static dump_t dump(const char *path)
{
    dump_t d = {0};
    store_t *s = open_at(path);
    assert_int_equal(store_scan(s, "", 0, dump_one, &d), 0);
    store_close(s);
    return d;
}

static void export_import_is_exact(void **state)
{
    fx_t *fx = *state;
    char out[4096];
    store_t *s = open_at(fx->a);
    fill(s);
    store_close(s);

    assert_int_equal(run(fx, out, sizeof(out), "export", fx->a, fx->file, NULL), 0);
    assert_non_null(strstr(out, "exported 21 records"));
    assert_int_equal(run(fx, out, sizeof(out), "import", fx->b, fx->file, NULL), 0);
    assert_non_null(strstr(out, "9 retained, 4 sessions, 5 messages, 3 qos2 ids"));

    dump_t da = dump(fx->a), db = dump(fx->b);
    assert_int_equal(da.n, 22); /* 21 records and the version key */
    assert_int_equal(da.n, db.n);
    assert_int_equal(da.len, db.len);
    assert_memory_equal(da.buf, db.buf, da.len);
    free(da.buf);
    free(db.buf);

    /* inspect copes with the non-UTF-8 names in both forms */
    assert_int_equal(run(fx, out, sizeof(out), "inspect", fx->b, NULL), 0);
    assert_non_null(strstr(out, "session \"\\xc3(c\""));
    assert_non_null(strstr(out, "queued 1, inflight 3, qos2_ids [20000 40000 60000]"));
    assert_non_null(strstr(out, "retained \"t\\xff\\xfe/\\x00x\""));
    assert_int_equal(run(fx, out, sizeof(out), "inspect", fx->b, "--json", NULL), 0);
    assert_non_null(strstr(out, "\"client_id_b64\":\"wyhj\""));
    assert_non_null(strstr(out, "\"topic\":\"len/7\""));
}

/* ---- publish ids: an older export, a broken one ------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int find_queued(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    store_outmsg_t *m = ud;
    if (kl > 0 && ((const char *)k)[0] == 'q')
        assert_int_equal(store_rec_decode_outmsg(v, vl, m), 0);
    return 0;
}

#define EXPORT_HEAD                                                                                \
    "{\"antenna_store_export\":1,\"store_format\":1,\"created\":1,\"source\":\"x\"}\n"
#define EXPORT_MSG                                                                                 \
    "{\"type\":\"message\",\"client_id\":\"Yw==\",\"seq\":5,\"state\":0,\"qos\":1,"                \
    "\"retain\":false,\"dup\":false,\"pid\":0,\"expiry\":0,\"topic\":\"dA==\",\"props\":\"\","     \
    "\"payload\":\"cA==\""

static void export_without_ids_imports(void **state)
{
    fx_t *fx = *state;
    char out[4096];
    /* an export written before the publish id: no id fields */
    write_file(fx->file, EXPORT_HEAD EXPORT_MSG "}\n{\"type\":\"end\",\"records\":1}\n");
    assert_int_equal(run(fx, out, sizeof(out), "import", fx->a, fx->file, NULL), 0);
    store_outmsg_t m = {.id_seq = 1};
    store_t *s = open_at(fx->a);
    assert_int_equal(store_scan(s, "", 0, find_queued, &m), 0);
    store_close(s);
    assert_int_equal(m.id_seq, 0);
    assert_int_equal(m.payload_len, 1);

    /* with one: kept; read back as the export wrote it */
    write_file(fx->file, EXPORT_HEAD EXPORT_MSG ",\"id_epoch\":\"8000000000000001\",\"id_seq\":9}\n"
                                                "{\"type\":\"end\",\"records\":1}\n");
    assert_int_equal(run(fx, out, sizeof(out), "import", fx->b, fx->file, NULL), 0);
    s = open_at(fx->b);
    assert_int_equal(store_scan(s, "", 0, find_queued, &m), 0);
    store_close(s);
    assert_int_equal(m.id_seq, 9);
    assert_true(m.id_epoch == 0x8000000000000001ull);

    /* half an id, a bad epoch, number 0: refused, naming the line */
    static const char *const bad[] = {",\"id_seq\":9}\n", ",\"id_epoch\":\"12\",\"id_seq\":9}\n",
                                      ",\"id_epoch\":\"800000000000000g\",\"id_seq\":9}\n",
                                      ",\"id_epoch\":\"8000000000000001\",\"id_seq\":0}\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), "%s%s%s{\"type\":\"end\",\"records\":1}\n", EXPORT_HEAD,
                 EXPORT_MSG, bad[i]);
        write_file(fx->file, text);
        assert_int_equal(run(fx, out, sizeof(out), "import", fx->b, fx->file, "--force", NULL), 1);
        assert_non_null(strstr(out, "line 2"));
    }
}

/* ---- a store this build cannot read ------------------------------------- */

static void wrong_version_refused(void **state)
{
    fx_t *fx = *state;
    char out[4096];
    store_t *s = open_at(fx->a);
    store_batch_t *b = store_batch_new();
    uint8_t ver[4] = {0, 0, 0, 2};
    store_batch_put(b, STORE_KEY_VERSION, STORE_KEY_VERSION_LEN, ver, sizeof(ver));
    assert_int_equal(store_submit_sync(s, b), 0);
    store_close(s);

    /* a valid backup to try to import into it */
    s = open_at(fx->b);
    fill(s);
    store_close(s);
    assert_int_equal(run(fx, out, sizeof(out), "export", fx->b, fx->file, NULL), 0);

    const char *actions[][3] = {{"inspect", fx->a, NULL},
                                {"export", fx->a, fx->file},
                                {"import", fx->a, fx->file},
                                {"compact", fx->a, NULL},
                                {"expire", fx->a, NULL}};
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        int rc = run(fx, out, sizeof(out), actions[i][0], actions[i][1], actions[i][2], NULL);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, fx->a));
        assert_non_null(strstr(out, "format version 2"));
    }
    /* the backup was not removed by the failed export over it */
    assert_int_equal(access(fx->file, R_OK), 0);
}

static void usage_errors(void **state)
{
    fx_t *fx = *state;
    char out[4096];
    assert_int_equal(run(fx, out, sizeof(out), NULL), 2);
    assert_int_equal(run(fx, out, sizeof(out), "inspect", fx->a, "extra", NULL), 2);
    assert_int_equal(run(fx, out, sizeof(out), "generate", fx->a, "--subs", "x", NULL), 2);
    assert_int_equal(run(fx, out, sizeof(out), "import", fx->a, NULL), 2);
    assert_int_equal(access(fx->a, F_OK), -1); /* nothing was created */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(export_import_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(export_without_ids_imports, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_version_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(usage_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
