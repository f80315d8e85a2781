/* conf_sec.c -- modules' configuration sections: registry and readers.
 *
 * A module registers its section at start-up (conf_section_add): a name,
 * a load function, a walk function and the size of its values, which live
 * in the conf_t's own section_data block (so a copy of the conf_t, as
 * conf_load and a reload make, copies the modules' values too).  When
 * conf_load (conf.c) meets a top-level key that is not one of its own, it
 * calls cf_load_section: the mapping is checked (scalar keys, at most
 * SEC_MAX_KEYS, no duplicates), the module's load function reads its keys
 * through the conf_sec_* readers, and any key it did not read is refused
 * as unknown, with the nearest key it asked for as a suggestion.
 *
 * Each reader builds a one-entry field table (conf_int.h: struct field)
 * and calls cf_load_field, the loader every built-in key goes through: the
 * types, ranges, units and error text ("file:line: section.key: ...") are
 * the same for a module's key as for any other.  Nested lists and
 * mappings (conf_sec_each, conf_sec_map, conf_sec_pairs) are sections of
 * their own with a longer key path.  The only state is the conf_sec_t on
 * the loader's stack.
 */
#include "conf.h"
#include "conf_int.h"

#include "util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void *conf_section_add(conf_t *c, const char *name, int (*load)(conf_sec_t *s, void *values),
                       void (*walk)(const void *values, conf_visit_fn fn, void *ud), size_t size)
{
    size_t off = (c->section_used + 15u) & ~(size_t)15u;
    if (c->nsections >= CONF_MAX_SECTIONS || off + size > CONF_SECTION_BYTES || load == NULL ||
        conf_section_values(c, name) != NULL)
        return NULL;
    if (cf_is_root_key(name))
        return NULL;
    c->sections[c->nsections++] = (conf_section_t){
        .name = name, .load = load, .walk = walk, .off = (uint32_t)off, .size = (uint32_t)size};
    c->section_used = (uint32_t)(off + size);
    memset(c->section_data + off, 0, size);
    return c->section_data + off;
}

const void *conf_section_values(const conf_t *c, const char *name)
{
    for (uint32_t i = 0; i < c->nsections; i++)
        if (strcmp(c->sections[i].name, name) == 0)
            return c->section_data + c->sections[i].off;
    return NULL;
}

/* Root key k names a section of ld->c: check its mapping, let the module
 * load it, refuse the keys it did not read.  1 when k is no section, else
 * 0 or -1. */
int cf_load_section(struct loader *ld, const yaml_node_t *k, const yaml_node_t *v, const char *path)
{
    conf_t *c = ld->c;
    uint32_t i = 0;
    while (i < c->nsections && strcmp(c->sections[i].name, cf_sval(k)) != 0)
        i++;
    if (i == c->nsections)
        return 1;
    if (ld->sections_seen & (1u << i))
        return cf_fail(ld, k, path, "duplicate key");
    ld->sections_seen |= 1u << i;
    struct conf_sec_s s = {.ld = ld, .at = k, .map = NULL, .path = path};
    if (!cf_is_null(v)) {
        if (v->type != YAML_MAPPING_NODE)
            return cf_fail(ld, k, path, "expected a mapping, got %s", cf_node_kind(v));
        s.map = v;
        size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
        for (size_t a = 0; a < n; a++) {
            yaml_node_t *ka = yaml_document_get_node(ld->doc, v->data.mapping.pairs.start[a].key);
            char kpath[KEYPATH_LEN];
            if (ka == NULL ||
                yaml_document_get_node(ld->doc, v->data.mapping.pairs.start[a].value) == NULL)
                return cf_fail(ld, v, path, "internal error: missing node");
            if (ka->type != YAML_SCALAR_NODE)
                return cf_fail(ld, ka, path, "a key must be a scalar, got %s", cf_node_kind(ka));
            cf_key_join(kpath, path, ".");
            cf_key_join(kpath, kpath, cf_sval(ka));
            if (a >= SEC_MAX_KEYS)
                return cf_fail(ld, ka, kpath, "unknown key");
            for (size_t b = 0; b < a; b++) {
                yaml_node_t *kb =
                    yaml_document_get_node(ld->doc, v->data.mapping.pairs.start[b].key);
                if (strcmp(cf_sval(kb), cf_sval(ka)) == 0)
                    return cf_fail(ld, ka, kpath, "duplicate key");
            }
        }
    }
    if (c->sections[i].load(&s, c->section_data + c->sections[i].off) < 0)
        return -1;
    for (size_t a = 0;
         s.map && a < (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start); a++)
        if (!(s.used & (1u << a))) {
            yaml_node_t *ka = yaml_document_get_node(ld->doc, v->data.mapping.pairs.start[a].key);
            char kpath[KEYPATH_LEN];
            cf_key_join(kpath, path, ".");
            cf_key_join(kpath, kpath, cf_sval(ka));
            an_near_t nr = AN_NEAR(cf_sval(ka));
            for (uint32_t q = 0; q < s.nasked; q++)
                an_near_try(&nr, s.asked[q]);
            return cf_unknown_key(ld, ka, kpath, &nr);
        }
    return 0;
}

