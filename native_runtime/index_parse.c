/*
 * index_parse.c: reads a config of the filter, "policyc-native 5" (native_runtime/README.md), into a
 * decision index, and refuses any text that is not exactly that format.
 *
 * The text is written by the compiler, so nothing is forgiven: one space between tokens, "\n" at
 * the end of every line, lower-case hex, decimal numbers without leading zeros, counts that match
 * what follows, a `ref` only to a condition defined above it, a section's lines in their order and
 * closed by `end`, shares in order of their prefixes, each naming its rules in
 * order. Work and memory are linear in the text's length, and the
 * recursion of the expression parser is capped at INDEX_MAX_DEPTH.
 */
#include <stdlib.h>
#include <string.h>

#include "policy_index.h"

#define MAX_NUMBER 4000000000u /* counts and positions fit 32 bits */

/* The rest of one line: tokens separated by single spaces (checked once per line). */
typedef struct {
  const char *at;
  const char *end;
} line_t;

/* Where the parser stands within a section: its lines come in this order. */
typedef enum { OUTSIDE, AFTER_SERVICE, CONDITIONS, DENIES, ALLOWS, SHARES } stage_t;

typedef struct {
  index_t *index;
  char *pool_end; /* where the next decoded string goes */
  stage_t stage;
} parser_t;

/* A new zeroed element at the end of `vector`, or NULL. Positions are 32-bit, so is the count. */
static void *push(vector_t *vector, size_t size) {
  if (vector->count == vector->capacity) {
    size_t capacity = vector->capacity == 0 ? 16 : vector->capacity * 2;
    if (capacity > MAX_NUMBER) {
      return NULL;
    }
    void *items = realloc(vector->items, capacity * size);
    if (items == NULL) {
      return NULL;
    }
    vector->items = items;
    vector->capacity = capacity;
  }
  char *slot = (char *)vector->items + vector->count++ * size;
  memset(slot, 0, size);
  return slot;
}

static uint32_t count32(const vector_t *vector) { return (uint32_t)vector->count; }

static node_t *node_at(parser_t *p, uint32_t at) { return (node_t *)p->index->nodes.items + at; }

static section_t *open_section(parser_t *p) {
  return (section_t *)p->index->sections.items + (p->index->sections.count - 1);
}

static bool next_token(line_t *line, bytes_t *token) {
  if (line->at == line->end) {
    return false;
  }
  const char *space = memchr(line->at, ' ', (size_t)(line->end - line->at));
  const char *stop = space == NULL ? line->end : space;
  token->ptr = line->at;
  token->length = (size_t)(stop - line->at);
  line->at = space == NULL ? line->end : space + 1;
  return true;
}

static bool is(bytes_t token, const char *word) {
  size_t length = strlen(word);
  return token.length == length && memcmp(token.ptr, word, length) == 0;
}

/* A decimal number up to `max`: digits only, no sign, no leading zero. */
static bool number64(line_t *line, uint64_t max, uint64_t *value) {
  bytes_t token;
  if (!next_token(line, &token) || token.length == 0 || token.length > 19 ||
      (token.ptr[0] == '0' && token.length > 1)) {
    return false;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < token.length; i++) {
    if (token.ptr[i] < '0' || token.ptr[i] > '9') {
      return false;
    }
    total = total * 10 + (uint64_t)(token.ptr[i] - '0');
  }
  if (total > max) {
    return false;
  }
  *value = total;
  return true;
}

static bool number(line_t *line, uint32_t max, uint32_t *value) {
  uint64_t total;
  if (!number64(line, max, &total)) {
    return false;
  }
  *value = (uint32_t)total;
  return true;
}

