/* ep_mqtt.h -- the MQTT connection as a session endpoint (endpoint.h).
 *
 * Every conn_t embeds an endpoint_t (conn_t.ep) whose ops are these; the
 * connection's CONNECT (proto.c) sets its limits (Maximum Packet Size,
 * Receive Maximum) and flags (MQTT 5: subscription identifiers; 3.1.1:
 * resend on a timer) before the session is attached.  Home worker only,
 * like the connection.
 */
#ifndef ANTENNA_EP_MQTT_H
#define ANTENNA_EP_MQTT_H

#include "endpoint.h"

extern const endpoint_ops_t ep_mqtt_ops;

#endif
