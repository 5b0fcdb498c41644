"""`sloguard operator`: run the kopf operator (one replica; standalone, no peering).

Adapter (CLI). Flags override the SLOGUARD_* environment variables that the startup hook reads, so a
Deployment can use either.
"""

import argparse
import os
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("operator", help="run the SLOGuard operator (kopf)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace")
    scope.add_argument("--namespace", "-n", action="append", default=[], help="serve this namespace")
    parser.add_argument("--resync-interval", type=float, help="seconds between drift-repair resyncs")
    parser.add_argument("--retry-delay", type=float, help="seconds before retrying a failed handler")
    parser.add_argument("--apiserver-url", help="talk to this URL without credentials (kubectl proxy)")
    parser.add_argument(
        "--sidecar-image",
        help="sidecar image of pools that do not pin spec.sidecar.image (SLOGUARD_SIDECAR_IMAGE)",
    )
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' disables)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415  (heavy; only this subcommand needs it)

    for flag, env in (
        (args.resync_interval, "SLOGUARD_RESYNC_INTERVAL_S"),
        (args.retry_delay, "SLOGUARD_RETRY_DELAY_S"),
        (args.apiserver_url, "SLOGUARD_APISERVER_URL"),
        (args.sidecar_image, "SLOGUARD_SIDECAR_IMAGE"),
        (",".join(args.namespace) or None, "SLOGUARD_NAMESPACES"),
    ):
        if flag is not None:
            os.environ[env] = str(flag)
    import sloguard.operator.handlers  # noqa: F401, PLC0415  (registers the handlers, after the env)

    kopf.run(
        standalone=True,
        clusterwide=bool(args.all_namespaces or not args.namespace),
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0
