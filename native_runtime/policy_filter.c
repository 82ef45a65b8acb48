/*
 * policy_filter.c: policyc's native policy filter, an Envoy dynamic module (HTTP filter).
 *
 * Envoy loads lib<name>.so through envoy.filters.http.dynamic_modules and hands each filter config
 * its filter_config bytes. This first version decides on the request path alone:
 *
 *   # comment
 *   service <name>
 *   allow <rule> <exact path>
 *
 * A request whose path (the :path before any '?') equals an allow line's path continues to the
 * upstream; every other request is answered 403 by the filter. Each decision is recorded in the
 * dynamic metadata namespace "policyc" (service, decision, rule), as the Lua filter records its own,
 * so that the access log shows it.
 *
 * Fails closed: a config that does not parse is refused (Envoy then rejects the listener), and a
 * request without exactly one :path is denied. Nothing here keeps state across requests: the
 * parsed config is read-only once built and shared by every worker.
 */
#include <stdlib.h>
#include <string.h>

#include "envoy_abi.h"

#define MAX_CONFIG_BYTES (1u << 20)
#define MAX_RULES 4096u

typedef struct {
  char *name;
  char *path;
  size_t path_length;
} rule_t;

typedef struct {
  char *service;
  rule_t *rules;
  size_t rule_count;
} policy_t;

static const char NAMESPACE[] = "policyc";
static const char DENIED_BODY[] = "access denied\n";
static const char DENIED_DETAILS[] = "policyc_denied";

static envoy_dynamic_module_type_module_buffer text(const char *s, size_t length) {
  envoy_dynamic_module_type_module_buffer buffer = {s, length};
  return buffer;
}

static envoy_dynamic_module_type_module_buffer literal(const char *s) { return text(s, strlen(s)); }

static void log_error(const char *message) {
  envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level_Error, literal(message));
}

static void policy_free(policy_t *policy) {
  if (policy == NULL) {
    return;
  }
  for (size_t i = 0; i < policy->rule_count; i++) {
    free(policy->rules[i].name);
    free(policy->rules[i].path);
  }
  free(policy->rules);
  free(policy->service);
  free(policy);
}

/* A word of the line: no spaces inside, no control bytes (a path is printable ASCII in Envoy). */
static int valid_word(const char *word) {
  if (*word == '\0') {
    return 0;
  }
  for (const unsigned char *c = (const unsigned char *)word; *c != '\0'; c++) {
    if (*c <= ' ' || *c == 0x7f) {
      return 0;
    }
  }
  return 1;
}

/* Splits `line` in place into at most `max` space-separated words; returns how many, or -1. */
static int split(char *line, char **words, int max) {
  int count = 0;
  char *cursor = line;
  while (*cursor != '\0') {
    if (count == max) {
      return -1;
    }
    words[count++] = cursor;
    char *space = strchr(cursor, ' ');
    if (space == NULL) {
      break;
    }
    *space = '\0';
    cursor = space + 1;
    if (*cursor == '\0') {
      return -1; /* a trailing space: the config is written by the compiler, never so */
    }
  }
  for (int i = 0; i < count; i++) {
    if (!valid_word(words[i])) {
      return -1;
    }
  }
  return count;
}

static int add_rule(policy_t *policy, const char *name, const char *path) {
  if (policy->rule_count == MAX_RULES || path[0] != '/') {
    return 0;
  }
  rule_t *rules = realloc(policy->rules, (policy->rule_count + 1) * sizeof(rule_t));
  if (rules == NULL) {
    return 0;
  }
  policy->rules = rules;
  rule_t *rule = &rules[policy->rule_count];
  rule->name = strdup(name);
  rule->path = strdup(path);
  rule->path_length = strlen(path);
  policy->rule_count++;
  return rule->name != NULL && rule->path != NULL;
}

