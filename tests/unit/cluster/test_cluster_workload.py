"""The autoscaling scenario's workload builders: the Azure trace, rate scaling, clipping, the backlog."""

import pytest

from sloguard.sim.cluster.workload import (
    AZURE_CONV,
    INTERACTIVE,
    LengthLimits,
    TraceRow,
    batch_backlog,
    batch_class,
    interactive_requests,
    load_azure_trace,
    scale_rate,
    window,
)

ROWS = [TraceRow(0.0, 100, 10), TraceRow(1.0, 200, 20), TraceRow(3.0, 9000, 2000)]


def test_scale_rate_splits_every_gap_and_keeps_the_span() -> None:
    scaled = scale_rate(ROWS, 2)
    assert [r.arrival_s for r in scaled] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert {(r.prompt_tokens, r.output_tokens) for r in scaled} <= {
        (r.prompt_tokens, r.output_tokens) for r in ROWS
    }
    assert scale_rate(ROWS, 1) == ROWS
    with pytest.raises(ValueError, match="rate factor"):
        scale_rate(ROWS, 0)


def test_requests_are_clipped_to_fit_the_engine() -> None:
    limits = LengthLimits(max_model_len=8192, max_tokens=1024)
    specs = interactive_requests(ROWS, limits)
    assert [s.prompt_tokens for s in specs] == [100, 200, 7168]
    assert [s.true_output_tokens for s in specs] == [10, 20, 1024]
    assert all(s.slo_class == INTERACTIVE.name and s.ttft_s == 1.0 and s.tpot_s == 0.1 for s in specs)


def test_batch_backlog_is_seeded_and_arrives_together() -> None:
    cls = batch_class(3600.0)
    first = batch_backlog(ROWS, 50, cls, seed=3)
    assert first == batch_backlog(ROWS, 50, cls, seed=3)
    assert first != batch_backlog(ROWS, 50, cls, seed=4)
    assert {s.arrival_s for s in first} == {0.0} and {s.deadline_s for s in first} == {3600.0}
    assert len({s.request_id for s in first}) == 50


@pytest.mark.skipif(not AZURE_CONV.is_file(), reason="shared Azure trace not present")
def test_the_azure_conversation_trace_loads_as_published() -> None:
    rows = load_azure_trace()
    assert len(rows) == 19_366  # shared/data/README.md §1
    assert rows[0].arrival_s == 0.0 and rows[-1].arrival_s == pytest.approx(3501.7, abs=0.1)
    assert len(window(rows, 600.0)) < len(rows)


def test_a_missing_or_malformed_trace_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match="Azure trace not found"):
        load_azure_trace(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_azure_trace(bad)
    worse = tmp_path / "worse.csv"
    worse.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,x,1\n")
    with pytest.raises(ValueError, match=r"worse\.csv:2"):
        load_azure_trace(worse)
