"""Fixtures of the `kube` tier: one real control plane per session, a namespace per test, the operator.

The control plane (`sloguard_testing.kube_cluster`) begins starting at collection (tests/conftest.py),
so its start-up overlaps the tests that run before this tier; `kube` waits for it. The operator runs as
the Helm chart's ServiceAccount with the chart's RBAC (`sloguard_testing.kube_operator.chart_identity`).
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sloguard_testing.kube_cluster import ControlPlane, ControlPlaneError, session_control_plane
from sloguard_testing.kube_operator import Identity, OperatorProcess, chart_identity


@pytest.fixture(scope="session")
def kube() -> ControlPlane:
    try:
        return session_control_plane()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def operator_identity(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return chart_identity(kube, tmp_path_factory.mktemp("identity"))


@pytest.fixture
def namespace(kube: ControlPlane) -> Iterator[str]:
    name = kube.new_namespace()
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def start_operator(
    operator_identity: Identity, namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `sloguard operator` serving the test's namespace; every one started is stopped afterwards."""
    started: list[OperatorProcess] = []

    def start(resync_interval_s: float = 2.0) -> OperatorProcess:
        proc = OperatorProcess(
            operator_identity,
            tmp_path / f"operator-{len(started)}.log",
            namespaces=[namespace],
            resync_interval_s=resync_interval_s,
        )
        started.append(proc)
        proc.wait_started()
        return proc

    yield start
    for proc in started:
        proc.stop()
