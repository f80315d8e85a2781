/* auth_wait.c -- the auth chain run from a thread that may wait
 * (auth_wait.h).
 *
 * One chain_wait_t per backend asked: the calling thread and the backend's
 * completion each hold a reference; the last one frees it, so an answer
 * that comes after the caller gave up (timeout_ms) lands in memory nobody
 * else reads and is cleared there.  The clock is CLOCK_MONOTONIC (a wall
 * clock step neither shortens nor stretches the wait).
 */
#include "auth_wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs, done;
    auth_answer_t ans;
} chain_wait_t;

static void wait_release(chain_wait_t *a)
{
    pthread_mutex_lock(&a->mu);
    int last = --a->refs == 0;
    pthread_mutex_unlock(&a->mu);
    if (!last)
        return;
    auth_answer_clear(&a->ans);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

static void wait_done(void *token, const auth_answer_t *ans)
{
    chain_wait_t *a = token;
    pthread_mutex_lock(&a->mu);
    a->ans = *ans; /* what it owns is ours now */
    a->done = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    wait_release(a);
}

static chain_wait_t *wait_new(void)
{
    chain_wait_t *a = an_calloc(1, sizeof(*a));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&a->mu, NULL);
    a->refs = 2;
    return a;
}

/* Backend b's answer to r, waited for until dl: its verdict, *out filled. */
static auth_verdict_t ask(auth_backend_t *b, const auth_request_t *r, const struct timespec *dl,
                          auth_answer_t *out)
{
    chain_wait_t *a = wait_new();
    auth_verdict_t v = b->check(b, r, out, wait_done, a);
    if (v == AUTH_PENDING) {
        pthread_mutex_lock(&a->mu);
        while (!a->done)
            if (pthread_cond_timedwait(&a->cv, &a->mu, dl) == ETIMEDOUT)
                break;
        if (a->done) {
            *out = a->ans;
            a->ans = (auth_answer_t){0};
            v = out->verdict;
        } else {
            v = AUTH_DENY; /* too late: the answer, if it comes, is dropped */
        }
        pthread_mutex_unlock(&a->mu);
    } else {
        a->refs--; /* done() will not be called */
    }
    wait_release(a);
    return v;
}

auth_verdict_t auth_wait_chain(auth_chain_t *ch, const auth_request_t *r, uint32_t timeout_ms,
                               auth_acl_t **acl)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(timeout_ms / 1000u);
    dl.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    *acl = NULL;
    for (uint32_t i = 0; i < auth_chain_size(ch); i++) {
        auth_backend_t *b = auth_chain_at(ch, i);
        if (b == NULL)
            continue;
        auth_answer_t out = {0};
        auth_verdict_t v = ask(b, r, &dl, &out);
        if (v == AUTH_ALLOW) {
            *acl = out.acl;
            out.acl = NULL;
        }
        auth_answer_clear(&out);
        if (v == AUTH_ALLOW || v == AUTH_DENY)
            return v;
    }
    return AUTH_PASS;
}
