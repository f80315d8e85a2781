/* auth_async.c -- jobs (self-contained request copies) and the rate-limited
 * failure log shared by the asynchronous auth backends; see auth_async.h.
 *
 * A job is one allocation: the struct followed by its strings, so freeing
 * it is one free() and copying it costs one malloc per request.
 */
#include "auth_async.h"

#include "../core/log.h"
#include "../core/util.h"

#include <string.h>

static size_t opt_len(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Copy n bytes of src to *at, NUL terminate, advance; NULL src gives NULL. */
static char *put(char **at, const void *src, size_t n, int present)
{
    if (!present)
        return NULL;
    char *d = *at;
    if (n)
        memcpy(d, src, n);
    d[n] = '\0';
    *at += n + 1;
    return d;
}

auth_job_t *auth_job_new(const auth_request_t *r, auth_done_fn done, void *token,
                         uint64_t deadline_ms)
{
    const char *cid = r->client_id ? r->client_id : "";
    const char *peer = r->peer ? r->peer : "";
    size_t pwlen = r->password ? r->password_len + 1 : 0;
    size_t total = sizeof(auth_job_t) + strlen(cid) + 1 + opt_len(r->username) + pwlen +
                   opt_len(r->cert_user) + strlen(peer) + 1 + opt_len(r->topic);
    auth_job_t *j = an_malloc(total);
    char *at = (char *)(j + 1);

    memset(j, 0, sizeof(*j));
    j->done = done;
    j->token = token;
    j->deadline_ms = deadline_ms;
    j->action = r->action;
    j->qos = r->qos;
    j->retain = r->retain;
    j->listener = r->listener;
    j->client_id = put(&at, cid, strlen(cid), 1);
    j->username = put(&at, r->username, r->username ? strlen(r->username) : 0, r->username != NULL);
    j->password =
        (uint8_t *)put(&at, r->password, r->password ? r->password_len : 0, r->password != NULL);
    j->password_len = r->password ? r->password_len : 0;
    j->cert_user =
        put(&at, r->cert_user, r->cert_user ? strlen(r->cert_user) : 0, r->cert_user != NULL);
    j->peer = put(&at, peer, strlen(peer), 1);
    j->topic = put(&at, r->topic, r->topic ? strlen(r->topic) : 0, r->topic != NULL);
    return j;
}

void auth_job_free(auth_job_t *j)
{
    free(j);
}

const char *auth_action_name(uint8_t action)
{
    switch (action) {
    case AUTH_ACT_CONNECT:
        return "connect";
    case AUTH_ACT_PUBLISH:
        return "publish";
    case AUTH_ACT_SUBSCRIBE:
        return "subscribe";
    default:
        return "unknown";
    }
}

int auth_ratelog_ok(auth_ratelog_t *r, const char *who)
{
    uint64_t now = an_now_ms();
    if (now - r->second_ms >= 1000) {
        if (r->held)
            log_warn("%s: %llu more failures in the last second not logged (see the "
                     "counters)",
                     who, (unsigned long long)r->held);
        r->second_ms = now;
        r->logged = 0;
        r->held = 0;
    }
    if (r->logged < AUTH_LOG_BURST) {
        r->logged++;
        return 1;
    }
    r->held++;
    return 0;
}
