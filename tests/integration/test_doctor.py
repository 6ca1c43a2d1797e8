"""`calltrack doctor` on a correct deployment and on each bad one it must catch.

Every test builds a deployment in a temporary folder: settings, the data, spool and archive
folders with real owners and modes (Asterisk's user is ``daemon`` here, calltrack's
``nobody``; the permission checks read them as the kernel would), a secret file, Asterisk's
manager.conf and extensions.conf, the database, and the fake AMI server playing Asterisk 22
with the manager user's rights.  One thing is then broken, and doctor must name it and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from calltrack.main import cli as calltrack
from schema.db import make_engine
from tests.fakes.ami_server import FakeAmiServer, Plan, Rights, dialplan_of

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIALPLAN = (REPO / "config" / "samples" / "asterisk" / "extensions_calltrack.conf").read_text()
ASTERISK_USER, SERVICE_USER = "daemon", "nobody"
UID = {"daemon": 1, "nobody": 65534}
GID = {"daemon": 1, "nogroup": 65534}

MANAGER_CONF = """\
[general]
enabled = yes
port = {port}
bindaddr = {bindaddr}
timestampevents = {timestamps}

[calltrack]
secret = s3cret
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = {read}
write = {write}
"""


@dataclass
class Deployment:
    root: Path
    database_url: str
    ami: FakeAmiServer
    #: extra TOML appended to the settings (tables that override the defaults below)
    settings: dict[str, dict[str, object]] = field(default_factory=dict)
    manager: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def etc(self) -> Path:
        return self.root / "etc-asterisk"

    @property
    def secret(self) -> Path:
        return self.root / "ami.secret"

    def write(self) -> Path:
        tables: dict[str, dict[str, object]] = {
            "general": {"data_dir": str(self.data), "system_name": "pbx1"},
            "database": {"url": self.database_url},
            "recorder": {"spool_dir": str(self.spool), "archive_dir": str(self.archive)},
            "asterisk": {"user": ASTERISK_USER, "group": "daemon", "config_dir": str(self.etc)},
        }
        for name, values in self.settings.items():
            tables.setdefault(name, {}).update(values)
        server = {
            "name": "pbx1",
            "host": "127.0.0.1",
            "port": self.ami.port,
            "username": "calltrack",
            "secret_file": str(self.secret),
        }
        server.update(self.settings.get("ami.server", {}))  # type: ignore[arg-type]
        lines = []
        for name, values in tables.items():
            if name == "ami.server":
                continue
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("[[ami.servers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in server.items()]
        config = self.root / "calltrack.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        conf = {"port": str(self.ami.port), "bindaddr": "127.0.0.1", "timestamps": "yes"}
        conf |= {"read": "system,call,dialplan,cdr", "write": "reporting,call"} | self.manager
        (self.etc / "manager.conf").write_text(MANAGER_CONF.format(**conf))
        return config

    async def doctor(self, *extra: str) -> Result:
        config = self.write()
        env = {"CALLTRACK_CONFIG": "", "CALLTRACK_DATABASE_URL": ""}
        args = ["--config", str(config), "doctor", "--user", SERVICE_USER, *extra]
        # Doctor runs its own event loop for the AMI session; the fake Asterisk serves on this one.
        return await asyncio.to_thread(CliRunner().invoke, calltrack, args, env=env, catch_exceptions=False)


def own(path: Path, user: str, group: str, mode: int) -> None:
    os.chown(path, UID[user], GID[group])
    path.chmod(mode)


@pytest.fixture
async def deployment(tmp_path: Path, database_url: str) -> AsyncIterator[Deployment]:
    if os.geteuid() != 0:
        pytest.skip("building deployments with other owners needs root (CI runs as root)")
    root = tmp_path / "pbx"
    root.mkdir()
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    for name in ("data", "spool", "archive", "etc-asterisk"):
        (root / name).mkdir()
    own(root / "data", "nobody", "nogroup", 0o750)
    own(root / "spool", "daemon", "nogroup", 0o2770)
    own(root / "archive", "nobody", "nogroup", 0o750)
    secret = root / "ami.secret"
    secret.write_text("s3cret\n")
    own(secret, "nobody", "nogroup", 0o600)
    (root / "etc-asterisk" / "extensions_calltrack.conf").write_text(SAMPLE_DIALPLAN)
    (root / "etc-asterisk" / "extensions.conf").write_text(
        "[from-pstn]\ninclude => calltrack-inbound\n\n#include extensions_calltrack.conf\n"
    )
    url = database_url
    if url.startswith("sqlite:///"):
        # The database lives in calltrack's data folder, owned by calltrack, as the package installs it.
        moved = root / "data" / "calltrack.sqlite3"
        shutil.copyfile(url.removeprefix("sqlite:///"), moved)
        own(moved, "nobody", "nogroup", 0o640)
        url = f"sqlite:///{moved}"
    extensions, includes = dialplan_of(SAMPLE_DIALPLAN)
    rights = Rights(
        write=frozenset({"reporting", "call"}),
        run_user="daemon",
        run_group="daemon",
        extensions=extensions,
        includes=(("from-pstn", "calltrack-inbound"), *includes),
    )
    ami = FakeAmiServer([Plan()], username="calltrack", secret="s3cret", rights=rights)
    await ami.start()
    try:
        yield Deployment(root, url, ami)
    finally:
        await ami.stop()


def problems(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("FAIL")]


async def test_a_correct_deployment_passes(deployment: Deployment) -> None:
    result = await deployment.doctor()
    assert result.exit_code == 0, result.output
    assert problems(result) == []
    assert "WARN" not in result.output, result.output
    out = result.output
    assert "ok    ami:pbx1: logged in to 127.0.0.1:" in out and "(Asterisk 22.6.0)" in out
    assert "ok    ami:pbx1: Asterisk runs as daemon:daemon" in out
    assert "ok    dialplan: contexts calltrack-inbound, calltrack-route, calltrack-fallback present" in out
    assert "Asterisk (AMI ShowDialPlan)" in out
    assert out.strip().endswith("0 problem(s), 0 warning(s)")
    # what doctor asked Asterisk: only actions a minimal manager user may send
    sent = [a.get("Action") for a in deployment.ami.actions]
    assert sent == ["Login", "Ping", "ListCommands", "CoreSettings", "ShowDialPlan", "Logoff"]
    as_json = json.loads((await deployment.doctor("--format", "json")).output)
    assert {f["status"] for f in as_json} == {"ok"}


Break = Callable[[Deployment], None]


def _chmod(path: str, mode: int) -> Break:
    return lambda d: (d.root / path).chmod(mode)


def _settings(table: str, **values: object) -> Break:
    return lambda d: d.settings.setdefault(table, {}).update(values)


def _rights(**changes: object) -> Break:
    def change(d: Deployment) -> None:
        for key, value in changes.items():
            setattr(d.ami.rights, key, value)

    return change


def _no_spool(d: Deployment) -> None:
    d.spool.rmdir()


def _spool_owner(user: str, group: str, mode: int) -> Break:
    return lambda d: own(d.spool, user, group, mode)


def _unreadable_recording(d: Deployment) -> None:
    wav = d.spool / "12.wav"
    wav.write_bytes(b"RIFF")
    own(wav, "daemon", "daemon", 0o640)


def _no_archive(d: Deployment) -> None:
    d.archive.rmdir()


def _behind(d: Deployment) -> None:
    engine = make_engine(d.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()


def _readonly_database(d: Deployment) -> None:
    if not d.database_url.startswith("sqlite"):
        pytest.skip("file permissions of the database are SQLite's")
    Path(d.database_url.removeprefix("sqlite:///")).chmod(0o444)
    own(Path(d.database_url.removeprefix("sqlite:///")), "daemon", "daemon", 0o644)


def _missing_database(d: Deployment) -> None:
    d.database_url = f"sqlite:///{d.root / 'nope' / 'calltrack.sqlite3'}"


def _no_extensions_file_and_no_showdialplan(d: Deployment) -> None:
    d.ami.rights.write = frozenset({"call"})  # ShowDialPlan (and CoreShowChannels) refused
    (d.etc / "extensions.conf").write_text("[from-pstn]\nexten => _X.,1,Dial(PJSIP/100)\n")


def _dialplan_without_route(d: Deployment) -> None:
    d.ami.rights.extensions = tuple(e for e in d.ami.rights.extensions if e[0] != "calltrack-route")


def _dialplan_not_included(d: Deployment) -> None:
    d.ami.rights.includes = tuple(i for i in d.ami.rights.includes if i[0] != "from-pstn")


CASES: list[tuple[str, Break, str]] = [
    ("spool missing", _no_spool, "FAIL  folders: the recorder's spool {spool} does not exist"),
    (
        "spool not writable by Asterisk",
        _spool_owner("nobody", "nogroup", 0o755),
        "Asterisk (daemon) cannot create files",
    ),
    (
        "spool not deletable by calltrack",
        _spool_owner("daemon", "daemon", 0o755),
        "nobody cannot read and delete the recordings",
    ),
    ("a recording calltrack cannot read", _unreadable_recording, "1 recording(s) in {spool} cannot be read by nobody"),
    ("archive missing", _no_archive, "FAIL  folders: {archive} does not exist"),
    (
        "data folder not calltrack's",
        lambda d: own(d.data, "daemon", "daemon", 0o755),
        "nobody cannot create and delete",
    ),
    ("database behind", _behind, "calltrack needs"),
    ("database file not writable", _readonly_database, "is not writable by nobody"),
    ("database missing", _missing_database, "no database at"),
    ("ffmpeg missing", _settings("recorder", ffmpeg="/nonexistent/ffmpeg"), "FAIL  ffmpeg: ffmpeg not found"),
    ("secret readable by all", _chmod("ami.secret", 0o644), "is readable by every local user"),
    ("secret unreadable by calltrack", lambda d: own(d.secret, "daemon", "daemon", 0o600), "cannot be read by nobody"),
    (
        "AMI login refused",
        lambda d: setattr(d.ami, "secret", "other"),
        "login as 'calltrack' refused: Authentication failed",
    ),
    ("AMI not listening", _settings("ami.server", port=1), "cannot connect"),
    ("AMI without reporting", _rights(write=frozenset({"call"})), "Asterisk refuses CoreShowChannels"),
    ("AMI without system events", _rights(read=frozenset({"call", "dialplan", "cdr"})), "no FullyBooted after login"),
    ("manager.conf without dialplan", lambda d: d.manager.update(read="system,call"), "lacks dialplan (VarSet"),
    ("timestampevents off", lambda d: d.manager.update(timestamps="no"), "no timestampevents = yes"),
    ("AMI bound to every address", lambda d: d.manager.update(bindaddr="0.0.0.0"), "bindaddr = 0.0.0.0"),
    (
        "remote AMI without TLS",
        _settings("ami.server", host="pbx.invalid"),
        "is not this machine and tls is off",
    ),
    ("Asterisk runs as another user", _rights(run_user="asterisk"), "Asterisk runs as asterisk:daemon, but [asterisk]"),
    ("FastAGI public without allow-list", _settings("agi", listen="0.0.0.0:4573"), "without [agi] allowed_hosts"),
    ("web public without HTTPS", _settings("web", listen="0.0.0.0:8080"), "with no HTTPS in front"),
    (
        "system names disagree",
        _settings("general", system_name="asterisk"),
        "'pbx1' is not a system name the AGI route uses",
    ),
    ("dialplan without calltrack-route", _dialplan_without_route, "has no context calltrack-route"),
    ("dialplan not included", _dialplan_not_included, "no context includes calltrack-inbound"),
    (
        "dialplan AGI port differs",
        _settings("agi", listen="127.0.0.1:4999"),
        "calltrack's FastAGI listens on 127.0.0.1:4999",
    ),
    (
        "dialplan file without the sample",
        _no_extensions_file_and_no_showdialplan,
        "/extensions.conf has no context calltrack-inbound",
    ),
]


@pytest.mark.parametrize(("what", "breaks", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_doctor_names_each_problem(deployment: Deployment, what: str, breaks: Break, expected: str) -> None:
    breaks(deployment)
    result = await deployment.doctor()
    want = expected.format(spool=deployment.spool, archive=deployment.archive)
    assert result.exit_code == 1, f"{what}: doctor passed:\n{result.output}"
    assert any(want in line for line in problems(result)), f"{what}: expected {want!r} in:\n{result.output}"
    assert "Traceback" not in result.output
    # every problem says what to do
    assert all(" -> " in line for line in problems(result)), result.output


async def test_a_bad_settings_file_is_one_finding(tmp_path: Path) -> None:
    config = tmp_path / "calltrack.toml"
    config.write_text('[general]\nlog_level = "LOUD"\n')
    result = await asyncio.to_thread(CliRunner().invoke, calltrack, ["--config", str(config), "doctor"])
    assert result.exit_code == 1
    assert result.output.startswith(f"FAIL  settings: {config}: general.log_level: must be one of")


async def test_doctor_refuses_tls_it_cannot_verify(deployment: Deployment) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    tls = FakeAmiServer([Plan()], username="calltrack", secret="s3cret", ssl=context, rights=deployment.ami.rights)
    await tls.start()
    try:
        deployment.settings["ami.server"] = {"port": tls.port, "tls": True}
        result = await deployment.doctor()
        assert any("the TLS certificate does not verify" in line for line in problems(result)), result.output
        ca_file = deployment.root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        deployment.settings["ami.server"] = {"port": tls.port, "tls": True, "ca_file": str(ca_file)}
        result = await deployment.doctor()
        assert "ok    ami:pbx1: logged in to 127.0.0.1:" in result.output, result.output
    finally:
        await tls.stop()


async def test_texts_out_need_the_message_write_class(deployment: Deployment) -> None:
    deployment.settings.setdefault("sms", {}).update(trunk="carrier")
    result = await deployment.doctor()
    assert "WARN  ami:pbx1: MessageSend is not permitted: `calltrack sms send` will be refused" in result.output
    assert "write = reporting,call,message" in result.output

    deployment.ami.rights.write = frozenset({"reporting", "call", "message"})
    result = await deployment.doctor()
    assert "MessageSend" not in result.output and "WARN" not in result.output, result.output
