"""`sloguard sidecar --config FILE`: run one sidecar until SIGTERM/SIGINT (both drain it) or a Drain RPC."""

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser("sidecar", help="run the per-pod sidecar in front of a vLLM engine")
    parser.add_argument("--config", type=Path, required=True, help="sidecar configuration (JSON or YAML)")
    parser.add_argument("--host", default="0.0.0.0", help="address the three ports bind to")
    parser.add_argument(
        "--reload-interval-s", type=float, default=1.0, help="how often to look at the config file"
    )
    parser.add_argument(
        "--health-interval-s", type=float, default=1.0, help="how often to probe the engine's /health"
    )
    parser.add_argument(
        "--clock-scale",
        type=float,
        default=1.0,
        help="run the sidecar's clock this many times faster than the wall clock, to match a simulated "
        "engine started with `sloguard sim serve --time-scale` (sloguard demo); 1 for real engines",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the asyncio event loop: uvloop (libuv; less CPU per relayed token), asyncio (the standard "
        "library's), or auto (uvloop where it is installed)",
    )
    parser.set_defaults(func=run)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory `asyncio.Runner` uses for `--event-loop` (None: the standard library's)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 (optional: the package installs it where it builds)
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def scaled_clock(scale: float) -> Callable[[], float]:
    """time.monotonic() run `scale` times faster (from this call on); scale 1 is time.monotonic itself."""
    if scale == 1.0:
        return time.monotonic
    wall0 = time.monotonic()
    return lambda: wall0 + (time.monotonic() - wall0) * scale


def run(args: argparse.Namespace) -> int:
    from sloguard.sidecar.config_reload import ConfigError  # noqa: PLC0415 (keeps `sloguard --help` fast)

    if not args.clock_scale > 0:
        log.error("--clock-scale must be > 0, got %s", args.clock_scale)
        return 2
    try:
        factory = loop_factory(args.event_loop)
    except ImportError as error:
        log.error("--event-loop uvloop: %s", error)
        return 2
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_serve(args))
    except (ConfigError, OSError, ValueError) as error:  # ValueError: bad policy parameters
        log.error("%s", error)
        return 2


async def _serve(args: argparse.Namespace) -> int:
    from sloguard.sidecar.service import SidecarService  # noqa: PLC0415

    service = SidecarService(
        args.config,
        host=args.host,
        reload_interval_s=args.reload_interval_s,
        health_interval_s=args.health_interval_s,
        clock=scaled_clock(args.clock_scale),
        clock_scale=args.clock_scale,
    )
    await service.start()
    from sloguard.sidecar.gc_settle import settle  # noqa: PLC0415

    settle()  # start-up's objects are never scanned again (sidecar/gc_settle.py)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_drain)
    await service.wait_stopped()
    return 0
