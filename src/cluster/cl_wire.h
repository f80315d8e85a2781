/* cl_wire.h -- the node links' frames, encoded and decoded without I/O
 * (docs/cluster.md "Node links").
 *
 * A frame is length (4 bytes, big endian: the type byte and the body) |
 * type (1) | body.  Integers are big endian; strings carry their length
 * (1 byte for names, 2 for topics and filters, 4 for properties); a
 * message's payload is the rest of its frame.  Decoders check every length
 * against the frame and point into it (nothing is copied or allocated);
 * encoders append to a cl_buf_t.  Pure functions: the link thread, the
 * unit test (tests/unit/test_cl_wire.c) and the fuzz target use them.
 */
#ifndef ANTENNA_CL_WIRE_H
#define ANTENNA_CL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define CL_WIRE_VERSION 1
#define CL_NONCE_LEN 16
#define CL_MAC_LEN 32
/* the largest frame accepted: an MQTT packet's largest payload and room
 * for the rest */
#define CL_FRAME_MAX (268435455u + 131072u)

enum {
    CL_F_HELLO = 1,        /* cl_hello_t */
    CL_F_AUTH,             /* CL_MAC_LEN bytes */
    CL_F_PING,             /* empty: any frame proves the link alive */
    CL_F_ROUTE_ADD,        /* a filter this node has subscribers for */
    CL_F_ROUTE_DEL,        /* a filter it no longer has */
    CL_F_SYNC_BEGIN,       /* empty: the whole route set follows */
    CL_F_SYNC_END,         /* empty: drop routes not named since SYNC_BEGIN */
    CL_F_MSG,              /* cl_msg_t: a forwarded message */
    CL_F_ACK,              /* u64: every QoS 1/2 message up to this seq is here */
    CL_F_RETAINED,         /* cl_msg_t: a retained message of the sender's set */
    CL_F_OWN_TAKE,         /* u32 req | u16 len | client id: hand this client's session over
                      * (cl_owner.c) */
    CL_F_OWN_GIVEN,        /* u32 req: the claim is released, the session closed */
    CL_F_MSG_SHARED,       /* cl_groups_t then cl_msg_t: a message for shared groups
                      * ("$share/g/f" the receiver announced; it gives it to one
                      * of its own members of each), and plain: also for its
                      * ordinary subscribers */
    CL_F_RETAINED_CLEAR,   /* cl_msg_t, no payload: a tombstone of the sender's (a
                          * retained topic cleared; cl_tomb.c) */
    CL_F_ROUTE_MARK,       /* u64: the sender's local route changes up to here were sent
                          * before this frame: answer with ROUTE_ACKED */
    CL_F_ROUTE_ACKED,      /* u64: the ROUTE_MARK answered: those routes are in my trie */
    CL_F_ROUTE_RESYNC,     /* empty: send me your whole route set again (SYNC_BEGIN..
                          * SYNC_END); optional: a node that does not know it
                          * ignores it (cl_link.c), so the version stays */
    CL_F_ADOPT_ASK,        /* u16 len | node name: I adopt it, send what you kept for it */
    CL_F_ADOPT_MSG,        /* cl_msg_t: a copy kept for that node (cl_hand.c) */
    CL_F_ADOPT_END,        /* u16 len | node name: the copies kept for it were all sent */
    CL_F_ADOPT_DONE,       /* u16 len | node name: they are stored here, release them */
    CL_F_REPL_DATA,        /* u64 seq | u8 CL_REPL_* flags | store operations (store_batch_raw):
                          * apply them to your copy of my store, then REPL_ACK (cl_repl.c) */
    CL_F_REPL_ACK,         /* u64 seq | u8 ok: your REPL_DATA up to seq is in my copy */
    CL_F_REPL_DROP,        /* empty: another node is my replica now: drop your copy of me */
    CL_F_ADOPT_OVER,       /* u16 len | node name: its client ids are claimed by me (the
                          * sender, its adopter): resuming CONNECTs go on */
    CL_F_ADOPT_IDS,        /* u16 len | node name, then (u16 len | client id) each: ids of
                          * its sessions I claimed (before ADOPT_OVER; cl_recent.c) */
    CL_F_ROUTE_BITS_WANT,  /* u64 key check: send me your exact routes as a bit filter
                            * (cl_bits.c); optional: an older node ignores it and
                            * keeps sending them as strings */
    CL_F_ROUTE_BITS,       /* u32 blocks | u64 routes | the bits (blocks * 64 bytes): my
                            * exact routes are these now (rbits.h) */
    CL_F_ROUTE_BITS_DELTA, /* u32 blocks | u64 routes | u32 each: a position, its top bit
                            * set when the bit is set now, clear when cleared */
    /* a session moving between live nodes (cl_move.c); optional: an older
     * node ignores them (its moves lose what is published meanwhile) */
    CL_F_MOVE_KEEP, /* u32 req: (before OWN_GIVEN) I keep what reaches that session: ask me */
    CL_F_MOVE_ASK,  /* u32 req | u16 len | client id: its routes are known: send what you kept */
    CL_F_MOVE_KEPT, /* u32 req | u16 len | client id | CL_F_MSG frames: the copies kept (the
                     * entry's QoS and retain flag); the tombstone lingers for late ones */
    CL_F_MOVE_LATE, /* as MOVE_KEPT: what reached it after that answer; it is gone now */
    CL_F_MSG_IDS,   /* empty: I read publish ids (CL_MSG_ID) in MSG, MSG_SHARED and
                            * ADOPT_MSG, and in the hand-over's message records; optional:
                            * an older node ignores it and gets none */
    CL_F_MOVE_DROP, /* u32 req | u16 len | client id: (after that move's OWN_GIVEN) I
                     * claimed it with a clean start: end your tombstone now; optional:
                     * an older node ignores it and keeps it MOVE_KEEP_MS */
    CL_F_TYPES
};

