/* auth_acl.h -- access control rules: who may publish or subscribe where.
 *
 * A rule set is an ordered list of rules; the first rule that applies
 * decides (allow or deny); when none applies the caller's default does.
 * A rule has an access (publish, subscribe or both), a topic filter in
 * which %u stands for the user name and %c for the client id, and a scope:
 * every client, one user, or one client id.  The same structure carries the
 * ACL file (auth.acl_file) and the rules a backend returns for one client
 * (a JWT claim, an HTTP or Redis answer).
 *
 * Text form, one item per line ('#' starts a comment line):
 *     user NAME        the rules below apply to user NAME
 *     client ID        the rules below apply to client id ID
 *     any              the rules below apply to every client ("pattern" too)
 *     [allow|deny] ACCESS FILTER
 * ACCESS: pub|publish|write, sub|subscribe|read, all|both|readwrite.  A
 * rule without allow/deny allows.  Rules before any scope line apply to
 * every client.  '#' lines are comments whatever they hold.
 *
 * Mosquitto's acl_file syntax is read too, with Mosquitto's meaning:
 *     topic [read|write|readwrite|deny] FILTER   (omitted: readwrite)
 *     pattern [read|write|readwrite|deny] FILTER (every client; %u, %c)
 * A `topic` line before any user line applies to clients without a user
 * name (Mosquitto's anonymous section); a `deny` of either kind wins over
 * any allow, wherever it is written (such rules are moved to the front).
 *
 * Matching: a PUBLISH topic (or the topic of a message being delivered,
 * for reading) is matched against the expanded filter with the MQTT rules.
 * A SUBSCRIBE filter is judged by what it means for the topics it can
 * match, each of which the first rule matching it decides: walking the
 * rules in order, a rule whose filter covers the SUBSCRIBE filter ("a/+"
 * covers "a/b", not the reverse) decides for every topic left, a rule that
 * only overlaps it decides for some.  The answer is ALLOW (every topic
 * allowed), DENY (none), or PARTIAL (some topics allowed, some denied or
 * left to the next rule set): such a subscription is granted and each
 * message's topic is checked when it is delivered (auth_chain.h).  A %u
 * rule does not apply to a client without user name; a user name or client
 * id that contains '+', '#' or '/' never takes part in a substitution.
 *
 * Immutable once built: any thread may read it.
 */
#ifndef ANTENNA_AUTH_ACL_H
#define ANTENNA_AUTH_ACL_H

#include <stddef.h>
#include <stdint.h>

typedef struct auth_acl auth_acl_t;

enum {
    AUTH_ACL_ANY = 0,
    AUTH_ACL_USER,
    AUTH_ACL_CLIENT,
    AUTH_ACL_ANONYMOUS /* clients without a user name */
};

/* Load a file: NULL with err "PATH:LINE: problem". */
auth_acl_t *auth_acl_load(const char *path, char *err, size_t errlen);
/* Parse text (same syntax); `who` names the source in errors. */
auth_acl_t *auth_acl_from_lines(const char *text, const char *who, char *err, size_t errlen);
/* An empty set, and appending one rule (access: AUTH_ACT_PUBLISH and/or
 * AUTH_ACT_SUBSCRIBE); add returns -1 on an invalid filter. */
auth_acl_t *auth_acl_new(void);
int auth_acl_add(auth_acl_t *a, int allow, uint8_t access, uint8_t scope, const char *who,
                 const char *filter);
size_t auth_acl_count(const auth_acl_t *a);
void auth_acl_free(auth_acl_t *a);

/* Verdicts on a SUBSCRIBE filter (AUTH_ACL_DENY and AUTH_ACL_ALLOW are
 * also the 0 and 1 of a topic's check). */
enum { AUTH_ACL_DENY = 0, AUTH_ACL_ALLOW = 1, AUTH_ACL_PARTIAL = 2 };
/* What rules that only overlap a SUBSCRIBE filter said (bits). */
enum { AUTH_ACL_SEEN_ALLOW = 1, AUTH_ACL_SEEN_DENY = 2 };

/* 1 allowed, 0 denied, -1 no rule applies.  action: AUTH_ACT_PUBLISH, or
 * AUTH_ACT_SUBSCRIBE; is_filter: topic is a SUBSCRIBE filter (else a topic
 * name being read or written): then AUTH_ACL_PARTIAL too, and -1 when no
 * rule covers it (rules that overlap it are forgotten: the chain uses
 * auth_acl_check_filter). */
int auth_acl_check(const auth_acl_t *a, const char *user, const char *client_id, uint8_t action,
                   const char *topic, size_t len, int is_filter);
/* A SUBSCRIBE filter: the verdict of the first rule that covers it (1
 * allow, 0 deny) or -1 when none does; *seen collects AUTH_ACL_SEEN_* of
 * the rules before it that only overlap it (the caller combines them with
 * the verdict, auth_acl_combine, possibly after other rule sets). */
int auth_acl_check_filter(const auth_acl_t *a, const char *user, const char *client_id,
                          uint8_t action, const char *filter, size_t len, unsigned *seen);
/* The verdict on a filter from a whole decision (1/0) reached after rules
 * that overlapped it said `seen`. */
int auth_acl_combine(int decision, unsigned seen);

/* Filter relations (exposed for tests): 1 when every topic matched by f is
 * matched by rule; 1 when some topic is matched by both. */
int auth_filter_covers(const char *rule, size_t rlen, const char *f, size_t flen);
int auth_filter_intersects(const char *rule, size_t rlen, const char *f, size_t flen);

#endif
