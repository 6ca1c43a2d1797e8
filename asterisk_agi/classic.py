"""``calltrack-agi``: classic AGI over stdin/stdout, for sites without FastAGI.

    exten => _X.,n,AGI(calltrack-agi,route?number=...)     (the sample dialplan's full line)

Asterisk runs ``calltrack-agi`` from its agi-bin folder (``astagidir``, usually
/var/lib/asterisk/agi-bin: link the installed script there) and passes the AGI
arguments in argv as well as in the environment; argv is what is trusted here, since
caller text can write lines into the environment but not into argv. The settings come
from ``CALLTRACK_CONFIG``, else /etc/calltrack/calltrack.toml (see the README).

Asterisk starts one process per call, so this module starts fast: it imports the
standard library, the settings, the AGI protocol and the routing module, and the
database driver (stdlib ``sqlite3``; psycopg only for a PostgreSQL URL). No
SQLAlchemy, no asyncio.

Hangup is a SIGHUP (or a broken pipe), turned into :class:`AGISIGHUPHangup` at the
next read or command. The database work runs in a thread bounded by
``agi.db_deadline_ms``; past it the call is routed by fallback, stdout is closed so
the dialplan goes on, and the process waits for the database a little longer to
write (or spool) the call row before it exits.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from asterisk_agi.protocol import (
    MAX_ENV_BYTES,
    MAX_ENV_LINES,
    MAX_LINE,
    OVERSIZED,
    AGIEnv,
    AGIEOFHangup,
    AGIError,
    AGIHangup,
    AGIProtocolError,
    AGISIGHUPHangup,
    AGITimeout,
    EnvParser,
    Reply,
    ReplyParser,
    ValuesReply,
    command,
    decode,
    new_nonce,
    parse_sync,
    sync_command,
    values_command,
    variable_name,
)

if TYPE_CHECKING:
    from config import Settings

logger = logging.getLogger("calltrack.agi")


class SyncAGI:
    """The classic AGI channel on two file descriptors, every read under a deadline."""

    def __init__(self, infd: int = 0, outfd: int = 1, read_timeout: float = 10.0) -> None:
        self.infd = infd
        self.outfd = outfd
        self.read_timeout = read_timeout
        self.env = AGIEnv()
        self.hung_up = False
        self.hangup_received = False
        self.in_step = True
        self.verified = False
        self.sighup = False
        self._buffer = b""
        self._wakeup_r: int | None = None

    def install_signals(self) -> None:
        """SIGHUP means the caller hung up; a wake-up pipe interrupts a read in progress."""
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._wakeup_r = r
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum: int, frame: object) -> None:
        self.sighup = True

    def _check(self) -> None:
        if self.sighup:
            self.hung_up = True
            raise AGISIGHUPHangup("SIGHUP from Asterisk")
        if self.hung_up:
            raise AGIEOFHangup("the channel has hung up")

    def _readline(self) -> str:
        deadline = time.monotonic() + self.read_timeout
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AGITimeout(f"nothing from Asterisk for {self.read_timeout:g} s")
            fds = [self.infd] + ([self._wakeup_r] if self._wakeup_r is not None else [])
            ready, _, _ = select.select(fds, [], [], left)
            if self._wakeup_r is not None and self._wakeup_r in ready:
                os.read(self._wakeup_r, 512)
                continue
            if self.infd in ready:
                chunk = os.read(self.infd, 65536)
                if not chunk:
                    self.hung_up = True
                    raise AGIEOFHangup("stdin closed by Asterisk" + (" mid-line" if self._buffer else ""))
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        if len(raw) > MAX_LINE:
            raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
        return decode(raw)

    def _fill(self, deadline: float) -> None:
        """Read more from stdin (raises on EOF, SIGHUP or the deadline)."""
        while True:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AGITimeout(f"nothing from Asterisk for {self.read_timeout:g} s")
            fds = [self.infd] + ([self._wakeup_r] if self._wakeup_r is not None else [])
            ready, _, _ = select.select(fds, [], [], left)
            if self._wakeup_r is not None and self._wakeup_r in ready:
                os.read(self._wakeup_r, 512)
                continue
            if self.infd in ready:
                chunk = os.read(self.infd, 65536)
                if not chunk:
                    self.hung_up = True
                    raise AGIEOFHangup("stdin closed by Asterisk" + (" mid-line" if self._buffer else ""))
                self._buffer += chunk
                return

    def _readline_tolerant(self) -> tuple[str, int]:
        """The next line, or for a line longer than MAX_LINE its start and its length (the rest is dropped)."""
        deadline = time.monotonic() + self.read_timeout
        skipped, head = 0, ""
        while True:
            raw, sep, rest = self._buffer.partition(b"\n")
            if sep:
                self._buffer = rest
                if skipped or len(raw) > MAX_LINE:
                    return (head if skipped else decode(raw[:200])), skipped + len(raw)
                return decode(raw), 0
            if len(self._buffer) > MAX_LINE:
                if not skipped:
                    head = decode(self._buffer[:200])
                skipped += len(self._buffer)
                self._buffer = b""
                if skipped > MAX_ENV_BYTES:
                    raise AGIProtocolError(f"line longer than {MAX_ENV_BYTES} bytes")
            self._fill(deadline)

    def read_env(self) -> AGIEnv:
        """The environment up to the blank line; what is out of step is recorded (see EnvParser)."""
        parser = EnvParser()
        while True:
            try:
                line, oversized = self._readline_tolerant()
            except AGIEOFHangup:
                if parser.env.values:
                    raise AGIProtocolError("stdin closed in the middle of the AGI environment") from None
                raise
            if parser.feed(line, oversized):
                break
        self.env = parser.env
        if self._buffer:
            self.env.anomalies.append(f"{len(self._buffer)} bytes arrived before the first command")
        self.in_step = not self.env.anomalies
        return self.env

    def send_sync(self, fetch: tuple[str, ...] = ()) -> str:
        """Send the synchronisation (see :meth:`asterisk_agi.fastagi.AsyncAGI.synchronise`); its nonce."""
        self._check()
        nonce = new_nonce()
        self._write(sync_command(nonce, fetch))
        return nonce

    def receive_sync(self, nonce: str, count: int) -> tuple[list[str], list[str]]:
        """The fetched values and the lines read before the synchronisation's reply."""
        drained: list[str] = []
        while True:
            line, oversized = self._readline_tolerant()
            if not oversized:
                values = parse_sync(line, nonce, count)
                if values is not None:
                    self.in_step = self.verified = True
                    while drained and drained[-1] == "HANGUP":  # Asterisk's, once the environment was written
                        drained.pop()
                        self.hangup_received = True
                    return values, drained
                if line.startswith("510") and not drained:
                    raise AGIProtocolError("Asterisk does not know GET FULL VARIABLE")
            drained.append(OVERSIZED if oversized else line)
            if len(drained) > MAX_ENV_LINES:
                raise AGIProtocolError(f"no answer to the synchronisation within {MAX_ENV_LINES} lines")

    def synchronise(self, fetch: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
        return self.receive_sync(self.send_sync(fetch), len(fetch))

    def get_values(self, expressions: tuple[str, ...]) -> list[bytes]:
        """The raw values of *expressions* in one ``GET FULL VARIABLE``
        (see :meth:`asterisk_agi.fastagi.AsyncAGI.get_values`)."""
        self._check()
        nonce = new_nonce()
        self._write(values_command(nonce, expressions))
        reply = ValuesReply(nonce, len(expressions))
        deadline = time.monotonic() + self.read_timeout
        while True:
            i = self._buffer.find(b"\n")
            if i < 0:
                if len(self._buffer) > MAX_LINE:
                    raise AGIProtocolError(f"line longer than {MAX_LINE} bytes")
                self._fill(deadline)
                continue
            line, self._buffer = self._buffer[: i + 1], self._buffer[i + 1 :]
            values = reply.feed(line)
            self.hangup_received = self.hangup_received or reply.hangup
            if values is not None:
                return values

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.outfd, data) :]
        except OSError as exc:  # BrokenPipeError: SIGPIPE is ignored by Python
            self.hung_up = True
            raise AGISIGHUPHangup(f"the pipe to Asterisk broke: {exc}") from None

    def send(self, name: str, *args: object) -> None:
        """Write one command; :meth:`receive` reads its reply (work can be done in between)."""
        self._check()
        self._write(command(name, *args))

    def receive(self) -> Reply:
        parser = ReplyParser()
        try:
            while True:
                reply = parser.feed(self._readline())
                if reply is not None:
                    return reply
        except AGIHangup:
            self.hung_up = True
            raise

    def execute(self, name: str, *args: object) -> Reply:
        self.send(name, *args)
        return self.receive()

    def get_variable(self, name: str) -> str | None:
        reply = self.execute("GET VARIABLE", variable_name(name))
        if reply.value != 1:
            return None
        return reply.data or ""

    def set_variables(self, pairs: list[tuple[str, str]]) -> None:
        """SET VARIABLE each pair, whatever stray lines come between the replies (as the FastAGI side does).

        Classic AGI signals a hangup with SIGHUP, never with a line, so a line that is no
        reply (``HANGUP`` included) is stray: the stream is synchronised and the variable
        set again. Raises on SIGHUP and when the pipe is gone.
        """
        for name, value in pairs:
            for _attempt in range(3):
                if not self.in_step:
                    self.synchronise()
                if self.hung_up:
                    raise AGIEOFHangup("the channel has hung up")
                self._write(command("SET VARIABLE", variable_name(name), value))
                line, oversized = self._readline_tolerant()
                if line.startswith("200 ") and not oversized:
                    if not self.verified and b"\n" in self._buffer:
                        self.in_step = False  # more than one reply to one command
                    break
                self.in_step = False
                self.env.anomalies.append(f"{line[:40]!r} in reply to SET VARIABLE {name}")
            else:
                raise AGIProtocolError(f"no reply to SET VARIABLE {name} after synchronising")


