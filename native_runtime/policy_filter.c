/*
 * policy_filter.c: policyc's native policy filter, an Envoy dynamic module (HTTP filter).
 *
 * The policy is in the routes: each route the filter runs on gives it a config of its own
 * (native_runtime/README.md, index_parse.c), parsed once when Envoy loads the routes, so that a
 * change of rules reaches every connection with the routes. A route's config is its service's
 * section of the decision index, or, for a service other filters decide, the filters it relies on,
 * which the listener's config (the filters its chain holds) must all name. Per request the filter
 * takes the route's section, and of its rules only the share its path's longest listed prefix
 * names (the rules such a path can match), and decides as lua_runtime/decide.lua does: the first
 * deny rule that holds denies, else the first allow rule that holds allows, else default deny. The
 * decision and its rule are recorded in the stream's filter state (policyc.verdict) for the access
 * log; deny and default-deny are answered 403 unless the service runs dry.
 *
 * Fails closed: a config that does not parse is refused (Envoy then rejects the listener, or the
 * routes), and a request whose route has no config for the filter, or whose method, path, headers
 * or peer cannot be read (a presented certificate's
 * SANs included, which peer_filter.c records on the connection) gets the decision `error`, a
 * log line and a 403 (dry-run: continues). The index is read-only and shared by every worker; a
 * request's own state is on the stack, and allocates only for a section of more conditions, or a
 * path of more segments, than the stack buffers hold.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy_abi.h"
#include "peer_sans.h"
#include "policy_index.h"
#include "token_claims.h"

static const char VERDICT_KEY[] = "policyc.verdict";
static const char DENIED_BODY[] = "access denied\n";
static const char DENIED_DETAILS[] = "policyc_denied";
/* Where jwt_authn puts a verified token's payload (its forward_payload_header, set by
 * policyc/backends/envoy.py). jwt_authn removes the header from every request it sees before
 * verifying, and sets it only for a token it verified: a client cannot send it. */
static const char PAYLOAD_HEADER[] = "x-policyc-jwt-payload";

typedef envoy_dynamic_module_type_http_filter_envoy_ptr envoy_t;

/* A condition's value within one request, once evaluated. */
enum { UNKNOWN = 0, FALSE_VALUE = 1, TRUE_VALUE = 2 };

/* How many conditions, and path segments, a request keeps on the stack before allocating. */
enum { LOCAL_CONDITIONS = 256, LOCAL_SEGMENTS = 32 };

/* Whether the request's token, or its client certificate, has been read, and what was found. */
enum { TOKEN_UNREAD = 0, TOKEN_NONE, TOKEN_VERIFIED };
enum { CERTIFICATE_UNREAD = 0, CERTIFICATE_NONE, CERTIFICATE_PRESENTED };

/* One request as the policy sees it; what is costly to read is read when first needed. */
typedef struct {
  envoy_t envoy;
  const index_t *index;
  const section_t *section;
  bytes_t method;     /* once a rule tests it */
  bool method_read;
  bytes_t path;      /* :path up to the first '?' */
  bytes_t *segments; /* the path split at '/', once a glob needs it: local_segments or allocated */
  size_t segment_count;
  uint8_t peer[16];
  size_t peer_size;    /* 0 until read */
  int token;           /* TOKEN_UNREAD until a claim test needs it */
  claims_t claims;     /* when TOKEN_VERIFIED */
  int certificate;     /* CERTIFICATE_UNREAD until a peer test needs it */
  bytes_t subject;     /* when CERTIFICATE_PRESENTED */
  bool sans_read;      /* whether uris and dns hold the connection's record (peer_filter.c) */
  san_list_t uris, dns;
  uint8_t *memo;       /* one entry per condition of the section: local_memo or allocated */
  const char *problem; /* set when something cannot be read: the decision is `error` */
  bool elsewhere;      /* the service is decided by other filters of this chain (take_route) */
  uint8_t local_memo[LOCAL_CONDITIONS];
  bytes_t local_segments[LOCAL_SEGMENTS];
} request_t;

