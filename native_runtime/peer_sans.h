/*
 * peer_sans.h: the client certificate's SANs as the network filter (peer_filter.c) records them in
 * the connection's filter state and the policy filter reads them back (native_runtime/README.md,
 * *Client certificates*).
 *
 * The record is two lists, the URI SANs then the DNS SANs, each a count and then each SAN as its
 * length and its bytes; counts and lengths are 4 bytes, big-endian. Lengths, not separators: a SAN
 * may hold any byte. A record is read only if it is exactly that, nothing missing or left over.
 */
#ifndef POLICYC_PEER_SANS_H
#define POLICYC_PEER_SANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy_index.h"

/* The filter state key of the record. */
#define PEER_SANS_KEY "policyc.peer_sans"

/* The SANs of one kind still to read from a record: `left` of them at the start of `rest`. */
typedef struct {
  bytes_t rest;
  uint32_t left;
} san_list_t;

/* The size of the record of `uris` and `dns`, or 0 when a count or a length does not fit 4 bytes
 * (a record is at least 8 bytes). */
size_t peer_sans_size(const bytes_t *uris, size_t uri_count, const bytes_t *dns, size_t dns_count);

/* Writes the record into `out`, of peer_sans_size bytes. */
void peer_sans_write(char *out, const bytes_t *uris, size_t uri_count, const bytes_t *dns, size_t dns_count);

/* The two lists of `record`; false when it is not exactly a record. */
bool peer_sans_read(bytes_t record, san_list_t *uris, san_list_t *dns);

/* The next SAN of a list read by peer_sans_read; false once there is none. */
bool san_list_next(san_list_t *list, bytes_t *san);

#endif
