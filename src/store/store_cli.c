/* store_cli.c -- `antenna store ACTION DIR ...`: the operator's view of a
 * broker's RocksDB store (store.h, key layout and records in store_rec.h).
 *
 *   inspect DIR [--sessions] [--retained] [--prefix P] [--json]
 *   export  DIR FILE            a portable backup (FILE "-": stdout)
 *   import  DIR FILE [--force]  restore one (FILE "-": stdin)
 *   compact DIR                 give the space of deleted entries back
 *   expire  DIR                 store_expire() now
 *   generate DIR --retained N --sessions M [--subs K] [--queued Q]
 *            [--payload B]      synthetic records, for tests and benchmarks
 *
 * Every action opens the store through store_open(), so it takes the
 * store's LOCK: a store that a broker holds is refused (STORE_EBUSY, the
 * message names the path), and while the tool runs no broker can write to
 * it, which is what makes an export a consistent snapshot (it is also one
 * RocksDB iterator, itself a snapshot).  A wrong format version is refused
 * by store_open() too.  inspect, export, compact and expire never create a
 * store: DIR must already hold one (its CURRENT file).
 *
 * Export format: JSON lines, one record per line.  Line 1 is the header
 *   {"antenna_store_export":1,"store_format":1,"created":UNIX_S,"source":DIR}
 * then one line per stored record, in key order, with every byte field
 * (topic, client id, filter, props, payload) in standard base64:
 *   {"type":"retained","topic":B64,"qos":Q,"flags":F,"expiry":S,"props":B64,"payload":B64}
 *   {"type":"session","client_id":B64,"flags":F,"expiry_interval":S,
 *    "expiry_deadline":S,"next_pid":P,"subs":[{"filter":B64,"options":O,"sub_id":I}..]
 *    [,"owner":B64|null]}    (owner: absent when not known, null for none)
 *   {"type":"message","client_id":B64,"seq":N,"state":S,"qos":Q,"retain":B,"dup":B,
 *    "pid":P,"expiry":S,"topic":B64,"props":B64,"payload":B64
 *    [,"id_epoch":HEX16,"id_seq":N]}  (the publish id, msg.h: only a message that
 *    has one, a 'Q' version 2 record; the epoch is 16 hex digits, as a
 *    random u64 does not fit JSON's integers; an export without them, an
 *    older one, imports as before)
 *   {"type":"incoming","client_id":B64,"pid":P}
 * and last {"type":"end","records":N}, so a truncated file is detected.
 * Field meanings are store_rec.h's.  Import is all or nothing: every line is
 * parsed, range-checked (by the record encoders themselves) and added to
 * one batch before the store is even opened; the first bad line is reported
 * with its number and nothing is written.  The batch is then submitted once
 * with sync=always.  A store that already holds records is refused unless
 * --force, which makes the store's records exactly the file's (the batch
 * starts with range deletions of r/ s/ q/ i/).  The batch holds the whole
 * backup in memory (about the export's size, once more inside RocksDB).
 *
 * A Redis store (persistence.backend: redis) is named by its url instead of
 * DIR, "redis://host:6379/0?prefix=antenna:n1:" (open_redis()); every action
 * works on it, without the LOCK's protection (see open_redis()).
 *
 * Exit status (cli.h): 0 success, 1 an error that was printed, 2 usage.
 */
#include "store_cli.h"

#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"
#include "redis_url.h"
#include "store.h"
#include "store_rec.h"
#include "util.h"

#define EXPORT_VERSION 1
#define GEN_BATCH 20000u

static const char usage_text[] =
    "Usage: antenna store ACTION DIR [args]\n"
    "\n"
    "  inspect DIR [--sessions] [--retained] [--prefix P] [--json]\n"
    "        list sessions (client id, expiry, subscriptions, queued and inflight\n"
    "        messages, QoS 2 ids) and retained messages (topic, qos, payload size,\n"
    "        expiry) and a summary; --prefix keeps client ids and topics starting\n"
    "        with P\n"
    "  export DIR FILE          write a backup (JSON lines; FILE - is stdout)\n"
    "  import DIR FILE [--force]\n"
    "        restore a backup into DIR (FILE - is stdin); a store that holds\n"
    "        records is refused unless --force, which replaces its records\n"
    "  compact DIR              compact the store (space of deleted records)\n"
    "  expire DIR               remove expired sessions and messages now\n"
    "  generate DIR --retained N --sessions M [--subs K] [--queued Q] [--payload B]\n"
    "        write synthetic records (topics site/NNN/dev/NNNN/temp, client ids\n"
    "        gen-NNNNNNN), for tests and benchmarks\n"
    "\n"
    "DIR may be a Redis store (persistence.backend: redis): redis://[user:pass@]\n"
    "host[:port][/db][?prefix=P] or unix:/path[?prefix=P], P the store's key\n"
    "prefix (default antenna:default:; antenna:NODE: in a cluster).\n"
    "The broker must not be running on DIR. Exit status: 0 ok, 1 error, 2 usage.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "antenna store: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_text);
    return 2;
}

/* ---- opening ------------------------------------------------------------ */

/* A Redis store instead of a directory: "redis://...[?prefix=P]" or
 * "unix:/path[?prefix=P]" (persistence.redis.url; P the resolved
 * persistence.redis.prefix, default antenna:default:).  Opening it takes
 * the store's lock (store_redis.c), as a broker does: a store a broker is
 * running on is refused. */
static int is_redis(const char *dir)
{
    return strncmp(dir, "redis://", 8) == 0 || strncmp(dir, "unix:", 5) == 0 ||
           strncmp(dir, "redis-sentinel://", 17) == 0;
}

/* DIR as an export names its source: a Redis url without its credentials. */
static void source_text(const char *dir, char *out, size_t size)
{
    char url[1024], err[256];
    redis_url_t a;
    const char *q = is_redis(dir) ? strstr(dir, "?prefix=") : NULL;
    size_t ul = q ? (size_t)(q - dir) : strlen(dir);
    if (!is_redis(dir) || ul >= sizeof(url)) {
        snprintf(out, size, "%s", dir);
        return;
    }
    memcpy(url, dir, ul);
    url[ul] = '\0';
    if (redis_url_parse(url, &a, err, sizeof(err)) != 0)
        snprintf(out, size, "(a Redis url)");
    else
        snprintf(out, size, "%s%s", a.display, q ? q : "");
}

