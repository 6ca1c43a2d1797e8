"""Benchmark of dni.js on a large page: main-thread cost of swapping, in Debian's Chromium.

    .venv/bin/python bench/dni_page_bench.py [--cards 1000] [--numbers 500] [--runs 3]

The page: about 24,000 nodes (--cards cards of 24 nodes each), the business number in --numbers
of them, in several forms and split across elements.  For each CPU speed (as is, and slowed 4x
through the DevTools protocol, as on a phone), the page is loaded three ways:

- without the script (the baseline: what the page itself costs the main thread),
- with dni.js swapping every number,
- with dni.js on the same page holding none of the business numbers (a walk that changes nothing).

Chrome's performance timeline is recorded through Playwright (tracing, devtools.timeline):
"longest task" is the longest main-thread task of the renderer (RunTask) from the start of the
script's walk (its performance mark ``calltrack:walk``: the API's answer, or DOMContentLoaded when
the answer comes while the page is still parsed) until every number was swapped
(``calltrack:swapped``), and, for the page without the script, over its whole load; "all swapped"
is the time between the two marks.  Targets: no task over 50 ms at normal speed, all swapped
within 100 ms of the answer.  The median of --runs runs is printed.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.harness import chromium, large_page, service, tag, wait_swapped, website  # noqa: E402
from tracking.accounts import add_account, add_source  # noqa: E402
from tracking.numbers import NumberFields, add_number  # noqa: E402
from tracking.sites import add_site  # noqa: E402
from tracking.source_rules import add_rule  # noqa: E402


def main_thread_tasks(trace: dict[str, Any]) -> tuple[list[tuple[float, float, bool]], dict[str, float]]:
    """(start, duration in ms, runs dni.js) of each RunTask of the busiest renderer main thread, and the
    calltrack marks' times.  A task runs dni.js when a FunctionCall into dni.js lies inside it."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"
    }
    tasks: dict[tuple[int, int], list[tuple[float, float]]] = {m: [] for m in mains}
    calls: dict[tuple[int, int], list[float]] = {m: [] for m in mains}
    marks: dict[str, float] = {}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        name = str(e.get("name", ""))
        if name == "RunTask" and e.get("ph") == "X" and key in tasks:
            tasks[key].append((e["ts"] / 1000, e.get("dur", 0) / 1000))
        elif name in ("FunctionCall", "EvaluateScript") and key in calls:
            data = (e.get("args") or {}).get("data") or {}
            if "dni.js" in str(data.get("url", "")):
                calls[key].append(e["ts"] / 1000)
        elif name.startswith("calltrack:") and e.get("ph") in ("R", "I", "n", "b", "X"):
            marks.setdefault(name[len("calltrack:") :], e["ts"] / 1000)
    if not tasks:
        return [], marks
    main = max(tasks, key=lambda m: sum(d for _, d in tasks[m]))
    ours = sorted(calls[main])
    out = []
    for start, duration in sorted(tasks[main]):
        i = bisect.bisect_left(ours, start)
        out.append((start, duration, i < len(ours) and ours[i] <= start + duration))
    return out, marks


def run_once(browser: Any, url: str, rate: int, script: bool) -> dict[str, float]:
    ctx = browser.new_context()
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
    browser.start_tracing(
        page=page, categories=["devtools.timeline", "disabled-by-default-devtools.timeline", "blink.user_timing"]
    )
    page.goto(url, wait_until="load")
    if script:
        wait_swapped(page, timeout=60_000)
    trace = json.loads(browser.stop_tracing())
    result: dict[str, float] = {}
    tasks, marks = main_thread_tasks(trace)
    result["load_longest"] = max((d for _, d, _ in tasks), default=0.0)
    if script:
        # from the walk's start: an answer that comes while the page is parsed waits for DOMContentLoaded
        walk = page.evaluate("() => performance.getEntriesByName('calltrack:walk')[0].startTime")
        swapped = page.evaluate("() => performance.getEntriesByName('calltrack:swapped')[0].startTime")
        result["swapped_after"] = swapped - walk
        result["swaps"] = float(page.evaluate("() => window.calltrackDni.state().swapped"))
        start, end = marks.get("walk"), marks.get("swapped")
        if start is not None and end is not None:
            # the walk's slices and the task that commits its changes: the tasks running dni.js in the window
            # (the page's own first layout and paint also fall in it, and are not counted)
            window = [d for s, d, ours in tasks if ours and start - 1 <= s <= end]
            result["swap_longest"] = max(window, default=0.0)
            result["swap_busy"] = sum(window)
            result["swap_tasks"] = len(window)
    if script:
        # a walk again over the swapped page (it finds nothing left), beside a bare TreeWalker over the same
        # nodes testing each text for a digit: both timed in the page, the median of five
        result["bare_walk"] = page.evaluate(BARE_WALK)
        result["rewalk"] = page.evaluate(REWALK)
    ctx.close()
    return result


