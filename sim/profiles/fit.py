"""`sloguard sim fit-profile`: fit step-time profiles from Vidur's measured per-operator GPU timings.

Reads shared/data/vidur_profiles (MIT, microsoft/vidur; see that folder's README) and writes the JSON
profiles shipped in this package. Offline tooling: called by the CLI, never by the engine.

Llama-3-8B on A100 is fitted directly. Vidur has no Llama-3-8B H100 data, so the H100 profile is
*derived*: the A100 linear-op table is scaled per token count by the measured H100/A100 ratio of the
same ops for Llama-2-7B (same hidden size 4096), and the attention terms by the HBM bandwidth ratio
(decode, memory-bound) or by the large-token linear-op ratio (prefill, compute-bound). The profile
header says so.
"""

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PROFILE_VERSION = 1
LINEAR_OPS = [
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
]
A100_HBM_TB_S = 2.039  # A100 80GB SXM
H100_HBM_TB_S = 3.35  # H100 80GB SXM
LLAMA3_8B_KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2  # layers * (K,V) * kv heads * head dim * fp16
LLAMA3_8B_WEIGHT_BYTES = 16_060_522_496
GPU_MEMORY_BYTES = 80 * 1024**3
GPU_MEMORY_UTILIZATION = 0.9
ACTIVATION_RESERVE_BYTES = 4 * 1024**3  # peak activations + CUDA graphs, a round assumption

SANITY_SOURCES = [
    "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23, Llama-3.1-8B-Instruct BF16, "
    "A100 40GB: ~75 tok/s single-request decode, i.e. TPOT ~13 ms; 1024-in/128-out concurrency sweep 1..64)",
    "https://wk.788897.xyz/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md (Lambda Labs vLLM "
    "benchmark, A100-80GB-SXM vs H100-80GB-SXM: H100 ~2x throughput and lower latency)",
    "https://www.morphllm.com/vllm-benchmarks (Llama 3.1 8B BF16 on 1x H100 80GB: ~12,500 output tok/s peak)",
    "https://blog.ori.co/benchmarking-llama-3.1-8b-instruct-on-nvidia-h100-and-a100-chips-with-the-vllm-"
    "inferencing-engine (TTFT/ITL of Llama 3.1 8B on H100 SXM and A100 with vLLM)",
]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def linear_table(mlp_csv: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-layer ms of all linear ops (TP1) against the batch's token count; duplicates averaged."""
    by_tokens: dict[int, list[float]] = defaultdict(list)
    for row in _read(mlp_csv):
        if row["num_tensor_parallel_workers"] != "1":
            continue
        total = sum(float(row[f"time_stats.{op}.median"]) for op in LINEAR_OPS)
        by_tokens[int(row["num_tokens"])].append(total)
    tokens = np.array(sorted(by_tokens), dtype=np.float64)
    ms = np.array([float(np.mean(by_tokens[int(t)])) for t in tokens])
    return tokens, ms


def mape(predicted: npt.NDArray[np.float64], measured: npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured))


def thin_table(
    tokens: npt.NDArray[np.float64], ms: npt.NDArray[np.float64], max_tokens: int
) -> tuple[list[int], list[float], float]:
    """Keep every other point up to max_tokens (and the ends); error = MAPE on the points left out."""
    keep = [i for i in range(len(tokens)) if tokens[i] <= max_tokens]
    kept = [i for n, i in enumerate(keep) if n % 2 == 0 or i == keep[-1]]
    left = [i for i in keep if i not in set(kept)]
    interp = np.interp(tokens[left], tokens[kept], ms[kept])
    return [int(tokens[i]) for i in kept], [round(float(ms[i]), 6) for i in kept], mape(interp, ms[left])