static store_t *open_redis(const char *dir, store_sync_t sync)
{
    char url[1024], err[768];
    const char *q = strstr(dir, "?prefix=");
    size_t ul = q ? (size_t)(q - dir) : strlen(dir);
    if (ul >= sizeof(url)) {
        fprintf(stderr, "antenna store: the Redis url is too long\n");
        return NULL;
    }
    memcpy(url, dir, ul);
    url[ul] = '\0';
    signal(SIGPIPE, SIG_IGN); /* a Redis that goes away: an error, not death */
    store_opts_t o = {.backend = STORE_BACKEND_REDIS,
                      .path = q ? q + 8 : "antenna:default:",
                      .sync = sync,
                      .sync_interval_ms = 1000,
                      .redis_url = url,
                      .redis_prefix = q ? q + 8 : "antenna:default:",
                      .redis_keep_state = 1};
    store_t *s = store_open(&o, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "antenna store: %s\n", err);
    return s;
}

/* Opens DIR's store; must_exist: refuse to create one.  Prints the error. */
static store_t *open_store(const char *dir, int must_exist, store_sync_t sync)
{
    char err[768];
    if (is_redis(dir))
        return open_redis(dir, sync);
    if (must_exist) {
        char cur[4096];
        struct stat st;
        snprintf(cur, sizeof(cur), "%s/CURRENT", dir);
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "antenna store: '%s': no such directory\n", dir);
            return NULL;
        }
        if (stat(cur, &st) != 0) {
            fprintf(stderr, "antenna store: '%s': not a store (no CURRENT file)\n", dir);
            return NULL;
        }
    }
    store_opts_t o = {
        .backend = STORE_BACKEND_ROCKSDB, .path = dir, .sync = sync, .sync_interval_ms = 1000};
    store_t *s = store_open(&o, err, sizeof(err));
    if (s == NULL) {
        fprintf(stderr, "antenna store: %s\n", err);
        if (strstr(err, "Corruption"))
            fprintf(stderr,
                    "antenna store: '%s' is damaged; `antenna --config FILE --recover` "
                    "starts the broker on it and keeps what can be read\n",
                    dir);
        if (strstr(err, "LOCK held"))
            fprintf(stderr, "antenna store: is a broker running on '%s'? Stop it first.\n", dir);
    }
    return s;
}

/* Bytes of the regular files directly in dir (a RocksDB directory is flat). */
static uint64_t dir_bytes(const char *dir)
{
    uint64_t total = 0;
    DIR *d = is_redis(dir) ? NULL : opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

static int has_prefix(const uint8_t *p, size_t n, const char *prefix, size_t plen)
{
    return n >= plen && memcmp(p, prefix, plen) == 0;
}

/* ---- inspect ------------------------------------------------------------ */

typedef struct {
    uint8_t *cid;
    size_t cid_len;
    uint8_t *val; /* the raw 'S' record, decoded when printed */
    size_t vl;
    uint32_t queued, inflight;
    uint16_t *pids;
    size_t npids, pids_cap;
} isess_t;

typedef struct {
    int json, want_sessions, want_retained;
    const char *prefix;
    size_t prefix_len;
    isess_t *sess;
    size_t nsess, sess_cap;
    uint64_t now_s;
    /* summary */
    uint64_t sessions, subs, queued, inflight, qos2, orphans, retained, retained_payload;
    uint64_t unreadable;
    int first; /* JSON: no comma before the next element */
} inspect_t;

static int cid_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

static isess_t *find_sess(inspect_t *in, const uint8_t *cid, size_t len)
{
    size_t lo = 0, hi = in->nsess;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cid_cmp(in->sess[mid].cid, in->sess[mid].cid_len, cid, len);
        if (c == 0)
            return &in->sess[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A byte field as a JSON string when it is UTF-8, else as KEY_b64. */
static void json_bytes(json_t *o, const char *key, const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    if (s) {
        json_object_set_new(o, key, s);
        return;
    }
    char k[64];
    char *b = b64_encode_alloc(p, n);
    snprintf(k, sizeof(k), "%s_b64", key);
    json_object_set_new(o, k, json_string(b));
    free(b);
}

/* Text: printable ASCII as is, the rest as \xNN. */
static void print_bytes(const uint8_t *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            putchar(p[i]);
        else
            printf("\\x%02x", p[i]);
    }
    putchar('"');
}

static const char *when(uint64_t s, uint64_t now_s, char *buf, size_t len)
{
    if (s == 0)
        return "never";
    time_t t = (time_t)s;
    struct tm tm;
    char ts[32];
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (s <= now_s)
        snprintf(buf, len, "%s (expired)", ts);
    else
        snprintf(buf, len, "%s (in %" PRIu64 " s)", ts, s - now_s);
    return buf;
}

static void json_element(inspect_t *in, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n    %s", in->first ? "" : ",", s);
    in->first = 0;
    free(s);
    json_decref(o);
}

static int collect_session(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    inspect_t *in = ud;
    store_key_info_t ki;
    if (store_key_parse(k, kl, &ki) != 0) {
        in->unreadable++;
        return 0;
    }
    if (in->nsess == in->sess_cap) {
        in->sess_cap = AN_MAX(in->sess_cap * 2, (size_t)64);
        in->sess = an_realloc(in->sess, in->sess_cap * sizeof(*in->sess));
    }
    isess_t *s = &in->sess[in->nsess++];
    memset(s, 0, sizeof(*s));
    s->cid = an_malloc(ki.name_len + 1);
    memcpy(s->cid, ki.name, ki.name_len);
    s->cid_len = ki.name_len;
    s->val = an_malloc(vl + 1);
    memcpy(s->val, v, vl);
    s->vl = vl;
    return 0;
}

static int count_queue(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    inspect_t *in = ud;
    store_key_info_t ki;
    store_outmsg_t m;
    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_outmsg(v, vl, &m) != 0) {
        in->unreadable++;
        return 0;
    }
    if (!has_prefix(ki.name, ki.name_len, in->prefix, in->prefix_len))
        return 0;
    isess_t *s = find_sess(in, ki.name, ki.name_len);
    if (s == NULL) {
        in->orphans++;
        return 0;
    }
    if (m.state == STORE_OUT_QUEUED) {
        s->queued++;
        in->queued++;
    } else {
        s->inflight++;
        in->inflight++;
    }
    return 0;
}

static int count_incoming(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    inspect_t *in = ud;
    store_key_info_t ki;
    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_incoming(v, vl) != 0) {
        in->unreadable++;
        return 0;
    }
    if (!has_prefix(ki.name, ki.name_len, in->prefix, in->prefix_len))
        return 0;
    isess_t *s = find_sess(in, ki.name, ki.name_len);
    if (s == NULL) {
        in->orphans++;
        return 0;
    }
    if (s->npids == s->pids_cap) {
        s->pids_cap = AN_MAX(s->pids_cap * 2, (size_t)4);
        s->pids = an_realloc(s->pids, s->pids_cap * sizeof(*s->pids));
    }
    s->pids[s->npids++] = ki.pid;
    in->qos2++;
    return 0;
}

