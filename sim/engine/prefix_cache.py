"""vLLM's automatic prefix caching for the simulated engine: block keys, reference counts, LRU eviction.

Sits inside `sloguard.sim.engine`, below the scheduler: the engine owns one `PrefixCache` when
`EngineConfig.prefix_caching` is on and hands it to each iteration's `SchedulingContext`, which looks a
waiting request up at admission (`lookup`), takes the hit blocks and names the full prompt blocks it
allocates (`touch`, `register`), and gives blocks back on finish, abort or preemption (`release`).

Semantics (vLLM 0.32 `v1/core/block_pool.py`, `kv_cache_manager.py`, `kv_cache_utils.py`):

- A block's key chains its parent's, so a hit is always a leading run of blocks. Only full blocks are
  named; a request's last partial block never hits.
- A hit is at most `num_tokens - 1` tokens (vLLM always recomputes the last token for its logits),
  rounded down to whole blocks, and skips that many tokens of prefill compute.
- Blocks are shared by reference count. A block whose count drops to 0 stays cached but counts as
  free; a new allocation takes never-named blocks first (vLLM prepends unnamed freed blocks to its
  free queue) and then evicts cached free blocks least-recently-freed first; a request frees its blocks
  tail first (deepest prefix evicted first). A hit on a free cached block takes it out of the free
  pool (it counts against the allocation, as in vLLM's `get_num_blocks_to_allocate`).
- Statistics in tokens, as vLLM's `vllm:prefix_cache_queries_total` / `_hits_total`: recorded once per
  admission, for requests never preempted (vLLM records preempted requests separately).

What a request's blocks are called: a request that carries prefix information (`SimRequest.prefix_hashes`
with `prefix_block_tokens`, such as Mooncake's `hash_ids` of 512-token blocks, or `prompt_token_ids`)
names each full prompt block by the chained hash of the hash blocks up to the one holding its last token
and its index. Blocks past that information (output tokens, prompt tokens the hashes do not cover) get
names unique to the request, so after a preemption a request hits its own earlier blocks, as in vLLM,
and they occupy the LRU like vLLM's hashed output blocks. A request with no prefix information takes
no part: it neither hits nor leaves cached blocks (its blocks are anonymous), so workloads without
hashes run exactly as without prefix caching.

Not modelled: vLLM keeps a second physical copy when two requests compute the same block at once (both
missed it); here the later one's copy stays anonymous and is freed as a never-named block.
"""

from collections import OrderedDict
from collections.abc import Sequence

BlockKey = int  # hash((chain hash, index)) for shared prompt blocks; hash((uid, index, 0)) for unique ones

_ROOT = 0x51_06_AD  # the parent of a request's first hash block


def chain_hashes(block_hashes: Sequence[int]) -> list[int]:
    """Chain per-block hashes so that equal values mean equal prefixes (vLLM's parent-hash chaining)."""
    out: list[int] = []
    parent = _ROOT
    for h in block_hashes:
        parent = hash((parent, h))
        out.append(parent)
    return out


