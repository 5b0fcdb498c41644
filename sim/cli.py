"""`sloguard sim ...`: the simulator's command line (registered in sloguard/cli.py).

sloguard sim fit-profile [--vidur-dir DIR] [--out DIR]
    Fit the step-time profiles from Vidur's timings and write <out>/<name>.json (default: the
    package's profile folder, i.e. regenerate the shipped profiles).
sloguard sim serve --profile NAME --port N [--host H] [--time-scale X]
                   [--scheduling-policy fcfs|priority] [--max-num-seqs N] [--num-gpu-blocks N]
                   [--block-size N] [--max-num-batched-tokens N] [--max-model-len N]
                   [--served-model-name NAME] [--seed N] [--mean-output-tokens N]
    A vLLM-compatible OpenAI HTTP server over the simulated engine (see sloguard.sim.server).
    --time-scale X runs engine time X times faster than wall time (X > 1 for fast tests).
sloguard sim profiles
    List the shipped profiles.
"""

import argparse
from pathlib import Path

DEFAULT_VIDUR_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "vidur_profiles"


def _fit(args: argparse.Namespace) -> int:
    from sloguard.sim.profiles.fit import write_profiles  # noqa: PLC0415 (lazy: keeps `sloguard --help` fast)

    vidur = Path(args.vidur_dir)
    if not vidur.is_dir():
        print(f"error: Vidur profile folder not found: {vidur}")
        return 2
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    for path in write_profiles(vidur, out):
        print(f"wrote {path}")
    return 0


def _profiles(_: argparse.Namespace) -> int:
    from sloguard.sim.profiles import available_profiles, load_profile  # noqa: PLC0415 (lazy: keeps `sloguard --help` fast)

    for name in available_profiles():
        p = load_profile(name)
        print(f"{name}\t{p.data['gpu']}\t{p.model}\tderived={p.data['derived']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sloguard.sim.server.app import ServerOptions, run_server  # noqa: PLC0415 (lazy: keeps `sloguard --help` fast)

    options = ServerOptions(
        profile=args.profile,
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        scheduling_policy=args.scheduling_policy,
        max_num_seqs=args.max_num_seqs,
        num_gpu_blocks=args.num_gpu_blocks,
        block_size=args.block_size,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len,
        served_model_name=args.served_model_name,
        seed=args.seed,
        mean_output_tokens=args.mean_output_tokens,
        enable_prefix_caching=args.enable_prefix_caching,
    )
    try:
        run_server(options)
    except ValueError as exc:  # unknown profile, a KV cache smaller than max_model_len, ...
        print(f"error: {exc}")
        return 2
    return 0


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("sim", help="the engine simulator: fit profiles, serve a fake vLLM")
    sub = parser.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)

    fit = sub.add_parser("fit-profile", help="fit step-time profiles from Vidur's GPU timings")
    fit.add_argument("--vidur-dir", default=str(DEFAULT_VIDUR_DIR))
    fit.add_argument("--out", help="output folder (default: the shipped profiles)")
    fit.set_defaults(func=_fit)

    lst = sub.add_parser("profiles", help="list the shipped profiles")
    lst.set_defaults(func=_profiles)

    serve = sub.add_parser("serve", help="serve the vLLM OpenAI-compatible API over the simulated engine")
    serve.add_argument("--profile", required=True, help="profile name, e.g. llama-3-8b-h100")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--time-scale", type=float, default=1.0, help="engine seconds per wall second")
    serve.add_argument("--scheduling-policy", choices=["fcfs", "priority"], default="fcfs")
    serve.add_argument("--max-num-seqs", type=int, default=256)
    serve.add_argument("--num-gpu-blocks", type=int, default=None, help="default: the profile's")
    serve.add_argument("--block-size", type=int, default=None, help="default: the profile's")
    serve.add_argument("--max-num-batched-tokens", type=int, default=8192)
    serve.add_argument("--max-model-len", type=int, default=None, help="default: the profile's")
    serve.add_argument("--served-model-name", default=None, help="default: the profile's model")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--mean-output-tokens", type=float, default=256.0)
    serve.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vLLM's automatic prefix caching (default on, as in vLLM)",
    )
    serve.set_defaults(func=_serve)