static void print_session(inspect_t *in, const isess_t *is)
{
    store_session_t r;
    char buf[96];
    if (store_rec_decode_session(is->val, is->vl, &r) != 0) {
        in->unreadable++;
        return;
    }
    in->sessions++;
    in->subs += r.nsubs;
    if (in->json) {
        json_t *o = json_object(), *subs = json_array(), *pids = json_array();
        json_bytes(o, "client_id", is->cid, is->cid_len);
        json_object_set_new(o, "expiry_interval", json_integer(r.expiry_interval));
        json_object_set_new(o, "expiry_deadline", json_integer((json_int_t)r.expiry_deadline));
        json_object_set_new(o, "next_pid", json_integer(r.next_pid));
        for (uint32_t i = 0; i < r.nsubs; i++) {
            json_t *sub = json_object();
            json_bytes(sub, "filter", r.subs[i].filter, r.subs[i].filter_len);
            json_object_set_new(sub, "qos", json_integer(r.subs[i].options & 3));
            json_object_set_new(sub, "no_local", json_boolean(r.subs[i].options & 4));
            json_object_set_new(sub, "retain_as_published", json_boolean(r.subs[i].options & 8));
            json_object_set_new(sub, "retain_handling", json_integer((r.subs[i].options >> 4) & 3));
            json_object_set_new(sub, "sub_id", json_integer(r.subs[i].sub_id));
            json_array_append_new(subs, sub);
        }
        json_object_set_new(o, "subscriptions", subs);
        json_object_set_new(o, "queued", json_integer(is->queued));
        json_object_set_new(o, "inflight", json_integer(is->inflight));
        for (size_t i = 0; i < is->npids; i++)
            json_array_append_new(pids, json_integer(is->pids[i]));
        json_object_set_new(o, "qos2_ids", pids);
        json_element(in, o);
    } else {
        printf("session ");
        print_bytes(is->cid, is->cid_len);
        if (r.expiry_interval == UINT32_MAX)
            printf(" expiry never");
        else
            printf(" expiry_interval %" PRIu32 " s, expires %s", r.expiry_interval,
                   r.expiry_deadline ? when(r.expiry_deadline, in->now_s, buf, sizeof(buf))
                                     : "(not set)");
        printf(", next_pid %u, queued %" PRIu32 ", inflight %" PRIu32 ", qos2_ids [", r.next_pid,
               is->queued, is->inflight);
        for (size_t i = 0; i < is->npids; i++)
            printf("%s%u", i ? " " : "", is->pids[i]);
        printf("]\n");
        for (uint32_t i = 0; i < r.nsubs; i++) {
            printf("  sub ");
            print_bytes(r.subs[i].filter, r.subs[i].filter_len);
            printf(" qos %u%s%s rh %u", r.subs[i].options & 3,
                   r.subs[i].options & 4 ? " no_local" : "", r.subs[i].options & 8 ? " rap" : "",
                   (r.subs[i].options >> 4) & 3);
            if (r.subs[i].sub_id)
                printf(" id %" PRIu32, r.subs[i].sub_id);
            printf("\n");
        }
    }
    store_rec_session_free(&r);
}

static int print_retained(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    inspect_t *in = ud;
    store_retained_t r;
    char buf[96];
    (void)k;
    (void)kl;
    if (store_rec_decode_retained(v, vl, &r) != 0) {
        in->unreadable++;
        return 0;
    }
    in->retained++;
    in->retained_payload += r.payload_len;
    if (in->json) {
        json_t *o = json_object();
        json_bytes(o, "topic", r.topic, r.topic_len);
        json_object_set_new(o, "qos", json_integer(r.qos));
        json_object_set_new(o, "payload_bytes", json_integer((json_int_t)r.payload_len));
        json_object_set_new(o, "props_bytes", json_integer((json_int_t)r.props_len));
        json_object_set_new(o, "expiry", json_integer((json_int_t)r.expiry));
        json_element(in, o);
    } else {
        printf("retained ");
        print_bytes(r.topic, r.topic_len);
        printf(" qos %u, payload %zu B, expires %s\n", r.qos, r.payload_len,
               when(r.expiry, in->now_s, buf, sizeof(buf)));
    }
    return 0;
}

static void free_inspect(inspect_t *in)
{
    for (size_t i = 0; i < in->nsess; i++) {
        free(in->sess[i].cid);
        free(in->sess[i].val);
        free(in->sess[i].pids);
    }
    free(in->sess);
}

