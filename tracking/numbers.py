"""Tracking numbers: add, update, release, list, and the shared validation of one number's fields."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from config import Settings
from schema.models import Account, NumberPool, Source, TrackingNumber, utcnow
from tracking import dialstring, phone
from tracking.accounts import get_account, get_source
from tracking.errors import Conflict, InvalidInput, NotFound
from tracking.hours import format_hours, parse_hours

_WHISPER = re.compile(r"[A-Za-z0-9_./-]+")
MAX_RING_TIMEOUT = 600


@dataclass
class NumberFields:
    """What a user gives for one number (from CLI options or a CSV row), before validation."""

    number: str
    account: str | None = None
    source: str | None = None
    pool: str | None = None
    forward_to: str | None = None
    timeout: int | str | None = None
    record: bool | str | None = None
    whisper: str | None = None
    label: str | None = None
    #: business hours as text ("mon-fri 09:00-17:00, sat 10:00-14:00"), "always" to clear
    hours: str | None = None
    #: dial string used outside business hours
    after_hours: str | None = None


def validate_whisper(whisper: str | None) -> str | None:
    if whisper is None or whisper.strip() == "":
        return None
    text = whisper.strip()
    if not _WHISPER.fullmatch(text) or ".." in text.split("/"):
        raise InvalidInput(
            f"invalid whisper file {whisper!r}: use a sound name or path of letters, digits, _ . / - "
            "(Asterisk adds the extension)"
        )
    return text


def parse_timeout(value: int | str | None, default: int) -> int:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return default
    try:
        seconds = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"invalid timeout {value!r}: a whole number of seconds") from None
    if not 1 <= seconds <= MAX_RING_TIMEOUT:
        raise InvalidInput(f"invalid timeout {seconds}: between 1 and {MAX_RING_TIMEOUT} seconds")
    return seconds


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def parse_bool(value: bool | str | None, default: bool, what: str) -> bool:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return default
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"invalid {what} {value!r}: use yes or no")


def clean_label(label: str | None) -> str | None:
    if label is None or label.strip() == "":
        return None
    text = label.strip()
    if any(ord(ch) < 32 for ch in text):
        raise InvalidInput(f"invalid label {label!r}: control characters are not allowed")
    if len(text) > 200:
        raise InvalidInput("label too long (at most 200 characters)")
    return text


@dataclass
class Resolver:
    """Looks up accounts, sources and pools once per name (a CSV import repeats them)."""

    session: Session
    settings: Settings
    _accounts: dict[str, Account] = field(default_factory=dict)
    _sources: dict[tuple[int, str], Source] = field(default_factory=dict)
    _pools: dict[tuple[int, str], NumberPool] = field(default_factory=dict)

    def account(self, name: str | None) -> Account:
        if not name or not name.strip():
            raise InvalidInput("an account is required")
        key = name.strip().lower()
        if key not in self._accounts:
            self._accounts[key] = get_account(self.session, name.strip())
        return self._accounts[key]

    def source(self, account: Account, name: str) -> Source:
        key = (account.id, name.strip().lower())
        if key not in self._sources:
            self._sources[key] = get_source(self.session, account, name.strip())
        return self._sources[key]

    def pool(self, account: Account, name: str) -> NumberPool:
        key = (account.id, name.strip().lower())
        if key not in self._pools:
            self._pools[key] = get_pool(self.session, account, name.strip())
        return self._pools[key]

    def new_number_values(self, fields: NumberFields, e164: str | None = None) -> dict[str, Any]:
        """Column values for a new number, or InvalidInput/NotFound naming the field at fault.

        *e164* is the number already normalised (an import has done it to find duplicates).
        """
        number = e164 or phone.normalize(fields.number, self.settings.numbers.default_region)
        account = self.account(fields.account)
        source_name = (fields.source or "").strip()
        pool_name = (fields.pool or "").strip()
        if bool(source_name) == bool(pool_name):
            raise InvalidInput("give either a source or a pool (exactly one)")
        if not fields.forward_to or not fields.forward_to.strip():
            raise InvalidInput("a forward-to dial string is required")
        values: dict[str, Any] = {
            "number": number,
            "account_id": account.id,
            "source_id": self.source(account, source_name).id if source_name else None,
            "pool_id": self.pool(account, pool_name).id if pool_name else None,
            "forward_to": dialstring.validate(fields.forward_to, "forward-to dial string"),
            "ring_timeout": parse_timeout(fields.timeout, self.settings.numbers.default_ring_timeout),
            "record": parse_bool(fields.record, self.settings.numbers.default_record, "record flag"),
            "whisper": validate_whisper(fields.whisper),
            "label": clean_label(fields.label),
            "schedule": parse_hours(fields.hours),
            "after_hours_forward_to": (
                dialstring.validate(fields.after_hours, "after-hours dial string")
                if fields.after_hours and fields.after_hours.strip()
                else None
            ),
            "status": "active",
        }
        if values["schedule"] is None and values["after_hours_forward_to"]:
            raise InvalidInput("an after-hours destination needs business hours (--hours)")
        return values

    def changed_values(self, existing: TrackingNumber, fields: NumberFields) -> dict[str, Any]:
        """Column values to change on *existing*: only what *fields* gives."""
        values: dict[str, Any] = {}
        account = existing.account
        if fields.account and fields.account.strip():
            account = self.account(fields.account)
            if account.id != existing.account_id:
                values["account_id"] = account.id
        if fields.source and fields.pool:
            raise InvalidInput("give either a source or a pool (exactly one)")
        if fields.source:
            values.update(source_id=self.source(account, fields.source).id, pool_id=None)
        elif fields.pool:
            values.update(pool_id=self.pool(account, fields.pool).id, source_id=None)
        elif "account_id" in values:
            raise InvalidInput("moving a number to another account needs its source or pool there")
        if fields.forward_to is not None and fields.forward_to.strip():
            values["forward_to"] = dialstring.validate(fields.forward_to, "forward-to dial string")
        if fields.timeout is not None and str(fields.timeout).strip():
            values["ring_timeout"] = parse_timeout(fields.timeout, existing.ring_timeout)
        if fields.record is not None and str(fields.record).strip():
            values["record"] = parse_bool(fields.record, existing.record, "record flag")
        if fields.whisper is not None:
            values["whisper"] = validate_whisper(fields.whisper)
        if fields.label is not None:
            values["label"] = clean_label(fields.label)
        if fields.hours is not None:
            values["schedule"] = parse_hours(fields.hours)
        if fields.after_hours is not None:
            text = fields.after_hours.strip()
            values["after_hours_forward_to"] = (
                dialstring.validate(text, "after-hours dial string") if text and text.lower() != "none" else None
            )
        return values


def get_pool(session: Session, account: Account, name: str) -> NumberPool:
    pool = session.scalar(select(NumberPool).where(NumberPool.account_id == account.id, NumberPool.name == name))
    if pool is None:
        raise NotFound(f"unknown pool {name!r} in account {account.name!r} (see `calltrack pools list`)")
    return pool


def find_number(session: Session, number: str, settings: Settings) -> TrackingNumber:
    e164 = phone.normalize(number, settings.numbers.default_region)
    found = session.scalar(
        select(TrackingNumber)
        .options(joinedload(TrackingNumber.account), joinedload(TrackingNumber.source), joinedload(TrackingNumber.pool))
        .where(TrackingNumber.number == e164)
    )
    if found is None:
        raise NotFound(f"unknown tracking number {e164} (see `calltrack numbers list`)")
    return found


def _refuse_existing(session: Session, number: str) -> None:
    existing = session.scalar(select(TrackingNumber).where(TrackingNumber.number == number))
    if existing is not None:
        state = "released, kept for history" if existing.status == "released" else "active"
        raise Conflict(f"number {number} already exists ({state}); change it with `calltrack numbers update`")


def add_number(session: Session, settings: Settings, fields: NumberFields) -> TrackingNumber:
    values = Resolver(session, settings).new_number_values(fields)
    _refuse_existing(session, values["number"])
    tn = TrackingNumber(**values)
    session.add(tn)
    session.flush()
    return tn


def update_number(
    session: Session, settings: Settings, fields: NumberFields, *, reactivate: bool = False
) -> TrackingNumber:
    tn = find_number(session, fields.number, settings)
    values = Resolver(session, settings).changed_values(tn, fields)
    if reactivate and tn.status == "released":
        values.update(status="active", released_at=None)
    if not values:
        raise InvalidInput("nothing to change: give at least one option")
    for key, value in values.items():
        setattr(tn, key, value)
    session.flush()
    return tn


def release_number(session: Session, settings: Settings, number: str) -> TrackingNumber:
    tn = find_number(session, number, settings)
    if tn.status == "released":
        raise Conflict(f"number {tn.number} is already released")
    tn.status = "released"
    tn.released_at = utcnow()
    session.flush()
    return tn


def _filters(session: Session, account: str | None, source: str | None, status: str | None) -> list[Any]:
    where: list[Any] = []
    if account:
        acct = get_account(session, account)
        where.append(TrackingNumber.account_id == acct.id)
        if source:
            where.append(TrackingNumber.source_id == get_source(session, acct, source).id)
    elif source:
        ids = list(session.scalars(select(Source.id).where(func.lower(Source.name) == source.strip().lower())))
        if not ids:
            raise NotFound(f"unknown source {source!r} in any account (see `calltrack sources list`)")
        where.append(TrackingNumber.source_id.in_(ids))
    if status:
        where.append(TrackingNumber.status == status)
    return where


def list_numbers(
    session: Session,
    *,
    account: str | None = None,
    source: str | None = None,
    status: str | None = None,
) -> list[TrackingNumber]:
    query = (
        select(TrackingNumber)
        .options(joinedload(TrackingNumber.account), joinedload(TrackingNumber.source), joinedload(TrackingNumber.pool))
        .where(*_filters(session, account, source, status))
        .order_by(TrackingNumber.number)
    )
    return list(session.scalars(query).unique())


def number_record(tn: TrackingNumber, region: str = "US") -> dict[str, Any]:
    """One number as the listing commands show it (JSON keys, CSV columns)."""
    return {
        "number": tn.number,
        "display": phone.display(tn.number, region),
        "account": tn.account.name,
        "source": tn.source.name if tn.source else None,
        "pool": tn.pool.name if tn.pool else None,
        "forward_to": tn.forward_to,
        "timeout": tn.ring_timeout,
        "record": tn.record,
        "whisper": tn.whisper,
        "label": tn.label,
        "hours": format_hours(tn.schedule),
        "after_hours": tn.after_hours_forward_to,
        "status": tn.status,
        "created_at": tn.created_at.isoformat(timespec="seconds"),
        "released_at": tn.released_at.isoformat(timespec="seconds") if tn.released_at else None,
    }


def existing_numbers(session: Session, numbers: Iterable[str]) -> dict[str, TrackingNumber]:
    wanted = list(numbers)
    found: dict[str, TrackingNumber] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for tn in session.scalars(select(TrackingNumber).where(TrackingNumber.number.in_(chunk))):
            found[tn.number] = tn
    return found
