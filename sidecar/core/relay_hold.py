"""How long the relay may leave a streaming request's next tokens in the socket before reading them.

Called by the lifecycle (sidecar/lifecycle.py) after every engine read of a request past its first token;
the engine client (sidecar/engine_client.py) then stops reading that connection for the time returned, so
the tokens the engine streams meanwhile arrive in one read and leave in one write to the client.

Why: in front of real vLLM on a CPU-bound host, the relay's cost is per read and per write, not per byte:
one socket read, one parse, one bookkeeping pass and one loopback send for every token of every stream
(issue 16: a profile of the pass-through sidecar at half the knee spent about half its CPU there, and that
CPU is taken from the engine). Reading a stream every few tens of milliseconds instead of every token cuts
that work by the number of tokens the engine makes meanwhile.

What it must not cost: the first token is never held (TTFT is what the request waited for), and the hold
never makes the request miss its TPOT or its deadline. The worst case is that the request's last token
comes right after the hold begins; it then reaches the client `hold` late. The mean time per output token
the client measures, (last - first) / (tokens - 1), stays within `tpot_share` of the class's TPOT if

    (elapsed_since_first + hold) / tokens_so_far <= tpot_share * tpot

(the last token is at least the next one, so tokens - 1 >= tokens_so_far), and the end stays
`tpot_share` inside the deadline for the same reason. A stream already running near its TPOT gets no hold;
one with slack gets up to `hold_max_s` (holds under `hold_min_s` are not worth their own cost). Later
chunks come in bursts of at most `hold_max_s`, which no reader of a token stream can tell from a busy
engine (vLLM itself packs tokens under load).

When (`only_while_queued`, on by default): only while the sidecar holds requests back (its last release round
left some queued; arrivals awaiting their round do not count, so a pass-through sidecar never holds a stream).
A hold trades a stream's smoothness for CPU, and the CPU is worth something only while something waits for it:
with requests held back it goes to releasing them; with none, it goes nowhere, while the bursts cost the tight
streams jitter on a loaded host. Measured in front of real vLLM on a 2-core host (paired pass-through
sidecars, 3 rounds at half the knee): 113 interactive TPOT misses with holds against 1 without (goodput 99.9 /
142.4 / 127.7 against 100.1 / 149.1 / 128.9 req/s, direct 100.1 / 150.7 / 129.8), while at 2x the knee the
sloguard sidecar, whose queue is never empty there, served 139.2 / 146.2 req/s with holds against 129.7 /
145.5 without.

Where (the lifecycle decides): only on streams the engine does not pack itself. Where vLLM sends a request's
tokens several at a time (its per-request `stream_interval`, sidecar/core/stream_interval.py), a hold on top
cost more CPU than it saved: in front of real vLLM with packing on, 3 paired rounds at 1x and 2x the knee,
sloguard with holds served 139.7 / 208.8 / 178.4 and 230.5 / 197.9 / 187.2 req/s against 161.7 / 211.7 /
178.3 and 201.4 / 237.3 / 204.3 without, at 0.033 against 0.031 s of sidecar CPU per 1,000 tokens (1x).
The hold stays for engines that cannot pack (an older vLLM, or packing switched off).

Pure: no clock, no I/O; the caller passes the times and the queue's length.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RelayHold:
    hold_max_s: float  # the longest a stream's tokens wait in the socket; 0 switches holding off
    tpot_share: float = 0.5  # the share of the TPOT (and of the time left to the deadline) a hold may use
    hold_min_s: float = 0.002  # shorter holds cost more (a timer, two poller changes) than they save
    only_while_queued: bool = True  # hold only while the caller holds requests back (`queued` > 0)

    def __post_init__(self) -> None:
        if not self.hold_max_s >= 0.0:
            raise ValueError(f"hold_max_s must be >= 0, got {self.hold_max_s}")
        if not self.hold_min_s >= 0.0:
            raise ValueError(f"hold_min_s must be >= 0, got {self.hold_min_s}")
        if not 0.0 < self.tpot_share <= 1.0:
            raise ValueError(f"tpot_share must be in (0, 1], got {self.tpot_share}")

    @property
    def enabled(self) -> bool:
        return self.hold_max_s > 0.0

    def hold_s(
        self,
        *,
        tpot_s: float,
        output_tokens: int,
        since_first_token_s: float,
        until_deadline_s: float | None = None,
        queued: int | None = None,
    ) -> float:
        """Seconds the next read may wait; 0 before the first token, where the request has no slack, and
        (`only_while_queued`) while the caller holds no request back (`queued`: how many its last release
        round left queued; None: unknown, as if some)."""
        if not self.enabled or output_tokens < 1 or since_first_token_s < 0.0:
            return 0.0
        if self.only_while_queued and queued is not None and queued <= 0:
            return 0.0
        room_s = self.tpot_share * tpot_s * output_tokens - since_first_token_s
        if until_deadline_s is not None:
            room_s = min(room_s, self.tpot_share * until_deadline_s)
        hold_s = min(self.hold_max_s, room_s)
        return hold_s if hold_s >= self.hold_min_s else 0.0