/* `time <start> <end>`: both up to INDEX_MAX_TIME, split into the node's 32-bit fields. */
static bool time_atom(line_t *line, node_t *fields) {
  uint64_t start, end;
  if (!number64(line, INDEX_MAX_TIME, &start) || !number64(line, INDEX_MAX_TIME, &end)) {
    return false;
  }
  fields->kind = NODE_TIME;
  fields->first = (uint32_t)start;
  fields->header = (uint32_t)(start >> 32);
  fields->count = (uint32_t)end;
  fields->values = (uint32_t)(end >> 32);
  return true;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* `length` bytes of lower-case hex (2 digits a byte) into `out`. */
static bool decode_hex(const char *digits, size_t length, uint8_t *out) {
  for (size_t i = 0; i < length; i++) {
    int high = hex_digit(digits[2 * i]);
    int low = hex_digit(digits[2 * i + 1]);
    if (high < 0 || low < 0) {
      return false;
    }
    out[i] = (uint8_t)(high * 16 + low);
  }
  return true;
}

/* A string token, `x` and the hex of its bytes, decoded into the pool; *at gets its position. */
static bool string(parser_t *p, line_t *line, uint32_t *at) {
  bytes_t token;
  if (!next_token(line, &token) || token.length == 0 || token.ptr[0] != 'x' || token.length % 2 != 1) {
    return false;
  }
  size_t length = token.length / 2;
  *at = count32(&p->index->strings);
  bytes_t *string = push(&p->index->strings, sizeof(bytes_t));
  if (string == NULL || !decode_hex(token.ptr + 1, length, (uint8_t *)p->pool_end)) {
    return false;
  }
  string->ptr = p->pool_end;
  string->length = length;
  p->pool_end += length;
  return true;
}

/* A header's name: a string, not empty, without upper-case letters (Envoy holds names in lower
 * case) or the bytes no header name can hold (NUL, CR, LF). */
static bool header_name(parser_t *p, line_t *line, uint32_t *at) {
  if (!string(p, line, at)) {
    return false;
  }
  bytes_t name = *index_string(p->index, *at);
  for (size_t i = 0; i < name.length; i++) {
    char c = name.ptr[i];
    if ((c >= 'A' && c <= 'Z') || c == '\0' || c == '\r' || c == '\n') {
      return false;
    }
  }
  return name.length > 0;
}

/* `count` then that many strings; *first gets the first one's position. */
static bool strings(parser_t *p, line_t *line, uint32_t *first, uint32_t *count) {
  uint32_t unused;
  *first = count32(&p->index->strings);
  if (!number(line, MAX_NUMBER, count)) {
    return false;
  }
  for (uint32_t i = 0; i < *count; i++) {
    if (!string(p, line, &unused)) {
      return false;
    }
  }
  return true;
}

/* A network: `4/<length>/<8 hex digits>` or `6/<length>/<32 hex digits>`. */
static bool network(parser_t *p, line_t *line) {
  bytes_t token;
  network_t *net = push(&p->index->networks, sizeof(network_t));
  if (net == NULL || !next_token(line, &token) || token.length < 5 || token.ptr[1] != '/') {
    return false;
  }
  net->size = token.ptr[0] == '4' ? 4 : token.ptr[0] == '6' ? 16 : 0;
  const char *slash = memchr(token.ptr + 2, '/', token.length - 2);
  if (net->size == 0 || slash == NULL) {
    return false;
  }
  line_t prefix = {token.ptr + 2, slash};
  size_t digits = (size_t)(token.ptr + token.length - slash - 1);
  return number(&prefix, net->size * 8, &net->length) && prefix.at == prefix.end && digits == 2 * net->size &&
         decode_hex(slash + 1, net->size, net->bytes);
}

/* Fills the node at `at` but for its end, which its parser sets last. */
static void set_node(parser_t *p, uint32_t at, node_t fields) {
  fields.end = node_at(p, at)->end;
  *node_at(p, at) = fields;
  switch (fields.kind) {
  case NODE_TOKEN:
  case NODE_CLAIM_EQ:
  case NODE_CLAIM_PREFIX:
  case NODE_CLAIM_SUFFIX:
  case NODE_CLAIM_CONTAINS:
  case NODE_CLAIM_TRUE:
  case NODE_CLAIM_FALSE:
  case NODE_HEADER_CLAIM:
    open_section(p)->reads_token = true;
    break;
  default:
    break;
  }
}

/* One segment of a glob: `any`, or `seg <m>` and its m >= 1 pieces. */
static bool glob_segment(parser_t *p, line_t *line) {
  bytes_t token;
  glob_segment_t segment = {0, 0, 0};
  glob_segment_t *slot = push(&p->index->globs, sizeof(glob_segment_t));
  if (slot == NULL || !next_token(line, &token)) {
    return false;
  }
  if (is(token, "any")) {
    segment.any = 1;
  } else if (!is(token, "seg") || !strings(p, line, &segment.first, &segment.count) || segment.count == 0) {
    return false;
  }
  *slot = segment; /* strings() grows another vector: the slot has not moved */
  return true;
}

static bool path_atom(parser_t *p, line_t *line, uint32_t at) {
  bytes_t token;
  node_t fields = {.count = 1};
  bool ok = next_token(line, &token);
  if (ok && is(token, "eq")) {
    fields.kind = NODE_PATH_EQ;
    ok = strings(p, line, &fields.first, &fields.count);
  } else if (ok && is(token, "prefix")) {
    fields.kind = NODE_PATH_PREFIX;
    ok = string(p, line, &fields.first);
  } else if (ok && is(token, "glob")) {
    fields.kind = NODE_PATH_GLOB;
    fields.first = count32(&p->index->globs);
    ok = number(line, MAX_NUMBER, &fields.count);
    for (uint32_t i = 0; ok && i < fields.count; i++) {
      ok = glob_segment(p, line);
    }
  } else {
    return false;
  }
  set_node(p, at, fields);
  return ok;
}

/* A claim's path: `<k> x<key1> … x<keyk>`, k >= 1. */
static bool claim_path(parser_t *p, line_t *line, node_t *fields) {
  return strings(p, line, &fields->first, &fields->count) && fields->count > 0;
}

/* `claim <path> <test>`, the test `eq <n> x…`, `contains <n> x…`, `prefix x<v>`, `suffix x<v>`,
 * `true` or `false`. */
static bool claim_atom(parser_t *p, line_t *line, uint32_t at) {
  bytes_t token;
  uint32_t unused;
  node_t fields = {0};
  bool ok = claim_path(p, line, &fields) && next_token(line, &token);
  if (ok && (is(token, "eq") || is(token, "contains"))) {
    fields.kind = is(token, "eq") ? NODE_CLAIM_EQ : NODE_CLAIM_CONTAINS;
    ok = strings(p, line, &unused, &fields.values);
  } else if (ok && (is(token, "prefix") || is(token, "suffix"))) {
    fields.kind = is(token, "prefix") ? NODE_CLAIM_PREFIX : NODE_CLAIM_SUFFIX;
    fields.values = 1;
    ok = string(p, line, &unused);
  } else if (ok && (is(token, "true") || is(token, "false"))) {
    fields.kind = is(token, "true") ? NODE_CLAIM_TRUE : NODE_CLAIM_FALSE;
  } else {
    return false;
  }
  set_node(p, at, fields);
  return ok;
}

static bool header_atom(parser_t *p, line_t *line, uint32_t at) {
  bytes_t token;
  node_t fields = {.count = 1};
  if (!header_name(p, line, &fields.header) || !next_token(line, &token)) {
    return false;
  }
  bool ok;
  if (is(token, "eq")) {
    fields.kind = NODE_HEADER_EQ;
    ok = strings(p, line, &fields.first, &fields.count);
  } else if (is(token, "prefix") || is(token, "suffix")) {
    fields.kind = is(token, "prefix") ? NODE_HEADER_PREFIX : NODE_HEADER_SUFFIX;
    ok = string(p, line, &fields.first);
  } else if (is(token, "claim")) {
    fields.kind = NODE_HEADER_CLAIM;
    ok = claim_path(p, line, &fields);
  } else {
    return false;
  }
  set_node(p, at, fields);
  return ok;
}

/* The first of the three node kinds (eq, prefix, suffix, in that order) of a certificate's field. */
static bool peer_field(bytes_t token, node_kind_t *eq) {
  if (is(token, "subject")) {
    *eq = NODE_SUBJECT_EQ;
  } else if (is(token, "uri")) {
    *eq = NODE_URI_EQ;
  } else if (is(token, "dns")) {
    *eq = NODE_DNS_EQ;
  } else {
    return false;
  }
  return true;
}

/* `peer trusted`, or `peer subject|uri|dns` and a test as a header's: `eq <n> x…`, `prefix x`,
 * `suffix x`. */
static bool peer_atom(parser_t *p, line_t *line, uint32_t at) {
  bytes_t token;
  node_kind_t eq;
  node_t fields = {.count = 1};
  bool ok = next_token(line, &token);
  if (ok && is(token, "trusted")) {
    fields.kind = NODE_PEER_TRUSTED;
  } else if (ok && peer_field(token, &eq) && next_token(line, &token)) {
    if (is(token, "eq")) {
      fields.kind = eq;
      ok = strings(p, line, &fields.first, &fields.count);
    } else if (is(token, "prefix") || is(token, "suffix")) {
      fields.kind = eq + (is(token, "prefix") ? 1 : 2);
      ok = string(p, line, &fields.first);
    } else {
      return false;
    }
  } else {
    return false;
  }
  set_node(p, at, fields);
  return ok;
}

/* The leaves: every atom but ref. */
static bool atom(parser_t *p, line_t *line, bytes_t word, uint32_t at) {
  if (is(word, "path")) {
    return path_atom(p, line, at);
  }
  if (is(word, "header")) {
    return header_atom(p, line, at);
  }
  if (is(word, "claim")) {
    return claim_atom(p, line, at);
  }
  if (is(word, "peer")) {
    return peer_atom(p, line, at);
  }
  node_t fields = {0};
  bool ok;
  if (is(word, "method")) {
    fields.kind = NODE_METHOD;
    ok = strings(p, line, &fields.first, &fields.count);
  } else if (is(word, "token")) {
    fields.kind = NODE_TOKEN;
    ok = true;
  } else if (is(word, "time")) {
    ok = time_atom(line, &fields);
  } else if (is(word, "present")) {
    fields.kind = NODE_PRESENT;
    ok = header_name(p, line, &fields.header);
  } else if (is(word, "source")) {
    fields.kind = NODE_SOURCE;
    fields.first = count32(&p->index->networks);
    ok = number(line, MAX_NUMBER, &fields.count);
    for (uint32_t i = 0; ok && i < fields.count; i++) {
      ok = network(p, line);
    }
  } else {
    return false;
  }
  set_node(p, at, fields);
  return ok;
}

static bool expression(parser_t *p, line_t *line, uint32_t level, uint32_t *depth);

/* `n` operands of and/or (n of them, or the one of not); *depth gets the deepest one's depth. */
static bool operands(parser_t *p, line_t *line, uint32_t n, uint32_t level, uint32_t *depth) {
  *depth = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t operand_depth;
    if (!expression(p, line, level + 1, &operand_depth)) {
      return false;
    }
    *depth = operand_depth > *depth ? operand_depth : *depth;
  }
  return true;
}

