/* module.c -- runs the modules of module_list through their life cycle
 * (module.h).
 *
 * server_t.modules holds one module_inst_t per entry of the list and
 * worker_t.modules one module_slot_t per module (the worker's context and
 * the tick's timer), both allocated by module_init_all on the main thread
 * before any worker runs and freed by module_worker_free and
 * module_free_all after the workers have been joined.
 */
#include "module.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

static uint32_t module_count(void)
{
    uint32_t n = 0;
    while (module_list[n])
        n++;
    return n;
}

void module_conf_defaults(conf_t *c)
{
    for (const module_t *const *mp = module_list; *mp; mp++) {
        const module_t *m = *mp;
        if (m->section == NULL)
            continue;
        void *values = conf_section_add(c, m->section, m->conf_load, m->conf_walk, m->conf_size);
        if (values == NULL) { /* a programming error: a name taken, no room */
            log_error("module %s: cannot declare configuration section \"%s\"", m->name,
                      m->section);
            abort();
        }
        if (m->conf_defaults)
            m->conf_defaults(values);
    }
}

static void on_tick(tw_timer_t *t)
{
    module_slot_t *slot = container_of(t, module_slot_t, timer);
    const module_t *m = slot->mi->m;
    uint64_t next = m->tick(slot->mi, slot->w, slot->ctx);
    if (next != MODULE_TICK_OFF)
        tw_add(&slot->w->tw, t, slot->w->now + next);
}

void module_tick_arm(worker_t *w, const module_inst_t *mi, uint64_t delay_ms)
{
    tw_add(&w->tw, &w->modules[mi->index].timer, w->now + delay_ms); /* or re-arm */
}

void module_turn_end_run(worker_t *w)
{
    while (w->turn_end_head) {
        module_slot_t *slot = w->turn_end_head;
        w->turn_end_head = slot->turn_next;
        slot->turn_next = NULL;
        slot->turn_asked = 0;
        if (slot->mi->m->turn_end)
            slot->mi->m->turn_end(slot->mi, w, slot->ctx);
    }
}

int module_init_all(server_t *srv)
{
    uint32_t n = module_count();
    srv->nmodules = n;
    srv->modules = an_calloc(n ? n : 1, sizeof(*srv->modules));
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        worker_t *w = &srv->workers[i];
        w->modules = an_calloc(n ? n : 1, sizeof(*w->modules));
        for (uint32_t j = 0; j < n; j++) {
            w->modules[j].w = w;
            w->modules[j].mi = &srv->modules[j];
            tw_timer_init(&w->modules[j].timer, on_tick);
        }
    }
    for (uint32_t j = 0; j < n; j++) {
        module_inst_t *mi = &srv->modules[j];
        const module_t *m = module_list[j];
        mi->m = m;
        mi->index = j;
        mi->srv = srv;
        if (m->section) {
            mi->conf = conf_section_values(&srv->conf, m->section);
            if (mi->conf == NULL) {
                /* the configuration was built without module_conf_defaults
                 * (a test): the section's defaults, in place */
                void *values = conf_section_add(&srv->conf, m->section, m->conf_load, m->conf_walk,
                                                m->conf_size);
                if (values == NULL) {
                    log_error("module %s: no room for its configuration", m->name);
                    return -1;
                }
                if (m->conf_defaults)
                    m->conf_defaults(values);
                mi->conf = values;
            }
        }
    }
    for (uint32_t j = 0; j < n; j++) {
        module_inst_t *mi = &srv->modules[j];
        if (mi->m->init && mi->m->init(mi) < 0)
            return -1;
        mi->inited = 1;
        for (uint32_t i = 0; mi->m->worker_init && i < srv->nworkers; i++)
            if (mi->m->worker_init(mi, &srv->workers[i], &srv->workers[i].modules[j].ctx) < 0)
                return -1;
    }
    return 0;
}

int module_start_all(server_t *srv)
{
    for (uint32_t j = 0; j < srv->nmodules; j++) {
        module_inst_t *mi = &srv->modules[j];
        if (mi->m->start && mi->m->start(mi) < 0)
            return -1;
    }
    return 0;
}

void module_stop_all(server_t *srv)
{
    for (uint32_t j = srv->nmodules; j-- > 0;) {
        module_inst_t *mi = &srv->modules[j];
        if (mi->inited && mi->m->stop)
            mi->m->stop(mi);
    }
}

const module_inst_t *module_live_key(const server_t *srv, const char *p)
{
    for (uint32_t j = 0; j < srv->nmodules; j++) {
        const module_t *m = srv->modules[j].m;
        size_t n = m->section ? strlen(m->section) : 0;
        if (!m->live_keys || !m->reload || n == 0 || strncmp(p, m->section, n) != 0 || p[n] != '.')
            continue;
        const char *key = p + n + 1;
        size_t kl = strcspn(key, ".[");
        for (const char *const *k = m->live_keys; *k; k++)
            if (strlen(*k) == kl && strncmp(*k, key, kl) == 0)
                return &srv->modules[j];
    }
    return NULL;
}

void module_worker_free(worker_t *w)
{
    server_t *srv = w->srv;
    if (w->modules == NULL)
        return;
    for (uint32_t j = srv->nmodules; j-- > 0;) {
        module_slot_t *slot = &w->modules[j];
        if (slot->mi->inited && slot->mi->m->worker_free)
            slot->mi->m->worker_free(slot->mi, w, slot->ctx);
        slot->ctx = NULL;
    }
    free(w->modules);
    w->modules = NULL;
}

void module_free_all(server_t *srv)
{
    for (uint32_t j = srv->nmodules; j-- > 0;) {
        module_inst_t *mi = &srv->modules[j];
        if (mi->inited && mi->m->free)
            mi->m->free(mi);
    }
    free(srv->modules);
    srv->modules = NULL;
    srv->nmodules = 0;
}
