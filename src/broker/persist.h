/* persist.h -- what the broker keeps in its store (src/store/), and when.
 *
 * Today: retained messages, and sessions across a graceful restart.  Each worker collects the retained changes of
 * one loop turn in one store batch and submits it at the end of the turn;
 * the store's committer thread commits the batches of every worker together
 * (group commit).  At start-up the retained messages are read back before
 * any listener is served.  $SYS topics are not kept: they are regenerated.
 * Sessions, queues and inflight state are the next step (issue 6).
 */
#ifndef ANTENNA_PERSIST_H
#define ANTENNA_PERSIST_H

#include "msg.h"
#include "server.h"

/* Open the store under conf.data_dir and load what it holds.  Returns 0
 * (also when persistence is off) or -1 with the reason logged (naming the
 * path). */
int persist_open(server_t *srv);
/* Record a retained change (m with an empty payload clears the topic). */
void persist_retained(worker_t *w, const msg_t *m);
/* End of a loop turn: submit what this worker collected. */
void persist_flush(worker_t *w);
/* Graceful restart of sessions: at shutdown every session that outlives
 * its connection is written with its subscriptions, inflight and queued
 * messages and incoming QoS 2 ids (persist_save_sessions, per worker, after
 * its thread stopped); at start-up they are read back onto their home
 * workers and removed from the store (persist_load_sessions), so state from
 * an earlier run is never restored twice.  A crash loses sessions until
 * the hot path writes them (issue 6). */
int persist_save_sessions(worker_t *w);
int persist_load_sessions(server_t *srv);
/* After the workers were freed (each flushed its batch): commit what is
 * pending and close. */
void persist_close(server_t *srv);

#endif
