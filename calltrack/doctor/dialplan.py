"""The sample dialplan's contexts, read from Asterisk (AMI ShowDialPlan) or from extensions.conf."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from calltrack.doctor.asterisk_conf import read_config
from calltrack.doctor.findings import Finding, fail, ok, warn
from config import Settings

CONTEXTS = ("calltrack-inbound", "calltrack-route", "calltrack-fallback")
_FASTAGI = re.compile(r"agi://([^/:,)]+)(?::(\d+))?/route", re.I)


@dataclass
class Dialplan:
    #: where it was read: "Asterisk (ShowDialPlan)" or a file
    origin: str
    contexts: set[str] = field(default_factory=set)
    #: (context, included context)
    includes: set[tuple[str, str]] = field(default_factory=set)
    #: context -> [(application, data)]
    steps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def from_ami(events: list[dict[str, object]]) -> Dialplan:
    plan = Dialplan("Asterisk (AMI ShowDialPlan)")
    for e in events:
        context = str(e.get("Context", ""))
        if not context:
            continue
        plan.contexts.add(context)
        if "IncludeContext" in e:
            plan.includes.add((context, str(e["IncludeContext"])))
        elif "Application" in e:
            plan.steps.setdefault(context, []).append((str(e["Application"]), str(e.get("AppData", ""))))
    return plan


def from_files(config_dir: Path) -> Dialplan | str:
    """extensions.conf and its includes, or why it could not be read."""
    path = config_dir / "extensions.conf"
    try:
        conf = read_config(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    plan = Dialplan(str(path))
    for section in conf.sections:
        plan.contexts.add(section.name)
        for key, value in section.items:
            if key == "include":
                plan.includes.add((section.name, value.strip()))
            elif key in ("exten", "same"):
                # exten => s,1,App(data)   same => n,App(data)
                parts = value.split(",", 2 if key == "exten" else 1)
                command = parts[-1].strip()
                app, _, data = command.partition("(")
                plan.steps.setdefault(section.name, []).append((app.strip(), data.rstrip(")")))
    return plan


def check(settings: Settings, plan: Dialplan | None, why: str = "") -> list[Finding]:
    if plan is None:
        return [
            warn(
                "dialplan",
                f"could not read the dialplan ({why})",
                "configure [[ami.servers]] (its user needs write = reporting for ShowDialPlan), or set "
                "[asterisk] config_dir to Asterisk's configuration folder",
            )
        ]
    found = []
    missing = [c for c in CONTEXTS if c not in plan.contexts]
    if missing:
        return [
            fail(
                "dialplan",
                f"{plan.origin} has no context {', '.join(missing)}",
                "copy config/samples/asterisk/extensions_calltrack.conf to /etc/asterisk/, add "
                "#include extensions_calltrack.conf to extensions.conf, asterisk -rx 'dialplan reload'",
            )
        ]
    if not any(inc == "calltrack-inbound" and ctx not in CONTEXTS for ctx, inc in plan.includes):
        found.append(
            fail(
                "dialplan",
                f"no context includes calltrack-inbound ({plan.origin}): calls from the trunk never reach calltrack",
                "add include => calltrack-inbound to the context your trunk delivers DIDs to",
            )
        )
    agi_steps = [data for app, data in plan.steps.get("calltrack-route", []) if app.upper() == "AGI"]
    port = settings.agi.listen.rpartition(":")[2]
    for data in agi_steps:
        m = _FASTAGI.search(data)
        if m and (m.group(2) or "4573") != port:
            found.append(
                fail(
                    "dialplan",
                    f"calltrack-route calls AGI({m.group(0)}), but calltrack's FastAGI listens on {settings.agi.listen}",
                    f"make them agree: AGI(agi://{m.group(1)}:{port}/route,...) or [agi] listen",
                )
            )
    if not agi_steps:
        found.append(fail("dialplan", "calltrack-route never calls AGI(...route)", "use the sample context"))
    if not found:
        found.append(ok("dialplan", f"contexts {', '.join(CONTEXTS)} present and included ({plan.origin})"))
    return found