static int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sessions", no_argument, NULL, 's'},     {"retained", no_argument, NULL, 'r'},
        {"prefix", required_argument, NULL, 'p'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    inspect_t in = {.prefix = "", .first = 1};
    int o, rc = 1;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            in.want_sessions = 1;
            break;
        case 'r':
            in.want_retained = 1;
            break;
        case 'p':
            in.prefix = optarg;
            break;
        case 'j':
            in.json = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage_error("inspect: bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error("inspect: %s", "needs DIR");
    const char *dir = argv[optind];
    if (!in.want_sessions && !in.want_retained)
        in.want_sessions = in.want_retained = 1;
    in.prefix_len = strlen(in.prefix);
    in.now_s = an_wall_ms() / 1000u;

    store_t *s = open_store(dir, 1, STORE_SYNC_NONE);
    if (s == NULL)
        return 1;
    size_t plen = 2 + in.prefix_len;
    char *pfx = an_malloc(plen + 1);
    int err = 0;
    if (in.json) {
        json_t *d = json_string(dir);
        char *ds = json_dumps(d, JSON_ENCODE_ANY);
        printf("{\"store\": %s", ds);
        free(ds);
        json_decref(d);
    }
    if (in.want_sessions) {
        snprintf(pfx, plen + 1, "s/%s", in.prefix);
        if ((err = store_scan(s, pfx, plen, collect_session, &in)) < 0 ||
            (err = store_scan(s, "q/", 2, count_queue, &in)) < 0 ||
            (err = store_scan(s, "i/", 2, count_incoming, &in)) < 0)
            goto out;
        if (in.json)
            printf(",\n  \"sessions\": [");
        in.first = 1;
        for (size_t i = 0; i < in.nsess; i++)
            print_session(&in, &in.sess[i]);
        if (in.json)
            printf("%s]", in.first ? "" : "\n  ");
    }
    if (in.want_retained) {
        snprintf(pfx, plen + 1, "r/%s", in.prefix);
        if (in.json)
            printf(",\n  \"retained\": [");
        in.first = 1;
        if ((err = store_scan(s, pfx, plen, print_retained, &in)) < 0)
            goto out;
        if (in.json)
            printf("%s]", in.first ? "" : "\n  ");
    }
    store_stats_t st;
    store_stats(s, &st);
    uint64_t disk = dir_bytes(dir);
    if (in.json) {
        json_t *sum = json_pack(
            "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I}}", "sessions",
            (json_int_t)in.sessions, "subscriptions", (json_int_t)in.subs, "queued",
            (json_int_t)in.queued, "inflight", (json_int_t)in.inflight, "qos2_ids",
            (json_int_t)in.qos2, "orphaned", (json_int_t)in.orphans, "retained",
            (json_int_t)in.retained, "retained_payload_bytes", (json_int_t)in.retained_payload,
            "unreadable", (json_int_t)in.unreadable, "disk_bytes", (json_int_t)disk, "store_stats",
            "batches_committed", (json_int_t)st.batches_committed, "commits",
            (json_int_t)st.commits, "bytes_written", (json_int_t)st.bytes_written, "syncs",
            (json_int_t)st.syncs, "write_errors", (json_int_t)st.write_errors);
        char *ss = json_dumps(sum, JSON_COMPACT);
        printf(",\n  \"summary\": %s\n}\n", ss);
        free(ss);
        json_decref(sum);
    } else {
        printf("summary: store '%s'%s%s%s\n", dir, in.prefix_len ? " (prefix \"" : "", in.prefix,
               in.prefix_len ? "\")" : "");
        if (in.want_sessions)
            printf("  sessions %" PRIu64 ", subscriptions %" PRIu64 ", queued messages %" PRIu64
                   ", inflight %" PRIu64 ", qos2 ids %" PRIu64 ", orphaned %" PRIu64 "\n",
                   in.sessions, in.subs, in.queued, in.inflight, in.qos2, in.orphans);
        if (in.want_retained)
            printf("  retained %" PRIu64 " (payload %" PRIu64 " bytes)\n", in.retained,
                   in.retained_payload);
        printf("  unreadable records %" PRIu64 ", on disk %" PRIu64 " bytes\n", in.unreadable,
               disk);
        printf("  store_stats: batches_committed %" PRIu64 ", commits %" PRIu64
               ", bytes_written %" PRIu64 ", syncs %" PRIu64 ", write_errors %" PRIu64 "\n",
               st.batches_committed, st.commits, st.bytes_written, st.syncs, st.write_errors);
    }
    rc = 0;
out:
    if (err < 0) {
        fflush(stdout);
        fprintf(stderr, "antenna store: reading '%s': %s\n", dir, store_strerror(err));
    }
    free(pfx);
    free_inspect(&in);
    store_close(s);
    return rc;
}

/* ---- export ------------------------------------------------------------- */

typedef struct {
    FILE *out;
    uint64_t records;
    char err[256];
} export_t;

static void set_b64(json_t *o, const char *key, const uint8_t *p, size_t n)
{
    char *b = b64_encode_alloc(p, n);
    json_object_set_new(o, key, json_string(b));
    free(b);
}

static int export_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    export_t *ex = ud;
    store_key_info_t ki;
    json_t *o = json_object();
    int rc = 0;

    if (store_key_parse(k, kl, &ki) != 0) {
        snprintf(ex->err, sizeof(ex->err), "record %" PRIu64 ": unreadable key", ex->records + 1);
        rc = 1;
        goto out;
    }
    switch (ki.kind) {
    case STORE_KEY_META:
        goto out; /* the format version: the header carries it */
    case STORE_KEY_RETAINED: {
        store_retained_t r;
        if (store_rec_decode_retained(v, vl, &r) != 0 || r.expiry > INT64_MAX)
            goto bad;
        json_object_set_new(o, "type", json_string("retained"));
        set_b64(o, "topic", r.topic, r.topic_len);
        json_object_set_new(o, "qos", json_integer(r.qos));
        json_object_set_new(o, "flags", json_integer(r.flags));
        json_object_set_new(o, "expiry", json_integer((json_int_t)r.expiry));
        set_b64(o, "props", r.props, r.props_len);
        set_b64(o, "payload", r.payload, r.payload_len);
        break;
    }
    case STORE_KEY_SESSION: {
        store_session_t r;
        if (store_rec_decode_session(v, vl, &r) != 0)
            goto bad;
        if (r.expiry_deadline > INT64_MAX) {
            store_rec_session_free(&r);
            goto bad;
        }
        json_t *subs = json_array();
        json_object_set_new(o, "type", json_string("session"));
        set_b64(o, "client_id", ki.name, ki.name_len);
        json_object_set_new(o, "flags", json_integer(r.flags));
        json_object_set_new(o, "expiry_interval", json_integer(r.expiry_interval));
        json_object_set_new(o, "expiry_deadline", json_integer((json_int_t)r.expiry_deadline));
        json_object_set_new(o, "next_pid", json_integer(r.next_pid));
        for (uint32_t i = 0; i < r.nsubs; i++) {
            json_t *sub = json_object();
            set_b64(sub, "filter", r.subs[i].filter, r.subs[i].filter_len);
            json_object_set_new(sub, "options", json_integer(r.subs[i].options));
            json_object_set_new(sub, "sub_id", json_integer(r.subs[i].sub_id));
            json_array_append_new(subs, sub);
        }
        json_object_set_new(o, "subs", subs);
        if (r.owner && r.owner_known)
            set_b64(o, "owner", r.owner, r.owner_len);
        else if (r.owner_known)
            json_object_set_new(o, "owner", json_null());
        store_rec_session_free(&r);
        break;
    }
    case STORE_KEY_QUEUE: {
        store_outmsg_t m;
        if (store_rec_decode_outmsg(v, vl, &m) != 0 || m.expiry > INT64_MAX || ki.seq > INT64_MAX)
            goto bad;
        json_object_set_new(o, "type", json_string("message"));
        set_b64(o, "client_id", ki.name, ki.name_len);
        json_object_set_new(o, "seq", json_integer((json_int_t)ki.seq));
        json_object_set_new(o, "state", json_integer(m.state));
        json_object_set_new(o, "qos", json_integer(m.qos));
        json_object_set_new(o, "retain", json_boolean(m.retain));
        json_object_set_new(o, "dup", json_boolean(m.dup));
        json_object_set_new(o, "pid", json_integer(m.pid));
        json_object_set_new(o, "expiry", json_integer((json_int_t)m.expiry));
        set_b64(o, "topic", m.topic, m.topic_len);
        set_b64(o, "props", m.props, m.props_len);
        set_b64(o, "payload", m.payload, m.payload_len);
        if (m.id_seq != 0) { /* its publish id: the import writes it back */
            char hex[17];
            snprintf(hex, sizeof(hex), "%016" PRIx64, m.id_epoch);
            json_object_set_new(o, "id_epoch", json_string(hex));
            json_object_set_new(o, "id_seq", json_integer(m.id_seq));
        }
        break;
    }
    case STORE_KEY_INCOMING:
        if (store_rec_decode_incoming(v, vl) != 0)
            goto bad;
        json_object_set_new(o, "type", json_string("incoming"));
        set_b64(o, "client_id", ki.name, ki.name_len);
        json_object_set_new(o, "pid", json_integer(ki.pid));
        break;
    default:
        goto bad;
    }
    if (json_dumpf(o, ex->out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', ex->out) == EOF) {
        snprintf(ex->err, sizeof(ex->err), "write error");
        rc = 1;
        goto out;
    }
    ex->records++;
    goto out;
bad:
    snprintf(ex->err, sizeof(ex->err),
             "record %" PRIu64 " (key kind '%c') is malformed; "
             "`antenna store inspect` counts unreadable records",
             ex->records + 1, ki.kind ? ki.kind : '0');
    rc = 1;
out:
    json_decref(o);
    return rc;
}

static int cmd_export(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (argc != 3)
        return usage_error("export: %s", "needs DIR FILE");
    const char *dir = argv[1], *file = argv[2];
    int to_stdout = strcmp(file, "-") == 0;
    char tmp[4096];
    export_t ex = {0};
    int rc = 1;

    store_t *s = open_store(dir, 1, STORE_SYNC_NONE);
    if (s == NULL)
        return 1;
    if (to_stdout) {
        ex.out = stdout;
    } else {
        snprintf(tmp, sizeof(tmp), "%s.tmp", file);
        if ((ex.out = fopen(tmp, "w")) == NULL) {
            fprintf(stderr, "antenna store: cannot write '%s': %m\n", tmp);
            goto out;
        }
    }
    char source[1400];
    source_text(dir, source, sizeof(source));
    json_t *hdr = json_pack("{s:i,s:i,s:I,s:s}", "antenna_store_export", EXPORT_VERSION,
                            "store_format", (int)STORE_FORMAT_VERSION, "created",
                            (json_int_t)(an_wall_ms() / 1000u), "source", source);
    json_dumpf(hdr, ex.out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', ex.out);
    json_decref(hdr);
    int err = store_scan(s, "", 0, export_one, &ex); /* one iterator: one snapshot */
    if (err < 0) {
        fprintf(stderr, "antenna store: reading '%s': %s\n", dir, store_strerror(err));
        goto out;
    }
    if (err > 0) {
        fprintf(stderr, "antenna store: export of '%s': %s\n", dir, ex.err);
        goto out;
    }
    fprintf(ex.out, "{\"type\":\"end\",\"records\":%" PRIu64 "}\n", ex.records);
    if (fflush(ex.out) != 0 || ferror(ex.out) || (!to_stdout && fsync(fileno(ex.out)) != 0)) {
        fprintf(stderr, "antenna store: writing '%s': %m\n", to_stdout ? "stdout" : tmp);
        goto out;
    }
    if (!to_stdout) {
        fclose(ex.out);
        ex.out = NULL;
        if (rename(tmp, file) != 0) {
            fprintf(stderr, "antenna store: cannot rename '%s' to '%s': %m\n", tmp, file);
            goto out;
        }
        fprintf(stderr, "antenna store: exported %" PRIu64 " records of '%s' to '%s'\n", ex.records,
                dir, file);
    }
    rc = 0;
out:
    if (ex.out && !to_stdout) {
        fclose(ex.out);
        unlink(tmp);
    }
    store_close(s);
    return rc;
}

/* ---- import ------------------------------------------------------------- */

typedef struct {
    char msg[256];
} ierr_t;

static int fail(ierr_t *e, const char *fmt, const char *what)
{
    snprintf(e->msg, sizeof(e->msg), fmt, what);
    return -1;
}

/* An integer field in 0..max. */
static int get_uint(json_t *o, const char *key, uint64_t max, uint64_t *out, ierr_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return fail(e, "field '%s' missing or not an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > max)
        return fail(e, "field '%s' out of range", key);
    *out = (uint64_t)i;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, ierr_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v))
        return fail(e, "field '%s' missing or not a boolean", key);
    *out = json_is_true(v);
    return 0;
}

/* A base64 field, decoded into a malloc'd buffer (the caller frees it). */
static int get_b64(json_t *o, const char *key, uint8_t **out, size_t *len, ierr_t *e)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return fail(e, "field '%s' missing or not a string", key);
    size_t n = json_string_length(v);
    uint8_t *buf = an_malloc(B64_DECODED_MAX(n) + 1); /* + 1: never malloc(0) */
    long dl = b64_decode(json_string_value(v), n, buf, B64_DECODED_MAX(n));
    if (dl < 0) {
        free(buf);
        return fail(e, "field '%s' is not valid base64", key);
    }
    *out = buf;
    *len = (size_t)dl;
    return 0;
}

