/* migrate.h -- a connection moves to the worker its traffic goes to.
 *
 * With two workers a fan-in publisher homed (by the hash of its client id)
 * on the worker without the subscriber sends every message across: an
 * inbox item, often a wake-up, for each one, and both workers busy where
 * one would do (issue 15, item 2; docs/benchmarks.md).  So a connection
 * whose deliveries go (nearly) all to ONE other worker moves there, with
 * its session: the fan-in then runs on one worker and the other sleeps; a
 * point-to-point publisher joins its subscriber, so pairs end co-located
 * and spread over the workers as the subscribers are.
 *
 * Counting (per publish, no lock, no allocation).  The router's local-
 * session row (router.c deliver_session) counts into the worker the
 * publish's deliveries on this worker (dlv_local) and to others (dlv_cross,
 * dlv_to the first destination, dlv_mixed if there were several); proto.c's
 * on_publish clears them before router_publish and hands them to
 * migrate_note after it.  The publisher's session counts, in bytes that
 * were padding (sess_t does not grow): mig_n messages that had local
 * deliveries, mig_k of them delivered wholly to worker mig_to (the first
 * such destination of the window).  A message held for a store commit
 * (QoS 1/2 to durable subscribers: delivered after it) is counted when it
 * is held, by its targets' homes (router.c publish_durable), and not again
 * when released (router_hand_held).
 *
 * Deciding (migrate_decide, a pure function).  Every MIGRATE_WINDOW counted
 * messages (not a timer: nothing costs anything while idle, and a slow
 * publisher that gains nothing by moving moves late): at least 90 % of
 * them wholly to one other worker -> the connection is wanted there.
 * Hysteresis: a moved session skips MIGRATE_HOLD windows; only a session
 * without subscriptions moves by locality (a pure publisher), so its
 * partner never follows it back and nothing ping-pongs; a p2p or fan-in
 * subscriber stays where its hash put it, which keeps the load spread
 * (consolidation, below, moves subscribers, by load, not by traffic).
 *
 * Moving (end of the worker's turn, migrate_run).  After every outbox batch
 * of the turn was posted and the output written: so what this connection
 * published before the move is in every destination's inbox before the
 * new worker can read its next packet (inboxes are FIFO), and nothing of
 * its order per topic changes.  It moves only between packets and when
 * idle in every other respect: state ACTIVE, no flag but Problem
 * Information (no pause, throttle, route barrier, unsent output), no
 * partial packet in the framer, no acknowledgement held for a store commit
 * or the cluster, no authentication exchange or connect gate, and its
 * session has no will, no expiry timer, nothing in flight or queued that
 * the store has records of, and no subscription unless consolidation may
 * move it (below).  Messages in flight and queued go along with the
 * session (a QoS 1 subscriber always has some under traffic), and so does
 * the retry timer of a 3.1.1 session (sess_timer_move_out/_in).
 * A connection busy at the end of the turn stays wanted, and is tried at
 * the end of each turn, for MIGRATE_WANT_MS.
 * The old worker takes the socket out of its loop and the session out of
 * its tables, records the new home (below) and posts a WM_MIGRATE item;
 * the new worker puts both in its tables and loop (migrate_adopt).
 *
 * The home of a client id (worker_home, worker.c) is the hash of the id
 * unless this table overrides it: client id -> worker, for the sessions
 * that moved away from their hash home.  Consulted where the hash is (a
 * CONNECT and its take-over, the API, the cluster's registry, gateways,
 * commands) and only when not empty (one relaxed load otherwise).  Written
 * under its write lock, and the WM_MIGRATE item is posted under that lock:
 * whoever reads the new home posts behind the session.  Whoever read the
 * old home a moment before posts to the old worker: a CONNECT handed there
 * is handed on (proto.c: the home is asked again on adoption), and so are
 * an API job for one client id and a cluster take-over or kick that find
 * no session there (migrate_hand_on: the home is read again and the item
 * posted to it, after the move's item; a session holds MIGRATE_HOLD
 * windows before it moves again, so an item follows it a hop or two).  The entry goes
 * when the session ends (sess_destroy) or moves back to its hash home.  It
 * is not stored: after a restart sessions load on their hash home.
 *
 * Light load (consolidation, workers_consolidate, default on).  Two
 * workers each woken by their share of every burst cost more than one
 * woken once (measured on this 2-core machine: 10k msg/s point to point,
 * 12-20 us a message against 11 on one worker), and locality alone never
 * packs pairs onto one worker.  So while the load is light every connected
 * session lives on worker 0 and the others sleep: every MIGRATE_CONSOL_MS
 * worker 0 adds up the busy time of all workers (busy_us: from the wait's
 * return to the end of each turn) as a percentage of one core;
 * MIGRATE_CONSOL_VOTES looks in a row under workers_consolidate_below
 * (35 %) consolidate, one look over workers_consolidate_above (85 %)
 * spreads again, and a mode stays MIGRATE_CONSOL_DWELL_MS at least (an
 * idle broker starts consolidated).  Every worker's timer sweeps part of
 * its sessions (MIGRATE_CONSOL_LOOK, from where it stopped): consolidated,
 * every session that could move is wanted on worker 0 (and locality wants
 * nothing elsewhere); spread, each subscriber consolidation took from its
 * hash home is wanted back there, and its publishers follow it by
 * locality.  The moves are migrate_run's, at the end of a turn.
 *
 * A subscriber moves too (consolidation only: locality moves publishers)
 * when nothing else names its worker: no shared subscription, not durable,
 * nothing stored, not being deduplicated after an adoption.  Its routes
 * (sub_ref_t.owner in the trie) are changed under the trie's write lock
 * with the post of WM_MIGRATE, and a fence keeps each publisher's order
 * for deliveries matched before the change that are still on their way to
 * the old worker (migrate.c, "a subscriber's fence": handed on as
 * DLV_HANDED; direct ones held by the new worker until DONE).
 *
 * Threads: the counters, the decision and the move run on the workers
 * owning the session; the table is read by any thread; the mode is
 * decided on worker 0 and read by every worker (an atomic).
 */