def _fallback_pairs(fallback_dial: str, fallback_timeout: int) -> list[tuple[str, str]]:
    from tracking.routing import STATUS_FALLBACK, Decision

    return Decision(STATUS_FALLBACK, fallback_dial, fallback_timeout).variables()


def run(agi: SyncAGI, argv: list[str], environ: dict[str, str] | os._Environ[str]) -> int:
    """One classic AGI session on *agi*; the exit status."""
    from asterisk_agi.handlers.inputs import (
        FETCH,
        SAVED_NAME,
        CallInputs,
        classic_needs_sync,
        from_address,
        from_arguments,
        needs_saved_name,
        parse_query,
        saved_name,
    )

    env = agi.read_env()
    # AGI(calltrack-agi,route?number=...) or AGI(calltrack-agi,route,${EXTEN},...): Asterisk passes the
    # arguments in argv (trusted) and again as agi_arg_N (after the caller ID: not trusted).
    head = argv[0] if argv else ""
    script, _, query_text = head.partition("?")
    query = parse_query(query_text)
    args = list(argv[1:])
    nonce = ""
    if script == "route" and classic_needs_sync(query, args, env):
        # Sent now, read after the imports and the settings: Asterisk answers while this process
        # loads what the route needs.
        nonce = agi.send_sync(FETCH)
    try:
        from config import load_settings

        settings = load_settings(environ=environ)
    except Exception as exc:  # settings broken: still route the call
        logger.error("calltrack-agi: %s; routing by fallback", exc)
        if nonce:
            agi.receive_sync(nonce, len(FETCH))
        agi.set_variables(_fallback_pairs("", 30))
        return 0
    agi.read_timeout = settings.agi.read_timeout
    if script == "sms":
        return run_sms(agi, env, query, settings)
    if script != "route":
        logger.error("calltrack-agi: unknown script %r (known: route, sms); routing by fallback", script)
        agi.set_variables(_fallback_pairs(settings.agi.fallback_dial, settings.agi.fallback_timeout))
        return 0
    from asterisk_agi.handlers.route import build_request, log_anomalies, log_decision
    from tracking.routing import CallRouter, Decision, RouteStore

    fetched: list[str] | None = None
    drained: list[str] = []
    if nonce:
        fetched, drained = agi.receive_sync(nonce, len(FETCH))
    inputs: CallInputs | None = from_address(query, env)
    if inputs is not None and drained:
        inputs = replace(inputs, anomalies=(*inputs.anomalies, f"{len(drained)} line(s) before the first reply"))
    if inputs is not None and needs_saved_name(query):
        (name,) = agi.get_values(SAVED_NAME)
        inputs = replace(inputs, caller_name=saved_name(name))
    if inputs is None:
        inputs = from_arguments(args, env, fetched, drained)
    log_anomalies("", env, inputs)
    request = build_request(inputs, settings.general.system_name)
    router = CallRouter(settings, RouteStore(settings.database_url, connect_timeout=settings.database.connect_timeout))
    job = router.job(request)
    result: list[Decision] = []
    worker = threading.Thread(target=lambda: result.append(job.run()), daemon=True)
    worker.start()
    worker.join(settings.agi.db_deadline_ms / 1000)
    decision = (
        result[0] if result else job.abandon(f"the database did not answer within {settings.agi.db_deadline_ms} ms")
    )
    log_decision(request, decision)
    try:
        agi.set_variables(decision.variables())
    finally:
        if worker.is_alive():
            # Let the dialplan go on, then give the database its connect timeout to take the row.
            os.close(agi.outfd)
            worker.join(max(settings.database.connect_timeout, 1.0) + 1.0)
            if worker.is_alive():
                router.spool(request, decision)
        router.store.close()
    return 0