static envoy_dynamic_module_type_module_buffer module_buffer(bytes_t bytes) {
  envoy_dynamic_module_type_module_buffer buffer = {bytes.ptr, bytes.length};
  return buffer;
}

static bytes_t literal(const char *s) {
  bytes_t bytes = {s, strlen(s)};
  return bytes;
}

static bool fail(request_t *request, const char *problem) {
  if (request->problem == NULL) {
    request->problem = problem;
  }
  return false;
}

/* Value `index` of a request header, and how many it has; false when it has no such value. */
static bool header_value(envoy_t envoy, bytes_t name, size_t index, bytes_t *value, size_t *count) {
  envoy_dynamic_module_type_envoy_buffer buffer = {NULL, 0};
  size_t values = 0;
  bool found = envoy_dynamic_module_callback_http_get_header(envoy, envoy_dynamic_module_type_http_header_type_RequestHeader,
                                                             module_buffer(name), &buffer, index, &values);
  value->ptr = buffer.ptr;
  value->length = buffer.length;
  *count = values;
  return found && index < values && (buffer.ptr != NULL || buffer.length == 0);
}

/* The one value of a pseudo-header (:method, :path). */
static bool pseudo_header(request_t *request, const char *name, bytes_t *value) {
  size_t count;
  return header_value(request->envoy, literal(name), 0, value, &count) && count == 1;
}

/* `claim` is the claim a NODE_HEADER_CLAIM compares the values with. */
static bool value_passes(const index_t *index, const node_t *node, bytes_t value, bytes_t claim) {
  switch (node->kind) {
  case NODE_HEADER_CLAIM:
    return bytes_equal(value, claim);
  case NODE_HEADER_EQ:
  case NODE_SUBJECT_EQ:
  case NODE_URI_EQ:
  case NODE_DNS_EQ:
    return index_any_equal(index, node->first, node->count, value);
  case NODE_HEADER_PREFIX:
  case NODE_SUBJECT_PREFIX:
  case NODE_URI_PREFIX:
  case NODE_DNS_PREFIX:
    return bytes_starts_with(value, *index_string(index, node->first));
  default:
    return bytes_ends_with(value, *index_string(index, node->first));
  }
}

/* Some value of the header, one by one as Envoy holds them, passes the node's test. */
static bool any_header_value(request_t *request, const node_t *node, bytes_t claim) {
  bytes_t name = *index_string(request->index, node->header), value;
  size_t count = 0;
  if (!header_value(request->envoy, name, 0, &value, &count)) {
    return count == 0 ? false : fail(request, "a header value cannot be read");
  }
  for (size_t i = 0; i < count; i++) {
    size_t now;
    if (i > 0 && (!header_value(request->envoy, name, i, &value, &now) || now != count)) {
      return fail(request, "a header value cannot be read");
    }
    if (value_passes(request->index, node, value, claim)) {
      return true;
    }
  }
  return false;
}

static bool present(request_t *request, const node_t *node) {
  bytes_t value;
  size_t count;
  return header_value(request->envoy, *index_string(request->index, node->header), 0, &value, &count);
}

/* The path's segments, split at '/' as Python's str.split does (empty ones included). */
static bool split_path(request_t *request) {
  size_t count = 1;
  for (size_t i = 0; i < request->path.length; i++) {
    count += request->path.ptr[i] == '/';
  }
  request->segments = count <= LOCAL_SEGMENTS ? request->local_segments : calloc(count, sizeof(bytes_t));
  if (request->segments == NULL) {
    return fail(request, "no memory for the path's segments");
  }
  const char *start = request->path.ptr, *end = request->path.ptr + request->path.length;
  for (size_t i = 0; i < count; i++) {
    const char *slash = i + 1 < count ? memchr(start, '/', (size_t)(end - start)) : end;
    request->segments[i].ptr = start;
    request->segments[i].length = (size_t)(slash - start);
    start = slash + 1;
  }
  request->segment_count = count;
  return true;
}

