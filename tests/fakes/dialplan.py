"""Just enough of Asterisk's dialplan to play the sample dialplan's route steps in tests.

Variable substitution follows main/pbx_variables.c: ``${...}`` is found by counting
braces in the *template*, its contents are substituted first when they hold ``${``
(the substituted text is never scanned again, so caller text cannot add a variable
reference), then ``parse_variable_name`` cuts a ``:offset:length`` at the first
colon outside parentheses, and a function's arguments run from its first ``(`` to
its last ``)`` (``func_args``). BASE64_ENCODE, BASE64_DECODE and FILTER behave as in
funcs/; CALLERID(), CHANNEL(linkedid), UNIQUEID and TIMEOUT(absolute) read and write
the :class:`Channel`; CUT as func_cut.c; a Message channel's MESSAGE() and MESSAGE_DATA() come
from ``Channel.functions``. The applications are Set, NoOp, Gosub, Return, Goto and GotoIf
(with ``$["a" = "b"]``, ``!=`` and a number ``>`` another) and Hangup; AGI and MessageSend stop the run and hand
back their (substituted) data, the way the application receives it (:func:`app_args`
splits it as ast_app_separate_args does).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "asterisk" / "extensions_calltrack.conf"


@dataclass
class Channel:
    """What the dialplan reads and writes on one channel."""

    uniqueid: str = "1795915078.1"
    linkedid: str = "1795915078.0"
    caller_num: str = "+14045551234"
    caller_name: str = "Jane Doe"
    num_valid: bool = True
    name_valid: bool = True
    #: seconds until an absolute timeout, 0 for none (TIMEOUT(absolute))
    absolute_timeout: float = 0.0
    variables: dict[str, str] = field(default_factory=dict)
    #: functions read as given (a Message channel's MESSAGE(body), MESSAGE_DATA(Call-ID)...)
    functions: dict[str, str] = field(default_factory=dict)

    def read(self, name: str) -> str:
        if name in self.functions:
            return self.functions[name]
        upper = name.upper()
        if upper == "UNIQUEID":
            return self.uniqueid
        if upper == "CHANNEL(LINKEDID)":
            return self.linkedid
        if upper == "CALLERID(NUM)":
            return self.caller_num if self.num_valid else ""
        if upper == "CALLERID(NAME)":
            return self.caller_name if self.name_valid else ""
        if upper == "CALLERID(NUM-VALID)":
            return "1" if self.num_valid else "0"
        if upper == "CALLERID(NAME-VALID)":
            return "1" if self.name_valid else "0"
        if upper == "TIMEOUT(ABSOLUTE)":
            return f"{self.absolute_timeout:.3f}" if self.absolute_timeout else "0"
        return self.variables.get(name, "")

    def write(self, name: str, value: str) -> None:
        if name in self.functions:
            self.functions[name] = value
            return
        upper = name.upper()
        if upper == "CALLERID(NUM)":
            self.caller_num, self.num_valid = value, True
        elif upper == "CALLERID(NAME)":
            self.caller_name, self.name_valid = value, True
        elif upper == "CALLERID(NUM-VALID)":
            self.num_valid = _atoi(value) != 0
        elif upper == "CALLERID(NAME-VALID)":
            self.name_valid = _atoi(value) != 0
        elif upper == "TIMEOUT(ABSOLUTE)":
            m = re.match(r"\s*([0-9]+)(\.[0-9]*)?", value)
            self.absolute_timeout = float(m.group(0)) if m else 0.0
        elif value == "":
            self.variables.pop(name, None)
        else:
            self.variables[name] = value

    def agi_values(self) -> dict[str, str]:
        """agi_callerid and agi_calleridname as setup_env writes them (``unknown`` when not valid)."""
        return {
            "agi_callerid": self.caller_num if self.num_valid else "unknown",
            "agi_calleridname": self.caller_name if self.name_valid else "unknown",
            "agi_uniqueid": self.uniqueid,
        }


def _atoi(text: str) -> int:
    m = re.match(r"\s*(-?[0-9]+)", text)
    return int(m.group(1)) if m else 0


def _filter(args: str) -> str:
    allowed_spec, sep, text = args.partition(",")
    if not sep:
        return ""
    allowed: set[str] = set()
    i = 0
    while i < len(allowed_spec):
        c1 = allowed_spec[i]
        if i + 2 < len(allowed_spec) and allowed_spec[i + 1] == "-":
            c2 = allowed_spec[i + 2]
            allowed.update(chr(c) for c in range(ord(c1), ord(c2) + 1))
            i += 3
        else:
            allowed.add(c1)
            i += 1
    return "".join(ch for ch in text if ch in allowed)


def _function(name: str, args: str, channel: Channel) -> str:
    upper = name.upper()
    if upper == "BASE64_ENCODE":
        return base64.b64encode(args.encode("utf-8", "surrogateescape")).decode("ascii")
    if upper == "BASE64_DECODE":
        try:
            return base64.b64decode(args + "=" * (-len(args) % 4)).decode("utf-8", "replace")
        except ValueError:
            return ""
    if upper == "FILTER":
        return _filter(args)
    if upper == "CUT":
        # CUT(varname,delimiter,fieldspec): arguments split as ast_app_separate_args does (a function
        # with commas is one varname), the variable read as ${varname}, fields counted from 1
        var, delim, spec = (app_args(args) + ["", ""])[:3]
        value = substitute("${" + var + "}", channel)
        fields = value.split(delim[:1] or "-")
        start, dash, end = spec.partition("-")
        first = int(start) if start.strip() else 1
        last = (int(end) if end.strip() else len(fields)) if dash else first
        return (delim[:1] or "-").join(fields[first - 1 : last])
    if upper == "FIELDQTY":
        # FIELDQTY(varname,delimiter) (func_strings.c): the fields of ${varname}; none when it is empty
        var, delim = (app_args(args) + [""])[:2]
        value = substitute("${" + var + "}", channel)
        return str(value.count(delim[:1] or "-") + 1) if value else "0"
    return channel.read(f"{name}({args})")


def _lookup(var: str, channel: Channel) -> str:
    # parse_variable_name: the first ':' outside parentheses starts offset:length
    parens, cut = 0, -1
    for i, ch in enumerate(var):
        if ch == "(":
            parens += 1
        elif ch == ")":
            parens -= 1
        elif ch == ":" and parens == 0:
            cut = i
            break
    offset, length = 0, None
    if cut >= 0:
        m = re.match(r"(-?[0-9]+)(?::(-?[0-9]+))?", var[cut + 1 :])
        if m:
            offset = int(m.group(1))
            length = int(m.group(2)) if m.group(2) is not None else None
        var = var[:cut]
    if "(" in var:
        # func_args: arguments from the first '(' to the last ')'
        name, _, rest = var.partition("(")
        close = rest.rfind(")")
        value = _function(name, rest[:close] if close >= 0 else rest, channel)
    else:
        value = channel.read(var)
    if cut < 0:
        return value
    data = value.encode("utf-8", "surrogateescape")
    if offset < 0:
        offset = max(0, len(data) + offset)
    end = len(data) if length is None else (offset + length if length >= 0 else len(data) + length)
    return data[offset:end].decode("utf-8", "surrogateescape")


def substitute(template: str, channel: Channel) -> str:
    """*template* with its ``${...}`` replaced, as pbx_substitute_variables does."""
    out: list[str] = []
    i = 0
    while i < len(template):
        j = template.find("${", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        k, depth, needsub = j + 2, 1, False
        while k < len(template) and depth:
            if template.startswith("${", k):
                needsub, depth = True, depth + 1
                k += 1
            elif template[k] == "{":
                depth += 1
            elif template[k] == "}":
                depth -= 1
            k += 1
        inner = template[j + 2 : k - 1]
        out.append(_lookup(substitute(inner, channel) if needsub else inner, channel))
        i = k
    return "".join(out)


# --- the dialplan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    priority: int
    label: str
    app: str
    data: str


def load(path: Path = SAMPLE) -> dict[str, dict[str, list[Step]]]:
    """The contexts of a dialplan file: context -> extension -> steps in priority order."""
    contexts: dict[str, dict[str, list[Step]]] = {}
    context = ""
    exten = ""
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip() if not raw.lstrip().startswith(";") else ""
        if not line:
            continue
        m = re.fullmatch(r"\[([^\]]+)\]", line)
        if m:
            context = m.group(1)
            contexts[context] = {}
            continue
        m = re.fullmatch(r"(exten|same)\s*=>\s*(.*)", line)
        if not m:
            continue
        rest = m.group(2)
        if m.group(1) == "exten":
            exten, _, rest = rest.partition(",")
        prio, _, rest = rest.partition(",")
        pm = re.fullmatch(r"(n|[0-9]+)(?:\(([^)]*)\))?", prio.strip())
        assert pm, f"cannot read priority {prio!r}"
        steps = contexts[context].setdefault(exten, [])
        number = len(steps) + 1 if pm.group(1) == "n" else int(pm.group(1))
        app, _, data = rest.partition("(")
        steps.append(Step(number, pm.group(2) or "", app.strip(), data[: data.rfind(")")] if ")" in data else data))
    return contexts


@dataclass
class Run:
    """One channel in the dialplan: where it is and what it did."""

    dialplan: dict[str, dict[str, list[Step]]]
    channel: Channel
    context: str = ""
    exten: str = ""
    index: int = 0
    stack: list[tuple[str, str, int, dict[str, str | None]]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)

    def goto(self, context: str, exten: str, priority: int = 1) -> None:
        self.context, self.exten = context, exten
        steps = self.dialplan[context][exten]
        self.index = next(i for i, s in enumerate(steps) if s.priority == priority)

    def skip(self) -> None:
        """Step over the current application (as if it ran and returned 0)."""
        self.index += 1

    def run_until(self, app: str) -> str | None:
        """Execute until the application *app* (not run); its substituted data, or None if the run ended."""
        while True:
            steps = self.dialplan[self.context][self.exten]
            if self.index >= len(steps):
                return None
            step = steps[self.index]
            data = substitute(step.data, self.channel)
            if step.app.upper() == app.upper():
                return data
            self.index += 1
            self.executed.append(f"{step.app}({data})")
            self._execute(step.app, data)

    def _execute(self, app: str, data: str) -> None:
        upper = app.upper()
        if upper == "SET":
            name, _, value = data.partition("=")
            self.channel.write(name.strip(), value)
        elif upper == "NOOP":
            pass
        elif upper == "GOSUB":
            target, _, args = data.partition("(")
            parts = [p.strip() for p in target.split(",")]
            context, exten, prio = (
                parts
                if len(parts) == 3
                else [self.context, *parts]
                if len(parts) == 2
                else [self.context, self.exten, *parts]
            )
            saved: dict[str, str | None] = {}
            for n, arg in enumerate(args.rstrip(")").split(",") if args else (), 1):
                saved[f"ARG{n}"] = self.channel.variables.get(f"ARG{n}")
                self.channel.variables[f"ARG{n}"] = arg
            self.stack.append((self.context, self.exten, self.index, saved))
            self.goto(context, exten, int(prio))
        elif upper == "RETURN":
            context, exten, index, saved = self.stack.pop()
            for name, value in saved.items():
                if value is None:
                    self.channel.variables.pop(name, None)
                else:
                    self.channel.variables[name] = value
            self.context, self.exten, self.index = context, exten, index
        elif upper == "GOTOIF":
            condition, _, targets = data.partition("?")
            when_true, _, when_false = targets.partition(":")
            target = when_true if _truth(condition) else when_false
            if target:
                self._goto_label(target)
        elif upper == "GOTO":
            self._goto_label(data)
        elif upper == "HANGUP":
            self.index = len(self.dialplan[self.context][self.exten])
            self.stack.clear()
        else:
            raise AssertionError(f"the fake dialplan does not run {app}()")

    def _goto_label(self, target: str) -> None:
        parts = [p.strip() for p in target.split(",")]
        if len(parts) == 1:
            steps = self.dialplan[self.context][self.exten]
            self.index = next(i for i, st in enumerate(steps) if st.label == parts[0])
        elif len(parts) == 3:
            self.goto(parts[0], parts[1], int(parts[2]))
        else:
            raise AssertionError(f"the fake dialplan does not follow Goto({target})")


def _truth(expression: str) -> bool:
    """``$["a" = "b"]``, ``$["a" != "b"]`` and ``$[2 > 1]`` after substitution (what the samples use)."""
    n = re.fullmatch(r"\s*\$\[\s*(-?[0-9]+)\s*>\s*(-?[0-9]+)\s*\]\s*", expression)
    if n is not None:
        return int(n.group(1)) > int(n.group(2))
    m = re.fullmatch(r'\s*\$\[\s*"(.*)"\s*(!?=)\s*"(.*)"\s*\]\s*', expression, re.S)
    if m is None:
        raise AssertionError(f"the fake dialplan cannot evaluate {expression!r}")
    equal = m.group(1) == m.group(3)
    return equal if m.group(2) == "=" else not equal


def app_args(data: str) -> list[str]:
    """An application's arguments as ast_app_separate_args splits them: at commas outside double
    quotes and parentheses; a backslash escapes the next character and is dropped; quotes are kept."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    parens = 0
    for ch in data:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == "(" and not quoted:
            parens += 1
            cur.append(ch)
        elif ch == ")" and not quoted and parens:
            parens -= 1
            cur.append(ch)
        elif ch == "," and not quoted and not parens:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def route_agi(
    channel: Channel, exten: str = "8005550100", *, context: str = "calltrack-inbound", path: Path = SAMPLE
) -> tuple[Run, str]:
    """Play the sample dialplan for a call to *exten* up to its AGI(); the run and the AGI() data."""
    run = Run(load(path), channel)
    pattern = "_+X." if exten.startswith("+") else "_X."
    run.goto(context, pattern)
    channel.variables["EXTEN"] = exten
    data = run.run_until("AGI")
    assert data is not None, "the sample dialplan reached no AGI()"
    return run, data