def run_sms(agi: SyncAGI, env: AGIEnv, query: dict[str, str], settings: Settings) -> int:
    """``AGI(calltrack-agi,sms?number=...)`` in a message context: as the FastAGI ``sms`` handler does."""
    import datetime as dt

    from asterisk_agi.handlers.sms import FIELDS, inputs_from, log_decision
    from tracking.messages import InboundText, TextDecision, TextRouter
    from tracking.routing import RouteStore

    drained: list[str] | None = None
    if not agi.in_step:
        _, drained = agi.synchronise()
    inputs = inputs_from(env, agi.get_values(FIELDS), drained, query=query)
    text = InboundText(
        system=settings.general.system_name,
        message_id=inputs.message_id,
        dialled=inputs.dialled,
        sender=inputs.sender,
        body=inputs.body,
        content_length=inputs.content_length,
        at=dt.datetime.now(dt.UTC),
    )
    router = TextRouter(settings, RouteStore(settings.database_url, connect_timeout=settings.database.connect_timeout))
    result: list[TextDecision] = []
    worker = threading.Thread(target=lambda: result.append(router.run(text)), daemon=True)
    worker.start()
    worker.join(settings.agi.db_deadline_ms / 1000)
    decision = (
        result[0]
        if result
        else router.fallback(text, f"the database did not answer within {settings.agi.db_deadline_ms} ms")
    )
    log_decision(text, decision)
    try:
        agi.set_variables(decision.variables())
    finally:
        if worker.is_alive():
            # let the dialplan forward the text, then give the database its connect timeout to store it
            os.close(agi.outfd)
            worker.join(max(settings.database.connect_timeout, 1.0) + 1.0)
        router.texts.store.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``calltrack-agi SCRIPT [ARGS...]``."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="calltrack-agi: %(levelname)s %(message)s")
    agi = SyncAGI(0, 1)
    try:
        agi.install_signals()
    except (ValueError, OSError):  # not the main thread, or no SIGHUP here
        pass
    code = 0
    try:
        code = run(agi, args, os.environ)
    except AGIHangup as exc:
        logger.info("caller hung up: %s", exc)
    except (AGITimeout, AGIProtocolError) as exc:
        logger.error("session dropped: %s", exc)
        code = 1
    except AGIError as exc:
        logger.error("Asterisk refused a command: %s", exc)
        code = 1
    # One process per call: skip the interpreter's teardown of every module (tens of ms with
    # phonenumbers loaded); the database connection is closed and the streams are flushed.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
