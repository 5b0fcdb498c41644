"""The Dockerfile, checked without a Docker engine: what it copies exists, and it installs `sloguard`."""

import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def copy_sources() -> list[str]:
    sources: list[str] = []
    for line in DOCKERFILE.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)$", line.strip())
        if match:
            *srcs, _dest = match.group(1).split()
            sources += srcs
    return sources


def test_every_copied_path_exists_and_is_not_docker_ignored() -> None:
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copy_sources():
        path = REPO / source.rstrip("/")
        assert path.exists(), f"COPY {source}: missing"
        included = False
        for pattern in ignore:  # last matching rule wins, as in Docker
            negated = pattern.startswith("!")
            body = pattern.lstrip("!").rstrip("/")
            if body == "**" or fnmatch(source.rstrip("/"), body):
                included = negated
        assert included, f"COPY {source}: excluded by .dockerignore"


def test_every_package_folder_is_copied() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied = {s.rstrip("/") for s in copy_sources()}
    assert folders <= copied, f"not copied: {sorted(folders - copied)}"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= copied


def test_the_image_is_multi_stage_pinned_and_non_root() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert len(froms) == 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1)), "base must be a pinned slim tag"
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["sloguard"]' in DOCKERFILE


def test_the_entry_point_is_installed_and_runs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sloguard"] == "sloguard.cli:main"
    script = Path(sys.executable).parent / "sloguard"
    assert script.is_file()
    for argv in (["--version"], ["operator", "--help"]):
        done = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    assert "--all-namespaces" in done.stdout
