/* store_rec.h -- what the broker keeps in the store: the key layout and the
 * binary records, with encoders and strict decoders.  Pure functions, no
 * I/O, no state: shared by the broker, tools, tests and the fuzzer.
 *
 * Key layout (bytewise order is RocksDB's and the memory backend's order):
 *
 *   "\0meta/version"                  u32 BE format version (store.h)
 *   "\0auth/pwcache/" tag "/" MAC    a remembered password check (auth_pwcache.h;
 *                                     meta: skipped by export, import, inspect)
 *   "r/" topic                        retained message          record 'R'
 *   "s/" client id                    persistent session        record 'S'
 *   "q/" u16 BE n, client id (n bytes), u64 BE seq
 *                                     outgoing message of a session, queued
 *                                     or inflight, in delivery order    'Q'
 *   "i/" u16 BE n, client id (n bytes), u16 BE packet id
 *                                     incoming QoS 2 packet id received
 *                                     (PUBREC sent), not yet released   'I'
 *
 * The client id is length-prefixed, not terminated by '/': a client id may
 * contain '/', and "q/a/" would also be a prefix of client "a/b"'s queue.
 * With the length, store_key_queue_prefix(cid) is a prefix of exactly that
 * session's messages, in sequence order (big-endian sorts numerically), and
 * store_batch_del_prefix() of it drops the whole queue in one range
 * deletion.  Meta keys start with '\0' so they sort before all data.
 *
 * Records: [u8 type][u8 version] then the fields, integers big-endian, every
 * variable field preceded by its length, nothing after the last field.
 *
 *   'R' 1  qos u8, flags u8, expiry u64, topic u16+n, props u32+n, payload u32+n
 *   'S' 1  flags u8, expiry_interval u32, expiry_deadline u64, next_pid u16,
 *          nsubs u32, nsubs x { filter u16+n, options u8, sub_id u32 }
 *   'S' 2  the same, then has_owner u8 (0 or 1), owner u16+n when 1: the
 *          user of the client that created or last resumed the session.
 *          Version 1 (written before owners were kept, and still for a
 *          session whose owner is not known) decodes with owner_known false.
 *   'Q' 1  state u8, qos u8, flags u8 (0x01 retain, 0x02 dup), pid u16,
 *          expiry u64, topic u16+n, props u32+n, payload u32+n
 *   'Q' 2  the same, then the publish id (msg.h): epoch u64, number u32
 *          (not 0).  Written only for a message that has one (a cluster's);
 *          version 1 decodes with id_seq 0 (no id: compared by content).
 *   'I' 1  (nothing more)
 *
 * Times are unix seconds, 0 meaning "never".  props is the MQTT v5
 * property block as it will be sent (opaque here, empty for 3.1.1).
 * A decoder accepts exactly what its encoder produces: any truncation,
 * length past the end, trailing byte, unknown type or version, or field
 * out of range is an error, and decoding never reads outside [buf, buf+len).
 * Decoded byte fields point into the input buffer (no copy).
 */
#ifndef ANTENNA_STORE_REC_H
#define ANTENNA_STORE_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_KEY_VERSION "\0meta/version"
#define STORE_KEY_VERSION_LEN 13u
#define STORE_KEY_MAX (2u + 2u + 65535u + 8u)

#define STORE_REC_VERSION 1u

enum {
    STORE_KEY_RETAINED = 'r',
    STORE_KEY_SESSION = 's',
    STORE_KEY_QUEUE = 'q',
    STORE_KEY_INCOMING = 'i',
    STORE_KEY_META = 0
};

/* Key builders: return the key's length and write it to out only if it
 * fits in cap (call with cap 0 to size a buffer; STORE_KEY_MAX always
 * fits).  0 if a client id is longer than 65535 bytes or a topic is empty
 * or longer than 65535. */
size_t store_key_retained(uint8_t *out, size_t cap, const void *topic, size_t len);
size_t store_key_session(uint8_t *out, size_t cap, const void *cid, size_t len);
size_t store_key_queue(uint8_t *out, size_t cap, const void *cid, size_t len, uint64_t seq);
size_t store_key_queue_prefix(uint8_t *out, size_t cap, const void *cid, size_t len);
size_t store_key_incoming(uint8_t *out, size_t cap, const void *cid, size_t len, uint16_t pid);
size_t store_key_incoming_prefix(uint8_t *out, size_t cap, const void *cid, size_t len);

