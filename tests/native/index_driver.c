/*
 * index_driver.c: runs the native policy filter (native_runtime/policy_filter.c) outside Envoy,
 * playing the Envoy callbacks it uses, so that tests/native/test_index_driver.py can try many
 * configs and requests in one process built with the address and undefined-behaviour sanitizers.
 *
 *   index_driver CONFIG_FILE < REQUESTS
 *   index_driver --parse-many < CONFIGS
 *
 * A config here is what the compiler writes across a listener and its routes, as one text: its
 * first line and the lines before the first `service` line are the listener's config, and each
 * section, after that same first line, the config of a route of its own.
 *
 * With --parse-many, stdin holds configs, each as its length in decimal, "\n", then its bytes, and
 * each gets one stdout line, `accepted` when the filter takes the listener's and every route's
 * config, `refused` otherwise. Otherwise the driver exits 1 when the filter refuses a config in
 * CONFIG_FILE, and each stdin line is one request, tokens separated by one space, each `-` (absent)
 * or `x` and the hex of its bytes:
 *
 *   <route service> <method> <path> <peer address> [<header name> <header value>]...
 *
 * (the route is the one whose section is the service's: none for `-`, or a service without one;
 * the header `:route-filters` gives the request a route whose config is a `relies` line of its
 * value instead, and a request whose route config the filter refuses gets the line `refused - -`)
 * (likewise the headers `:mtls` and `:subject` stand for the client certificate's attributes, `:uri` and
 * `:dns`, each repeated in order, for its SANs, `:clock`, seconds since the epoch, for the time the
 * filter reads, `:record` for the record of SANs the policy filter finds on the connection instead
 * of the one the network filter made, `:sans-fail` for SANs the network filter cannot read, and
 * `:state-fails` for a stream whose filter state does not take the verdict, `:state-held` for one
 * that already holds the value given under the verdict's key)
 * and gets one stdout line: `<decision> <rule> <answer>`, the rule as `x` and hex (`-`: none
 * recorded), the answer `403` or `continue`. The filter's log lines go to stderr.
 *
 * Each request comes on a connection of its own: the network filter (native_runtime/peer_filter.c)
 * sees it first, as Envoy would run it before the HTTP connection manager, reading twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy_abi.h"
#include "peer_sans.h"
#include "policy_index.h"

#define MAX_FIELDS 256

typedef struct {
  char *ptr; /* NULL: absent */
  size_t length;
} field_t;

/* The request being decided and what the filter did with it. */
static field_t fields[MAX_FIELDS];
static size_t field_count;
static char decision[64], rule[1024]; /* the rule as `x` and hex, or `-` */
#define VERDICT_KEY "policyc.verdict"
static char verdict[1024]; /* the verdict the filter stored in the stream's filter state */
static size_t verdict_length;
static int answered;
/* What the network filter stored in the connection's filter state: exactly its bytes, allocated. */
static char *record;
static size_t record_length, records;

static bool same(field_t field, envoy_dynamic_module_type_module_buffer text) {
  return field.ptr != NULL && field.length == text.length && memcmp(field.ptr, text.ptr, text.length) == 0;
}

static bool give(field_t field, envoy_dynamic_module_type_envoy_buffer *out) {
  if (field.ptr == NULL) {
    return false;
  }
  out->ptr = field.ptr;
  out->length = field.length;
  return true;
}

void envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level level,
                                       envoy_dynamic_module_type_module_buffer message) {
  fprintf(stderr, "log %d: %.*s\n", (int)level, (int)message.length, message.ptr);
}

/* The route of the request being decided: its config for the filter, or NULL. */
static envoy_dynamic_module_type_http_filter_per_route_config_module_ptr route;

envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_callback_get_most_specific_route_config(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  return route;
}

bool envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *address) {
  return give(fields[3], address);
}

/* :method and :path are fields 1 and 2; headers are pairs from field 4 on. */
bool envoy_dynamic_module_callback_http_get_header(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
                                                   envoy_dynamic_module_type_http_header_type header_type,
                                                   envoy_dynamic_module_type_module_buffer key,
                                                   envoy_dynamic_module_type_envoy_buffer *result, size_t index,
                                                   size_t *count) {
  field_t method = {":method", 7}, path = {":path", 5};
  field_t *found[MAX_FIELDS];
  size_t n = 0;
  if (same(method, key) && fields[1].ptr != NULL) {
    found[n++] = &fields[1];
  } else if (same(path, key) && fields[2].ptr != NULL) {
    found[n++] = &fields[2];
  }
  for (size_t i = 4; i + 1 < field_count; i += 2) {
    if (same(fields[i], key)) {
      found[n++] = &fields[i + 1];
    }
  }
  if (count != NULL) {
    *count = n;
  }
  return index < n && give(*found[index], result);
}

