"""Who is asking: the client address behind trusted reverse proxies, truncated for storage."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str], setting: str = "web.trusted_proxies") -> tuple[Network, ...]:
    """``10.0.0.1`` and ``10.0.0.0/8`` (or IPv6) as networks; ValueError names a bad entry and its *setting*."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {entry!r} is not an address or network") from None
    return tuple(out)


@functools.lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an address (a port or brackets around it dropped), or None.

    Remembered: every request reads its peer's address, and parsing one costs 10 µs
    or more; the cache is bounded, so a flood of forged X-Forwarded-For values only
    pushes older entries out.
    """
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:1234
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether *address* (as :meth:`ProxyPolicy.client` gives it) lies in one of *networks*."""
    addr = _address(address)
    return addr is not None and any(addr in net for net in networks)


@dataclass(frozen=True)
class ProxyPolicy:
    """Believe X-Forwarded-For/-Proto only when the peer is a configured proxy."""

    trusted: tuple[Network, ...] = ()

    def _is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return addr is not None and any(addr in net for net in self.trusted)

    def client(self, peer: str | None, headers: Mapping[str, str]) -> tuple[str, str | None]:
        """(client address, forwarded scheme or None).

        The X-Forwarded-For chain is read from the right; the first address that
        is not a trusted proxy is the client.  From an untrusted peer the
        headers are ignored: anyone can write them.
        """
        peer_addr = _address(peer or "")
        if not self._is_trusted(peer_addr):
            return (str(peer_addr) if peer_addr else (peer or "unknown"), None)
        chain = [part for part in headers.get("x-forwarded-for", "").split(",") if part.strip()]
        client = peer_addr
        for hop in reversed(chain):
            addr = _address(hop)
            if addr is None:
                break
            client = addr
            if not self._is_trusted(addr):
                break
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() or None
        if proto not in ("http", "https"):
            proto = None
        return (str(client), proto)


@functools.lru_cache(maxsize=65536)
def truncate(address: str) -> str:
    """/24 of an IPv4 address, /48 of an IPv6 address; other text unchanged."""
    addr = _address(address)
    if addr is None:
        return address
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)