/* The pair of `key` in s (marked read), or -1. */
static int sec_find(conf_sec_t *s, const char *key, const yaml_node_t **k, const yaml_node_t **v)
{
    if (s->nasked < sizeof(s->asked) / sizeof(s->asked[0]))
        s->asked[s->nasked++] = key; /* module keys are string literals */
    if (s->map == NULL)
        return -1;
    yaml_node_pair_t *start = s->map->data.mapping.pairs.start;
    size_t n = (size_t)(s->map->data.mapping.pairs.top - start);
    for (size_t a = 0; a < n && a < SEC_MAX_KEYS; a++) {
        yaml_node_t *ka = yaml_document_get_node(s->ld->doc, start[a].key);
        if (strcmp(cf_sval(ka), key) == 0) {
            *k = ka;
            *v = yaml_document_get_node(s->ld->doc, start[a].value);
            s->used |= 1u << a;
            return (int)a;
        }
    }
    return -1;
}

/* Load `key` of s with a one-entry field table `f` (its off is 0) into out. */
static int sec_load(conf_sec_t *s, const char *key, const struct field *f, void *out)
{
    const yaml_node_t *k, *v;
    if (sec_find(s, key, &k, &v) < 0)
        return 0;
    char kpath[KEYPATH_LEN];
    cf_key_join(kpath, s->path, ".");
    cf_key_join(kpath, kpath, key);
    return cf_load_field(s->ld, f, k, v, out, kpath);
}

int conf_sec_u32(conf_sec_t *s, const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
    const struct field f = {
        .key = key, .type = F_UINT, .size = sizeof(*out), .min = min, .max = max};
    return sec_load(s, key, &f, out);
}

int conf_sec_u64(conf_sec_t *s, const char *key, uint64_t min, uint64_t max, uint64_t *out)
{
    const struct field f = {
        .key = key, .type = F_UINT, .size = sizeof(*out), .min = min, .max = max};
    return sec_load(s, key, &f, out);
}

int conf_sec_ms(conf_sec_t *s, const char *key, uint32_t min, uint32_t max, uint32_t *out)
{
    const struct field f = {
        .key = key, .type = F_UINT, .size = sizeof(*out), .min = min, .max = max, .unit = U_MS};
    return sec_load(s, key, &f, out);
}

int conf_sec_bool(conf_sec_t *s, const char *key, uint8_t *out)
{
    const struct field f = {.key = key, .type = F_BOOL, .size = sizeof(*out)};
    return sec_load(s, key, &f, out);
}

int conf_sec_str(conf_sec_t *s, const char *key, char *out, size_t size, int flags)
{
    const struct field f = {
        .key = key, .type = (flags & CONF_SEC_NONEMPTY) ? F_NAME : F_STR, .size = size};
    return sec_load(s, key, &f, out);
}

