/* cl_share.h -- which replica holds which part of a node's store
 * (persistence.session_store: replicated; docs/cluster.md "Replicated
 * sessions").  Pure functions, no state: cl_repl.c (the committer thread),
 * the unit test and the fuzz target use them.
 *
 * A store key's share key: the client id for a session's keys ("s/" id,
 * "q/" and "i/" u16 n + id: cl_share_key), so that a session, its queue,
 * in-flight messages and QoS 2 ids always go to one replica; any other key
 * (a retained message "r/" topic) by the whole key.  A meta key ("\0...":
 * the format version, the password cache) and a prefix delete that is not
 * one client's ("s/", "q/", a family) concern every share: each copy is a
 * store of its own, with the format version store_open wants.  The replica of a share key among n peers: the highest
 * rendezvous hash of (peer name, share key) (cl_share_pick; ties: the
 * first); when a peer joins or goes, only the share keys it wins or won
 * move.
 */
#ifndef ANTENNA_CL_SHARE_H
#define ANTENNA_CL_SHARE_H

#include <stddef.h>
#include <stdint.h>

#include "cl_wire.h"

/* 1 and the share key in *pk (pointing into k), or 0: every share (a meta
 * key, a prefix delete of more than one client's keys).  op: STORE_RAW_*. */
int cl_share_key(int op, const uint8_t *k, size_t kl, const uint8_t **pk, size_t *pkl);
/* A peer's seed (its name hashed once) and the rendezvous hash of a share
 * key under it. */
uint64_t cl_share_seed(const char *peer);
uint64_t cl_share_hash(uint64_t seed, const uint8_t *pk, size_t pkl);
/* The index (0..n-1) of the seed that wins pk; n > 0. */
int cl_share_pick(const uint64_t *seeds, int n, const uint8_t *pk, size_t pkl);
/* Splits a flat form of store operations (store_batch_raw) over n peers:
 * each operation appended to out[its share's pick], or to every out[] when
 * it concerns every share.  0, or -1 when ops is not a flat form (out[]
 * then holds a part). */
int cl_share_split(const uint8_t *ops, size_t len, const uint64_t *seeds, int n, cl_buf_t *out);

#endif