/* Closes the node at `at`: its subtree ends here, and it is `depth` deep, at most the limit. */
static bool finish_node(parser_t *p, uint32_t at, uint32_t node_depth, uint32_t *depth) {
  node_at(p, at)->end = count32(&p->index->nodes);
  *depth = node_depth;
  return node_depth <= INDEX_MAX_DEPTH;
}

/* One expression in prefix notation; *depth gets its depth with conditions written out. */
static bool expression(parser_t *p, line_t *line, uint32_t level, uint32_t *depth) {
  bytes_t word;
  uint32_t at = count32(&p->index->nodes);
  if (level > INDEX_MAX_DEPTH || push(&p->index->nodes, sizeof(node_t)) == NULL || !next_token(line, &word)) {
    return false;
  }
  node_t fields = {.count = 1};
  uint32_t inner = 0;
  bool ok;
  if (is(word, "and") || is(word, "or")) {
    fields.kind = is(word, "and") ? NODE_AND : NODE_OR;
    ok = number(line, MAX_NUMBER, &fields.count) && operands(p, line, fields.count, level, &inner);
  } else if (is(word, "not")) {
    fields.kind = NODE_NOT;
    ok = operands(p, line, 1, level, &inner);
  } else if (is(word, "ref")) {
    const section_t *section = open_section(p);
    fields.kind = NODE_REF;
    ok = number(line, MAX_NUMBER, &fields.first) && fields.first < section->condition_count;
    inner = ok ? index_condition(p->index, section->conditions + fields.first)->depth : 0;
  } else {
    return atom(p, line, word, at) && finish_node(p, at, 1, depth);
  }
  set_node(p, at, fields);
  return ok && finish_node(p, at, inner + 1, depth);
}

