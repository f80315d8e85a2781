/* slab.h -- pools of same-size objects without a per-object header.
 *
 * What a connection and a session cost while idle is mostly their structs
 * (issue 15: at most 368 bytes per idle connection).  malloc adds a header
 * (8 bytes) and rounds each chunk up to its size class (16 bytes), and the
 * hand-off of a new connection from the worker that accepted it to its
 * home worker leaves holes in the per-thread arenas.  A slab hands out
 * objects of one size, packed in 64 KiB pages taken with mmap: no header,
 * rounding only to 8 bytes, and a freed object is reused by the next
 * allocation of that size whichever thread frees or allocates.
 *
 * Threads: any; one mutex per slab (taken once per connection or session
 * created or freed, never per message).  Pages go back to the system only
 * at slab_destroy: a broker that held a million connections keeps their
 * memory for the next million (malloc's arenas mostly do the same).
 *
 * Under AddressSanitizer (ANTENNA_SLAB_MALLOC, set by the sanitizer build)
 * every object is its own calloc'd block, so a use after free or an
 * overflow is still caught at the object.
 */
#ifndef ANTENNA_SLAB_H
#define ANTENNA_SLAB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SLAB_PAGE (64u * 1024u)

typedef struct slab_s {
    pthread_mutex_t mu;
    size_t size;     /* object size: a multiple of 8 */
    void *free_list; /* freed objects, linked through their first word */
    uint8_t *cur;    /* the rest of the newest page */
    size_t left;     /* bytes left at cur */
    void **pages;    /* every page, for slab_destroy */
    size_t npages, cap_pages;
    uint64_t in_use; /* objects handed out and not freed */
} slab_t;

/* A slab of objects of `size` bytes (rounded up to 8; at least 8). */
void slab_init(slab_t *s, size_t size);
/* A zeroed object; aborts when memory is exhausted, as an_calloc does. */
void *slab_alloc(slab_t *s);
/* The same, or NULL when memory is exhausted (for a caller that can
 * refuse: the topic trie's exact filters). */
void *slab_try_alloc(slab_t *s);
/* p from slab_alloc(s) or slab_try_alloc(s), or NULL. */
void slab_free(slab_t *s, void *p);
/* Bytes of pages held (RSS at most), and objects in use. */
size_t slab_bytes(slab_t *s);
uint64_t slab_in_use(slab_t *s);
/* Unmap every page: the objects must all be dead. */
void slab_destroy(slab_t *s);

#endif
