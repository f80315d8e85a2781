/* conf_int.h -- what conf.c and conf_sec.c share: the key tables' types
 * and the loader.
 *
 * Not for other files: modules read their section through conf.h's
 * conf_sec_* readers.  A struct field describes one key (type, place,
 * range); a struct loader is the state of one conf_load() call, on its
 * stack; a struct conf_sec_s is one module section (or a nested mapping of
 * one) being read.  The cf_* functions are the loader's parts both files
 * use; each reports through cf_fail ("PATH:LINE: KEY: problem") and
 * returns -1 on error.
 */
#ifndef ANTENNA_CONF_INT_H
#define ANTENNA_CONF_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "conf.h"
#include "util.h"

enum ftype {
    F_UINT,      /* unsigned decimal, [min, max], stored in `size` bytes */
    F_BOOL,      /* true/false, yes/no, on/off into a uint8_t */
    F_STR,       /* any scalar, fits a char[size] with its NUL */
    F_NAME,      /* F_STR, not empty */
    F_ADDR,      /* F_STR, an IPv4 or IPv6 literal */
    F_LEVEL,     /* log level name into an int */
    F_ENUM,      /* one of the NULL-terminated `names`, its index into a uint8_t */
    F_SECTION,   /* a mapping of `sub` fields over the same base */
    F_LISTENERS, /* the listener sequence (base is the conf_t) */
    F_NAMELIST,  /* a sequence of names into char[max][size], count (uint32_t) at off2 */
    F_FLAGS,     /* a sequence of `names` (or "all") into a uint32_t, bit = index */
};

struct field {
    const char *key;
    enum ftype type;
    size_t off;  /* offset of the member in the base struct */
    size_t size; /* size of the member */
    uint64_t min, max;
    const struct field *sub;
    size_t nsub;
    const char *const *names; /* F_ENUM */
    size_t off2;              /* F_NAMELIST: offset of the count */
    uint8_t unit;             /* F_UINT: U_* suffixes accepted besides a plain integer */
};

/* Units an integer key may be written in (load_uint): a size ("256KB",
 * "64MiB": K, M, G, T are powers of 1024, B or iB optional, any case) or a
 * duration ("500ms", "30s", "15m" or "15min", "2h", "7d"), converted to
 * the key's own unit; a duration that is not a whole number of it (1500ms
 * for seconds) is refused. */
enum { U_NONE = 0, U_BYTES, U_S, U_MS };

#define KEYPATH_LEN 160 /* "listeners[15].max_connections"; longer names are cut */

struct loader {
    const char *path;
    yaml_document_t *doc;
    conf_t *c; /* the working copy */
    char *err;
    size_t errlen;
    uint32_t sections_seen; /* bit per module section found (duplicates) */
};

#define SEC_MAX_KEYS 32 /* keys of one section (a bit each in conf_sec_t.used) */

struct conf_sec_s {
    struct loader *ld;
    const yaml_node_t *at;  /* the section's key: where a missing key points */
    const yaml_node_t *map; /* its mapping, or NULL (empty section) */
    const char *path;       /* "name" */
    uint32_t used;          /* bit per pair read by the module */
    const char *asked[32];  /* keys the module asked for: suggestions */
    uint32_t nasked;
};

int cf_fail(struct loader *ld, const yaml_node_t *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cf_vfail(struct loader *ld, const yaml_node_t *at, const char *key, const char *fmt,
             va_list ap);
/* "unknown key", with the nearest known key when nr has one */
int cf_unknown_key(struct loader *ld, const yaml_node_t *at, const char *path, const an_near_t *nr);
const char *cf_node_kind(const yaml_node_t *n);
const char *cf_sval(const yaml_node_t *n); /* a scalar node's text */
int cf_is_null(const yaml_node_t *n);
/* out = a + b, cut to KEYPATH_LEN - 1 characters; out may be a */
void cf_key_join(char *out, const char *a, const char *b);
const yaml_node_t *cf_key_node(struct loader *ld, const yaml_node_t *map, const char *key);
int cf_load_field(struct loader *ld, const struct field *f, const yaml_node_t *k,
                  const yaml_node_t *v, void *base, const char *path);
int cf_is_root_key(const char *name); /* one of conf.c's own top-level keys */
/* conf_sec.c: root key k names a module's section: load it.  1 when k is
 * no section, else 0 or -1. */
int cf_load_section(struct loader *ld, const yaml_node_t *k, const yaml_node_t *v,
                    const char *path);

#endif
