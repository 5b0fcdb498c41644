"""Operating the sidecar over real sockets: config hot reload, drain, SIGTERM, metrics and health ports."""

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2
from sloguard_testing import grpc_stubs as stubs
from sloguard_testing.fake_vllm import FakeVllm
from sloguard_testing.sidecar_harness import CLASSES, running_sidecar, sidecar_config, wait_until

from sloguard.sidecar import service
from sloguard.sidecar.proto import sidecar_pb2 as pb

COMPLETION = {"model": "tiny", "prompt": "hello there", "max_tokens": 3}


async def _post(
    session: aiohttp.ClientSession, url: str, slo_class: str | None = None
) -> tuple[int, dict[str, str]]:
    headers = {"x-slo-class": slo_class} if slo_class else {}
    async with session.post(f"{url}/v1/completions", json=COMPLETION, headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_good_config_is_applied_and_bad_config_is_refused_keeping_the_old(tmp_path: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        assert (await _post(h.http, h.http_url, "gold"))[0] == 400
        gold = {"name": "gold", "ttft_s": 0.5, "tpot_s": 0.05, "priority": 20}
        h.write_config(sidecar_config(h.engine.url, classes=[*CLASSES, gold]))
        await wait_until(lambda: h.sidecar.lifecycle.config.class_named("gold") is not None, what="reload")
        assert (await _post(h.http, h.http_url, "gold"))[0] == 200
        assert h.sample("sloguard_config_reloads_total", result="applied") == 1

        for bad in (
            "{not json",
            json.dumps(sidecar_config(h.engine.url, classes=[])),
            json.dumps({"version": 2}),
        ):
            before = h.sample("sloguard_config_reloads_total", result="invalid")
            h.write_config(bad)

            def refused(b: float = before) -> bool:
                return h.sample("sloguard_config_reloads_total", result="invalid") == b + 1

            await wait_until(refused, what="refusal")
            assert h.sample("sloguard_config_last_reload_success") == 0
            assert (await _post(h.http, h.http_url, "gold"))[0] == 200  # the old configuration still serves
        h.write_config(sidecar_config(h.engine.url, classes=[*CLASSES, gold], http_port=1234))
        await wait_until(
            lambda: h.sample("sloguard_config_reloads_total", result="invalid") == 4, what="port refusal"
        )


async def test_reload_changes_limits_without_dropping_requests_in_flight(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()
    async with running_sidecar(tmp_path, fake) as h:
        pending = [asyncio.create_task(_post(h.http, h.http_url)) for _ in range(3)]
        await wait_until(lambda: fake.active == 3, what="three in the engine")
        h.write_config(
            sidecar_config(fake.url, limits={"max_queue_depth": 5, "min_in_flight": 1, "max_in_flight": 2})
        )
        await wait_until(lambda: h.sidecar.lifecycle.aimd.cap == 2, what="new cap")
        fake.release.set()
        assert [status for status, _ in await asyncio.gather(*pending)] == [200, 200, 200]
        assert h.total_ended() == 3


async def test_drain_finishes_in_flight_refuses_new_and_stops(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()
    async with running_sidecar(tmp_path, fake) as h:
        pending = [asyncio.create_task(_post(h.http, h.http_url)) for _ in range(2)]
        await wait_until(lambda: fake.active == 2, what="two in flight")
        async with h.http.get(f"{h.metrics_url}/readyz") as resp:
            assert resp.status == 200
        async with grpc.aio.insecure_channel(h.control_target) as channel:
            drained = await stubs.control(channel).Drain(pb.DrainRequest(grace_ms=10_000))
        assert drained.in_flight == 2
        async with h.http.get(f"{h.metrics_url}/readyz") as resp:
            assert resp.status == 503
        async with grpc.aio.insecure_channel(h.grpc_target) as channel:
            health = await stubs.health(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        status, headers = await _post(h.http, h.http_url)
        assert status == 503 and headers["x-sloguard-reason"] == "draining" and "Retry-After" in headers
        fake.release.set()
        assert [status for status, _ in await asyncio.gather(*pending)] == [200, 200]
        await asyncio.wait_for(h.sidecar.wait_stopped(), 10)
        assert h.outcomes() == {
            ("interactive", "completed", ""): 2,
            ("interactive", "rejected", "draining"): 1,
        }


async def test_drain_grace_expiry_ends_the_rest_as_failed(tmp_path: Path) -> None:
    fake = FakeVllm()
    fake.release.clear()
    async with running_sidecar(
        tmp_path, fake, limits={"max_queue_depth": 8, "min_in_flight": 1, "max_in_flight": 1}
    ) as h:
        pending = [asyncio.create_task(_post(h.http, h.http_url)) for _ in range(2)]
        await wait_until(
            lambda: fake.active == 1 and h.sidecar.lifecycle.queued == 1, what="one running, one queued"
        )
        h.sidecar.request_drain(0.1)
        await asyncio.wait_for(h.sidecar.wait_stopped(), 10)
        statuses = sorted(status for status, _ in await asyncio.gather(*pending))
        assert all(s >= 500 for s in statuses)
        assert h.outcomes() == {("interactive", "failed", "drain_timeout"): 2}
        await wait_until(lambda: fake.aborted == 1, what="upstream abort")


async def test_metrics_port_exposes_documented_series(tmp_path: Path, repo_root: Path) -> None:
    async with running_sidecar(tmp_path) as h:
        assert (await _post(h.http, h.http_url))[0] == 200
        async with h.http.get(f"{h.metrics_url}/metrics") as resp:
            text = await resp.text()
        async with h.http.get(f"{h.metrics_url}/healthz") as resp:
            assert resp.status == 200
        documented = (repo_root / "docs" / "metrics.md").read_text()
        types = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE")]
        exposed = {name for name in types if not name.endswith("_created")}  # prometheus_client's extras
        assert {n for n in exposed if n.startswith("sloguard_")} == exposed
        for name in exposed:
            assert f"`{name}" in documented, f"{name} is not documented in docs/metrics.md"
        assert (
            'sloguard_requests_total{outcome="completed",pool="test-pool",reason="",'
            'slo_class="interactive"} 1.0' in text
        )
        assert 'sloguard_slo_attainment_ratio{pool="test-pool",slo_class="interactive"} 1.0' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _sidecar_command(
    engine_url: str, ports: dict[str, int], tmp_path: Path, **kwargs: Any
) -> asyncio.subprocess.Process:
    """`sloguard sidecar` as a deployment runs it, on these ports, in front of `engine_url`."""
    config_path = tmp_path / "sidecar.json"
    config_path.write_text(json.dumps(sidecar_config(engine_url, "fcfs", **ports)))
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "sloguard"),
        "sidecar",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        env={**os.environ, "PYTHONSAFEPATH": "1"},
        **kwargs,
    )


@pytest.mark.timeout(60)
async def test_sloguard_sidecar_command_drains_on_sigterm(tmp_path: Path) -> None:
    fake = FakeVllm()
    await fake.start()
    try:
        ports = {"grpc_port": _free_port(), "http_port": _free_port(), "metrics_port": _free_port()}
        process = await _sidecar_command(fake.url, ports, tmp_path)
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{ports['metrics_port']}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(300):
                if await ready():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the sidecar never became ready")
            status, _ = await _post(session, f"http://127.0.0.1:{ports['http_port']}")
            assert status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        await fake.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("taken", ["grpc_port", "http_port", "metrics_port"])
async def test_a_port_in_use_ends_the_command_with_one_clear_error(tmp_path: Path, taken: str) -> None:
    # the demo once lost a run this way: another process took a port between its probe and the bind
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = {"grpc_port": _free_port(), "http_port": _free_port(), "metrics_port": _free_port()}
        ports[taken] = holder.getsockname()[1]
        unused_engine = "http://127.0.0.1:9"
        process = await _sidecar_command(unused_engine, ports, tmp_path, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    text = stderr.decode()
    assert process.returncode == 2, text
    assert f":{ports[taken]}" in text or f", {ports[taken]})" in text, text  # names the address
    # what had started before the failed bind was stopped: nothing left for the interpreter to complain of
    for noise in ("Traceback", "Unclosed", "Event loop is closed", "Task was destroyed"):
        assert noise not in text, text


async def test_the_in_flight_cap_backs_off_when_itl_exceeds_the_tightest_tpot(tmp_path: Path) -> None:
    fake = FakeVllm(token_interval_s=0.01)  # 10 ms per token against a 2 ms TPOT target
    async with running_sidecar(
        tmp_path, fake, limits={"max_queue_depth": 64, "min_in_flight": 2, "max_in_flight": 16}
    ) as h:
        h.sidecar.lifecycle.aimd.settings.window_s = 0.1
        body = {**COMPLETION, "max_tokens": 30}
        headers = {"x-slo-tpot-ms": "2"}

        async def stream() -> int:
            async with h.http.post(f"{h.http_url}/v1/completions", json=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        assert await asyncio.gather(*(stream() for _ in range(8))) == [200] * 8
        assert 2 <= h.sample("sloguard_in_flight_cap") < 16
        async with grpc.aio.insecure_channel(h.control_target) as channel:
            state = await stubs.control(channel).GetState(pb.GetStateRequest())
        assert state.in_flight_cap == h.sample("sloguard_in_flight_cap") and not state.cap_overridden


async def test_the_engine_probe_outlives_a_hanging_or_failing_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A health check that hangs past the probe's timeout, or raises, means down; the probe goes on and
    sees the engine back (before, one exception ended the probe task and readiness froze)."""
    monkeypatch.setattr(service, "PROBE_TIMEOUT_S", 0.05)
    async with running_sidecar(tmp_path) as h:
        client = h.sidecar.engine_client
        real_check = client.healthy
        mode = {"now": "hang"}
        calls = {"raise": 0}

        async def check(timeout_s: float = 2.0) -> bool:
            if mode["now"] == "hang":
                await asyncio.sleep(3600)
            if mode["now"] == "raise":
                calls["raise"] += 1
                raise RuntimeError("a bug in the check")
            return await real_check(timeout_s)

        monkeypatch.setattr(client, "healthy", check)
        await wait_until(lambda: not h.sidecar.ready(), what="a hanging check to count as down")
        mode["now"] = "raise"
        await wait_until(lambda: calls["raise"] >= 2, what="the probe to run on after a failing check")
        assert not h.sidecar.ready() and h.sample("sloguard_engine_up") == 0
        mode["now"] = "answer"
        await wait_until(h.sidecar.ready, what="the engine back")
        assert (await _post(h.http, h.http_url))[0] == 200


async def test_a_sidecar_started_before_its_engine_is_ready_soon_after_it(tmp_path: Path) -> None:
    """With the periodic probe effectively off (as `sloguard demo` runs it), a down engine is still
    re-checked every DOWN_PROBE_INTERVAL_S, so a sidecar that started first becomes ready without waiting
    out --health-interval-s."""
    fake = FakeVllm()
    fake.healthy = False
    async with running_sidecar(tmp_path, fake, health_interval_s=3600.0) as h:
        assert not h.sidecar.ready()
        fake.healthy = True
        await wait_until(h.sidecar.ready, timeout_s=10 * service.DOWN_PROBE_INTERVAL_S, what="ready")
        assert (await _post(h.http, h.http_url))[0] == 200
