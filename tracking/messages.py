"""Text messages to and from tracking numbers: parsing, the policy, and the database work of the ``sms`` handler.

A text to a tracking number is tracked like a call: attributed to the number's source
(for a pool number, to the website visit whose lease covered the text's time), flagged
first-time when the sender never called or texted the account before, refused for a
blocked sender and kept without sender or body for a do-not-track one. It is keyed by
(system, SIP Call-ID of the MESSAGE): Asterisk runs every text on one Message channel,
so the channel's uniqueid says nothing, and a retried AGI stores nothing twice.

STOP (and STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT) puts the sender on the account's
opt-out list, START takes them off it, HELP is answered with the account's help text.
The texts and these changes are written in one transaction, with the ``sms.received``
outbox row.

Like :mod:`tracking.routing` (whose connections it shares), this is plain SQL over the
DB-API drivers and the standard library at import time: the FastAGI handler runs it
for every text and must cost no more than a call.

Fail open: :meth:`TextRouter.run` never raises. When the database cannot answer, the
text is still forwarded (to the configured fallback destination) and its row waits in
a spool file that is replayed later.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.routing import (
    STATUS_BLOCKED,
    STATUS_FALLBACK,
    STATUS_OK,
    STATUS_UNKNOWN,
    RouteStore,
    Visit,
    caller_key,
    dialled_key,
)

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger(__name__)

#: res_pjsip_messaging's MAX_BODY_SIZE is 1024: a body of 1024 bytes or more reaches the dialplan empty
MAX_BODY_BYTES = 1023

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
#: what a MessageSend destination may hold (it goes into a dialplan application's arguments)
_DESTINATION = re.compile(r"pjsip:[A-Za-z0-9_.+@:/-]{1,200}")
_ENDPOINT = re.compile(r"[A-Za-z0-9_.-]{1,80}")
#: characters kept out of a From built for Asterisk: dialplan argument parsing eats backslashes and
#: splits at commas; quotes and angle brackets would end the display name; control characters
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\,<>;|$\[\]{}()`]')

# Column sizes of sms_messages (PostgreSQL refuses longer values; peers may send anything).
_LIMITS = {"system": 100, "message_id": 200, "from_number": 64, "to_number": 64, "sender_name": 200}


def _clip(value: str | None, column: str) -> str | None:
    return None if value is None else value[: _LIMITS[column]]


# --- parsing what Asterisk gives ------------------------------------------------------------


@dataclass(frozen=True)
class SipAddress:
    """A SIP name-addr or addr-spec: its display name (unescaped) and the user part of its URI."""

    display: str
    user: str
    host: str


def parse_sip_address(text: str) -> SipAddress:
    """``"Zoë \\"JJ\\"" <sip:+14045551234@host>;tag=x``, ``<sip:...>``, ``sip:user@host`` or ``pjsip:user@host``.

    The display name's quoted-pair escapes are undone (``MESSAGE_DATA(From)`` keeps them
    as the carrier sent them). Never raises: what cannot be read is empty.
    """
    text = text.strip()
    display = ""
    rest = text
    if rest.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                out.append(rest[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            out.append(ch)
            i += 1
        display = "".join(out)
        rest = rest[i + 1 :]
    lt = rest.find("<")
    if lt >= 0:
        if not display:
            display = rest[:lt].strip()
        gt = rest.find(">", lt)
        uri = rest[lt + 1 : gt if gt >= 0 else len(rest)]
    else:
        uri = rest.split(";", 1)[0].strip()
    scheme, sep, tail = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips", "pjsip", "tel"):
        tail = uri
    user, at, host = tail.partition("@")
    if not at:
        user, host = ("", tail) if scheme.lower() != "tel" else (tail, "")
    user = user.split(";", 1)[0]
    host = host.split(";", 1)[0].split(">", 1)[0]
    return SipAddress(display.strip(), user.strip(), host.strip())


def keyword(body: str) -> str | None:
    """``stop``, ``start`` or ``help`` when the whole text is one of those words (any case, with punctuation)."""
    word = body.strip().strip(".!?;:,'\"").strip().upper()
    if len(word) > 20:
        return None
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def safe_name(name: str, limit: int = 60) -> str:
    """*name* with nothing Asterisk's dialplan or a SIP display name could misread."""
    cleaned = _UNSAFE_NAME.sub(" ", name)
    return " ".join(cleaned.split())[:limit].strip()


