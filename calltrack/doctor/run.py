"""Every check of `calltrack doctor`, in the order an administrator fixes things."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from calltrack.doctor import ami, database, dialplan, files, network
from calltrack.doctor.findings import Finding, fail, ok, warn

if TYPE_CHECKING:
    from calltrack.context import AppContext


def service_account(name: str | None) -> files.Who:
    """The account the checks are made for: *name*, else this process's user (calltrack's when run as root)."""
    import pwd

    if name:
        found = files.who(name)
        if found is None:
            raise LookupError(f"no local user {name!r}")
        return found
    me = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        # An administrator runs doctor as root; the service runs as calltrack (the Debian package's user).
        return files.who("calltrack") or files.who(me)  # type: ignore[return-value]
    return files.who(me)  # type: ignore[return-value]


def _settings_file(app: AppContext) -> list[Finding]:
    import stat

    settings = app.settings
    source = settings.source
    if source == "<defaults>":
        return [warn("settings", "no settings file: built-in defaults", "write /etc/calltrack/calltrack.toml")]
    found = [ok("settings", f"{source} is valid")]
    secrets = [s.name for s in settings.ami.servers if s.secret] + (
        ["web.secret_key"] if settings.web.secret_key else []
    )
    if "@" in settings.database.url and ":" in settings.database.url.split("@", 1)[0].split("//", 1)[-1]:
        secrets.append("database.url password")
    try:
        mode = Path(source).stat().st_mode
    except OSError:
        return found
    if secrets and mode & stat.S_IROTH:
        found.append(
            fail(
                "settings",
                f"{source} holds secrets ({', '.join(secrets)}) and is readable by every local user",
                f"chmod 640 {source} (group calltrack), or move them to secret files / an EnvironmentFile",
            )
        )
    return found


def _ffmpeg(app: AppContext) -> list[Finding]:
    from recorder.errors import FfmpegMissing
    from recorder.ffmpeg import Ffmpeg

    cfg = app.settings.recorder
    try:
        found = Ffmpeg.locate(cfg.ffmpeg, [cfg.format])
    except FfmpegMissing as exc:
        return [fail("ffmpeg", str(exc), "apt-get install ffmpeg")]
    return [ok("ffmpeg", f"{found.program} encodes {cfg.format}")]


def run_checks(app: AppContext, service: files.Who) -> list[Finding]:
    """Every finding; the settings must have loaded (the command reports a settings error itself)."""
    settings = app.settings
    found: list[Finding] = []
    found += _settings_file(app)
    found += database.check(app, service)
    asterisk = files.who(settings.asterisk.user)
    found += files.folder("folders", Path(settings.general.data_dir), service, private=True)
    found += files.spool("folders", Path(settings.recorder.spool_dir), service, asterisk, settings.asterisk.user)
    found += files.folder("folders", Path(settings.archive_dir), service, private=True)
    found += _ffmpeg(app)
    conf, why = ami.manager_conf(settings)
    plan: dialplan.Dialplan | None = None
    for server in settings.ami.servers:
        report = ami.check_server(app, server, service, conf, why)
        found += report.findings
        if plan is None and report.probe is not None and report.probe.dialplan is not None:
            plan = dialplan.from_ami(report.probe.dialplan)
    found += network.agi(settings)
    found += network.web(settings)
    found += network.system_names(settings)
    reason = ""
    if plan is None:
        read = dialplan.from_files(Path(settings.asterisk.config_dir))
        if isinstance(read, str):
            reason = read
        else:
            plan = read
    found += dialplan.check(settings, plan, reason)
    return found


def failed(findings: list[Finding]) -> bool:
    return any(f.status == "fail" for f in findings)
