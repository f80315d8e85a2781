/* rules_api.c -- the rules' management API (docs/rules.md, "Management"):
 *
 *   GET    /api/v1/rules                 every rule with its counters: {"data", "total"}
 *   POST   /api/v1/rules                 create ({"id", "sql", "enabled", "actions"})
 *   GET    /api/v1/rules/{id}            one
 *   PUT    /api/v1/rules/{id}            replace (counters restart)
 *   DELETE /api/v1/rules/{id}
 *   POST   /api/v1/rules/{id}/enable|disable
 *   POST   /api/v1/rules/test            {"sql", "message": {...}} -> rows or the error
 *
 * Runs on the API's threads.  Changes take st->mu, write the store first
 * (so an answer 2xx means the change survives a restart, with persistence
 * on) and publish a new rule set to the workers (rules_commit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

static int off(json_t **out)
{
    return module_api_error(out, 409, "rules_disabled", "the rule engine is off (rules.enabled)");
}

static json_t *body_json(const module_api_req_t *req, json_t **out, int *status)
{
    json_error_t je;
    json_t *j = req->body ? json_loadb(req->body, req->body_len, 0, &je) : NULL;
    if (j == NULL)
        *status = module_api_error(out, 400, "bad_request", "the body is not JSON%s%s",
                                   req->body ? ": " : "", req->body ? je.text : "");
    return j;
}

static int bad_rule(json_t **out, const char *err, uint32_t column)
{
    *out = json_pack("{s:s,s:s}", "error", err, "code", "bad_rule");
    if (column)
        json_object_set_new(*out, "column", json_integer(column));
    return 400;
}

static int api_list(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    rules_state_t *st = mi->state;
    if (st == NULL)
        return off(out);
    if (strcmp(req->method, "GET") == 0) {
        json_t *a = json_array();
        pthread_mutex_lock(&st->mu);
        for (uint32_t i = 0; i < st->nall; i++)
            json_array_append_new(a, rules_rule_json(st->all[i]));
        pthread_mutex_unlock(&st->mu);
        *out = json_pack("{s:o,s:i}", "data", a, "total", (int)json_array_size(a));
        return 200;
    }
    int status = 0;
    json_t *def = body_json(req, out, &status);
    if (def == NULL)
        return status;
    char err[300];
    uint32_t col;
    pthread_mutex_lock(&st->mu);
    rules_rule_t *r = rules_rule_build(st, def, err, sizeof(err), &col);
    json_decref(def);
    if (r == NULL) {
        pthread_mutex_unlock(&st->mu);
        return bad_rule(out, err, col);
    }
    if (rules_find(st, r->id) >= 0) {
        pthread_mutex_unlock(&st->mu);
        status = module_api_error(out, 409, "exists", "rule %s exists (PUT changes it)", r->id);
        rules_rule_unref(r);
        return status;
    }
    rules_store_put(st, r->id, r->def);
    st->all = an_realloc(st->all, (st->nall + 1) * sizeof(st->all[0]));
    st->all[st->nall++] = r;
    rules_commit(st, err, sizeof(err));
    *out = rules_rule_json(r);
    pthread_mutex_unlock(&st->mu);
    return 201;
}

static int api_rule(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    rules_state_t *st = mi->state;
    if (st == NULL)
        return off(out);
    char id[RULES_ID_MAX + 16];
    snprintf(id, sizeof(id), "%s", req->tail);
    char *verb = strchr(id, '/');
    if (verb)
        *verb++ = '\0';
    if (verb && (strcmp(req->method, "POST") != 0 ||
                 (strcmp(verb, "enable") != 0 && strcmp(verb, "disable") != 0)))
        return module_api_error(out, 404, "not_found", "no endpoint rules/%s", req->tail);
    if (!verb && strcmp(req->method, "POST") == 0)
        return module_api_error(out, 405, "method_not_allowed",
                                "POST rules/{id}/enable or /disable; PUT changes a rule");
    int status = 200;
    char err[300];
    pthread_mutex_lock(&st->mu);
    int i = rules_find(st, id);
    if (i < 0) {
        pthread_mutex_unlock(&st->mu);
        return module_api_error(out, 404, "not_found", "no rule %s", id);
    }
    rules_rule_t *r = st->all[i];
    if (strcmp(req->method, "GET") == 0) {
        *out = rules_rule_json(r);
    } else if (strcmp(req->method, "DELETE") == 0) {
        rules_store_put(st, id, NULL);
        memmove(&st->all[i], &st->all[i + 1], (st->nall - (uint32_t)i - 1) * sizeof(st->all[0]));
        st->nall--;
        rules_commit(st, err, sizeof(err));
        rules_rule_unref(r);
        status = 204;
    } else {
        /* PUT: a new definition; enable/disable: the same with "enabled" */
        json_t *def;
        if (verb) {
            def = json_deep_copy(r->def);
            json_object_set_new(def, "enabled", json_boolean(strcmp(verb, "enable") == 0));
        } else if ((def = body_json(req, out, &status)) == NULL) {
            pthread_mutex_unlock(&st->mu);
            return status;
        } else if (json_is_object(def) && json_object_get(def, "id") == NULL) {
            json_object_set_new(def, "id", json_string(id));
        }
        uint32_t col;
        rules_rule_t *nr = rules_rule_build(st, def, err, sizeof(err), &col);
        json_decref(def);
        if (nr == NULL) {
            pthread_mutex_unlock(&st->mu);
            return bad_rule(out, err, col);
        }
        if (strcmp(nr->id, id) != 0) {
            pthread_mutex_unlock(&st->mu);
            rules_rule_unref(nr);
            return module_api_error(out, 400, "bad_rule", "the id of a rule does not change");
        }
        if (verb) { /* keep the counters: the same rule, switched */
            rules_rule_t *tmp = nr;
            nr = r;
            atomic_fetch_add(&nr->refs, 1);
            rules_rule_unref(tmp);
            nr->enabled = strcmp(verb, "enable") == 0;
            json_object_set_new(nr->def, "enabled", json_boolean(nr->enabled));
        }
        rules_store_put(st, id, nr->def);
        st->all[i] = nr;
        rules_rule_unref(r);
        rules_commit(st, err, sizeof(err));
        *out = rules_rule_json(nr);
    }
    pthread_mutex_unlock(&st->mu);
    return status;
}

