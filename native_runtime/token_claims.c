/*
 * token_claims.c: reads the payload jwt_authn forwards (token_claims.h) as Envoy 1.40 read it when
 * it verified the token, so that every claim test decides as policyc's interpreter does:
 *
 * - base64url as absl's WebSafeBase64Unescape (tokens._b64url): whitespace skipped, padding
 *   optional but exact; the forwarded text is the token's own payload segment, unchanged;
 * - JSON as protobuf's parser with legacy syntax (tokenjson.py): strict UTF-8; one object (or
 *   `null`, an empty object) between spaces, tabs, CR and LF; strings in `"` or `'` with raw
 *   control characters, JSON's escapes plus `\'` and `\U`, surrogate escapes only as a pair (spaces
 *   allowed between the two); bare-word keys, none repeated in an object; one trailing comma;
 *   numbers as JSON writes them and finite as doubles; at most CLAIMS_MAX_NESTING deep.
 *
 * Anything else is refused, and the filter then decides `error`. Work is linear in the text and
 * recursion is bounded by CLAIMS_MAX_NESTING.
 */
#include "token_claims.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- base64url */

static bool base64_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Each byte's base64url digit plus one, and 0 for a byte that is no digit: one load a byte. */
static const uint8_t DIGIT_PLUS_ONE[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
    ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
};

/* The bytes of `text` into `out` (room for 3/4 of its length); *length gets how many. */
static bool base64url(bytes_t text, char *out, size_t *length) {
  size_t digits = 0, padding = 0, written = 0;
  uint32_t bits = 0;
  for (size_t i = 0; i < text.length; i++) {
    char c = text.ptr[i];
    uint8_t digit = DIGIT_PLUS_ONE[(uint8_t)c];
    if (digit == 0) {
      if (base64_space(c)) {
        continue;
      }
      if (c != '=') {
        return false;
      }
      padding++;
      continue;
    }
    if (padding > 0) { /* padding only at the end */
      return false;
    }
    bits = (bits << 6) | (uint32_t)(digit - 1);
    if (++digits % 4 == 0) {
      out[written++] = (char)(bits >> 16);
      out[written++] = (char)(bits >> 8);
      out[written++] = (char)bits;
      bits = 0;
    }
  }
  /* tokens._b64url: padding makes the whole a multiple of 4; one digit alone is no byte. */
  if ((padding > 0 && (digits + padding) % 4 != 0) || digits % 4 == 1) {
    return false;
  }
  if (digits % 4 == 2) {
    out[written++] = (char)(bits >> 4);
  } else if (digits % 4 == 3) {
    out[written++] = (char)(bits >> 10);
    out[written++] = (char)(bits >> 2);
  }
  *length = written;
  return true;
}

/* ---------------------------------------------------------------- UTF-8 */

/* The length of the UTF-8 sequence at text[0 .. left), or 0 where it is not one (overlong forms,
 * surrogates and code points past U+10FFFF refused, as Python's strict decoder does). */
static size_t utf8_sequence(const uint8_t *text, size_t left) {
  uint8_t c = text[0];
  if (c < 0x80) {
    return 1;
  }
  size_t length = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (length == 0 || length > left) {
    return 0;
  }
  uint8_t low = 0x80, high = 0xBF; /* the second byte's range */
  if (c == 0xE0) {
    low = 0xA0;
  } else if (c == 0xED) {
    high = 0x9F;
  } else if (c == 0xF0) {
    low = 0x90;
  } else if (c == 0xF4) {
    high = 0x8F;
  }
  if (text[1] < low || text[1] > high) {
    return 0;
  }
  for (size_t i = 2; i < length; i++) {
    if (text[i] < 0x80 || text[i] > 0xBF) {
      return 0;
    }
  }
  return length;
}

static bool valid_utf8(const char *text, size_t length) {
  for (size_t i = 0; i < length;) {
    size_t step = utf8_sequence((const uint8_t *)text + i, length - i);
    if (step == 0) {
      return false;
    }
    i += step;
  }
  return true;
}

/* ---------------------------------------------------------------- JSON */

