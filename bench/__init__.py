"""Benchmarks: each scenario is a module here, run by `sloguard bench NAME [--quick] --json FILE`.

Benchmarks are not tests. Each scenario module exposes `run(quick: bool) -> BenchResult`; the runner
prints the Markdown table (workload, baseline, ratio), writes it to `bench/results/NAME.md` (`--quick`:
`bench/results/quick/NAME.md`), and writes the machine-readable figures to the `--json` file. Register a
scenario by adding it to `SCENARIOS`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCENARIOS: dict[str, str] = {
    # name -> module path; each module defines `run(quick: bool) -> BenchResult`
    "sim-speed": "sloguard.bench.sim_speed",
    "decision-cost": "sloguard.bench.decision_cost",
    "autoscale": "sloguard.bench.autoscale",
    "sidecar-overhead": "sloguard.bench.sidecar_overhead",
    "scorpio": "sloguard.bench.scorpio",
    "ssjf": "sloguard.bench.ssjf",
    "sa": "sloguard.bench.sa",
    "trace": "sloguard.bench.trace",
    "real-vllm": "sloguard.bench.real_vllm",
    "operator": "sloguard.bench.operator_soak",  # needs the checkout and ../shared/k8s (a real control plane)
    "matrix": "sloguard.bench.matrix",
}


@dataclass
class BenchResult:
    """What one benchmark run produced: JSON figures, a Markdown report, and extra files (plots)."""

    data: dict[str, Any]
    markdown: str
    files: dict[str, bytes] = field(default_factory=dict)  # file name under the results dir -> content


def results_dir() -> Path:
    return Path("bench") / "results"