static const char *opt_str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static int api_test(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    (void)mi;
    int status = 0;
    json_t *body = body_json(req, out, &status);
    if (body == NULL)
        return status;
    const char *sql = opt_str(body, "sql");
    json_t *msg = json_object_get(body, "message");
    if (sql == NULL) {
        json_decref(body);
        return module_api_error(out, 400, "bad_request", "\"sql\" is required");
    }
    rules_err_t pe;
    rules_plan_t *p = rules_parse(sql, &pe);
    if (p == NULL) {
        json_decref(body);
        *out = json_pack("{s:s,s:s,s:i,s:s}", "error", pe.msg, "code", "bad_rule", "column",
                         (int)pe.column, "token", pe.token);
        return 400;
    }
    rules_input_t in;
    memset(&in, 0, sizeof(in));
    in.clientid = opt_str(msg, "clientid");
    in.username = opt_str(msg, "username");
    in.peer = opt_str(msg, "peer");
    in.protocol = opt_str(msg, "protocol");
    in.event = opt_str(msg, "event") ? opt_str(msg, "event") : "message.publish";
    in.reason = opt_str(msg, "reason");
    in.topic = opt_str(msg, "topic");
    in.topic_len = in.topic ? (uint32_t)strlen(in.topic) : 0;
    in.payload = opt_str(msg, "payload");
    in.payload_len = in.payload ? (uint32_t)json_string_length(json_object_get(msg, "payload")) : 0;
    in.qos = json_integer_value(json_object_get(msg, "qos"));
    in.retain = json_is_true(json_object_get(msg, "retain"));
    in.timestamp = json_is_integer(json_object_get(msg, "timestamp"))
                       ? json_integer_value(json_object_get(msg, "timestamp"))
                       : (int64_t)an_wall_ms();
    in.user_props = json_object_get(msg, "user_properties");
    /* FROM: does the sample's topic match a filter (or name an event)? */
    int matched = 0;
    for (uint32_t f = 0; f < p->nfilters && in.topic; f++)
        matched |= topic_matches((const uint8_t *)p->filters[f], strlen(p->filters[f]),
                                 (const uint8_t *)in.topic, in.topic_len);
    for (int e = 0; e < RULES_EV_COUNT; e++)
        matched |= ((p->events >> e) & 1u) && strcmp(in.event, rules_event_names[e]) == 0;
    rules_scratch_t sc;
    rules_scratch_init(&sc, 256u * 1024u);
    int pass = rules_eval_where(p, &in, &sc);
    json_t *rows = json_array();
    if (pass == 1) {
        json_t *row = rules_eval_row(p, &in, &sc);
        if (row)
            json_array_append_new(rows, row);
        else
            pass = -1;
    }
    if (pass < 0)
        *out = json_pack("{s:b,s:b,s:o,s:s}", "matched", matched, "passed", 0, "rows", rows,
                         "error", sc.err);
    else
        *out = json_pack("{s:b,s:b,s:o}", "matched", matched, "passed", pass == 1, "rows", rows);
    rules_scratch_free(&sc);
    rules_input_done(&in);
    rules_plan_free(p);
    json_decref(body);
    return 200;
}

const module_api_route_t rules_api_routes[] = {
    {"rules", 0, MODULE_API_GET | MODULE_API_POST, api_list},
    {"rules/test", 0, MODULE_API_POST, api_test},
    {"rules/", 1, MODULE_API_GET | MODULE_API_PUT | MODULE_API_DELETE | MODULE_API_POST, api_rule},
    {NULL, 0, 0, NULL},
};
