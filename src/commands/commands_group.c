/* commands_group.c -- group commands (issue 18, docs/commands.md): one
 * command per device a selector picks, with the group's limits.
 *
 * What it owns: the groups (cmd_group_t, a list in cmd_state_st, freed with
 * their last command) and the routes under /api/v1/groups/commands.
 *
 * Selectors: a client id prefix over the sessions the workers hold (an
 * API_JOB_CLIENTS snapshot, api_snap.h), or tags over the device registry
 * (devices_each_tagged, devices.h: offline devices too; their commands
 * stay queued until they connect or expire).
 *
 * Limits.  A group's `concurrency` bounds its commands sent and not final
 * (cmd_group_t.active, counted by cmd_set_state_locked), its `rate` the
 * sends per second (a token bucket holding at most a tenth of a second's
 * sends, at least one).  The workers' ticks (commands.c: scan) send the
 * queued ones the limits let through, so the rest go out as others end.
 * A group's records are stored in one batch before its 202, and its
 * commands go out only after (cmd_group_t.ready).
 *
 * Threads: the API threads (POST, GET, DELETE) and the workers' scans,
 * all under st->mu.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_snap.h"
#include "commands_int.h"
#include "devices.h"
#include "log.h"

#define CMD_GROUP_MAX 100000u

cmd_group_t *cmd_group_get_locked(cmd_state_st *st, uint64_t seq, uint32_t concurrency,
                                  uint32_t rate)
{
    for (cmd_group_t *g = st->groups; g; g = g->next)
        if (g->seq == seq)
            return g;
    cmd_group_t *g = an_calloc(1, sizeof(*g));
    g->seq = seq;
    g->concurrency = concurrency;
    g->rate = rate;
    g->refill_ms = cmd_mono_ms();
    g->tokens = 1000;
    g->next = st->groups;
    st->groups = g;
    return g;
}

void cmd_group_unref_locked(cmd_state_st *st, cmd_group_t *g)
{
    if (--g->refs > 0)
        return;
    for (cmd_group_t **pp = &st->groups; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    free(g);
}

int cmd_group_may_send_locked(cmd_group_t *g, uint64_t now)
{
    if (!g->ready || g->active >= g->concurrency)
        return 0;
    if (g->rate == 0)
        return 1;
    uint64_t cap = (uint64_t)g->rate * 100u; /* a tenth of a second, x1000 */
    if (cap < 1000)
        cap = 1000;
    if (now > g->refill_ms) {
        g->tokens += (now - g->refill_ms) * g->rate;
        g->refill_ms = now;
    }
    if (g->tokens > cap)
        g->tokens = cap;
    if (g->tokens < 1000)
        return 0;
    g->tokens -= 1000;
    return 1;
}

/* ---- selectors ---- */

static void add_id(void *ud, const char *id)
{
    json_t *ids = ud;
    if (json_array_size(ids) < CMD_GROUP_MAX)
        json_array_append_new(ids, json_string(id));
}

/* The client ids the selector picks (a JSON array of strings), or NULL
 * with *out an error. */
static json_t *group_devices(module_inst_t *mi, json_t *sel, json_t **out, int *status)
{
    const char *prefix = json_string_value(json_object_get(sel, "client_id_prefix"));
    json_t *tags = json_object_get(sel, "tags");
    if (tags) {
        const char *k;
        json_t *v;
        int ok = json_is_object(tags) && prefix == NULL;
        json_object_foreach(tags, k, v) ok = ok && json_is_string(v);
        if (!ok) {
            *status = module_api_error(out, 400, "bad_request",
                                       "selector.tags: an object of strings (alone)");
            return NULL;
        }
        json_t *ids = json_array();
        if (devices_each_tagged(mi->srv, tags, add_id, ids) < 0) {
            json_decref(ids);
            *status = module_api_error(out, 409, "devices_disabled",
                                       "selector.tags needs the device registry (devices.enabled)");
            return NULL;
        }
        return ids;
    }
    if (prefix == NULL) {
        *status =
            module_api_error(out, 400, "bad_request",
                             "selector: {\"client_id_prefix\": \"...\"} or {\"tags\": {...}}");
        return NULL;
    }
    api_job_t *job = api_job_new(API_JOB_CLIENTS);
    job->client_id_prefix = strdup(prefix);
    int rc = api_job_submit(mi->srv, job, -1, 5000);
    json_t *ids = NULL;
    if (rc == 0) {
        ids = json_array();
        pthread_mutex_lock(&job->mu);
        size_t i;
        json_t *cl;
        json_array_foreach(job->data, i, cl)
        {
            const char *id = json_string_value(json_object_get(cl, "client_id"));
            if (id)
                add_id(ids, id);
        }
        pthread_mutex_unlock(&job->mu);
    } else {
        *status = module_api_error(out, 503, "unavailable", "the workers did not answer");
    }
    api_job_release(job);
    return ids;
}