/* A whole expression that ends its line. */
static bool line_expression(parser_t *p, line_t *line, uint32_t *root, uint32_t *depth) {
  *root = count32(&p->index->nodes);
  return expression(p, line, 1, depth) && line->at == line->end;
}

static bool service_line(parser_t *p, line_t *line) {
  uint32_t name;
  section_t *section;
  if (!string(p, line, &name) || line->at != line->end ||
      (section = push(&p->index->sections, sizeof(section_t))) == NULL) {
    return false;
  }
  section->name = *index_string(p->index, name);
  section->conditions = count32(&p->index->conditions);
  section->denies = section->allows = count32(&p->index->rules);
  section->groups = count32(&p->index->share_groups);
  p->stage = AFTER_SERVICE;
  return true;
}

static bool mode_line(parser_t *p, line_t *line) {
  bytes_t mode;
  if (!next_token(line, &mode) || line->at != line->end || !(is(mode, "enforce") || is(mode, "dry-run"))) {
    return false;
  }
  open_section(p)->dry_run = is(mode, "dry-run");
  p->stage = CONDITIONS;
  return true;
}

static bool condition_line(parser_t *p, line_t *line) {
  uint32_t i, root, depth;
  if (p->stage != CONDITIONS || !number(line, MAX_NUMBER, &i) || i != open_section(p)->condition_count ||
      !line_expression(p, line, &root, &depth)) {
    return false;
  }
  condition_t *condition = push(&p->index->conditions, sizeof(condition_t));
  if (condition == NULL) {
    return false;
  }
  condition->root = root;
  condition->depth = depth;
  open_section(p)->condition_count++;
  return true;
}

