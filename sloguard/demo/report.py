"""The demo's figures from the client's records: per-policy summary (the `--json` schema), table and plot.

Definitions (the same for both policies, measured by the load generator on engine time):
- a request met its SLO when it completed with TTFT <= the class's ttft, mean TPOT after the first token
  <= tpot, and (where the class has one) end-to-end time <= deadline;
- attainment: requests that met their SLO / all requests of the class (rejected, failed and cancelled
  count as missed: the demo never cancels on its own before the drain window ends);
- goodput_rps: requests that met their SLO per engine second of the offered window (first to last
  scheduled arrival), the benchmarks' one definition (`sloguard.bench.runner.goodput_rps`);
- ttft_p99_ms / tpot_p99_ms: over the completed requests of the class (null when none completed).
Called by sloguard/demo_command.py.
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sloguard.api.sidecar_config import SLOClassConfig
from sloguard.bench.runner import goodput_rps, offered_window_s
from sloguard.demo.runner import ArmResult, Record

OUTCOMES = ("completed", "rejected", "cancelled", "failed")
ATTAINMENT_WINDOW_S = 20.0  # engine seconds of ended requests behind each point of the attainment plot


def _p99_ms(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000.0 * ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 1)


def summarize(result: ArmResult, classes: Sequence[SLOClassConfig]) -> dict[str, Any]:
    by_name = {c.name: c for c in classes}
    records = result.records
    met = [r for r in records if r.met(by_name[r.request.slo_class])]
    outcomes = {o: sum(1 for r in records if r.outcome == o) for o in OUTCOMES}
    window_s = offered_window_s(r.request.arrival_s for r in records) if records else 0.0
    per_class: dict[str, Any] = {}
    for slo in classes:
        mine = [r for r in records if r.request.slo_class == slo.name]
        done = [r for r in mine if r.outcome == "completed"]
        per_class[slo.name] = {
            "attainment": round(sum(1 for r in mine if r.met(slo)) / len(mine), 4) if mine else None,
            "ttft_p99_ms": _p99_ms([r.ttft_s for r in done if r.ttft_s is not None]),
            "tpot_p99_ms": _p99_ms([r.tpot_s for r in done if r.tpot_s is not None]),
            "requests": len(mine),
            "outcomes": {o: sum(1 for r in mine if r.outcome == o) for o in OUTCOMES},
        }
    return {
        "attainment": round(len(met) / len(records), 4) if records else None,
        "goodput_rps": round(goodput_rps(len(met), window_s), 3) if window_s > 0 else None,
        "requests": len(records),
        "outcomes": outcomes,
        "per_class": per_class,
        "rejection_reasons": dict(Counter(r.reason or "unknown" for r in records if r.outcome == "rejected")),
    }


def _fmt(value: Any, scale: float = 1.0, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}{suffix}"


def table(summaries: Mapping[str, Mapping[str, Any]], classes: Sequence[SLOClassConfig]) -> str:
    """Attainment, goodput, TTFT/TPOT p99 per class, SLOGuard next to FCFS pass-through."""
    names = list(summaries)
    head = ["class", "target TTFT/TPOT", "requests"]
    for name in names:
        head += [f"{name} attain", f"{name} TTFT p99", f"{name} TPOT p99"]
    rows = [head]
    for slo in classes:
        first = summaries[names[0]]["per_class"][slo.name]
        row = [slo.name, f"{slo.ttft_s * 1000:.0f}/{slo.tpot_s * 1000:.0f} ms", str(first["requests"])]
        for name in names:
            c = summaries[name]["per_class"][slo.name]
            row += [
                _fmt(c["attainment"], 100, 1, "%"),
                _fmt(c["ttft_p99_ms"], 1, 0, " ms"),
                _fmt(c["tpot_p99_ms"], 1, 1, " ms"),
            ]
        rows.append(row)
    total = ["all", "", str(summaries[names[0]]["requests"])]
    for name in names:
        s = summaries[name]
        total += [_fmt(s["attainment"], 100, 1, "%"), f"goodput {_fmt(s['goodput_rps'], 1, 2)}/s", ""]
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name in names:
        o = summaries[name]["outcomes"]
        reasons = ", ".join(f"{k} {v}" for k, v in summaries[name].get("rejection_reasons", {}).items())
        counts = ", ".join(f"{k} {o[k]}" for k in OUTCOMES)
        lines.append(f"{name}: {counts}" + (f" (rejected: {reasons})" if reasons else ""))
    return "\n".join(lines)


def _attainment_series(
    result: ArmResult, classes: Sequence[SLOClassConfig]
) -> tuple[list[float], list[float]]:
    by_name = {c.name: c for c in classes}
    ended = sorted(
        (r.ended_s - result.t0_s, r.met(by_name[r.request.slo_class]))
        for r in result.records
        if r.ended_s is not None
    )
    times: list[float] = []
    values: list[float] = []
    for s in result.samples:
        window = [m for t, m in ended if s.t_s - ATTAINMENT_WINDOW_S < t <= s.t_s]
        if window:
            times.append(s.t_s)
            values.append(100.0 * sum(window) / len(window))
    return times, values


def plot(results: Sequence[ArmResult], classes: Sequence[SLOClassConfig], path: Path, title: str) -> None:
    """PNG: attainment over a sliding window, and requests waiting for their first token, per policy."""
    import matplotlib  # noqa: PLC0415 (lazy: only the demo plots)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for result in results:
        times, values = _attainment_series(result, classes)
        top.plot(times, values, label=result.name)
        times = [s.t_s for s in result.samples]
        bottom.plot(times, [s.waiting for s in result.samples], label=f"{result.name}: waiting")
        bottom.plot(
            times,
            [s.sidecar_queued for s in result.samples],
            linestyle="--",
            label=f"{result.name}: of which in the sidecar queue",
        )
    top.set_ylabel(f"SLO attainment, % (last {ATTAINMENT_WINDOW_S:.0f} s)")
    top.set_ylim(0, 105)
    top.legend()
    top.grid(alpha=0.3)
    top.set_title(title)
    bottom.set_ylabel("requests waiting for first token")
    bottom.set_xlabel("engine time since the replay started, s")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def records_ended_once(records: Sequence[Record]) -> bool:
    return all(r.outcome in OUTCOMES for r in records)
