/* rules_parse.c -- the rule statement's lexer and recursive-descent parser
 * (rules_parse.h).  Pure code: no I/O, no globals written; any thread.
 *
 * Each expression is emitted in postfix order straight into the plan's node
 * array while it is parsed; the parser tracks the stack depth the nodes
 * will need, so the evaluator can check one bound up front.  Nesting is
 * limited (RULES_MAX_DEPTH) so that a hostile statement cannot exhaust the
 * parser's C stack.
 */
#include "rules_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt_codec.h"
#include "util.h"

#define RULES_MAX_DEPTH 48
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *const rules_event_names[RULES_EV_COUNT] = {"client_connected", "client_disconnected",
                                                       "message_dropped",  "message_delivered",
                                                       "command_status",   "device_presence"};
const char *const rules_field_names[RULES_F_COUNT] = {
    "clientid",  "username", "topic", "qos",      "retain", "payload",
    "timestamp", "node",     "peer",  "protocol", "event",  "reason"};

enum { T_END = 0, T_IDENT, T_INT, T_DOUBLE, T_STR, T_QSTR, T_SYM };

typedef struct {
    uint8_t type;
    const char *p; /* in the statement */
    uint32_t len;
    uint32_t col; /* 1-based */
} tok_t;

typedef struct {
    const char *sql;
    const char *cur;
    tok_t t; /* the current token */
    rules_plan_t *plan;
    rules_err_t *err;
    uint32_t cap_nodes, cap_consts, cap_cols, cap_strs;
    uint32_t depth, max_depth; /* stack depth of the expression being emitted */
    uint32_t nest;
    int failed;
} parser_t;

static int perr(parser_t *ps, const tok_t *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error at token t. */
static int perr(parser_t *ps, const tok_t *t, const char *fmt, ...)
{
    if (ps->failed)
        return -1;
    ps->failed = 1;
    rules_err_t *e = ps->err;
    e->column = t->col;
    size_t n = AN_MIN((size_t)t->len, sizeof(e->token) - 1);
    memcpy(e->token, t->p, n);
    e->token[n] = '\0';
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(e->msg, sizeof(e->msg), "column %u: %s", t->col, what);
    return -1;
}

static int unexpected(parser_t *ps, const char *expected)
{
    if (ps->t.type == T_END)
        return perr(ps, &ps->t, "unexpected end of statement, expected %s", expected);
    return perr(ps, &ps->t, "unexpected token \"%.*s\", expected %s", (int)AN_MIN(ps->t.len, 40u),
                ps->t.p, expected);
}

/* ---- lexer ---- */

static int lex(parser_t *ps)
{
    const char *s = ps->cur;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    tok_t t = {.type = T_END, .p = s, .len = 0, .col = (uint32_t)(s - ps->sql) + 1};
    if (*s == '\0') {
        ps->t = t;
        ps->cur = s;
        return 0;
    }
    const char *b = s;
    if (isalpha((unsigned char)*s) || *s == '_') {
        while (isalnum((unsigned char)*s) || *s == '_')
            s++;
        t.type = T_IDENT;
    } else if (isdigit((unsigned char)*s)) {
        t.type = T_INT;
        while (isdigit((unsigned char)*s))
            s++;
        if (*s == '.' && isdigit((unsigned char)s[1])) {
            t.type = T_DOUBLE;
            s++;
            while (isdigit((unsigned char)*s))
                s++;
        }
        if ((*s == 'e' || *s == 'E') &&
            (isdigit((unsigned char)s[1]) ||
             ((s[1] == '-' || s[1] == '+') && isdigit((unsigned char)s[2])))) {
            t.type = T_DOUBLE;
            s += 2;
            while (isdigit((unsigned char)*s))
                s++;
        }
    } else if (*s == '\'' || *s == '"') {
        char q = *s++;
        for (;;) {
            if (*s == '\0') {
                t.len = (uint32_t)(s - b);
                ps->t = t;
                return perr(ps, &t, "unterminated string");
            }
            if (*s == q) {
                if (q == '\'' && s[1] == '\'') { /* '' is one quote */
                    s += 2;
                    continue;
                }
                s++;
                break;
            }
            s++;
        }
        t.type = q == '\'' ? T_STR : T_QSTR;
    } else {
        static const char *const two[] = {"<=", ">=", "<>", "!="};
        t.type = T_SYM;
        s++;
        for (size_t i = 0; i < NELEM(two); i++)
            if (b[0] == two[i][0] && b[1] == two[i][1]) {
                s++;
                break;
            }
        if (s - b == 1 && !strchr(",().*+-/%=<>", *b)) {
            t.len = 1;
            ps->t = t;
            return perr(ps, &t, "unexpected character \"%c\"",
                        isprint((unsigned char)*b) ? *b : '?');
        }
    }
    t.len = (uint32_t)(s - b);
    ps->t = t;
    ps->cur = s;
    return 0;
}

static int is_kw(const tok_t *t, const char *kw)
{
    return t->type == T_IDENT && strlen(kw) == t->len && strncasecmp(t->p, kw, t->len) == 0;
}

static int is_sym(const tok_t *t, const char *sym)
{
    return t->type == T_SYM && strlen(sym) == t->len && strncmp(t->p, sym, t->len) == 0;
}

static int expect_sym(parser_t *ps, const char *sym, const char *what)
{
    if (!is_sym(&ps->t, sym))
        return unexpected(ps, what);
    return lex(ps);
}

static const char *const reserved[] = {"SELECT", "FROM", "WHERE", "AS",   "AND",  "OR",    "NOT",
                                       "IN",     "LIKE", "IS",    "NULL", "TRUE", "FALSE", NULL};

static int is_reserved(const tok_t *t)
{
    for (const char *const *r = reserved; *r; r++)
        if (is_kw(t, *r))
            return 1;
    return 0;
}

/* ---- plan building ---- */

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t size)
{
    if (need <= *cap)
        return p;
    uint32_t c = *cap ? *cap * 2 : 8;
    while (c < need)
        c *= 2;
    *cap = c;
    return an_realloc(p, (size_t)c * size);
}

