/*
 * required_hooks.c: the HTTP filter event hooks Envoy 1.40 requires every module to define, for a
 * filter that decides on request headers alone. Envoy resolves all of them when a filter config is
 * created and refuses the config if one is missing, yet a filter that never buffers, calls out or
 * schedules work is never given the callout, stream, scheduler or watermark ones. Each lets the
 * stream go on.
 */
#include "envoy_abi.h"

envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_request_body(
    POLICYC_FILTER_ARGS, bool end_of_stream) {
  return envoy_dynamic_module_type_on_http_filter_body_status_Continue;
}

envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_request_trailers(
    POLICYC_FILTER_ARGS) {
  return envoy_dynamic_module_type_on_http_filter_trailers_status_Continue;
}

envoy_dynamic_module_type_on_http_filter_response_headers_status
envoy_dynamic_module_on_http_filter_response_headers(POLICYC_FILTER_ARGS, bool end_of_stream) {
  return envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue;
}

envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_response_body(
    POLICYC_FILTER_ARGS, bool end_of_stream) {
  return envoy_dynamic_module_type_on_http_filter_body_status_Continue;
}

envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_response_trailers(
    POLICYC_FILTER_ARGS) {
  return envoy_dynamic_module_type_on_http_filter_trailers_status_Continue;
}

void envoy_dynamic_module_on_http_filter_stream_complete(POLICYC_FILTER_ARGS) {}

void envoy_dynamic_module_on_http_filter_http_callout_done(
    POLICYC_FILTER_ARGS, uint64_t callout_id, envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer *body_chunks, size_t body_chunks_size) {}

void envoy_dynamic_module_on_http_filter_http_stream_headers(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                             envoy_dynamic_module_type_envoy_http_header *headers,
                                                             size_t headers_size, bool end_stream) {}

void envoy_dynamic_module_on_http_filter_http_stream_data(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                          const envoy_dynamic_module_type_envoy_buffer *data,
                                                          size_t data_count, bool end_stream) {}

void envoy_dynamic_module_on_http_filter_http_stream_trailers(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                              envoy_dynamic_module_type_envoy_http_header *trailers,
                                                              size_t trailers_size) {}

void envoy_dynamic_module_on_http_filter_http_stream_complete(POLICYC_FILTER_ARGS, uint64_t stream_id) {}

void envoy_dynamic_module_on_http_filter_http_stream_reset(POLICYC_FILTER_ARGS, uint64_t stream_id,
                                                           envoy_dynamic_module_type_http_stream_reset_reason reason) {}

void envoy_dynamic_module_on_http_filter_scheduled(POLICYC_FILTER_ARGS, uint64_t event_id) {}

void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(POLICYC_FILTER_ARGS) {}

void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(POLICYC_FILTER_ARGS) {}
