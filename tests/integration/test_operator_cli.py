"""`sloguard operator` as a real process (the way the Helm chart runs it) against kmock's API emulator.

Checks the CLI path that KopfRunner skips: flag parsing, kopf.run in standalone cluster-wide mode, the
liveness endpoint, and a clean exit on SIGTERM.
"""

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sloguard_testing.kube_emulator import DEPLOYMENTS, ServerSideEmulator, declare_sloguard_resources, live

pytestmark = [pytest.mark.kmock(cls=ServerSideEmulator), pytest.mark.timeout(40)]
SLOGUARD = Path(sys.executable).parent / "sloguard"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_operator_process_serves_pools_answers_liveness_and_stops_on_sigterm(kmock: Any) -> None:
    declare_sloguard_resources(kmock)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONSAFEPATH": "1",
        "SLOGUARD_POST_EVENTS": "false",
        "SLOGUARD_RESYNC_INTERVAL_S": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        str(SLOGUARD),
        "operator",
        "--all-namespaces",
        f"--apiserver-url={str(kmock.url).rstrip('/')}",
        f"--liveness=http://127.0.0.1:{port}/healthz",
        "--sidecar-image=registry.example.com/sloguard:7",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await kmock.post(
            "/apis/sloguard.dev/v1alpha1/sloclasses",
            json={"metadata": {"name": "interactive"}, "spec": {"ttft": "500ms", "tpot": "50ms"}},
        )
        await kmock.post(
            "/apis/sloguard.dev/v1alpha1/namespaces/default/inferencepools",
            json={
                "metadata": {"name": "cli", "namespace": "default"},
                "spec": {"model": "m", "engine": {"image": "vllm:x"}, "sloClasses": ["interactive"]},
            },
        )
        deadline = time.monotonic() + 25
        healthy = False
        async with aiohttp.ClientSession() as session:
            while not (healthy and live(kmock, DEPLOYMENTS, "default", "cli")):
                assert proc.returncode is None, "the operator exited early"
                assert time.monotonic() < deadline, "no Deployment or no liveness answer in time"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        healthy = response.status == 200
                except aiohttp.ClientError:
                    healthy = False
                await asyncio.sleep(0.1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, output.decode()[-3000:]
    # The pool pins no sidecar image, so the operator's flag decides it.
    deployment = live(kmock, DEPLOYMENTS, "default", "cli") or {}
    images = {c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images == {"engine": "vllm:x", "sidecar": "registry.example.com/sloguard:7"}
