"""The Debian package's pieces that can be checked without building it: units, settings, scripts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from config import load_settings

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: scripts/install --test installs Debian's systemd package")
    # verify wants the programs the units start to exist: a stand-in at a path of the same length
    fake = tmp_path / "calltrack"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    units = []
    for unit in sorted((PACKAGING / "systemd").iterdir()):
        text = unit.read_text().replace("/opt/calltrack/bin/calltrack", str(fake))
        names = [unit.name] if "@." not in unit.name else [unit.name.replace("@.", f"@{s}.") for s in ("agi", "web")]
        for name in names:
            (tmp_path / name).write_text(text)
            units.append(str(tmp_path / name))
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_units_point_calltrack_at_its_state_folder_and_spool() -> None:
    service = (PACKAGING / "systemd" / "calltrack.service").read_text()
    settings = load_settings(PACKAGING / "calltrack.toml", environ={})
    # the data folder is the unit's StateDirectory, outside ProtectHome, and the spool is writable
    assert "StateDirectory=calltrack" in service and "ProtectHome=yes" in service
    assert str(settings.general.data_dir) == "/var/lib/calltrack"
    assert f"ReadWritePaths=-{settings.recorder.spool_dir}" in service
    assert "Environment=CALLTRACK_CONFIG=/etc/calltrack/calltrack.toml" in service
    timer = (PACKAGING / "systemd" / "calltrack-retention.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
    assert (
        "ExecStart=/opt/calltrack/bin/calltrack privacy retention"
        in (PACKAGING / "systemd" / "calltrack-retention.service").read_text()
    )


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_scripts_are_valid_posix_shell(script: str) -> None:
    path = PACKAGING / "debian" / script
    assert path.stat().st_mode & 0o111
    done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(path)], check=False).returncode == 0


def test_the_conffile_is_declared() -> None:
    assert (PACKAGING / "debian" / "conffiles").read_text().split() == ["/etc/calltrack/calltrack.toml"]
