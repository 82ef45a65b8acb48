/*
 * index_match.c: the tests of the decision index that need nothing from Envoy: comparing bytes,
 * path globs (the algorithm of lua_runtime/glob.lua and policyc/semantics/glob.py), reading the
 * peer address Envoy gives as text, CIDR networks (lua_runtime/net.lua), and finding a path's
 * share of a section's rules by its longest prefix. Nothing allocates;
 * every loop is bounded by the sizes of its inputs.
 */
#include <arpa/inet.h>
#include <string.h>

#include "policy_index.h"

bool bytes_equal(bytes_t a, bytes_t b) {
  return a.length == b.length && (a.length == 0 || memcmp(a.ptr, b.ptr, a.length) == 0);
}

int bytes_compare(bytes_t a, bytes_t b) {
  size_t shorter = a.length < b.length ? a.length : b.length;
  int order = shorter == 0 ? 0 : memcmp(a.ptr, b.ptr, shorter);
  return order != 0 ? order : (a.length > b.length) - (a.length < b.length);
}

bool bytes_starts_with(bytes_t text, bytes_t prefix) {
  return prefix.length <= text.length && (prefix.length == 0 || memcmp(text.ptr, prefix.ptr, prefix.length) == 0);
}

bool bytes_ends_with(bytes_t text, bytes_t suffix) {
  return suffix.length <= text.length &&
         (suffix.length == 0 || memcmp(text.ptr + text.length - suffix.length, suffix.ptr, suffix.length) == 0);
}

bool index_any_equal(const index_t *index, uint32_t first, uint32_t count, bytes_t text) {
  for (uint32_t i = 0; i < count; i++) {
    if (bytes_equal(*index_string(index, first + i), text)) {
      return true;
    }
  }
  return false;
}

/* Where `piece` (not empty) first occurs in text[from .. stop), or -1. */
static long find(bytes_t text, size_t from, size_t stop, bytes_t piece) {
  for (size_t at = from; at + piece.length <= stop; at++) {
    if (memcmp(text.ptr + at, piece.ptr, piece.length) == 0) {
      return (long)at;
    }
  }
  return -1;
}

/* One segment of the path against the literal pieces between a pattern segment's `*`s: the first
 * begins it, the last ends it, each between is found leftmost after the one before. */
static bool segment_matches(const index_t *index, const glob_segment_t *pattern, bytes_t segment) {
  const bytes_t *pieces = index_string(index, pattern->first);
  if (pattern->count == 1) {
    return bytes_equal(pieces[0], segment);
  }
  bytes_t first = pieces[0], last = pieces[pattern->count - 1];
  if (segment.length < first.length + last.length || !bytes_starts_with(segment, first) ||
      !bytes_ends_with(segment, last)) {
    return false;
  }
  size_t at = first.length, stop = segment.length - last.length;
  for (uint32_t i = 1; i + 1 < pattern->count; i++) {
    if (pieces[i].length > 0) {
      long found = find(segment, at, stop, pieces[i]);
      if (found < 0) {
        return false;
      }
      at = (size_t)found + pieces[i].length;
    }
  }
  return true;
}

/* Whether pattern[from .. to), holding no `**`, matches the path's segments from `at` on (the
 * caller has checked that there are enough). */
static bool group_at(const index_t *index, const glob_segment_t *pattern, size_t from, size_t to,
                     const bytes_t *segments, size_t at) {
  for (size_t k = 0; from + k < to; k++) {
    if (!segment_matches(index, &pattern[from + k], segments[at + k])) {
      return false;
    }
  }
  return true;
}

/* `**` segments cut the pattern into groups of plain segments: the first group matches the path's
 * first segments, the last group its last ones, and each group between is taken at its leftmost
 * place after the one before, so no choice is ever revisited. */