/* The client certificate: the headers `:mtls` (its value `true` or not) and `:subject`, which
 * only the driver reads so (no request can carry them to a filter in Envoy). */
static bool pseudo_field(const char *name, field_t *value) {
  field_t key = {(char *)name, strlen(name)};
  for (size_t i = 4; i + 1 < field_count; i += 2) {
    envoy_dynamic_module_type_module_buffer text = {fields[i].ptr, fields[i].length};
    if (fields[i].ptr != NULL && same(key, text)) {
      *value = fields[i + 1];
      return value->ptr != NULL;
    }
  }
  return false;
}

/* The clock the filter reads with time(NULL): this program's definition stands in for the C
 * library's, so a request's `:clock` header can stop it at the seconds either side of a window's
 * ends; without one it is the machine's clock. */
time_t time(time_t *out) {
  field_t value;
  struct timespec now;
  time_t seconds;
  char digits[32];
  if (pseudo_field(":clock", &value) && value.length < sizeof digits) {
    memcpy(digits, value.ptr, value.length);
    digits[value.length] = '\0';
    seconds = (time_t)strtoll(digits, NULL, 10);
  } else {
    seconds = clock_gettime(CLOCK_REALTIME, &now) == 0 ? now.tv_sec : (time_t)-1;
  }
  if (out != NULL) {
    *out = seconds;
  }
  return seconds;
}

/* The `index`-th of the request's headers named `name`. */
static bool nth_field(const char *name, size_t index, field_t *value) {
  field_t key = {(char *)name, strlen(name)};
  for (size_t i = 4; i + 1 < field_count; i += 2) {
    envoy_dynamic_module_type_module_buffer text = {fields[i].ptr, fields[i].length};
    if (fields[i].ptr != NULL && same(key, text) && index-- == 0) {
      *value = fields[i + 1];
      return value->ptr != NULL;
    }
  }
  return false;
}

static size_t san_count(const char *name) {
  field_t value;
  size_t count = 0;
  while (nth_field(name, count, &value)) {
    count++;
  }
  return count;
}

static bool sans(const char *name, envoy_dynamic_module_type_envoy_buffer *out) {
  field_t value;
  if (pseudo_field(":sans-fail", &value)) {
    return false;
  }
  for (size_t i = 0; nth_field(name, i, &value); i++) {
    give(value, &out[i]);
  }
  return true;
}

size_t envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy) {
  return san_count(":uri");
}

bool envoy_dynamic_module_callback_network_filter_get_ssl_uri_sans(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *out) {
  return sans(":uri", out);
}

size_t envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans_size(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy) {
  return san_count(":dns");
}

bool envoy_dynamic_module_callback_network_filter_get_ssl_dns_sans(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_envoy_buffer *out) {
  return sans(":dns", out);
}

bool envoy_dynamic_module_callback_network_set_filter_state_bytes(
    envoy_dynamic_module_type_network_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value) {
  field_t expected = {PEER_SANS_KEY, sizeof PEER_SANS_KEY - 1};
  if (!same(expected, key)) {
    fprintf(stderr, "the network filter stored another key\n");
    exit(3);
  }
  free(record);
  record = malloc(value.length > 0 ? value.length : 1);
  if (record == NULL) {
    exit(2);
  }
  memcpy(record, value.ptr, value.length);
  record_length = value.length;
  records++;
  return true;
}

/* The record the network filter stored, unless the request gives its own (`:record`); a copy of
 * exactly its bytes, so that reading past it is caught. */
bool envoy_dynamic_module_callback_http_get_filter_state_bytes(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
                                                               envoy_dynamic_module_type_module_buffer key,
                                                               envoy_dynamic_module_type_envoy_buffer *result) {
  field_t expected = {PEER_SANS_KEY, sizeof PEER_SANS_KEY - 1}, verdict_key = {VERDICT_KEY, sizeof VERDICT_KEY - 1}, value;
  if (same(verdict_key, key)) {
    result->ptr = verdict;
    result->length = verdict_length;
    return verdict_length > 0;
  }
  if (!same(expected, key)) {
    return false;
  }
  if (pseudo_field(":record", &value)) {
    free(record);
    record = malloc(value.length > 0 ? value.length : 1);
    if (record == NULL) {
      exit(2);
    }
    memcpy(record, value.ptr, value.length);
    record_length = value.length;
    records = 1;
  }
  if (records == 0) {
    return false;
  }
  result->ptr = record;
  result->length = record_length;
  return true;
}