static int check_fields(json_t *o, size_t n, ierr_t *e)
{
    if (json_object_size(o) != n)
        return fail(e, "%s", "unexpected or missing fields");
    return 0;
}

/* Adds one key/record, encoded by enc (which range-checks the fields). */
static int put_key(store_batch_t *b, const uint8_t *key, size_t kl, size_t vl, ierr_t *e,
                   void **val)
{
    if (kl == 0)
        return fail(e, "%s", "key out of range (empty or too long client id or topic)");
    if (vl == 0)
        return fail(e, "%s", "a field is out of range for the record");
    *val = store_batch_put_reserve(b, key, kl, vl);
    return 0;
}

static int import_retained(store_batch_t *b, json_t *o, uint8_t *key, ierr_t *e)
{
    uint8_t *topic = NULL, *props = NULL, *payload = NULL;
    uint64_t qos, flags, expiry;
    int rc = -1;
    store_retained_t r;
    void *val;
    if (check_fields(o, 7, e) || get_b64(o, "topic", &topic, &r.topic_len, e) ||
        get_b64(o, "props", &props, &r.props_len, e) ||
        get_b64(o, "payload", &payload, &r.payload_len, e) || get_uint(o, "qos", 2, &qos, e) ||
        get_uint(o, "flags", 255, &flags, e) || get_uint(o, "expiry", INT64_MAX, &expiry, e))
        goto out;
    r.qos = (uint8_t)qos;
    r.flags = (uint8_t)flags;
    r.expiry = expiry;
    r.topic = topic;
    r.props = props;
    r.payload = payload;
    size_t kl = store_key_retained(key, STORE_KEY_MAX, topic, r.topic_len);
    if (put_key(b, key, kl, store_rec_encode_retained(&r, NULL, 0), e, &val) == 0) {
        store_rec_encode_retained(&r, val, store_rec_encode_retained(&r, NULL, 0));
        rc = 0;
    }
out:
    free(topic);
    free(props);
    free(payload);
    return rc;
}