#define CL_BITS_MAX_BLOCKS (1u << 22) /* = RBITS_MAX_BLOCKS (rbits.h) */
#define CL_BITS_HEAD 12               /* u32 blocks | u64 routes */

#define CL_MSG_RETAIN 1 /* cl_msg_t.flags: published with retain */
#define CL_MSG_ID                                                                                  \
    2                      /* cl_msg_t.flags: the publish id (msg.h) follows the properties:
                            * u64 epoch | u32 number (not 0); only to a node that sent
                            * CL_F_MSG_IDS */
#define CL_REPL_RESET 1    /* CL_F_REPL_DATA: the copy is emptied first (a full copy begins) */
#define CL_REPL_COMPLETE 2 /* CL_F_REPL_DATA: the full copy ends with this frame */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} cl_buf_t;

/* Room for n more bytes (an_realloc: aborts when out of memory). */
void cl_buf_reserve(cl_buf_t *b, size_t n);
void cl_buf_free(cl_buf_t *b);

typedef struct {
    uint16_t version;
    const char *cluster, *node; /* not NUL-terminated */
    uint8_t cluster_len, node_len;
    uint8_t nonce[CL_NONCE_LEN];
    uint64_t incarnation; /* random per process: the peer restarted */
} cl_hello_t;

typedef struct {
    uint64_t seq;          /* QoS 1/2: the link's sequence number; QoS 0: 0 */
    uint64_t published_at; /* wall clock ms */
    uint32_t expiry_ms;    /* left of its Message Expiry Interval, 0 = never */
    uint16_t src;          /* the publisher's worker (one stream per worker) */
    uint8_t qos, flags;    /* CL_MSG_* */
    const char *origin;    /* CL_F_RETAINED: the node it was published on */
    uint8_t origin_len;
    uint16_t topic_len;
    uint32_t props_len, payload_len;
    const uint8_t *topic, *props, *payload;
    uint64_t id_epoch; /* with CL_MSG_ID: the publish id (msg.h); else id_seq 0 */
    uint32_t id_seq;
} cl_msg_t;

