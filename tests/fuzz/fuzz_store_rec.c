/* fuzz_store_rec.c -- libFuzzer: the store's record decoders and key parser
 * (store_rec.h) on arbitrary bytes, as if read back from a damaged disk.
 * Every decoder sees every input (the type byte selects which one can
 * accept it).  A decoder must never read outside the input (ASan), and
 * whatever it accepts must re-encode to exactly the input bytes (the
 * formats are canonical); a parsed key must rebuild to the same key.  Any
 * difference aborts.  Seeds: tests/fuzz/corpus/store_rec/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_rec.h"

static void check_same(const uint8_t *data, size_t size, size_t n, const uint8_t *enc)
{
    if (n != size || memcmp(enc, data, size) != 0)
        abort();
}

static void check_retained(const uint8_t *data, size_t size, uint8_t *out)
{
    store_retained_t r;
    int rc = store_rec_decode_retained(data, size, &r);
    if (rc == 0)
        check_same(data, size, store_rec_encode_retained(&r, out, size), out);
    else if (rc != STORE_ECORRUPT && rc != STORE_EVERSION)
        abort();
}

static void check_session(const uint8_t *data, size_t size, uint8_t *out)
{
    store_session_t s;
    int rc = store_rec_decode_session(data, size, &s);
    if (rc == 0) {
        check_same(data, size, store_rec_encode_session(&s, out, size), out);
        store_rec_session_free(&s);
    } else if (rc != STORE_ECORRUPT && rc != STORE_EVERSION) {
        abort();
    }
}

static void check_outmsg(const uint8_t *data, size_t size, uint8_t *out)
{
    store_outmsg_t m;
    int rc = store_rec_decode_outmsg(data, size, &m);
    if (rc == 0)
        check_same(data, size, store_rec_encode_outmsg(&m, out, size), out);
    else if (rc != STORE_ECORRUPT && rc != STORE_EVERSION)
        abort();
}

static void check_key(const uint8_t *data, size_t size)
{
    store_key_info_t ki;
    uint8_t k[STORE_KEY_MAX];
    size_t n = 0;
    if (store_key_parse(data, size, &ki) != 0)
        return;
    switch (ki.kind) {
    case STORE_KEY_RETAINED:
        n = store_key_retained(k, sizeof(k), ki.name, ki.name_len);
        break;
    case STORE_KEY_SESSION:
        n = store_key_session(k, sizeof(k), ki.name, ki.name_len);
        break;
    case STORE_KEY_QUEUE:
        n = store_key_queue(k, sizeof(k), ki.name, ki.name_len, ki.seq);
        break;
    case STORE_KEY_INCOMING:
        n = store_key_incoming(k, sizeof(k), ki.name, ki.name_len, ki.pid);
        break;
    case STORE_KEY_META:
        if (ki.name != data + 1 || ki.name_len != size - 1)
            abort();
        return;
    default:
        abort();
    }
    check_same(data, size, n, k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *out = malloc(size ? size : 1);
    check_retained(data, size, out);
    check_session(data, size, out);
    check_outmsg(data, size, out);
    int rc = store_rec_decode_incoming(data, size);
    if (rc == 0 && (size != 2 || data[0] != 'I'))
        abort();
    check_key(data, size);
    free(out);
    return 0;
}
