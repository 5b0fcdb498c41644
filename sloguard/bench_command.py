"""`sloguard bench NAME [--quick] [--json FILE]`: run one registered benchmark scenario (or `all`).

The scenario prints its Markdown table; the runner also writes it to `<results-dir>/NAME.md`, writes the
scenario's extra files (plots) beside it, and writes the JSON figures to `--json` when given. The results
dir defaults to `bench/results/` (full runs, committed) or `bench/results/quick/` for `--quick` (ignored
by git, so `make bench` leaves the tree clean).
"""

import argparse
import importlib
import json
from pathlib import Path

from sloguard.bench import SCENARIOS, BenchResult, results_dir


def run_scenario(name: str, *, quick: bool, out_dir: Path) -> BenchResult:
    module = importlib.import_module(SCENARIOS[name])
    result: BenchResult = module.run(quick=quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(result.markdown)
    for file_name, content in result.files.items():
        (out_dir / file_name).write_bytes(content)
    return result


def out_dir(args: argparse.Namespace) -> Path:
    if args.results_dir is not None:
        return Path(args.results_dir)
    return results_dir() / "quick" if args.quick else results_dir()


def run(args: argparse.Namespace) -> int:
    names = sorted(SCENARIOS) if args.name == "all" else [args.name]
    collected = {}
    for name in names:
        print(f"## {name}{' (quick)' if args.quick else ''}", flush=True)
        result = run_scenario(name, quick=args.quick, out_dir=out_dir(args))
        print(result.markdown, flush=True)
        collected[name] = result.data
    if args.json:
        payload = collected[names[0]] if len(names) == 1 else collected
        Path(args.json).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark scenario")
    parser.add_argument("name", choices=[*sorted(SCENARIOS), "all"], help="scenario to run")
    parser.add_argument("--quick", action="store_true", help="the short variant (make bench runs these)")
    parser.add_argument("--json", metavar="FILE", help="write the machine-readable figures here")
    parser.add_argument(
        "--results-dir",
        default=None,
        help=f"where tables and plots go (default {results_dir()}, {results_dir() / 'quick'} with --quick)",
    )
    parser.set_defaults(func=run)
