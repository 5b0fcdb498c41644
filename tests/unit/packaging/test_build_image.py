"""`make image` (scripts/build-image.sh): builds with a working docker or podman, skips cleanly without.

The engines are stand-in scripts on PATH that record their arguments, so the test checks which engine
is used, with which tag, and that a client without a daemon is skipped, without building anything.
"""

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "build-image.sh"


def _fake_engine(bin_dir: Path, name: str, *, daemon: bool) -> Path:
    log = bin_dir / f"{name}.log"
    (bin_dir / name).write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = info ]; then exit {0 if daemon else 1}; fi\nexit 0\n'
    )
    (bin_dir / name).chmod(0o755)
    return log


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), "registry.example.com/sloguard", *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _app_version() -> str:
    return str(yaml.safe_load((REPO / "charts" / "sloguard" / "Chart.yaml").read_text())["appVersion"])


def test_skips_with_a_message_when_no_engine_works(tmp_path: Path) -> None:
    docker_log = _fake_engine(tmp_path, "docker", daemon=False)  # a client with no daemon
    result = _run(tmp_path)
    assert result.returncode == 0
    assert "skipped" in result.stdout and "cannot reach its engine" in result.stderr
    assert "build" not in docker_log.read_text()


def test_builds_with_the_first_working_engine_tagged_with_the_app_version(tmp_path: Path) -> None:
    _fake_engine(tmp_path, "docker", daemon=False)
    podman_log = _fake_engine(tmp_path, "podman", daemon=True)
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    build = [line for line in podman_log.read_text().splitlines() if line.startswith("build")]
    assert build == [f"build -t registry.example.com/sloguard:{_app_version()} {REPO}"]
