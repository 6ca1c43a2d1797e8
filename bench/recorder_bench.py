"""Recorder benchmark: the archive pipeline against ffmpeg called directly, in the same run.

    .venv/bin/python bench/recorder_bench.py [--files 100] [--long-minutes 120]

1. Throughput: 100 MixMonitor-like WAVs (8 kHz mono 16-bit, 10 s to 15 min) are
   encoded to MP3 (mono, 32 kbit/s) by
   - ffmpeg: one `ffmpeg -i in.wav ... out.mp3` per file, one after the other;
   - the recorder: `Recorder.run_pass()` with an SQLite database: claim, encode
     (pydub up to stream_above_seconds, ffmpeg streaming above), fsync, sha256,
     decode to verify the duration, rename, fsync, database row.
   Each side runs twice, alternately; the better run of each is reported.
   Target: recorder >= 0.8 x ffmpeg's audio-seconds per wall-second.
2. Memory: one 2-hour 8 kHz call (115 MB of WAV), each side in a fresh process;
   peak resident memory of the process and of its ffmpeg children.
   Target: < 200 MB.  pydub loading the same file whole is shown for comparison.
Never run as a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 8000
LENGTHS = [10, 20, 45, 60, 90, 120, 180, 300, 600, 900]  # seconds, cycled: mixed call lengths
FFMPEG_ARGS = ["-vn", "-map_metadata", "-1", "-c:a", "libmp3lame", "-b:a", "32k", "-ac", "1", "-f", "mp3"]


def speechlike(seconds: int) -> bytes:
    """Ten seconds of a wobbling tone with noise and pauses, repeated: the encoder has real work."""
    rnd = random.Random(7)
    block = array.array("h")
    for i in range(RATE * 10):
        t = i / RATE
        envelope = 0.0 if (i // 4000) % 5 == 4 else 0.6 + 0.4 * math.sin(2 * math.pi * 3 * t)
        sample = envelope * (5000 * math.sin(2 * math.pi * (220 + 80 * math.sin(t)) * t) + rnd.gauss(0, 800))
        block.append(max(-32768, min(32767, int(sample))))
    raw = block.tobytes()
    reps, rest = divmod(seconds * RATE * 2, len(raw))
    return raw * reps + raw[:rest]


def write_wav(path: Path, seconds: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for start in range(0, seconds, 600):  # ten minutes at a time: the bench itself stays small
            w.writeframes(speechlike(min(600, seconds - start)))


def mib(kib: int) -> float:
    return kib / 1024


# --- child processes: each measurement in a clean process -----------------------------


def child_ffmpeg(spool: Path, out: Path) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(spool.glob("*.wav"))
    start = time.perf_counter()
    for f in files:
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(f),
                *FFMPEG_ARGS,
                str(out / f"{f.stem}.mp3"),
            ],
            check=True,
        )
    wall = time.perf_counter() - start
    return {"wall": wall, "files": len(files)}


def child_recorder(spool: Path, work: Path, stream_above: int) -> dict[str, float]:
    import dataclasses

    from sqlalchemy.orm import sessionmaker

    from config import DatabaseSettings, GeneralSettings, Settings
    from recorder.pipeline import Recorder
    from schema import migrate
    from schema.db import make_engine

    work.mkdir(parents=True, exist_ok=True)  # SQLite creates the database file, not its folder
    settings = Settings(
        general=GeneralSettings(data_dir=work),
        database=DatabaseSettings(url=f"sqlite:///{work / 'bench.sqlite3'}"),
    )
    settings = settings.replace(
        recorder=dataclasses.replace(
            settings.recorder,
            spool_dir=spool,
            archive_dir=str(work / "archive"),
            settle_seconds=0,
            keep_source=True,  # the same spool serves every run
            stream_above_seconds=stream_above,
        )
    )
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    recorder = Recorder(settings, sessionmaker(bind=engine, expire_on_commit=False))
    start = time.perf_counter()
    report = recorder.run_pass()
    wall = time.perf_counter() - start
    engine.dispose()
    if report.retrying or report.failed:
        raise SystemExit(f"recorder failures: {report.retrying + report.failed}")
    return {"wall": wall, "files": len(report.archived)}


def child_pydub(wav: Path) -> dict[str, float]:
    import warnings

    warnings.simplefilter("ignore")
    from pydub import AudioSegment

    audio = AudioSegment.from_wav(str(wav))
    return {"wall": 0.0, "files": 1 if len(audio) else 0}


def run_child(*args: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def vm_hwm_kib(pid: int | str) -> int:
    """Peak resident memory of one process (its own pages since exec; ru_maxrss would also
    count what a forked child shared with its parent before exec)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildPeak:
    """Samples the peak memory of this process's children (ffmpeg) every 10 ms."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> list[str]:
        me = str(os.getpid())
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[1] == me:
                            pids.append(entry)
                except (OSError, IndexError):
                    continue
        return pids

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            for pid in self._children():
                self.peak = max(self.peak, vm_hwm_kib(pid))

    def __enter__(self) -> ChildPeak:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()


def child_main(argv: list[str]) -> None:
    sample = argv[0] == "--sample-memory"  # the sampler costs CPU: only for the memory runs
    if sample:
        argv = argv[1:]
    kind = argv[0]
    with ChildPeak(enabled=sample) as children:
        if kind == "ffmpeg":
            result = child_ffmpeg(Path(argv[1]), Path(argv[2]))
        elif kind == "recorder":
            result = child_recorder(Path(argv[1]), Path(argv[2]), int(argv[3]))
        else:
            result = child_pydub(Path(argv[1]))
    result["self_kib"] = vm_hwm_kib("self")
    result["children_kib"] = children.peak
    cpu = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result["cpu"] = sum(u.ru_utime + u.ru_stime for u in cpu)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--long-minutes", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found: install Debian's package with `apt-get install ffmpeg`")

    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        base = Path(tmp)
        spool = base / "spool"
        spool.mkdir()
        lengths = [LENGTHS[i % len(LENGTHS)] for i in range(args.files)]
        for i, seconds in enumerate(lengths):
            write_wav(spool / f"{i + 1}.wav", seconds)
        audio = sum(lengths)
        print(
            f"throughput: {args.files} recordings, {audio / 3600:.2f} h of 8 kHz audio ({min(lengths)} s to {max(lengths)} s) -> MP3 32k mono"
        )

        from config import RecorderSettings

        default_stream_above = str(RecorderSettings().stream_above_seconds)
        print(f"recorder: settings' defaults (pydub up to {default_stream_above} s, streamed above)")
        best: dict[str, dict[str, float]] = {}
        for r in range(args.rounds):
            runs = {
                "ffmpeg direct": ("ffmpeg", str(spool), str(base / f"ff{r}")),
                "recorder": ("recorder", str(spool), str(base / f"rec{r}"), default_stream_above),
                "recorder, all streamed": ("recorder", str(spool), str(base / f"recs{r}"), "0"),
            }
            for name, child_args in runs.items():
                result = run_child(*child_args)
                if name not in best or result["wall"] < best[name]["wall"]:
                    best[name] = result
                shutil.rmtree(child_args[2], ignore_errors=True)
        base_rate = audio / best["ffmpeg direct"]["wall"]
        print(f"{'':24} {'wall s':>8} {'audio-s/wall-s':>15} {'x ffmpeg':>9} {'CPU s':>7}")
        for name, result in best.items():
            rate = audio / result["wall"]
            print(f"{name:24} {result['wall']:8.2f} {rate:15.0f} {rate / base_rate:9.2f} {result['cpu']:7.1f}")

        for f in spool.iterdir():
            f.unlink()
        long_wav = spool / "long.wav"
        write_wav(long_wav, args.long_minutes * 60)
        size = long_wav.stat().st_size
        print(f"\nmemory: one {args.long_minutes}-minute 8 kHz call ({size / 1e6:.0f} MB of WAV)")
        memory = {
            "ffmpeg direct": run_child("--sample-memory", "ffmpeg", str(spool), str(base / "ffl")),
            "recorder": run_child("--sample-memory", "recorder", str(spool), str(base / "recl"), default_stream_above),
            "(pydub loading it whole)": run_child("--sample-memory", "pydub", str(long_wav)),
        }
        print(f"{'':26} {'wall s':>7} {'peak MB process':>16} {'peak MB ffmpeg':>15}")
        for name, result in memory.items():
            wall = f"{result['wall']:7.2f}" if result["wall"] else f"{'-':>7}"
            print(f"{name:26} {wall} {mib(int(result['self_kib'])):16.1f} {mib(int(result['children_kib'])):15.1f}")
        rec = memory["recorder"]
        peak = (rec["self_kib"] + rec["children_kib"]) / 1024
        ratio = best["recorder"]["wall"] and (audio / best["recorder"]["wall"]) / base_rate
        print(
            f"\ntargets: throughput {ratio:.2f} x ffmpeg (>= 0.8: {'met' if ratio >= 0.8 else 'NOT met'}); "
            f"2-hour call peak {peak:.0f} MB, process and ffmpeg together (< 200 MB: {'met' if peak < 200 else 'NOT met'})"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
