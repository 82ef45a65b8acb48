/*
 * probe.c: a test-only HTTP filter module that answers every request 200 with what the ABI let it
 * read of that request, one `name=value` line each (`name!` when the callback returned false), so
 * that tests/native/test_abi_probe.py can pin down what a native policy can and cannot see in
 * Envoy 1.40: headers and their repeated values, the peer address, another filter's dynamic
 * metadata (a jwt_authn-style payload Struct) and the client certificate, with the record of its
 * SANs that the module's network filter (native_runtime/peer_filter.c, built in) leaves on the
 * connection, in hex.
 */
#include <stdio.h>
#include <string.h>

#include "envoy_abi.h"
#include "peer_sans.h"

/* Callbacks of the ABI that the runtime does not use yet, declared as abi.h v0.1.0 declares them. */
size_t envoy_dynamic_module_callback_http_get_metadata_keys_count(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns);
bool envoy_dynamic_module_callback_http_get_metadata_list_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, size_t *result);
bool envoy_dynamic_module_callback_http_get_metadata_list_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, size_t index, envoy_dynamic_module_type_envoy_buffer *result);

#define BODY_BYTES 8192
#define JWT "envoy.filters.http.jwt_authn"

typedef struct {
  char bytes[BODY_BYTES];
  size_t length;
} body_t;

static envoy_dynamic_module_type_module_buffer literal(const char *s) {
  envoy_dynamic_module_type_module_buffer buffer = {s, strlen(s)};
  return buffer;
}

static void line(body_t *body, const char *name, int found, const char *value, size_t length) {
  int written = found ? snprintf(body->bytes + body->length, BODY_BYTES - body->length, "%s=%.*s\n", name,
                                 (int)length, value)
                      : snprintf(body->bytes + body->length, BODY_BYTES - body->length, "%s!\n", name);
  if (written > 0 && body->length + (size_t)written < BODY_BYTES) {
    body->length += (size_t)written;
  }
}

static void number(body_t *body, const char *name, int found, size_t value) {
  char text[32];
  int length = snprintf(text, sizeof text, "%zu", value);
  line(body, name, found, text, (size_t)length);
}

static void header(body_t *body, envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, const char *name) {
  envoy_dynamic_module_type_envoy_buffer value = {NULL, 0};
  size_t count = 0;
  bool found = envoy_dynamic_module_callback_http_get_header(
      filter_envoy, envoy_dynamic_module_type_http_header_type_RequestHeader, literal(name), &value, 0, &count);
  char key[64];
  snprintf(key, sizeof key, "header %s count", name);
  number(body, key, found, count);
  for (size_t i = 0; i < count; i++) {
    envoy_dynamic_module_callback_http_get_header(filter_envoy, envoy_dynamic_module_type_http_header_type_RequestHeader,
                                                  literal(name), &value, i, NULL);
    snprintf(key, sizeof key, "header %s %zu", name, i);
    line(body, key, 1, value.ptr, value.length);
  }
}

static void attribute(body_t *body, envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, const char *name,
                      envoy_dynamic_module_type_attribute_id id) {
  envoy_dynamic_module_type_envoy_buffer value = {NULL, 0};
  bool found = envoy_dynamic_module_callback_http_filter_get_attribute_string(filter_envoy, id, &value);
  line(body, name, found, value.ptr, value.length);
}