bool envoy_dynamic_module_callback_http_filter_get_attribute_bool(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
                                                                  envoy_dynamic_module_type_attribute_id attribute,
                                                                  bool *result) {
  field_t value;
  if (attribute != envoy_dynamic_module_type_attribute_id_ConnectionMtls || !pseudo_field(":mtls", &value)) {
    return false;
  }
  *result = value.length == 4 && memcmp(value.ptr, "true", 4) == 0;
  return true;
}

bool envoy_dynamic_module_callback_http_filter_get_attribute_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_attribute_id attribute,
    envoy_dynamic_module_type_envoy_buffer *result) {
  field_t value;
  return attribute == envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate &&
         pseudo_field(":subject", &value) && give(value, result);
}

/* The verdict the filter stores: kept as the stream's filter state would keep it, and split back
 * into decision and rule for the output line (what the access log would show). */
bool envoy_dynamic_module_callback_http_set_filter_state_bytes(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
                                                               envoy_dynamic_module_type_module_buffer key,
                                                               envoy_dynamic_module_type_module_buffer value) {
  field_t expected = {VERDICT_KEY, sizeof VERDICT_KEY - 1}, given;
  if (!same(expected, key)) {
    fprintf(stderr, "the filter stored its verdict under another key\n");
    exit(3);
  }
  if (pseudo_field(":state-fails", &given)) {
    return false;
  }
  if (!pseudo_field(":state-held", &given)) { /* else Envoy keeps the value already there, and says true */
    given.ptr = (char *)value.ptr;
    given.length = value.length;
  }
  if (given.length > sizeof verdict) {
    exit(2);
  }
  memcpy(verdict, given.ptr, given.length);
  verdict_length = given.length;
  const char *space = memchr(verdict, ' ', verdict_length);
  size_t decision_length = space == NULL ? verdict_length : (size_t)(space - verdict);
  snprintf(decision, sizeof decision, "%.*s", (int)decision_length, verdict);
  if (space != NULL) {
    size_t length = (size_t)snprintf(rule, sizeof rule, "x");
    for (const char *at = space + 1; at < verdict + verdict_length && length + 3 < sizeof rule; at++) {
      length += (size_t)snprintf(rule + length, sizeof rule - length, "%02x", (unsigned char)*at);
    }
    rule[length] = '\0';
  }
  return true;
}

void envoy_dynamic_module_callback_http_send_response(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy,
                                                      uint32_t status_code,
                                                      envoy_dynamic_module_type_module_http_header *headers,
                                                      size_t headers_size, envoy_dynamic_module_type_module_buffer body,
                                                      envoy_dynamic_module_type_module_buffer details) {
  answered = (int)status_code;
}

