"""FastAGI down: the dialplan fails open, the call is answered, and the listener attributes it.

The `agidown` capture is exactly this case: no FastAGI server listening (AGISTATUS=FAILURE), the
dialplan carries on, the agent answers. No route wrote the row, so the listener attributes it by
the number dialled: the number's account and source, or for a pool number the website visit whose
lease covered the call. Real listener over TCP against the fake Asterisk, SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import PoolLease, TrackingNumber, VisitorSession
from tests.fakes.ami_server import FakeAmiServer, Plan
from tests.integration.ami_harness import Harness, calls_of, frames, wait_for
from tracking.accounts import add_account, add_source
from tracking.numbers import NumberFields, add_number
from tracking.pools import add_numbers, create_pool

LINKEDID = "1795915335.44"  # the agidown capture's call to 8005550100
STARTED = dt.datetime.fromtimestamp(1795915335, dt.UTC)


def world(factory: sessionmaker[Session], settings: Settings, kind: str) -> dict[str, int | None]:
    with factory.begin() as s:
        account = add_account(s, "Acme", "America/New_York")
        ads = add_source(s, "Acme", "Google Ads")
        flyer = add_source(s, "Acme", "Flyer")
        visit = None
        if kind == "pool":
            create_pool(s, settings, "ads", "Acme", 30, source="Flyer")
            (member,) = add_numbers(s, settings, "ads", "Acme", ["+18005550100"], "Local/100@agents")
            session = VisitorSession(
                key="v1", account_id=account.id, source_id=ads.id, landing_url="https://x.test/?gclid=1"
            )
            s.add(session)
            s.flush()
            s.add(PoolLease(pool_id=member.number.pool_id, number_id=member.number.id, session_id=session.id,
                            leased_at=STARTED - dt.timedelta(minutes=5), expires_at=STARTED + dt.timedelta(minutes=25)))  # fmt: skip
            visit = session.id
        else:
            add_number(
                s, settings, NumberFields("+18005550100", "Acme", source="Google Ads", forward_to="Local/100@agents")
            )
            if kind == "released-before":
                number = s.query(TrackingNumber).one()
                number.status, number.released_at = "released", STARTED - dt.timedelta(days=1)
        s.flush()
        number_id = s.query(TrackingNumber.id).scalar()
        return {"account": account.id, "source": ads.id, "flyer": flyer.id, "number": number_id, "visit": visit}


@pytest.mark.parametrize("kind", ["source", "pool", "released-before"])
async def test_a_call_the_route_never_saw_is_attributed_by_its_number(
    settings: Settings,
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    asterisk_traffic: Path,
    kind: str,
) -> None:
    ids = world(session_factory, settings, kind)
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    async with (
        FakeAmiServer([Plan(frames=frames("agidown", asterisk_traffic))]) as fake,
        Harness(settings, database_url, fake, secret) as h,
    ):
        await wait_for(lambda: bool(calls_of(h.engine, h.system).get(LINKEDID, {}).get("ended_at")), what="the call")
        call = calls_of(h.engine, h.system)[LINKEDID]
    assert call["route_status"] is None  # no route ran
    assert call["disposition"] == "answered" and call["tracking_number"] == "+18005550100"
    got = (call["account_id"], call["source_id"], call["tracking_number_id"], call["visitor_session_id"])
    if kind == "source":
        assert got == (ids["account"], ids["source"], ids["number"], None)
        assert call["first_time"] is True  # counted for the account, as a routed call is
    elif kind == "pool":
        assert got == (ids["account"], ids["source"], ids["number"], ids["visit"])  # the visit's source
    else:
        # released before the call: the route would have said unknown-number, and nobody's call it is
        assert got == (None, None, None, None)
