/* rules_action.c -- the action table and the first action: republish
 * (rules_action.h).
 *
 * republish renders its topic and payload templates from the output row
 * into a per-call stack buffer (the topic) and a heap buffer only as large
 * as the payload, builds one message, flags it MSG_F_RULES (no rule sees
 * it: no loop) and hands it to rules_republish_post, which routes it on the
 * same worker at its next turn (a consumer callback may not publish).
 */
#include "rules_action.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "mqtt_codec.h"
#include "sinks/sinks.h"
#include "util.h"

#define TOPIC_MAX 1024

typedef struct {
    char *topic;   /* template */
    char *payload; /* template, or NULL: the row as JSON */
    uint8_t qos, retain;
} republish_t;

int rules_template_check(const char *tpl, char *err, size_t errlen)
{
    for (const char *p = strstr(tpl, "${"); p; p = strstr(p + 2, "${"))
        if (strchr(p, '}') == NULL) {
            snprintf(err, errlen, "unclosed \"${\" at byte %zu", (size_t)(p - tpl) + 1);
            return -1;
        }
    return 0;
}

long rules_template_render(const char *tpl, json_t *row, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tpl; *p;) {
        const char *ph = strstr(p, "${");
        size_t lit = ph ? (size_t)(ph - p) : strlen(p);
        if (o + lit > cap)
            return -1;
        memcpy(out + o, p, lit);
        o += lit;
        if (ph == NULL)
            break;
        const char *end = strchr(ph + 2, '}');
        if (end == NULL)
            return -1;
        char name[128];
        size_t nl = AN_MIN((size_t)(end - ph - 2), sizeof(name) - 1);
        memcpy(name, ph + 2, nl);
        name[nl] = '\0';
        json_t *v = json_object_get(row, name);
        if (json_is_string(v)) {
            size_t n = json_string_length(v);
            if (o + n > cap)
                return -1;
            memcpy(out + o, json_string_value(v), n);
            o += n;
        } else if (v && !json_is_null(v)) {
            char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t n = d ? strlen(d) : 0;
            if (o + n > cap) {
                free(d);
                return -1;
            }
            memcpy(out + o, d, n);
            o += n;
            free(d);
        }
        p = end + 1;
    }
    return (long)o;
}

static int rp_init(rules_action_t *a, json_t *def, char *err, size_t errlen)
{
    json_t *topic = json_object_get(def, "topic"), *payload = json_object_get(def, "payload"),
           *qos = json_object_get(def, "qos"), *retain = json_object_get(def, "retain");
    const char *k;
    json_t *v;
    json_object_foreach(def, k, v)
    {
        if (strcmp(k, "type") && strcmp(k, "topic") && strcmp(k, "payload") && strcmp(k, "qos") &&
            strcmp(k, "retain")) {
            snprintf(err, errlen, "republish: unknown key \"%.40s\" (topic, payload, qos, retain)",
                     k);
            return -1;
        }
    }
    if (!json_is_string(topic) || json_string_length(topic) == 0 ||
        json_string_length(topic) >= TOPIC_MAX) {
        snprintf(err, errlen, "republish: topic: a non-empty template is required");
        return -1;
    }
    if ((payload && !json_is_string(payload)) ||
        (qos &&
         (!json_is_integer(qos) || json_integer_value(qos) < 0 || json_integer_value(qos) > 2)) ||
        (retain && !json_is_boolean(retain))) {
        snprintf(err, errlen,
                 "republish: payload is a string template, qos 0..2, retain true or false");
        return -1;
    }
    char e[120];
    if (rules_template_check(json_string_value(topic), e, sizeof(e)) < 0 ||
        (payload && rules_template_check(json_string_value(payload), e, sizeof(e)) < 0)) {
        snprintf(err, errlen, "republish: %s", e);
        return -1;
    }
    const char *t = json_string_value(topic);
    if (strchr(t, '+') || strchr(t, '#')) {
        snprintf(err, errlen, "republish: topic: \"%.60s\" has a wildcard", t);
        return -1;
    }
    republish_t *r = an_calloc(1, sizeof(*r));
    r->topic = an_strndup(t, strlen(t));
    r->payload =
        payload ? an_strndup(json_string_value(payload), json_string_length(payload)) : NULL;
    r->qos = qos ? (uint8_t)json_integer_value(qos) : 0;
    r->retain = retain ? (uint8_t)json_is_true(retain) : 0;
    a->impl = r;
    return 0;
}