def fit_attention(attention_csv: Path) -> dict[str, Any]:
    rows = [r for r in _read(attention_csv) if r["num_tensor_parallel_workers"] == "1"]
    dec = [r for r in rows if r["is_prefill"] == "False"]
    pre = [r for r in rows if r["is_prefill"] == "True"]
    # decode: const + per_kv * (batch * kv)
    x = np.array([int(r["batch_size"]) * int(r["kv_cache_size"]) for r in dec], dtype=np.float64)
    y = np.array([float(r["time_stats.attn_decode.median"]) for r in dec])
    a = np.vstack([np.ones_like(x), x]).T
    (c0, c1), *_ = np.linalg.lstsq(a, y, rcond=None)
    dec_err = mape(a @ np.array([c0, c1]), y)
    # prefill: p1*c + p2*c^2 + p3*c*kv
    c = np.array([int(r["prefill_chunk_size"]) for r in pre], dtype=np.float64)
    kv = np.array([int(r["kv_cache_size"]) for r in pre], dtype=np.float64)
    yp = np.array([float(r["time_stats.attn_prefill.median"]) for r in pre])
    ap = np.vstack([c, c * c, c * kv]).T
    (p1, p2, p3), *_ = np.linalg.lstsq(ap / yp[:, None], np.ones_like(yp), rcond=None)  # relative error
    pre_err = mape(ap @ np.array([p1, p2, p3]), yp)
    # kv-cache save in prefill rows: per token
    ys = np.array([float(r["time_stats.attn_kv_cache_save.median"]) for r in pre])
    per_tok = float(np.sum(ys * c) / np.sum(c * c))
    save_err = mape(per_tok * c, ys)
    return {
        "decode_attention": {"const_ms": float(c0), "per_kv_token_ms": float(c1)},
        "prefill_attention": {
            "per_token_ms": float(p1),
            "per_token_sq_ms": float(p2),
            "per_token_ctx_ms": float(p3),
        },
        "kv_save_ms_per_token": per_tok,
        "fit_error": {
            "decode_attention_mape": round(dec_err, 4),
            "decode_attention_rows": len(dec),
            "prefill_attention_mape": round(pre_err, 4),
            "prefill_attention_rows": len(pre),
            "kv_save_mape": round(save_err, 4),
        },
    }


def fit_cpu_overhead(cpu_csv: Path) -> dict[str, Any]:
    """Per-iteration CPU time (schedule + sampler + prepare inputs + process outputs), Llama-2-7B TP1."""
    rows = [
        r
        for r in _read(cpu_csv)
        if r["model_name"].endswith("Llama-2-7b-hf") and r["tensor_parallel_degree"] == "1"
    ]
    parts = ["schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs"]
    b = np.array([int(r["batch_size"]) for r in rows], dtype=np.float64)
    y = np.array([sum(float(r[f"{p}_median"]) for p in parts) for r in rows])
    a = np.vstack([np.ones_like(b), b]).T
    (c0, c1), *_ = np.linalg.lstsq(a, y, rcond=None)
    return {
        "base_ms": float(c0),
        "per_seq_ms": float(c1),
        "mape": round(mape(a @ np.array([c0, c1]), y), 4),
        "rows": len(rows),
    }


