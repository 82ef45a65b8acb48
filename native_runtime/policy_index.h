/*
 * policy_index.h: the decision index, the parsed form of the filter's configs ("policyc-native 5",
 * native_runtime/README.md): the listener's, and each route's. And the request-independent
 * matching it needs.
 *
 * Built once per config by index_parse, read-only afterwards and shared by every worker.
 * Every array lives in the index and is addressed by 32-bit positions; a section's expressions are
 * stored in preorder, so an operand follows its operator and the next operand starts at the
 * `end` of the one before: no pointers inside the tree, no allocation per node.
 */
#ifndef POLICYC_POLICY_INDEX_H
#define POLICYC_POLICY_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest config accepted, in bytes. */
#define INDEX_MAX_BYTES (64u << 20)
/* How deep an expression may nest, counting the conditions it refers to as written out (a `ref`
 * is one level above its condition's expression). It bounds the evaluator's recursion: the
 * policy language's own limit is 64 (policyc/syntax MAX_DEPTH), which leaves room for the few
 * levels the compiler adds. */
#define INDEX_MAX_DEPTH 256u

typedef struct {
  const char *ptr;
  size_t length;
} bytes_t;

typedef enum {
  NODE_AND,           /* count operands */
  NODE_OR,            /* count operands */
  NODE_NOT,           /* one operand */
  NODE_REF,           /* first: the condition, counted within its section */
  NODE_METHOD,        /* strings[first .. first+count) */
  NODE_PATH_EQ,       /* strings[first .. first+count) */
  NODE_PATH_PREFIX,   /* strings[first] */
  NODE_PATH_GLOB,     /* globs[first .. first+count) */
  NODE_HEADER_EQ,     /* header: the name; strings[first .. first+count) */
  NODE_HEADER_PREFIX, /* header: the name; strings[first] */
  NODE_HEADER_SUFFIX, /* header: the name; strings[first] */
  NODE_PRESENT,       /* header: the name */
  NODE_SOURCE,        /* networks[first .. first+count) */
  NODE_TOKEN,         /* a token was verified */
  /* The claim tests: the claim's path of object keys is strings[first .. first+count), and the
   * values follow it, strings[first+count .. first+count+values). */
  NODE_CLAIM_EQ,
  NODE_CLAIM_PREFIX,   /* one value */
  NODE_CLAIM_SUFFIX,   /* one value */
  NODE_CLAIM_CONTAINS, /* the claim, or an item of it, equals one of the values */
  NODE_CLAIM_TRUE,     /* no value */
  NODE_CLAIM_FALSE,    /* no value */
  NODE_HEADER_CLAIM,   /* header: the name; the claim's path as above, no value */
  NODE_PEER_TRUSTED,   /* a client certificate was presented (and so verified) */
  NODE_SUBJECT_EQ,     /* the certificate's subject: strings[first .. first+count) */
  NODE_SUBJECT_PREFIX, /* strings[first] */
  NODE_SUBJECT_SUFFIX, /* strings[first] */
  /* Some URI SAN, or DNS SAN, of the certificate passes the test, as a header's value would. */
  NODE_URI_EQ,     /* strings[first .. first+count) */
  NODE_URI_PREFIX, /* strings[first] */
  NODE_URI_SUFFIX, /* strings[first] */
  NODE_DNS_EQ,     /* strings[first .. first+count) */
  NODE_DNS_PREFIX, /* strings[first] */
  NODE_DNS_SUFFIX, /* strings[first] */
  /* The request arrives in [start, end), seconds since the epoch by the clock of the machine:
   * start is first | header << 32, end is count | values << 32 (times past 2106 need 64 bits). */
  NODE_TIME,
} node_kind_t;

/* The latest time a `time` node may name: the last second of the year 9999, as policyc's grants. */
#define INDEX_MAX_TIME 253402300799u

typedef struct {
  uint32_t kind;
  uint32_t end; /* the position just past this node's subtree */
  uint32_t first;
  uint32_t count;
  uint32_t header; /* a position in strings */
  uint32_t values; /* a claim test's values, after its path */
} node_t;

/* One segment of a glob: `**` (any), or the literal pieces between its `*`s, strings[first ..). */
typedef struct {
  uint32_t any;
  uint32_t first;
  uint32_t count;
} glob_segment_t;

typedef struct {
  uint32_t size;   /* 4 or 16 bytes */
  uint32_t length; /* prefix length in bits */
  uint8_t bytes[16];
} network_t;

typedef struct {
  uint32_t root;  /* a position in nodes */
  uint32_t depth; /* as INDEX_MAX_DEPTH counts it */
} condition_t;

typedef struct {
  bytes_t name;
  uint32_t root;
} rule_t;

/* A share: the rules a path starting with `prefix` can match, as numbers counted over the
 * section's deny rules then its allow rules, in that order: refs[first .. first+count). */