def token_block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """One hash per full block of token ids (the partial last block is never cached)."""
    return [
        hash(tuple(token_ids[k * block_size : (k + 1) * block_size]))
        for k in range(len(token_ids) // block_size)
    ]


class SeqPrefix:
    """One request's prefix state: how its blocks are named, which cached blocks it holds, and how
    far its prompt blocks have been named (`cursor`, in blocks)."""

    __slots__ = ("block_size", "chain", "cursor", "hash_block_tokens", "held", "keys", "named_blocks", "uid")

    def __init__(
        self, chain: list[int], hash_block_tokens: int, prompt_tokens: int, block_size: int, uid: int
    ):
        self.chain = chain
        self.hash_block_tokens = hash_block_tokens
        self.block_size = block_size
        self.uid = uid
        # full prompt blocks whose last token the hashes cover: these can be shared
        covered = min(prompt_tokens, len(chain) * hash_block_tokens)
        self.named_blocks = covered // block_size
        self.keys: list[BlockKey] = []  # the names of blocks 0, 1, ..., computed as far as needed
        self.held: list[BlockKey] = []  # keys this request holds a reference on, in block order
        self.cursor = 0  # blocks [0, cursor) are held (hit or registered) or were skipped as duplicates

    def keys_upto(self, count: int) -> list[BlockKey]:
        """The list of block keys, holding at least the first `count`."""
        keys = self.keys
        i = len(keys)
        if i < count:
            bs, hbt, chain, named = self.block_size, self.hash_block_tokens, self.chain, self.named_blocks
            keys.extend(hash((chain[((j + 1) * bs - 1) // hbt], j)) for j in range(i, min(count, named)))
            keys.extend(hash((self.uid, j, 0)) for j in range(max(i, named), count))
        return keys

    def key(self, index: int) -> BlockKey:
        return self.keys_upto(index + 1)[index]


class PrefixCache:
    """The cached blocks of one engine: reference counts by key and the LRU of free cached blocks.

    The engine keeps counting used blocks (`usable - free`); a free cached block counts as free. The
    cache keeps at most `free` blocks in its LRU: `evict_to(free)` drops the least recently freed ones,
    which is exactly the set a real free queue would have handed out by now (never-named blocks go
    first), so eviction can be settled lazily, before the next lookup, registration or free.
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.ref: dict[BlockKey, int] = {}  # every cached block; 0 = free (then also in `lru`)
        self.lru: OrderedDict[BlockKey, None] = OrderedDict()  # free cached blocks, first = evicted first
        self.queries_tokens = 0
        self.hits_tokens = 0
        self.evictions = 0

    def evict_to(self, free_blocks: int) -> None:
        lru = self.lru
        while len(lru) > free_blocks:
            key, _ = lru.popitem(last=False)
            del self.ref[key]
            self.evictions += 1

    def lookup(self, prefix: SeqPrefix, num_tokens: int, free_blocks: int) -> tuple[int, int]:
        """(hit blocks, how many of them are free now) for a request with `num_tokens` tokens and no
        computed ones. No side effects but settling evictions."""
        self.evict_to(free_blocks)
        limit = (num_tokens - 1) // self.block_size
        if limit <= 0:
            return 0, 0
        # a request that cannot be admitted is looked up again every iteration: walk in C, not Python
        counts = list(map(self.ref.get, prefix.keys_upto(limit)[:limit]))
        try:
            hit = counts.index(None)
        except ValueError:
            hit = limit
        return hit, counts[:hit].count(0)

    def touch(self, prefix: SeqPrefix, hit_blocks: int) -> None:
        """Take references on the first `hit_blocks` blocks (just looked up; free ones leave the LRU)."""
        ref, lru, held = self.ref, self.lru, prefix.held
        for key in prefix.keys_upto(hit_blocks)[:hit_blocks]:
            count = ref[key]
            if count == 0:
                del lru[key]
            ref[key] = count + 1
            held.append(key)
        prefix.cursor = hit_blocks

    def record(self, num_tokens: int, hit_blocks: int) -> None:
        self.queries_tokens += num_tokens
        self.hits_tokens += hit_blocks * self.block_size

    def register(self, prefix: SeqPrefix, computed_tokens: int, free_blocks: int) -> None:
        """Name the full prompt blocks up to `computed_tokens` (allocated this iteration) so that later
        requests hit them. A key already cached stays with its first owner (see the module notes)."""
        end = min(computed_tokens // self.block_size, prefix.named_blocks)
        i = prefix.cursor
        if i >= end:
            return
        self.evict_to(free_blocks)
        ref, held = self.ref, prefix.held
        keys = prefix.keys_upto(end)
        for j in range(i, end):
            key = keys[j]
            if key not in ref:
                ref[key] = 1
                held.append(key)
        prefix.cursor = end

    def release(
        self, prefix: SeqPrefix | None, num_blocks: int, computed_tokens: int, free_blocks: int
    ) -> int:
        """Drop a request's `num_blocks` blocks (finish, abort or preemption); `free_blocks` is the free
        count before. Its full computed blocks stay cached, tail first in the LRU (a request without
        prefix information leaves nothing cached); returns how many blocks became free."""
        self.evict_to(free_blocks)
        if prefix is None:
            return num_blocks
        ref, lru = self.ref, self.lru
        held = prefix.held
        full = min(computed_tokens // self.block_size, num_blocks)
        freed = num_blocks - len(held)  # anonymous blocks: the partial tail, duplicates
        # the request's own full blocks past its shared prompt become cached (unique names), so that
        # it hits them after a preemption and they age in the LRU like vLLM's hashed output blocks
        own: list[BlockKey] = []
        if full > prefix.cursor:
            held_set = set(held)
            own = [
                k for k in prefix.keys_upto(full)[prefix.cursor : full] if k not in ref and k not in held_set
            ]
        freed_named: list[BlockKey] = []
        for key in reversed(own):
            ref[key] = 0
            freed_named.append(key)
        freed -= len(own)
        for key in reversed(held):
            count = ref[key] - 1
            ref[key] = count
            if count == 0:
                freed_named.append(key)
        for key in freed_named:
            lru[key] = None
        prefix.held = []
        prefix.cursor = 0
        return freed + len(freed_named)

    def free_cached_blocks(self) -> int:
        return len(self.lru)

    def used_cached_blocks(self) -> int:
        return len(self.ref) - len(self.lru)