typedef struct {
  const char *at;
  const char *end;
  claims_t *claims;
  char *out; /* where the next decoded string byte goes */
} reader_t;

static void skip(reader_t *r) {
  while (r->at < r->end && (*r->at == ' ' || *r->at == '\t' || *r->at == '\r' || *r->at == '\n')) {
    r->at++;
  }
}

/* The next byte after whitespace, or 0 at the end (a NUL byte starts nothing valid either). */
static char peek(reader_t *r) {
  skip(r);
  return r->at < r->end ? *r->at : '\0';
}

static bool take(reader_t *r, const char *literal) {
  size_t length = strlen(literal);
  skip(r);
  if ((size_t)(r->end - r->at) < length || memcmp(r->at, literal, length) != 0) {
    return false;
  }
  r->at += length;
  return true;
}

/* A new value at the end of the array, or -1 when memory runs out. Positions are 32-bit. */
static long push(reader_t *r, json_type_t type) {
  claims_t *c = r->claims;
  if (c->count == c->capacity) {
    size_t capacity = c->capacity == 0 ? 64 : c->capacity * 2;
    json_value_t *values = capacity > UINT32_MAX ? NULL : realloc(c->values, capacity * sizeof(json_value_t));
    if (values == NULL) {
      return -1;
    }
    c->values = values;
    c->capacity = capacity;
  }
  json_value_t *value = &c->values[c->count];
  memset(value, 0, sizeof *value);
  value->type = type;
  value->end = (uint32_t)(c->count + 1);
  return (long)c->count++;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool hex4(reader_t *r, uint32_t *rune) {
  *rune = 0;
  for (int i = 0; i < 4; i++) {
    int digit = r->at < r->end ? hex_value(*r->at) : -1;
    if (digit < 0) {
      return false;
    }
    *rune = *rune * 16 + (uint32_t)digit;
    r->at++;
  }
  return true;
}

static void put_utf8(reader_t *r, uint32_t rune) {
  if (rune < 0x80) {
    *r->out++ = (char)rune;
  } else if (rune < 0x800) {
    *r->out++ = (char)(0xC0 | (rune >> 6));
    *r->out++ = (char)(0x80 | (rune & 0x3F));
  } else if (rune < 0x10000) {
    *r->out++ = (char)(0xE0 | (rune >> 12));
    *r->out++ = (char)(0x80 | ((rune >> 6) & 0x3F));
    *r->out++ = (char)(0x80 | (rune & 0x3F));
  } else {
    *r->out++ = (char)(0xF0 | (rune >> 18));
    *r->out++ = (char)(0x80 | ((rune >> 12) & 0x3F));
    *r->out++ = (char)(0x80 | ((rune >> 6) & 0x3F));
    *r->out++ = (char)(0x80 | (rune & 0x3F));
  }
}

/* After `\u` or `\U`: four hex digits, a high surrogate only with `\u` and a low one after it. */
static bool unicode_escape(reader_t *r) {
  uint32_t rune, low;
  if (!hex4(r, &rune) || (rune >= 0xDC00 && rune <= 0xDFFF)) {
    return false;
  }
  if (rune >= 0xD800 && rune <= 0xDBFF) {
    if (!take(r, "\\u") || !hex4(r, &low) || low < 0xDC00 || low > 0xDFFF) {
      return false;
    }
    rune = 0x10000 + ((rune - 0xD800) << 10) + (low - 0xDC00);
  }
  put_utf8(r, rune);
  return true;
}

static bool escape(reader_t *r) {
  static const char letters[] = "\"\\/bfnrt'", meanings[] = "\"\\/\b\f\n\r\t'";
  if (r->at == r->end) {
    return false;
  }
  char letter = *r->at++;
  if (letter == 'u' || letter == 'U') {
    return unicode_escape(r);
  }
  const char *found = letter == '\0' ? NULL : strchr(letters, letter);
  if (found == NULL) {
    return false;
  }
  *r->out++ = meanings[found - letters];
  return true;
}

/* A string at r->at (its opening quote), decoded into the strings. */
static bool string(reader_t *r, bytes_t *text) {
  char quote = *r->at++;
  text->ptr = r->out;
  while (r->at < r->end && *r->at != quote) {
    if (*r->at == '\\') {
      r->at++;
      if (!escape(r)) {
        return false;
      }
    } else {
      *r->out++ = *r->at++;
    }
  }
  if (r->at == r->end) {
    return false;
  }
  r->at++;
  text->length = (size_t)(r->out - text->ptr);
  return true;
}

static bool word_byte(char c, bool first) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
}