bool index_glob_matches(const index_t *index, const node_t *node, const bytes_t *segments, size_t count) {
  const glob_segment_t *pattern = (const glob_segment_t *)index->globs.items + node->first;
  size_t size = node->count, first_any = size, last_any = size;
  for (size_t p = 0; p < size; p++) {
    if (pattern[p].any) {
      first_any = first_any == size ? p : first_any;
      last_any = p;
    }
  }
  if (first_any == size) {
    return size == count && group_at(index, pattern, 0, size, segments, 0);
  }
  size_t head = first_any, tail = size - last_any - 1;
  if (count < tail || count - tail < head) {
    return false;
  }
  size_t stop = count - tail; /* where the last group starts; middle groups end before it */
  if (!group_at(index, pattern, 0, head, segments, 0) ||
      !group_at(index, pattern, last_any + 1, size, segments, stop)) {
    return false;
  }
  size_t at = head;
  for (size_t p = first_any + 1; p < last_any;) {
    if (pattern[p].any) {
      p++;
      continue;
    }
    size_t q = p; /* the group is pattern[p .. q); pattern[last_any] is `**`, so it ends */
    while (!pattern[q].any) {
      q++;
    }
    while (at + (q - p) <= stop && !group_at(index, pattern, p, q, segments, at)) {
      at++;
    }
    if (at + (q - p) > stop) {
      return false;
    }
    at += q - p;
    p = q;
  }
  return true;
}

/* inet_pton on text that is not NUL-terminated. */
static bool parse_ip(int family, const char *text, size_t length, uint8_t *out) {
  char copy[64];
  if (length == 0 || length >= sizeof copy) {
    return false;
  }
  memcpy(copy, text, length);
  copy[length] = '\0';
  return inet_pton(family, copy, out) == 1;
}

/* Whether text[from ..) is a port: 1 to 5 digits. */
static bool port(bytes_t text, size_t from) {
  size_t digits = text.length - from;
  if (digits == 0 || digits > 5) {
    return false;
  }
  for (size_t i = from; i < text.length; i++) {
    if (text.ptr[i] < '0' || text.ptr[i] > '9') {
      return false;
    }
  }
  return true;
}

size_t index_peer_address(bytes_t text, uint8_t address[16]) {
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (text.ptr == NULL || text.length == 0) {
    return 0;
  }
  if (text.ptr[0] != '[') {
    const char *colon = memchr(text.ptr, ':', text.length);
    size_t length = colon == NULL ? 0 : (size_t)(colon - text.ptr);
    return colon != NULL && port(text, length + 1) && parse_ip(AF_INET, text.ptr, length, address) ? 4 : 0;
  }
  const char *close = memchr(text.ptr, ']', text.length);
  size_t length = close == NULL ? 0 : (size_t)(close - text.ptr) - 1;
  if (close == NULL || length + 2 >= text.length || close[1] != ':' || !port(text, length + 3) ||
      !parse_ip(AF_INET6, text.ptr + 1, length, address)) {
    return 0;
  }
  if (memcmp(address, mapped, sizeof mapped) == 0) {
    memmove(address, address + 12, 4);
    return 4;
  }
  return 16;
}

static bool contains(const network_t *network, const uint8_t *address, size_t size) {
  if (network->size != size) {
    return false;
  }
  size_t full = network->length / 8, rest = network->length % 8;
  if (full > 0 && memcmp(network->bytes, address, full) != 0) {
    return false;
  }
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return rest == 0 || (network->bytes[full] & mask) == (address[full] & mask);
}

bool index_any_network(const index_t *index, uint32_t first, uint32_t count, const uint8_t *address, size_t size) {
  const network_t *networks = (const network_t *)index->networks.items + first;
  for (uint32_t i = 0; i < count; i++) {
    if (contains(&networks[i], address, size)) {
      return true;
    }
  }
  return false;
}

static const share_group_t *index_group(const index_t *index, uint32_t at) {
  return (const share_group_t *)index->share_groups.items + at;
}

const share_t *index_share(const index_t *index, const section_t *section, bytes_t path) {
  const share_t *shares = index->shares.items;
  for (uint32_t g = section->group_count; g-- > 0;) { /* longest prefixes first */
    const share_group_t *group = index_group(index, section->groups + g);
    if (group->length > path.length) {
      continue;
    }
    uint32_t low = group->first, high = group->first + group->count;
    while (low < high) {
      uint32_t middle = low + (high - low) / 2;
      bytes_t prefix = *index_string(index, shares[middle].prefix);
      int order = group->length == 0 ? 0 : memcmp(prefix.ptr, path.ptr, group->length);
      if (order == 0) {
        return &shares[middle];
      }
      if (order < 0) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
  }
  return NULL;
}
