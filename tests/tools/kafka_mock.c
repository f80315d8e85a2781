/* kafka_mock.c -- a Kafka cluster for tests and benches: librdkafka's mock
 * cluster (a real Kafka protocol implementation) in a process of its own,
 * driven by lines on stdin.  Built by CMake, not installed.
 *
 *   kafka_mock [-b BROKERS] [-t TOPIC:PARTITIONS]...
 *
 * prints "bootstrap HOST:PORT,..." once the cluster listens, then answers
 * each command with one line starting "ok" or "error" (consume prints its
 * messages first):
 *   topic NAME PARTITIONS     create a topic (replication: every broker)
 *   down ID / up ID           a broker (1..BROKERS) stops or starts answering
 *   push errors N [CODE]      the next N Produce requests fail with CODE
 *                             (a Kafka error code, default 6:
 *                             NOT_LEADER_FOR_PARTITION)
 *   count TOPIC               "ok N R": messages appended to the topic since it
 *                             was created (its high watermarks), R of them
 *                             still kept (the mock drops a partition's oldest
 *                             messages past a few MB)
 *   consume TOPIC             every message so far, one line each:
 *                             "PARTITION\tOFFSET\tKEY\tVALUE" (\\, \t, \n
 *                             escaped; KEY "-" when null), then "ok N"
 *   quit                      (also at the end of stdin)
 * One thread: the cluster runs on librdkafka's own threads.
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *bootstraps;

static rd_kafka_t *new_client(rd_kafka_type_t type)
{
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "0", e, sizeof(e));
    if (bootstraps) {
        rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof(e));
        rd_kafka_conf_set(c, "group.id", "kafka_mock", e, sizeof(e));
        rd_kafka_conf_set(c, "enable.auto.commit", "false", e, sizeof(e));
        rd_kafka_conf_set(c, "enable.partition.eof", "true", e, sizeof(e));
    }
    rd_kafka_t *rk = rd_kafka_new(type, c, e, sizeof(e));
    if (rk == NULL) {
        fprintf(stderr, "kafka_mock: %s\n", e);
        exit(1);
    }
    return rk;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Partitions of topic, or -1. */
static int partitions(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return n;
}

static void put_escaped(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else
            putchar(c);
    }
}

static void cmd_count(rd_kafka_t *ck, const char *topic)
{
    int np = partitions(ck, topic);
    if (np < 0) {
        printf("error unknown topic %s\n", topic);
        return;
    }
    long long total = 0, kept = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(ck, topic, p, &lo, &hi, 5000)) {
            printf("error watermarks of %s/%d\n", topic, p);
            return;
        }
        total += hi;
        kept += hi - lo;
    }
    printf("ok %lld %lld\n", total, kept);
}

static void cmd_consume(const char *topic)
{
    rd_kafka_t *ck = new_client(RD_KAFKA_CONSUMER);
    int np = partitions(ck, topic);
    if (np < 0) {
        printf("error unknown topic %s\n", topic);
        rd_kafka_destroy(ck);
        return;
    }
    rd_kafka_poll_set_consumer(ck);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    int64_t *hi = calloc((size_t)np, sizeof(*hi));
    int open = 0;
    for (int p = 0; p < np; p++) {
        int64_t lo;
        if (rd_kafka_query_watermark_offsets(ck, topic, p, &lo, &hi[p], 5000) == 0 && hi[p] > lo) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            open++;
        }
    }
    rd_kafka_assign(ck, l);
    rd_kafka_topic_partition_list_destroy(l);
    long long n = 0, until = now_ms() + 60000;
    while (open > 0 && now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(ck, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            printf("%d\t%lld\t", (int)m->partition, (long long)m->offset);
            if (m->key)
                put_escaped(m->key, m->key_len);
            else
                putchar('-');
            putchar('\t');
            put_escaped(m->payload, m->len);
            putchar('\n');
            n++;
            if (m->offset + 1 == hi[m->partition])
                open--;
        }
        rd_kafka_message_destroy(m);
    }
    if (open > 0)
        printf("error %d partitions not read to their end\n", open);
    else
        printf("ok %lld\n", n);
    free(hi);
    rd_kafka_consumer_close(ck);
    rd_kafka_destroy(ck);
}

int main(int argc, char **argv)
{
    int nbrokers = 3;
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER);
    rd_kafka_mock_cluster_t *mc = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) {
                nbrokers = atoi(argv[++i]);
            } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
                char *spec = argv[++i], *colon = strchr(spec, ':');
                if (pass == 1) {
                    if (colon)
                        *colon = '\0';
                    rd_kafka_mock_topic_create(mc, spec, colon ? atoi(colon + 1) : 1, nbrokers);
                }
            } else {
                fprintf(stderr, "usage: kafka_mock [-b BROKERS] [-t TOPIC:PARTITIONS]...\n");
                return 2;
            }
        }
        if (pass == 0 && (mc = rd_kafka_mock_cluster_new(rk, nbrokers)) == NULL) {
            fprintf(stderr, "kafka_mock: cannot start the mock cluster\n");
            return 1;
        }
    }
    bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    rd_kafka_t *ck = new_client(RD_KAFKA_CONSUMER); /* metadata and watermarks */
    printf("bootstrap %s\n", bootstraps);
    fflush(stdout);

    char line[512];
    while (fgets(line, sizeof(line), stdin)) {
        char a[256] = "", b[256] = "";
        int n = 0, x = 0;
        line[strcspn(line, "\r\n")] = '\0';
        if (sscanf(line, "topic %255s %d", a, &n) == 2) {
            rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, a, n, nbrokers);
            printf(e ? "error %s\n" : "ok\n", rd_kafka_err2str(e));
        } else if (sscanf(line, "down %d", &n) == 1 || sscanf(line, "fail broker %d", &n) == 1) {
            rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_down(mc, n);
            printf(e ? "error %s\n" : "ok\n", rd_kafka_err2str(e));
        } else if (sscanf(line, "up %d", &n) == 1 || sscanf(line, "up broker %d", &n) == 1) {
            rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_up(mc, n);
            printf(e ? "error %s\n" : "ok\n", rd_kafka_err2str(e));
        } else if (sscanf(line, "push errors %d %d", &n, &x) >= 1 && n > 0 && n <= 10000) {
            rd_kafka_resp_err_t *errs = malloc((size_t)n * sizeof(*errs));
            for (int i = 0; i < n; i++)
                errs[i] = x ? (rd_kafka_resp_err_t)x : RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION;
            rd_kafka_mock_push_request_errors_array(mc, 0 /* Produce */, (size_t)n, errs);
            free(errs);
            printf("ok\n");
        } else if (sscanf(line, "count %255s", a) == 1) {
            cmd_count(ck, a);
        } else if (sscanf(line, "consume %255s", a) == 1) {
            cmd_consume(a);
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else if (sscanf(line, "%255s", b) == 1) {
            printf("error unknown command: %s\n", line);
        }
        fflush(stdout);
    }
    rd_kafka_destroy(ck);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