/* A deny or an allow line: rule name, expression. */
static bool rule_line(parser_t *p, line_t *line, stage_t stage) {
  uint32_t name, root, depth;
  if (p->stage > stage || !string(p, line, &name) || !line_expression(p, line, &root, &depth)) {
    return false;
  }
  rule_t *rule = push(&p->index->rules, sizeof(rule_t));
  if (rule == NULL) {
    return false;
  }
  rule->name = *index_string(p->index, name);
  rule->root = root;
  section_t *section = open_section(p);
  if (stage == DENIES) {
    section->deny_count++;
    section->allows++;
  } else {
    section->allow_count++;
  }
  p->stage = stage;
  return true;
}

/* Whether prefix `a` sorts before `b`: shorter first, then by bytes. */
static bool prefix_before(bytes_t a, bytes_t b) {
  if (a.length != b.length) {
    return a.length < b.length;
  }
  return a.length > 0 && memcmp(a.ptr, b.ptr, a.length) < 0;
}

/* The rule numbers of a share: `count` of them, increasing, each below the section's rule count. */
static bool share_rules(parser_t *p, line_t *line, uint32_t count) {
  const section_t *section = open_section(p);
  uint32_t rules = section->deny_count + section->allow_count;
  for (uint32_t i = 0, previous = 0; i < count; i++) {
    uint32_t rule;
    uint32_t *ref;
    if (!number(line, MAX_NUMBER, &rule) || rule >= rules || (i > 0 && rule <= previous) ||
        (ref = push(&p->index->refs, sizeof(uint32_t))) == NULL) {
      return false;
    }
    *ref = previous = rule;
  }
  return line->at == line->end;
}

