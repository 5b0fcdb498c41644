"""A TCP relay between a sidecar and its engine that a test can cut, hold or take down (asyncio, loopback).

The end-to-end tests (tests/e2e/test_sidecar_e2e_engines.py) point a sidecar's engine URL at an
`EngineLink`, so they can simulate the engine dying mid-stream, or going away and coming back, without
killing the engine process they share with other tests (real vLLM takes a minute to start):

  `cut()`   closes every relayed connection on both sides at once (the engine "died" mid-stream);
  `down()`  cuts and stops listening, so new connections are refused; `up()` listens again, same port;
  `hold()`  freezes each response after its first SSE event (`data: ...` and the blank line after it):
            the link stops reading from the engine there, so the stream stays open and started,
            deterministically, until the test cuts it (`cut()`) or lets it go on (`release()`: the frozen
            responses resume where they stopped, nothing lost).
  `drop_next(n)`  closes the connection of each of the next n requests (new or reused connection) as
            the request arrives, before relaying a byte of it (a reset before the engine read it).
  `close_reused()`  from then on, a connection that already carried a response is closed when the next
            request arrives on it, instead of relaying it: the engine closed its idle keep-alive
            connection just as the sidecar sent a request on it.

Bytes are relayed unchanged; the link never parses HTTP beyond finding the first SSE event. Real vLLM does
not back-pressure (reference/vllm-behaviour.md §3.8): it keeps generating a frozen stream into its buffers.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

SSE_EVENT = b"\ndata:"  # an SSE event starts a line (after the chunk-size line)
SSE_EVENT_END = b"\n\n"
READ_BYTES = 1 << 16


@dataclass(eq=False)
class _Pair:
    """One relayed connection: the sidecar's side and the engine's side."""

    client: asyncio.StreamWriter
    engine: asyncio.StreamWriter
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)
    seen_event: bool = False  # a held response has shown `data:`; it freezes at the next blank line
    answered: bool = False  # response bytes have gone to the client
    requesting: bool = False  # the client has sent bytes of a request not answered yet
    frozen: bool = False  # stopped after its first event; resumes on release

    def abort(self) -> None:
        for writer in (self.client, self.engine):
            writer.transport.abort()


class EngineLink:
    """Relays 127.0.0.1:`port` to `engine_host`:`engine_port`; start with `await link.start()`."""

    def __init__(self, engine_host: str, engine_port: int) -> None:
        self.engine_host = engine_host
        self.engine_port = engine_port
        self.port = 0
        self.accepted = 0  # connections accepted since start (each one relayed to the engine)
        self.dropped = 0  # connections closed by `drop_next` or `close_reused`
        self._drop = 0
        self._close_reused = False
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._holding = False
        self._released = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()  # the server's per-connection _relay tasks

    @classmethod
    def to_url(cls, engine_url: str) -> "EngineLink":
        host, _, port = engine_url.removeprefix("http://").rstrip("/").rpartition(":")
        return cls(host, int(port))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def frozen_responses(self) -> int:
        """Open connections whose response is frozen by `hold` (the sidecar has not given them up)."""
        return sum(1 for pair in self._pairs if pair.frozen)

    async def start(self) -> None:
        await self.up()

    async def up(self) -> None:
        """Listen (again): the first call picks an ephemeral port, later calls reuse it."""
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Refuse new connections and cut the open ones: to the sidecar the engine is gone."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.cut()

    async def cut(self) -> None:
        """Close every relayed connection on both sides now, as a dying engine would; disarms `hold`."""
        self._holding = False
        pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
        for pair in pairs:
            for task in pair.tasks:
                task.cancel()
            for task in pair.tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pairs.difference_update(pairs)

    def hold(self) -> None:
        """Freeze every response after its first SSE event, until `cut()` or `release()`."""
        self._holding = True
        self._released.clear()

    def release(self) -> None:
        """Stop freezing responses; the frozen ones go on from where they stopped."""
        self._holding = False
        self._released.set()

    def drop_next(self, requests: int = 1) -> None:
        """Close the connection of each of the next `requests` requests as it arrives, relaying none of it."""
        self._drop += requests

    def close_reused(self) -> None:
        """Close, instead of relaying, each request that arrives on a connection that was answered before."""
        self._close_reused = True

    async def stop(self) -> None:
        """Down, and every connection handler finished (none is left for the event loop to cancel)."""
        await self.down()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            engine_reader, engine_writer = await asyncio.open_connection(self.engine_host, self.engine_port)
        except OSError:
            client_writer.transport.abort()  # engine not listening: the sidecar sees a broken connection
            return
        pair = _Pair(client_writer, engine_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(client_reader, engine_writer, pair, response=False)),
            asyncio.create_task(self._pump(engine_reader, client_writer, pair, response=True)),
        ]
        try:  # one side closed (or the link cut): close the other, as a plain TCP proxy does
            await asyncio.wait(pair.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pair.abort()
            for task in pair.tasks:
                task.cancel()
            await asyncio.gather(*pair.tasks, return_exceptions=True)
            self._pairs.discard(pair)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, *, response: bool
    ) -> None:
        try:
            while data := await reader.read(READ_BYTES):
                if not response and not pair.requesting:  # the first bytes of a request
                    pair.requesting = True
                    if self._drops(pair):
                        pair.abort()
                        return
                if response:
                    pair.answered, pair.requesting = True, False
                if response and (self._holding or pair.seen_event):
                    now, later = self._split_at_first_event(pair, data)
                    await self._write(writer, now)
                    if later is None:  # not frozen (yet)
                        continue
                    pair.frozen = True
                    await self._released.wait()
                    pair.frozen = pair.seen_event = False
                    data = later
                await self._write(writer, data)
        except (ConnectionError, OSError):
            pass

    def _drops(self, pair: _Pair) -> bool:
        """Whether the request now arriving on `pair` is to be dropped (and count it)."""
        if self._close_reused and pair.answered:
            self.dropped += 1
            return True
        if self._drop:
            self._drop -= 1
            self.dropped += 1
            return True
        return False

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(data)
            await writer.drain()

    @staticmethod
    def _split_at_first_event(pair: _Pair, data: bytes) -> tuple[bytes, bytes | None]:
        """(bytes to forward now, bytes kept back): kept back is None until the first event has ended."""
        start = 0
        if not pair.seen_event:
            at = data.find(SSE_EVENT)
            if at < 0:
                return data, None
            pair.seen_event = True
            start = at
        end = data.find(SSE_EVENT_END, start)
        if end < 0:
            return data, None
        cut_at = end + len(SSE_EVENT_END)
        return data[:cut_at], data[cut_at:]
