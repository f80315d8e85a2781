/* log.h -- leveled log lines to stderr, a file or syslog; text or JSON.
 *
 * One process-wide sink (part of the server context set up by main before
 * the workers start).  A line is formatted into a stack buffer and written
 * with one write(2), so lines from different workers never interleave.
 * log_reopen() (SIGHUP) reopens the file for log rotation.
 */
#ifndef ANTENNA_LOG_H
#define ANTENNA_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { AN_LOG_ERROR = 0, AN_LOG_WARN = 1, AN_LOG_INFO = 2, AN_LOG_DEBUG = 3 };

/* Parse "error", "warn", "info", "debug"; -1 when unknown. */
int log_level_parse(const char *s);
/* Open the sink: path "" or NULL means stderr.  Returns 0 or -1 (errno). */
int log_open(const char *path, int level);
int log_reopen(void);
void log_close(void);
int log_enabled(int level);
/* Change the level at runtime (a reload, reload.h): any thread. */
void log_set_level(int level);
/* Format (JSON lines or text) and target (syslog instead of the fd). */
int log_set_output(int json, int use_syslog);
/* While on, error lines also go to stderr when the sink is a file or
 * syslog (start-up: main turns it on before building the server and off
 * once it runs). */
void log_set_stderr_mirror(int on);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The fields of a line about one client (docs/logging.md, a stable
 * contract): each becomes a JSON field when not NULL; text and syslog lines
 * are just the message (which quotes what matters).  `event` is a short
 * stable name ("client_connected", "auth_failed", ...), `reason` the MQTT
 * reason code's or the cause's name, `backend` the auth backend that
 * refused.  Every string is escaped in the line (client ids, usernames are
 * the client's). */
typedef struct log_fields {
    const char *event;
    const char *client_id;
    const char *username;
    const char *peer; /* "addr:port" */
    const char *listener;
    const char *reason;
    const char *backend;
} log_fields_t;

void log_ev(int level, const log_fields_t *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vev(int level, const log_fields_t *f, const char *fmt, va_list ap);

/* "Keep Alive timeout" -> "keep_alive_timeout": a name as a field value
 * (lower case, a run of other characters one '_'). */
const char *log_slug(const char *name, char *buf, size_t size);

/* A line about one client with only client_id and peer ("addr:port") as
 * fields (either may be NULL): log_ev with those two. */
void log_kv(int level, const char *client_id, const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

void log_vkv(int level, const char *client_id, const char *peer, const char *fmt, va_list ap);

/* Rate limit of one call site: at most one line per interval; the next line
 * written says how many were suppressed meanwhile.  Lines that a client can
 * cause in a loop (refused connections, accept errors) go through it, so an
 * attack or an exhausted resource cannot flood the log.  The state is
 * process-wide per call site (a static in log_limited*()), shared by the
 * workers through atomics, like the sink itself. */
typedef struct {
    _Atomic uint64_t next_ms;    /* monotonic ms before which lines are dropped */
    _Atomic uint64_t suppressed; /* lines dropped since the last one written */
} log_limit_t;

/* 1 when a line may be written now (*suppressed: lines dropped before it),
 * 0 when this one is dropped (and counted). */
int log_limit_pass(log_limit_t *l, uint32_t interval_ms, uint64_t *suppressed);
void log_limited_kv(log_limit_t *l, uint32_t interval_ms, int level, const char *client_id,
                    const char *peer, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The same with the fields of log_ev. */
void log_limited_ev(log_limit_t *l, uint32_t interval_ms, int level, const log_fields_t *f,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* log_limited(1000, AN_LOG_WARN, "fmt", ...): at most one line a second from
 * this call site; log_limited_kv's client_id / peer fields with _peer. */
#define log_limited(interval_ms, level, ...)                                                       \
    do {                                                                                           \
        static log_limit_t log_limit_;                                                             \
        log_limited_kv(&log_limit_, (interval_ms), (level), NULL, NULL, __VA_ARGS__);              \
    } while (0)
#define log_limited_peer(interval_ms, level, peer, ...)                                            \
    do {                                                                                           \
        static log_limit_t log_limit_;                                                             \
        log_limited_kv(&log_limit_, (interval_ms), (level), NULL, (peer), __VA_ARGS__);            \
    } while (0)

#define log_error(...) log_msg(AN_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(AN_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(AN_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(AN_LOG_DEBUG))                                                             \
            log_msg(AN_LOG_DEBUG, __VA_ARGS__);                                                    \
    } while (0)

#endif