int conf_sec_enum(conf_sec_t *s, const char *key, const char *const *names, uint8_t *out)
{
    const struct field f = {.key = key, .type = F_ENUM, .size = sizeof(*out), .names = names};
    return sec_load(s, key, &f, out);
}

int conf_sec_names(conf_sec_t *s, const char *key, char *out, size_t each, uint32_t max,
                   uint32_t *count)
{
    if (!conf_sec_has(s, key))
        return 0;
    /* load_namelist writes the names at off and the count at off2 of one
     * base: a scratch block laid out so, copied out once it is valid */
    size_t bytes = each * max;
    char *tmp = calloc(1, bytes + sizeof(uint32_t));
    if (tmp == NULL)
        return conf_sec_fail(s, key, "out of memory");
    const struct field f = {
        .key = key, .type = F_NAMELIST, .off = 0, .size = each, .max = max, .off2 = bytes};
    int rc = sec_load(s, key, &f, tmp);
    if (rc == 0) {
        memcpy(out, tmp, bytes);
        memcpy(count, tmp + bytes, sizeof(*count));
    }
    free(tmp);
    return rc;
}

/* A nested mapping m at path: scalar keys, at most SEC_MAX_KEYS, no
 * duplicates.  0, or -1 with the error set. */
static int map_check(struct loader *ld, const yaml_node_t *m, const char *path)
{
    size_t n = (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
    for (size_t a = 0; a < n; a++) {
        yaml_node_t *ka = yaml_document_get_node(ld->doc, m->data.mapping.pairs.start[a].key);
        char apath[KEYPATH_LEN];
        cf_key_join(apath, path, ".");
        cf_key_join(apath, apath, ka && ka->type == YAML_SCALAR_NODE ? cf_sval(ka) : "?");
        if (ka == NULL || ka->type != YAML_SCALAR_NODE || a >= SEC_MAX_KEYS)
            return cf_fail(ld, ka ? ka : m, apath, "unknown key");
        for (size_t b = 0; b < a; b++)
            if (strcmp(cf_sval(yaml_document_get_node(ld->doc, m->data.mapping.pairs.start[b].key)),
                       cf_sval(ka)) == 0)
                return cf_fail(ld, ka, apath, "duplicate key");
    }
    return 0;
}

/* After a reader's fn: a key of sub it did not read is refused (with the
 * nearest key it asked for as a suggestion). */
static int map_unread(const conf_sec_t *sub)
{
    const yaml_node_t *m = sub->map;
    size_t n = (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
    for (size_t a = 0; a < n; a++)
        if (!(sub->used & (1u << a))) {
            yaml_node_t *ka =
                yaml_document_get_node(sub->ld->doc, m->data.mapping.pairs.start[a].key);
            char apath[KEYPATH_LEN];
            cf_key_join(apath, sub->path, ".");
            cf_key_join(apath, apath, cf_sval(ka));
            an_near_t nr = AN_NEAR(cf_sval(ka));
            for (uint32_t q = 0; q < sub->nasked; q++)
                an_near_try(&nr, sub->asked[q]);
            return cf_unknown_key(sub->ld, ka, apath, &nr);
        }
    return 0;
}

int conf_sec_each(conf_sec_t *s, const char *key, int (*fn)(conf_sec_t *item, uint32_t i, void *ud),
                  void *ud)
{
    const yaml_node_t *k, *v;
    if (sec_find(s, key, &k, &v) < 0 || cf_is_null(v))
        return 0;
    char kpath[KEYPATH_LEN];
    cf_key_join(kpath, s->path, ".");
    cf_key_join(kpath, kpath, key);
    if (v->type != YAML_SEQUENCE_NODE)
        return cf_fail(s->ld, k, kpath, "expected a list, got %s", cf_node_kind(v));
    uint32_t i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++, i++) {
        const yaml_node_t *m = yaml_document_get_node(s->ld->doc, *it);
        char ipath[KEYPATH_LEN];
        if (snprintf(ipath, sizeof(ipath), "%s[%u]", kpath, i) >= (int)sizeof(ipath))
            ipath[sizeof(ipath) - 1] = '\0'; /* cut, as key_join does */
        if (m == NULL || m->type != YAML_MAPPING_NODE)
            return cf_fail(s->ld, m ? m : k, ipath, "expected a mapping, got %s",
                           m ? cf_node_kind(m) : "nothing");
        if (map_check(s->ld, m, ipath) < 0)
            return -1;
        struct conf_sec_s sub = {.ld = s->ld, .at = m, .map = m, .path = ipath};
        if (fn(&sub, i, ud) < 0 || map_unread(&sub) < 0)
            return -1;
    }
    return 0;
}

/* The mapping under key of s as a section of its own (sub, its path in
 * kpath): 1, 0 when the key is absent or null, -1 (reported) when it is
 * not a mapping or its keys repeat. */
static int sub_map(conf_sec_t *s, const char *key, struct conf_sec_s *sub, char *kpath)
{
    const yaml_node_t *k, *v;
    if (sec_find(s, key, &k, &v) < 0 || cf_is_null(v))
        return 0;
    cf_key_join(kpath, s->path, ".");
    cf_key_join(kpath, kpath, key);
    if (v->type != YAML_MAPPING_NODE)
        return cf_fail(s->ld, k, kpath, "expected a mapping, got %s", cf_node_kind(v));
    if (map_check(s->ld, v, kpath) < 0)
        return -1;
    *sub = (struct conf_sec_s){.ld = s->ld, .at = k, .map = v, .path = kpath};
    return 1;
}

int conf_sec_map(conf_sec_t *s, const char *key, int (*fn)(conf_sec_t *sub, void *ud), void *ud)
{
    char kpath[KEYPATH_LEN];
    struct conf_sec_s sub;
    int rc = sub_map(s, key, &sub, kpath);
    if (rc <= 0)
        return rc;
    if (fn(&sub, ud) < 0 || map_unread(&sub) < 0)
        return -1;
    return 0;
}

int conf_sec_pairs(conf_sec_t *s, const char *key,
                   int (*fn)(conf_sec_t *sub, const char *name, const char *value, void *ud),
                   void *ud)
{
    char kpath[KEYPATH_LEN];
    struct conf_sec_s sub;
    int rc = sub_map(s, key, &sub, kpath);
    if (rc <= 0)
        return rc;
    const yaml_node_t *v = sub.map;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        const yaml_node_t *ka = yaml_document_get_node(s->ld->doc, p->key),
                          *va = yaml_document_get_node(s->ld->doc, p->value);
        char apath[KEYPATH_LEN];
        cf_key_join(apath, kpath, ".");
        cf_key_join(apath, apath, cf_sval(ka));
        if (va == NULL || va->type != YAML_SCALAR_NODE)
            return cf_fail(s->ld, va ? va : ka, apath, "expected a string, got %s",
                           va ? cf_node_kind(va) : "nothing");
        if (fn(&sub, cf_sval(ka), cf_sval(va), ud) < 0)
            return -1;
    }
    return 0;
}