def from_header(number: str, name: str, domain: str) -> str:
    """The From calltrack gives Asterisk: ``"Name" <sip:+14045551234@domain>``, built, never copied.

    Forwarding ``${MESSAGE(from)}`` as it came produced an invalid SIP From (Asterisk kept
    retransmitting for 32 s); here the user is digits and ``+`` only and the name is cleaned.
    """
    user = "".join(ch for ch in number if ch.isdigit() or ch == "+")[:32] or "anonymous"
    host = domain if _ENDPOINT.fullmatch(domain or "") else "localhost"
    shown = safe_name(name) or user
    return f'"{shown}" <sip:{user}@{host}>'


def destination(target: str, trunk: str) -> str:
    """The MessageSend destination of *target*: a ``pjsip:`` URI as is, a number through *trunk*.

    Raises ValueError naming the problem (a number without a trunk, characters the
    dialplan would misread).
    """
    target = target.strip()
    if _E164.fullmatch(target):
        if not trunk:
            raise ValueError(f"texts to {target} need [sms] trunk (the carrier's PJSIP endpoint)")
        if not _ENDPOINT.fullmatch(trunk):
            raise ValueError(f"[sms] trunk {trunk!r} is not a PJSIP endpoint name")
        return f"pjsip:PJSIP/{target}@{trunk}"
    if _DESTINATION.fullmatch(target):
        return target
    raise ValueError(f"invalid text destination {target!r}: a number (+18005550100) or pjsip:ENDPOINT")


def default_destination(forward_to: str) -> str:
    """A number without a text destination: the first endpoint its calls ring (``PJSIP/100&PJSIP/101`` ->
    ``pjsip:100``; a text goes to one destination), or "" when that is no PJSIP endpoint."""
    m = re.fullmatch(r"PJSIP/([A-Za-z0-9_.-]{1,80})", forward_to.strip().split("&", 1)[0].strip())
    return f"pjsip:{m.group(1)}" if m else ""


