/* redis_srv.h -- a real redis-server for the unit tests that talk to Redis
 * (test_auth_redis.c, test_store_redis.c): on a free loopback port, in a
 * temporary directory, killed with the test (PR_SET_PDEATHSIG), its output
 * kept out of ctest's pipe.  Header-only (static functions): each test is
 * one translation unit.  Include after cmocka.h.
 *
 *   redis_srv_t s = {0};
 *   redis_srv_init(&s, "antenna-store-redis");        // temp dir, free port
 *   redis_srv_start(&s, (const char *[]){"--appendonly", "yes", NULL});
 *   ... s.port ...
 *   redis_srv_kill(&s);                                // SIGKILL, waited for
 *   redis_srv_cleanup(&s);                             // kill, remove the dir
 */
#ifndef ANTENNA_TEST_REDIS_SRV_H
#define ANTENNA_TEST_REDIS_SRV_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    pid_t pid;
    uint16_t port;
    char dir[96];
} redis_srv_t;

static inline uint16_t redis_srv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A temporary directory named after `name` and a free port. */
static inline void redis_srv_init(redis_srv_t *s, const char *name)
{
    snprintf(s->dir, sizeof(s->dir), "/tmp/%s-XXXXXX", name);
    assert_non_null(mkdtemp(s->dir));
    s->port = redis_srv_free_port();
    s->pid = 0;
}

/* It answers PING (PONG, or NOAUTH with a password set). */
static inline int redis_srv_up(const redis_srv_t *s)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    int up = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        up = r != NULL && r->type != REDIS_REPLY_NIL;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return up;
}

/* Start it on s->port (the same across restarts) with the NULL-terminated
 * extra arguments, and wait (at most 15 s) until it answers. */
static inline void redis_srv_start(redis_srv_t *s, const char *const *extra)
{
    char port[16], log[128];
    const char *argv[32];
    int n = 0;
    snprintf(port, sizeof(port), "%u", s->port);
    snprintf(log, sizeof(log), "%s/redis.log", s->dir);
    const char *base[] = {"redis-server", "--port", port, "--bind",    "127.0.0.1", "--dir",
                          s->dir,         "--save", "",   "--logfile", log};
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        argv[n++] = base[i];
    for (; extra && *extra && n < 31; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { /* never hold ctest's output pipe open */
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 1500 && !redis_srv_up(s); i++) /* 15 s */
        usleep(10 * 1000);
    if (!redis_srv_up(s))
        fail_msg("redis-server did not start on port %u", s->port);
}

static inline void redis_srv_kill(redis_srv_t *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static inline int redis_srv_rm(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static inline void redis_srv_cleanup(redis_srv_t *s)
{
    redis_srv_kill(s);
    nftw(s->dir, redis_srv_rm, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
