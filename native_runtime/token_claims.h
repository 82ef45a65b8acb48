/*
 * token_claims.h: the claims of a verified token as jwt_authn forwards them to the filter (its
 * `forward_payload_header`: the token's payload segment, base64url of JSON), read exactly as
 * policyc/semantics/tokenjson.py and tokens.py read a token's payload.
 *
 * A payload is parsed once per request into a flat array of values in preorder (an object's or a
 * list's items follow it, and `end` is the position past its subtree), so a claim is found by
 * walking positions: no tree of pointers, two allocations per payload.
 */
#ifndef POLICYC_TOKEN_CLAIMS_H
#define POLICYC_TOKEN_CLAIMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy_index.h"

/* The longest forwarded payload read, in bytes of base64url text; longer is an error. Envoy's own
 * limit on a request's headers (60 KiB by default) keeps real ones far below. */
#define CLAIMS_MAX_TEXT (1u << 20)
/* How deep objects and lists nest, the outer object included (tokenjson.MAX_NESTING). */
#define CLAIMS_MAX_NESTING 100u

typedef enum {
  JSON_NULL,
  JSON_FALSE,
  JSON_TRUE,
  JSON_NUMBER,
  JSON_STRING, /* text: the decoded bytes (UTF-8) */
  JSON_ARRAY,
  JSON_OBJECT, /* each member's value carries its key */
} json_type_t;

typedef struct {
  uint32_t type;
  uint32_t end; /* the position just past this value's subtree */
  bytes_t key;  /* the member's key, when this value is an object's member */
  bytes_t text;
} json_value_t;

typedef struct {
  char *data;    /* the decoded payload, then room for its strings */
  char *strings; /* decoded strings, in `data`'s allocation; never longer than the payload */
  json_value_t *values;
  size_t count;
  size_t capacity;
} claims_t;

/* The claims in a forwarded payload; false (and nothing held) when the text is not base64url of
 * one JSON object as tokenjson.loads reads it, or is too long or too deep. */
bool claims_parse(bytes_t text, claims_t *claims);
void claims_free(claims_t *claims);

/* The value at a path of object keys (tokens.claim_value); false when a step is missing or not an
 * object. */
bool claims_find(const claims_t *claims, const bytes_t *path, size_t length, uint32_t *at);

#endif
