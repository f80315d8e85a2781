/* coap_obs.c -- CoAP observers for bench/coap_obs.sh.
 *
 *   coap_obs HOST PORT OBSERVERS FILTER_PATH SECONDS
 *
 * OBSERVERS libcoap client sessions (one UDP socket each) each register an
 * observation (GET FILTER_PATH, Observe: 0, e.g. /ps/bench/%23 given as
 * "ps/bench/#"), print "registered N" once all are answered, then count
 * notifications until SECONDS pass with none arriving for 2 s after the
 * first; prints the count and the rate between the first and the last.  A
 * bench tool: its state is global.
 */
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t registered, notified;
static double first_t, last_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid)
{
    (void)sent;
    (void)mid;
    uintptr_t *seen = coap_session_get_app_data(s);
    if (COAP_RESPONSE_CLASS(coap_pdu_get_code(received)) != 2)
        return COAP_RESPONSE_OK;
    if (!*seen) {
        *seen = 1;
        registered++;
        return COAP_RESPONSE_OK;
    }
    if (notified++ == 0)
        first_t = now_s();
    last_t = now_s();
    return COAP_RESPONSE_OK;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: coap_obs HOST PORT OBSERVERS FILTER_PATH SECONDS\n");
        return 2;
    }
    int n = atoi(argv[3]), secs = atoi(argv[5]);
    coap_startup();
    coap_set_log_level(LOG_ERR);
    coap_context_t *ctx = coap_new_context(NULL);
    coap_register_response_handler(ctx, on_response);
    coap_address_t dst;
    coap_address_init(&dst);
    dst.addr.sin.sin_family = AF_INET;
    dst.addr.sin.sin_port = htons((uint16_t)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &dst.addr.sin.sin_addr);
    dst.size = sizeof(dst.addr.sin);
    uintptr_t *seen = calloc((size_t)n, sizeof(*seen));
    for (int i = 0; i < n; i++) {
        coap_session_t *s = coap_new_client_session(ctx, NULL, &dst, COAP_PROTO_UDP);
        if (s == NULL) {
            fprintf(stderr, "coap_obs: cannot open session %d\n", i);
            return 1;
        }
        coap_session_set_app_data(s, &seen[i]);
        coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_GET,
                                        coap_new_message_id(s), coap_session_max_pdu_size(s));
        uint8_t tok[8];
        size_t tl = 0;
        coap_session_new_token(s, &tl, tok);
        coap_add_token(pdu, tl, tok);
        coap_add_option(pdu, COAP_OPTION_OBSERVE, 0, NULL);
        char path[256];
        snprintf(path, sizeof(path), "%s", argv[4]);
        for (char *seg = strtok(path, "/"); seg; seg = strtok(NULL, "/"))
            coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(seg), (const uint8_t *)seg);
        coap_send(s, pdu);
        if (i % 100 == 99)
            coap_io_process(ctx, COAP_IO_NO_WAIT);
    }
    double end = now_s() + 60;
    while (registered < (uint64_t)n && now_s() < end)
        coap_io_process(ctx, 100);
    printf("registered %llu\n", (unsigned long long)registered);
    fflush(stdout);
    end = now_s() + secs;
    while (now_s() < end && !(notified && now_s() - last_t > 2))
        coap_io_process(ctx, 100);
    double el = last_t - first_t;
    printf("notifications: %llu in %.2f s: %.0f/s\n", (unsigned long long)notified, el,
           el > 0 ? notified / el : 0.0);
    coap_free_context(ctx);
    coap_cleanup();
    free(seen);
    return 0;
}