static bool glob(request_t *request, const node_t *node) {
  if (request->segments == NULL && !split_path(request)) {
    return false;
  }
  return index_glob_matches(request->index, node, request->segments, request->segment_count);
}

static bool source(request_t *request, const node_t *node) {
  if (request->peer_size == 0) {
    envoy_dynamic_module_type_envoy_buffer address = {NULL, 0};
    bytes_t text = {NULL, 0};
    if (envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(request->envoy, &address)) {
      text.ptr = address.ptr;
      text.length = address.length;
    }
    request->peer_size = index_peer_address(text, request->peer);
    if (request->peer_size == 0) {
      return fail(request, "the peer address cannot be read");
    }
  }
  return index_any_network(request->index, node->first, node->count, request->peer, request->peer_size);
}

/* Whether the request carries a verified token, its claims read once: the payload header once
 * at most, and exactly what jwt_authn verified (token_claims.c), else the decision is `error`. */
static bool verified_token(request_t *request) {
  if (request->token == TOKEN_UNREAD) {
    bytes_t payload;
    size_t count = 0;
    if (!header_value(request->envoy, literal(PAYLOAD_HEADER), 0, &payload, &count)) {
      request->token = TOKEN_NONE;
      return count == 0 ? false : fail(request, "the token's payload cannot be read");
    }
    if (count != 1) {
      return fail(request, "the token's payload header is repeated");
    }
    if (!claims_parse(payload, &request->claims)) {
      return fail(request, "the token's payload is not base64url of one JSON object");
    }
    request->token = TOKEN_VERIFIED;
  }
  return request->token == TOKEN_VERIFIED;
}

/* The claim at the node's path: false when there is no token or no such claim. */
static bool claim(request_t *request, const node_t *node, const json_value_t **value) {
  uint32_t at;
  if (!verified_token(request)) {
    return false;
  }
  if (!claims_find(&request->claims, index_string(request->index, node->first), node->count, &at)) {
    return false;
  }
  *value = &request->claims.values[at];
  return true;
}

/* A string of the claims equals one of the node's values (those after its path). */
static bool string_in(request_t *request, const node_t *node, const json_value_t *value) {
  return value->type == JSON_STRING &&
         index_any_equal(request->index, node->first + node->count, node->values, value->text);
}

/* policyc/semantics/compare.py's compare_string on a claim; `true` and `false` as `is`. */
static bool claim_test(request_t *request, const node_t *node) {
  const json_value_t *value;
  if (!claim(request, node, &value)) {
    return false;
  }
  const bytes_t *wanted = index_string(request->index, node->first + node->count);
  switch (node->kind) {
  case NODE_CLAIM_EQ:
    return string_in(request, node, value);
  case NODE_CLAIM_PREFIX:
    return value->type == JSON_STRING && bytes_starts_with(value->text, *wanted);
  case NODE_CLAIM_SUFFIX:
    return value->type == JSON_STRING && bytes_ends_with(value->text, *wanted);
  case NODE_CLAIM_CONTAINS:
    if (value->type != JSON_ARRAY) {
      return string_in(request, node, value);
    }
    for (uint32_t item = (uint32_t)(value - request->claims.values) + 1; item < value->end;
         item = request->claims.values[item].end) {
      if (string_in(request, node, &request->claims.values[item])) {
        return true;
      }
    }
    return false;
  case NODE_CLAIM_TRUE:
    return value->type == JSON_TRUE;
  default:
    return value->type == JSON_FALSE;
  }
}

/* The claim is a string and some value of the header equals it. */
static bool header_equals_claim(request_t *request, const node_t *node) {
  const json_value_t *value;
  if (!claim(request, node, &value) || value->type != JSON_STRING) {
    return false;
  }
  return any_header_value(request, node, value->text);
}

/* Whether the client presented a certificate, read once with its subject. The listener asks for
 * one only with the policy's trusted CAs, and a certificate they do not verify fails the
 * handshake (policyc/semantics/peer.py), so a presented one is a verified one. */
