"""The real `sloguard operator` process against a `kube_cluster.ControlPlane`, as the Helm chart runs it.

Test support for tests/kube/ and the operator soak benchmark. `chart_identity` installs the chart's
ServiceAccount and RBAC (rendered with helm-python) and writes a kubeconfig holding that account's
token, so the operator meets exactly the permissions a cluster grants it. `OperatorProcess` starts
`sloguard operator` with that kubeconfig, logs to a file, and stops on SIGTERM (then SIGKILL).
`eventually` is the bounded wait every check uses; `operator_writes` reads the writes the operator made
from the API server's audit log.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sloguard_testing.kube_cluster import REPO_ROOT, ControlPlane, free_port, kubeconfig_text

T = TypeVar("T")
SLOGUARD = Path(sys.executable).parent / "sloguard"
CHART_DIR = REPO_ROOT / "charts" / "sloguard"
RELEASE = "sg"
OPERATOR_NAMESPACE = "sloguard-system"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
RBAC_KINDS = frozenset({"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


@dataclass(frozen=True)
class Identity:
    kubeconfig: Path
    username: str


def eventually(check: Callable[[], T | None], timeout_s: float, what: str, poll_s: float = 0.2) -> T:
    """Poll `check` until it returns something truthy (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as err:
            last = err
        if last and not isinstance(last, AssertionError):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what} (last: {last!r})")
        time.sleep(poll_s)  # poll interval, the wait itself is bounded by the deadline


def render_chart_rbac(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects, rendered as `helm install sg` into sloguard-system."""
    import helm_python

    chart = helm_python.Chart.load(str(CHART_DIR))
    try:
        out = chart.render(values or {}, name=RELEASE, namespace=OPERATOR_NAMESPACE, is_install=True)
    finally:
        chart.close()
    docs = []
    for path, text in sorted(out.items()):
        if not path.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d and d.get("kind") in RBAC_KINDS]
    return docs


def chart_identity(plane: ControlPlane, workdir: Path) -> Identity:
    """Install the chart's ServiceAccount and RBAC; a kubeconfig with the account's token."""
    docs = render_chart_rbac()
    plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    plane.kubectl(
        "apply", "--server-side", "-f", "-", input_text="\n---\n".join(yaml.safe_dump(d) for d in docs)
    )
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    token = plane.kubectl("create", "token", account, "-n", OPERATOR_NAMESPACE, "--duration=6h").strip()
    path = workdir / "operator.kubeconfig"
    path.write_text(kubeconfig_text(plane.url, plane.pki / "ca.crt", token=token, user=account))
    return Identity(path, f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}")


class OperatorProcess:
    """`sloguard operator` running as a child process (its own process group)."""

    def __init__(
        self,
        identity: Identity,
        log_path: Path,
        *,
        namespaces: Sequence[str] = (),
        resync_interval_s: float = 2.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.liveness_port = free_port()
        scope = [f"--namespace={ns}" for ns in namespaces] or ["--all-namespaces"]
        env = {
            **os.environ,
            "PYTHONSAFEPATH": "1",
            "KUBECONFIG": str(identity.kubeconfig),
            "SLOGUARD_RESYNC_INTERVAL_S": str(resync_interval_s),
            "SLOGUARD_RETRY_DELAY_S": "1",
            **(extra_env or {}),
        }
        self.started_s = time.time()
        """Wall-clock start, to tell this process's audit events from those of operators before it."""
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(SLOGUARD),
                    "operator",
                    *scope,
                    f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def healthy(self) -> bool:
        """The liveness endpoint answers 200 (kopf serves it once the operator has started)."""
        assert self.alive, f"operator exited with {self.process.returncode}:\n{self.log_tail()}"
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Until the operator answers its liveness probe (AssertionError with its log if it died)."""
        eventually(self.healthy, timeout_s, "the operator answers its liveness probe")

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        return int(self.process.returncode)


def operator_writes(
    plane: ControlPlane, username: str, *, since_s: float | None = None
) -> list[dict[str, Any]]:
    """Audit events of write requests by `username` (newest last); `since_s` filters by wall-clock time."""
    out = []
    for event in plane.audit_events():
        if event.get("user", {}).get("username") != username or event.get("verb") not in WRITE_VERBS:
            continue
        if since_s is not None and event_time_s(event) < since_s:
            continue
        out.append(event)
    return out


def event_time_s(event: dict[str, Any]) -> float:
    import datetime

    raw = event.get("requestReceivedTimestamp") or event.get("stageTimestamp") or ""
    return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