BARE_WALK = """() => { const t = []; for (let i = 0; i < 5; i++) { const t0 = performance.now(); let n = 0;
  const w = document.createTreeWalker(document, 5); let x;
  while ((x = w.nextNode())) if (x.nodeType === 3 && /\\d/.test(x.nodeValue)) n++;
  t.push(performance.now() - t0); } return t.sort((a, b) => a - b)[2]; }"""
REWALK = """async () => { const t = []; for (let i = 0; i < 5; i++) { const t0 = performance.now();
  window.calltrackDni.swap();
  while (window.calltrackDni.state().busy) await new Promise(r => setTimeout(r, 0));
  t.push(performance.now() - t0); } return t.sort((a, b) => a - b)[2]; }"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--numbers", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "getloadavg"):
        print(
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times grow with it; compare ratios)"
        )
    with tempfile.TemporaryDirectory() as tmp, service(Path(tmp)) as svc, website() as site, chromium() as browser:
        with svc.factory.begin() as s:
            key = add_account(s, "Acme").public_key
            add_source(s, "Acme", "Website")
            add_number(s, svc.settings, NumberFields("+17705550151", "Acme", source="Website", forward_to="PJSIP/1"))
            add_rule(s, "Acme", "default", "", "Website")
            add_site(s, "Acme", site.origin, ["+1 404 555 0100"])
        script = tag(svc, key)
        site.pages["/plain"] = large_page(args.cards, args.numbers)
        site.pages["/dni"] = large_page(args.cards, args.numbers, script=script)
        site.pages["/none"] = large_page(args.cards, args.numbers, script=script).replace("0100", "0177")
        nodes = browser.new_page()
        nodes.goto(site.url("/plain"))
        count = nodes.evaluate(
            "() => { let n = 0; const w = document.createTreeWalker(document, 5); while (w.nextNode()) n++; return n; }"
        )
        nodes.close()
        print(f"page: {count} nodes (elements and texts), the number {args.numbers} times; median of {args.runs} runs")
        for rate in (1, 4):
            runs: dict[str, list[dict[str, float]]] = {"plain": [], "dni": [], "none": []}
            for _ in range(args.runs):
                for variant in runs:
                    runs[variant].append(run_once(browser, site.url("/" + variant), rate, variant != "plain"))

            def med(variant: str, key: str, runs: dict[str, list[dict[str, float]]] = runs) -> float:
                return statistics.median(r.get(key, float("nan")) for r in runs[variant])

            print(f"CPU {rate}x:")
            print(f"  without the script (baseline): longest task of the load {med('plain', 'load_longest'):7.1f} ms")
            print(
                f"  dni.js swapping:               longest dni.js task while swapping {med('dni', 'swap_longest'):6.1f} ms"
                f" ({med('dni', 'swap_longest') / med('plain', 'load_longest'):.2f}x the page's own longest),"
                f" all swapped {med('dni', 'swapped_after'):6.1f} ms after the walk began"
                f" (dni.js ran {med('dni', 'swap_busy'):.1f} ms of it, in {med('dni', 'swap_tasks'):.0f} tasks)"
                f" ({med('dni', 'swaps'):.0f} texts and links); longest task of the load {med('dni', 'load_longest'):.1f} ms"
            )
            print(
                f"  walking the swapped page again: {med('dni', 'rewalk'):6.1f} ms until done, beside a bare TreeWalker"
                f" over it {med('dni', 'bare_walk'):6.1f} ms ({med('dni', 'rewalk') / med('dni', 'bare_walk'):.1f}x)"
            )
            print(
                f"  dni.js, nothing to swap:       longest dni.js task while walking {med('none', 'swap_longest'):6.1f} ms,"
                f" walk over {med('none', 'swapped_after'):6.1f} ms after the walk began"
                f" (dni.js ran {med('none', 'swap_busy'):.1f} ms of it, in {med('none', 'swap_tasks'):.0f} tasks)"
            )


if __name__ == "__main__":
    main()