static bool peer_certificate(request_t *request) {
  if (request->certificate == CERTIFICATE_UNREAD) {
    bool mtls = false;
    envoy_dynamic_module_type_envoy_buffer subject = {NULL, 0};
    request->certificate = CERTIFICATE_NONE;
    if (!envoy_dynamic_module_callback_http_filter_get_attribute_bool(
            request->envoy, envoy_dynamic_module_type_attribute_id_ConnectionMtls, &mtls) ||
        !mtls) {
      return false; /* no TLS, or no certificate */
    }
    if (!envoy_dynamic_module_callback_http_filter_get_attribute_string(
            request->envoy, envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate, &subject) ||
        (subject.ptr == NULL && subject.length > 0)) {
      return fail(request, "the client certificate's subject cannot be read");
    }
    request->subject.ptr = subject.ptr == NULL ? "" : subject.ptr;
    request->subject.length = subject.length;
    request->certificate = CERTIFICATE_PRESENTED;
  }
  return request->certificate == CERTIFICATE_PRESENTED;
}

/* The presented certificate's URI SANs, or DNS SANs: false when none was presented. They are the
 * record the network filter (peer_filter.c) left in the connection's filter state, read once; a
 * certificate without one, or with one that is not exactly a record, is the decision `error`. */
static bool peer_sans(request_t *request, bool uri, san_list_t *list) {
  if (!peer_certificate(request)) {
    return false;
  }
  if (!request->sans_read) {
    envoy_dynamic_module_type_envoy_buffer record = {NULL, 0};
    if (!envoy_dynamic_module_callback_http_get_filter_state_bytes(request->envoy, module_buffer(literal(PEER_SANS_KEY)),
                                                                   &record)) {
      return fail(request, "the client certificate's SANs were not recorded on the connection");
    }
    bytes_t bytes = {record.ptr, record.length};
    if (!peer_sans_read(bytes, &request->uris, &request->dns)) {
      return fail(request, "the record of the client certificate's SANs is malformed");
    }
    request->sans_read = true;
  }
  *list = uri ? request->uris : request->dns;
  return true;
}

/* Some SAN of the node's kind passes its test, one by one in the certificate's order. */
static bool any_san(request_t *request, const node_t *node) {
  san_list_t list;
  bytes_t san;
  if (!peer_sans(request, node->kind <= NODE_URI_SUFFIX, &list)) {
    return false;
  }
  while (san_list_next(&list, &san)) {
    if (value_passes(request->index, node, san, literal(""))) {
      return true;
    }
  }
  return false;
}

/* :method, read when a rule first tests it. */
static bool read_method(request_t *request) {
  if (!request->method_read) {
    if (!pseudo_header(request, ":method", &request->method)) {
      return fail(request, "the request has no single :method");
    }
    request->method_read = true;
  }
  return true;
}

static bool evaluate(request_t *request, uint32_t at);

/* A named condition, evaluated at most once per request. */
static bool condition(request_t *request, uint32_t i) {
  if (request->memo[i] == UNKNOWN) {
    bool value = evaluate(request, index_condition(request->index, request->section->conditions + i)->root);
    if (request->problem != NULL) {
      return false;
    }
    request->memo[i] = value ? TRUE_VALUE : FALSE_VALUE;
  }
  return request->memo[i] == TRUE_VALUE;
}

/* Whether the request arrives in the node's window, by the wall clock read now, in whole seconds
 * as Lua's os.time() reads it: a grant ends on time whatever the config's age. */
static bool within(const node_t *node) {
  uint64_t start = (uint64_t)node->first | (uint64_t)node->header << 32;
  uint64_t end = (uint64_t)node->count | (uint64_t)node->values << 32;
  time_t now = time(NULL);
  return now >= 0 && (uint64_t)now >= start && (uint64_t)now < end;
}