/* A positive integer field, or def when absent: 0, or -1. */
static int get_limit(json_t *b, const char *key, uint32_t def, uint32_t min, uint32_t *out)
{
    json_t *v = json_object_get(b, key);
    *out = def;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > 1000000)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* ---- routes ---- */

static int group_post(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    const cmd_conf_t *cf = mi->conf;
    cmd_state_st *st = mi->state;
    json_t *b = req->body ? json_loadb(req->body, req->body_len, 0, NULL) : NULL, *ids = NULL;
    int status = 0;
    uint32_t conc, rate;
    store_batch_t *batch = NULL;
    if (!json_is_object(b) || !json_is_object(json_object_get(b, "selector"))) {
        status =
            module_api_error(out, 400, "bad_request", "the body is a JSON object with a selector");
        goto cleanup;
    }
    if (get_limit(b, "concurrency", cf->group_concurrency, 1, &conc) < 0 ||
        get_limit(b, "rate", cf->group_rate, 0, &rate) < 0) {
        status = module_api_error(out, 400, "bad_request",
                                  "concurrency 1..1000000, rate 0..1000000 (sends per second)");
        goto cleanup;
    }
    ids = group_devices(mi, json_object_get(b, "selector"), out, &status);
    if (ids == NULL)
        goto cleanup;
    batch = store_batch_new();
    pthread_mutex_lock(&st->mu);
    uint64_t gseq = ++st->next_group;
    cmd_group_t *g = cmd_group_get_locked(st, gseq, conc, rate);
    g->refs++; /* ours while we fill it */
    pthread_mutex_unlock(&st->mu);
    json_t *made = json_array();
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        json_t *one = NULL;
        int s = cmd_create(mi, json_string_value(id), b, g, batch, &one);
        if (s != 202) { /* a bad field (the same for all) or full */
            if (json_array_size(made) == 0) {
                *out = one;
                status = s;
                json_decref(made);
                pthread_mutex_lock(&st->mu);
                cmd_group_unref_locked(st, g);
                pthread_mutex_unlock(&st->mu);
                goto cleanup;
            }
            json_decref(one);
            break;
        }
        json_array_append_new(made, json_pack("{s:s, s:O}", "device", json_string_value(id), "id",
                                              json_object_get(one, "id")));
        json_decref(one);
    }
    /* one write for all (before the 202), then they may go out */
    if (mi->srv->store) {
        int rc = store_submit_sync(mi->srv->store, batch);
        batch = NULL;
        if (rc < 0)
            log_warn("commands: storing group g%" PRIx64 ": %s", gseq, store_strerror(rc));
    }
    pthread_mutex_lock(&st->mu);
    g->ready = 1;
    cmd_group_unref_locked(st, g);
    pthread_mutex_unlock(&st->mu);
    cmd_kick_all(mi);
    char gs[24];
    snprintf(gs, sizeof(gs), "g%" PRIx64, gseq);
    *out = json_pack("{s:s, s:I, s:I, s:I, s:I, s:o}", "group", gs, "selected",
                     (json_int_t)json_array_size(ids), "count", (json_int_t)json_array_size(made),
                     "concurrency", (json_int_t)conc, "rate", (json_int_t)rate, "commands", made);
    status = 202;
cleanup:
    if (batch)
        store_batch_free(batch);
    json_decref(ids);
    json_decref(b);
    return status;
}

static uint64_t group_seq(const char *gid)
{
    char *end;
    errno = 0;
    uint64_t g = gid[0] == 'g' ? strtoull(gid + 1, &end, 16) : 0;
    return g && !errno && *end == 0 && end != gid + 1 ? g : 0;
}

