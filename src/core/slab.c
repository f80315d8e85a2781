/* slab.c -- pools of same-size objects without a per-object header
 * (slab.h).  A page is carved lazily (a bump pointer), freed objects form
 * a LIFO list so the most recently touched memory is reused first. */
#include "slab.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "log.h"
#include "util.h"

void slab_init(slab_t *s, size_t size)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    size = (size + 7u) & ~(size_t)7u;
    s->size = size < sizeof(void *) ? sizeof(void *) : size;
}

#ifdef ANTENNA_SLAB_MALLOC

void *slab_alloc(slab_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->in_use++;
    pthread_mutex_unlock(&s->mu);
    return an_calloc(1, s->size);
}

void *slab_try_alloc(slab_t *s)
{
    void *p = calloc(1, s->size);
    if (p) {
        pthread_mutex_lock(&s->mu);
        s->in_use++;
        pthread_mutex_unlock(&s->mu);
    }
    return p;
}

void slab_free(slab_t *s, void *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->in_use--;
    pthread_mutex_unlock(&s->mu);
    free(p);
}

#else

/* A new page for s (s->mu held).  Returns 0, or -1 when memory is
 * exhausted (s unchanged). */
static int slab_grow(slab_t *s)
{
    if (s->npages == s->cap_pages) {
        size_t cap = s->cap_pages ? s->cap_pages * 2 : 16;
        void **pages = realloc(s->pages, cap * sizeof(*pages));
        if (pages == NULL)
            return -1;
        s->pages = pages;
        s->cap_pages = cap;
    }
    void *page = mmap(NULL, SLAB_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return -1;
    s->pages[s->npages++] = page;
    s->cur = page;
    s->left = SLAB_PAGE;
    return 0;
}

void *slab_try_alloc(slab_t *s)
{
    void *p;
    pthread_mutex_lock(&s->mu);
    if (s->free_list != NULL) {
        p = s->free_list;
        s->free_list = *(void **)p;
    } else {
        if (s->left < s->size && slab_grow(s) < 0) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        p = s->cur;
        s->cur += s->size;
        s->left -= s->size;
    }
    s->in_use++;
    pthread_mutex_unlock(&s->mu);
    memset(p, 0, s->size);
    return p;
}

void *slab_alloc(slab_t *s)
{
    void *p = slab_try_alloc(s);
    if (p == NULL) {
        log_error("out of memory: mmap of a %u-byte slab page failed", SLAB_PAGE);
        abort();
    }
    return p;
}

void slab_free(slab_t *s, void *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    *(void **)p = s->free_list;
    s->free_list = p;
    s->in_use--;
    pthread_mutex_unlock(&s->mu);
}

#endif

size_t slab_bytes(slab_t *s)
{
    pthread_mutex_lock(&s->mu);
#ifdef ANTENNA_SLAB_MALLOC
    size_t n = (size_t)s->in_use * s->size;
#else
    size_t n = s->npages * (size_t)SLAB_PAGE;
#endif
    pthread_mutex_unlock(&s->mu);
    return n;
}

uint64_t slab_in_use(slab_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->in_use;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void slab_destroy(slab_t *s)
{
    for (size_t i = 0; i < s->npages; i++)
        munmap(s->pages[i], SLAB_PAGE);
    free(s->pages);
    pthread_mutex_destroy(&s->mu);
    memset(s, 0, sizeof(*s));
}