/* A key written without quotes: ASCII letters, digits and `_`, not first a digit, no literal. */
static bool bare_word(reader_t *r, bytes_t *word) {
  word->ptr = r->at;
  while (r->at < r->end && word_byte(*r->at, r->at == word->ptr)) {
    r->at++;
  }
  word->length = (size_t)(r->at - word->ptr);
  bool literal = (word->length == 4 && (memcmp(word->ptr, "true", 4) == 0 || memcmp(word->ptr, "null", 4) == 0)) ||
                 (word->length == 5 && memcmp(word->ptr, "false", 5) == 0);
  return word->length > 0 && !literal;
}

static size_t digits(reader_t *r) {
  const char *start = r->at;
  while (r->at < r->end && *r->at >= '0' && *r->at <= '9') {
    r->at++;
  }
  return (size_t)(r->at - start);
}

/* A number as JSON writes it, finite as a double. A shorter match would leave a byte (`.`, `e`, a
 * digit after a leading 0) that no container accepts next, so the whole form is required here. */
static bool number(reader_t *r) {
  const char *start = r->at;
  if (r->at < r->end && *r->at == '-') {
    r->at++;
  }
  size_t integer = 1;
  if (r->at < r->end && *r->at == '0') {
    r->at++;
  } else if ((integer = digits(r)) == 0) {
    return false;
  }
  if (r->at < r->end && *r->at == '.') {
    r->at++;
    if (digits(r) == 0) {
      return false;
    }
  }
  if (r->at < r->end && (*r->at == 'e' || *r->at == 'E')) {
    r->at++;
    if (r->at < r->end && (*r->at == '+' || *r->at == '-')) {
      r->at++;
    }
    if (digits(r) == 0) {
      return false;
    }
  } else if (integer <= 308) {
    /* Without an exponent, at most 308 digits before the point are below 10^308: finite as a
     * double. Only the rest (`1e400`, 309 digits) need strtod. */
    return true;
  }
  size_t length = (size_t)(r->at - start);
  char *copy = malloc(length + 1);
  if (copy == NULL) {
    return false;
  }
  memcpy(copy, start, length);
  copy[length] = '\0';
  bool finite = isfinite(strtod(copy, NULL));
  free(copy);
  return finite;
}

static int compare_keys(const void *a, const void *b) {
  return bytes_compare(*(const bytes_t *)a, *(const bytes_t *)b);
}

/* Objects of this many keys or fewer are checked for a repeated one pair by pair. */
#define FEW_KEYS 16u

/* Whether the object at `at` holds no key twice (protobuf refuses a repeated key at any depth):
 * a few keys compared pair by pair, more sorted and then compared side by side, so that the work
 * stays linear in the text. */
static bool distinct_keys(const claims_t *claims, uint32_t at) {
  const json_value_t *values = claims->values;
  size_t count = 0;
  for (uint32_t member = at + 1; member < values[at].end; member = values[member].end) {
    count++;
  }
  if (count <= FEW_KEYS) {
    for (uint32_t a = at + 1; a < values[at].end; a = values[a].end) {
      for (uint32_t b = values[a].end; b < values[at].end; b = values[b].end) {
        if (bytes_equal(values[a].key, values[b].key)) {
          return false;
        }
      }
    }
    return true;
  }
  bytes_t *keys = malloc(count * sizeof(bytes_t));
  if (keys == NULL) {
    return false;
  }
  size_t i = 0;
  for (uint32_t member = at + 1; member < claims->values[at].end; member = claims->values[member].end) {
    keys[i++] = claims->values[member].key;
  }
  qsort(keys, count, sizeof(bytes_t), compare_keys);
  bool distinct = true;
  for (i = 1; i < count && distinct; i++) {
    distinct = !bytes_equal(keys[i - 1], keys[i]);
  }
  free(keys);
  return distinct;
}