def body_problem(body: str) -> str:
    """Why *body* cannot be sent as a text, or ""."""
    if not body.strip():
        return "the text is empty"
    size = len(body.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        return (
            f"the text is {size} bytes; Asterisk's PJSIP messaging carries at most {MAX_BODY_BYTES} "
            "(a longer body arrives empty)"
        )
    return ""


# --- what comes in, what goes out ----------------------------------------------------------


@dataclass(frozen=True)
class InboundText:
    """One text as the ``sms`` handler read it from the Message channel."""

    system: str
    #: MESSAGE_DATA(Call-ID): the key
    message_id: str
    #: the tracking number texted (the dialplan's ${EXTEN})
    dialled: str
    #: MESSAGE_DATA(From) as the carrier sent it (UTF-8 kept), else MESSAGE(from)
    sender: str
    body: str
    #: MESSAGE_DATA(Content-Length), None when absent
    content_length: int | None
    at: dt.datetime


@dataclass(frozen=True)
class TextDecision:
    """What the dialplan does with the text: the ``CALLTRACK_SMS_*`` variables, and what was stored."""

    status: str
    #: the MessageSend destination to forward to; "" forwards nowhere
    destination: str = ""
    #: the From of the forward
    from_header: str = ""
    source_name: str = ""
    #: a text to send back to the sender (HELP, STOP, START), its destination and From
    reply: str = ""
    reply_to: str = ""
    reply_from: str = ""
    message_row: int | None = None
    keyword: str | None = None
    first_time: bool | None = None
    reason: str = ""

    def variables(self) -> list[tuple[str, str]]:
        import base64

        return [
            ("CALLTRACK_SMS_STATUS", self.status),
            ("CALLTRACK_SMS_ID", "" if self.message_row is None else str(self.message_row)),
            ("CALLTRACK_SMS_DEST", self.destination),
            ("CALLTRACK_SMS_FROM", self.from_header),
            ("CALLTRACK_SMS_SOURCE", safe_name(self.source_name, 200)),
            ("CALLTRACK_SMS_REPLY", base64.b64encode(self.reply.encode("utf-8")).decode("ascii") if self.reply else ""),
            ("CALLTRACK_SMS_REPLY_TO", self.reply_to if self.reply else ""),
            ("CALLTRACK_SMS_REPLY_FROM", self.reply_from if self.reply else ""),
        ]


# --- the database --------------------------------------------------------------------------

# "account_id + 0" keeps SQLite on the number indexes (see tracking/routing.py).
_LOOKUP_SQL = """
SELECT tn.id, tn.number, tn.account_id, tn.source_id, tn.pool_id, tn.forward_to, tn.status, s.name,
       np.source_id, ps.name, tn.sms_forward_to, a.sms_help_text,
       (SELECT count(*) FROM caller_lists cl WHERE cl.kind = 'blocked' AND cl.number IN (:sender, :sender_raw)
          AND (cl.account_id IS NULL OR cl.account_id = tn.account_id)),
       (SELECT count(*) FROM caller_lists cl WHERE cl.kind = 'do-not-track' AND cl.number IN (:sender, :sender_raw)
          AND (cl.account_id IS NULL OR cl.account_id = tn.account_id)),
       CASE WHEN EXISTS (SELECT 1 FROM calls c WHERE c.caller_number = :sender AND c.account_id + 0 = tn.account_id
               AND (c.disposition IS NULL OR c.disposition <> 'blocked'))
            OR EXISTS (SELECT 1 FROM sms_messages m WHERE m.from_number = :sender AND m.account_id + 0 = tn.account_id
               AND m.direction = 'in' AND (m.status IS NULL OR m.status <> 'blocked')
               AND NOT (m.system = :system AND m.message_id = :message_id))
            THEN 1 ELSE 0 END
FROM tracking_numbers tn
JOIN accounts a ON a.id = tn.account_id
LEFT JOIN sources s ON s.id = tn.source_id
LEFT JOIN number_pools np ON np.id = tn.pool_id
LEFT JOIN sources ps ON ps.id = np.source_id
WHERE tn.number = :number
"""

TEXT_COLUMNS = (
    "system",
    "message_id",
    "account_id",
    "tracking_number_id",
    "source_id",
    "visitor_session_id",
    "direction",
    "from_number",
    "to_number",
    "sender_name",
    "body",
    "first_time",
    "status",
    "keyword",
    "content_length",
    "body_dropped",
    "forwarded_to",
    "do_not_track",
    "error",
    "received_at",
)

# Built from the constant TEXT_COLUMNS only; every value is a bound parameter.
_INSERT_SQL = (
    "INSERT INTO sms_messages ("  # noqa: S608
    + ", ".join(TEXT_COLUMNS)
    + ") VALUES ("
    + ", ".join(":" + c for c in TEXT_COLUMNS)
    + ") ON CONFLICT (system, message_id) DO NOTHING RETURNING id"
)
_EXISTING_SQL = "SELECT id FROM sms_messages WHERE system = :system AND message_id = :message_id"
_OPT_OUT_SQL = (
    "INSERT INTO sms_opt_outs (account_id, number, keyword, created_at) VALUES (:account_id, :number, :keyword, :now) "
    "ON CONFLICT (account_id, number) DO NOTHING"
)
_OPT_IN_SQL = "DELETE FROM sms_opt_outs WHERE account_id = :account_id AND number = :number"
# sms.received, once per text, for an account with an enabled endpoint that takes it; never for a
# do-not-track sender (tracking/outbox.py's rules, in the text's transaction)
_ANNOUNCE_SQL = (
    "INSERT INTO outbox_events (event_id, type, account_id, sms_id, dedupe_key, occurred_at) "
    "SELECT :event_id, 'sms.received', m.account_id, m.id, 'sms.received:' || m.id, :now FROM sms_messages m "
    "WHERE m.id = :sms_id AND m.account_id IS NOT NULL AND (m.do_not_track IS NULL OR NOT m.do_not_track) "
    "AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.account_id = m.account_id AND e.enabled "
    # a literal pattern: a bound one would make SQLite prepare the statement anew on every run
    "AND e.events LIKE '%,sms.received,%') ON CONFLICT (dedupe_key) DO NOTHING"
)
_RECEIVED_PATTERN = "%,sms.received,%"
# PostgreSQL: the text, its opt-out change and its outbox row in one statement (one round trip; an
# autocommit statement is one transaction). Nothing but the insert happens for a message id stored already.
_PG_SAVE_SQL = (
    "WITH m AS ("  # noqa: S608
    + _INSERT_SQL.replace(" RETURNING id", " RETURNING id, account_id, do_not_track")
    + "), o AS (INSERT INTO sms_opt_outs (account_id, number, keyword, created_at) "
    "SELECT :opt_account, :opt_number, :keyword, :now FROM m WHERE :opt = 'out' "
    "ON CONFLICT (account_id, number) DO NOTHING), "
    "i AS (DELETE FROM sms_opt_outs WHERE :opt = 'in' AND account_id = :opt_account AND number = :opt_number "
    "AND EXISTS (SELECT 1 FROM m)), "
    "ev AS (INSERT INTO outbox_events (event_id, type, account_id, sms_id, dedupe_key, occurred_at) "
    "SELECT :event_id, 'sms.received', m.account_id, m.id, 'sms.received:' || m.id, :now FROM m "
    "WHERE :direction = 'in' AND m.account_id IS NOT NULL AND (m.do_not_track IS NULL OR NOT m.do_not_track) "
    "AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.account_id = m.account_id AND e.enabled "
    "AND e.events LIKE :pattern) ON CONFLICT (dedupe_key) DO NOTHING) "
    "SELECT id FROM m"
)


@dataclass(frozen=True)
class TextNumber:
    """A tracking number as texts need it, with the facts about the sender from the same query."""

    id: int
    number: str
    account_id: int
    source_id: int | None
    pool_id: int | None
    forward_to: str
    status: str
    source_name: str | None
    pool_source_id: int | None
    pool_source_name: str | None
    sms_forward_to: str | None
    help_text: str | None
    blocked: bool
    do_not_track: bool
    seen_before: bool


class TextStore:
    """The texts' database work over a :class:`tracking.routing.RouteStore`'s connections."""

    def __init__(self, store: RouteStore) -> None:
        self.store = store

    @property
    def dialect(self) -> str:
        return self.store.dialect

    def lookup(
        self, number: str, sender: str | None, sender_raw: str, system: str, message_id: str
    ) -> TextNumber | None:
        row = self.store.execute(
            _LOOKUP_SQL,
            {
                "number": number,
                "sender": sender or "",
                "sender_raw": sender_raw or "",
                "system": system,
                "message_id": message_id,
            },
        ).fetchone()
        if row is None:
            return None
        has_sender = bool(sender or sender_raw)
        return TextNumber(
            id=row[0],
            number=row[1],
            account_id=row[2],
            source_id=row[3],
            pool_id=row[4],
            forward_to=row[5],
            status=row[6],
            source_name=row[7],
            pool_source_id=row[8],
            pool_source_name=row[9],
            sms_forward_to=row[10],
            help_text=row[11],
            blocked=has_sender and row[12] > 0,
            do_not_track=has_sender and row[13] > 0,
            seen_before=sender is not None and bool(row[14]),
        )

    def visit(self, number_id: int, at: dt.datetime, grace: dt.timedelta) -> Visit | None:
        """The visit whose pool lease covered *at*: the route's query (a text is attributed like a call)."""
        return self.store.visit(number_id, at, grace)

    def save(self, values: dict[str, Any], opt: tuple[str, int, str] | None = None) -> tuple[int, bool]:
        """Insert the text (nothing when its message id is stored already) and apply *opt*
        (``("out"|"in", account_id, number)``) in one transaction. (row id, whether it is new)."""
        params = {c: values.get(c) for c in TEXT_COLUMNS}
        now = dt.datetime.now(dt.UTC)
        params["received_at"] = self.store.ts(params["received_at"] or now)
        conn = self.store.connection()
        cur = conn.cursor()
        q = self.store._q
        if self.dialect == "postgresql":
            what, account_id, number = opt if opt is not None else ("", None, None)
            extra = {
                "opt": what,
                "opt_account": account_id,
                "opt_number": number,
                "now": self.store.ts(now),
                "event_id": "evt_" + uuid.uuid4().hex,
                "pattern": _RECEIVED_PATTERN,
            }
            cur.execute(q(_PG_SAVE_SQL), {**params, **extra})
            row = cur.fetchone()
            if row is not None:
                return int(row[0]), True
            cur.execute(q(_EXISTING_SQL), {"system": params["system"], "message_id": params["message_id"]})
            return int(cur.fetchone()[0]), False
        cur.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        try:
            cur.execute(q(_INSERT_SQL), params)
            row = cur.fetchone()
            new = row is not None
            if row is None:
                cur.execute(q(_EXISTING_SQL), {"system": params["system"], "message_id": params["message_id"]})
                row = cur.fetchone()
            text_id: int = row[0]
            if new and opt is not None:
                what, account_id, number = opt
                opt_params = {"account_id": account_id, "number": number, "keyword": params["keyword"]}
                if what == "out":
                    cur.execute(q(_OPT_OUT_SQL), {**opt_params, "now": self.store.ts(now)})
                else:
                    cur.execute(q(_OPT_IN_SQL), {"account_id": account_id, "number": number})
            if new and params["direction"] == "in":
                cur.execute(
                    q(_ANNOUNCE_SQL),
                    {
                        "event_id": "evt_" + uuid.uuid4().hex,
                        "now": self.store.ts(now),
                        "sms_id": text_id,
                    },
                )
            cur.execute("COMMIT")
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except Exception:
                pass
            raise
        return text_id, new


class TextSpool:
    """Texts that could not be stored (database away), one JSON file each, stored later as they came."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def append(self, text: InboundText) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {**text.__dict__, "at": text.at.isoformat()}
        name = f"sms-{uuid.uuid4().hex}.json"
        tmp = self.folder / (name + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.folder / name)

    def pending(self) -> int:
        return len(list(self.folder.glob("sms-*.json"))) if self.folder.is_dir() else 0

    def replay(self, store: Callable[[InboundText], object]) -> int:
        """Hand each spooled text to *store* (raising leaves it, and the rest, for the next time)."""
        if not self.folder.is_dir():
            return 0
        written = 0
        with self._lock:
            for path in sorted(self.folder.glob("sms-*.json")):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    data["at"] = dt.datetime.fromisoformat(data["at"])
                    text = InboundText(**data)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    logger.error("spooled text %s is unreadable (%s); moved aside", path.name, exc)
                    path.rename(path.with_suffix(".bad"))
                    continue
                store(text)
                path.unlink()
                written += 1
        return written


def spool_folder(settings: Settings) -> Path:
    from tracking.routing import spool_folder as calls_spool

    return calls_spool(settings) / "sms"


# --- the policy and the router -------------------------------------------------------------


class TextRouter:
    """Stores and routes texts to tracking numbers (the ``sms`` handler's database work)."""

    def __init__(self, settings: Settings, store: RouteStore, spool: TextSpool | None = None) -> None:
        self.settings = settings
        self.texts = TextStore(store)
        self.spool_ = spool if spool is not None else TextSpool(spool_folder(settings))

    # pure parts

    def reply_from(self, number: str) -> str:
        return from_header(number, number, self.settings.sms.domain)

    def fallback(self, text: InboundText, reason: str, status: str = STATUS_FALLBACK) -> TextDecision:
        """Forward to the configured fallback destination: tracking could not decide."""
        sender = parse_sip_address(text.sender)
        dest = self.settings.sms.fallback_destination
        try:
            dest = destination(dest, self.settings.sms.trunk) if dest else ""
        except ValueError as exc:
            logger.error("[sms] fallback_destination: %s", exc)
            dest = ""
        return TextDecision(
            status,
            destination=dest,
            from_header=from_header(sender.user, sender.display, self.settings.sms.domain) if dest else "",
            reason=reason,
        )

    def values(self, text: InboundText, number: str | None) -> dict[str, Any]:
        sender = parse_sip_address(text.sender)
        region = self.settings.numbers.default_region
        dropped = not text.body and (text.content_length or 0) > MAX_BODY_BYTES
        return {
            "system": _clip(text.system, "system"),
            "message_id": _clip(text.message_id, "message_id"),
            "direction": "in",
            "from_number": _clip(caller_key(sender.user, region), "from_number"),
            "to_number": _clip(number or text.dialled.strip(), "to_number") or "",
            "sender_name": _clip(sender.display, "sender_name") or None,
            "body": text.body,
            "content_length": text.content_length,
            "body_dropped": True if dropped else None,
            "received_at": text.at,
        }

    # the database work

    def run(self, text: InboundText) -> TextDecision:
        """Store and route *text* now, in this thread; never raises."""
        try:
            return self.route(text)
        except Exception as exc:
            self.texts.store.discard()
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg"):
                reason = f"database error: {type(exc).__name__}: {detail}"
            else:
                logger.exception("text %s/%s failed", text.system, text.message_id)
                reason = f"text routing error: {type(exc).__name__}: {detail}"
            self.spool(text)
            return self.fallback(text, reason)

    def spool(self, text: InboundText) -> None:
        try:
            self.spool_.append(text)
        except OSError as exc:
            logger.error("cannot spool the text %s/%s: %s", text.system, text.message_id, exc)

    def replay_spool(self) -> int:
        """Store the spooled texts, attributed as they would have been (STOP and START applied)."""
        return self.spool_.replay(self.route)

    def try_inline(self, text: InboundText, texts: TextStore) -> TextDecision | None:
        """Route on *texts*, a SQLite connection that never waits for a lock (as the route does); None
        when it could not (busy, or anything else): the caller then uses the threads. Nothing is
        written unless the whole text is."""
        try:
            return self.route(text, texts)
        except Exception as exc:
            logger.debug("inline text %s/%s gave way: %s", text.system, text.message_id, exc)
            if getattr(exc, "sqlite_errorcode", None) != 5:  # SQLITE_BUSY keeps its connection
                texts.store.discard()
            return None

    def route(self, text: InboundText, texts: TextStore | None = None) -> TextDecision:
        """The database work of one text. Raises on database errors (see :meth:`run`)."""
        store = texts or self.texts
        settings = self.settings
        region = settings.numbers.default_region
        number = dialled_key(text.dialled, region)
        sender = parse_sip_address(text.sender)
        sender_key = caller_key(sender.user, region)
        values = self.values(text, number)
        if not text.message_id:
            # Asterisk always copies the Call-ID; without one the text cannot be kept idempotent
            values["message_id"] = "ct-noid-" + uuid.uuid4().hex
        info = None
        if number is not None:
            info = store.lookup(
                number, sender_key, sender.user.strip().lower(), values["system"] or "", values["message_id"] or ""
            )
        if info is None or info.status != "active":
            reason = f"{text.dialled!r} is not a tracking number" if info is None else f"{info.number} is {info.status}"
            decision = self.fallback(text, reason, STATUS_UNKNOWN)
            values.update(
                status="received",
                account_id=info.account_id if info else None,
                tracking_number_id=info.id if info else None,
                forwarded_to=decision.destination or None,
            )
            row, _new = store.save(values)
            return replace(decision, message_row=row)
        visit = None
        if info.pool_id is not None:
            grace = dt.timedelta(seconds=settings.tracking.attribution_grace_seconds)
            visit = store.visit(info.id, text.at, grace)
        source_id: int | None
        source_name: str | None
        if visit is not None and visit.source_id is not None:
            source_id, source_name = visit.source_id, visit.source_name
        elif info.pool_id is not None:
            source_id, source_name = info.pool_source_id, info.pool_source_name
        else:
            source_id, source_name = info.source_id, info.source_name
        word = keyword(text.body) if sender_key else None
        first = None if sender_key is None or info.do_not_track or info.blocked else not info.seen_before
        values.update(
            account_id=info.account_id,
            tracking_number_id=info.id,
            source_id=source_id,
            visitor_session_id=visit.id if visit else None,
            first_time=first,
            keyword=word,
        )
        if info.do_not_track:
            values.update(from_number=None, sender_name=None, body="", do_not_track=True, first_time=None)
        status = STATUS_BLOCKED if info.blocked else STATUS_OK
        dest = ""
        reason = ""
        if status == STATUS_OK:
            target = info.sms_forward_to or default_destination(info.forward_to)
            try:
                dest = destination(target, settings.sms.trunk) if target else ""
            except ValueError as exc:
                reason = f"number {info.number}: {exc}"
            if not dest:
                fb = self.fallback(text, reason or f"number {info.number} has no text destination")
                status, dest, reason = STATUS_FALLBACK, fb.destination, fb.reason
        values.update(status="blocked" if info.blocked else "received", forwarded_to=dest or None)
        opt = None
        reply = ""
        if word and sender_key and not info.blocked:
            if word == "stop":
                opt = ("out", info.account_id, sender_key)
                reply = settings.sms.stop_reply
            elif word == "start":
                opt = ("in", info.account_id, sender_key)
                reply = settings.sms.start_reply
            else:
                reply = info.help_text or settings.sms.help_text
        row, _new = store.save(values, opt)
        reply_to = ""
        if reply and sender_key and _E164.fullmatch(sender_key):
            try:
                reply_to = destination(sender_key, settings.sms.trunk)
            except ValueError as exc:
                logger.warning("cannot answer %s to text %s: %s", word, row, exc)
        shown = sender.display if not info.do_not_track else ""
        return TextDecision(
            status,
            destination=dest,
            from_header=from_header(sender.user, shown, settings.sms.domain) if dest else "",
            source_name=source_name or "",
            reply=reply if reply_to else "",
            reply_to=reply_to,
            reply_from=self.reply_from(info.number),
            message_row=row,
            keyword=word,
            first_time=first,
            reason=reason or ("sender is on the blocked list" if info.blocked else ""),
        )
