"""The sidecar configuration the operator renders from a pool and its classes."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sloguard.api import InferencePool, OnUnattainable, SidecarConfig, SLOClass, sidecar_config_for_pool
from sloguard.api.sidecar_config import SLOClassConfig


def load(repo_root: Path) -> tuple[InferencePool, list[SLOClass]]:
    docs = list(yaml.safe_load_all((repo_root / "examples" / "sloclasses.yaml").read_text()))
    pool = InferencePool.model_validate(
        yaml.safe_load((repo_root / "examples" / "inferencepool.yaml").read_text())
    )
    return pool, [SLOClass.model_validate(d) for d in docs]


def test_pool_and_classes_become_a_sidecar_config_in_seconds(repo_root: Path) -> None:
    pool, classes = load(repo_root)
    config = sidecar_config_for_pool(pool, classes)
    assert [c.name for c in config.classes] == ["interactive", "standard", "batch"]
    batch = config.class_named("batch")
    assert batch is not None
    assert (batch.ttft_s, batch.tpot_s, batch.deadline_s) == (15.0, 0.05, 3600.0)
    assert batch.on_unattainable is OnUnattainable.BEST_EFFORT
    assert config.default_class is not None and config.default_class.name == "standard"
    assert config.engine.scheduling_policy == "priority"  # the sloguard policy stamps priorities
    assert config.engine.url == "http://127.0.0.1:8000"
    assert config.policy.parameters == {"rejectQuantile": 0.9}
    assert config.limits.max_in_flight == 256
    assert config.drain_grace_s == 30.0
    assert SidecarConfig.model_validate_json(config.model_dump_json()) == config


def test_fcfs_pool_runs_the_engine_without_priority_scheduling(repo_root: Path) -> None:
    pool, classes = load(repo_root)
    wire = pool.to_wire()
    wire["spec"]["scheduling"]["policy"] = "fcfs"
    config = sidecar_config_for_pool(InferencePool.model_validate(wire), classes)
    assert config.engine.scheduling_policy == "fcfs"


def test_a_missing_class_is_named(repo_root: Path) -> None:
    pool, classes = load(repo_root)
    with pytest.raises(ValueError, match="SLOClass not found: batch"):
        sidecar_config_for_pool(pool, [c for c in classes if c.metadata.name != "batch"])


def test_config_refuses_two_defaults_and_duplicate_names() -> None:
    one = SLOClassConfig(name="a", ttft_s=1, tpot_s=0.05, default=True)
    with pytest.raises(ValidationError, match="at most one default"):
        SidecarConfig(classes=[one, one.model_copy(update={"name": "b"})])
    with pytest.raises(ValidationError, match="duplicate SLO class names"):
        SidecarConfig(classes=[one, one.model_copy(update={"default": False})])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SidecarConfig.model_validate({"classes": [one.model_dump()], "surprise": 1})


def test_a_pool_latency_profile_reaches_the_sidecar_config_in_seconds(repo_root: Path) -> None:
    pool, classes = load(repo_root)
    assert sidecar_config_for_pool(pool, classes).latency_profile is None  # learns from scratch
    wire = pool.to_wire()
    wire["spec"].setdefault("sidecar", {})["latencyProfile"] = {"ttft": "14ms", "itl": "4.5ms"}
    config = sidecar_config_for_pool(InferencePool.model_validate(wire), classes)
    profile = config.latency_profile
    assert profile is not None
    assert (profile.ttft_s, profile.itl_s, profile.itl_per_sequence_s) == pytest.approx((0.014, 0.0045, 0.0))
    assert SidecarConfig.model_validate_json(config.model_dump_json()) == config
    wire["spec"]["sidecar"]["latencyProfile"] = {"ttft": "fast", "itl": "4ms"}
    with pytest.raises(ValidationError):
        InferencePool.model_validate(wire)
