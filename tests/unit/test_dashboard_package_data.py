"""Every dashboard template and static file is in the package (setup.cfg's package_data globs)."""

from __future__ import annotations

import configparser
import glob
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_dashboard_file_is_packaged() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["web"].split(",")]
    packaged = {Path(f) for p in patterns for f in glob.glob(str(ROOT / "web" / p)) if Path(f).is_file()}
    files = {
        f
        for folder in ("static", "templates")
        for f in (ROOT / "web" / "dashboard" / folder).rglob("*")
        if f.is_file() and "__pycache__" not in f.parts
    }
    assert files, "no dashboard files found"
    assert files - packaged == set(), "add these to setup.cfg [options.package_data] web"
