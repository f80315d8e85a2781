/* lora.h -- the Semtech UDP packet forwarder gateway (section lora).
 *
 * A module (module.h): LoRa gateways running the Semtech packet forwarder
 * (protocol versions 1 and 2) send their uplinks (rxpk) and statistics
 * (stat) to a UDP port of the broker, which publishes them as JSON on MQTT
 * topics; MQTT clients publish downlinks (txpk) on lora/{gateway}/down,
 * which the gateway receives as PULL_RESP.  See lora.c for the design,
 * lora_pkt.h for the datagrams and docs/lora.md for the contract.
 */
#ifndef ANTENNA_LORA_H
#define ANTENNA_LORA_H

#include <stdint.h>

#include "module.h"

#define LORA_TOPIC_MAX 256

typedef struct lora_conf_s {
    uint8_t enabled;
    char bind[64];
    uint32_t port;
    uint32_t keepalive_ms; /* a gateway silent for 3 x this is offline */
    uint32_t qos;          /* of what is published (uplinks, stats, status, acks) */
    uint32_t max_gateways; /* gateways tracked (presence, downlink address) */
    char topic_up[LORA_TOPIC_MAX];
    char topic_devaddr[LORA_TOPIC_MAX]; /* "" = not published */
    char topic_stats[LORA_TOPIC_MAX];
    char topic_status[LORA_TOPIC_MAX];
    char topic_down[LORA_TOPIC_MAX];
    char topic_down_ack[LORA_TOPIC_MAX];
} lora_conf_t;

extern const module_t lora_module;

#endif
