/*
 * peer_filter.c: the network filter of policyc's native module, which records every SAN of the
 * client certificate for the policy filter (policy_filter.c). An HTTP filter is given only the
 * first URI SAN and the first DNS SAN of a certificate (native_runtime/README.md, *Gaps*); a
 * network filter is given all of them, and the connection's filter state, which it writes, is read
 * by every HTTP stream of the connection.
 *
 * The compiler puts it before the HTTP connection manager when a native service tests peer.uri or
 * peer.dns. It records the SANs (peer_sans.h) once per connection, when the first decrypted bytes
 * arrive: on a TLS connection the handshake, and so the certificate, is complete by then, and no
 * request has reached the connection manager yet (without TLS, or without a certificate, the
 * lists are empty, and the policy filter never reads them). It never stops or closes
 * the connection: when the record cannot be made, the policy filter, finding none beside a
 * presented certificate, decides `error`.
 */
#include <stdlib.h>
#include <string.h>

#include "envoy_abi.h"
#include "peer_sans.h"

typedef envoy_dynamic_module_type_network_filter_envoy_ptr connection_t;

/* The state of one connection: whether its SANs have been looked at. */
typedef struct {
  bool recorded;
} peer_filter_t;

static const char CONFIG[] = "the peer filter's config";

static void log_error(const char *message) {
  envoy_dynamic_module_type_module_buffer text = {message, strlen(message)};
  envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level_Error, text);
}

/* The SANs of one kind, as `count` buffers Envoy owns, in `*sans` (allocated; NULL when none). */
static bool read_sans(connection_t connection, bool uri, bytes_t **sans, size_t *count) {
  size_t n = uri ? envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(connection)
                 : envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans_size(connection);
  envoy_dynamic_module_type_envoy_buffer *buffers = n == 0 ? NULL : calloc(n, sizeof *buffers);
  *sans = NULL;
  *count = 0;
  if (n == 0) {
    return true;
  }
  if (buffers == NULL || !(uri ? envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(connection, buffers)
                              : envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans(connection, buffers))) {
    free(buffers);
    return false;
  }
  bytes_t *out = calloc(n, sizeof *out);
  bool ok = out != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    ok = buffers[i].ptr != NULL || buffers[i].length == 0; /* a SAN that cannot be read: no record */
    out[i].ptr = buffers[i].ptr == NULL ? "" : buffers[i].ptr;
    out[i].length = buffers[i].length;
  }
  free(buffers);
  if (!ok) {
    free(out);
    return false;
  }
  *sans = out;
  *count = n;
  return true;
}

/* Records the connection's SANs in its filter state; false when they cannot be read or stored. */
static bool record_sans(connection_t connection) {
  bytes_t *uris = NULL, *dns = NULL;
  size_t uri_count = 0, dns_count = 0, size = 0;
  char *record = NULL;
  bool ok = read_sans(connection, true, &uris, &uri_count) && read_sans(connection, false, &dns, &dns_count) &&
            (size = peer_sans_size(uris, uri_count, dns, dns_count)) > 0 && (record = malloc(size)) != NULL;
  if (ok) {
    peer_sans_write(record, uris, uri_count, dns, dns_count);
    envoy_dynamic_module_type_module_buffer key = {PEER_SANS_KEY, sizeof PEER_SANS_KEY - 1}, value = {record, size};
    ok = envoy_dynamic_module_callback_network_set_filter_state_bytes(connection, key, value);
  }
  free(record);
  free(uris);
  free(dns);
  return ok;
}

envoy_dynamic_module_type_network_filter_config_module_ptr envoy_dynamic_module_on_network_filter_config_new(
    envoy_dynamic_module_type_network_filter_config_envoy_ptr config_envoy,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  return CONFIG; /* nothing to configure */
}

void envoy_dynamic_module_on_network_filter_config_destroy(
    envoy_dynamic_module_type_network_filter_config_module_ptr config) {}

envoy_dynamic_module_type_network_filter_module_ptr envoy_dynamic_module_on_network_filter_new(
    envoy_dynamic_module_type_network_filter_config_module_ptr config,
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy) {
  return calloc(1, sizeof(peer_filter_t)); /* NULL: no filter, so no record, and `error` on a certificate */
}

envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_new_connection(
    POLICYC_NETWORK_FILTER_ARGS) {
  return envoy_dynamic_module_type_on_network_filter_data_status_Continue;
}

envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_read(
    POLICYC_NETWORK_FILTER_ARGS, size_t data_length, bool end_stream) {
  peer_filter_t *state = (peer_filter_t *)filter;
  if (state != NULL && !state->recorded) {
    state->recorded = true;
    if (!record_sans(filter_envoy)) {
      log_error("policyc: the client certificate's SANs cannot be recorded");
    }
  }
  return envoy_dynamic_module_type_on_network_filter_data_status_Continue;
}

envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_write(
    POLICYC_NETWORK_FILTER_ARGS, size_t data_length, bool end_stream) {
  return envoy_dynamic_module_type_on_network_filter_data_status_Continue;
}

void envoy_dynamic_module_on_network_filter_event(POLICYC_NETWORK_FILTER_ARGS,
                                                  envoy_dynamic_module_type_network_connection_event event) {}

void envoy_dynamic_module_on_network_filter_destroy(envoy_dynamic_module_type_network_filter_module_ptr filter) {
  free((void *)filter);
}