#define CL_GROUPS_MAX 4 /* groups named by one CL_F_MSG_SHARED */
typedef struct {
    uint8_t plain; /* 1: also routed to the receiver's ordinary subscribers */
    uint8_t n;
    uint16_t len[CL_GROUPS_MAX];
    const uint8_t *f[CL_GROUPS_MAX]; /* "$share/g/f", not NUL-terminated */
} cl_groups_t;

/* Split the first frame off buf: its total size (> 0) with *type and the
 * body, 0 when more bytes are needed, -1 when the frame is invalid (an
 * empty one, or larger than max). */
long cl_frame_next(const uint8_t *buf, size_t len, uint32_t max, uint8_t *type,
                   const uint8_t **body, uint32_t *body_len);

void cl_enc_hello(cl_buf_t *b, const cl_hello_t *h);
void cl_enc_auth(cl_buf_t *b, const uint8_t mac[CL_MAC_LEN]);
void cl_enc_empty(cl_buf_t *b, uint8_t type); /* PING, SYNC_BEGIN, SYNC_END */
void cl_enc_route(cl_buf_t *b, uint8_t type, const uint8_t *filter, uint16_t len);
void cl_enc_ack(cl_buf_t *b, uint64_t seq);
void cl_enc_u64(cl_buf_t *b, uint8_t type, uint64_t v);        /* ROUTE_MARK, ROUTE_ACKED */
void cl_enc_msg(cl_buf_t *b, uint8_t type, const cl_msg_t *m); /* MSG, RETAINED */
void cl_enc_msg_shared(cl_buf_t *b, const cl_groups_t *g, const cl_msg_t *m);

/* REPL_DATA's header (the operations follow: append them after it) and
 * REPL_ACK; the frame's length is patched by cl_enc_patch_len once the
 * body is complete (start: b->len before cl_enc_repl_head). */
void cl_enc_repl_head(cl_buf_t *b, uint64_t seq, uint8_t flags);
void cl_enc_patch_len(cl_buf_t *b, size_t start);
void cl_enc_repl_ack(cl_buf_t *b, uint64_t seq, uint8_t ok);

/* ROUTE_BITS_WANT is cl_enc_u64; ROUTE_BITS: bits is blocks * 64 bytes;
 * ROUTE_BITS_DELTA: count entries (position | set bit). */
void cl_enc_bits(cl_buf_t *b, uint32_t blocks, uint64_t routes, const uint8_t *bits);
void cl_enc_bits_delta(cl_buf_t *b, uint32_t blocks, uint64_t routes, const uint32_t *ent,
                       size_t count);
/* Entry i of a decoded ROUTE_BITS_DELTA. */
static inline uint32_t cl_bits_ent(const uint8_t *ents, size_t i)
{
    const uint8_t *q = ents + 4 * i;
    return (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
}

/* 0, or -1 when the body does not parse exactly. */
int cl_dec_bits(const uint8_t *body, uint32_t len, uint32_t *blocks, uint64_t *routes,
                const uint8_t **bits);
int cl_dec_bits_delta(const uint8_t *body, uint32_t len, uint32_t *blocks, uint64_t *routes,
                      const uint8_t **ents, size_t *count);
int cl_dec_hello(const uint8_t *body, uint32_t len, cl_hello_t *h);
int cl_dec_auth(const uint8_t *body, uint32_t len, const uint8_t **mac);
int cl_dec_route(const uint8_t *body, uint32_t len, const uint8_t **filter, uint16_t *flen);
int cl_dec_ack(const uint8_t *body, uint32_t len, uint64_t *seq); /* any u64 body */
int cl_dec_msg(const uint8_t *body, uint32_t len, cl_msg_t *m);
int cl_dec_repl_data(const uint8_t *body, uint32_t len, uint64_t *seq, uint8_t *flags,
                     const uint8_t **ops, uint32_t *ops_len);
int cl_dec_repl_ack(const uint8_t *body, uint32_t len, uint64_t *seq, uint8_t *ok);
int cl_dec_msg_shared(const uint8_t *body, uint32_t len, cl_groups_t *g, cl_msg_t *m);

#endif