/* Counts of group g by status (st->mu held): its total. */
static uint64_t count_locked(cmd_state_st *st, uint64_t g, uint64_t n[CMD_STATES], uint64_t *fin)
{
    uint64_t total = 0;
    *fin = 0;
    memset(n, 0, CMD_STATES * sizeof(*n));
    for (size_t i = 0; i < st->n; i++)
        if (st->v[i]->group == g) {
            n[st->v[i]->state]++;
            total++;
            *fin += cmd_final(st->v[i]->state);
        }
    return total;
}

/* GET groups/commands/{group}[?wait=]: progress counts by status. */
static int group_get(module_inst_t *mi, const char *gid, const module_api_req_t *req, json_t **out)
{
    cmd_state_st *st = mi->state;
    uint64_t g = group_seq(gid);
    if (g == 0)
        return module_api_error(out, 404, "not_found", "no group %s", gid);
    uint32_t wait = 0;
    const char *ws = module_api_query(req, "wait");
    if (ws && cmd_parse_wait(ws, &wait) < 0)
        return module_api_error(out, 400, "bad_request", "wait: a duration (\"10s\", \"500ms\")");
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait / 1000u;
    dl.tv_nsec += (long)(wait % 1000u) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    uint64_t n[CMD_STATES], fin, total;
    uint32_t active = 0, conc = 0, rate = 0;
    pthread_mutex_lock(&st->mu);
    total = count_locked(st, g, n, &fin);
    if (total && wait && fin < total && st->waiters < CMD_WAITERS_MAX) {
        /* one long poll at a time, like a single command's */
        st->waiters++;
        while (total && fin < total && !st->stopping) {
            if (pthread_cond_timedwait(&st->cv, &st->mu, &dl) == ETIMEDOUT)
                break;
            total = count_locked(st, g, n, &fin);
        }
        st->waiters--;
    }
    for (cmd_group_t *gp = st->groups; gp; gp = gp->next)
        if (gp->seq == g) {
            active = gp->active;
            conc = gp->concurrency;
            rate = gp->rate;
        }
    pthread_mutex_unlock(&st->mu);
    if (total == 0)
        return module_api_error(out, 404, "not_found", "no group %s", gid);
    json_t *by = json_object();
    for (int s = 0; s < CMD_STATES; s++)
        json_object_set_new(by, cmd_state_names[s], json_integer((json_int_t)n[s]));
    *out = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "group", gid, "total",
                     (json_int_t)total, "finished", (json_int_t)fin, "count", (json_int_t)total,
                     "done", (json_int_t)fin, "active", (json_int_t)active, "concurrency",
                     (json_int_t)conc, "rate", (json_int_t)rate, "by_status", by);
    return 200;
}

/* DELETE groups/commands/{group}: its queued commands are cancelled (the
 * ones sent run to their end). */
static int group_delete(module_inst_t *mi, const char *gid, json_t **out)
{
    cmd_state_st *st = mi->state;
    uint64_t g = group_seq(gid), total = 0, cancelled = 0;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; g && i < st->n; i++) {
        cmd_t *c = st->v[i];
        if (c->group != g)
            continue;
        total++;
        if (c->state == CMD_QUEUED) {
            cmd_set_state_locked(st, c, CMD_CANCELLED, NULL);
            cancelled++;
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (total == 0)
        return module_api_error(out, 404, "not_found", "no group %s", gid);
    *out = json_pack("{s:s, s:I, s:I}", "group", gid, "total", (json_int_t)total, "cancelled",
                     (json_int_t)cancelled);
    return 200;
}

int cmd_api_groups(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    if (mi->state == NULL)
        return module_api_error(out, 409, "commands_disabled",
                                "commands are off (commands.enabled)");
    if (strcmp(req->method, "POST") == 0) {
        if (req->tail[0])
            return module_api_error(out, 404, "not_found", "no endpoint groups/commands/%s",
                                    req->tail);
        return group_post(mi, req, out);
    }
    const char *gid = req->tail[0] == '/' ? req->tail + 1 : req->tail;
    if (strcmp(req->method, "DELETE") == 0)
        return group_delete(mi, gid, out);
    return group_get(mi, gid, req, out);
}