def default_num_gpu_blocks(block_size: int) -> int:
    free = GPU_MEMORY_BYTES * GPU_MEMORY_UTILIZATION - LLAMA3_8B_WEIGHT_BYTES - ACTIVATION_RESERVE_BYTES
    return int(free // (LLAMA3_8B_KV_BYTES_PER_TOKEN * block_size))


def build_profiles(vidur_dir: Path) -> dict[str, dict[str, Any]]:
    l3 = vidur_dir / "compute/a100/meta-llama/Meta-Llama-3-8B"
    tok, ms = linear_table(l3 / "mlp.csv")
    attn = fit_attention(l3 / "attention.sampled_rows.csv")
    cpu = fit_cpu_overhead(vidur_dir / "a100/cpu_overheads.csv")
    lin_tokens, lin_ms, lin_err = thin_table(tok, ms, 16384)
    base_model: dict[str, Any] = {
        "layers": 32,
        "linear_ms_per_layer": {"num_tokens": lin_tokens, "ms": lin_ms},
        "kv_save_ms_per_token": attn["kv_save_ms_per_token"],
        "decode_attention": attn["decode_attention"],
        "prefill_attention": attn["prefill_attention"],
        "cpu_overhead": {"base_ms": cpu["base_ms"], "per_seq_ms": cpu["per_seq_ms"]},
    }
    fit_error = {
        "linear_table_interp_mape": round(lin_err, 4),
        **attn["fit_error"],
        "cpu_overhead_mape": cpu["mape"],
    }
    common = {
        "profile_version": PROFILE_VERSION,
        "model": "meta-llama/Meta-Llama-3-8B",
        "block_size": 16,
        "default_num_gpu_blocks": default_num_gpu_blocks(16),
        "max_model_len": 8192,
        "sanity_sources": SANITY_SOURCES,
    }
    provenance = (
        "Fitted by `sloguard sim fit-profile` from Vidur's measured per-operator timings (microsoft/vidur "
        "@7d47513, MIT, Copyright (c) Microsoft Corporation; Agrawal et al., MLSys 2024), as copied to "
        "shared/data/vidur_profiles: linear ops from compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv (TP1 "
        "medians), attention and kv-cache save from attention.sampled_rows.csv (TP1, FlashInfer), CPU "
        "overhead from a100/cpu_overheads.csv (Llama-2-7B TP1; sarathi engine). default_num_gpu_blocks: "
        f"{GPU_MEMORY_UTILIZATION} x 80 GiB - weights - 4 GiB reserve, at 128 KiB of KV per token."
    )
    a100 = {
        **common,
        "name": "llama-3-8b-a100",
        "gpu": "A100-80GB-SXM",
        "provenance": provenance,
        "derived": False,
        "fit_error": fit_error,
        "model_coefficients": base_model,
    }
    # H100: derived
    l2a, l2a_ms = linear_table(vidur_dir / "compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv")
    l2h, l2h_ms = linear_table(vidur_dir / "compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv")
    ratio_tok = np.array(lin_tokens, dtype=np.float64)
    ratio = np.interp(ratio_tok, l2h, l2h_ms) / np.interp(ratio_tok, l2a, l2a_ms)
    compute_ratio = float(np.interp(4096.0, l2h, l2h_ms) / np.interp(4096.0, l2a, l2a_ms))
    bw_ratio = A100_HBM_TB_S / H100_HBM_TB_S
    h_model = dict(base_model)
    h_model["linear_ms_per_layer"] = {
        "num_tokens": lin_tokens,
        "ms": [round(float(v), 6) for v in np.array(lin_ms) * ratio],
    }
    h_model["kv_save_ms_per_token"] = attn["kv_save_ms_per_token"] * bw_ratio
    da = attn["decode_attention"]
    h_model["decode_attention"] = {
        "const_ms": da["const_ms"] * bw_ratio,
        "per_kv_token_ms": da["per_kv_token_ms"] * bw_ratio,
    }
    pa = attn["prefill_attention"]
    h_model["prefill_attention"] = {k: v * compute_ratio for k, v in pa.items()}
    h_prov = provenance + (
        " DERIVED for H100 (Vidur has no Llama-3-8B H100 data): linear ops scaled per token count by the "
        "measured H100/A100 ratio of the same ops for Llama-2-7B (compute/{h100,a100}/meta-llama/"
        f"Llama-2-7b-hf/mlp.csv); decode attention and kv save by the HBM bandwidth ratio {bw_ratio:.3f} "
        f"(2.039 / 3.35 TB/s); prefill attention by the 4096-token linear-op ratio {compute_ratio:.3f}; "
        "CPU overhead unchanged."
    )
    h100 = {
        **common,
        "name": "llama-3-8b-h100",
        "gpu": "H100-80GB-SXM",
        "provenance": h_prov,
        "derived": True,
        "fit_error": {**fit_error, "h100_scaling": "unvalidated: no H100 Llama-3 data"},
        "model_coefficients": h_model,
    }
    return {"llama-3-8b-a100": a100, "llama-3-8b-h100": h100}


def write_profiles(vidur_dir: Path, out_dir: Path) -> Sequence[Path]:
    written = []
    for name, profile in build_profiles(vidur_dir).items():
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(profile, indent=1) + "\n")
        written.append(path)
    return written
