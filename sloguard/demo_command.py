"""`sloguard demo`: the whole system locally, no cluster: simulated engines, a sidecar in front of each, a
real trace replayed at them, once through SLOGuard and once through plain FCFS pass-through.

sloguard demo [--duration-s N] [--json FILE] [--results-dir DIR] [--engines N] [--time-scale X]
              [--rate-scale R] [--max-num-seqs N] [--seed N] [--data-dir DIR]

The baseline is the same sidecar with the `fcfs` policy and no in-flight cap (every request goes to the
engine at once and waits in vLLM's own FCFS queue): both arms then pay the same relay, the same client
measures both, and the only difference is the policy and the cap. Prints a progress bar on stderr and a
table at the end; writes demo.png (attainment and queue depth over time) and demo.json under
--results-dir, and the figures to --json FILE. Implementation: sloguard/demo/.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MIX = {"interactive": 0.3, "standard": 0.5, "batch": 0.2}
EXAMPLE_CLASSES = Path(__file__).resolve().parent.parent / "examples" / "sloclasses.yaml"


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser(
        "demo", help="run engines, sidecars and a trace replay locally; SLOGuard vs FCFS pass-through"
    )
    parser.add_argument(
        "--duration-s", type=float, default=45.0, help="wall seconds of trace replayed per policy"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--results-dir", type=Path, default=Path("demo-results"), help="plot and JSON")
    parser.add_argument("--engines", type=int, default=2, help="simulated engines (one sidecar each)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="engine seconds per wall second")
    parser.add_argument(
        "--rate-scale", type=float, default=2.5, help="the trace's arrival rate is multiplied by this"
    )
    parser.add_argument("--max-num-seqs", type=int, default=16, help="each engine's batch limit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="shared data folder (default: $SLOGUARD_DATA_DIR or ../shared/data of the checkout)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sloguard.demo.workload import DATA_DIR, WorkloadError  # noqa: PLC0415 (keeps --help fast)

    for name in ("duration_s", "time_scale", "rate_scale"):
        if not getattr(args, name) > 0:
            print(f"error: --{name.replace('_', '-')} must be > 0", file=sys.stderr)
            return 2
    if args.engines < 1 or args.max_num_seqs < 1:
        print("error: --engines and --max-num-seqs must be >= 1", file=sys.stderr)
        return 2
    data_dir = args.data_dir or Path(os.environ.get("SLOGUARD_DATA_DIR", str(DATA_DIR)))
    try:
        return asyncio.run(_main(args, data_dir))
    except WorkloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # an engine or sidecar did not come up (everything started is stopped)
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; engines and sidecars stopped", file=sys.stderr)
        return 130


def _classes() -> list[Any]:
    import yaml  # noqa: PLC0415

    from sloguard.api.sidecar_config import SLOClassConfig  # noqa: PLC0415
    from sloguard.api.sloclass import SLOClass  # noqa: PLC0415

    docs = yaml.safe_load_all(EXAMPLE_CLASSES.read_text())
    return [SLOClassConfig.from_resource(SLOClass.model_validate(d)) for d in docs if d]


class _Progress:
    """A one-line progress bar on stderr (plain text, redrawn with a carriage return)."""

    def __init__(self, arms: int) -> None:
        self.arms = arms
        self.started = time.monotonic()
        self.arm_index = 0
        self.last_name = ""

    def __call__(self, name: str, fraction: float, records: list[Any]) -> None:
        if name != self.last_name:
            if self.last_name:
                sys.stderr.write("\n")
            self.last_name = name
            self.arm_index += 1
        width = 30
        filled = int(width * fraction)
        ended = [r for r in records if r.outcome is not None]
        sent = sum(1 for r in records if r.sent_s is not None)
        rejected = sum(1 for r in ended if r.outcome == "rejected")
        waiting = sum(1 for r in records if r.sent_s is not None and r.outcome is None)
        sys.stderr.write(
            f"\r[{self.arm_index}/{self.arms}] {name:<9} [{'#' * filled}{'.' * (width - filled)}] "
            f"{100 * fraction:3.0f}%  sent {sent}/{len(records)}  ended {len(ended)}  "
            f"rejected {rejected}  open {waiting}  {time.monotonic() - self.started:5.0f}s "
        )
        sys.stderr.flush()


async def _main(args: argparse.Namespace, data_dir: Path) -> int:
    from sloguard.demo import report  # noqa: PLC0415
    from sloguard.demo.runner import ArmSetup, EngineSetup, run_arm  # noqa: PLC0415
    from sloguard.demo.workload import load_workload  # noqa: PLC0415

    logging.getLogger("sloguard.sidecar").setLevel(logging.WARNING)  # the progress bar owns the terminal
    task = asyncio.current_task()
    if task is not None:  # SIGTERM stops everything like Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    classes = _classes()
    setup = EngineSetup(engines=args.engines, time_scale=args.time_scale, max_num_seqs=args.max_num_seqs)
    window_s = args.duration_s * args.time_scale
    workload = load_workload(
        data_dir,
        duration_s=window_s,
        rate_scale=args.rate_scale,
        mix=DEFAULT_MIX,
        max_tokens=512,
        seed=args.seed,
    )
    arms = [
        # the cap pinned at the engine's batch size: queueing happens in the sidecar, where the policy orders
        # it (AIMD would react to this shared machine's CPU jitter as if it were the engine's)
        # decode calibration on: the sidecar's latency model starts from placeholder coefficients (no
        # profile in its configuration) that price this engine's decode steps about twice too slow
        ArmSetup(
            "sloguard",
            "sloguard",
            min_in_flight=args.max_num_seqs,
            max_in_flight=args.max_num_seqs,
            parameters=(("calibrate_decode", True),),
        ),
        ArmSetup("fcfs", "fcfs", min_in_flight=65536, max_in_flight=65536),
    ]
    print(
        f"Replaying {len(workload)} requests ({window_s:.0f} engine-s of the Azure 2023 conversation trace "
        f"at {args.rate_scale}x its rate, ShareGPT prompts and reply lengths, classes {DEFAULT_MIX}) on "
        f"{setup.engines} simulated {setup.profile} engines (max-num-seqs {setup.max_num_seqs}, "
        f"time scale {setup.time_scale}x), once per policy.",
        file=sys.stderr,
    )
    progress = _Progress(len(arms))
    drain_wall_s = max(10.0, args.duration_s / 3)  # then what is still open is cancelled (and missed)
    results = []
    try:
        for arm in arms:
            results.append(
                await run_arm(arm, setup, workload, classes, drain_wall_s=drain_wall_s, progress=progress)
            )
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    sys.stderr.write("\n")
    summaries = {r.name: report.summarize(r, classes) for r in results}
    figures = {
        "policies": summaries,
        "setup": {
            "engines": setup.engines,
            "profile": setup.profile,
            "max_num_seqs": setup.max_num_seqs,
            "time_scale": setup.time_scale,
            "rate_scale": args.rate_scale,
            "trace_window_s": window_s,
            "mix": DEFAULT_MIX,
            "baseline": "the same sidecars with policy fcfs and no in-flight cap",
            "wall_s": {r.name: round(r.wall_s, 1) for r in results},
        },
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.results_dir / "demo.png"
    try:
        report.plot(
            results,
            classes,
            plot_path,
            f"{len(workload)} requests, {setup.engines} engines: sloguard vs fcfs pass-through",
        )
        plotted = f"Plot: {plot_path}"
    except ImportError:  # matplotlib is the optional `plots` extra
        plotted = "No plot: matplotlib is missing (pip install 'sloguard[plots]')."
    text = json.dumps(figures, indent=2)
    (args.results_dir / "demo.json").write_text(text + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(report.table(summaries, classes))
    print(f"\nTimes in engine seconds. {plotted}")
    return 0
