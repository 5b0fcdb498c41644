"""Configuration files: JSON or YAML, validated by sloguard.api; a bad one is refused with a clear reason."""

import json
from pathlib import Path

import pytest

from sloguard.sidecar.config_reload import ConfigError, load_config, parse_config

GOOD = {"classes": [{"name": "chat", "ttft_s": 0.5, "tpot_s": 0.05, "default": True}]}


def test_json_and_yaml_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "a.yaml").write_text("classes:\n- {name: chat, ttft_s: 0.5, tpot_s: 0.05, default: true}\n")
    (json_config, json_hash), (yaml_config, _) = (
        load_config(tmp_path / "a.json"),
        load_config(tmp_path / "a.yaml"),
    )
    assert json_config == yaml_config and len(json_hash) == 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"classes": []}).encode(), "invalid sidecar configuration"),
        (json.dumps({**GOOD, "surprise": 1}).encode(), "invalid sidecar configuration"),
        (
            json.dumps({**GOOD, "limits": {"minInFlight": 9, "maxInFlight": 2}}).encode(),
            "invalid sidecar configuration",
        ),
        (json.dumps({**GOOD, "relay": {"hold_max_s": -0.01}}).encode(), "invalid sidecar configuration"),
        (json.dumps({**GOOD, "relay": {"tpot_share": 0}}).encode(), "invalid sidecar configuration"),
        (json.dumps({**GOOD, "relay": {"hold_ms": 5}}).encode(), "invalid sidecar configuration"),
    ],
)
def test_bad_configuration_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "sidecar.json")