/* `share x<prefix> <n> <r1> … <rn>`, after the section's rules and every share of a shorter or
 * (at the same length) lower prefix; shares of one length make one group. */
static bool share_line(parser_t *p, line_t *line) {
  uint32_t prefix, count;
  if (p->stage < CONDITIONS || !string(p, line, &prefix) || !number(line, MAX_NUMBER, &count)) {
    return false;
  }
  section_t *section = open_section(p);
  bytes_t text = *index_string(p->index, prefix);
  share_group_t *group = section->group_count == 0 ? NULL
                                                   : (share_group_t *)p->index->share_groups.items +
                                                         (section->groups + section->group_count - 1);
  const share_t *last = group == NULL ? NULL : (const share_t *)p->index->shares.items + (p->index->shares.count - 1);
  if (last != NULL && !prefix_before(*index_string(p->index, last->prefix), text)) {
    return false;
  }
  if (group == NULL || group->length != text.length) {
    if ((group = push(&p->index->share_groups, sizeof(share_group_t))) == NULL) {
      return false;
    }
    group->length = (uint32_t)text.length;
    group->first = count32(&p->index->shares);
    section->group_count++;
  }
  group->count++;
  share_t *share = push(&p->index->shares, sizeof(share_t));
  if (share == NULL) {
    return false;
  }
  share->prefix = prefix;
  share->first = count32(&p->index->refs);
  share->count = count;
  p->stage = SHARES;
  return share_rules(p, line, count);
}

uint32_t index_chain_bit(bytes_t name) {
  return is(name, "jwt")          ? CHAIN_JWT
         : is(name, "rbac-deny")  ? CHAIN_RBAC_DENY
         : is(name, "lua")        ? CHAIN_LUA
         : is(name, "rbac-allow") ? CHAIN_RBAC_ALLOW
                                  : 0;
}

/* Filter names among `allowed`, each once, in the order of their bits, into `bits`: the rest of a
 * `chain` line (the listener's chain besides this filter; maybe none) or a `relies` line (policy
 * filters, at least one). */
static bool filter_names(line_t *line, uint32_t allowed, uint32_t *bits) {
  bytes_t name;
  while (next_token(line, &name)) {
    uint32_t bit = index_chain_bit(name);
    if (bit <= *bits || (bit & allowed) == 0) { /* unknown (0), repeated, out of order or not allowed */
      return false;
    }
    *bits |= bit;
  }
  return true;
}

/* `chain` or `relies`, each at most once, before any section (a `relies` line read names one
 * filter at least, so its bits say whether there was one). */
static bool filters_line(parser_t *p, line_t *line, bool chain) {
  if (p->index->sections.count > 0 || (chain ? p->index->chain_listed : p->index->relies != 0)) {
    return false;
  }
  if (chain) {
    p->index->chain_listed = true;
    return filter_names(line, ~0u, &p->index->chain);
  }
  return filter_names(line, CHAIN_POLICY_FILTERS, &p->index->relies) && p->index->relies != 0;
}