/* One line of the config; 0 refuses the whole config. */
static int parse_line(policy_t *policy, char *line) {
  char *words[3];
  if (line[0] == '\0' || line[0] == '#') {
    return 1;
  }
  int count = split(line, words, 3);
  if (count == 2 && strcmp(words[0], "service") == 0 && policy->service == NULL) {
    policy->service = strdup(words[1]);
    return policy->service != NULL;
  }
  if (count == 3 && strcmp(words[0], "allow") == 0) {
    return add_rule(policy, words[1], words[2]);
  }
  return 0;
}

static policy_t *policy_parse(const char *bytes, size_t length) {
  if (length > MAX_CONFIG_BYTES || memchr(bytes, '\0', length) != NULL) {
    return NULL;
  }
  char *copy = malloc(length + 1);
  policy_t *policy = calloc(1, sizeof(policy_t));
  int ok = copy != NULL && policy != NULL;
  if (ok) {
    memcpy(copy, bytes, length);
    copy[length] = '\0';
    for (char *line = copy, *next; ok && line != NULL; line = next) {
      next = strchr(line, '\n');
      if (next != NULL) {
        *next++ = '\0';
      }
      ok = parse_line(policy, line);
    }
  }
  free(copy);
  if (!ok || policy->service == NULL) {
    policy_free(policy);
    return NULL;
  }
  return policy;
}

const char *envoy_dynamic_module_on_program_init(void) { return POLICYC_ENVOY_ABI_VERSION; }

envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  policy_t *policy = policy_parse(config.ptr == NULL ? "" : config.ptr, config.length);
  if (policy == NULL) {
    log_error("policyc: the policy filter's config does not parse; refusing it");
  }
  return policy;
}

void envoy_dynamic_module_on_http_filter_config_destroy(
    envoy_dynamic_module_type_http_filter_config_module_ptr config) {
  policy_free((policy_t *)config);
}

/* The filter keeps no state of its own per request: it is the (read-only) policy itself. */
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  return config;
}

void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr filter) {}

/* The allow rule whose path is the request's (the :path up to '?'), or NULL. */
static const rule_t *matching_rule(const policy_t *policy, envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  envoy_dynamic_module_type_envoy_buffer value = {NULL, 0};
  size_t count = 0;
  if (!envoy_dynamic_module_callback_http_get_header(filter_envoy, envoy_dynamic_module_type_http_header_type_RequestHeader,
                                                     literal(":path"), &value, 0, &count) ||
      count != 1 || value.ptr == NULL) {
    return NULL;
  }
  const char *query = memchr(value.ptr, '?', value.length);
  size_t length = query == NULL ? value.length : (size_t)(query - value.ptr);
  for (size_t i = 0; i < policy->rule_count; i++) {
    const rule_t *rule = &policy->rules[i];
    if (rule->path_length == length && memcmp(rule->path, value.ptr, length) == 0) {
      return rule;
    }
  }
  return NULL;
}

static void record(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, const char *key, const char *value) {
  envoy_dynamic_module_callback_http_set_dynamic_metadata_string(filter_envoy, literal(NAMESPACE), literal(key),
                                                                 literal(value));
}

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_http_filter_module_ptr filter,
    bool end_of_stream) {
  const policy_t *policy = filter;
  const rule_t *rule = matching_rule(policy, filter_envoy);
  record(filter_envoy, "service", policy->service);
  if (rule != NULL) {
    record(filter_envoy, "decision", "allow");
    record(filter_envoy, "rule", rule->name);
    return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue;
  }
  record(filter_envoy, "decision", "deny");
  envoy_dynamic_module_type_module_http_header content_type = {"content-type", 12, "text/plain", 10};
  envoy_dynamic_module_callback_http_send_response(filter_envoy, 403, &content_type, 1,
                                                   text(DENIED_BODY, sizeof DENIED_BODY - 1),
                                                   text(DENIED_DETAILS, sizeof DENIED_DETAILS - 1));
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration;
}
