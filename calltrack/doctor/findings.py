"""What a check reports: a finding per thing looked at, with what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    #: the area checked: settings, database, folders, ffmpeg, ami:NAME, agi, web, system-name, dialplan
    check: str
    status: Status
    #: what was found
    message: str
    #: what to do about it (empty when nothing needs doing)
    fix: str = ""

    def line(self) -> str:
        label = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[self.status]
        tail = f" -> {self.fix}" if self.fix else ""
        return f"{label}  {self.check}: {self.message}{tail}"


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warn(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "warn", message, fix)


def fail(check: str, message: str, fix: str) -> Finding:
    return Finding(check, "fail", message, fix)
