/* store_mem.c -- the memory backend: an ordered map in a skip list, for
 * tests and for persistence.enabled: false.  Nothing is durable; the sync
 * policy does not apply (durable = 0).
 *
 * A skip list keeps keys in bytewise order (as RocksDB's default comparator)
 * with O(log n) put, delete and seek, and deletes a prefix by unlinking the
 * run of nodes that starts at the seek position: O(log n + k), no rebalance.
 * Each node is one allocation: its forward pointers, then its key; the value
 * is a separate allocation so an overwrite never moves the node.
 *
 * Threads: write() runs on the committer under the write lock; get() and
 * scan() run on any thread under the read lock (a scan callback runs with
 * it held, so it must not write synchronously).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "store_int.h"
#include "util.h"

#define MAX_LEVEL 24

typedef struct node {
    uint8_t *val;
    size_t vl, kl;
    int level;
    struct node *next[]; /* level pointers, then kl key bytes */
} node_t;

typedef struct mem {
    pthread_rwlock_t lock;
    node_t *head; /* MAX_LEVEL pointers, no key */
    int level;    /* levels in use */
    uint64_t rng; /* xorshift state: the levels of new nodes */
} mem_t;

static const uint8_t *node_key(const node_t *n)
{
    return (const uint8_t *)&n->next[n->level];
}

static int key_cmp(const node_t *n, const void *k, size_t kl)
{
    size_t m = AN_MIN(n->kl, kl);
    int c = m ? memcmp(node_key(n), k, m) : 0;
    if (c != 0)
        return c;
    return n->kl < kl ? -1 : n->kl > kl;
}

static int has_prefix(const node_t *n, const void *prefix, size_t len)
{
    return n->kl >= len && (len == 0 || memcmp(node_key(n), prefix, len) == 0);
}

static int random_level(mem_t *m)
{
    int level = 1;
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    for (uint64_t r = m->rng; (r & 3) == 0 && level < MAX_LEVEL; r >>= 2)
        level++;
    return level;
}

/* The first node >= k; update[i] is the last node < k at level i. */
static node_t *seek(mem_t *m, const void *k, size_t kl, node_t **update)
{
    node_t *x = m->head;
    for (int i = m->level - 1; i >= 0; i--) {
        while (x->next[i] && key_cmp(x->next[i], k, kl) < 0)
            x = x->next[i];
        if (update)
            update[i] = x;
    }
    return x->next[0];
}

static void unlink_node(mem_t *m, node_t *x, node_t **update)
{
    for (int i = 0; i < m->level; i++)
        if (update[i]->next[i] == x)
            update[i]->next[i] = x->next[i];
    while (m->level > 1 && m->head->next[m->level - 1] == NULL)
        m->level--;
    free(x->val);
    free(x);
}

static void mem_put(mem_t *m, const store_op_t *op)
{
    node_t *update[MAX_LEVEL];
    node_t *x = seek(m, op->k, op->kl, update);
    uint8_t *val = an_malloc(op->vl);

    if (op->vl)
        memcpy(val, op->v, op->vl);
    if (x && key_cmp(x, op->k, op->kl) == 0) {
        free(x->val);
        x->val = val;
        x->vl = op->vl;
        return;
    }
    int level = random_level(m);
    for (int i = m->level; i < level; i++)
        update[i] = m->head;
    if (level > m->level)
        m->level = level;
    x = an_malloc(sizeof(node_t) + (size_t)level * sizeof(node_t *) + op->kl);
    x->val = val;
    x->vl = op->vl;
    x->kl = op->kl;
    x->level = level;
    if (op->kl)
        memcpy((uint8_t *)&x->next[level], op->k, op->kl);
    for (int i = 0; i < level; i++) {
        x->next[i] = update[i]->next[i];
        update[i]->next[i] = x;
    }
}

static void mem_del(mem_t *m, const store_op_t *op)
{
    node_t *update[MAX_LEVEL];
    node_t *x = seek(m, op->k, op->kl, update);
    if (x && key_cmp(x, op->k, op->kl) == 0)
        unlink_node(m, x, update);
}

/* Every node between update[] and the end of the prefix run goes, so
 * update[] stays the right set of predecessors throughout. */
static void mem_del_prefix(mem_t *m, const store_op_t *op)
{
    node_t *update[MAX_LEVEL];
    node_t *x = seek(m, op->k, op->kl, update);
    while (x && has_prefix(x, op->k, op->kl)) {
        node_t *next = x->next[0];
        unlink_node(m, x, update);
        x = next;
    }
}

static int mem_open(const store_opts_t *o, void **be, char *err, size_t errlen)
{
    (void)o, (void)err, (void)errlen;
    mem_t *m = an_calloc(1, sizeof(*m));
    pthread_rwlock_init(&m->lock, NULL);
    m->head = an_calloc(1, sizeof(node_t) + MAX_LEVEL * sizeof(node_t *));
    m->head->level = MAX_LEVEL;
    m->level = 1;
    uint64_t seed[2];
    an_random_key(seed); /* levels nobody can foresee, to line keys up against */
    m->rng = seed[0] | 1;
    *be = m;
    return 0;
}

static void mem_close(void *be)
{
    mem_t *m = be;
    node_t *x = m->head->next[0];
    while (x) {
        node_t *next = x->next[0];
        free(x->val);
        free(x);
        x = next;
    }
    free(m->head);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

static int mem_write(void *be, store_batch_t *first, int sync, char *err, size_t errlen)
{
    mem_t *m = be;
    (void)sync, (void)err, (void)errlen;
    pthread_rwlock_wrlock(&m->lock);
    for (store_batch_t *b = first; b; b = b->next) {
        store_op_t op;
        size_t off = 0;
        if (b->err)
            continue;
        while (store__batch_next(b, &off, &op)) {
            if (op.op == STORE_OP_PUT)
                mem_put(m, &op);
            else if (op.op == STORE_OP_DEL)
                mem_del(m, &op);
            else
                mem_del_prefix(m, &op);
        }
    }
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_sync(void *be, char *err, size_t errlen)
{
    (void)be, (void)err, (void)errlen;
    return 0;
}

static int mem_get(void *be, const void *k, size_t kl, void **val, size_t *vl)
{
    mem_t *m = be;
    int rc = STORE_ENOTFOUND;
    pthread_rwlock_rdlock(&m->lock);
    node_t *x = seek(m, k, kl, NULL);
    if (x && key_cmp(x, k, kl) == 0) {
        uint8_t *v = an_malloc(x->vl + 1);
        if (x->vl)
            memcpy(v, x->val, x->vl);
        v[x->vl] = '\0';
        *val = v;
        *vl = x->vl;
        rc = 0;
    }
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

static int mem_scan(void *be, const void *prefix, size_t len, store_scan_fn cb, void *ud)
{
    mem_t *m = be;
    int rc = 0;
    pthread_rwlock_rdlock(&m->lock);
    for (node_t *x = seek(m, prefix, len, NULL); x && has_prefix(x, prefix, len); x = x->next[0])
        if ((rc = cb(ud, node_key(x), x->kl, x->val, x->vl)) != 0)
            break;
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

static int mem_compact(void *be, const void *prefix, size_t len)
{
    (void)be, (void)prefix, (void)len;
    return 0;
}

const store_backend_t store__memory_backend = {
    .name = "memory",
    .durable = 0,
    .open = mem_open,
    .close = mem_close,
    .write = mem_write,
    .sync = mem_sync,
    .get = mem_get,
    .scan = mem_scan,
    .compact = mem_compact,
};