static void metadata(body_t *body, envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  static const char *keys[] = {"jwt_payload", "jwt_payload.sub", "flat", "list"};
  envoy_dynamic_module_type_metadata_source dynamic = envoy_dynamic_module_type_metadata_source_Dynamic;
  char key[64];
  number(body, "metadata keys", 1,
         envoy_dynamic_module_callback_http_get_metadata_keys_count(filter_envoy, dynamic, literal(JWT)));
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
    envoy_dynamic_module_type_envoy_buffer value = {NULL, 0};
    bool found = envoy_dynamic_module_callback_http_get_metadata_string(filter_envoy, dynamic, literal(JWT),
                                                                         literal(keys[k]), &value);
    snprintf(key, sizeof key, "metadata string %s", keys[k]);
    line(body, key, found, value.ptr, value.length);
    size_t size = 0;
    found = envoy_dynamic_module_callback_http_get_metadata_list_size(filter_envoy, dynamic, literal(JWT),
                                                                     literal(keys[k]), &size);
    snprintf(key, sizeof key, "metadata list %s size", keys[k]);
    number(body, key, found, size);
    for (size_t i = 0; found && i < size; i++) {
      bool item = envoy_dynamic_module_callback_http_get_metadata_list_string(filter_envoy, dynamic, literal(JWT),
                                                                              literal(keys[k]), i, &value);
      snprintf(key, sizeof key, "metadata list %s %zu", keys[k], i);
      line(body, key, item, value.ptr, value.length);
    }
  }
}

static void peer(body_t *body, envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  envoy_dynamic_module_type_envoy_buffer address = {NULL, 0};
  bool found = envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(filter_envoy, &address);
  line(body, "direct remote address", found, address.ptr, address.length);
  attribute(body, filter_envoy, "source.address", envoy_dynamic_module_type_attribute_id_SourceAddress);
  bool mtls = false;
  found = envoy_dynamic_module_callback_http_filter_get_attribute_bool(
      filter_envoy, envoy_dynamic_module_type_attribute_id_ConnectionMtls, &mtls);
  line(body, "connection.mtls", found, mtls ? "true" : "false", mtls ? 4 : 5);
  attribute(body, filter_envoy, "peer uri", envoy_dynamic_module_type_attribute_id_ConnectionUriSanPeerCertificate);
  attribute(body, filter_envoy, "peer dns", envoy_dynamic_module_type_attribute_id_ConnectionDnsSanPeerCertificate);
  attribute(body, filter_envoy, "peer subject",
            envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate);
  envoy_dynamic_module_type_envoy_buffer record = {NULL, 0};
  found = envoy_dynamic_module_callback_http_get_filter_state_bytes(filter_envoy, literal(PEER_SANS_KEY), &record);
  char hex[2048];
  size_t length = 0;
  for (size_t i = 0; found && i < record.length && length + 3 < sizeof hex; i++) {
    length += (size_t)snprintf(hex + length, sizeof hex - length, "%02x", (unsigned char)record.ptr[i]);
  }
  line(body, "peer sans record", found, hex, length);
}

const char *envoy_dynamic_module_on_program_init(void) { return POLICYC_ENVOY_ABI_VERSION; }

/* The config is not read; any non-NULL pointer is a config Envoy accepts. */
envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy, envoy_dynamic_module_type_envoy_buffer name,
    envoy_dynamic_module_type_envoy_buffer config) {
  return "probe";
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_dynamic_module_type_http_filter_config_module_ptr config) {}

envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  return config;
}

void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr filter) {}

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_http_filter_module_ptr filter,
    bool end_of_stream) {
  static const char *headers[] = {":path",   ":method", ":authority",
                                  ":scheme", "x-multi", "absent", "x-policyc-jwt-payload"};
  body_t body = {{0}, 0};
  for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
    header(&body, filter_envoy, headers[i]);
  }
  attribute(&body, filter_envoy, "request.path", envoy_dynamic_module_type_attribute_id_RequestPath);
  attribute(&body, filter_envoy, "request.method", envoy_dynamic_module_type_attribute_id_RequestMethod);
  attribute(&body, filter_envoy, "request.host", envoy_dynamic_module_type_attribute_id_RequestHost);
  metadata(&body, filter_envoy);
  peer(&body, filter_envoy);
  envoy_dynamic_module_type_module_buffer text = {body.bytes, body.length};
  envoy_dynamic_module_callback_http_send_response(filter_envoy, 200, NULL, 0, text, literal("probe"));
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration;
}