typedef struct {
  uint32_t prefix; /* a position in strings */
  uint32_t first;
  uint32_t count;
} share_t;

/* A section's shares of one prefix length, shares[first .. first+count), sorted by prefix. */
typedef struct {
  uint32_t length;
  uint32_t first;
  uint32_t count;
} share_group_t;

typedef struct {
  bytes_t name;
  bool dry_run;
  bool reads_token; /* some rule or condition tests the token or its claims */
  uint32_t conditions; /* conditions[conditions .. conditions+condition_count) */
  uint32_t condition_count;
  uint32_t denies; /* rules[denies .. denies+deny_count), in file order */
  uint32_t deny_count;
  uint32_t allows; /* rules[allows .. allows+allow_count), in file order: allows == denies+deny_count */
  uint32_t allow_count;
  uint32_t groups; /* share_groups[groups .. groups+group_count), shortest prefixes first */
  uint32_t group_count;
} section_t;

/* A growable array while parsing; `items` holds `count` elements of one type. */
typedef struct {
  void *items;
  size_t count;
  size_t capacity;
} vector_t;

/* The filters a listener's chain may hold beside the native filter, as bits, in chain order: the
 * listener's config names those its chain holds (`chain`); the config of a route whose service
 * another filter decides names the policy filters it relies on (`relies`: never jwt_authn), and
 * a section whose rules read a token needs jwt_authn, which alone puts a verified token's claims
 * in the header the filter reads them from. index_chain_bit reads one name. */
enum { CHAIN_JWT = 1, CHAIN_RBAC_DENY = 2, CHAIN_LUA = 4, CHAIN_RBAC_ALLOW = 8 };
#define CHAIN_POLICY_FILTERS (CHAIN_RBAC_DENY | CHAIN_LUA | CHAIN_RBAC_ALLOW)

typedef struct {
  bool chain_listed; /* the config has a `chain` line */
  uint32_t chain;    /* CHAIN_* bits: the filters of the listener's chain besides this one */
  uint32_t relies;   /* CHAIN_* bits: the filters a route's service is decided by; 0 for none */
  char *pool; /* every decoded string's bytes; sized once, so strings never move */
  vector_t nodes, strings, globs, networks, conditions, rules;
  vector_t shares, share_groups;
  vector_t refs; /* uint32_t: the rule numbers of every share */
  vector_t sections; /* in the order written */
} index_t;

/* The index of a config, or NULL when the text is not exactly the format. */
index_t *index_parse(const char *text, size_t length);
void index_free(index_t *index);

/* The CHAIN_* bit of a filter's name in the config (`jwt`, `rbac-deny`, `lua`, `rbac-allow`); 0
 * for any other word. */
uint32_t index_chain_bit(bytes_t name);

static inline const node_t *index_node(const index_t *index, uint32_t at) {
  return (const node_t *)index->nodes.items + at;
}
static inline const bytes_t *index_string(const index_t *index, uint32_t at) {
  return (const bytes_t *)index->strings.items + at;
}
static inline const condition_t *index_condition(const index_t *index, uint32_t at) {
  return (const condition_t *)index->conditions.items + at;
}
static inline const rule_t *index_rule(const index_t *index, uint32_t at) {
  return (const rule_t *)index->rules.items + at;
}
static inline const uint32_t *index_refs(const index_t *index, uint32_t at) {
  return (const uint32_t *)index->refs.items + at;
}

/* The share of the longest prefix `path` starts with, or NULL when it has none of the section's
 * (then every rule is tested): one binary search per prefix length. */
const share_t *index_share(const index_t *index, const section_t *section, bytes_t path);

bool bytes_equal(bytes_t a, bytes_t b);
/* Byte order, a shorter text before a longer one it begins: <0, 0 or >0, as memcmp. */
int bytes_compare(bytes_t a, bytes_t b);
bool bytes_starts_with(bytes_t text, bytes_t prefix);
bool bytes_ends_with(bytes_t text, bytes_t suffix);
/* Whether `text` equals one of strings[first .. first+count). */
bool index_any_equal(const index_t *index, uint32_t first, uint32_t count, bytes_t text);

/* Whether the path, split at '/' into `count` segments, matches the glob of `node`: the algorithm
 * of lua_runtime/glob.lua, in time at most proportional to the path's length times the pattern's. */
bool index_glob_matches(const index_t *index, const node_t *node, const bytes_t *segments, size_t count);

/* The address of Envoy's "a.b.c.d:port" or "[v6]:port" as 4 or 16 bytes (an IPv4-mapped IPv6
 * address as its IPv4 one), or 0 when the text is neither. */
size_t index_peer_address(bytes_t text, uint8_t address[16]);

/* Whether the address of `size` bytes is in one of networks[first .. first+count). */
bool index_any_network(const index_t *index, uint32_t first, uint32_t count, const uint8_t *address, size_t size);

#endif