/* A copy of s[0..n) owned by the plan (a NUL after it; n + extra bytes). */
static char *keep(parser_t *ps, const char *s, size_t n, size_t extra)
{
    rules_plan_t *p = ps->plan;
    p->strs = grow(p->strs, &ps->cap_strs, p->nstrs + 1, sizeof(*p->strs));
    char *c = an_calloc(1, n + extra + 1);
    memcpy(c, s, n);
    p->strs[p->nstrs++] = c;
    return c;
}

/* Emit a node that pops `pop` values and pushes one. */
static void emit(parser_t *ps, rules_node_t n, uint32_t pop)
{
    rules_plan_t *p = ps->plan;
    p->nodes = grow(p->nodes, &ps->cap_nodes, p->nnodes + 1, sizeof(*p->nodes));
    p->nodes[p->nnodes++] = n;
    ps->depth = ps->depth - pop + 1;
    if (ps->depth > ps->max_depth)
        ps->max_depth = ps->depth;
}

static void emit_const(parser_t *ps, rules_const_t c)
{
    rules_plan_t *p = ps->plan;
    p->consts = grow(p->consts, &ps->cap_consts, p->nconsts + 1, sizeof(*p->consts));
    p->consts[p->nconsts] = c;
    emit(ps, (rules_node_t){.op = RULES_OP_CONST, .arg = (uint16_t)p->nconsts}, 0);
    p->nconsts++;
}

static int parse_expr(parser_t *ps);