int conf_sec_rest(conf_sec_t *s,
                  int (*fn)(conf_sec_t *s, const char *key, const char *value, int quoted,
                            void *ud),
                  void *ud)
{
    if (s->map == NULL)
        return 0;
    yaml_node_pair_t *start = s->map->data.mapping.pairs.start;
    size_t n = (size_t)(s->map->data.mapping.pairs.top - start);
    for (size_t a = 0; a < n && a < SEC_MAX_KEYS; a++) {
        if (s->used & (1u << a))
            continue;
        yaml_node_t *ka = yaml_document_get_node(s->ld->doc, start[a].key);
        yaml_node_t *va = yaml_document_get_node(s->ld->doc, start[a].value);
        if (ka == NULL || va == NULL || ka->type != YAML_SCALAR_NODE ||
            va->type != YAML_SCALAR_NODE)
            continue; /* left unread: refused as an unknown key */
        s->used |= 1u << a;
        int quoted = va->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (fn(s, cf_sval(ka), cf_sval(va), quoted, ud) < 0)
            return -1;
    }
    return 0;
}

int conf_sec_has(const conf_sec_t *s, const char *key)
{
    if (s->map == NULL)
        return 0;
    for (yaml_node_pair_t *p = s->map->data.mapping.pairs.start; p < s->map->data.mapping.pairs.top;
         p++)
        if (strcmp(cf_sval(yaml_document_get_node(s->ld->doc, p->key)), key) == 0)
            return 1;
    return 0;
}

