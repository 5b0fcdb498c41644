"""The demo's workload builder: real trace timestamps, seeded prompts and classes, bad files refused."""

from pathlib import Path

import pytest

from sloguard.cli import main
from sloguard.demo.workload import (
    WorkloadError,
    azure_arrivals_s,
    build_workload,
    sharegpt_prompts,
)

MIX = {"interactive": 0.3, "standard": 0.5, "batch": 0.2}


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.0000000,10,10\n"
    )
    return path


def test_seven_digit_timestamps_become_seconds_after_the_first(tmp_path: Path) -> None:
    arrivals = azure_arrivals_s(_trace(tmp_path))
    assert arrivals[0] == 0.0
    assert arrivals[1] == pytest.approx(4.314579, abs=1e-6)
    assert arrivals[2] == pytest.approx(4.31941, abs=1e-6)


@pytest.mark.parametrize(
    ("rate_scale", "duration_s", "expected"),
    [(1.0, 100.0, 3), (1.0, 4.0, 1), (2.0, 4.0, 3), (0.5, 1.0, 1)],
)
def test_arrivals_are_compressed_by_the_rate_and_cut_at_the_window(
    rate_scale: float, duration_s: float, expected: int
) -> None:
    prompts = [("hello there", 40), ("a longer question", 900)]
    requests = build_workload(
        [0.0, 4.3, 4.32], prompts, duration_s=duration_s, rate_scale=rate_scale, mix=MIX, max_tokens=512
    )
    assert len(requests) == expected
    assert [r.index for r in requests] == list(range(expected))
    assert all(r.arrival_s < duration_s and 2 <= r.output_tokens <= 512 for r in requests)


def test_the_same_seed_gives_the_same_workload() -> None:
    prompts = [(f"prompt {i}", 10 + i) for i in range(50)]
    arrivals = [i * 0.1 for i in range(200)]

    def build(seed: int) -> list[tuple[str, str]]:
        requests = build_workload(
            arrivals, prompts, duration_s=100.0, rate_scale=1.0, mix=MIX, max_tokens=64, seed=seed
        )
        return [(r.slo_class, r.prompt) for r in requests]

    assert build(1) == build(1) != build(2)
    assert {c for c, _ in build(1)} == set(MIX)


def test_long_prompts_and_tiny_replies_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "sharegpt.jsonl"
    path.write_text(
        '{"prompt": "ok", "prompt_tokens_approx": 5, "output_tokens_approx": 30}\n'
        '{"prompt": "huge", "prompt_tokens_approx": 5000, "output_tokens_approx": 30}\n'
        '{"prompt": "tiny", "prompt_tokens_approx": 5, "output_tokens_approx": 1}\n'
    )
    assert sharegpt_prompts(path) == [("ok", 30)]


@pytest.mark.parametrize("content", [None, "not,a,trace\n1,2,3\n", "TIMESTAMP\nyesterday\n"])
def test_a_missing_or_malformed_trace_is_a_clear_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "conv.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(WorkloadError, match="Azure trace"):
        azure_arrivals_s(path)


def test_the_demo_refuses_a_data_dir_without_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--data-dir", str(tmp_path), "--results-dir", str(tmp_path / "r")]) == 2
    assert "Azure trace" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_demo_refuses_a_nonpositive_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration-s", "0"]) == 2
    assert "--duration-s must be > 0" in capsys.readouterr().err
