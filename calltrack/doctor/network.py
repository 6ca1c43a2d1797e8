"""Where the FastAGI server and the web service listen, and whether the two writers of a call agree."""

from __future__ import annotations

import ipaddress

from calltrack.doctor.findings import Finding, fail, ok, warn
from config import Settings


def _host(listen: str) -> str:
    return listen.rpartition(":")[0].strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exposure(host: str) -> str:
    """'loopback', 'private' (a LAN address) or 'public' (every interface, or a public address)."""
    if is_loopback(host):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "public"  # a host name: can't tell, assume the worst
    if address.is_unspecified:
        return "public"
    return "private" if address.is_private else "public"


def agi(settings: Settings) -> list[Finding]:
    listen = settings.agi.listen
    exposure = _exposure(_host(listen))
    if exposure == "loopback":
        return [ok("agi", f"FastAGI listens on {listen} (this machine only)")]
    if settings.agi.allowed_hosts:
        return [ok("agi", f"FastAGI listens on {listen}, for {', '.join(settings.agi.allowed_hosts)} only")]
    fix = "set [agi] allowed_hosts to the Asterisk server's address, or listen on 127.0.0.1 when Asterisk is local"
    message = f"FastAGI listens on {listen} without [agi] allowed_hosts: anyone who reaches it can route calls"
    if exposure == "private":
        return [warn("agi", message + " (a local network address)", fix)]
    return [fail("agi", message, fix)]


def web(settings: Settings) -> list[Finding]:
    listen = settings.web.listen
    public_url = settings.web.public_url
    exposure = _exposure(_host(listen))
    https = public_url.startswith("https://")
    if exposure == "loopback":
        if public_url and not https:
            return [
                warn(
                    "web",
                    f"web listens on {listen}, but web.public_url {public_url} is not HTTPS: browsers refuse "
                    "dni.js from http:// on HTTPS sites",
                    "serve it through an HTTPS reverse proxy and set web.public_url to its https:// address",
                )
            ]
        return [ok("web", f"web listens on {listen} (behind {public_url or 'nothing yet: set web.public_url'})")]
    if not https:
        return [
            fail(
                "web",
                f"web listens on {listen} with no HTTPS in front (web.public_url = {public_url or 'unset'}): "
                "visitor data and sign-ins cross the network in clear",
                "listen on 127.0.0.1 behind an HTTPS reverse proxy (nginx, caddy), set web.public_url to its "
                "https:// address and web.trusted_proxies to the proxy",
            )
        ]
    if not settings.web.trusted_proxies:
        return [
            warn(
                "web",
                f"web listens on {listen} (HTTPS at {public_url}) but web.trusted_proxies is empty: visitor "
                "addresses will be the proxy's",
                "set web.trusted_proxies to the reverse proxy's address, and listen on 127.0.0.1 if it is local",
            )
        ]
    return [
        warn(
            "web",
            f"web listens on {listen}: reachable directly, around the HTTPS proxy at {public_url}",
            "listen on 127.0.0.1 (or the proxy-facing address only)",
        )
    ]


def system_names(settings: Settings) -> list[Finding]:
    """The AGI route keys a call by general.system_name (or agi.peer_systems), the listener by the server name."""
    from config import agi_system_names, system_name_problem

    route = set(agi_system_names(settings))
    servers = [s.name for s in settings.ami.servers]
    if not servers:
        return [
            fail(
                "system-name",
                "no [[ami.servers]] configured: routed calls are never completed (no end, duration or disposition)",
                "add an [[ami.servers]] table for each Asterisk server (see README, AMI listener)",
            )
        ]
    found = []
    problem = system_name_problem(settings)
    if problem:
        message, _, fix = problem.partition("; ")
        found.append(fail("system-name", message, fix or "make general.system_name and the server's name agree"))
    for name in sorted(route - set(servers)):
        found.append(
            warn(
                "system-name",
                f"the AGI route keys calls by {name!r}, but no [[ami.servers]] has that name: those calls never end",
                f"name the AMI server {name!r}, or fix general.system_name / agi.peer_systems",
            )
        )
    if not found:
        found.append(ok("system-name", f"the AGI route and the AMI listener both key calls by {', '.join(servers)}"))
    return found