static int rp_emit(rules_action_t *a, struct worker_s *w, json_t *row, const struct msg_s *m)
{
    (void)m;
    republish_t *r = a->impl;
    char topic[TOPIC_MAX];
    long tl = rules_template_render(r->topic, row, topic, sizeof(topic));
    if (tl <= 0 || tl > UINT16_MAX || memchr(topic, '+', (size_t)tl) ||
        memchr(topic, '#', (size_t)tl) || memchr(topic, '\0', (size_t)tl))
        return RULES_EMIT_FAILED; /* empty, too long, or a wildcard from the row */
    char *body = NULL;
    long bl;
    if (r->payload) {
        size_t cap = 4096;
        for (;;) {
            body = an_realloc(body, cap);
            bl = rules_template_render(r->payload, row, body, cap);
            if (bl >= 0 || cap >= (64u << 20))
                break;
            cap *= 4;
        }
    } else {
        body = json_dumps(row, JSON_COMPACT);
        bl = body ? (long)strlen(body) : -1;
    }
    if (bl < 0) {
        free(body);
        return RULES_EMIT_FAILED;
    }
    msg_t *out = msg_new((const uint8_t *)topic, (uint16_t)tl, (const uint8_t *)body, (uint32_t)bl,
                         r->qos, r->retain);
    free(body);
    out->published_at = an_wall_ms();
    out->flags |= MSG_F_RULES;
    return rules_republish_post(w, a->module_index, out);
}

static void rp_free(rules_action_t *a)
{
    republish_t *r = a->impl;
    if (r == NULL)
        return;
    free(r->topic);
    free(r->payload);
    free(r);
}

static const rules_action_ops_t republish_ops = {
    .type = "republish", .init = rp_init, .emit = rp_emit, .free = rp_free};

/* sink: the sink framework's action (src/sinks/sinks.h) */
static int sk_init(rules_action_t *a, json_t *def, char *err, size_t errlen)
{
    a->impl = sink_action_new(a->srv, def, err, errlen);
    return a->impl ? 0 : -1;
}

static int sk_emit(rules_action_t *a, struct worker_s *w, json_t *row, const struct msg_s *m)
{
    return sink_action_emit(a->impl, w, row, m);
}

static void sk_free(rules_action_t *a)
{
    sink_action_free(a->impl);
}

static void sk_describe(const rules_action_t *a, json_t *obj)
{
    sink_action_describe(a->impl, obj);
}

static const rules_action_ops_t sink_ops = {
    .type = "sink", .init = sk_init, .emit = sk_emit, .free = sk_free, .describe = sk_describe};

static const rules_action_ops_t *const action_types[] = {&republish_ops, &sink_ops, NULL};

rules_action_t *rules_action_new(struct server_s *srv, uint32_t module_index, json_t *def,
                                 char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(def, "type"));
    if (!json_is_object(def) || type == NULL) {
        snprintf(err, errlen, "an action is an object with a \"type\" (republish, sink)");
        return NULL;
    }
    for (const rules_action_ops_t *const *t = action_types; *t; t++)
        if (strcmp((*t)->type, type) == 0) {
            rules_action_t *a = an_calloc(1, sizeof(*a));
            a->ops = *t;
            a->srv = srv;
            a->module_index = module_index;
            if (a->ops->init(a, def, err, errlen) < 0) {
                free(a);
                return NULL;
            }
            return a;
        }
    snprintf(err, errlen, "unknown action type \"%.40s\" (republish, sink)", type);
    return NULL;
}

void rules_action_free(rules_action_t *a)
{
    if (a == NULL)
        return;
    a->ops->free(a);
    free(a);
}
