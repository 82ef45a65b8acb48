"""CIDRs for `source in`: takes CIDR text and peer addresses; `parse_cidr`/`cidr_error` read and
judge a CIDR, `address_in` says whether a peer is in any of them as Envoy RBAC's
`direct_remote_ip` would.

Strict on purpose, because Envoy's CidrRange is lenient in ways that hide mistakes:
- the prefix length is required ("10.1.2.3" alone is refused; write "10.1.2.3/32");
- host bits must be zero: Envoy silently masks "10.1.2.3/8" to 10.0.0.0/8, which is rarely what the
  author meant, so it is an error that names the range it would have become;
- no leading zeros, in an IPv4 octet ("010.0.0.0/8": octal to some tools) or in the prefix length;
- no netmask notation, no IPv6 zone ("%eth0"), no surrounding space;
- a range inside IPv4-mapped IPv6 (::ffff:0:0/96) is refused: no peer is seen that way (below).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHAPE = re.compile(r"(?P<address>[0-9A-Fa-f.:]+)/(?P<length>0|[1-9][0-9]{0,2})")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def cidr_error(text: str) -> str | None:
    """Why `text` is not an acceptable CIDR, or None."""
    match = _SHAPE.fullmatch(text)
    if match is None:
        if "/" not in text:
            return "needs a prefix length, e.g. `10.1.2.3/32` or `::1/128`"
        return "is not `address/length` (IPv4 or IPv6, decimal length without leading zeros)"
    try:
        address = ipaddress.ip_address(match["address"])  # refuses IPv4 leading zeros too
    except ValueError:
        return f"`{match['address']}` is not an IPv4 or IPv6 address (leading zeros are refused)"
    length = int(match["length"])
    if length > address.max_prefixlen:
        return f"prefix length {length} is longer than {address.max_prefixlen}"
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    if network.network_address != address:
        return f"has host bits set; the range it covers is `{network}`"
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        v4 = ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{length - 96}")
        return f"is IPv4-mapped IPv6, which never matches: Envoy sees those peers as IPv4 (`{v4}`)"
    return None


@lru_cache(maxsize=65536)  # a pure function of its text, and an `ipaddress` parse is slow
def parse_cidr(text: str) -> Network | None:
    """The network `text` denotes, or None when `cidr_error` finds it unacceptable."""
    if cidr_error(text) is not None:
        return None
    return ipaddress.ip_network(text)


def address_in(address: str, cidrs: Iterable[str]) -> bool:
    """Whether the peer `address` is in one of `cidrs` (each acceptable to `cidr_error`).

    Envoy's CidrRange never matches across IP versions. An IPv4 client of a dual-stack listener
    reaches Envoy as "::ffff:a.b.c.d", and Envoy turns that into the IPv4 address a.b.c.d before
    any filter runs (Address::addressFromSockAddr with v6only off), so the peer is unmapped here
    first. UNVERIFIED on the real binary: the test rules allow binding 127.0.0.1 only, so no
    dual-stack listener was run.
    """
    peer = peer_address(address)
    texts = tuple(cidrs)
    networks = [parse_cidr(text) for text in texts]
    if None in networks:
        raise ValueError(f"not an acceptable CIDR among {texts!r}")
    return any(peer.version == network.version and peer in network for network in networks)


@lru_cache(maxsize=4096)
def peer_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The peer as the filters see it: an IPv4-mapped IPv6 address is its IPv4 address."""
    peer = ipaddress.ip_address(address)
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        return peer.ipv4_mapped
    return peer