/* ident {. ident|int}: a field. */
static int parse_field(parser_t *ps)
{
    tok_t first = ps->t;
    if (lex(ps) < 0)
        return -1;
    for (int f = 0; f < RULES_F_COUNT; f++)
        if (is_kw(&first, rules_field_names[f])) {
            if (f == RULES_F_PAYLOAD && is_sym(&ps->t, ".")) {
                /* payload.a.b: the path as "a\0b\0\0" */
                char path[512];
                size_t n = 0;
                while (is_sym(&ps->t, ".")) {
                    if (lex(ps) < 0)
                        return -1;
                    if ((ps->t.type != T_IDENT && ps->t.type != T_INT) ||
                        n + ps->t.len + 2 >= sizeof(path))
                        return unexpected(ps, "a JSON key after \".\"");
                    memcpy(path + n, ps->t.p, ps->t.len);
                    n += ps->t.len;
                    path[n++] = '\0';
                    if (lex(ps) < 0)
                        return -1;
                }
                path[n++] = '\0';
                ps->plan->uses_json = 1;
                emit(ps,
                     (rules_node_t){.op = RULES_OP_FIELD,
                                    .sub = RULES_F_PAYLOAD_PATH,
                                    .str = keep(ps, path, n, 0)},
                     0);
                return 0;
            }
            if (is_sym(&ps->t, "."))
                return unexpected(ps, "an operator (only payload and user_property have keys)");
            emit(ps, (rules_node_t){.op = RULES_OP_FIELD, .sub = (uint8_t)f}, 0);
            return 0;
        }
    if (is_kw(&first, "user_property")) {
        if (!is_sym(&ps->t, "."))
            return unexpected(ps, "\".\" and a user property's name");
        if (lex(ps) < 0)
            return -1;
        if (ps->t.type != T_IDENT && ps->t.type != T_INT)
            return unexpected(ps, "a user property's name");
        ps->plan->uses_props = 1;
        emit(ps,
             (rules_node_t){.op = RULES_OP_FIELD,
                            .sub = RULES_F_USER_PROP,
                            .str = keep(ps, ps->t.p, ps->t.len, 0)},
             0);
        return lex(ps);
    }
    return perr(ps, &first, "unknown field \"%.*s\"", (int)AN_MIN(first.len, 40u), first.p);
}

static int parse_primary(parser_t *ps)
{
    tok_t t = ps->t;
    switch (t.type) {
    case T_INT:
    case T_DOUBLE: {
        char buf[64];
        if (t.len >= sizeof(buf))
            return perr(ps, &t, "number too long");
        memcpy(buf, t.p, t.len);
        buf[t.len] = '\0';
        errno = 0;
        rules_const_t c;
        if (t.type == T_INT) {
            long long v = strtoll(buf, NULL, 10);
            if (errno)
                return perr(ps, &t, "integer out of range");
            c = (rules_const_t){.type = RULES_V_INT, .u.i = v};
        } else {
            c = (rules_const_t){.type = RULES_V_DOUBLE, .u.d = strtod(buf, NULL)};
        }
        emit_const(ps, c);
        return lex(ps);
    }
    case T_STR: {
        char *s = keep(ps, "", 0, t.len);
        size_t n = 0;
        for (uint32_t i = 1; i + 1 < t.len; i++) {
            s[n++] = t.p[i];
            if (t.p[i] == '\'')
                i++; /* '' */
        }
        s[n] = '\0';
        emit_const(ps, (rules_const_t){.type = RULES_V_STR, .len = (uint32_t)n, .u.s = s});
        return lex(ps);
    }
    case T_QSTR:
        return perr(ps, &t,
                    "a double-quoted string is a topic filter (FROM); strings take "
                    "single quotes");
    case T_SYM:
        if (is_sym(&t, "(")) {
            if (lex(ps) < 0 || parse_expr(ps) < 0)
                return -1;
            return expect_sym(ps, ")", "\")\"");
        }
        return unexpected(ps, "an expression");
    case T_IDENT:
        if (is_kw(&t, "NULL") || is_kw(&t, "TRUE") || is_kw(&t, "FALSE")) {
            emit_const(ps, is_kw(&t, "NULL")
                               ? (rules_const_t){.type = RULES_V_NULL}
                               : (rules_const_t){.type = RULES_V_BOOL, .u.i = is_kw(&t, "TRUE")});
            return lex(ps);
        }
        if (is_reserved(&t))
            return unexpected(ps, "an expression");
        const char *after = ps->cur;
        while (*after == ' ' || *after == '\t')
            after++;
        if (*after == '(') { /* a call */
            uint8_t min, max;
            int fn = rules_fn_find(t.p, t.len, &min, &max);
            if (fn < 0)
                return perr(ps, &t, "unknown function \"%.*s\"", (int)AN_MIN(t.len, 40u), t.p);
            if (lex(ps) < 0 || lex(ps) < 0) /* the name, "(" */
                return -1;
            uint32_t argc = 0;
            if (!is_sym(&ps->t, ")")) {
                for (;;) {
                    if (parse_expr(ps) < 0)
                        return -1;
                    argc++;
                    if (!is_sym(&ps->t, ","))
                        break;
                    if (lex(ps) < 0)
                        return -1;
                }
            }
            tok_t close = ps->t;
            if (expect_sym(ps, ")", "\",\" or \")\"") < 0)
                return -1;
            if (argc < min || argc > max)
                return perr(ps, &close, "%.*s takes %u..%u arguments, got %u", (int)t.len, t.p, min,
                            max, argc);
            emit(ps, (rules_node_t){.op = RULES_OP_CALL, .sub = (uint8_t)argc, .arg = (uint16_t)fn},
                 argc);
            return 0;
        }
        return parse_field(ps);
    default:
        return unexpected(ps, "an expression");
    }
}