#ifndef ANTENNA_MIGRATE_H
#define ANTENNA_MIGRATE_H

#include <stdint.h>

#include "server.h"
#include "sess.h"

#define MIGRATE_WINDOW 256   /* counted messages per decision */
#define MIGRATE_SHARE 90     /* percent of them wholly to one other worker */
#define MIGRATE_HOLD 4       /* windows a moved session waits before it may move again */
#define MIGRATE_WANT_MS 2000 /* a wanted move waits this long for its connection to be idle */

/* Consolidation (workers_consolidate): see "Light load" above. */
#define MIGRATE_CONSOL_MS 250        /* a look: worker 0's decision, every worker's sweep */
#define MIGRATE_CONSOL_VOTES 2       /* looks in a row below the threshold to consolidate */
#define MIGRATE_CONSOL_DWELL_MS 2000 /* a mode is kept at least this long */
#define MIGRATE_CONSOL_LOOK 4096     /* sessions a sweep looks at */
#define MIGRATE_CONSOL_BATCH 512     /* sessions a sweep wants moved */
#define MIGRATE_FENCE_GRACE_MS 1000  /* a fence handed on stragglers this long after DONE */
enum { MIGRATE_FENCE_ASK = 1, MIGRATE_FENCE_ACK, MIGRATE_FENCE_DONE };

/* 1 when a window of n counted messages, k of them wholly to worker `to`,
 * on worker self, asks for a move (nothing is known of `to` when k == 0). */
int migrate_decide(uint32_t n, uint32_t k, uint32_t to, uint32_t self, uint32_t nworkers);

/* A window is complete: decide, and note the session as wanted elsewhere
 * (moved at the end of the turn). */
void migrate_window(worker_t *w, sess_t *s);

