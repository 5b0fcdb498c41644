"""The `sloguard` command line: one entry point, one subcommand module per concern.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed arguments and returning an exit code. Subcommands import their heavy
dependencies lazily, so `sloguard --help` stays fast.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sloguard import __version__

# Modules that add subcommands; later work adds its own line here.
SUBCOMMAND_MODULES = [
    "sloguard.bench_command",
    "sloguard.crds_command",
    "sloguard.demo_command",
    "sloguard.predictor_command",
    "sloguard.sim.cli",
    "sloguard.sidecar.command",
    "sloguard.operator.command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sloguard", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"sloguard {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
