/* modules.c -- the list of modules (module.h), in the order they are
 * initialised and started (stopped and freed in reverse).
 *
 * Adding a module: its folder under src/modules/ (or its file in the
 * subsystem it belongs to) defining a `const module_t`, and one line here.
 */
#include "module.h"

#include "event_log.h"
#include "event_recent.h"
#include "sys.h"
#include "cluster/cluster.h"
#include "devices/devices.h"
#include "commands/commands.h"
#include "modules/heartbeat/heartbeat.h"
#include "modules/message_log/message_log.h"
#include "modules/tracing/tracing.h"
#include "rules/rules.h"
#include "sinks/sinks.h"
#include "gateways/coap/coapgw.h"
#include "gateways/http/httpin.h"
#include "gateways/lora/lora.h"

const module_t *const module_list[] = {
    &sys_module,          /* $SYS/broker/... (src/broker/sys.c) */
    &event_log_module,    /* events.log (src/broker/event_log.c) */
    &event_recent_module, /* recent events per client: the API, the dashboard
                           * (src/broker/event_recent.c) */
    &heartbeat_module,    /* the example: heartbeat.* (src/modules/heartbeat) */
    &message_log_module,  /* examples.message_log: an internal consumer
                          * (src/modules/message_log) */
    &tracing_module,      /* tracing: OpenTelemetry spans of messages (src/modules/tracing) */
    &cluster_module,      /* cluster: nodes acting as one broker (src/cluster) */
    &sinks_module,        /* sinks: webhook, Kafka, InfluxDB destinations of rules
                           * (src/sinks); before rules, whose actions name them */
    &rules_module,        /* rules: SQL-like rules over messages and events (src/rules) */
    &httpin_module,       /* http_ingest: devices publishing over HTTP (src/gateways/http) */
    &coapgw_module,       /* coap: devices over CoAP, publish and Observe (src/gateways/coap) */
    &lora_module,         /* lora: Semtech UDP packet forwarder gateways (src/gateways/lora) */
    &devices_module,      /* devices: the device registry (src/devices) */
    &commands_module,     /* commands: downlink commands to devices, tracked replies
                           * (src/commands) */
    NULL,
};