static int parse_unary(parser_t *ps)
{
    if (is_sym(&ps->t, "-")) {
        if (++ps->nest > RULES_MAX_DEPTH)
            return perr(ps, &ps->t, "expression nested too deeply");
        if (lex(ps) < 0 || parse_unary(ps) < 0)
            return -1;
        ps->nest--;
        emit(ps, (rules_node_t){.op = RULES_OP_NEG}, 1);
        return 0;
    }
    return parse_primary(ps);
}

static int parse_prod(parser_t *ps)
{
    if (parse_unary(ps) < 0)
        return -1;
    for (;;) {
        uint8_t op = is_sym(&ps->t, "*")   ? RULES_OP_MUL
                     : is_sym(&ps->t, "/") ? RULES_OP_DIV
                     : is_sym(&ps->t, "%") ? RULES_OP_MOD
                                           : 0;
        if (!op)
            return 0;
        if (lex(ps) < 0 || parse_unary(ps) < 0)
            return -1;
        emit(ps, (rules_node_t){.op = op}, 2);
    }
}

static int parse_sum(parser_t *ps)
{
    if (parse_prod(ps) < 0)
        return -1;
    for (;;) {
        uint8_t op = is_sym(&ps->t, "+") ? RULES_OP_ADD : is_sym(&ps->t, "-") ? RULES_OP_SUB : 0;
        if (!op)
            return 0;
        if (lex(ps) < 0 || parse_prod(ps) < 0)
            return -1;
        emit(ps, (rules_node_t){.op = op}, 2);
    }
}

static int parse_cmp(parser_t *ps)
{
    if (parse_sum(ps) < 0)
        return -1;
    static const struct {
        const char *sym;
        uint8_t op;
    } cmps[] = {{"=", RULES_OP_EQ},  {"!=", RULES_OP_NE}, {"<>", RULES_OP_NE}, {"<", RULES_OP_LT},
                {"<=", RULES_OP_LE}, {">", RULES_OP_GT},  {">=", RULES_OP_GE}};
    for (size_t i = 0; i < NELEM(cmps); i++)
        if (is_sym(&ps->t, cmps[i].sym)) {
            if (lex(ps) < 0 || parse_sum(ps) < 0)
                return -1;
            emit(ps, (rules_node_t){.op = cmps[i].op}, 2);
            return 0;
        }
    if (is_kw(&ps->t, "IS")) {
        if (lex(ps) < 0)
            return -1;
        int neg = is_kw(&ps->t, "NOT");
        if (neg && lex(ps) < 0)
            return -1;
        if (!is_kw(&ps->t, "NULL"))
            return unexpected(ps, "NULL");
        emit(ps, (rules_node_t){.op = RULES_OP_ISNULL}, 1);
        if (neg)
            emit(ps, (rules_node_t){.op = RULES_OP_NOT}, 1);
        return lex(ps);
    }
    int neg = 0;
    if (is_kw(&ps->t, "NOT")) {
        neg = 1;
        if (lex(ps) < 0)
            return -1;
        if (!is_kw(&ps->t, "IN") && !is_kw(&ps->t, "LIKE"))
            return unexpected(ps, "IN or LIKE after NOT");
    }
    if (is_kw(&ps->t, "IN")) {
        if (lex(ps) < 0 || expect_sym(ps, "(", "\"(\"") < 0)
            return -1;
        uint32_t n = 0;
        for (;;) {
            if (parse_expr(ps) < 0)
                return -1;
            if (++n > 255)
                return perr(ps, &ps->t, "more than 255 values in IN");
            if (!is_sym(&ps->t, ","))
                break;
            if (lex(ps) < 0)
                return -1;
        }
        if (expect_sym(ps, ")", "\",\" or \")\"") < 0)
            return -1;
        emit(ps, (rules_node_t){.op = RULES_OP_IN, .sub = (uint8_t)n}, n + 1);
    } else if (is_kw(&ps->t, "LIKE")) {
        if (lex(ps) < 0 || parse_sum(ps) < 0)
            return -1;
        emit(ps, (rules_node_t){.op = RULES_OP_LIKE}, 2);
    } else {
        return 0;
    }
    if (neg)
        emit(ps, (rules_node_t){.op = RULES_OP_NOT}, 1);
    return 0;
}

