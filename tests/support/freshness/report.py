"""Reporting: the summary of a run (printed, and appended to FRESHNESS_REPORT as one JSON
line), and the failures the verdict makes of it."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from tests.support.freshness.judge import Stale
from tests.support.freshness.knobs import GRACE, MIN_READS, REPORT
from tests.support.freshness.model import Sig
from tests.support.freshness.readers import Read
from tests.support.freshness.run import Outcome
from tests.support.freshness.writer import CYCLE


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarise(outcome: Outcome, allowed_503: list[Read]) -> dict[str, Any]:
    verdict = outcome.verdict
    stale: list[Stale] = verdict["stale"]
    statuses = Counter(r.status for r in outcome.reads)
    latency = {}
    for source, values in sorted(outcome.judge.visibility().items()):
        latency[source] = {
            "n": values["events"],
            "first_p50_ms": ms(percentile(values["first"], 0.5)),
            "first_p99_ms": ms(percentile(values["first"], 0.99)),
            "first_max_ms": ms(max(values["first"], default=None)),
            "all_p50_ms": ms(percentile(values["all"], 0.5)),
            "all_p99_ms": ms(percentile(values["all"], 0.99)),
            "all_max_ms": ms(max(values["all"], default=None)),
            "unseen_pages": values["unseen"],
        }
    writes = Counter(outcome.writer.sources[1:])
    return {
        "test": outcome.name, "workers": outcome.workers, "seconds": round(outcome.wall, 1),
        "reads": len(outcome.reads), "judged": verdict["judged"],
        "reads_per_s": round(len(outcome.reads) / outcome.wall),
        "stale": len(stale),
        "stale_max_ms": ms(max((s.lateness for s in stale), default=None)),
        "stale_p50_ms": ms(percentile([s.lateness for s in stale], 0.5)),
        "stale_over_150ms": sum(1 for s in stale if s.lateness > 0.150),
        "stale_by_source": {
            source: {"n": len(group), "max_ms": ms(max(x.lateness for x in group))}
            for source, group in sorted(_group(stale, lambda x: x.missed).items())},
        "fresh_latest_ms": ms(verdict["closest_fresh"]),
        "stale_by_x_cache": dict(Counter(s.read.cache for s in stale)),
        "stale_by_method": dict(Counter(s.read.method for s in stale)),
        "unexplained": len(verdict["unexplained"]),
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "allowed_503": len(allowed_503),
        "client_errors": len(outcome.errors),
        "writes": dict(sorted(writes.items())), "write_count": sum(writes.values()),
        "use_api": {str(k): v for k, v in outcome.writer.use_api_statuses.items()},
        "writer_failures": outcome.writer.failures[:10],
        "clock_ends": len(outcome.world.ends),
        "latency": latency,
        "faults": [{"label": w.label, "at_s": round(w.begin - outcome.t0, 2),
                    "lasted_s": round(w.end - w.begin, 2), "note": w.note,
                    "stale_within_3s": sum(1 for s in stale
                                           if w.begin <= s.read.s <= w.end + 3),
                    "status_503": sum(1 for r in outcome.reads if r.status == 503
                                      and r.r >= w.begin and r.s <= w.end + 3),
                    "last_503_after_end_s": max((round(r.s - w.end, 3) for r in outcome.reads
                                                 if r.status == 503 and r.r >= w.begin
                                                 and r.s <= w.end + 3), default=None)}
                   for w in outcome.windows],
    }


def _group(items: list[Stale], key: Callable[[Stale], str]) -> dict[str, list[Stale]]:
    groups: dict[str, list[Stale]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


def show(summary: dict[str, Any], outcome: Outcome) -> str:
    lines = [f"\nfreshness [{summary['test']}, workers={summary['workers']}]: "
             f"{summary['judged']} judged reads in {summary['seconds']} s "
             f"({summary['reads_per_s']}/s), {summary['write_count']} writes, "
             f"{summary['stale']} stale (max {summary['stale_max_ms']} ms, "
             f"p50 {summary['stale_p50_ms']} ms, {summary['stale_over_150ms']} over 150 ms), "
             f"{summary['unexplained']} unexplained, fresh reads showed versions superseded "
             f"at most {summary['fresh_latest_ms']} ms before they were sent, "
             f"statuses {summary['status']}, "
             f"allowed 503 {summary['allowed_503']}, client errors {summary['client_errors']}"]
    if summary["stale"]:
        lines.append(f"  stale by missed source {summary['stale_by_source']}, "
                     f"by X-Cache {summary['stale_by_x_cache']}, "
                     f"by method {summary['stale_by_method']}")
    lines.append("  commit-to-visible, ms (first affected page / all affected pages):")
    for source, v in summary["latency"].items():
        lines.append(f"    {source:9} n={v['n']:4}  first p50 {v['first_p50_ms']} "
                     f"p99 {v['first_p99_ms']} max {v['first_max_ms']}  |  all p50 "
                     f"{v['all_p50_ms']} p99 {v['all_p99_ms']} max {v['all_max_ms']}"
                     + (f"  unseen pages {v['unseen_pages']}" if v["unseen_pages"] else ""))
    for fault in summary["faults"]:
        lines.append(f"  fault {fault['label']} at {fault['at_s']} s for {fault['lasted_s']} s"
                     f" ({fault['note']}): {fault['stale_within_3s']} stale within 3 s, "
                     f"{fault['status_503']} 503s (the last sent "
                     f"{fault['last_503_after_end_s']} s after the fault's end)")
    return "\n".join(lines)


def describe_stale(outcome: Outcome, stale: list[Stale], limit: int = 4) -> str:
    """The first stale reads, then the latest ones."""
    first = sorted(stale, key=lambda x: x.read.s)[:limit]
    worst = [x for x in sorted(stale, key=lambda x: -x.lateness) if x not in first][:limit]
    out = []
    for s in first + worst:
        r = s.read
        out.append(f"  {r.method} {r.page} sent at {r.s - outcome.t0:.3f} s, "
                   f"{s.lateness * 1000:.0f} ms late, missed {s.missed} ({s.detail}), "
                   f"X-Cache {r.cache}\n    showed   {_short(r.sig)}"
                   f"\n    expected {_short(s.expected)}")
    return "\n".join(out)


def _short(sig: Sig | None) -> str:
    if sig is None:
        return "None"
    transfer, total, items = sig
    return f"transfer={transfer} total={total} " + ", ".join(
        f"{i}:{n}:{a}" for i, n, a in items)[:300]


def report(outcome: Outcome, allowed_503: list[Read]) -> dict[str, Any]:
    summary = summarise(outcome, allowed_503)
    print(show(summary, outcome))
    if REPORT:
        with open(REPORT, "a", encoding="utf-8") as out:
            out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return summary


def verdict_failures(outcome: Outcome, summary: dict[str, Any],
                     allowed_503: list[Read]) -> list[str]:
    failures = []
    verdict = outcome.verdict
    stale: list[Stale] = verdict["stale"]
    if stale:
        failures.append(f"{len(stale)} stale reads (more than {GRACE * 1000:.0f} ms after a "
                        f"commit, not reflecting it), worst {summary['stale_max_ms']} ms; "
                        f"the first ones, then the latest:\n{describe_stale(outcome, stale)}")
    if verdict["unexplained"]:
        shown = "\n".join(f"  {r.method} {r.page} at {r.s - outcome.t0:.3f} s: {_short(r.sig)}"
                          for r in verdict["unexplained"][:5])
        failures.append(f"{len(verdict['unexplained'])} reads matching no state:\n{shown}")
    allowed = {id(r) for r in allowed_503}
    bad = [r for r in outcome.reads if r.status not in (200, 429) and id(r) not in allowed]
    if bad:
        failures.append(f"{len(bad)} answers neither 200 nor 429 (nor an allowed 503): "
                        f"{dict(Counter(r.status for r in bad))}, the first at "
                        f"{bad[0].s - outcome.t0:.3f} s; server log {outcome.log}:\n"
                        f"{outcome.server_tail[-2000:]}")
    if verdict["judged"] < MIN_READS:
        failures.append(f"only {verdict['judged']} judged reads (at least {MIN_READS} wanted)")
    if summary["status"].get("429", 0) > 0.01 * len(outcome.reads):
        failures.append(f"too many 429s: {summary['status']['429']} of {len(outcome.reads)}")
    if len(outcome.errors) > 0.01 * len(outcome.reads):
        failures.append(f"{len(outcome.errors)} client errors: "
                        f"{Counter(e for _, e in outcome.errors)}")
    if outcome.writer.failures:
        failures.append(f"writer: {outcome.writer.failures[:5]}")
    missing = ({*CYCLE, "truncate"} - set(summary["writes"])) | (
        set() if "clock" in summary["latency"] else {"clock"})
    if missing:
        failures.append(f"sources never written (or never observable): {sorted(missing)}")
    return failures
