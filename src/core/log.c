/* log.c -- leveled log lines to stderr or a file.
 *
 * The sink is a file descriptor and a level, set by main before any worker
 * starts; log_reopen() swaps the descriptor atomically so a worker writing
 * during a SIGHUP rotation writes to the old or the new file, never to a
 * closed one that was reused.  Each line is one write(2) (O_APPEND).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct {
    _Atomic int fd;
    int level;
    char path[256];
} sink = {2, AN_LOG_INFO, ""};

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
    int old = atomic_exchange(&sink.fd, fd);
    if (old > 2)
        close(old);
    return 0;
}

void log_close(void)
{
    int old = atomic_exchange(&sink.fd, 2);
    if (old > 2)
        close(old);
}

int log_enabled(int level)
{
    return level <= sink.level;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > sink.level)
        return;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    int saved = errno;
    ssize_t w = write(atomic_load(&sink.fd), line, len);
    (void)w;
    errno = saved;
}
