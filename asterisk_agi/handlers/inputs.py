"""What the ``route`` handler reads from Asterisk, and which of it can be trusted.

Asterisk writes caller ID into the AGI environment as it is, line breaks included, so
nothing written after the first caller-controlled line is trusted as such (see
:mod:`asterisk_agi.protocol`). The sample dialplan puts everything in the AGI address
(``route?number=<digits>&linkedid=<b64>&uniqueid=<b64>&caller=<b64>&name=<b64>``),
which Asterisk writes before anything a caller controls (``agi_network_script``; for
the classic script, argv): no round trip, nothing to forge. A caller name with a colon
comes as ``readname=1`` instead (``${BASE64_ENCODE(...)}`` cuts such a name after an
unbalanced ``)``): the route reads it from the channel, one round trip (:data:`SAVED_NAME`). A dialplan that passes
``${EXTEN}`` and the linkedid as arguments costs one round trip instead, a
synchronisation that also reads the linkedid, uniqueid and caller ID from the channel
(base64, so any linkedid Asterisk accepts, commas and all); when that session was out
of step, the number is the argument recovered from the real end of the environment
(:func:`asterisk_agi.protocol.authentic_tail`), never a line caller text could write.

Pure functions and the standard library only: the classic script imports this first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterisk_agi.protocol import AGIEnv, authentic_tail, base64_of, unbase64

_NUMBERISH = re.compile(r"\+?[0-9][0-9 ()./-]*")
_DIGITS = re.compile(r"\+?[0-9]*")
#: the longest uniqueid/linkedid Asterisk makes: AST_MAX_PUBLIC_UNIQUEID (149) plus ";2" of a Local channel
MAX_LINKEDID = 151

#: what the synchronisation reads from the channel, each base64-encoded (one line whatever it holds);
#: the caller ID is cut to the columns' sizes (bytes here, characters in the database)
FETCH = (
    base64_of("${CHANNEL(linkedid)}"),
    base64_of("${UNIQUEID}"),
    base64_of("${CALLERID(num):0:64}"),
    base64_of("${CALLERID(name):0:800}"),
)

#: the caller name the sample dialplan saved (calltrack-callerid,hide), read when the address says
#: ``readname=1`` (a name with a colon, which ${BASE64_ENCODE(...)} may cut): copied raw by
#: GET FULL VARIABLE between the session's markers (asterisk_agi.protocol.values_command)
SAVED_NAME = ("${CALLTRACK_SAVED_NAME:0:800}",)


def needs_saved_name(query: dict[str, str]) -> bool:
    """Whether the dialplan left the caller name out of the AGI address for the route to read."""
    return "name" not in query and query.get("readname") == "1"


def saved_name(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class CallInputs:
    """What the route needs from Asterisk, from where it can be trusted."""

    dialled: str
    #: "" when unknown: the call is then keyed by the uniqueid
    linkedid: str
    uniqueid: str
    caller_number: str
    caller_name: str
    #: how the session departed from what Asterisk writes (logged); empty when it was in step
    anomalies: tuple[str, ...] = ()
    #: where the dialled number came from, for the log
    origin: str = "the dialplan's argument"


def linkedid_argument(value: str) -> str | None:
    """*value* as a linkedid the dialplan passed, if it can be one (any text Asterisk allows, no line break)."""
    value = value.strip()
    if value and len(value) <= MAX_LINKEDID and value.isprintable():
        return value
    return None


def dialled_number(env: AGIEnv, *, use_args: bool = True) -> str:
    """The tracking number the caller dialled: the first argument, else the extension, else the DNID."""
    args = env.args if use_args else []
    if args and args[0].strip():
        return args[0].strip()
    extension = env.known("agi_extension")
    if extension and _NUMBERISH.fullmatch(extension):
        return extension
    return env.known("agi_dnid") or extension


def from_address(query: dict[str, str], env: AGIEnv) -> CallInputs | None:
    """The inputs the dialplan put in the AGI address (trusted), or None when it put none there."""
    if "number" not in query:
        return None
    anomalies = list(env.anomalies)
    number = query["number"]
    if not _DIGITS.fullmatch(number):
        anomalies.append(f"number={number[:40]!r} in the AGI address is not digits")
        number = ""

    def text(key: str) -> str:
        raw = query.get(key, "")
        value = unbase64(raw)
        if value is None:
            anomalies.append(f"{key}= in the AGI address is not base64")
            return ""
        return value

    linkedid = linkedid_argument(text("linkedid")) or ""
    uniqueid = linkedid_argument(text("uniqueid")) or ""
    caller, name = text("caller"), text("name")
    if not uniqueid and not env.anomalies:
        uniqueid = env.known("agi_uniqueid")
    return CallInputs(number, linkedid, uniqueid, caller, name, tuple(anomalies), "number in the AGI address")


def from_environment(env: AGIEnv, fetched: list[str], drained: list[str]) -> CallInputs:
    """The inputs of a dialplan that passes arguments, after a synchronisation.

    *fetched*: the values of :data:`FETCH`; *drained*: the lines read before its reply.
    In step (nothing odd, nothing drained), the environment is what Asterisk wrote;
    otherwise the number is the argument at the real end of the environment.
    """
    linkedid, uniqueid, caller, name = (unbase64(v) or "" for v in fetched)
    anomalies = list(env.anomalies)
    if drained:
        anomalies.append(f"{len(drained)} line(s) before the reply to the first command")
    origin = "the dialplan's argument"
    trusted = env
    if anomalies:
        trusted = AGIEnv(authentic_tail([*env.lines, "", *drained]))
        origin = "the dialplan's argument, read from the end of the environment"
    return CallInputs(
        dialled_number(trusted),
        linkedid_argument(linkedid) or "",
        linkedid_argument(uniqueid) or ("" if anomalies else env.known("agi_uniqueid")),
        caller,
        name,
        tuple(anomalies),
        origin,
    )


def parse_query(text: str) -> dict[str, str]:
    """``a=1&b=2`` as a dict, values raw (see :attr:`asterisk_agi.protocol.AGIEnv.query`)."""
    out: dict[str, str] = {}
    for part in text.split("&") if text else ():
        key, _, value = part.partition("=")
        if key and key not in out:
            out[key] = value
    return out


def classic_needs_sync(query: dict[str, str], args: list[str], env: AGIEnv) -> bool:
    """Whether the classic route must synchronise: the session is out of step, or argv lacks the linkedid."""
    if env.anomalies:
        return True
    if "number" in query:
        return False
    return len(args) != 2 or linkedid_argument(args[1]) is None


def from_arguments(args: list[str], env: AGIEnv, fetched: list[str] | None, drained: list[str]) -> CallInputs:
    """Classic AGI with the number (and linkedid) in argv, which caller text cannot reach.

    *fetched*: the values of :data:`FETCH` when the session synchronised (then the
    linkedid, uniqueid and caller ID come from the channel), else None (the
    environment was in step and argv held the linkedid).
    """
    anomalies = list(env.anomalies)
    if drained:
        anomalies.append(f"{len(drained)} line(s) before the reply to the first command")
    trusted = env if not anomalies else AGIEnv(authentic_tail([*env.lines, "", *drained]))
    # the environment's agi_arg_1 is the script name ("route"): only the extension or DNID can stand in
    number = args[0].strip() if args and args[0].strip() else dialled_number(trusted, use_args=False)
    passed = linkedid_argument(args[1]) if len(args) == 2 else None
    if fetched is not None:
        linkedid, uniqueid, caller, name = (unbase64(v) or "" for v in fetched)
        linkedid = linkedid_argument(linkedid) or passed or ""
        uniqueid = linkedid_argument(uniqueid) or ""
    else:
        linkedid, uniqueid = passed or "", env.known("agi_uniqueid")
        caller, name = env.known("agi_callerid"), env.known("agi_calleridname")
    return CallInputs(number, linkedid, uniqueid, caller, name, tuple(anomalies), "the number in argv")