static long value(reader_t *r, uint32_t depth);

/* An object or a list: its items (an object's with their keys) until the closing byte, one
 * trailing comma allowed. */
static long container(reader_t *r, uint32_t depth, bool object) {
  if (depth > CLAIMS_MAX_NESTING) {
    return -1;
  }
  long at = push(r, object ? JSON_OBJECT : JSON_ARRAY);
  const char *close = object ? "}" : "]";
  r->at++; /* the opening byte, seen by the caller */
  if (at < 0 || take(r, close)) {
    return at;
  }
  for (;;) {
    bytes_t key = {NULL, 0};
    if (object) {
      char first = peek(r);
      if (!(first == '"' || first == '\'' ? string(r, &key) : bare_word(r, &key)) || !take(r, ":")) {
        return -1;
      }
    }
    long item = value(r, depth);
    if (item < 0) {
      return -1;
    }
    r->claims->values[item].key = key;
    bool comma = take(r, ",");
    if (take(r, close)) {
      r->claims->values[at].end = (uint32_t)r->claims->count;
      return !object || distinct_keys(r->claims, (uint32_t)at) ? at : -1;
    }
    if (!comma) {
      return -1;
    }
  }
}

/* One value; its position, or -1 when the text is not one. */
static long value(reader_t *r, uint32_t depth) {
  char first = peek(r);
  if (first == '{' || first == '[') {
    return container(r, depth + 1, first == '{');
  }
  if (first == '"' || first == '\'') {
    long at = push(r, JSON_STRING);
    return at >= 0 && string(r, &r->claims->values[at].text) ? at : -1;
  }
  static const struct {
    const char *text;
    json_type_t type;
  } literals[] = {{"true", JSON_TRUE}, {"false", JSON_FALSE}, {"null", JSON_NULL}};
  for (size_t i = 0; i < sizeof literals / sizeof *literals; i++) {
    if (take(r, literals[i].text)) {
      return push(r, literals[i].type);
    }
  }
  return number(r) ? push(r, JSON_NUMBER) : -1;
}

/* The whole payload: one object, or `null` (no claims), between whitespace. */
static bool document(reader_t *r) {
  bool ok;
  if (take(r, "null")) {
    ok = push(r, JSON_OBJECT) >= 0;
  } else {
    ok = peek(r) == '{' && container(r, 1, true) >= 0;
  }
  skip(r);
  return ok && r->at == r->end;
}

void claims_free(claims_t *claims) {
  free(claims->data); /* the strings' room too */
  free(claims->values);
  memset(claims, 0, sizeof *claims);
}

bool claims_parse(bytes_t text, claims_t *claims) {
  memset(claims, 0, sizeof *claims);
  if (text.length > CLAIMS_MAX_TEXT || (text.length > 0 && text.ptr == NULL)) {
    return false;
  }
  size_t length = 0, room = text.length / 4 * 3 + 3;
  claims->data = malloc(2 * room);
  bool ok = claims->data != NULL;
  if (ok) {
    claims->strings = claims->data + room;
    ok = base64url(text, claims->data, &length) && valid_utf8(claims->data, length);
  }
  if (ok) {
    reader_t reader = {claims->data, claims->data + length, claims, claims->strings};
    ok = document(&reader);
  }
  if (!ok) {
    claims_free(claims);
  }
  return ok;
}

bool claims_find(const claims_t *claims, const bytes_t *path, size_t length, uint32_t *at) {
  uint32_t here = 0;
  for (size_t step = 0; step < length; step++) {
    const json_value_t *object = &claims->values[here];
    uint32_t member = here + 1;
    if (object->type != JSON_OBJECT) {
      return false;
    }
    while (member < object->end && !bytes_equal(claims->values[member].key, path[step])) {
      member = claims->values[member].end;
    }
    if (member == object->end) {
      return false;
    }
    here = member;
  }
  *at = here;
  return true;
}
