"""How many output tokens the engine may pack into one streamed chunk of a request (vLLM's per-request
`stream_interval`), and the pace of the engine's tokens that bounds it.

Called by the lifecycle (sidecar/lifecycle.py): it feeds `TokenPace` the time and token count of every
engine read past a stream's first token, and asks `StreamInterval.tokens_per_chunk` once per request, when
it sends the request to the engine (sidecar/engine_client.py stamps the answer into the body).

Why: in front of real vLLM on a CPU-bound host the cost of streaming is per chunk, not per token: for every
token of every running request vLLM's API server builds, serialises and sends a chunk, and the sidecar
reads, parses and relays it (issue 16: the sidecar's own CPU is mostly its event loop and the write to the
client, once per chunk). vLLM can send a request's tokens N at a time; the first and the last chunk always
go out at once, so TTFT, the end of the stream and the mean time per output token a client measures,
(last - first) / (tokens - 1), do not change.

What it must not cost: the SLO's TPOT is the mean inter-token time (api/sloclass.py), and packing leaves
it as it is, because the first and the last token go out at once; TTFT and the end-to-end deadline do not
move either. What changes is how smooth the stream is: a token waits for the rest of its chunk, at most
(N - 1)*ITL, and N is the largest with (N - 1)*ITL <= `wait_max_s` (25 ms by default, the same bound as
the relay hold's bursts, sidecar/core/relay_hold.py: no reader of a token stream can tell it from a busy
engine). ITL is `TokenPace`'s cautious estimate (it rises at once with a slow read and falls slowly);
until the pace is known N is 1.

Measured against a stricter bound, no token later than a stream at exactly its class's TPOT pace would
bring it (N*ITL <= TPOT): in front of real vLLM (knee 192 req/s, 3 paired rounds, 2-core host) that bound
left the tightest class unpacked (5.5 ms TPOT, 3.5-4 ms ITL at the knee) and gave sloguard 129.1 / 172.3
/ 152.4 req/s at 1x the knee, against 148.5 / 213.0 / 175.7 with the wait bound alone (direct 161.1 /
220.9 / 193.1); the sidecar's CPU per 1,000 tokens fell 0.042 -> 0.032 s and vLLM's API server's 0.051 ->
0.042 s. At half the knee both were level with direct.

Pure: no clock, no I/O; the caller passes times and counts.
"""

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StreamInterval:
    wait_max_s: float = 0.025  # the longest a token may wait in the engine for its chunk; 0 switches it off
    tokens_max: int = 16  # the most tokens of one chunk

    def __post_init__(self) -> None:
        if not self.wait_max_s >= 0.0:
            raise ValueError(f"wait_max_s must be >= 0, got {self.wait_max_s}")
        if self.tokens_max < 1:
            raise ValueError(f"tokens_max must be >= 1, got {self.tokens_max}")

    @property
    def enabled(self) -> bool:
        return self.wait_max_s > 0.0 and self.tokens_max > 1

    def tokens_per_chunk(self, itl_s: float | None) -> int:
        """The largest N with (N - 1)*itl_s <= wait_max_s, at most `tokens_max`; 1 when switched off or
        while the pace is unknown (`itl_s` None)."""
        if not self.enabled or itl_s is None or not itl_s > 0.0:
            return 1
        return max(1, min(self.tokens_max, 1 + math.floor(self.wait_max_s / itl_s)))


@dataclass(slots=True)
class TokenPace:
    """A cautious running estimate of the engine's time per output token, from the relay's reads of every
    stream: each read past a stream's first token brings `tokens` made in `interval_s` since that stream's
    previous read. A slower pace is taken at once (`rise`), a faster one slowly (`fall`, per token), so a
    burst of fast reads after a stall does not pack chunks for a pace that has not lasted. Unknown (None)
    until `min_tokens` tokens were observed."""

    rise: float = 0.5  # share of the way to a slower observation taken at once
    fall: float = 0.01  # share per token of the way to a faster one
    min_tokens: int = 32
    _itl_s: float = field(default=0.0, init=False)
    _tokens: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (0.0 < self.rise <= 1.0 and 0.0 < self.fall <= 1.0):
            raise ValueError(f"rise and fall must be in (0, 1], got {self.rise}, {self.fall}")

    @property
    def itl_s(self) -> float | None:
        return self._itl_s if self._tokens >= self.min_tokens else None

    def observe(self, interval_s: float, tokens: int) -> None:
        if tokens < 1 or not interval_s >= 0.0 or math.isinf(interval_s):
            return
        per_token_s = interval_s / tokens
        if self._tokens == 0:
            self._itl_s = per_token_s
        elif per_token_s > self._itl_s:
            self._itl_s += self.rise * (per_token_s - self._itl_s)
        else:
            self._itl_s += (1.0 - (1.0 - self.fall) ** tokens) * (per_token_s - self._itl_s)
        self._tokens += tokens