static int import_session(store_batch_t *b, json_t *o, uint8_t *key, ierr_t *e)
{
    uint8_t *cid = NULL, *owner = NULL;
    size_t cid_len;
    uint64_t flags, interval, deadline, pid;
    store_session_t r = {0};
    json_t *subs = json_object_get(o, "subs"), *ow = json_object_get(o, "owner");
    int rc = -1;
    void *val;
    if (ow) {
        r.owner_known = true;
        if (!json_is_null(ow) && get_b64(o, "owner", &owner, &r.owner_len, e))
            goto out;
        r.owner = owner;
    }
    if (check_fields(o, ow ? 8 : 7, e) || get_b64(o, "client_id", &cid, &cid_len, e) ||
        get_uint(o, "flags", 255, &flags, e) ||
        get_uint(o, "expiry_interval", UINT32_MAX, &interval, e) ||
        get_uint(o, "expiry_deadline", INT64_MAX, &deadline, e) ||
        get_uint(o, "next_pid", 65535, &pid, e))
        goto out;
    if (!json_is_array(subs) || json_array_size(subs) > UINT32_MAX) {
        fail(e, "%s", "field 'subs' missing or not an array");
        goto out;
    }
    r.flags = (uint8_t)flags;
    r.expiry_interval = (uint32_t)interval;
    r.expiry_deadline = deadline;
    r.next_pid = (uint16_t)pid;
    r.nsubs = (uint32_t)json_array_size(subs);
    r.subs = r.nsubs ? an_calloc(r.nsubs, sizeof(*r.subs)) : NULL;
    for (uint32_t i = 0; i < r.nsubs; i++) {
        json_t *sub = json_array_get(subs, i);
        uint64_t opt, id;
        uint8_t *f;
        if (!json_is_object(sub)) {
            fail(e, "%s", "an element of 'subs' is not an object");
            goto out;
        }
        if (check_fields(sub, 3, e) || get_b64(sub, "filter", &f, &r.subs[i].filter_len, e))
            goto out;
        r.subs[i].filter = f;
        if (get_uint(sub, "options", 255, &opt, e) || get_uint(sub, "sub_id", UINT32_MAX, &id, e))
            goto out;
        r.subs[i].options = (uint8_t)opt;
        r.subs[i].sub_id = (uint32_t)id;
    }
    size_t kl = store_key_session(key, STORE_KEY_MAX, cid, cid_len);
    size_t vl = store_rec_encode_session(&r, NULL, 0);
    if (put_key(b, key, kl, vl, e, &val) == 0) {
        store_rec_encode_session(&r, val, vl);
        rc = 0;
    }
out:
    for (uint32_t i = 0; r.subs && i < r.nsubs; i++)
        free((void *)r.subs[i].filter);
    free(r.subs);
    free(cid);
    free(owner);
    return rc;
}

/* The publish id of a message line, when it has one: both fields or
 * neither (an export of a message without one, or an older export). */
static int get_publish_id(json_t *o, store_outmsg_t *m, ierr_t *e)
{
    json_t *ep = json_object_get(o, "id_epoch");
    if (ep == NULL && json_object_get(o, "id_seq") == NULL)
        return check_fields(o, 12, e);
    uint64_t seq;
    if (check_fields(o, 14, e) || get_uint(o, "id_seq", UINT32_MAX, &seq, e))
        return -1;
    const char *hex = json_is_string(ep) ? json_string_value(ep) : NULL;
    if (hex == NULL || json_string_length(ep) != 16 || strspn(hex, "0123456789abcdef") != 16)
        return fail(e, "%s", "field 'id_epoch' is not 16 lowercase hex digits");
    if (seq == 0)
        return fail(e, "%s", "field 'id_seq' out of range");
    m->id_epoch = strtoull(hex, NULL, 16);
    m->id_seq = (uint32_t)seq;
    return 0;
}

static int import_message(store_batch_t *b, json_t *o, uint8_t *key, ierr_t *e)
{
    uint8_t *cid = NULL, *topic = NULL, *props = NULL, *payload = NULL;
    size_t cid_len;
    uint64_t seq, state, qos, pid, expiry;
    store_outmsg_t m = {0}; /* id_seq 0: no publish id (a version 1 record) */
    int rc = -1;
    void *val;
    if (get_publish_id(o, &m, e) || get_b64(o, "client_id", &cid, &cid_len, e) ||
        get_uint(o, "seq", INT64_MAX, &seq, e) || get_uint(o, "state", 3, &state, e) ||
        get_uint(o, "qos", 2, &qos, e) || get_bool(o, "retain", &m.retain, e) ||
        get_bool(o, "dup", &m.dup, e) || get_uint(o, "pid", 65535, &pid, e) ||
        get_uint(o, "expiry", INT64_MAX, &expiry, e) ||
        get_b64(o, "topic", &topic, &m.topic_len, e) ||
        get_b64(o, "props", &props, &m.props_len, e) ||
        get_b64(o, "payload", &payload, &m.payload_len, e))
        goto out;
    m.state = (uint8_t)state;
    m.qos = (uint8_t)qos;
    m.pid = (uint16_t)pid;
    m.expiry = expiry;
    m.topic = topic;
    m.props = props;
    m.payload = payload;
    size_t kl = store_key_queue(key, STORE_KEY_MAX, cid, cid_len, seq);
    size_t vl = store_rec_encode_outmsg(&m, NULL, 0);
    if (put_key(b, key, kl, vl, e, &val) == 0) {
        store_rec_encode_outmsg(&m, val, vl);
        rc = 0;
    }
out:
    free(cid);
    free(topic);
    free(props);
    free(payload);
    return rc;
}

static int import_incoming(store_batch_t *b, json_t *o, uint8_t *key, ierr_t *e)
{
    uint8_t *cid = NULL;
    size_t cid_len;
    uint64_t pid;
    int rc = -1;
    void *val;
    if (check_fields(o, 3, e) || get_b64(o, "client_id", &cid, &cid_len, e) ||
        get_uint(o, "pid", 65535, &pid, e))
        goto out;
    if (pid == 0) {
        fail(e, "%s", "field 'pid' out of range");
        goto out;
    }
    size_t kl = store_key_incoming(key, STORE_KEY_MAX, cid, cid_len, (uint16_t)pid);
    size_t vl = store_rec_encode_incoming(NULL, 0);
    if (put_key(b, key, kl, vl, e, &val) == 0) {
        store_rec_encode_incoming(val, vl);
        rc = 0;
    }
out:
    free(cid);
    return rc;
}

