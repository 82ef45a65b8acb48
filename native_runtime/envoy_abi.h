/*
 * envoy_abi.h: the part of Envoy's dynamic module ABI that the native runtime uses, declared here
 * by hand so that the module builds with nothing but a C compiler and libc headers.
 *
 * Source of truth: source/extensions/dynamic_modules/abi/abi.h in envoyproxy/envoy (Apache-2.0).
 * The declarations below follow that header as of ABI "v0.1.0" (commit 0199da4a13cb); Envoy
 * 1.40.0 (build 9e5580933739) reports ABI "v0.2.0" and only adds functions to v0.1.0, never
 * changing one (new behaviour gets a new name, such as log_v2), so these still hold. The
 * tests/native suite checks them against a real Envoy 1.40: a wrong declaration there fails a test.
 *
 * Names are Envoy's and must stay exactly so: Envoy looks the event hooks up by name with dlsym,
 * and the module's references to the callbacks are bound to Envoy's own symbols when it loads.
 * Envoy owns every *envoy_buffer it hands out (valid until the hook returns); the module owns
 * every *module_buffer it passes in (read during the call only).
 */
#ifndef POLICYC_ENVOY_ABI_H
#define POLICYC_ENVOY_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The ABI version the module declares in on_program_init; Envoy logs whether it matches. */
#define POLICYC_ENVOY_ABI_VERSION "v0.2.0"

typedef struct envoy_dynamic_module_type_envoy_buffer {
  const char *ptr;
  size_t length;
} envoy_dynamic_module_type_envoy_buffer;

typedef struct envoy_dynamic_module_type_module_buffer {
  const char *ptr;
  size_t length;
} envoy_dynamic_module_type_module_buffer;

typedef struct envoy_dynamic_module_type_module_http_header {
  const char *key_ptr;
  size_t key_length;
  const char *value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_module_http_header;

typedef struct envoy_dynamic_module_type_envoy_http_header {
  const char *key_ptr;
  size_t key_length;
  const char *value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_envoy_http_header;

typedef enum envoy_dynamic_module_type_http_header_type {
  envoy_dynamic_module_type_http_header_type_RequestHeader,
  envoy_dynamic_module_type_http_header_type_RequestTrailer,
  envoy_dynamic_module_type_http_header_type_ResponseHeader,
  envoy_dynamic_module_type_http_header_type_ResponseTrailer,
} envoy_dynamic_module_type_http_header_type;

typedef enum envoy_dynamic_module_type_log_level {
  envoy_dynamic_module_type_log_level_Trace,
  envoy_dynamic_module_type_log_level_Debug,
  envoy_dynamic_module_type_log_level_Info,
  envoy_dynamic_module_type_log_level_Warn,
  envoy_dynamic_module_type_log_level_Error,
  envoy_dynamic_module_type_log_level_Critical,
  envoy_dynamic_module_type_log_level_Off,
} envoy_dynamic_module_type_log_level;

typedef enum envoy_dynamic_module_type_metadata_source {
  envoy_dynamic_module_type_metadata_source_Dynamic,
  envoy_dynamic_module_type_metadata_source_Route,
  envoy_dynamic_module_type_metadata_source_Cluster,
  envoy_dynamic_module_type_metadata_source_Host,
  envoy_dynamic_module_type_metadata_source_HostLocality,
} envoy_dynamic_module_type_metadata_source;

/* Only the attributes a policy reads are named; the numbering is the upstream enum's. */
typedef enum envoy_dynamic_module_type_attribute_id {
  envoy_dynamic_module_type_attribute_id_RequestPath = 0,
  envoy_dynamic_module_type_attribute_id_RequestHost = 2,
  envoy_dynamic_module_type_attribute_id_RequestMethod = 4,
  envoy_dynamic_module_type_attribute_id_SourceAddress = 24,
  envoy_dynamic_module_type_attribute_id_SourcePort = 25,
  envoy_dynamic_module_type_attribute_id_ConnectionMtls = 29,
  envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate = 33,
  envoy_dynamic_module_type_attribute_id_ConnectionDnsSanPeerCertificate = 35,
  envoy_dynamic_module_type_attribute_id_ConnectionUriSanPeerCertificate = 37,
} envoy_dynamic_module_type_attribute_id;

typedef enum envoy_dynamic_module_type_on_http_filter_request_headers_status {
  envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue,
  envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration,
} envoy_dynamic_module_type_on_http_filter_request_headers_status;

/* Continue (0) is the one value of each kind this module returns from the hooks below. */
typedef enum envoy_dynamic_module_type_on_http_filter_body_status {
  envoy_dynamic_module_type_on_http_filter_body_status_Continue,
} envoy_dynamic_module_type_on_http_filter_body_status;

typedef enum envoy_dynamic_module_type_on_http_filter_trailers_status {
  envoy_dynamic_module_type_on_http_filter_trailers_status_Continue,
} envoy_dynamic_module_type_on_http_filter_trailers_status;

typedef enum envoy_dynamic_module_type_on_http_filter_response_headers_status {
  envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue,
} envoy_dynamic_module_type_on_http_filter_response_headers_status;

/* Passed to the callout hooks, which this module never triggers; the values are not read. */
typedef enum envoy_dynamic_module_type_http_callout_result {
  envoy_dynamic_module_type_http_callout_result_Success,
} envoy_dynamic_module_type_http_callout_result;

typedef enum envoy_dynamic_module_type_http_stream_reset_reason {
  envoy_dynamic_module_type_http_stream_reset_reason_ConnectionFailure,
} envoy_dynamic_module_type_http_stream_reset_reason;

typedef enum envoy_dynamic_module_type_on_network_filter_data_status {
  envoy_dynamic_module_type_on_network_filter_data_status_Continue,
  envoy_dynamic_module_type_on_network_filter_data_status_StopIteration,
} envoy_dynamic_module_type_on_network_filter_data_status;

/* Passed to the network filter's event hook; the values are not read. */
typedef enum envoy_dynamic_module_type_network_connection_event {
  envoy_dynamic_module_type_network_connection_event_RemoteClose,
} envoy_dynamic_module_type_network_connection_event;

typedef void *envoy_dynamic_module_type_http_filter_config_envoy_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_config_module_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_per_route_config_module_ptr;
typedef void *envoy_dynamic_module_type_http_filter_envoy_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_module_ptr;

typedef void *envoy_dynamic_module_type_network_filter_config_envoy_ptr;
typedef const void *envoy_dynamic_module_type_network_filter_config_module_ptr;
typedef void *envoy_dynamic_module_type_network_filter_envoy_ptr;
typedef const void *envoy_dynamic_module_type_network_filter_module_ptr;

/* ---- Event hooks: the module defines these; Envoy calls them. ---- */

/* Main thread, once, when Envoy loads the module; NULL makes Envoy unload it. */
const char *envoy_dynamic_module_on_program_init(void);

/* Main thread, per filter config; NULL makes Envoy reject the config. */
envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);

void envoy_dynamic_module_on_http_filter_config_destroy(
    envoy_dynamic_module_type_http_filter_config_module_ptr config);

/* Main thread, per route (or virtual host) that gives the filter a config of its own
 * (DynamicModuleFilterPerRoute); NULL makes Envoy reject the routes. */
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_on_http_filter_per_route_config_new(envoy_dynamic_module_type_envoy_buffer name,
                                                         envoy_dynamic_module_type_envoy_buffer config);

void envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr config);