static int hex_digit(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

/* A token decoded in place: `-` is absent, `x<hex>` its bytes. */
static bool decode(char *token, field_t *field) {
  size_t length = strlen(token);
  if (strcmp(token, "-") == 0) {
    field->ptr = NULL;
    return true;
  }
  if (token[0] != 'x' || length % 2 != 1) {
    return false;
  }
  for (size_t i = 0; i < length / 2; i++) {
    int high = hex_digit(token[1 + 2 * i]), low = hex_digit(token[2 + 2 * i]);
    if (high < 0 || low < 0) {
      return false;
    }
    token[i] = (char)(high * 16 + low);
  }
  field->ptr = token;
  field->length = length / 2;
  return true;
}

static bool read_request(char *line) {
  field_count = 0;
  for (char *token = strtok(line, " \n"); token != NULL; token = strtok(NULL, " \n")) {
    if (field_count == MAX_FIELDS || !decode(token, &fields[field_count++])) {
      return false;
    }
  }
  return field_count >= 4 && field_count % 2 == 0;
}

static char *read_file(const char *path, size_t *length) {
  FILE *file = fopen(path, "rb");
  char *text = NULL;
  long size;
  if (file != NULL && fseek(file, 0, SEEK_END) == 0 && (size = ftell(file)) >= 0 && fseek(file, 0, SEEK_SET) == 0 &&
      (text = malloc(size > 0 ? (size_t)size : 1)) != NULL) {
    *length = fread(text, 1, (size_t)size, file);
  }
  if (file != NULL) {
    fclose(file);
  }
  return text;
}

/* A config split as the compiler writes it (see the top of this file): the listener's and each
 * route's, taken by the filter, or NULL where it refuses one. */
#define MAX_ROUTES 4096
typedef struct {
  envoy_dynamic_module_type_http_filter_config_module_ptr listener;
  envoy_dynamic_module_type_http_filter_per_route_config_module_ptr routes[MAX_ROUTES];
  size_t route_count;
  bool refused;
} configs_t;

static envoy_dynamic_module_type_envoy_buffer name_buffer = {"policy", 6};

/* The filter's route config of `header` followed by the `length` bytes at `body`. */
static envoy_dynamic_module_type_http_filter_per_route_config_module_ptr route_config(const char *header, size_t header_length,
                                                                                     const char *body, size_t length) {
  char *text = malloc(header_length + length + 1); /* exactly the config: reading past it is caught */
  if (text == NULL) {
    exit(2);
  }
  memcpy(text, header, header_length);
  memcpy(text + header_length, body, length);
  envoy_dynamic_module_type_envoy_buffer config = {text, header_length + length};
  envoy_dynamic_module_type_http_filter_per_route_config_module_ptr taken =
      envoy_dynamic_module_on_http_filter_per_route_config_new(name_buffer, config);
  free(text); /* the filter keeps no pointer into its config text */
  return taken;
}

/* The first line from `at` on that starts with `word`, or `end`. */
static const char *line_starting(const char *at, const char *end, const char *word) {
  size_t length = strlen(word);
  while (at < end) {
    if ((size_t)(end - at) > length && memcmp(at, word, length) == 0) {
      return at;
    }
    const char *newline = memchr(at, '\n', (size_t)(end - at));
    if (newline == NULL) {
      break;
    }
    at = newline + 1;
  }
  return end;
}

static void split(const char *text, size_t length, configs_t *configs) {
  memset(configs, 0, sizeof *configs);
  const char *end = text + length, *newline = memchr(text, '\n', length);
  size_t header = newline == NULL ? length : (size_t)(newline + 1 - text);
  const char *section = line_starting(text + header, end, "service ");
  char *listener = malloc((size_t)(section - text) + 1);
  if (listener == NULL) {
    exit(2);
  }
  memcpy(listener, text, (size_t)(section - text));
  envoy_dynamic_module_type_envoy_buffer config = {listener, (size_t)(section - text)};
  configs->listener = envoy_dynamic_module_on_http_filter_config_new(NULL, name_buffer, config);
  free(listener);
  configs->refused = configs->listener == NULL;
  while (section < end) {
    if (configs->route_count == MAX_ROUTES) {
      fprintf(stderr, "more than %d sections\n", MAX_ROUTES);
      exit(2);
    }
    const char *newline_after = memchr(section, '\n', (size_t)(end - section));
    const char *next = newline_after == NULL ? end : line_starting(newline_after + 1, end, "service ");
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr taken =
        route_config(text, header, section, (size_t)(next - section));
    configs->refused |= taken == NULL;
    configs->routes[configs->route_count++] = taken;
    section = next;
  }
}

static void destroy(configs_t *configs) {
  envoy_dynamic_module_on_http_filter_config_destroy(configs->listener);
  for (size_t i = 0; i < configs->route_count; i++) {
    envoy_dynamic_module_on_http_filter_per_route_config_destroy(configs->routes[i]);
  }
}

/* The route config whose section is the service's, or NULL. */
static envoy_dynamic_module_type_http_filter_per_route_config_module_ptr route_of(const configs_t *configs, field_t service) {
  for (size_t i = 0; service.ptr != NULL && i < configs->route_count; i++) {
    const section_t *section = ((const index_t *)configs->routes[i])->sections.items;
    if (section != NULL && section->name.length == service.length &&
        memcmp(section->name.ptr, service.ptr, service.length) == 0) {
      return configs->routes[i];
    }
  }
  return NULL;
}

static int parse_many(void) {
  size_t length;
  static configs_t configs;
  while (scanf("%zu", &length) == 1 && getchar() == '\n') {
    char *text = malloc(length > 0 ? length : 1); /* exactly the config: reading past it is caught */
    if (text == NULL || fread(text, 1, length, stdin) != length) {
      fprintf(stderr, "bad config record\n");
      return 2;
    }
    split(text, length, &configs);
    printf("%s\n", configs.refused ? "refused" : "accepted");
    destroy(&configs);
    free(text);
  }
  return 0;
}

/* The request's `:route-filters` header, if it has one. */
static bool route_filters(field_t *value) {
  field_t key = {":route-filters", 14};
  for (size_t i = 4; i + 1 < field_count; i += 2) {
    envoy_dynamic_module_type_module_buffer text = {key.ptr, key.length};
    if (same(fields[i], text)) {
      *value = fields[i + 1];
      return true;
    }
  }
  return false;
}

int main(int argc, char **argv) {
  size_t length = 0;
  if (argc == 2 && strcmp(argv[1], "--parse-many") == 0) {
    return parse_many();
  }
  char *text = argc == 2 ? read_file(argv[1], &length) : NULL;
  if (text == NULL) {
    fprintf(stderr, "usage: index_driver CONFIG_FILE < REQUESTS | index_driver --parse-many < CONFIGS\n");
    return 2;
  }
  static configs_t configs;
  split(text, length, &configs);
  const char *newline = memchr(text, '\n', length);
  size_t header = newline == NULL ? length : (size_t)(newline + 1 - text);
  if (configs.refused) {
    return 1;
  }
  envoy_dynamic_module_type_envoy_buffer peer_name = {"peer_sans", 9}, empty = {"", 0};
  envoy_dynamic_module_type_network_filter_config_module_ptr peer_config =
      envoy_dynamic_module_on_network_filter_config_new(NULL, peer_name, empty);
  char *line = NULL;
  size_t capacity = 0;
  while (getline(&line, &capacity, stdin) > 0) {
    if (!read_request(line)) {
      fprintf(stderr, "bad request line\n");
      return 2;
    }
    snprintf(decision, sizeof decision, "-");
    snprintf(rule, sizeof rule, "-");
    verdict_length = 0;
    answered = 0;
    records = 0;
    field_t relied_on;
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr relies = NULL;
    if (route_filters(&relied_on)) {
      char body[512];
      int body_length = snprintf(body, sizeof body, "relies %.*s\n", (int)(relied_on.ptr == NULL ? 0 : relied_on.length),
                                 relied_on.ptr == NULL ? "" : relied_on.ptr);
      if (body_length < 0 || (size_t)body_length >= sizeof body) {
        fprintf(stderr, "a :route-filters value too long\n");
        return 2;
      }
      relies = route_config(text, header, body, (size_t)body_length);
      if (relies == NULL) {
        printf("refused - -\n");
        fflush(stdout);
        continue;
      }
    }
    route = relies != NULL ? relies : route_of(&configs, fields[0]);
    envoy_dynamic_module_type_network_filter_module_ptr connection =
        envoy_dynamic_module_on_network_filter_new(peer_config, NULL);
    envoy_dynamic_module_on_network_filter_new_connection(NULL, connection);
    for (int read = 0; read < 2; read++) {
      envoy_dynamic_module_on_network_filter_read(NULL, connection, 1, false);
    }
    if (records > 1) {
      fprintf(stderr, "the network filter recorded the SANs twice\n");
      return 3;
    }
    envoy_dynamic_module_type_http_filter_module_ptr filter =
        envoy_dynamic_module_on_http_filter_new(configs.listener, NULL);
    envoy_dynamic_module_type_on_http_filter_request_headers_status status =
        envoy_dynamic_module_on_http_filter_request_headers(NULL, filter, true);
    envoy_dynamic_module_on_http_filter_destroy(filter);
    envoy_dynamic_module_on_network_filter_destroy(connection);
    envoy_dynamic_module_on_http_filter_per_route_config_destroy(relies);
    bool stopped = status == envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration;
    if (stopped != (answered == 403)) {
      fprintf(stderr, "the filter stopped without answering, or answered and continued\n");
      return 3;
    }
    printf("%s %s %s\n", decision, rule, stopped ? "403" : "continue");
    fflush(stdout);
  }
  free(line);
  free(record);
  free(text);
  envoy_dynamic_module_on_network_filter_config_destroy(peer_config);
  destroy(&configs);
  return 0;
}
