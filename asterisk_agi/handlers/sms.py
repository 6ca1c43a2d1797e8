"""The ``sms`` handler: ``AGI(agi://127.0.0.1:4573/sms?number=...)`` in a PJSIP ``message_context``.

Asterisk runs every text on one Message channel (``Message/ast_msg_queue``, never hung
up), with the caller ID ``unknown``: the sender is only in the message. Everything is
read in one round trip, one ``GET FULL VARIABLE`` whose values Asterisk copies raw
between markers of a nonce the texter cannot know (:func:`asterisk_agi.protocol.values_command`):
a body with a line break comes back as a reply spanning lines, whose end only the
marker tells (``GET VARIABLE MESSAGE(body)``'s reply ends where the body says), and no
value is put through ``${BASE64_ENCODE(...)}``, which cuts a substituted text at an
unbalanced ``)`` and a colon. The sender is read from ``MESSAGE_DATA(From)``
(``MESSAGE(from)`` turns UTF-8 bytes of the display name into spaces; it is the
fallback when the header is missing), the key from ``MESSAGE_DATA(Call-ID)``.

:class:`tracking.messages.TextRouter` stores and routes the text within the database
deadline; the ``CALLTRACK_SMS_*`` variables tell the dialplan where to forward it and
what to answer. Whatever goes wrong, the text is forwarded to ``[sms]
fallback_destination``: a text is never lost to tracking.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asterisk_agi.handlers.inputs import dialled_number
from asterisk_agi.protocol import AGIEnv, authentic_tail
from tracking.messages import InboundText, TextDecision, TextRouter, TextStore, parse_sip_address
from tracking.routing import RouteStore

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from asterisk_agi.fastagi import AsyncAGI, Router, SessionInfo

logger = logging.getLogger(__name__)

#: what the handler reads, in one GET FULL VARIABLE, each value raw between the session's markers
FIELDS = (
    "${MESSAGE(body)}",
    "${MESSAGE_DATA(From)}",
    "${MESSAGE(from)}",
    "${MESSAGE_DATA(Call-ID)}",
    "${MESSAGE_DATA(Content-Length)}",
    "${MESSAGE(to)}",
)


@dataclass(frozen=True)
class TextInputs:
    dialled: str
    message_id: str
    sender: str
    body: str
    content_length: int | None
    anomalies: tuple[str, ...] = ()


def inputs_from(
    env: AGIEnv,
    values: list[bytes],
    drained: list[str] | None = None,
    *,
    query: dict[str, str] | None = None,
) -> TextInputs:
    """The text's inputs: the raw *values* of :data:`FIELDS` and the environment.

    The dialled number is the ``number=`` of the AGI address, else the dialplan's
    argument (read from the real end of the environment when the session was out of
    step: *drained* are the lines a first synchronisation read), else the user part of
    ``MESSAGE(to)``. *query*: the classic script's, from argv (FastAGI: the AGI address's).
    """
    body, data_from, message_from, call_id, length, to = (v.decode("utf-8", errors="replace") for v in values)
    anomalies = list(env.anomalies)
    if drained:
        anomalies.append(f"{len(drained)} line(s) before the reply to the first command")
    trusted = env if not anomalies else AGIEnv(authentic_tail([*env.lines, "", *(drained or [])]))
    number = (env.query if query is None else query).get("number", "")
    if not number or not all(ch.isdigit() or ch == "+" for ch in number):
        number = dialled_number(trusted)
    if not number:
        number = parse_sip_address(to).user
    content_length: int | None = None
    if length.strip().isdigit():
        content_length = int(length.strip())
    return TextInputs(
        number.strip(), call_id.strip(), data_from or message_from, body, content_length, tuple(anomalies)
    )


class SmsHandler:
    """The FastAGI ``sms``: the database work runs on *executor*, bounded by ``agi.db_deadline_ms``."""

    def __init__(self, router: TextRouter, executor: Executor, inline: TextStore | None = None) -> None:
        self.router = router
        self.executor = executor
        #: SQLite: texts are first stored on the event loop over a connection that never waits
        #: (see RouteHandler); a busy database sends them to the threads
        self.inline = inline

    async def __call__(self, agi: AsyncAGI, session: SessionInfo) -> str:
        drained: list[str] | None = None
        if not agi.in_step:
            _, drained = await agi.synchronise()
        inputs = inputs_from(agi.env, await agi.get_values(FIELDS), drained)
        if inputs.anomalies:
            logger.warning(
                "AGI sms session from %s is out of step: %s; text to %r",
                session.peer or "stdin",
                "; ".join(inputs.anomalies),
                inputs.dialled,
            )
        text = InboundText(
            system=session.system,
            message_id=inputs.message_id,
            dialled=inputs.dialled,
            sender=inputs.sender,
            body=inputs.body,
            content_length=inputs.content_length,
            at=dt.datetime.now(dt.UTC),
        )
        if self.inline is not None:
            inline = self.router.try_inline(text, self.inline)
            if inline is not None:
                log_decision(text, inline)
                await agi.set_variables(inline.variables())
                return "sms-" + inline.status
        deadline = self.router.settings.agi.db_deadline_ms / 1000
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.router.run, text)
        try:
            # shield: on timeout the work still finishes and stores the text
            async with asyncio.timeout(deadline):
                decision = await asyncio.shield(future)
        except TimeoutError:
            decision = self.router.fallback(text, f"the database did not answer within {deadline * 1000:g} ms")
        log_decision(text, decision)
        await agi.set_variables(decision.variables())
        return "sms-" + decision.status


def log_decision(text: InboundText, decision: TextDecision) -> None:
    if decision.status in ("fallback", "unknown-number"):
        logger.warning(
            "text %s/%s to %s forwarded by fallback to %r: %s",
            text.system,
            text.message_id,
            text.dialled,
            decision.destination,
            decision.reason,
        )
    elif decision.reason:
        logger.info(
            "text %s/%s to %s: %s (%s)", text.system, text.message_id, text.dialled, decision.status, decision.reason
        )


def register(router: Router, text_router: TextRouter, executor: Executor, inline: RouteStore | None = None) -> None:
    router.add("sms", SmsHandler(text_router, executor, TextStore(inline) if inline is not None else None))
