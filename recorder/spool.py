"""The spool folder as MixMonitor leaves it: one recording per call id.

``<id>.wav`` is the mixed recording (``MixMonitor(${CALLTRACK_RECORDING_FILE})``);
with dual-channel recording MixMonitor's ``r()`` and ``t()`` options also write
``<id>-in.wav`` (what the caller said) and ``<id>-out.wav`` (what the caller
heard: the agent).  A recording is named by ``<spool>/<id>.wav`` whichever of
these exist.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CALLER_SUFFIX = "-in"
AGENT_SUFFIX = "-out"


@dataclass(frozen=True)
class SpoolEntry:
    """One recording in the spool."""

    key: str
    #: ``<spool>/<key>.wav``: the row's source_path, whether or not the mixed file exists
    nominal: Path
    #: the file to encode (mono), or None for a dual-channel pair
    mixed: Path | None
    #: (caller, agent) files to merge to stereo, or None
    pair: tuple[Path, Path] | None
    #: every spool file of this recording (deleted together once archived)
    parts: tuple[Path, ...]
    #: newest modification time of the parts (seconds since the epoch)
    mtime: float
    size: int

    @property
    def dual(self) -> bool:
        return self.pair is not None


def scan(spool_dir: Path, dual_channel: bool) -> list[SpoolEntry]:
    """Every recording in *spool_dir*, oldest first.  Only ``.wav`` files count."""
    groups: dict[str, dict[str, tuple[Path, os.stat_result]]] = {}
    try:
        it = os.scandir(spool_dir)
    except FileNotFoundError:
        return []
    with it:
        for de in it:
            if not de.name.endswith(".wav") or de.name.startswith("."):
                continue
            try:
                if not de.is_file(follow_symlinks=False):
                    continue
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            stem = de.name[: -len(".wav")]
            role = "mixed"
            for suffix, name in ((CALLER_SUFFIX, "in"), (AGENT_SUFFIX, "out")):
                if stem.endswith(suffix) and len(stem) > len(suffix):
                    stem, role = stem[: -len(suffix)], name
                    break
            groups.setdefault(stem, {})[role] = (Path(de.path), st)
    entries = []
    for key, files in groups.items():
        mixed = files.get("mixed")
        caller, agent = files.get("in"), files.get("out")
        stats = list(files.values())
        if caller and agent and (dual_channel or mixed is None):
            entry_mixed, pair = None, (caller[0], agent[0])
            parts = [p for p, _ in stats]
        elif mixed is not None:
            entry_mixed, pair = mixed[0], None
            parts = [mixed[0]]
            stats = [mixed]
        else:  # one direction only
            only = caller or agent
            assert only is not None
            entry_mixed, pair, parts, stats = only[0], None, [only[0]], [only]
        entries.append(
            SpoolEntry(
                key=key,
                nominal=spool_dir / f"{key}.wav",
                mixed=entry_mixed,
                pair=pair,
                parts=tuple(sorted(parts)),
                mtime=max(st.st_mtime for _, st in stats),
                size=sum(st.st_size for _, st in stats),
            )
        )
    entries.sort(key=lambda e: (e.mtime, e.key))
    return entries