static int check_header(json_t *o, ierr_t *e)
{
    uint64_t v;
    if (!json_is_object(o) || json_object_get(o, "antenna_store_export") == NULL)
        return fail(e, "%s", "not an antenna store export (no header)");
    if (get_uint(o, "antenna_store_export", UINT32_MAX, &v, e))
        return -1;
    if (v != EXPORT_VERSION) {
        char n[32];
        snprintf(n, sizeof(n), "%" PRIu64, v);
        return fail(e, "export format version %s, this build reads version 1 only", n);
    }
    if (get_uint(o, "store_format", UINT32_MAX, &v, e))
        return -1;
    if (v != STORE_FORMAT_VERSION) {
        char n[32];
        snprintf(n, sizeof(n), "%" PRIu64, v);
        return fail(e, "records of store format version %s, this build writes version 1 only", n);
    }
    return 0;
}

typedef struct {
    int any;
} any_t;

static int any_record(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v, (void)vl;
    if (kl > 0 && ((const uint8_t *)k)[0] == STORE_KEY_META)
        return 0;
    ((any_t *)ud)->any = 1;
    return 1;
}

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o, force = 0, rc = 1;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 'f':
            force = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage_error("import: bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return usage_error("import: %s", "needs DIR FILE");
    const char *dir = argv[optind], *file = argv[optind + 1];
    FILE *in = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    store_batch_t *b = store_batch_new();
    uint8_t *key = an_malloc(STORE_KEY_MAX);
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    uint64_t records = 0, counts[4] = {0};
    int ended = 0;
    ierr_t e = {""};
    store_t *s = NULL;

    if (in == NULL) {
        fprintf(stderr, "antenna store: cannot read '%s': %m\n", file);
        goto out;
    }
    if (force) { /* the store's records become exactly the file's */
        store_batch_del_prefix(b, "r/", 2);
        store_batch_del_prefix(b, "s/", 2);
        store_batch_del_prefix(b, "q/", 2);
        store_batch_del_prefix(b, "i/", 2);
    }
    ssize_t n;
    while ((n = getline(&line, &cap, in)) >= 0) {
        json_error_t je;
        lineno++;
        if (ended) {
            fail(&e, "%s", "data after the end record");
            goto bad_line;
        }
        json_t *r = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, &je);
        if (r == NULL) {
            snprintf(e.msg, sizeof(e.msg), "not JSON: %s", je.text);
            goto bad_line;
        }
        int lrc = -1;
        if (lineno == 1) {
            lrc = check_header(r, &e);
        } else {
            const char *type = json_string_value(json_object_get(r, "type"));
            if (!json_is_object(r) || type == NULL) {
                fail(&e, "%s", "not a record (no \"type\")");
            } else if (strcmp(type, "retained") == 0) {
                lrc = import_retained(b, r, key, &e);
                counts[0]++;
            } else if (strcmp(type, "session") == 0) {
                lrc = import_session(b, r, key, &e);
                counts[1]++;
            } else if (strcmp(type, "message") == 0) {
                lrc = import_message(b, r, key, &e);
                counts[2]++;
            } else if (strcmp(type, "incoming") == 0) {
                lrc = import_incoming(b, r, key, &e);
                counts[3]++;
            } else if (strcmp(type, "end") == 0) {
                uint64_t want;
                if ((lrc = check_fields(r, 2, &e)) == 0 &&
                    (lrc = get_uint(r, "records", INT64_MAX, &want, &e)) == 0 && want != records) {
                    char m[96];
                    snprintf(m, sizeof(m), "%" PRIu64 " records announced, %" PRIu64 " read", want,
                             records);
                    lrc = fail(&e, "end record: %s", m);
                }
                ended = 1;
                records--; /* not a record itself */
            } else {
                fail(&e, "unknown record type '%s'", type);
            }
            records++;
        }
        json_decref(r);
        if (lrc != 0)
            goto bad_line;
    }
    if (ferror(in)) {
        fprintf(stderr, "antenna store: reading '%s': %m\n", file);
        goto out;
    }
    if (lineno == 0) {
        fprintf(stderr, "antenna store: '%s' is empty: not an antenna store export\n", file);
        goto out;
    }
    if (!ended) {
        fprintf(stderr,
                "antenna store: '%s': no end record after line %zu (truncated?); "
                "nothing imported\n",
                file, lineno);
        goto out;
    }

    if ((s = open_store(dir, 0, STORE_SYNC_ALWAYS)) == NULL)
        goto out;
    if (!force) {
        any_t any = {0};
        int err = store_scan(s, "", 0, any_record, &any);
        if (err < 0) {
            fprintf(stderr, "antenna store: reading '%s': %s\n", dir, store_strerror(err));
            goto out;
        }
        if (any.any) {
            fprintf(stderr,
                    "antenna store: '%s' already holds records; nothing imported "
                    "(--force replaces them with the file's)\n",
                    dir);
            goto out;
        }
    }
    int err = store_submit_sync(s, b);
    b = NULL;
    if (err < 0) {
        char last[256];
        store_last_error(s, last, sizeof(last));
        fprintf(stderr, "antenna store: writing '%s': %s%s%s\n", dir, store_strerror(err),
                last[0] ? ": " : "", last);
        goto out;
    }
    fprintf(stderr,
            "antenna store: imported %" PRIu64 " records into '%s': %" PRIu64 " retained, %" PRIu64
            " sessions, %" PRIu64 " messages, %" PRIu64 " qos2 ids\n",
            records, dir, counts[0], counts[1], counts[2], counts[3]);
    rc = 0;
    goto out;

bad_line:
    fprintf(stderr, "antenna store: '%s' line %zu: %s; nothing imported\n", file, lineno, e.msg);
out:
    if (in && in != stdin)
        fclose(in);
    if (b)
        store_batch_free(b);
    store_close(s);
    free(line);
    free(key);
    return rc;
}

/* ---- compact, expire ---------------------------------------------------- */

static int cmd_compact(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-')
        return usage_error("compact: %s", "needs DIR");
    const char *dir = argv[1];
    store_t *s = open_store(dir, 1, STORE_SYNC_ALWAYS);
    if (s == NULL)
        return 1;
    uint64_t before = dir_bytes(dir), t0 = an_now_ms();
    int err = store_compact(s, "", 0);
    store_close(s);
    if (err < 0) {
        fprintf(stderr, "antenna store: compacting '%s': %s\n", dir, store_strerror(err));
        return 1;
    }
    printf("compacted '%s' in %" PRIu64 " ms: %" PRIu64 " -> %" PRIu64 " bytes on disk\n", dir,
           an_now_ms() - t0, before, dir_bytes(dir));
    return 0;
}

static int cmd_expire(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-')
        return usage_error("expire: %s", "needs DIR");
    const char *dir = argv[1];
    store_t *s = open_store(dir, 1, STORE_SYNC_ALWAYS);
    if (s == NULL)
        return 1;
    store_expire_counts_t c = {0};
    int err = store_expire(s, an_wall_ms() / 1000u, &c);
    store_close(s);
    if (err < 0) {
        fprintf(stderr, "antenna store: expiring in '%s': %s\n", dir, store_strerror(err));
        return 1;
    }
    printf("expired in '%s': %" PRIu64 " retained, %" PRIu64 " sessions, %" PRIu64
           " queued messages (%" PRIu64 " malformed records left)\n",
           dir, c.retained, c.sessions, c.messages, c.malformed);
    return 0;
}

