"""``calltrack-agi``: classic AGI over stdin/stdout, for sites without FastAGI.

    exten => _X.,n,AGI(calltrack-agi,route,${EXTEN})

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
import re
import select
import signal
import sys
import threading
import time

from asterisk_agi.protocol import (
    MAX_LINE,
    AGICommandError,
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
    command,
    decode,
    variable_name,
)

logger = logging.getLogger("calltrack.agi")


class SyncAGI:
    """The classic AGI channel on two file descriptors, every read under a deadline."""

    def __init__(self, infd: int = 0, outfd: int = 1, read_timeout: float = 10.0) -> None:
        self.infd = infd
        self.outfd = outfd
        self.read_timeout = read_timeout
        self.env = AGIEnv()
        self.hung_up = False
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

    def read_env(self) -> AGIEnv:
        parser = EnvParser()
        while True:
            try:
                line = self._readline()
            except AGIEOFHangup:
                if parser.env.values:
                    raise AGIProtocolError("stdin closed in the middle of the AGI environment") from None
                raise
            if parser.feed(line):
                self.env = parser.env
                return self.env

    def send(self, name: str, *args: object) -> None:
        """Write one command; :meth:`receive` reads its reply (work can be done in between)."""
        self._check()
        data = command(name, *args)
        try:
            while data:
                data = data[os.write(self.outfd, data) :]
        except OSError as exc:  # BrokenPipeError: SIGPIPE is ignored by Python
            self.hung_up = True
            raise AGISIGHUPHangup(f"the pipe to Asterisk broke: {exc}") from None

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
        for name, value in pairs:
            self.execute("SET VARIABLE", variable_name(name), value)


def _fallback_pairs(fallback_dial: str, fallback_timeout: int) -> list[tuple[str, str]]:
    from tracking.routing import STATUS_FALLBACK, Decision

    return Decision(STATUS_FALLBACK, fallback_dial, fallback_timeout).variables()


def _linkedid_passed(env: AGIEnv) -> bool:
    # the same test as handlers.route.linkedid_argument, without importing it before the settings
    args = env.args
    return len(args) >= 2 and bool(re.fullmatch(r"[A-Za-z0-9_-]{0,40}[0-9]+\.[0-9]+", args[1].strip()))


def handler_env(env: AGIEnv, script: str) -> AGIEnv:
    """*env* with the script name dropped from the front of the ``agi_arg_N`` arguments."""
    args = env.args
    if not args or args[0] != script:
        return env
    values = {k: v for k, v in env.values.items() if not k.startswith("agi_arg_")}
    for n, arg in enumerate(args[1:], 1):
        values[f"agi_arg_{n}"] = arg
    return AGIEnv(values)


def run(agi: SyncAGI, argv: list[str], environ: dict[str, str] | os._Environ[str]) -> int:
    """One classic AGI session on *agi*; the exit status."""
    env = agi.read_env()
    # AGI(calltrack-agi,route,${EXTEN}): Asterisk passes "route" and the number both in argv and as
    # agi_arg_1, agi_arg_2; the handler's own arguments are what follows the script name.
    script = argv[0] if argv else (env.args[0] if env.args else "")
    env = handler_env(env, script)
    asked = False
    if script == "route" and not _linkedid_passed(env):
        # Ask for the linkedid now and read the answer after the imports and the settings:
        # Asterisk answers while this process loads what the route needs.
        agi.send("GET VARIABLE", variable_name("CHANNEL(linkedid)"))
        asked = True
    try:
        from config import load_settings

        settings = load_settings(environ=environ)
    except Exception as exc:  # settings broken: still route the call
        logger.error("calltrack-agi: %s; routing by fallback", exc)
        if asked:
            agi.receive()
        agi.set_variables(_fallback_pairs("", 30))
        return 0
    agi.read_timeout = settings.agi.read_timeout
    if script != "route":
        logger.error("calltrack-agi: unknown script %r (known: route); routing by fallback", script)
        agi.set_variables(_fallback_pairs(settings.agi.fallback_dial, settings.agi.fallback_timeout))
        return 0
    from asterisk_agi.handlers.route import build_request, linkedid_argument, log_decision
    from tracking.routing import CallRouter, Decision, RouteStore

    linkedid = linkedid_argument(env)
    if asked:
        try:
            reply = agi.receive()
            linkedid = (reply.data or "") if reply.value == 1 else None
        except AGICommandError as exc:  # an Asterisk without CHANNEL(linkedid): key the call by uniqueid
            logger.warning("calltrack-agi: cannot read CHANNEL(linkedid): %s; using the uniqueid", exc)
            linkedid = None
    request = build_request(env, linkedid, settings.general.system_name)
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
