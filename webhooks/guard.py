"""Server-side request forgery guard: where calltrack may send a webhook.

An endpoint is an address an administrator (or whoever holds the CLI) typed; the
requests go out from the PBX's own network, next to Asterisk's manager port, the
database and the cloud's metadata service. So:

- only ``https://`` URLs, except ``http://`` to ``localhost`` (a receiver on this
  machine); no user name or password in the URL, no fragment;
- every address the host name resolves to must be public: loopback, private
  (RFC 1918, unique-local IPv6), carrier-grade NAT, link-local (169.254.0.0/16 holds
  the cloud metadata service), multicast, reserved and unspecified addresses are
  refused, also when written as IPv4-mapped IPv6 (``::ffff:10.0.0.1``), unless
  ``[webhooks] allow_networks`` names them;
- checked when the endpoint is added and again at every connection: the sender's
  resolver is this guard, so a name that changed its answer since (DNS rebinding)
  is refused before a packet leaves, and the connection goes to the address checked;
- redirects are never followed (a 3xx is a failed delivery), so a receiver cannot
  bounce a request to an internal address either.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses it resolves to
Resolve = Callable[[str, int], Sequence[str]]

MAX_URL = 2000
#: addresses of cloud metadata services, named as such in refusals
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class Refused(Exception):
    """Not a URL calltrack may send to; the message says why and what to change."""


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)


def kind(address: IPAddress) -> str | None:
    """What makes *address* internal ("loopback", "private", "link-local", "metadata"...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return kind(address.ipv4_mapped)
    if address in METADATA:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "carrier-grade NAT"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def system_resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"{host} does not resolve ({exc.strerror or exc})") from None
    return sorted({str(info[4][0]) for info in infos})


def is_local_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Checks URLs and addresses against the rules above; *allow* are the administrator's exceptions."""

    def __init__(self, allow: Iterable[str] = (), resolve: Resolve | None = None) -> None:
        self.allow = parse_networks(allow)
        self.resolve = resolve or system_resolve

    def check_address(self, host: str, address: str, literal: bool = False) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        problem = kind(ip)
        if problem is None:
            return
        check = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if any(check in network for network in self.allow):
            return
        where = f"{host.strip('[]')} is" if literal else f"{host} resolves to {address}"
        raise Refused(
            f"{where} ({problem} address): refused, as a request there could reach internal services; "
            "allow it in [webhooks] allow_networks if the receiver really lives there"
        )

    def split(self, url: str) -> tuple[str, int]:
        """(host, port) of *url* once its shape is acceptable; the address is checked apart."""
        if len(url) > MAX_URL:
            raise Refused(f"URL too long ({len(url)} characters, at most {MAX_URL})")
        if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
            raise Refused("URL must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused(f"not a valid URL: {exc}") from None
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("https", "http") or not host:
            raise Refused("the URL must be https://HOST/... (http:// only to localhost)")
        if parts.scheme == "http" and not is_local_name(host):
            raise Refused("webhooks go over HTTPS: use https:// (plain http:// is allowed only to localhost)")
        if parts.username is not None or parts.password is not None:
            raise Refused("no user name or password in the URL: receivers verify the signature instead")
        if parts.fragment:
            raise Refused("a URL with a #fragment: the fragment is never sent; leave it out")
        return host, port or (443 if parts.scheme == "https" else 80)

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of *host* (every one must pass, or the host is refused)."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            self.check_address(host, str(literal), literal=True)
            return [str(literal)]
        found = list(self.resolve(host, port))
        if not found:
            raise Refused(f"{host} does not resolve to any address")
        for address in found:
            self.check_address(host, address)
        return found

    def check_url(self, url: str) -> list[str]:
        """Shape and network of *url* (resolving its name now); its addresses."""
        host, port = self.split(url)
        return self.addresses(host, port)
