/* b64.h -- base64 (RFC 4648): standard alphabet with padding both ways,
 * and base64url without padding (JWT, RFC 7515) on decode.
 *
 * Decoding is strict: only the alphabet, padding only at the end and only
 * as many '=' as the length needs, unused bits of the last character zero
 * (so each byte string has exactly one accepted text), and never a byte
 * written past `cap`.  Pure functions, no allocation except
 * b64_encode_alloc; callable from any thread.
 */
#ifndef ANTENNA_B64_H
#define ANTENNA_B64_H

#include <stddef.h>
#include <stdint.h>

/* Characters b64_encode writes for n bytes, without the NUL; a constant
 * expression when n is, so it can size an array. */
#define B64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/* At least the bytes that b64_decode or b64_decode_url make of len
 * characters: a buffer this size never fails for lack of room. */
#define B64_DECODED_MAX(len) (((len) + 3) / 4 * 3)

/* Standard alphabet with padding; writes B64_ENCODED_LEN(n) characters and
 * a NUL into out.  Returns the number of characters (without the NUL). */
size_t b64_encode(const uint8_t *in, size_t n, char *out);

/* The same into a fresh NUL-terminated string (an_malloc: never NULL). */
char *b64_encode_alloc(const uint8_t *in, size_t n);

/* Standard alphabet with padding, strict: len a multiple of 4 (0 gives 0
 * bytes), '=' only as the last one or two characters.  Returns the decoded
 * length, or -1 when the text is not canonical base64 or the bytes would
 * not fit in cap (then nothing is written). */
long b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* base64url ('-' and '_' for '+' and '/') without padding: no '=' at all,
 * len % 4 != 1.  Returns as b64_decode. */
long b64_decode_url(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