int conf_sec_fail(conf_sec_t *s, const char *key, const char *fmt, ...)
{
    struct loader *ld = s->ld;
    const yaml_node_t *at = s->map ? cf_key_node(ld, s->map, key) : s->at;
    if (at == s->map)
        at = s->at;
    char kpath[KEYPATH_LEN];
    cf_key_join(kpath, s->path, ".");
    cf_key_join(kpath, kpath, key);
    va_list ap;
    va_start(ap, fmt);
    cf_vfail(ld, at, kpath, fmt, ap);
    va_end(ap);
    return -1;
}

int conf_sec_keys(conf_sec_t *s, const conf_key_t *k, size_t n, void *values)
{
    char *base = values;
    for (size_t i = 0; i < n; i++) {
        const conf_key_t *f = &k[i];
        void *p = base + f->off;
        int rc = 0;
        switch (f->type) {
        case CONF_K_BOOL:
            rc = conf_sec_bool(s, f->key, p);
            break;
        case CONF_K_U32:
            rc = conf_sec_u32(s, f->key, (uint32_t)f->min, (uint32_t)f->max, p);
            break;
        case CONF_K_U64:
            rc = conf_sec_u64(s, f->key, f->min, f->max, p);
            break;
        case CONF_K_MS:
            rc = conf_sec_ms(s, f->key, (uint32_t)f->min, (uint32_t)f->max, p);
            break;
        case CONF_K_STR:
            rc = conf_sec_str(s, f->key, p, f->size, f->flags);
            break;
        case CONF_K_ENUM:
            rc = conf_sec_enum(s, f->key, f->names, p);
            break;
        case CONF_K_NAMES:
            rc = conf_sec_names(s, f->key, p, f->size, (uint32_t)f->max,
                                (uint32_t *)(void *)(base + f->count_off));
            break;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

void conf_keys_walk(const conf_key_t *k, size_t n, const void *values, conf_visit_fn fn, void *ud)
{
    const char *base = values;
    for (size_t i = 0; i < n; i++) {
        const conf_key_t *f = &k[i];
        const char *p = base + f->off;
        uint32_t u32;
        uint64_t u64;
        switch (f->type) {
        case CONF_K_BOOL:
            fn(ud, CONF_V_BOOL, f->key, NULL, *(const uint8_t *)p);
            break;
        case CONF_K_U32:
        case CONF_K_MS:
            memcpy(&u32, p, sizeof(u32));
            fn(ud, CONF_V_UINT, f->key, NULL, u32);
            break;
        case CONF_K_U64:
            memcpy(&u64, p, sizeof(u64));
            fn(ud, CONF_V_UINT, f->key, NULL, u64);
            break;
        case CONF_K_STR:
            fn(ud, CONF_V_STR, f->key, p, 0);
            break;
        case CONF_K_ENUM:
            fn(ud, CONF_V_STR, f->key, f->names[*(const uint8_t *)p], 0);
            break;
        case CONF_K_NAMES:
            memcpy(&u32, base + f->count_off, sizeof(u32));
            fn(ud, CONF_V_LIST, f->key, NULL, 0);
            for (uint32_t j = 0; j < u32; j++)
                fn(ud, CONF_V_STR, NULL, p + (size_t)j * f->size, 0);
            fn(ud, CONF_V_END, f->key, NULL, 0);
            break;
        }
    }
}
