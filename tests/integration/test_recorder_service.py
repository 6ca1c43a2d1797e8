"""The recorder as a daemon (`recordings watch`, and "recorder" in `calltrack serve`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calltrack.services import SERVICES
from config import Settings
from recorder.service import RecorderService
from schema.models import Recording
from tests.integration.recorder_helpers import put_real, recorder_settings


async def wait_for(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def states(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as s:
        return list(s.scalars(select(Recording.state)))


async def test_watch_archives_new_recordings_until_stopped(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, asterisk_traffic: Path
) -> None:
    cfg = recorder_settings(settings, tmp_path, poll_seconds=0.1)
    service = RecorderService(cfg, session_factory)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))

    put_real(asterisk_traffic, cfg.recorder.spool_dir, "1.wav")
    await wait_for(lambda: states(session_factory) == ["archived"])
    put_real(asterisk_traffic, cfg.recorder.spool_dir, "2.wav")
    await wait_for(lambda: states(session_factory) == ["archived", "archived"])
    stop.set()
    await asyncio.wait_for(task, 10)
    assert list(cfg.recorder.spool_dir.iterdir()) == []
    assert SERVICES["recorder"] == "recorder.service:make_service"


async def test_watch_without_ffmpeg_says_so_once_and_keeps_the_spool(
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    asterisk_traffic: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = recorder_settings(settings, tmp_path, poll_seconds=0.05, ffmpeg="/opt/nowhere/ffmpeg")
    source = put_real(asterisk_traffic, cfg.recorder.spool_dir, "1.wav")
    service = RecorderService(cfg, session_factory)
    looked_up = []
    make = service._make

    def look_for_ffmpeg() -> object:
        looked_up.append(1)
        return make()

    service._make = look_for_ffmpeg  # type: ignore[method-assign]
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="recorder.service"):
        task = asyncio.create_task(service.run(stop))
        await wait_for(lambda: len(looked_up) >= 4)  # the start and three polls after it
        stop.set()
        await asyncio.wait_for(task, 10)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "apt-get install ffmpeg" in errors[0]
    assert source.exists() and states(session_factory) == [] and service.passes == 0


def test_serve_builds_the_recorder(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calltrack.context import AppContext
    from calltrack.services import build_services

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLTRACK_CONFIG", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    app = AppContext(database_url=database_url)
    try:
        (service,) = build_services(app, ["recorder"])
        assert isinstance(service, RecorderService) and service.name == "recorder"
    finally:
        app.close()