/* After router_publish of a message from s (its deliveries counted in w). */
static inline void migrate_note(worker_t *w, sess_t *s)
{
    uint32_t cross = w->dlv_cross, all = cross + w->dlv_local;
    if (all == 0)
        return;
    if (cross == all && !w->dlv_mixed) {
        if (s->mig_k == 0)
            s->mig_to = (uint8_t)w->dlv_to;
        if (w->dlv_to == s->mig_to)
            s->mig_k++;
    }
    if (++s->mig_n >= MIGRATE_WINDOW)
        migrate_window(w, s);
}

/* End of turn: move the sessions wanted elsewhere that can move now. */
void migrate_run(worker_t *w);

/* The home table (server_t.homes): created at start-up when workers_migrate
 * is on and there are 2 workers or more; freed after the workers. */
int migrate_init(server_t *srv);
void migrate_free(server_t *srv);
/* The home of a client id whose hash (an_siphash(home_key)) is h, when the
 * table may hold it. */
uint32_t migrate_home(const server_t *srv, uint64_t h, const uint8_t *id, size_t len);
/* A session made on s->w (a CONNECT handed there by the table, after the
 * moved session of its id ended): if that is not its hash home, the table
 * says s->w again and s is marked moved. */
void migrate_home_claim(server_t *srv, sess_t *s);
/* Session s (moved, on its worker) ended: its id homes by hash again. */
void migrate_home_drop(server_t *srv, const sess_t *s);

/* An item about client id `id` reached worker w, which does not hold its
 * session: when the id's home is now another worker (the session moved
 * after the sender read its home), post the item there, behind the move's
 * WM_MIGRATE item, and return 1; 0 when w is the home (the session does not
 * exist) or sessions never move.  Whoever looks a session up by client id
 * on the worker it was posted to (an API job, a cluster take-over or kick)
 * calls it before answering "not found". */
int migrate_hand_on(worker_t *w, const char *id, size_t len, const inbox_item_t *it);

/* The mode for the load of the last look (a pure function): pct is the
 * busy time of all workers as a percentage of one core; consolidate after
 * MIGRATE_CONSOL_VOTES looks in a row under `below` (votes counts them),
 * spread again above `above`.  1: consolidated. */
int migrate_consol_decide(int consolidated, uint32_t pct, uint32_t below, uint32_t above,
                          uint8_t *votes);

/* A worker's consolidation timer (worker_init, after migrate_init), and
 * what its fences hold (worker_free). */
void migrate_worker_start(worker_t *w);
void migrate_worker_free(worker_t *w);

/* The old worker's side of a subscriber's move (move_one, migrate_run;
 * tests): a fence for sid, whose new worker is `to`; and, at the end of a
 * turn that opened fences, one ASK per other worker for them. */
void migrate_fence_open(worker_t *w, uint64_t sid, uint32_t to);
void migrate_fence_ask(worker_t *w);

/* A delivery for s while s->fenced: 1 when it waits for the fence (taken,
 * with a reference of its own), 0 when it goes now (handed on by the old
 * worker: matched before the move). */
int migrate_fence_hold(worker_t *w, sess_t *s, msg_t *m, uint8_t qos, uint8_t flags);
/* A local match for a session w does not have (consolidation on): a
 * subscriber moving in may be behind it in the inbox; held with the fence's
 * (released in order at its DONE).  A held delivery whose session is still
 * not here a look later (MIGRATE_CONSOL_MS) goes: the session ended. */
void migrate_hold_early(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags);

/* A delivery for a session w does not have: if it moved out with its
 * subscriptions lately, hand it on to its new worker (DLV_HANDED) and
 * return 1; else 0. */
int migrate_hand_stray(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags);

/* An item as migrate_run posts it, adopted on w (WM_MIGRATE's handler). */
void migrate_adopt(worker_t *w, conn_t *c);
/* WM_MIGRATE's handler, registered at start-up. */
void migrate_register_inbox(server_t *srv);

#endif