/* Worker thread, per stream; NULL makes Envoy close the stream. */
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy);

envoy_dynamic_module_type_on_http_filter_request_headers_status
envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_http_filter_module_ptr filter, bool end_of_stream);

void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr filter);

/* Hooks Envoy 1.40 requires of every HTTP filter module (defined in required_hooks.c). */
#define POLICYC_FILTER_ARGS                                                                        \
  envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,                                    \
      envoy_dynamic_module_type_http_filter_module_ptr filter

envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_request_body(
    POLICYC_FILTER_ARGS, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_request_trailers(
    POLICYC_FILTER_ARGS);
envoy_dynamic_module_type_on_http_filter_response_headers_status
envoy_dynamic_module_on_http_filter_response_headers(POLICYC_FILTER_ARGS, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_response_body(
    POLICYC_FILTER_ARGS, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_response_trailers(
    POLICYC_FILTER_ARGS);
void envoy_dynamic_module_on_http_filter_stream_complete(POLICYC_FILTER_ARGS);
void envoy_dynamic_module_on_http_filter_http_callout_done(
    POLICYC_FILTER_ARGS, uint64_t callout_id, envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer *body_chunks, size_t body_chunks_size);
void envoy_dynamic_module_on_http_filter_http_stream_headers(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                             envoy_dynamic_module_type_envoy_http_header *headers,
                                                             size_t headers_size, bool end_stream);
void envoy_dynamic_module_on_http_filter_http_stream_data(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                          const envoy_dynamic_module_type_envoy_buffer *data,
                                                          size_t data_count, bool end_stream);
void envoy_dynamic_module_on_http_filter_http_stream_trailers(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                              envoy_dynamic_module_type_envoy_http_header *trailers,
                                                              size_t trailers_size);
void envoy_dynamic_module_on_http_filter_http_stream_complete(POLICYC_FILTER_ARGS, uint64_t stream_id);
void envoy_dynamic_module_on_http_filter_http_stream_reset(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                           envoy_dynamic_module_type_http_stream_reset_reason reason);
void envoy_dynamic_module_on_http_filter_scheduled(POLICYC_FILTER_ARGS, uint64_t event_id);
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(POLICYC_FILTER_ARGS);
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(POLICYC_FILTER_ARGS);

/* The network filter (peer_filter.c): Envoy 1.40 resolves every one of these hooks when it creates
 * a network filter config from the module, and refuses the config if one is missing. */
envoy_dynamic_module_type_network_filter_config_module_ptr envoy_dynamic_module_on_network_filter_config_new(
    envoy_dynamic_module_type_network_filter_config_envoy_ptr config_envoy,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
void envoy_dynamic_module_on_network_filter_config_destroy(
    envoy_dynamic_module_type_network_filter_config_module_ptr config);

/* Per connection: the filter's own state for it. */
envoy_dynamic_module_type_network_filter_module_ptr envoy_dynamic_module_on_network_filter_new(
    envoy_dynamic_module_type_network_filter_config_module_ptr config,
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy);

#define POLICYC_NETWORK_FILTER_ARGS                                                                \
  envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy,                                 \
      envoy_dynamic_module_type_network_filter_module_ptr filter

envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_new_connection(
    POLICYC_NETWORK_FILTER_ARGS);
/* Decrypted bytes from the client: on a TLS connection, only once its handshake is complete. */
envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_read(
    POLICYC_NETWORK_FILTER_ARGS, size_t data_length, bool end_stream);
envoy_dynamic_module_type_on_network_filter_data_status envoy_dynamic_module_on_network_filter_write(
    POLICYC_NETWORK_FILTER_ARGS, size_t data_length, bool end_stream);
void envoy_dynamic_module_on_network_filter_event(POLICYC_NETWORK_FILTER_ARGS,
                                                  envoy_dynamic_module_type_network_connection_event event);
void envoy_dynamic_module_on_network_filter_destroy(envoy_dynamic_module_type_network_filter_module_ptr filter);

/* ---- Callbacks: Envoy defines these; the module calls them. ---- */

void envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level level,
                                       envoy_dynamic_module_type_module_buffer message);

/* The index-th value of a header (lower-case name); *count gets how many values it has. */
bool envoy_dynamic_module_callback_http_get_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_envoy_buffer *result, size_t index, size_t *count);

/* A local reply: status, extra headers, body, and the response code details the log shows. */
void envoy_dynamic_module_callback_http_send_response(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, uint32_t status_code,
    envoy_dynamic_module_type_module_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_module_buffer body, envoy_dynamic_module_type_module_buffer details);

/* Stores a copy of `value` under `key` in the stream's filter state, where the access log's
 * %FILTER_STATE(key:PLAIN)% reads it; false when the stream has none. Added after v0.1.0; declared
 * as Envoy 1.40 defines it (tests/native/test_native_index.py reads the value back from the log). */
bool envoy_dynamic_module_callback_http_set_filter_state_bytes(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);

/* The config the most specific level of the stream's route (route, virtual host, route table) gives
 * this filter, as its on_http_filter_per_route_config_new returned it; NULL when none does. Added
 * after v0.1.0; declared as Envoy 1.40 defines it (tests/native/test_native_filter.py). */
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_callback_get_most_specific_route_config(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy);

/* A string directly under a metadata namespace of `source` (the stream's dynamic metadata, the
 * route's filter_metadata, ...); false when absent or not a string. */
bool envoy_dynamic_module_callback_http_get_metadata_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_envoy_buffer *result);

/* The direct peer's address as text: "a.b.c.d:port", or "[v6]:port" (Envoy's Address::asString).
 * Added after v0.1.0; declared as observed in Envoy 1.40 (tests/native/test_abi_probe.py). */
bool envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *address);