/* Whether the expression at `at` holds. Recursion is bounded by INDEX_MAX_DEPTH (index_parse.c
 * counts conditions as written out); once a problem is set, every result is meaningless. */
static bool evaluate(request_t *request, uint32_t at) {
  const index_t *index = request->index;
  const node_t *node = index_node(index, at);
  if (request->problem != NULL) {
    return false;
  }
  switch (node->kind) {
  case NODE_AND:
  case NODE_OR:
    for (uint32_t i = 0, operand = at + 1; i < node->count; i++, operand = index_node(index, operand)->end) {
      if (evaluate(request, operand) != (node->kind == NODE_AND)) {
        return node->kind == NODE_OR;
      }
    }
    return node->kind == NODE_AND;
  case NODE_NOT:
    return !evaluate(request, at + 1);
  case NODE_REF:
    return condition(request, node->first);
  case NODE_METHOD:
    return read_method(request) && index_any_equal(index, node->first, node->count, request->method);
  case NODE_PATH_EQ:
    return index_any_equal(index, node->first, node->count, request->path);
  case NODE_PATH_PREFIX:
    return bytes_starts_with(request->path, *index_string(index, node->first));
  case NODE_PATH_GLOB:
    return glob(request, node);
  case NODE_HEADER_EQ:
  case NODE_HEADER_PREFIX:
  case NODE_HEADER_SUFFIX:
    return any_header_value(request, node, literal(""));
  case NODE_PRESENT:
    return present(request, node);
  case NODE_SOURCE:
    return source(request, node);
  case NODE_TOKEN:
    return verified_token(request);
  case NODE_CLAIM_EQ:
  case NODE_CLAIM_PREFIX:
  case NODE_CLAIM_SUFFIX:
  case NODE_CLAIM_CONTAINS:
  case NODE_CLAIM_TRUE:
  case NODE_CLAIM_FALSE:
    return claim_test(request, node);
  case NODE_HEADER_CLAIM:
    return header_equals_claim(request, node);
  case NODE_PEER_TRUSTED:
    return peer_certificate(request);
  case NODE_SUBJECT_EQ:
  case NODE_SUBJECT_PREFIX:
  case NODE_SUBJECT_SUFFIX:
    return peer_certificate(request) && value_passes(index, node, request->subject, literal(""));
  case NODE_URI_EQ:
  case NODE_URI_PREFIX:
  case NODE_URI_SUFFIX:
  case NODE_DNS_EQ:
  case NODE_DNS_PREFIX:
  case NODE_DNS_SUFFIX:
    return any_san(request, node);
  case NODE_TIME:
    return within(node);
  default:
    return fail(request, "an unknown node"); /* index_parse never builds one */
  }
}

typedef struct {
  const char *decision;
  const rule_t *rule;
} verdict_t;

static const verdict_t ERROR_VERDICT = {"error", NULL};

/* Whether rule `number` of the section (counted over its deny rules, then its allow rules) holds;
 * if so, it is the verdict. Tried in number order, the first that holds decides: a deny rule
 * before any allow rule, each effect's rules in name order. */
static bool decides(request_t *request, uint32_t number, verdict_t *verdict) {
  const section_t *section = request->section;
  const rule_t *rule = index_rule(request->index, section->denies + number);
  if (!evaluate(request, rule->root) || request->problem != NULL) {
    return false;
  }
  verdict->decision = number < section->deny_count ? "deny" : "allow";
  verdict->rule = rule;
  return true;
}

/* The conditions' memo: on the stack, unless the section has more than it holds. */
static bool start_memo(request_t *request) {
  size_t count = request->section->condition_count;
  if (count <= LOCAL_CONDITIONS) {
    memset(request->local_memo, UNKNOWN, count);
    request->memo = request->local_memo;
    return true;
  }
  request->memo = calloc(count, 1);
  return request->memo != NULL || fail(request, "no memory for the conditions");
}

/* Reads the request and decides the rules its path can match (its share, else all of them);
 * request->problem is set instead when something cannot be read. */