static bool parse_line(parser_t *p, line_t *line) {
  bytes_t word;
  if (!next_token(line, &word)) {
    return false;
  }
  if (p->stage == OUTSIDE) {
    return is(word, "service")  ? service_line(p, line)
           : is(word, "chain")  ? filters_line(p, line, true)
           : is(word, "relies") && filters_line(p, line, false);
  }
  if (p->stage == AFTER_SERVICE) {
    return is(word, "mode") && mode_line(p, line);
  }
  if (is(word, "cond")) {
    return condition_line(p, line);
  }
  if (is(word, "deny") || is(word, "allow")) {
    return rule_line(p, line, is(word, "deny") ? DENIES : ALLOWS);
  }
  if (is(word, "share")) {
    return share_line(p, line);
  }
  if (is(word, "end") && line->at == line->end) {
    p->stage = OUTSIDE;
    return true;
  }
  return false;
}

/* Whether a line (without its "\n") is tokens separated by single spaces. */
static bool well_spaced(const char *start, size_t length) {
  if (length == 0 || start[0] == ' ' || start[length - 1] == ' ') {
    return false;
  }
  for (size_t i = 1; i < length; i++) {
    if (start[i] == ' ' && start[i - 1] == ' ') {
      return false;
    }
  }
  return true;
}

static const char HEADER[] = "policyc-native 5\n";

static bool parse(parser_t *p, const char *text, size_t length) {
  size_t header = sizeof HEADER - 1;
  if (length < header || memcmp(text, HEADER, header) != 0 || text[length - 1] != '\n') {
    return false;
  }
  for (const char *at = text + header, *end = text + length; at < end;) {
    const char *newline = memchr(at, '\n', (size_t)(end - at)); /* found: the text ends with one */
    line_t line = {at, newline};
    if (!well_spaced(at, (size_t)(newline - at)) || !parse_line(p, &line)) {
      return false;
    }
    at = newline + 1;
  }
  return p->stage == OUTSIDE;
}

void index_free(index_t *index) {
  if (index == NULL) {
    return;
  }
  vector_t *vectors[] = {&index->nodes,      &index->strings, &index->globs,  &index->networks,
                         &index->conditions, &index->rules,   &index->shares, &index->share_groups,
                         &index->refs,       &index->sections};
  for (size_t i = 0; i < sizeof vectors / sizeof *vectors; i++) {
    free(vectors[i]->items);
  }
  free(index->pool);
  free(index);
}

/* Gives back what a vector holds beyond its count (keeping one element, so that its items are never
 * NULL): Envoy keeps a parsed config per service route, most of them small. A vector that realloc
 * cannot shrink stays as it was. */
static void shrink(vector_t *vector, size_t size) {
  size_t keep = vector->count > 0 ? vector->count : 1;
  void *items = vector->items == NULL || vector->capacity <= keep ? NULL : realloc(vector->items, keep * size);
  if (items != NULL) {
    vector->items = items;
    vector->capacity = keep;
  }
}

static void shrink_all(index_t *index) {
  shrink(&index->nodes, sizeof(node_t));
  shrink(&index->strings, sizeof(bytes_t));
  shrink(&index->globs, sizeof(glob_segment_t));
  shrink(&index->networks, sizeof(network_t));
  shrink(&index->conditions, sizeof(condition_t));
  shrink(&index->rules, sizeof(rule_t));
  shrink(&index->shares, sizeof(share_t));
  shrink(&index->share_groups, sizeof(share_group_t));
  shrink(&index->refs, sizeof(uint32_t));
  shrink(&index->sections, sizeof(section_t));
}

index_t *index_parse(const char *text, size_t length) {
  if (text == NULL || length > INDEX_MAX_BYTES) {
    return NULL;
  }
  index_t *index = calloc(1, sizeof(index_t));
  /* Decoded strings take at most half the text's bytes: the pool never grows, so never moves. */
  char *pool = index == NULL ? NULL : malloc(length / 2 + 1);
  if (pool == NULL) {
    free(index);
    return NULL;
  }
  index->pool = pool;
  parser_t parser = {index, pool, OUTSIDE};
  if (!parse(&parser, text, length)) {
    index_free(index);
    return NULL;
  }
  shrink_all(index);
  return index;
}
