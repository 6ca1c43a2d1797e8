"""Reading Prometheus text in tests."""

from __future__ import annotations


def samples(exposition: str) -> dict[str, float]:
    """Prometheus text as {'name{label="v",...}': value}, the labels sorted by name."""
    out = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            if "{" in key:
                name, labels = key[:-1].split("{", 1)
                key = name + "{" + ",".join(sorted(labels.split(","))) + "}"
            out[key] = float(value)
    return out