static verdict_t decide(request_t *request) {
  verdict_t verdict = {"default-deny", NULL};
  const section_t *section = request->section;
  if (!pseudo_header(request, ":path", &request->path)) {
    fail(request, "the request has no single :path");
    return ERROR_VERDICT;
  }
  const char *query = request->path.length == 0 ? NULL : memchr(request->path.ptr, '?', request->path.length);
  request->path.length = query == NULL ? request->path.length : (size_t)(query - request->path.ptr);
  if (!start_memo(request)) {
    return ERROR_VERDICT;
  }
  const share_t *share = index_share(request->index, section, request->path);
  const uint32_t *numbers = share == NULL ? NULL : index_refs(request->index, share->first);
  uint32_t count = share == NULL ? section->deny_count + section->allow_count : share->count;
  for (uint32_t i = 0; i < count && request->problem == NULL; i++) {
    if (decides(request, numbers == NULL ? i : numbers[i], &verdict)) {
      break;
    }
  }
  return request->problem == NULL ? verdict : ERROR_VERDICT;
}

/* The route's config: its service's section, which request->index and request->section then
 * hold; or the filters another engine decides its service with, which this listener's chain must
 * all hold (its config's `chain` line) for the request to go on, recording nothing. On a hot reload
 * an old listener's connections take the new routes through the old chain, which may lack one:
 * such a route is refused here rather than let through unchecked. request->problem is set when the
 * route has no config for the filter, or relies on a filter the chain lacks. */
static void take_route(request_t *request, const index_t *listener) {
  const index_t *route = envoy_dynamic_module_callback_get_most_specific_route_config(request->envoy);
  if (route == NULL) {
    fail(request, "the route has no config for the policy filter");
  } else if (route->relies == 0) {
    request->index = route;
    request->section = route->sections.items; /* exactly one: per_route_config_new checks */
    if (request->section->reads_token && (listener->chain & CHAIN_JWT) == 0) {
      /* The claims header is a verified token's only behind jwt_authn: without it, the client's. */
      fail(request, "the route's rules read a token, and this listener's chain has no jwt_authn to verify one");
    }
  } else if ((route->relies & ~listener->chain) == 0) {
    request->elsewhere = true;
  } else {
    fail(request, "the route relies on a policy filter this listener's chain does not hold");
  }
}

/* The verdict, "<decision>" or "<decision> <rule>", in the stream's filter state under VERDICT_KEY,
 * which the access log writes out as its `native` field and the allow RBAC filter reads. Dynamic
 * metadata could hold the same, but Envoy then spends about 25,000 more instructions a request
 * setting it and writing it out as JSON (README.md, *Performance*). False unless the stream holds
 * exactly this verdict: Envoy 1.40 keeps a value already under the key (it stores it read-only) and
 * still answers true, so the value is read back. */
static bool record(envoy_t envoy, verdict_t verdict) {
  char local[256];
  size_t decision = strlen(verdict.decision), length = decision;
  if (verdict.rule != NULL) {
    length += 1 + verdict.rule->name.length;
  }
  char *text = length <= sizeof local ? local : malloc(length);
  if (text == NULL) {
    return false;
  }
  memcpy(text, verdict.decision, decision);
  if (verdict.rule != NULL) {
    text[decision] = ' ';
    memcpy(text + decision + 1, verdict.rule->name.ptr, verdict.rule->name.length);
  }
  bytes_t value = {text, length};
  envoy_dynamic_module_type_envoy_buffer held = {NULL, 0};
  bool stored =
      envoy_dynamic_module_callback_http_set_filter_state_bytes(envoy, module_buffer(literal(VERDICT_KEY)),
                                                                module_buffer(value)) &&
      envoy_dynamic_module_callback_http_get_filter_state_bytes(envoy, module_buffer(literal(VERDICT_KEY)), &held) &&
      held.length == length && held.ptr != NULL && memcmp(held.ptr, text, length) == 0;
  if (text != local) {
    free(text);
  }
  return stored;
}