static int parse_not(parser_t *ps)
{
    if (is_kw(&ps->t, "NOT")) {
        if (++ps->nest > RULES_MAX_DEPTH)
            return perr(ps, &ps->t, "expression nested too deeply");
        if (lex(ps) < 0 || parse_not(ps) < 0)
            return -1;
        ps->nest--;
        emit(ps, (rules_node_t){.op = RULES_OP_NOT}, 1);
        return 0;
    }
    return parse_cmp(ps);
}

static int parse_and(parser_t *ps)
{
    if (parse_not(ps) < 0)
        return -1;
    while (is_kw(&ps->t, "AND")) {
        if (lex(ps) < 0 || parse_not(ps) < 0)
            return -1;
        emit(ps, (rules_node_t){.op = RULES_OP_AND}, 2);
    }
    return 0;
}

static int parse_expr(parser_t *ps)
{
    if (++ps->nest > RULES_MAX_DEPTH)
        return perr(ps, &ps->t, "expression nested too deeply");
    if (parse_and(ps) < 0)
        return -1;
    while (is_kw(&ps->t, "OR")) {
        if (lex(ps) < 0 || parse_and(ps) < 0)
            return -1;
        emit(ps, (rules_node_t){.op = RULES_OP_OR}, 2);
    }
    ps->nest--;
    if (ps->max_depth > RULES_MAX_STACK)
        return perr(ps, &ps->t, "expression too complex (more than %d values at once)",
                    RULES_MAX_STACK);
    return 0;
}

static int parse_col(parser_t *ps)
{
    rules_plan_t *p = ps->plan;
    p->cols = grow(p->cols, &ps->cap_cols, p->ncols + 1, sizeof(*p->cols));
    rules_col_t *c = &p->cols[p->ncols];
    memset(c, 0, sizeof(*c));
    if (is_sym(&ps->t, "*")) {
        c->star = 1;
        c->name = "*";
        p->ncols++;
        return lex(ps);
    }
    const char *from = ps->t.p;
    c->start = p->nnodes;
    ps->depth = 0;
    if (parse_expr(ps) < 0)
        return -1;
    c = &p->cols[p->ncols]; /* emit may not move cols, but stay safe */
    c->end = p->nnodes;
    if (is_kw(&ps->t, "AS")) {
        if (lex(ps) < 0)
            return -1;
        if (ps->t.type != T_IDENT || is_reserved(&ps->t))
            return unexpected(ps, "a column name after AS");
        c->name = keep(ps, ps->t.p, ps->t.len, 0);
        p->ncols++;
        return lex(ps);
    }
    /* the expression as written, trailing blanks cut */
    const char *to = ps->t.type == T_END ? ps->cur : ps->t.p;
    while (to > from && (to[-1] == ' ' || to[-1] == '\t' || to[-1] == '\n' || to[-1] == '\r'))
        to--;
    c->name = keep(ps, from, (size_t)(to - from), 0);
    p->ncols++;
    return 0;
}

