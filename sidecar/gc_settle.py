"""Garbage-collector settings for the sidecar process, applied once it has started (sidecar/command.py).

The relay allocates a handful of short-lived objects per engine chunk (chunks, token events, byte strings),
thousands a second under load, while the process holds ~120k long-lived objects from start-up (the length
predictor's trees, numpy, aiohttp, grpc, prometheus). A full collection walks all of them: measured 38 ms
on an idle core of the 2-core benchmark machine, more when it shares the core with vLLM, and every
request streaming at that moment waits (the real-vLLM benchmark saw event-loop lags of 400 ms at p99).
`settle` moves everything alive after start-up into the permanent generation (`gc.freeze`: never scanned
again; a full collection then costs ~0 ms) and makes young collections rarer (`gen0_threshold`), so the
per-chunk garbage is swept in fewer, equally cheap passes. Reference cycles are still collected.
"""

import gc

GEN0_THRESHOLD = 10_000
"""Allocations minus deallocations between young collections (CPython's default is 700)."""


def settle(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """Collect once, freeze what survives start-up, and raise the young-generation threshold."""
    if gen0_threshold < 1:
        raise ValueError(f"gen0_threshold must be >= 1, got {gen0_threshold}")
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
