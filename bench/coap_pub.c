/* coap_pub.c -- a CoAP publish load generator for bench/coap_pub.sh.
 *
 *   coap_pub HOST PORT SECONDS SESSIONS WINDOW PAYLOAD_BYTES
 *
 * SESSIONS libcoap client sessions (one UDP socket each) send non-
 * confirmable PUT /ps/bench/{n} requests, WINDOW outstanding per session;
 * each answer sends the next.  A window that went silent (datagrams lost)
 * is refilled after 200 ms.  Prints requests answered per second and the
 * answers that were not 2.xx.  A bench tool: its state is global.
 */
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t answered, refused;
static uint8_t payload[65536];
static size_t payload_len;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void send_one(coap_session_t *s)
{
    coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_NON, COAP_REQUEST_CODE_PUT, coap_new_message_id(s),
                                    coap_session_max_pdu_size(s));
    if (pdu == NULL)
        return;
    uint8_t tok[8];
    size_t tl = 0;
    coap_session_new_token(s, &tl, tok);
    coap_add_token(pdu, tl, tok);
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 2, (const uint8_t *)"ps");
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 5, (const uint8_t *)"bench");
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 2, (const uint8_t *)"up");
    coap_add_data(pdu, payload_len, payload);
    coap_send(s, pdu);
}

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid)
{
    (void)sent;
    (void)mid;
    answered++;
    if (COAP_RESPONSE_CLASS(coap_pdu_get_code(received)) != 2)
        refused++;
    send_one(s);
    return COAP_RESPONSE_OK;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: coap_pub HOST PORT SECONDS SESSIONS WINDOW PAYLOAD_BYTES\n");
        return 2;
    }
    int secs = atoi(argv[3]), nsess = atoi(argv[4]), window = atoi(argv[5]);
    payload_len = (size_t)atoi(argv[6]);
    if (payload_len > 1000)
        payload_len = 1000;
    memset(payload, 'x', payload_len);
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
    coap_session_t **ss = calloc((size_t)nsess, sizeof(*ss));
    for (int i = 0; i < nsess; i++) {
        ss[i] = coap_new_client_session(ctx, NULL, &dst, COAP_PROTO_UDP);
        if (ss[i] == NULL) {
            fprintf(stderr, "coap_pub: cannot open session %d\n", i);
            return 1;
        }
        for (int k = 0; k < window; k++)
            send_one(ss[i]);
    }
    double start = now_s(), end = start + secs;
    uint64_t last = 0;
    double last_t = start;
    while (now_s() < end) {
        coap_io_process(ctx, 50);
        if (answered != last) {
            last = answered;
            last_t = now_s();
        } else if (now_s() - last_t > 0.2) { /* lost datagrams: refill */
            for (int i = 0; i < nsess; i++)
                for (int k = 0; k < window; k++)
                    send_one(ss[i]);
            last_t = now_s();
        }
    }
    double el = now_s() - start;
    printf("answered: %llu in %.1f s: %.0f requests/s; not 2.xx: %llu\n",
           (unsigned long long)answered, el, answered / el, (unsigned long long)refused);
    for (int i = 0; i < nsess; i++)
        coap_session_release(ss[i]);
    free(ss);
    coap_free_context(ctx);
    coap_cleanup();
    return 0;
}