static int parse_source(parser_t *ps)
{
    rules_plan_t *p = ps->plan;
    tok_t t = ps->t;
    if (t.type != T_QSTR)
        return unexpected(ps, "a double-quoted topic filter or \"$events/...\"");
    const char *s = t.p + 1;
    size_t n = t.len - 2;
    static const char ev[] = "$events/";
    if (n >= sizeof(ev) - 1 && memcmp(s, ev, sizeof(ev) - 1) == 0) {
        for (int e = 0; e < RULES_EV_COUNT; e++)
            if (strlen(rules_event_names[e]) == n - (sizeof(ev) - 1) &&
                memcmp(s + sizeof(ev) - 1, rules_event_names[e], n - (sizeof(ev) - 1)) == 0) {
                p->events |= 1u << e;
                return lex(ps);
            }
        return perr(ps, &t,
                    "unknown event %.*s (client_connected, client_disconnected, "
                    "message_dropped, message_delivered, command_status, device_presence)",
                    (int)AN_MIN(n, 60u), s);
    }
    if (n == 0 || n > 4096 || (n >= 7 && memcmp(s, "$share/", 7) == 0) ||
        !mqtt_topic_filter_valid((const uint8_t *)s, n) || memchr(s, '\0', n))
        return perr(ps, &t,
                    "%.*s is not a topic filter ('+' and '#' whole levels, '#' last, "
                    "no $share/)",
                    (int)AN_MIN(n, 60u), s);
    if (p->nfilters >= RULES_MAX_FROM)
        return perr(ps, &t, "more than %d sources in FROM", RULES_MAX_FROM);
    p->filters = an_realloc(p->filters, (p->nfilters + 1) * sizeof(*p->filters));
    p->filters[p->nfilters++] = an_strndup(s, n);
    return lex(ps);
}

rules_plan_t *rules_parse(const char *sql, rules_err_t *err)
{
    memset(err, 0, sizeof(*err));
    parser_t ps = {.sql = sql, .cur = sql, .err = err};
    ps.plan = an_calloc(1, sizeof(*ps.plan));
    if (strlen(sql) > RULES_MAX_SQL) {
        snprintf(err->msg, sizeof(err->msg), "the statement is longer than %d bytes",
                 RULES_MAX_SQL);
        goto fail;
    }
    if (lex(&ps) < 0)
        goto fail;
    if (!is_kw(&ps.t, "SELECT")) {
        unexpected(&ps, "SELECT");
        goto fail;
    }
    if (lex(&ps) < 0)
        goto fail;
    for (;;) {
        if (parse_col(&ps) < 0)
            goto fail;
        if (ps.max_depth > ps.plan->max_stack)
            ps.plan->max_stack = ps.max_depth;
        if (!is_sym(&ps.t, ","))
            break;
        if (lex(&ps) < 0)
            goto fail;
    }
    if (!is_kw(&ps.t, "FROM")) {
        unexpected(&ps, ps.t.type == T_IDENT ? "FROM" : "\",\" or FROM");
        goto fail;
    }
    if (lex(&ps) < 0)
        goto fail;
    for (;;) {
        if (parse_source(&ps) < 0)
            goto fail;
        if (!is_sym(&ps.t, ","))
            break;
        if (lex(&ps) < 0)
            goto fail;
    }
    if (is_kw(&ps.t, "WHERE")) {
        if (lex(&ps) < 0)
            goto fail;
        ps.plan->where_start = ps.plan->nnodes;
        ps.depth = 0;
        if (parse_expr(&ps) < 0)
            goto fail;
        ps.plan->where_end = ps.plan->nnodes;
        if (ps.max_depth > ps.plan->max_stack)
            ps.plan->max_stack = ps.max_depth;
    }
    if (ps.t.type != T_END) {
        unexpected(&ps, ps.plan->where_end ? "the end of the statement"
                                           : "\",\", WHERE or the end of the statement");
        goto fail;
    }
    return ps.plan;
fail:
    rules_plan_free(ps.plan);
    return NULL;
}

void rules_plan_free(rules_plan_t *p)
{
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->nfilters; i++)
        free(p->filters[i]);
    for (uint32_t i = 0; i < p->nstrs; i++)
        free(p->strs[i]);
    free(p->filters);
    free(p->strs);
    free(p->nodes);
    free(p->consts);
    free(p->cols);
    free(p);
}