/* ---- generate ----------------------------------------------------------- */

static int parse_count(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *s == '\0' || *s == '-' || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Submits b when it is big enough (or at the end); returns a fresh batch. */
static int gen_flush(store_t *s, store_batch_t **b, int force)
{
    if (!force && store_batch_count(*b) < GEN_BATCH)
        return 0;
    int err = store_submit_sync(s, *b);
    *b = store_batch_new();
    return err;
}

static int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"retained", required_argument, NULL, 'r'},
        {"sessions", required_argument, NULL, 's'},
        {"subs", required_argument, NULL, 'k'},
        {"queued", required_argument, NULL, 'q'},
        {"payload", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t nret = 0, nsess = 0, nsubs = 2, nq = 0, plen = 64, *dst = NULL;
    int o, rc = 1, err = 0;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        uint64_t max = 100000000u;
        switch (o) {
        case 'r':
            dst = &nret;
            break;
        case 's':
            dst = &nsess;
            break;
        case 'k':
            dst = &nsubs;
            max = 1000;
            break;
        case 'q':
            dst = &nq;
            max = 100000;
            break;
        case 'p':
            dst = &plen;
            max = 1u << 20;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage_error("generate: bad option '%s'", argv[optind - 1]);
        }
        if (parse_count(optarg, max, dst) != 0)
            return usage_error("generate: bad count '%s'", optarg);
    }
    if (argc - optind != 1)
        return usage_error("generate: %s", "needs DIR");
    const char *dir = argv[optind];
    store_t *s = open_store(dir, 0, STORE_SYNC_NONE);
    if (s == NULL)
        return 1;
    uint64_t t0 = an_now_ms(), now_s = an_wall_ms() / 1000u;
    uint8_t *key = an_malloc(STORE_KEY_MAX), *payload = an_malloc(plen + 1);
    store_sub_t *subs = an_calloc(nsubs ? nsubs : 1, sizeof(*subs));
    char(*filters)[96] = an_calloc(nsubs ? nsubs : 1, sizeof(*filters));
    store_batch_t *b = store_batch_new();
    for (uint64_t i = 0; i < plen; i++)
        payload[i] = (uint8_t)('a' + i % 26);

    for (uint64_t i = 0; i < nret && err == 0; i++) {
        char topic[96];
        int tl = snprintf(topic, sizeof(topic), "site/%03" PRIu64 "/dev/%04" PRIu64 "/temp",
                          i / 10000, i % 10000);
        store_retained_t r = {.qos = 1,
                              .topic = (const uint8_t *)topic,
                              .topic_len = (size_t)tl,
                              .payload = payload,
                              .payload_len = plen};
        size_t kl = store_key_retained(key, STORE_KEY_MAX, topic, (size_t)tl);
        size_t vl = store_rec_encode_retained(&r, NULL, 0);
        store_rec_encode_retained(&r, store_batch_put_reserve(b, key, kl, vl), vl);
        err = gen_flush(s, &b, 0);
    }
    uint64_t nsites = AN_MAX((nret + 9999) / 10000, (uint64_t)1);
    for (uint64_t i = 0; i < nsess && err == 0; i++) {
        char cid[32], topic[64];
        int cl = snprintf(cid, sizeof(cid), "gen-%07" PRIu64, i);
        for (uint64_t j = 0; j < nsubs; j++) {
            int fl;
            if (j == 0)
                fl = snprintf(filters[j], sizeof(filters[j]), "site/%03" PRIu64 "/dev/+/temp",
                              i % nsites);
            else if (j == 1)
                fl = snprintf(filters[j], sizeof(filters[j]), "cmd/%s/#", cid);
            else
                fl = snprintf(filters[j], sizeof(filters[j]), "x/%s/%" PRIu64, cid, j);
            subs[j] = (store_sub_t){
                .filter = (const uint8_t *)filters[j], .filter_len = (size_t)fl, .options = 1};
        }
        store_session_t rec = {.expiry_interval = 86400,
                               .expiry_deadline = now_s + 86400,
                               .next_pid = 1,
                               .nsubs = (uint32_t)nsubs,
                               .subs = subs};
        size_t kl = store_key_session(key, STORE_KEY_MAX, cid, (size_t)cl);
        size_t vl = store_rec_encode_session(&rec, NULL, 0);
        store_rec_encode_session(&rec, store_batch_put_reserve(b, key, kl, vl), vl);
        int tl = snprintf(topic, sizeof(topic), "cmd/%s/q", cid);
        for (uint64_t q = 0; q < nq; q++) {
            store_outmsg_t m = {.state = STORE_OUT_QUEUED,
                                .qos = 1,
                                .topic = (const uint8_t *)topic,
                                .topic_len = (size_t)tl,
                                .payload = payload,
                                .payload_len = plen};
            kl = store_key_queue(key, STORE_KEY_MAX, cid, (size_t)cl, q + 1);
            vl = store_rec_encode_outmsg(&m, NULL, 0);
            store_rec_encode_outmsg(&m, store_batch_put_reserve(b, key, kl, vl), vl);
        }
        err = gen_flush(s, &b, 0);
    }
    if (err == 0)
        err = gen_flush(s, &b, 1);
    if (err < 0) {
        fprintf(stderr, "antenna store: writing '%s': %s\n", dir, store_strerror(err));
        goto out;
    }
    printf("generated in '%s': %" PRIu64 " retained (payload %" PRIu64 " B), %" PRIu64
           " sessions (%" PRIu64 " subscriptions, %" PRIu64 " queued messages each) in %" PRIu64
           " ms\n",
           dir, nret, plen, nsess, nsubs, nq, an_now_ms() - t0);
    rc = 0;
out:
    store_batch_free(b);
    store_close(s);
    free(filters);
    free(subs);
    free(payload);
    free(key);
    return rc;
}

/* ---- dispatch ----------------------------------------------------------- */

int store_cli_main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } actions[] = {
        {"inspect", cmd_inspect}, {"export", cmd_export}, {"import", cmd_import},
        {"compact", cmd_compact}, {"expire", cmd_expire}, {"generate", cmd_generate},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strcmp(argv[1], actions[i].name) == 0) {
            optind = 0; /* a fresh getopt scan of the action's own arguments */
            opterr = 0;
            return actions[i].fn(argc - 1, argv + 1);
        }
    return usage_error("unknown action '%s'", argv[1]);
}
