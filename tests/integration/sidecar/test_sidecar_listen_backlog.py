"""The sidecar's HTTP listener queues a burst of new connections while its event loop is busy.

Measured in front of real vLLM (bench/real_vllm.py): clients that open one connection per request, arriving
in bursts while the sidecar's loop was busy, overflowed aiohttp's default listen backlog of 128; each
dropped SYN cost its client a 1 s retransmit (sidecar/service.py LISTEN_BACKLOG).
"""

import socket
import threading
from pathlib import Path

from sloguard_testing.sidecar_harness import running_sidecar

BURST = 400  # well past aiohttp's default backlog (128), well under ours (4096) and the usual somaxconn


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 4096


def _connect_burst(port: int, connected: list[socket.socket], timeout_s: float) -> None:
    for _ in range(BURST):
        s = socket.socket()
        s.settimeout(timeout_s)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        connected.append(s)


async def test_a_burst_of_connections_waits_in_the_queue_while_the_loop_is_busy(tmp_path: Path) -> None:
    expected = min(BURST, _somaxconn())
    async with running_sidecar(tmp_path) as h:
        connected: list[socket.socket] = []
        # a dropped SYN is retried after 1 s: a connect that has not completed in 0.5 s was dropped
        burst = threading.Thread(
            target=_connect_burst, args=(h.sidecar.http_port, connected, 0.5), daemon=True
        )
        burst.start()
        burst.join(timeout=30.0)  # blocks the event loop, as a busy one would: nothing is accepted meanwhile
        try:
            assert not burst.is_alive()
            assert len(connected) >= expected - 1  # the kernel queues backlog + 1
        finally:
            for s in connected:
                s.close()
