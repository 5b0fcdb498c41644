"""The operator soak's driver (bench/operator_soak.py): seeded, bounded, and only deletes unused classes."""

import random
from typing import Any

import pytest

from sloguard.bench import SCENARIOS
from sloguard.bench.operator_soak import Driver, SoakConfig, World, markdown, next_operation


class RecordingPlane:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "") -> None:
        self.calls.append((method, path, body))

    def kubectl(self, *args: str) -> str:
        self.calls.append(("kubectl", *args))
        return ""


def drive(seed: int, config: SoakConfig, steps: int) -> tuple[World, RecordingPlane]:
    world = World(random.Random(seed), config)
    plane = RecordingPlane()
    driver = Driver(plane, world)
    for step in range(steps):
        kind, args = next_operation(world)
        if kind == "delete-class":
            assert any(not world.users_of(c) for c in world.classes)
        driver.apply(kind, args, float(step))
        assert len(world.pools) <= config.pools and len(world.classes) <= config.classes
        for spec in world.pools.values():
            assert set(spec["sloClasses"]) <= set(world.classes), "a pool names a class that is gone"
    return world, plane


@pytest.mark.parametrize("quick", [True, False])
def test_driver_is_bounded_and_every_pool_names_existing_classes(quick: bool) -> None:
    config = SoakConfig.for_run(quick)
    world, plane = drive(3, config, 400)
    methods = {c[0] for c in plane.calls}
    assert {"POST", "PATCH", "DELETE", "kubectl"} <= methods  # creates, edits, deletes and scales all happen
    assert world.pools


def test_driver_is_seeded() -> None:
    config = SoakConfig.for_run(quick=True)
    assert drive(7, config, 150)[1].calls == drive(7, config, 150)[1].calls
    assert drive(7, config, 150)[1].calls != drive(8, config, 150)[1].calls


def test_registered_and_the_table_names_the_targets() -> None:
    assert SCENARIOS["operator"] == "sloguard.bench.operator_soak"
    data = {
        "pools": 10, "operations": 60, "converge_p50_s": 0.5, "converge_p99_s": 3.0, "unconverged": 0,
        "idle_writes_per_min": 0.0, "operator_restarts": 0, "operator_rss_mb": 80.0,
        "op_kinds": {"edit-pool": 60},
        "config": {"pools": 10, "classes": 3, "duration_s": 120.0, "seed": 13},
    }  # fmt: skip
    table = markdown(data, quick=True)
    assert "| converge p99 (s) | 3.0 | <= 10 | yes |" in table
    assert "| idle writes / min | 0.0 | 0 | yes |" in table
