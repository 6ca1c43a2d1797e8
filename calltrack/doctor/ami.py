"""Each [[ami.servers]]: reachable, logged in, allowed what calltrack needs, timestamps on, not in clear."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calltrack.doctor import files
from calltrack.doctor.ami_probe import AmiProbe, ProbeFailed, probe
from calltrack.doctor.asterisk_conf import ConfigFile, is_true, read_config
from calltrack.doctor.findings import Finding, fail, ok, warn
from calltrack.doctor.network import is_loopback

if TYPE_CHECKING:
    from config import AmiServer, Settings

#: event classes the listener reads, and why
READ_NEEDED = {
    "call": "channels, dials, bridges, hangups, MixMonitor",
    "dialplan": "VarSet of MIXMONITOR_FILENAME and DIALSTATUS",
    "system": "FullyBooted, to notice an Asterisk restart",
}
READ_WANTED = {"cdr": "Cdr events kept with the raw events"}


@dataclass
class ServerReport:
    server: AmiServer
    findings: list[Finding]
    probe: AmiProbe | None = None


def manager_conf(settings: Settings) -> tuple[ConfigFile | None, str]:
    """manager.conf (with what it includes), or None and why not."""
    path = Path(settings.asterisk.config_dir) / "manager.conf"
    try:
        return read_config(path), ""
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror})"


def _classes(value: str | None) -> set[str]:
    return {c.strip().lower() for c in (value or "").split(",") if c.strip()}


def _stored_timestamps(app: Any, system: str) -> bool | None:
    """Whether the newest raw events stored from *system* carry Timestamp (None: none stored)."""
    try:
        from sqlalchemy import select

        from schema.models import AmiEvent

        with app.make_engine().connect() as conn:
            rows = conn.execute(
                select(AmiEvent.payload).where(AmiEvent.system == system).order_by(AmiEvent.id.desc()).limit(20)
            ).all()
    except Exception:  # the database check reports database trouble
        return None
    if not rows:
        return None
    return any(isinstance(p, dict) and "Timestamp" in p for (p,) in rows)


def check_server(app: Any, server: AmiServer, service: files.Who, conf: ConfigFile | None, why: str) -> ServerReport:
    settings: Settings = app.settings
    name = f"ami:{server.name}"
    where = f"{server.host}:{server.port}"
    found: list[Finding] = []
    local = is_loopback(server.host)
    if not local and not server.tls:
        found.append(
            fail(
                name,
                f"{where} is not this machine and tls is off: the secret and every caller's number would cross "
                "the network in clear (not connecting)",
                "enable TLS in manager.conf (tlsenable, tlsbindaddr) and set tls = true, port = 5039 (see README, "
                "Remote Asterisk)",
            )
        )
        return ServerReport(server, found)
    if server.secret_file:
        found.extend(files.secret_file(name, Path(server.secret_file), service))
        if any(f.status == "fail" and "cannot be read" in f.message for f in found):
            return ServerReport(server, found)
    elif server.secret:
        found.append(warn(name, "the secret is written in the settings file", "move it to a secret_file (chmod 600)"))
    else:
        found.append(fail(name, "no secret or secret_file", "set secret_file to a file holding the AMI secret"))
        return ServerReport(server, found)
    from ami_listener.client import read_secret

    try:
        secret = read_secret(server.secret, server.secret_file)
    except OSError as exc:
        found.append(fail(name, f"cannot read {server.secret_file}: {exc.strerror}", "check its owner and mode"))
        return ServerReport(server, found)
    try:
        result = asyncio.run(
            probe(server.host, server.port, server.username, secret, tls=server.tls, ca_file=server.ca_file)
        )
    except ProbeFailed as exc:
        fixes = {
            "connect": "start Asterisk, check manager.conf enabled = yes, port and bindaddr, and this server's host/port",
            "tls": "check ca_file and that host is the name in Asterisk's certificate",
            "banner": "host/port point at something else than Asterisk's AMI",
            "login": "the username and secret must match a [user] section of manager.conf; asterisk -rx 'manager reload'",
            "session": "check Asterisk's log for the manager session",
        }
        found.append(fail(name, str(exc), fixes.get(exc.stage, "")))
        return ServerReport(server, found)
    version = (result.core_settings or {}).get("AsteriskVersion", "")
    found.append(
        ok(name, f"logged in to {where} as {server.username!r}" + (f" (Asterisk {version})" if version else ""))
    )
    found.extend(_write_rights(name, result, bool(settings.sms.trunk)))
    found.extend(_read_rights(name, server, result, conf, why))
    found.extend(_timestamps(app, name, server, result, conf, why))
    if local and conf is not None:
        found.extend(_binding(name, conf))
    found.extend(_run_user(name, settings, result))
    return ServerReport(server, found, result)


def _write_rights(name: str, result: AmiProbe, texts: bool = False) -> list[Finding]:
    """*texts*: [sms] trunk is set, so `calltrack sms send` is meant to work (it needs MessageSend)."""
    found = []
    if "CoreShowChannels" not in result.actions:
        found.append(
            fail(
                name,
                "Asterisk refuses CoreShowChannels to this user: after a reconnect the listener cannot find the "
                "calls that ended meanwhile",
                "add reporting to the user's write = line in manager.conf",
            )
        )
    if "MixMonitorMute" not in result.actions:
        found.append(
            warn(
                name,
                "MixMonitorMute is not permitted: `calltrack recordings pause` will be refused",
                "add call to the user's write = line if you pause recordings",
            )
        )
    if texts and "MessageSend" not in result.actions:
        found.append(
            warn(
                name,
                "MessageSend is not permitted: `calltrack sms send` will be refused",
                "add message to the user's write = line (write = reporting,call,message) to send texts",
            )
        )
    if "Command" in result.actions or "Originate" in result.actions:
        found.append(
            warn(
                name,
                "the user may run CLI commands or originate calls, more than calltrack needs",
                "write = reporting (and call for pausing recordings)",
            )
        )
    if not found:
        found.append(ok(name, "write rights: CoreShowChannels and MixMonitorMute permitted"))
    return found


def _read_rights(name: str, server: AmiServer, result: AmiProbe, conf: ConfigFile | None, why: str) -> list[Finding]:
    section = conf.section(server.username) if conf is not None else None
    if section is None:
        if result.fully_booted:
            return [
                warn(
                    name,
                    "the user reads system events; its other read classes could not be checked "
                    f"({why or f'no [{server.username}] in manager.conf'})",
                    "check that its read = line has " + ",".join(sorted({*READ_NEEDED, *READ_WANTED})),
                )
            ]
        return [
            fail(
                name,
                "no FullyBooted after login: the user cannot read system events (Asterisk restarts go unnoticed)",
                "read = system,call,dialplan,cdr in the user's section of manager.conf",
            )
        ]
    classes = _classes(section.get("read"))
    if "all" in classes:
        classes = {*READ_NEEDED, *READ_WANTED}
    missing = [c for c in READ_NEEDED if c not in classes]
    if missing:
        return [
            fail(
                name,
                f"manager.conf [{server.username}] read = {section.get('read') or ''} lacks "
                + "; ".join(f"{c} ({READ_NEEDED[c]})" for c in missing),
                "read = system,call,dialplan,cdr, then asterisk -rx 'manager reload'",
            )
        ]
    if not result.fully_booted:
        return [
            fail(
                name,
                "manager.conf grants system events, but Asterisk sent no FullyBooted after login "
                "(manager.conf not reloaded since?)",
                "asterisk -rx 'manager reload'",
            )
        ]
    extra = [c for c in READ_WANTED if c not in classes]
    if extra:
        return [warn(name, f"read = {section.get('read')} lacks cdr ({READ_WANTED['cdr']})", "add cdr to read =")]
    return [ok(name, f"read classes {', '.join(sorted(classes & {*READ_NEEDED, *READ_WANTED}))}")]


def _timestamps(
    app: Any, name: str, server: AmiServer, result: AmiProbe, conf: ConfigFile | None, why: str
) -> list[Finding]:
    fix = "timestampevents = yes in manager.conf [general], then asterisk -rx 'manager reload'"
    general = conf.section("general") if conf is not None else None
    if general is not None and is_loopback(server.host):
        if is_true(general.get("timestampevents")):
            return [ok(name, "timestampevents = yes: call times come from Asterisk's clock")]
        return [fail(name, "manager.conf has no timestampevents = yes: call times would be calltrack's guess", fix)]
    seen = [e for e in result.events if e.get("Event") != "FullyBooted"]
    if seen:
        if any("Timestamp" in e for e in seen):
            return [ok(name, "events carry Timestamp (timestampevents = yes)")]
        return [fail(name, "events arrive without Timestamp: timestampevents is off", fix)]
    stored = _stored_timestamps(app, server.name)
    if stored is True:
        return [ok(name, "stored events carry Timestamp (timestampevents = yes)")]
    if stored is False:
        return [fail(name, "the events stored from this server have no Timestamp: timestampevents is off", fix)]
    return [warn(name, f"cannot tell whether timestampevents is on ({why or 'no event seen yet'})", fix)]


def _binding(name: str, conf: ConfigFile) -> list[Finding]:
    general = conf.section("general")
    if general is None or not is_true(general.get("enabled")):
        return []
    bind = (general.get("bindaddr") or "0.0.0.0").strip()
    if is_loopback(bind):
        return [ok(name, f"AMI is bound to {bind}")]
    return [
        fail(
            name,
            f"manager.conf bindaddr = {bind}: Asterisk's AMI answers every network in clear on port "
            f"{general.get('port') or '5038'}",
            "bindaddr = 127.0.0.1 (remote listeners use TLS: tlsenable, tlsbindaddr)",
        )
    ]


def _run_user(name: str, settings: Settings, result: AmiProbe) -> list[Finding]:
    core = result.core_settings or {}
    user, group = core.get("CoreRunUser"), core.get("CoreRunGroup")
    if not user:
        return []
    want_user, want_group = settings.asterisk.user, settings.asterisk.group
    if user != want_user or (group and group != want_group):
        return [
            fail(
                name,
                f"Asterisk runs as {user}:{group}, but [asterisk] says {want_user}:{want_group}: the folders are "
                "checked for the wrong user",
                f'[asterisk] user = "{user}", group = "{group}"',
            )
        ]
    return [ok(name, f"Asterisk runs as {user}:{group}")]
