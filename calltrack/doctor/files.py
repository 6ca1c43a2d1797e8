"""Folders, files and free space, judged for the users who use them.

Permissions are read the way the kernel applies them (owner, then group, then others;
ACLs are not looked at) for two accounts: Asterisk's user (``[asterisk] user``), which
writes the recorder's spool, and calltrack's service user, which reads and deletes
there and owns the data and archive folders.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from calltrack.doctor.findings import Finding, fail, ok, warn

MiB = 1024 * 1024
#: under this much free space a folder is a problem; under WARN_FREE a warning
FAIL_FREE = 200 * MiB
WARN_FREE = 1024 * MiB

disk_usage = shutil.disk_usage


@dataclass(frozen=True)
class Who:
    """A local account: its name, uid and every group it is in."""

    name: str
    uid: int
    gids: frozenset[int]

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def who(name: str) -> Who | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    return Who(name, entry.pw_uid, frozenset(gids))


def can(account: Who, st: os.stat_result, want: str) -> bool:
    """Whether *account* has every permission in *want* ("r", "w", "x") on a file with *st*."""
    if account.is_root:
        return "x" not in want or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == account.uid:
        shift = 6
    elif st.st_gid in account.gids:
        shift = 3
    else:
        shift = 0
    bits = (st.st_mode >> shift) & 0o7
    need = (4 if "r" in want else 0) | (2 if "w" in want else 0) | (1 if "x" in want else 0)
    return bits & need == need


def owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} mode {stat.S_IMODE(st.st_mode):04o}"


def free_space(check: str, path: Path) -> Finding:
    try:
        usage = disk_usage(path)
    except OSError as exc:
        return warn(check, f"cannot tell the free space of {path}: {exc.strerror}")
    free = usage.free
    shown = f"{free / MiB / 1024:.1f} GiB free" if free >= 1024 * MiB else f"{free / MiB:.0f} MiB free"
    if free < FAIL_FREE:
        return fail(check, f"{path}: only {shown}", "free some space or move the folder to a larger disk")
    if free < WARN_FREE:
        return warn(check, f"{path}: {shown}", "recordings need about 1 MB a minute in the spool")
    return ok(check, f"{path}: {shown}")


def folder(check: str, path: Path, service: Who, *, private: bool = False) -> list[Finding]:
    """A folder calltrack reads, writes and deletes in (data, archive)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [
            fail(
                check, f"{path} does not exist", f"mkdir -p {path} && chown {service.name} {path} && chmod 0750 {path}"
            )
        ]
    except OSError as exc:
        return [fail(check, f"{path}: {exc.strerror}", f"check the folders above {path}")]
    if not stat.S_ISDIR(st.st_mode):
        return [fail(check, f"{path} is not a folder", f"remove it and mkdir {path}")]
    found: list[Finding] = []
    if not can(service, st, "rwx"):
        found.append(
            fail(
                check,
                f"{path} ({owner(st)}): {service.name} cannot create and delete files there",
                f"chown {service.name} {path} && chmod u+rwx {path}",
            )
        )
    if st.st_mode & 0o002:
        found.append(warn(check, f"{path} ({owner(st)}) is writable by every local user", f"chmod o-w {path}"))
    elif private and st.st_mode & 0o004:
        found.append(
            warn(
                check,
                f"{path} ({owner(st)}) is readable by every local user (recordings and calls are personal data)",
                f"chmod o-rwx {path}",
            )
        )
    if not found:
        found.append(ok(check, f"{path} ({owner(st)})"))
    found.append(free_space(check, path))
    return found


def spool(check: str, path: Path, service: Who, asterisk: Who | None, asterisk_name: str) -> list[Finding]:
    """The recorder's spool: Asterisk creates files there, calltrack reads and deletes them."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [
            fail(
                check,
                f"the recorder's spool {path} does not exist (MixMonitor cannot write recordings there)",
                f"mkdir -p {path} && chown {asterisk_name}:{service.name} {path} && chmod 2770 {path}",
            )
        ]
    except OSError as exc:
        return [fail(check, f"{path}: {exc.strerror}", f"check the folders above {path}")]
    if not stat.S_ISDIR(st.st_mode):
        return [fail(check, f"{path} is not a folder", f"remove it and mkdir {path}")]
    found: list[Finding] = []
    fix = f"chown {asterisk_name}:{service.name} {path} && chmod 2770 {path}"
    if asterisk is None:
        found.append(
            warn(
                check,
                f"no local user {asterisk_name!r} ([asterisk] user): cannot check that Asterisk can write {path}",
                "set [asterisk] user to the user Asterisk runs as (CoreRunUser in `calltrack doctor`'s AMI line)",
            )
        )
    elif not can(asterisk, st, "wx"):
        found.append(fail(check, f"{path} ({owner(st)}): Asterisk ({asterisk.name}) cannot create files there", fix))
    if not can(service, st, "rwx"):
        found.append(
            fail(check, f"{path} ({owner(st)}): {service.name} cannot read and delete the recordings there", fix)
        )
    if st.st_mode & 0o002:
        found.append(warn(check, f"{path} ({owner(st)}) is writable by every local user", f"chmod o-w {path}"))
    unreadable = []
    try:
        with os.scandir(path) as it:
            for n, entry in enumerate(it):
                if n >= 200:
                    break
                if entry.name.endswith(".wav") and entry.is_file(follow_symlinks=False):
                    if not can(service, entry.stat(follow_symlinks=False), "r"):
                        unreadable.append(entry.name)
    except OSError:
        pass
    if unreadable:
        found.append(
            fail(
                check,
                f"{len(unreadable)} recording(s) in {path} cannot be read by {service.name} (first: {unreadable[0]})",
                f"give the folder its group with chmod g+s {path} (new files then take the folder's group); "
                f"chgrp {service.name} {path}/*.wav && chmod g+r {path}/*.wav",
            )
        )
    if not found:
        found.append(ok(check, f"{path} ({owner(st)}): Asterisk writes, {service.name} reads and deletes"))
    found.append(free_space(check, path))
    return found


def secret_file(check: str, path: Path, service: Who) -> list[Finding]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return [fail(check, f"the secret file {path} does not exist", f"write the AMI secret into {path}, chmod 600")]
    except OSError as exc:
        return [fail(check, f"the secret file {path}: {exc.strerror}", "check its folder's permissions")]
    found = []
    if st.st_mode & 0o004:
        found.append(
            fail(
                check,
                f"the secret file {path} ({owner(st)}) is readable by every local user",
                f"chmod 600 {path} (owner {service.name})",
            )
        )
    if not can(service, st, "r"):
        found.append(
            fail(
                check,
                f"the secret file {path} ({owner(st)}) cannot be read by {service.name}",
                f"chown {service.name} {path} && chmod 600 {path}",
            )
        )
    if not found:
        found.append(ok(check, f"the secret file {path} ({owner(st)})"))
    return found