/* A boolean attribute (connection.mtls: the downstream connection is TLS and the client presented
 * a certificate); false when the attribute has no value, as on a connection without TLS. */
bool envoy_dynamic_module_callback_http_filter_get_attribute_bool(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_attribute_id attribute, bool *result);

bool envoy_dynamic_module_callback_http_filter_get_attribute_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_attribute_id attribute, envoy_dynamic_module_type_envoy_buffer *result);

/* Bytes another filter stored under `key` in the stream's filter state, or in the connection's, which
 * the stream's reaches; false when none. Added after v0.1.0; declared as observed in Envoy 1.40. */
bool envoy_dynamic_module_callback_http_get_filter_state_bytes(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_envoy_buffer *result);

/* The client certificate's URI SANs, or DNS SANs, on the connection: `_size` gives how many (0
 * without TLS), then the other fills that many buffers, in the certificate's order (false without
 * TLS). Added after v0.1.0; declared as Envoy 1.40 defines them (tests/native/test_abi_probe.py). */
size_t envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy);
bool envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *sans);
size_t envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy);
bool envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *sans);

/* Stores a copy of `value` under `key` in the connection's filter state (Envoy 1.40: mutable, living
 * as long as the connection, not shared with upstream connections), where every HTTP stream of the
 * connection reads it. */
bool envoy_dynamic_module_callback_network_set_filter_state_bytes(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);

#endif
