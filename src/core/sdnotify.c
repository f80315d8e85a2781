/* sdnotify.c -- the sd_notify protocol without libsystemd.
 *
 * A service of Type=notify tells systemd that it is ready (after its
 * listeners are open and its workers run), that it reloads (SIGHUP), that
 * it stops, and, when the unit sets WatchdogSec=, that it is alive.  The
 * protocol is one datagram of text "KEY=VALUE\n..." to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or an abstract name when it starts with
 * '@').  It is small enough that linking libsystemd for it would add more
 * than it saves; nothing here runs unless the variable is set.
 */
#include "sdnotify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sdnotify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    size_t len = strlen(path);
    struct sockaddr_un sa;
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        errno = EINVAL;
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 1;
}

uint64_t sdnotify_watchdog_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    if (usec == NULL)
        return 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    char *end;
    unsigned long long v = strtoull(usec, &end, 10);
    if (*end != '\0' || v == 0)
        return 0;
    return v / 1000u ? v / 1000u : 1;
}
