"""Asterisk's configuration files as `calltrack doctor` reads them (manager.conf, extensions.conf).

The format (main/config.c): ``[section]`` headers, optionally ``[name](!)`` for a template and
``[name](tmpl1,tmpl2)`` to inherit from templates; ``key = value`` and ``key => value`` lines;
``;`` starts a comment (``\\;`` is a semicolon); ``#include`` and ``#tryinclude`` pull in other
files, relative to the configuration folder, with shell wildcards (``manager.d/*.conf``).
Only reading: anything unreadable is reported, never guessed.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

_SECTION = re.compile(r"^\[([^\]]+)\](?:\(([^)]*)\))?")
_INCLUDE = re.compile(r"^#\s*(try)?include\s+[\"<]?([^\">]+)[\">]?\s*$")


@dataclass
class Section:
    name: str
    template: bool = False
    #: (key, value) in file order, inherited templates' lines first
    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        """The last value of *key* (later lines override earlier ones)."""
        found = None
        for k, v in self.items:
            if k == key:
                found = v
        return found

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.items if k == key]


@dataclass
class ConfigFile:
    path: Path
    sections: list[Section] = field(default_factory=list)
    #: files that could not be read (an #include that failed, permissions)
    problems: list[str] = field(default_factory=list)

    def section(self, name: str) -> Section | None:
        """The last section of that name that is not a template."""
        found = None
        for s in self.sections:
            if s.name == name and not s.template:
                found = s
        return found


def _strip_comment(line: str) -> str:
    out = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def read_config(path: Path, base: Path | None = None) -> ConfigFile:
    """Parse *path* and what it includes; raises OSError when *path* itself cannot be read."""
    base = base or path.parent
    result = ConfigFile(path)
    path.read_text(encoding="utf-8", errors="replace")  # the file itself must be readable: raise here
    _read_into(path, base, result, current=None, depth=0)
    return result


def _read_into(path: Path, base: Path, result: ConfigFile, current: Section | None, depth: int) -> Section | None:
    if depth > 10:
        result.problems.append(f"{path}: includes nested more than 10 deep")
        return current
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        result.problems.append(f"{path}: {exc.strerror or exc}")
        return current
    templates = {s.name: s for s in result.sections if s.template}
    for raw in text.splitlines():
        stripped = raw.strip()
        include = _INCLUDE.match(stripped)
        if include:
            target = include.group(2).strip()
            pattern = target if target.startswith("/") else str(base / target)
            matches = sorted(glob.glob(pattern))
            if not matches and not include.group(1) and not glob.has_magic(pattern):
                result.problems.append(f"{path}: #include {target}: no such file")
            for match in matches:
                current = _read_into(Path(match), base, result, current, depth + 1)
            templates = {s.name: s for s in result.sections if s.template}
            continue
        line = _strip_comment(raw)
        if not line:
            continue
        header = _SECTION.match(line)
        if header:
            options = [o.strip() for o in (header.group(2) or "").split(",") if o.strip()]
            current = Section(header.group(1).strip(), template="!" in options)
            for option in options:
                if option in templates:
                    current.items.extend(templates[option].items)
            result.sections.append(current)
            if current.template:
                templates[current.name] = current
            continue
        if current is None:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        current.items.append((key.strip(), value.lstrip(">").strip()))
    return current


TRUE = {"yes", "true", "y", "t", "1", "on"}


def is_true(value: str | None) -> bool:
    """Asterisk's ast_true()."""
    return value is not None and value.strip().lower() in TRUE
