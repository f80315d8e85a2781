/* log.c -- leveled log lines to stderr, a file or syslog; text or JSON.
 *
 * The sink is a file descriptor (or syslog), a level and a format, set by
 * main before any worker starts.  The descriptor's number never changes
 * after that: log_reopen() opens the file again and dup3()s it over the old
 * number, which replaces the open file in one step, so a worker writing
 * during a SIGHUP rotation writes to the old or the new file, never to a
 * number that is closed for a moment and may be reused by another thread's
 * accept() or open() (a log line sent to a client).  Each line is one
 * write(2) (O_APPEND), or one syslog(3) call.
 *
 * JSON lines (log.format: json) are objects {"ts", "level", "msg"} plus
 * the fields of a line about one client when the caller knows them
 * (log_ev: "event", "client_id", "username", "peer", "listener", "reason",
 * "backend"; docs/logging.md), so a log pipeline can filter one client or
 * one kind of event without parsing text.  The fields come before "msg":
 * a long message is cut, never a field.
 *
 * A line is one line whatever a client sent: messages quote client ids,
 * usernames, topics and HTTP header values, so the writer escapes every
 * control byte of the formatted message (below 0x20, and 0x7f) as \xNN in
 * text and syslog lines (JSON escapes them its own way).  Escaping here,
 * once, covers every call site, including ones written later.
 *
 * Start-up errors reach stderr whatever the sink: while main has the mirror
 * on (log_set_stderr_mirror, from before the server is built until it runs),
 * every error line written to a file or syslog is also written to stderr in
 * text form, so an operator (or systemd's journal) sees why the broker did
 * not start even when log.file is set.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define AN_LOG_MIN(a, b) ((a) < (b) ? (a) : (b))

static struct {
    _Atomic int fd;
    _Atomic int level; /* log_set_level: any thread (a reload) */
    char path[256];
    int json;
    int use_syslog;
    _Atomic int mirror; /* errors also to stderr (start-up) */
} sink = {2, AN_LOG_INFO, "", 0, 0, 0};

static const char *level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return AN_LOG_WARN;
    return -1;
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int log_open(const char *path, int level)
{
    sink.level = level;
    if (path == NULL || path[0] == '\0') {
        sink.path[0] = '\0';
        atomic_store(&sink.fd, 2);
        return 0;
    }
    int fd = open_path(path);
    if (fd < 0)
        return -1;
    snprintf(sink.path, sizeof(sink.path), "%s", path);
    int old = atomic_exchange(&sink.fd, fd);
    if (old > 2)
        close(old);
    return 0;
}

int log_reopen(void)
{
    if (sink.path[0] == '\0')
        return 0;
    int fd = open_path(sink.path);
    if (fd < 0)
        return -1;
    int rc = dup3(fd, atomic_load(&sink.fd), O_CLOEXEC);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc < 0 ? -1 : 0;
}

int log_set_output(int json, int use_syslog)
{
    sink.json = json;
    if (use_syslog && !sink.use_syslog)
        openlog("antenna", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    sink.use_syslog = use_syslog;
    return 0;
}

void log_close(void)
{
    if (sink.use_syslog) {
        closelog();
        sink.use_syslog = 0;
    }
    int old = atomic_exchange(&sink.fd, 2);
    if (old > 2)
        close(old);
}

void log_set_level(int level)
{
    atomic_store(&sink.level, level);
}

int log_enabled(int level)
{
    return level <= sink.level;
}

/* Append s as a JSON string body (no quotes) to buf[*n..cap-1): whole
 * escapes and whole UTF-8 characters only, so a value cut for room is
 * still valid JSON text. */
static void json_escape(char *buf, size_t *n, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    while (*s && *n + 7 < cap) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char)ch;
        } else if (ch == '\n') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = 'n';
        } else if (ch < 0x20 || ch == 0x7f) { /* DEL too: a terminal reads it */
            memcpy(buf + *n, "\\u00", 4);
            *n += 4;
            buf[(*n)++] = hex[ch >> 4];
            buf[(*n)++] = hex[ch & 15];
        } else if (ch >= 0xc0) { /* a character's bytes together, or none */
            size_t len = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : 2, k = 1;
            while (k < len && ((unsigned char)s[k] & 0xc0) == 0x80)
                k++;
            memcpy(buf + *n, s, k);
            *n += k;
            s += k;
            continue;
        } else {
            buf[(*n)++] = (char)ch;
        }
        s++;
    }
}

/* Append s to buf[*n..cap-1) with control bytes as \xNN (whole escapes
 * only: one that does not fit ends the text). */
static void append_escaped(char *buf, size_t *n, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *n + 1 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != 0x7f) {
            buf[(*n)++] = (char)ch;
            continue;
        }
        if (*n + 5 >= cap)
            break;
        buf[(*n)++] = '\\';
        buf[(*n)++] = 'x';
        buf[(*n)++] = hex[ch >> 4];
        buf[(*n)++] = hex[ch & 15];
    }
}

static void append(char *buf, size_t *n, size_t cap, const char *s)
{
    if (*n + 1 >= cap)
        return;
    size_t l = strlen(s), room = cap - *n - 1;
    if (l > room)
        l = room;
    memcpy(buf + *n, s, l);
    *n += l;
}

void log_set_stderr_mirror(int on)
{
    atomic_store(&sink.mirror, on);
}

/* The text form of an error for stderr: "antenna: <message>". */
static void mirror_error(const char *msg)
{
    char line[1100];
    size_t n = 0;
    append(line, &n, sizeof(line), "antenna: ");
    append_escaped(line, &n, sizeof(line), msg);
    line[n++] = '\n';
    ssize_t w = write(2, line, n);
    (void)w;
}

