"""AMI over TLS as an administrator configures it (`tls = true`, `ca_file`): the certificate is verified.

The listener is built from a settings file, the way `calltrack serve` and `calltrack ami listen`
build it, against a fake Asterisk serving TLS with certificates made here by openssl: one signed
by the configured CA for the configured host, one signed by another CA, one for another host.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from calltrack.commands.ami import service
from calltrack.context import AppContext
from tests.fakes.ami_server import FakeAmiServer, Plan
from tests.integration.ami_harness import calls_of, frames, wait_for

BUSY = "1795915122.8"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def _server_cert(folder: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    good: tuple[Path, Path]
    other_ca: tuple[Path, Path]
    other_host: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ours, theirs = _ca(folder, "asterisk-ca"), _ca(folder, "someone-else")
    return Pki(
        ca_file=ours[0],
        good=_server_cert(folder, "good", ours, "IP:127.0.0.1"),
        other_ca=_server_cert(folder, "other-ca", theirs, "IP:127.0.0.1"),
        other_host=_server_cert(folder, "other-host", ours, "DNS:pbx.example.com"),
    )


def _settings_file(tmp_path: Path, port: int, ca_file: Path) -> Path:
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    path = tmp_path / "calltrack.toml"
    path.write_text(
        f"""
[general]
data_dir = "{tmp_path / "data"}"

[ami]
reconnect_max_seconds = 0.5

[[ami.servers]]
name = "pbx1"
host = "127.0.0.1"
port = {port}
username = "calltrack"
secret_file = "{secret}"
tls = true
ca_file = "{ca_file}"
"""
    )
    return path


def _serving(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


async def _listen(tmp_path: Path, database_url: str, fake: FakeAmiServer, ca_file: Path, until: str) -> object:
    """Run the listener the settings file describes until *until* holds; its client."""
    app = AppContext(config_path=str(_settings_file(tmp_path, fake.port, ca_file)), database_url=database_url)
    listener = service(app)
    assert listener is not None
    client = listener.connections[0].client
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        if until == "call":
            await wait_for(lambda: bool(calls_of(app.engine, "pbx1").get(BUSY, {}).get("ended_at")), what="the call")
        else:
            await wait_for(lambda: client.last_error is not None, what="the connection refused")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        app.close()
    return client


async def test_tls_from_settings_connects_to_a_certificate_signed_by_the_ca_file(
    pki: Pki, database_url: str, tmp_path: Path, asterisk_traffic: Path
) -> None:
    fake = FakeAmiServer([Plan(frames=frames("busy", asterisk_traffic))], ssl=_serving(pki.good))
    async with fake:
        client = await _listen(tmp_path, database_url, fake, pki.ca_file, until="call")
    assert client.logins == 1  # type: ignore[attr-defined]
    assert [a["Action"] for a in fake.actions][:1] == ["Login"]


@pytest.mark.parametrize("which", ["other_ca", "other_host"])
async def test_tls_from_settings_refuses_a_certificate_that_does_not_verify(
    pki: Pki, database_url: str, tmp_path: Path, asterisk_traffic: Path, which: str
) -> None:
    fake = FakeAmiServer([Plan(frames=frames("busy", asterisk_traffic))], ssl=_serving(getattr(pki, which)))
    async with fake:
        client = await _listen(tmp_path, database_url, fake, pki.ca_file, until="refused")
    error = client.last_error or ""  # type: ignore[attr-defined]
    assert "CERTIFICATE_VERIFY_FAILED" in error
    reason = "self-signed certificate in certificate chain" if which == "other_ca" else "IP address mismatch"
    assert reason in error or "unable to get local issuer certificate" in error, error
    assert client.logins == 0  # type: ignore[attr-defined]
    assert (
        fake.connections == 0 and fake.actions == []
    )  # the secret never went to a server that could not prove who it is
