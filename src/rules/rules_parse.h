/* rules_parse.h -- a rule's SQL-like statement, parsed into a plan.
 *
 *   SELECT <expr> [AS name], ... FROM "<filter>"|"$events/<kind>", ...
 *   [WHERE <cond>]
 *
 * (docs/rules.md has the grammar.)  rules_parse() is pure code: no I/O, no
 * global state, any thread.  A plan is immutable once built and may be
 * evaluated by many threads at once (rules_eval.h): each expression is a
 * flat array of nodes in postfix order, run over a value stack whose depth
 * the parser computes, so evaluation needs no recursion and no allocation
 * for the plan itself.  An error names the 1-based column and the token:
 * `column 27: unexpected token "FORM", expected FROM`.
 */
#ifndef ANTENNA_RULES_PARSE_H
#define ANTENNA_RULES_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* The sources a FROM may name besides topic filters (bit per kind in
 * rules_plan_t.events). */
enum {
    RULES_EV_CONNECTED = 0, /* "$events/client_connected" */
    RULES_EV_DISCONNECTED,  /* "$events/client_disconnected" */
    RULES_EV_DROPPED,       /* "$events/message_dropped" */
    RULES_EV_DELIVERED,     /* "$events/message_delivered" */
    RULES_EV_COMMAND,       /* "$events/command_status" (src/commands) */
    RULES_EV_PRESENCE,      /* "$events/device_presence" (src/devices) */
    RULES_EV_COUNT
};
extern const char *const rules_event_names[RULES_EV_COUNT]; /* "client_connected", ... */

/* The fields a statement reads. */
enum {
    RULES_F_CLIENTID = 0,
    RULES_F_USERNAME,
    RULES_F_TOPIC,
    RULES_F_QOS,
    RULES_F_RETAIN,
    RULES_F_PAYLOAD,
    RULES_F_TIMESTAMP,
    RULES_F_NODE,
    RULES_F_PEER,
    RULES_F_PROTOCOL,
    RULES_F_EVENT,
    RULES_F_REASON,
    RULES_F_COUNT,        /* the fields `*` expands to end here */
    RULES_F_PAYLOAD_PATH, /* payload.a.b: arg = the path (rules_node_t.str) */
    RULES_F_USER_PROP,    /* user_property.key */
};
extern const char *const rules_field_names[RULES_F_COUNT];

/* Node operations. */
enum {
    RULES_OP_CONST = 1, /* push consts[arg] */
    RULES_OP_FIELD,     /* push field `sub` (RULES_F_*), str: path or key */
    RULES_OP_CALL,      /* pop argc values, push fn `arg`(...) */
    RULES_OP_NEG,
    RULES_OP_NOT,
    RULES_OP_ADD,
    RULES_OP_SUB,
    RULES_OP_MUL,
    RULES_OP_DIV,
    RULES_OP_MOD,
    RULES_OP_EQ,
    RULES_OP_NE,
    RULES_OP_LT,
    RULES_OP_LE,
    RULES_OP_GT,
    RULES_OP_GE,
    RULES_OP_AND,
    RULES_OP_OR,
    RULES_OP_IN,     /* pop argc list values and the operand: operand IN (list) */
    RULES_OP_LIKE,   /* pop pattern and operand */
    RULES_OP_ISNULL, /* pop one, push bool */
};

/* A constant. */
enum { RULES_V_NULL = 0, RULES_V_BOOL, RULES_V_INT, RULES_V_DOUBLE, RULES_V_STR, RULES_V_JSON };

typedef struct {
    uint8_t op;
    uint8_t sub;     /* RULES_OP_FIELD: the field; RULES_OP_CALL and IN: argc */
    uint16_t arg;    /* CONST: index; CALL: function */
    const char *str; /* FIELD: the JSON path ("a\0b\0\0") or the user property key */
} rules_node_t;

typedef struct {
    uint8_t type; /* RULES_V_* (not JSON) */
    uint32_t len; /* STR */
    union {
        int64_t i; /* BOOL and INT */
        double d;
        const char *s;
    } u;
} rules_const_t;

typedef struct {
    const char *name;    /* the output key: AS name, else the expression's text */
    uint32_t start, end; /* nodes[start..end) */
    uint8_t star;        /* `*`: every field */
} rules_col_t;

typedef struct rules_plan_s {
    rules_node_t *nodes;
    uint32_t nnodes;
    rules_const_t *consts;
    uint32_t nconsts;
    rules_col_t *cols;
    uint32_t ncols;
    uint32_t where_start, where_end; /* equal: no WHERE */
    char **filters;                  /* topic filters, NUL-terminated */
    uint32_t nfilters;
    uint32_t events;    /* bit per RULES_EV_* */
    uint32_t max_stack; /* values the deepest expression needs */
    uint8_t uses_json;  /* reads payload.*: parse the payload as JSON */
    uint8_t uses_props; /* reads user_property.* */
    char **strs;        /* strings the nodes, constants and columns point to */
    uint32_t nstrs;
} rules_plan_t;

#define RULES_MAX_STACK 64 /* values on the evaluation stack */
#define RULES_MAX_SQL 4096 /* bytes of a statement */
#define RULES_MAX_FROM 16  /* sources of one FROM */

/* A parse error: column (1-based, 0 when none) and message. */
typedef struct {
    uint32_t column;
    char token[48]; /* the offending token as written, "" at the end */
    char msg[200];  /* "column 27: unexpected token \"FORM\", expected FROM" */
} rules_err_t;

/* Parse sql (NUL-terminated).  A new plan, or NULL with *err filled. */
rules_plan_t *rules_parse(const char *sql, rules_err_t *err);
void rules_plan_free(rules_plan_t *p);

/* The function table (rules_eval.c): index of `name` (case-insensitive)
 * with its arity, or -1. */
int rules_fn_find(const char *name, size_t len, uint8_t *min_args, uint8_t *max_args);

#endif