static void log_error(const section_t *section, const char *problem) {
  char message[512];
  int length = section != NULL
                   ? snprintf(message, sizeof message, "policyc: error deciding for service %.*s: %s",
                              (int)(section->name.length > 200 ? 200 : section->name.length), section->name.ptr, problem)
                   : snprintf(message, sizeof message, "policyc: error deciding: %s", problem);
  bytes_t text = {message, length < 0 ? 0 : (size_t)length < sizeof message ? (size_t)length : sizeof message - 1};
  envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level_Error, module_buffer(text));
}

static void deny(envoy_t envoy) {
  envoy_dynamic_module_type_module_http_header content_type = {"content-type", 12, "text/plain", 10};
  envoy_dynamic_module_type_module_buffer body = {DENIED_BODY, sizeof DENIED_BODY - 1};
  envoy_dynamic_module_type_module_buffer details = {DENIED_DETAILS, sizeof DENIED_DETAILS - 1};
  envoy_dynamic_module_callback_http_send_response(envoy, 403, &content_type, 1, body, details);
}

const char *envoy_dynamic_module_on_program_init(void) { return POLICYC_ENVOY_ABI_VERSION; }

/* A config of the filter, parsed, or NULL (logged as `what`) when it does not parse or is not of
 * the shape `fits` asks of it. */
static index_t *parsed(envoy_dynamic_module_type_envoy_buffer config, bool (*fits)(const index_t *), const char *what) {
  index_t *index = index_parse(config.ptr, config.length);
  if (index != NULL && !fits(index)) {
    index_free(index);
    index = NULL;
  }
  if (index == NULL) {
    envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level_Error, module_buffer(literal(what)));
  }
  return index;
}

/* The listener's config names the filters its chain holds beside this one, and holds no rules. */
static bool fits_listener(const index_t *index) { return index->sections.count == 0 && index->relies == 0; }

/* A route's config is its service's section, or the filters that decide its service instead. */
static bool fits_route(const index_t *index) {
  return !index->chain_listed && (index->sections.count == 1) != (index->relies != 0);
}

envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  return parsed(config, fits_listener, "policyc: the policy filter's config does not parse; refusing it");
}

void envoy_dynamic_module_on_http_filter_config_destroy(
    envoy_dynamic_module_type_http_filter_config_module_ptr config) {
  index_free((index_t *)config);
}

/* Every route the filter runs on gives it one (policyc/backends/envoy.py: the filter is off for each
 * virtual host, so for its refusal routes, and back on for each service route with this config). */
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_on_http_filter_per_route_config_new(envoy_dynamic_module_type_envoy_buffer name,
                                                         envoy_dynamic_module_type_envoy_buffer config) {
  return parsed(config, fits_route, "policyc: a route's config for the policy filter does not parse; refusing it");
}

void envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr config) {
  index_free((index_t *)config);
}

/* The filter keeps no state of its own between hooks: it is the (read-only) listener's config. */
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy) {
  return config;
}

void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr filter) {}

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy, envoy_dynamic_module_type_http_filter_module_ptr filter,
    bool end_of_stream) {
  request_t request = {.envoy = filter_envoy};
  take_route(&request, filter);
  if (request.elsewhere) {
    return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue; /* nothing to record */
  }
  verdict_t verdict = request.problem == NULL ? decide(&request) : ERROR_VERDICT;
  if (request.memo != request.local_memo) {
    free(request.memo);
  }
  if (request.segments != request.local_segments) {
    free(request.segments);
  }
  claims_free(&request.claims);
  if (!record(filter_envoy, verdict)) {
    fail(&request, "the verdict could not be recorded for the access log");
    verdict = ERROR_VERDICT;
  }
  if (request.problem != NULL) {
    log_error(request.section, request.problem);
  }
  bool dry_run = request.section != NULL && request.section->dry_run;
  if (strcmp(verdict.decision, "allow") == 0 || dry_run) {
    return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue;
  }
  deny(filter_envoy);
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration;
}