typedef struct store_key_info {
    int kind;            /* STORE_KEY_* */
    const uint8_t *name; /* topic (r), client id (s, q, i), rest of the key (meta) */
    size_t name_len;
    uint64_t seq; /* q */
    uint16_t pid; /* i */
} store_key_info_t;

/* Splits a key read back from the store; 0 or STORE_ECORRUPT. */
int store_key_parse(const void *k, size_t kl, store_key_info_t *out);

typedef struct store_retained {
    uint8_t qos;   /* 0..2 */
    uint8_t flags; /* the broker's, stored as is */
    uint64_t expiry;
    const uint8_t *topic; /* 1..65535 bytes */
    size_t topic_len;
    const uint8_t *props;
    size_t props_len;
    const uint8_t *payload;
    size_t payload_len;
} store_retained_t;

/* MQTT v5 subscription options byte: bits 0-1 QoS (<= 2), 2 no local,
 * 3 retain as published, 4-5 retain handling (<= 2), 6-7 zero. */
typedef struct store_sub {
    const uint8_t *filter; /* 1..65535 bytes */
    size_t filter_len;
    uint8_t options;
    uint32_t sub_id; /* 0 = none, else 1..268435455 */
} store_sub_t;

typedef struct store_session {
    uint8_t flags;            /* the broker's, stored as is */
    uint32_t expiry_interval; /* seconds (MQTT v5 Session Expiry Interval) */
    uint64_t expiry_deadline; /* when it expires if still offline; 0 = not set */
    uint16_t next_pid;        /* 1..65535 */
    uint32_t nsubs;
    store_sub_t *subs;    /* decode: allocated, store_rec_session_free() */
    bool owner_known;     /* false: version 1 (no owner field) */
    const uint8_t *owner; /* the owner's user name, NULL = none (anonymous) */
    size_t owner_len;     /* 0..65535 */
} store_session_t;

enum {
    STORE_OUT_QUEUED = 0,       /* not sent yet (pid may be 0) */
    STORE_OUT_WAIT_PUBACK = 1,  /* QoS 1 sent */
    STORE_OUT_WAIT_PUBREC = 2,  /* QoS 2 sent */
    STORE_OUT_WAIT_PUBCOMP = 3, /* QoS 2, PUBREC received, PUBREL sent */
};

typedef struct store_outmsg {
    uint8_t state; /* STORE_OUT_*; a WAIT_* state needs pid != 0 and its QoS */
    uint8_t qos;   /* 0..2 */
    bool retain;
    bool dup; /* only with qos > 0 */
    uint16_t pid;
    uint64_t expiry;
    const uint8_t *topic; /* 1..65535 bytes */
    size_t topic_len;
    const uint8_t *props;
    size_t props_len;
    const uint8_t *payload;
    size_t payload_len;
    uint64_t id_epoch; /* the publish id (msg.h); id_seq 0 = none (version 1) */
    uint32_t id_seq;
} store_outmsg_t;

/* Encoders: return the record's size and write it to out only if it fits
 * in cap (cap 0 sizes it); 0 if the fields are out of range (the decoder
 * would reject the result).  Sizes fit store_batch_put_reserve(). */
size_t store_rec_encode_retained(const store_retained_t *r, void *out, size_t cap);
size_t store_rec_encode_session(const store_session_t *s, void *out, size_t cap);
size_t store_rec_encode_outmsg(const store_outmsg_t *m, void *out, size_t cap);
size_t store_rec_encode_incoming(void *out, size_t cap);

/* Decoders: 0, STORE_ECORRUPT (malformed) or STORE_EVERSION (a record
 * version this build does not know).  *out is only meaningful on 0. */
int store_rec_decode_retained(const void *buf, size_t len, store_retained_t *out);
/* On 0, out->subs is allocated (NULL when nsubs is 0): store_rec_session_free(). */
int store_rec_decode_session(const void *buf, size_t len, store_session_t *out);
void store_rec_session_free(store_session_t *s);
int store_rec_decode_outmsg(const void *buf, size_t len, store_outmsg_t *out);
int store_rec_decode_incoming(const void *buf, size_t len);

#endif
