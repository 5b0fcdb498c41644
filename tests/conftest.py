"""Shared pytest configuration: paths to the repository and to the shared data beside it."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = SHARED_DIR / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: the repository must sit beside shared/")
    return path


@pytest.hookimpl(trylast=True)  # after -m/-k/--deselect have removed what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Real-vLLM tests (marker `vllm`) run last, and their servers start now, in the background, so
    that their start-up (a minute or two) overlaps the rest of the suite (sloguard_testing/vllm_server).
    Likewise the `kube` tier's control plane (sloguard_testing/kube_cluster)."""
    if config.option.collectonly:
        return
    if any(item.get_closest_marker("kube") for item in items):
        # The `kube` tier's control plane (20-60 s) starts now, beside the tests that run first.
        from sloguard_testing.kube_cluster import launch_in_background as launch_kube

        launch_kube()
    vllm_items = [item for item in items if item.get_closest_marker("vllm")]
    if not vllm_items:
        return
    items[:] = [item for item in items if not item.get_closest_marker("vllm")] + vllm_items
    from sloguard_testing.vllm_server import launch_in_background

    launch_in_background()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from sloguard_testing.kube_cluster import stop_background as stop_kube
    from sloguard_testing.vllm_server import stop_background

    stop_background()
    stop_kube()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say so when a real-vLLM server had to be restarted or was given up on, and where its logs are."""
    from sloguard_testing.vllm_server import summary_lines

    if lines := summary_lines():
        terminalreporter.section("real vLLM servers")
        for line in lines:
            terminalreporter.write_line(line)
