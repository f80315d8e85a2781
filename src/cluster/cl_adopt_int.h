/* cl_adopt_int.h -- what cl_adopt.c (the watches, the adopter thread, one
 * adoption's steps) and cl_adopt_merge.c (the home workers' part: sessions
 * installed, kept copies merged, direct twins dropped) share.  The state
 * cl_adopt_t is cl_adopt.c's; the fields each file touches, and under which
 * lock, are said where they are declared.  Nothing here is for other parts
 * of the cluster module: cl_int.h says what they call.
 */
#ifndef ANTENNA_CL_ADOPT_INT_H
#define ANTENNA_CL_ADOPT_INT_H

#include "cl_int.h"
#include "cl_wire.h"
#include "msg.h"
#include "sess.h"

typedef struct {
    char name[CL_NAME_MAX];
    uint64_t since, try_at; /* monotonic ms */
    int gate;               /* resuming CONNECTs wait (0: N itself holds its lock) */
    int over;               /* its adopter claimed the client ids: no gate (cl_adopt_over) */
    /* replicated: the adopters (node indexes, 0 this node) etcd names, once
     * read (need_known), and those that made their claims (CL_F_ADOPT_OVER) */
    int need_known;
    uint64_t need[CL_MAX_NODES / 64], overs[CL_MAX_NODES / 64];
} ad_watch_t;

/* A copy merged into adopted session sid: a copy that comes the direct
 * way too (published while both N's routes and this node's were known) is
 * dropped when it reaches the session (ad_dedup_hook), on whichever worker
 * the session is then.  Each one drops one copy at most.  With a publish
 * id only the id is kept (m NULL); the entry goes when its twin came, when
 * a later QoS 1/2 message of the same publisher (its epoch, a higher
 * number) reached the session first (its twin would have come before: a
 * publisher's stream to a session keeps its order), or at `until`
 * (ADOPT_DEDUP_ID_MS: a memory bound for a publisher gone quiet).  Without
 * one, the copy (m, a reference) is compared by content until `until`
 * (ADOPT_DEDUP_MS).  until 0: used. */
typedef struct {
    uint64_t sid, until; /* monotonic ms */
    msg_t *m;
    uint64_t id_epoch;
    uint32_t id_seq;
} ad_seen_t;

typedef struct {
    ad_seen_t *v;
    size_t n, cap;
} ad_seenv_t;

struct cl_adopt_s {
    cl_t *cl;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                       /* under mu */
    ad_watch_t watch[CL_MAX_NODES]; /* under mu */
    uint32_t nwatch;
    _Atomic uint32_t pending; /* watches with gate set, for the connect gate */
    _Atomic int32_t early;    /* departures the etcd thread saw, not yet watched (link thread) */
    _Atomic uint64_t adoptions, sessions, messages, failures, last_ms, last_sessions;
    _Atomic uint64_t handed; /* copies kept by the members, merged into adopted sessions */
    /* the copies the members kept for the node being adopted (cl_hand.c),
     * under mu: coll_on while adopt() collects, coll_left answers due */
    char coll_name[CL_NAME_MAX];
    int coll_on;
    uint32_t coll_left;
    msg_t **coll;
    uint32_t ncoll, cap_coll;
    /* the copies merged into adopted sessions, sorted by session id (the
     * workers': merge_item, ad_dedup_hook), under seen_mu */
    pthread_mutex_t seen_mu;
    ad_seenv_t seen;
    /* the adoption running here, once its sessions are read (under mu; the
     * adopter's reference): cl_adopt_holds */
    struct ad_job_s *cur;
    /* the latest adoption here, for cl_adopt_late (under mu; a reference) */
    struct ad_job_s *late_job;
    char late_name[CL_NAME_MAX];
    uint64_t late_until;
    _Atomic uint64_t dropped_direct; /* direct copies dropped as handed already */
};

/* A copy kept by a member for N, to be queued to one adopted session. */
typedef struct {
    msg_t *m;
    uint8_t qos, retain;
} ad_hand_t;

/* One session of the dead node, in the hand-over format being built. */
typedef struct {
    uint8_t *id;
    uint16_t len;
    uint32_t home;
    uint8_t *rec; /* the session record */
    uint32_t rec_len;
    cl_buf_t infl, queued; /* u32 len | outmsg record, each */
    uint32_t ninfl, nqueued;
    cl_buf_t pids;
    uint32_t npids;
    ad_hand_t *hand; /* the kept copies for it (merge_collected), queued by merge_item */
    uint32_t nhand;
    int rc;    /* cl_owner_install's, -2 not run */
    int claim; /* 0 not answered, 1 ours, 2 another node's, 3 failed */
} ad_sess_t;

typedef struct ad_job_s {
    cl_adopt_t *a;
    _Atomic int refs;
    uint32_t left, claims_left; /* under a->mu */
    ad_sess_t *v;
    size_t n, cap;
    uint64_t now_wall_ms;
    size_t messages, expired, bad;
    /* per worker: the store keys reserved for the adopted sessions' stored
     * messages and then the kept copies (below every key of a message that
     * reaches them the direct way); seq_next, seq_end[nworkers] */
    uint64_t *seq_next, *seq_end;
    _Atomic uint64_t merged, skipped; /* kept copies queued / found there already */
} ad_job_t;

/* What a home worker does with its adopted sessions: install them (phase
 * 0), then queue the copies the members kept (phase 1, merge_item). */
typedef struct {
    ad_job_t *job;
    int phase;
    int late; /* cl_adopt_late's: s[] are its own (one copy each), not waited for */
    uint32_t n;
    ad_sess_t *s[];
} ad_item_t;

/* ---- cl_adopt.c ---- */

/* Drops a reference to j (the last one frees it and its copies). */
void ad_job_unref(ad_job_t *j);
/* Appends v to b, big-endian. */
void ad_put32(cl_buf_t *b, uint32_t v);
/* Waits until *count is 0 (under a->mu), at most ms or until stop: 0 or -1. */
int ad_wait_zero(cl_adopt_t *a, uint32_t *count, uint32_t ms);

/* ---- cl_adopt_merge.c ---- */

/* srv->dedup_hook, for a session marked adopt_dedup, on its home worker:
 * 1 when m is the direct twin of a kept copy merged into it (dropped). */
int ad_dedup_hook(worker_t *w, sess_t *s, const msg_t *m, void *user);
/* The merged copies: those past `now` or used go (under seen_mu). */
void ad_seen_prune(ad_seenv_t *sv, uint64_t now);
/* Posts each home worker its sessions of j (phase 0: install them, 1:
 * queue the kept copies) and waits for them: 0, or -1 (ADOPT_INSTALL_MS
 * passed, or stopping).  Adopter thread. */
int ad_run_items(cl_adopt_t *a, ad_job_t *j, int phase);
/* Asks the members for what they kept for N, waits for their answers
 * (ADOPT_COLLECT_MS at most), sorts it to j's sessions: the copies sorted.
 * Adopter thread. */
size_t ad_collect(cl_adopt_t *a, ad_job_t *j, const char *name);

#endif