#define FIELD_MAX 300 /* bytes of one field's JSON value (client ids run to 64 KB) */

/* ,"key":"value" of a JSON line; nothing for NULL.  A value takes at most
 * `max` bytes, and leaves `keep` bytes of the line (the closing brace and
 * what follows). */
static void json_field(char *buf, size_t *n, size_t cap, size_t keep, size_t max, const char *key,
                       const char *val)
{
    if (val == NULL || *n + strlen(key) + 8 + keep >= cap)
        return;
    append(buf, n, cap, ",\"");
    append(buf, n, cap, key);
    append(buf, n, cap, "\":\"");
    json_escape(buf, n, AN_LOG_MIN(cap - keep, *n + max), val);
    append(buf, n, cap, "\"");
}

void log_vev(int level, const log_fields_t *f, const char *fmt, va_list ap)
{
    if (level > sink.level)
        return;
    static const log_fields_t none;
    if (f == NULL)
        f = &none;
    char msg[1024];
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (m < 0)
        msg[0] = '\0';
    char line[4096]; /* 7 fields of FIELD_MAX, a message of 1 KB escaped */
    size_t n = 0;
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char ts[96];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    if (sink.json) {
        append(line, &n, sizeof(line), "{\"ts\":\"");
        append(line, &n, sizeof(line), ts);
        append(line, &n, sizeof(line), "\",\"level\":\"");
        append(line, &n, sizeof(line), level_names[level]);
        append(line, &n, sizeof(line), "\"");
        /* the short fields first: a long message cannot push them out */
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "event", f->event);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "client_id", f->client_id);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "username", f->username);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "peer", f->peer);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "listener", f->listener);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "reason", f->reason);
        json_field(line, &n, sizeof(line), 64, FIELD_MAX, "backend", f->backend);
        json_field(line, &n, sizeof(line), 4, sizeof(line), "msg", msg);
        append(line, &n, sizeof(line), "}");
    } else if (sink.use_syslog) {
        append_escaped(line, &n, sizeof(line), msg); /* syslog stamps its own time */
    } else {
        append(line, &n, sizeof(line), ts);
        append(line, &n, sizeof(line), " ");
        char lv[8];
        snprintf(lv, sizeof(lv), "%-5s ", level_names[level]);
        append(line, &n, sizeof(line), lv);
        append_escaped(line, &n, sizeof(line), msg);
    }
    int saved = errno;
    if (sink.use_syslog) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        line[n] = '\0';
        syslog(prio[level], "%s", line);
    } else {
        line[n++] = '\n';
        ssize_t w = write(atomic_load(&sink.fd), line, n);
        (void)w;
    }
    if (level == AN_LOG_ERROR && atomic_load(&sink.mirror) &&
        (sink.use_syslog || atomic_load(&sink.fd) != 2))
        mirror_error(msg);
    errno = saved;
}

void log_ev(int level, const log_fields_t *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vev(level, f, fmt, ap);
    va_end(ap);
}

void log_vkv(int level, const char *client_id, const char *peer, const char *fmt, va_list ap)
{
    log_fields_t f = {.client_id = client_id, .peer = peer};
    log_vev(level, &f, fmt, ap);
}

const char *log_slug(const char *name, char *buf, size_t size)
{
    size_t n = 0;
    int gap = 0;
    for (; *name && n + 2 < size; name++) {
        char ch = *name;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
            if (gap && n)
                buf[n++] = '_';
            buf[n++] = ch;
            gap = 0;
        } else {
            gap = 1;
        }
    }
    buf[n] = '\0';
    return buf;
}

void log_kv(int level, const char *client_id, const char *peer, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vkv(level, client_id, peer, fmt, ap);
    va_end(ap);
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vkv(level, NULL, NULL, fmt, ap);
    va_end(ap);
}

int log_limit_pass(log_limit_t *l, uint32_t interval_ms, uint64_t *suppressed)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t next = atomic_load_explicit(&l->next_ms, memory_order_relaxed);
    /* one thread wins the slot of this interval; the others count */
    if (now < next || !atomic_compare_exchange_strong(&l->next_ms, &next, now + interval_ms)) {
        atomic_fetch_add_explicit(&l->suppressed, 1, memory_order_relaxed);
        return 0;
    }
    *suppressed = atomic_exchange(&l->suppressed, 0);
    return 1;
}

static void limited_vev(log_limit_t *l, uint32_t interval_ms, int level, const log_fields_t *f,
                        const char *fmt, va_list ap)
{
    uint64_t suppressed = 0;
    if (!log_enabled(level) || !log_limit_pass(l, interval_ms, &suppressed))
        return;
    char msg[1024];
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (m < 0)
        msg[0] = '\0';
    if (suppressed) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof(msg) - n, " (%" PRIu64 " similar lines suppressed)", suppressed);
    }
    log_ev(level, f, "%s", msg);
}

void log_limited_ev(log_limit_t *l, uint32_t interval_ms, int level, const log_fields_t *f,
                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    limited_vev(l, interval_ms, level, f, fmt, ap);
    va_end(ap);
}

void log_limited_kv(log_limit_t *l, uint32_t interval_ms, int level, const char *client_id,
                    const char *peer, const char *fmt, ...)
{
    log_fields_t f = {.client_id = client_id, .peer = peer};
    va_list ap;
    va_start(ap, fmt);
    limited_vev(l, interval_ms, level, &f, fmt, ap);
    va_end(ap);
}
