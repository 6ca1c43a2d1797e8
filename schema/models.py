"""SQLAlchemy 2 models for the whole product.

Times are stored as UTC (naive in the database, aware in Python) so SQLite and
PostgreSQL behave the same.  Constraint names come from the naming convention,
so migrations can refer to them by name on both databases.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from schema.types import UTCDateTime

#: a number's lease end with "never leased" first: the order of ix_tracking_numbers_pool_free, which
#: the lease statements write the same way (each database uses the index only for this expression)
LEASE_END_ORDER = "coalesce(last_leased_at, '1970-01-01 00:00:00')"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


# --- accounts and what they own -------------------------------------------------


class Account(Base):
    """A business customer (an agency manages several)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: the key dni.js sends (data-account); not a secret
    public_key: Mapped[str] = mapped_column(String(64), unique=True)
    #: per-account retention windows; None means the settings' default
    retention_days: Mapped[int | None]
    recording_retention_days: Mapped[int | None]
    #: transcribe this account's recordings (when [transcription] is enabled)
    transcription: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: the answer to a text saying HELP; None: the settings' [sms] help_text
    sms_help_text: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    sources: Mapped[list[Source]] = relationship(back_populates="account", cascade="all, delete-orphan")


class Source(Base):
    """A marketing channel (Google Ads, a flyer, the website's organic traffic)."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    medium: Mapped[str | None] = mapped_column(String(100))
    campaign: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    account: Mapped[Account] = relationship(back_populates="sources")


class NumberPool(Base):
    """Numbers leased one per website visitor session (dynamic number insertion)."""

    __tablename__ = "number_pools"
    __table_args__ = (UniqueConstraint("account_id", "name"), CheckConstraint("hold_minutes > 0", name="hold_positive"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    #: the source calls get when no visitor session covers them
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    #: a number stays with a session this long after its last heartbeat
    hold_minutes: Mapped[int] = mapped_column(Integer, default=30)
    #: E.164 number shown when every pool number is leased
    overflow_number: Mapped[str | None] = mapped_column(String(20))
    overflow_count: Mapped[int] = mapped_column(Integer, default=0)
    peak_leases: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    account: Mapped[Account] = relationship()
    numbers: Mapped[list[TrackingNumber]] = relationship(back_populates="pool")


class PoolOverflowCount(Base):
    """Overflows of a pool counted on PostgreSQL, in a few slots (one per database connection, mostly).

    A pool's overflow count is ``number_pools.overflow_count`` plus its slots' counts
    (:func:`tracking.pools.overflow_counts`): full-pool visitors served by different
    connections then write different rows, and none waits for the pool row's lock.
    """

    __tablename__ = "pool_overflow_counts"

    pool_id: Mapped[int] = mapped_column(ForeignKey("number_pools.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, default=0)


class TrackingNumber(Base):
    """A phone number that rings through calltrack, tied to a source or a pool."""

    __tablename__ = "tracking_numbers"
    __table_args__ = (
        CheckConstraint("(source_id IS NULL) <> (pool_id IS NULL)", name="source_xor_pool"),
        CheckConstraint("status IN ('active', 'released')", name="status"),
        CheckConstraint("ring_timeout > 0", name="ring_timeout_positive"),
        Index("ix_tracking_numbers_account_status", "account_id", "status"),
        # a pool's active numbers in the order they are leased (never leased first, then the least
        # recently used): the free number is the index's first entry past the pool's live ones, and
        # the pool's live leases one range of it, however large the pool (tracking.leases)
        Index(
            "ix_tracking_numbers_pool_free",
            "pool_id",
            sql_text(LEASE_END_ORDER),
            "id",
            sqlite_where=sql_text("status = 'active'"),
            postgresql_where=sql_text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: E.164, unique: a number belongs to one account at a time
    number: Mapped[str] = mapped_column(String(20), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"), index=True)
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("number_pools.id", ondelete="RESTRICT"), index=True)
    #: Asterisk dial string (PJSIP/100&PJSIP/101, Local/100@agents)
    forward_to: Mapped[str] = mapped_column(String(500))
    ring_timeout: Mapped[int] = mapped_column(Integer, default=30)
    record: Mapped[bool] = mapped_column(Boolean, default=True)
    whisper: Mapped[str | None] = mapped_column(String(500))
    label: Mapped[str | None] = mapped_column(String(200))
    #: business hours: {"mon": [["09:00", "17:00"]], ...} in the account's timezone; None = always open
    schedule: Mapped[dict[str, Any] | None]
    #: dial string used outside business hours
    after_hours_forward_to: Mapped[str | None] = mapped_column(String(500))
    #: where texts to the number go: a MessageSend destination (pjsip:agent100) or a number (through [sms] trunk)
    sms_forward_to: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: when a pool lease last ended (least recently used first)
    last_leased_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    released_at: Mapped[dt.datetime | None]

    account: Mapped[Account] = relationship()
    source: Mapped[Source | None] = relationship()
    pool: Mapped[NumberPool | None] = relationship(back_populates="numbers")


class Site(Base):
    """A website origin allowed to call the DNI API for an account (CORS)."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("account_id", "origin"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    origin: Mapped[str] = mapped_column(String(300))
    #: the business numbers dni.js replaces on this site, E.164, comma-separated
    replace_numbers: Mapped[str] = mapped_column(String(1000), default="", server_default="")
    #: where the site's numbers without a country code are read; None: numbers.default_region
    region: Mapped[str | None] = mapped_column(String(2))
    #: form capture by dni.js (opt-in): None (off), "marked" (forms marked data-calltrack-form) or "all"
    forms: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SourceRule(Base):
    """How a website visit picks its source: param, referrer, referrer group or default."""

    __tablename__ = "source_rules"
    __table_args__ = (CheckConstraint("kind IN ('param', 'referrer', 'referrer_group', 'default')", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    #: param rules: "utm_source=google"; referrer: a host; referrer_group: search/social
    pattern: Mapped[str] = mapped_column(String(500), default="")
    #: lower runs first within a kind
    priority: Mapped[int] = mapped_column(Integer, default=100)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VisitorSession(Base):
    """One website visit, with what it tells about where the visitor came from."""

    __tablename__ = "visitor_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the opaque id given to dni.js
    key: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    visitor_id: Mapped[str | None] = mapped_column(String(64), index=True)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    landing_url: Mapped[str | None] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text)
    utm_source: Mapped[str | None] = mapped_column(String(200))
    utm_medium: Mapped[str | None] = mapped_column(String(200))
    utm_campaign: Mapped[str | None] = mapped_column(String(200))
    utm_term: Mapped[str | None] = mapped_column(String(200))
    utm_content: Mapped[str | None] = mapped_column(String(200))
    gclid: Mapped[str | None] = mapped_column(String(200))
    gbraid: Mapped[str | None] = mapped_column(String(200))
    wbraid: Mapped[str | None] = mapped_column(String(200))
    #: Microsoft Advertising's click id
    msclkid: Mapped[str | None] = mapped_column(String(200))
    pages_seen: Mapped[int] = mapped_column(Integer, default=1)
    user_agent: Mapped[str | None] = mapped_column(String(500))
    ip: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    source: Mapped[Source | None] = relationship()


class PoolLease(Base):
    """A pool number shown to one visitor session from leased_at until expires_at."""

    __tablename__ = "pool_leases"
    __table_args__ = (Index("ix_pool_leases_number_window", "number_id", "leased_at", "expires_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("number_pools.id", ondelete="CASCADE"), index=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("tracking_numbers.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("visitor_sessions.id", ondelete="CASCADE"), index=True)
    leased_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]

    number: Mapped[TrackingNumber] = relationship()
    session: Mapped[VisitorSession] = relationship()


# --- calls ------------------------------------------------------------------------


class Call(Base):
    """One inbound call, keyed by (Asterisk system name, linkedid)."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("system", "linkedid"),
        # covering for the dashboard's reports and overview (they read one account's period from it)
        Index(
            "ix_calls_account_started_report",
            "account_id",
            "started_at",
            "disposition",
            "first_time",
            "talk_time",
            "source_id",
            "visitor_session_id",
            "tracking_number",
        ),
        # a caller's calls; "a later answered call from the same number to the account" in one probe
        Index("ix_calls_caller_answered", "caller_number", "account_id", "disposition", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    system: Mapped[str] = mapped_column(String(100))
    #: as long as Asterisk makes them (AST_MAX_UNIQUEID: 149 characters, ";2" on a Local channel)
    linkedid: Mapped[str] = mapped_column(String(152))
    #: uniqueid of the channel that ran the route (AGI, MixMonitor and Cdr use it)
    uniqueid: Mapped[str | None] = mapped_column(String(152))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    tracking_number_id: Mapped[int | None] = mapped_column(ForeignKey("tracking_numbers.id", ondelete="SET NULL"))
    #: the dialled number as E.164 when it parses, else as Asterisk gave it
    tracking_number: Mapped[str | None] = mapped_column(String(40))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    visitor_session_id: Mapped[int | None] = mapped_column(ForeignKey("visitor_sessions.id", ondelete="SET NULL"))
    caller_number: Mapped[str | None] = mapped_column(String(64))
    caller_name: Mapped[str | None] = mapped_column(String(200))
    caller_location: Mapped[str | None] = mapped_column(String(200))
    caller_country: Mapped[str | None] = mapped_column(String(2))
    caller_line_type: Mapped[str | None] = mapped_column(String(40))
    first_time: Mapped[bool | None]
    #: the route handler's CALLTRACK_STATUS
    route_status: Mapped[str | None] = mapped_column(String(20))
    #: the route found the number's business hours closed (CALLTRACK_AFTER_HOURS); None when it did not decide
    after_hours: Mapped[bool | None]
    #: the caller is on a do-not-track list (set by the route and the listener): the call keeps no caller
    #: data and its recording, if the dialplan made one anyway, is discarded unheard
    do_not_track: Mapped[bool | None]
    dial: Mapped[str | None] = mapped_column(String(500))
    started_at: Mapped[dt.datetime | None]
    ringing_at: Mapped[dt.datetime | None]
    answered_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    #: seconds
    duration: Mapped[float | None] = mapped_column(Float)
    ring_time: Mapped[float | None] = mapped_column(Float)
    talk_time: Mapped[float | None] = mapped_column(Float)
    answered_by: Mapped[str | None] = mapped_column(String(200))
    #: a transferred call: who answered after the transfer (PJSIP/101), else the target (101@agents)
    transferred_to: Mapped[str | None] = mapped_column(String(200))
    #: how the end was known: None from the events; "cdr" from Asterisk's CDRs; "estimated" (closed at the
    #: last moment known alive: its channels were gone when calltrack looked again)
    times_source: Mapped[str | None] = mapped_column(String(16))
    hangup_cause: Mapped[int | None]
    #: answered, missed, busy, abandoned, failed, or blocked (the route refused a blocked caller: set by
    #: the route, never overwritten by the listener); None while live
    disposition: Mapped[str | None] = mapped_column(String(16))
    recording_file: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    legs: Mapped[list[CallLeg]] = relationship(back_populates="call", cascade="all, delete-orphan")
    events: Mapped[list[CallEvent]] = relationship(back_populates="call", cascade="all, delete-orphan")


class CallLeg(Base):
    """One Asterisk channel of a call."""

    __tablename__ = "call_legs"
    __table_args__ = (UniqueConstraint("call_id", "uniqueid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    uniqueid: Mapped[str] = mapped_column(String(152))
    channel: Mapped[str] = mapped_column(String(200))
    #: inbound, agent, local
    role: Mapped[str | None] = mapped_column(String(16))
    caller_number: Mapped[str | None] = mapped_column(String(64))
    caller_name: Mapped[str | None] = mapped_column(String(200))
    exten: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime | None]
    answered_at: Mapped[dt.datetime | None]
    hungup_at: Mapped[dt.datetime | None]
    hangup_cause: Mapped[int | None]

    call: Mapped[Call] = relationship(back_populates="legs")


class CallEvent(Base):
    """A line of a call's timeline (ringing, answered, transfer, hangup...)."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict[str, Any] | None]

    call: Mapped[Call] = relationship(back_populates="events")


class AmiEvent(Base):
    """A raw AMI event as received, append-only; calls can be rebuilt from these."""

    __tablename__ = "ami_events"
    __table_args__ = (
        UniqueConstraint("system", "event_key"),
        Index("ix_ami_events_linkedid", "system", "linkedid"),
        Index("ix_ami_events_received", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    system: Mapped[str] = mapped_column(String(100))
    #: unique per system across reconnects and replays (connection id + arrival number)
    event_key: Mapped[str] = mapped_column(String(100))
    #: arrival order within the system
    seq: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(64))
    uniqueid: Mapped[str | None] = mapped_column(String(152))
    linkedid: Mapped[str | None] = mapped_column(String(152))
    received_at: Mapped[dt.datetime]
    #: every header of the event, in order
    payload: Mapped[dict[str, Any]]


class Recording(Base):
    """An archived call recording, or one still on its way there."""

    __tablename__ = "recordings"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'archived', 'empty', 'failed', 'deleted', 'discarded')", name="state"),
        UniqueConstraint("source_path"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: None for an orphan: a spool file whose call is unknown
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    source_path: Mapped[str] = mapped_column(String(500))
    path: Mapped[str | None] = mapped_column(String(500))
    format: Mapped[str | None] = mapped_column(String(8))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)
    sha256: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: what the recorder did beyond the usual: a WAV header it repaired, why it discarded the file
    note: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    archived_at: Mapped[dt.datetime | None]


class SmsMessage(Base):
    """A text message to or from a tracking number (PJSIP out-of-call messaging).

    Texts in are keyed by the SIP Call-ID of their MESSAGE (the Message channel is one
    channel for every text), texts out by calltrack's own id: a retried AGI or send
    stores nothing twice. A thread is the texts between one tracking number and one
    other number, both ways.
    """

    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("system", "message_id"),
        Index("ix_sms_messages_from", "from_number"),
        Index("ix_sms_messages_to", "to_number"),
        Index("ix_sms_messages_account_received", "account_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    system: Mapped[str] = mapped_column(String(100))
    #: MESSAGE_DATA(Call-ID) for texts in; "ct-" + hex for texts sent by calltrack
    message_id: Mapped[str | None] = mapped_column(String(200))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    tracking_number_id: Mapped[int | None] = mapped_column(ForeignKey("tracking_numbers.id", ondelete="SET NULL"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    visitor_session_id: Mapped[int | None] = mapped_column(ForeignKey("visitor_sessions.id", ondelete="SET NULL"))
    #: "in" (to a tracking number) or "out" (sent from one)
    direction: Mapped[str] = mapped_column(String(8))
    #: E.164 when it parses; None for a do-not-track sender
    from_number: Mapped[str | None] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    #: the display name of the sender's SIP From (as the carrier sent it, UTF-8 kept)
    sender_name: Mapped[str | None] = mapped_column(String(200))
    #: "" when Asterisk dropped it (body_dropped) or the sender is not tracked
    body: Mapped[str] = mapped_column(Text)
    first_time: Mapped[bool | None]
    #: in: received, blocked; out: sent (Asterisk queued it: there is no delivery report), failed
    status: Mapped[str | None] = mapped_column(String(16))
    #: stop, start or help when the text was one of those keywords
    keyword: Mapped[str | None] = mapped_column(String(16))
    #: the Content-Length of the SIP MESSAGE (bytes the carrier sent)
    content_length: Mapped[int | None]
    #: Asterisk received a body but passed on none (1024 bytes or more: MAX_BODY_SIZE of res_pjsip_messaging)
    body_dropped: Mapped[bool | None]
    #: the MessageSend destination the text was forwarded to
    forwarded_to: Mapped[str | None] = mapped_column(String(500))
    do_not_track: Mapped[bool | None]
    #: why a text out failed, or an inbound text's forward (Asterisk's answer)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SmsOptOut(Base):
    """A number that texted STOP (or a variant) to one of the account's numbers: never texted again until START."""

    __tablename__ = "sms_opt_outs"
    __table_args__ = (UniqueConstraint("account_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(64))
    #: the word they texted
    keyword: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CallerListEntry(Base):
    """A caller number on a list: blocked (calls refused) or do-not-track (nothing stored)."""

    __tablename__ = "caller_lists"
    __table_args__ = (
        UniqueConstraint("account_id", "number", "kind"),
        CheckConstraint("kind IN ('blocked', 'do-not-track')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: None applies to every account
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person who signs in to the dashboard."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    #: admin (every account, users, audit log), manager (the accounts granted, and their members),
    #: member (the accounts granted: read, listen, qualify); see tracking/users.py
    role: Mapped[str] = mapped_column(String(16), default="member")
    #: unused by the dashboard (grants are in user_accounts); removing an account removes such users
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[dt.datetime | None]


class UserAccount(Base):
    """An account a manager or member may see."""

    __tablename__ = "user_accounts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A signed-in dashboard session; the cookie holds the token, the row only its hash."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: sha256 of the cookie's token (a stolen database does not sign anyone in)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: the token every form and state-changing request must carry
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    address: Mapped[str | None] = mapped_column(String(64))


class CallQualification(Base):
    """What a person said about a call: a lead or not, its value, tags, a note."""

    __tablename__ = "call_qualifications"

    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    lead: Mapped[bool | None]
    value: Mapped[float | None] = mapped_column(Float)
    #: comma-separated
    tags: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """Who did what: recordings played, data erased or exported, settings changed."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    #: a username, or "cli:<unix user>"
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None]


class CallerLookup(Base):
    """A third-party answer about a caller's number (name, line type), kept until it expires.

    Filled by the optional lookup service over HTTPS ([lookup]); rows past ``expires_at`` are
    deleted, so nothing a provider said outlives the time-to-live.  ``status`` is ``found``,
    ``not-found`` (the provider knows nothing) or ``error`` (kept briefly, then asked again).
    """

    __tablename__ = "caller_lookups"
    __table_args__ = (
        UniqueConstraint("provider", "number"),
        CheckConstraint("status IN ('found', 'not-found', 'error')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: the provider's host, so a change of provider does not reuse another's answers
    provider: Mapped[str] = mapped_column(String(200))
    #: E.164
    number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(200))
    line_type: Mapped[str | None] = mapped_column(String(40))
    carrier: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(String(500))
    fetched_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


# --- webhooks: endpoints, the outbox, deliveries ---------------------------------------


class WebhookEndpoint(Base):
    """A receiver (a CRM, a script) that gets an account's events, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    #: the event types it receives, comma-wrapped (",call.started,call.completed,") so one LIKE finds a type
    events: Mapped[str] = mapped_column(String(400))
    #: the signing secret (HMAC-SHA256 key); the database must hold it in clear to sign
    secret: Mapped[str] = mapped_column(String(100))
    #: after a rotation: the old secret, still signed with until previous_secret_until
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[dt.datetime | None]
    description: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutboxEvent(Base):
    """An event to announce, written in the same transaction as the change it announces.

    The row names its subject (a call, a recording, a form lead); the delivery worker
    renders the JSON body once (``body``, then frozen: every retry sends the same bytes)
    and creates one delivery per subscribed endpoint (``dispatched_at``).
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_pending", "dispatched_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    #: the id receivers de-duplicate on ("evt_" + 32 hex digits)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    #: the subject; erasing it (privacy, retention) takes its events and deliveries along
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"), index=True)
    form_lead_id: Mapped[int | None] = mapped_column(ForeignKey("form_leads.id", ondelete="CASCADE"), index=True)
    sms_id: Mapped[int | None] = mapped_column(ForeignKey("sms_messages.id", ondelete="CASCADE"), index=True)
    #: one event per subject and kind ("call.completed:42"); None for events that may repeat (call.updated)
    dedupe_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    #: what changed (call.updated)
    detail: Mapped[dict[str, Any] | None]
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[dt.datetime | None]
    #: the JSON body as sent, rendered once at dispatch
    body: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """One event on its way to one endpoint: retried with backoff until delivered or dead."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("outbox_id", "endpoint_id"),
        CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: when it is due; while an attempt runs, the end of that attempt's claim
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: retries stop here and the delivery is dead (a day after it was created, or after a manual retry)
    expires_at: Mapped[dt.datetime]
    last_attempt_at: Mapped[dt.datetime | None]
    #: the receiver's HTTP status of the last attempt (None: no answer)
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- conversation intelligence: transcripts, lead rules, outcomes, spam ----------------------


class Transcript(Base):
    """The transcript of one archived recording; while not done, its place in the transcriber's queue.

    ``text`` is the whole transcript after redaction (what search reads); ``redactions`` lists what
    was masked (kind, speaker, start, end; never the digits).
    """

    __tablename__ = "transcripts"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done', 'failed', 'skipped')", name="state"),
        UniqueConstraint("recording_id"),
        Index("ix_transcripts_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    #: pending (queued, or waiting for a retry), done, failed (for good), skipped (not to be transcribed)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None]
    model: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(16))
    #: 1 (mono: one speaker) or 2 (caller and agent)
    channels: Mapped[int | None]
    text: Mapped[str | None] = mapped_column(Text)
    redactions: Mapped[list[Any] | None]
    #: audio seconds transcribed
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    transcribed_at: Mapped[dt.datetime | None]

    segments: Mapped[list[TranscriptSegment]] = relationship(
        back_populates="transcript", cascade="all, delete-orphan", order_by="TranscriptSegment.start"
    )


class TranscriptSegment(Base):
    """A stretch of speech: who said it (caller, agent, or mono when one channel holds both), when, what."""

    __tablename__ = "transcript_segments"
    __table_args__ = (CheckConstraint("speaker IN ('caller', 'agent', 'mono')", name="speaker"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id", ondelete="CASCADE"), index=True)
    speaker: Mapped[str] = mapped_column(String(8))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)

    transcript: Mapped[Transcript] = relationship(back_populates="segments")


class LeadRule(Base):
    """An account's rule: when a call matches ``condition``, do ``action`` (both in the rule syntax)."""

    __tablename__ = "lead_rules"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    condition: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CallOutcome(Base):
    """What lead rules and spam signals made of a call: lead, score, value, spam."""

    __tablename__ = "call_outcomes"
    __table_args__ = (CheckConstraint("lead IN ('qualified', 'not-lead')", name="lead"),)

    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    #: qualified, not-lead, or None (no rule said)
    lead: Mapped[str | None] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float)
    spam: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the signals that flagged it, in words
    spam_reason: Mapped[str | None] = mapped_column(String(500))
    #: a person cleared the flag: signals do not set it again
    spam_cleared_at: Mapped[dt.datetime | None]
    #: when the rules last ran on the call
    rules_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CallTag(Base):
    """A tag on a call, by a rule (rule_id) or by hand."""

    __tablename__ = "call_tags"
    __table_args__ = (UniqueConstraint("call_id", "tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(100))
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("lead_rules.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SpamNumber(Base):
    """A known spam caller (imported from CSV); account None applies to every account."""

    __tablename__ = "spam_numbers"
    __table_args__ = (UniqueConstraint("account_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- conversion exports and form leads -------------------------------------------------------


class ConversionExport(Base):
    """A call exported once as a conversion to an ad platform, so later exports leave it out.

    One row per (call, platform, conversion name): a call counts once per conversion name on a
    platform, whichever of the platform's formats carried it.
    """

    __tablename__ = "conversion_exports"
    __table_args__ = (UniqueConstraint("call_id", "platform", "conversion_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    #: google, microsoft, generic
    platform: Mapped[str] = mapped_column(String(20))
    conversion_name: Mapped[str] = mapped_column(String(200))
    #: the format of the file it went out in (google-click, google-leads, microsoft, csv)
    format: Mapped[str] = mapped_column(String(20))
    exported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FormLead(Base):
    """A website form submitted by a visitor, captured by dni.js and attributed like a call."""

    __tablename__ = "form_leads"
    __table_args__ = (
        Index("ix_form_leads_account_submitted", "account_id", "submitted_at"),
        Index("ix_form_leads_email", "email"),
        Index("ix_form_leads_phone", "phone"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    visitor_session_id: Mapped[int | None] = mapped_column(
        ForeignKey("visitor_sessions.id", ondelete="SET NULL"), index=True
    )
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    #: the page the form was on (query string kept: it holds the campaign)
    page_url: Mapped[str | None] = mapped_column(Text)
    #: the form's id or name attribute, as the site owner wrote it
    form_name: Mapped[str | None] = mapped_column(String(200))
    #: the fields captured: {name: value}
    fields: Mapped[dict[str, Any]]
    #: found among the fields, for privacy export/erase: lower-cased e-mail address, E.164 number
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
