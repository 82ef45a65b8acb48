/*
 * peer_sans.c: writes and reads the record of a client certificate's SANs (peer_sans.h). Nothing
 * allocates; reading checks every count and length against the bytes left before it moves on.
 */
#include <string.h>

#include "peer_sans.h"

static char *put_number(char *out, uint32_t value) {
  out[0] = (char)(value >> 24);
  out[1] = (char)(value >> 16);
  out[2] = (char)(value >> 8);
  out[3] = (char)value;
  return out + 4;
}

/* The bytes one list takes, or 0 when it does not fit the format. */
static size_t list_size(const bytes_t *sans, size_t count) {
  size_t size = 4;
  if (count > UINT32_MAX) {
    return 0;
  }
  for (size_t i = 0; i < count; i++) {
    if (sans[i].length > UINT32_MAX || sans[i].length > SIZE_MAX - 4 - size) {
      return 0;
    }
    size += 4 + sans[i].length;
  }
  return size;
}

size_t peer_sans_size(const bytes_t *uris, size_t uri_count, const bytes_t *dns, size_t dns_count) {
  size_t first = list_size(uris, uri_count), second = list_size(dns, dns_count);
  return first == 0 || second == 0 || second > SIZE_MAX - first ? 0 : first + second;
}

static char *put_list(char *out, const bytes_t *sans, size_t count) {
  out = put_number(out, (uint32_t)count);
  for (size_t i = 0; i < count; i++) {
    out = put_number(out, (uint32_t)sans[i].length);
    if (sans[i].length > 0) {
      memcpy(out, sans[i].ptr, sans[i].length);
    }
    out += sans[i].length;
  }
  return out;
}

void peer_sans_write(char *out, const bytes_t *uris, size_t uri_count, const bytes_t *dns, size_t dns_count) {
  put_list(put_list(out, uris, uri_count), dns, dns_count);
}

/* The 4-byte number at the start of *rest, taken off it; false when fewer than 4 bytes are left. */
static bool take_number(bytes_t *rest, uint32_t *value) {
  if (rest->length < 4) {
    return false;
  }
  const unsigned char *at = (const unsigned char *)rest->ptr;
  *value = (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | (uint32_t)at[3];
  rest->ptr += 4;
  rest->length -= 4;
  return true;
}

/* A SAN's length and bytes, taken off *rest. */
static bool take_san(bytes_t *rest, bytes_t *san) {
  uint32_t length;
  if (!take_number(rest, &length) || length > rest->length) {
    return false;
  }
  san->ptr = rest->ptr;
  san->length = length;
  rest->ptr += length;
  rest->length -= length;
  return true;
}

/* One list taken off *rest, every SAN of it checked: *list is where it starts. */
static bool take_list(bytes_t *rest, san_list_t *list) {
  bytes_t san;
  if (!take_number(rest, &list->left)) {
    return false;
  }
  list->rest = *rest;
  for (uint32_t i = 0; i < list->left; i++) {
    if (!take_san(rest, &san)) {
      return false;
    }
  }
  return true;
}

bool peer_sans_read(bytes_t record, san_list_t *uris, san_list_t *dns) {
  if (record.ptr == NULL) {
    return false;
  }
  return take_list(&record, uris) && take_list(&record, dns) && record.length == 0;
}

bool san_list_next(san_list_t *list, bytes_t *san) {
  if (list->left == 0) {
    return false;
  }
  list->left--;
  return take_san(&list->rest, san); /* checked by peer_sans_read */
}
