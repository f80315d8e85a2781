/* commands_int.h -- what commands.c (single commands, the table, sending,
 * replies) and commands_group.c (group commands: selectors, concurrency and
 * rate limits, progress, cancel) and commands_acl.c share.
 *
 * Everything here is under cmd_state_st.mu (the table, the groups), except
 * the configuration (read-only after load).
 */
#ifndef ANTENNA_COMMANDS_INT_H
#define ANTENNA_COMMANDS_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"
#include "router.h"
#include "server.h"
#include "store.h"

#define CMD_TICK_MS 100u
#define CMD_WAIT_MAX_MS                                                                            \
    5000u                 /* GET ?wait= bound: the request holds an API thread, and
                           * api_stop (before module stop) waits for it */
#define CMD_WAITERS_MAX 1 /* long polls at once: the API has two threads (api_http.c) */
#define CMD_ADMINS_MAX 16u

typedef struct {
    uint8_t enabled;
    char prefix[64];            /* topics: PREFIX/{device}/{name}, PREFIX/{device}/reply */
    uint32_t max_commands;      /* kept in memory, final ones evicted first */
    uint32_t reply_timeout;     /* ms, default of a command's reply_timeout */
    uint32_t expiry;            /* ms, default of a command's expiry */
    uint32_t retry_interval;    /* ms */
    uint32_t retries;           /* default */
    uint32_t group_concurrency; /* default of a group's concurrency */
    uint32_t group_rate;        /* default of a group's rate (sends/s), 0: unlimited */
    uint8_t acl;                /* the $cmd ACL (commands_acl.c) */
    uint32_t nadmins;           /* acl_admins: users the $cmd ACL lets through */
    char admins[CMD_ADMINS_MAX][64];
} cmd_conf_t;

typedef enum {
    CMD_QUEUED = 0,
    CMD_SENT,
    CMD_DELIVERED,
    CMD_ACKED,
    CMD_SUCCEEDED, /* replied: succeeded */
    CMD_FAILED,    /* replied: failed */
    CMD_TIMED_OUT,
    CMD_EXPIRED,
    CMD_CANCELLED,
    CMD_STATES
} cmd_state_t;

extern const char *const cmd_state_names[CMD_STATES];

#define cmd_final(s) ((s) >= CMD_SUCCEEDED)
/* sent and not final: what a group's concurrency counts */
#define cmd_active(s) ((s) != CMD_QUEUED && !cmd_final(s))

/* A group command's limits and counters (commands_group.c). */
typedef struct cmd_group_s {
    struct cmd_group_s *next;
    uint64_t seq;
    uint32_t concurrency; /* at most this many active at once */
    uint32_t rate;        /* sends per second, 0: unlimited */
    uint32_t active;      /* its commands sent and not final, now */
    uint32_t refs;        /* its commands in the table */
    uint8_t ready;        /* stored: its commands may go out */
    uint64_t tokens;      /* rate: sends allowed now, x1000 */
    uint64_t refill_ms;   /* rate: monotonic time of the last refill */
} cmd_group_t;

typedef struct cmd_s {
    uint64_t seq;     /* the number in the id */
    uint64_t group;   /* the group command's number, 0: none */
    cmd_group_t *grp; /* its group, or NULL */
    char id[24];      /* "c" + seq in hex */
    char *device;     /* client id */
    char *name;       /* command name (a topic level) */
    char *params;     /* JSON text */
    json_t *result;   /* the reply's result, or NULL */
    uint32_t home;    /* the device's home worker */
    uint8_t qos;
    uint8_t state;
    uint32_t retries, attempts;
    uint32_t reply_timeout, expiry, retry_interval; /* ms */
    uint64_t created_ms, sent_ms, first_sent_ms;    /* monotonic */
    uint64_t created_wall, updated_wall;            /* ms since the epoch */
} cmd_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cmd_t **v; /* in seq order (cmd_insert_locked keeps it) */
    size_t n;
    uint64_t next_seq;
    uint64_t next_group;
    cmd_group_t *groups;
    uint32_t waiters;              /* GET ?wait= requests waiting now */
    uint8_t stopping;              /* stop: the long polls answer now */
    uint64_t by_state[CMD_STATES]; /* transitions into each state, ever */
    router_consumer_t *consumer;
    server_t *srv;
    module_inst_t *mi;
} cmd_state_st;

uint64_t cmd_mono_ms(void);
/* "10s" / "500ms" -> ms, at most CMD_WAIT_MAX_MS: 0, or -1. */
int cmd_parse_wait(const char *s, uint32_t *ms);
/* A new status (counted, stored, signalled, emitted; w NULL: an API
 * thread); st->mu held. */
void cmd_set_state_locked(cmd_state_st *st, cmd_t *c, cmd_state_t s, worker_t *w);
/* A new command to device from body b (borrowed) in group grp (NULL:
 * none): 202 with *out {"id", "status"}, or an error status with *out.
 * With batch (a group): its record goes into batch, and nothing is posted
 * to the workers (the caller does both). */
int cmd_create(module_inst_t *mi, const char *device, json_t *b, cmd_group_t *grp,
               store_batch_t *batch, json_t **out);
/* Post a scan of every command (sid 0) to each worker. */
void cmd_kick_all(module_inst_t *mi);
/* The command as JSON for a store record */
json_t *cmd_record(const cmd_t *c);

/* commands_group.c (st->mu held for the _locked ones) */
cmd_group_t *cmd_group_get_locked(cmd_state_st *st, uint64_t seq, uint32_t concurrency,
                                  uint32_t rate);
void cmd_group_unref_locked(cmd_state_st *st, cmd_group_t *g);
/* c's group lets it go out now (and counts the send against the rate). */
int cmd_group_may_send_locked(cmd_group_t *g, uint64_t now);
int cmd_api_groups(module_inst_t *mi, const module_api_req_t *req, json_t **out);

/* commands_acl.c: the $cmd ACL for cf (freed with free()). */
/* The $cmd ACL (commands_acl.c): does it refuse client `id` (user `user`,
 * may be NULL) a SUBSCRIBE to filter t (subscribe: 1, without a $share/
 * part) or a PUBLISH to topic t?  A client reads only its own
 * PREFIX/{id}/..., and writes only its own PREFIX/{id}/reply[/...];
 * commands.acl_admins users pass.  cmd_acl_register: as a topic guard
 * (router.h); 0, or -1 when another module guards the prefix. */
int cmd_acl_refuses(const cmd_conf_t *cf, const char *id, size_t idlen, const char *user,
                    const uint8_t *t, size_t tl, int subscribe);
int cmd_acl_register(server_t *srv, const cmd_conf_t *cf);

#endif
