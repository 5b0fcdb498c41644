"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC, audit log), controller-manager.

Test support for the `kube` tier (tests/kube/) and the operator soak benchmark (`sloguard bench operator`).
The binaries are the v1.31 ones in `../shared/k8s/` (xz, sha256s in its README), unpacked once into the
git-ignored `.cache/k8s-bin/` and verified; etcd is Debian's `etcd-server`
(scripts/install-system-deps.sh). Certificates are made with `openssl` in a temporary directory.

`ControlPlane.start()` starts the three processes on ephemeral ports and waits (bounded) until the API
server is ready and the CRDs in `crds/` are established; `stop()` stops exactly the processes it
started (each leads its own process group) and removes the directory. tests/conftest.py begins the
start in a background thread at collection when `kube`-marked tests will run (`launch_in_background`),
so the 20-60 s start-up overlaps the rest of the suite; the fixtures in tests/kube/conftest.py wait for it.
"""

import contextlib
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_SHARED_DIR = REPO_ROOT.parent / "shared" / "k8s"
BIN_CACHE_DIR = REPO_ROOT / ".cache" / "k8s-bin"
CRD_DIR = REPO_ROOT / "crds"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kubectl")
START_TIMEOUT_S = 180.0
"""Bound on the whole start (measured 20-60 s on 2 cores; generous for a loaded machine)."""
STOP_TIMEOUT_S = 15.0

AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  resources:
  - group: coordination.k8s.io
    resources: ["leases"]
- level: Metadata
"""


SERVER_USAGE = "extendedKeyUsage=serverAuth"
GC_SYNCED = "resource monitors have synced"
"""What kube-controller-manager logs once its garbage collector watches every kind (our CRDs included)."""


class KubeRequestError(RuntimeError):
    """A non-2xx answer (other than 404) to `ControlPlane.request`; `code` is the HTTP status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlPlaneError(RuntimeError):
    """The control plane could not be set up; the message says what and where its logs are."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def expected_sha256s(readme: Path) -> dict[str, str]:
    """`{binary name: sha256}` from the table in ../shared/k8s/README.md."""
    found = dict(re.findall(r"\|\s*`([\w-]+)\.xz`\s*\|\s*([0-9a-f]{64})\s*\|", readme.read_text()))
    if missing := set(BINARIES) - set(found):
        raise ControlPlaneError(f"{readme} lists no sha256 for {sorted(missing)}")
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_binaries(shared: Path = K8S_SHARED_DIR, cache: Path = BIN_CACHE_DIR) -> dict[str, Path]:
    """Unpack (once) and verify the Kubernetes binaries; returns their paths by name."""
    if not shared.is_dir():
        raise ControlPlaneError(f"{shared} not found: the repository must sit beside shared/")
    wanted = expected_sha256s(shared / "README.md")
    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in BINARIES:
        target = cache / name
        stamp = cache / f"{name}.sha256"
        if not (target.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted[name]):
            partial = cache / f"{name}.{os.getpid()}.partial"
            digest = hashlib.sha256()
            with lzma.open(shared / f"{name}.xz", "rb") as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != wanted[name]:
                partial.unlink()
                raise ControlPlaneError(f"{name}: sha256 {digest.hexdigest()} != README's {wanted[name]}")
            partial.chmod(0o755)
            partial.replace(target)
            stamp.write_text(wanted[name] + "\n")
        elif _sha256(target) != wanted[name]:  # the stamp says verified; make sure nobody changed it
            target.unlink()
            stamp.unlink()
            return ensure_binaries(shared, cache)
        paths[name] = target
    return paths


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(pki: Path) -> None:
    """CA, API server serving cert (SAN 127.0.0.1), admin client cert (system:masters), SA key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "7",
        "-subj",
        "/CN=sloguard-test-ca",
        cwd=pki,
    )
    for name, subject, ext in (
        (
            "server",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        ),
        ("admin", "/O=system:masters/CN=sloguard-test-admin", "extendedKeyUsage=clientAuth"),
    ):
        (pki / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "7",
            "-extfile",
            f"{name}.ext",
            cwd=pki,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig_text(
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    user: str = "admin",
) -> str:
    """A kubeconfig (JSON is YAML) for one identity: a client certificate or a bearer token."""
    creds: dict[str, str] = {}
    if cert is not None and key is not None:
        creds = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        creds = {"token": token}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": user, "user": creds}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        },
        indent=1,
    )


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager started by this object, and how to reach them."""

    workdir: Path
    binaries: dict[str, Path] = field(default_factory=dict)
    url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_s: float = 0.0
    ready_s: float = 0.0

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @classmethod
    def start(cls, workdir: Path | None = None) -> "ControlPlane":
        """Start everything and wait until the CRDs are established; stops what it started on failure."""
        plane = cls(Path(workdir or tempfile.mkdtemp(prefix="sloguard-kube-")))
        plane.started_s = time.monotonic()
        try:
            plane._start()
        except BaseException:
            plane.stop()
            raise
        plane.ready_s = time.monotonic()
        return plane

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        with self.log(name).open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = proc
        return proc

    def _start(self) -> None:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise ControlPlaneError("etcd not installed: run `bash scripts/install-system-deps.sh`")
        if shutil.which("openssl") is None:
            raise ControlPlaneError("openssl not installed")
        self.binaries = ensure_binaries()
        make_certificates(self.pki)
        deadline = time.monotonic() + START_TIMEOUT_S
        client_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                etcd,
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client_port}",
                f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, lambda: _http_ok(f"http://127.0.0.1:{client_port}/health"))
        secure_port = free_port()
        self.url = f"https://127.0.0.1:{secure_port}"
        (self.workdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={secure_port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=0",
                "--v=0",
            ],
        )
        self.kubeconfig.write_text(
            kubeconfig_text(self.url, pki / "ca.crt", cert=pki / "admin.crt", key=pki / "admin.key")
        )
        self.wait_ready(deadline)
        kcm_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        # Polled rather than `kubectl wait ... crd --all`, which fails outright ("conditions accessor
        # error") when it reads a CRD whose status has no conditions yet.
        self._wait("kube-apiserver", deadline, self._crds_established)
        # The garbage collector acts only once its monitors have synced (new CRDs included).
        self._wait(
            "kube-controller-manager", deadline, lambda: self._log_has("kube-controller-manager", "synced")
        )

    def _crds_established(self) -> bool:
        """Every CRD of crds/ reports the condition Established=True."""
        for path in sorted(CRD_DIR.glob("*.yaml")):
            name = path.stem.split("_", 1)[1] + "." + path.stem.split("_", 1)[0]
            try:
                crd = self.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            except (KubeRequestError, OSError):
                return False
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return False
        return True

    def _log_has(self, name: str, text: str) -> bool:
        try:
            return text in self.log(name).read_text(errors="replace")
        except OSError:
            return False

    def _wait(self, name: str, deadline: float, ok: Any) -> None:
        while time.monotonic() < deadline:
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            if ok():
                return
            time.sleep(0.2)  # poll interval
        raise ControlPlaneError(f"{name} not ready within {START_TIMEOUT_S:.0f} s:\n{self.log_tail(name)}")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def ready(self) -> bool:
        return _http_ok(self.url + "/readyz", self.ssl_context())

    def wait_ready(self, deadline: float) -> None:
        self._wait("kube-apiserver", deadline, self.ready)

    def kubectl(
        self,
        *args: str,
        input_text: str | None = None,
        timeout_s: float = 90.0,
        kubeconfig: Path | None = None,
        check: bool = True,
    ) -> str:
        """Run kubectl against this control plane (admin unless `kubeconfig`); returns stdout."""
        done = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input_text.encode() if input_text is not None else None,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def restart_apiserver(self, down_s: float = 0.0) -> None:
        """Stop kube-apiserver, stay down `down_s`, start it again with the same flags and wait for it."""
        proc = self.processes["kube-apiserver"]
        argv = [str(a) for a in proc.args]  # type: ignore[union-attr]
        _stop_group(proc)
        time.sleep(down_s)  # the outage being simulated, not a wait for a condition
        with self.log("kube-apiserver").open("ab") as out:
            self.processes["kube-apiserver"] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(time.monotonic() + START_TIMEOUT_S)

    @contextlib.contextmanager
    def controllers_paused(self) -> Iterator[None]:
        """kube-controller-manager stopped (SIGSTOP) inside the block, resumed after: a namespace being
        deleted stays Terminating with its content in it, as it does for a while on a busy cluster."""
        proc = self.processes["kube-controller-manager"]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> dict[str, Any] | None:
        """One REST call as admin; the parsed answer, or None for a 404 (other errors: KubeRequestError)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_context()) as response:
                text = response.read()
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            detail = err.read().decode(errors="replace")[:500]
            raise KubeRequestError(err.code, f"{method} {path}: {err.code} {detail}") from None
        parsed: dict[str, Any] = json.loads(text) if text else {}
        return parsed

    def get(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path)

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event logged so far (the policy logs every request at Metadata level)."""
        try:
            lines = self.audit_log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def new_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name

    def stop(self) -> None:
        """Stop every process this object started (controller-manager, apiserver, then etcd); rm workdir."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                _stop_group(proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


# -- one control plane per pytest session, started in the background at collection -----------------------


class _Launch:
    def __init__(self) -> None:
        self.plane: ControlPlane | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-launch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.plane = ControlPlane.start()
        except BaseException as exc:  # reported to the fixture that waits for it
            self.error = exc

    def result(self) -> ControlPlane:
        self._thread.join(START_TIMEOUT_S + 60)
        if self.error is not None:
            raise ControlPlaneError(f"control plane did not start: {self.error}") from self.error
        if self.plane is None:
            raise ControlPlaneError("control plane start did not finish in time")
        return self.plane

    def stop(self) -> None:
        self._thread.join(START_TIMEOUT_S + 60)
        if self.plane is not None:
            self.plane.stop()


_launch: _Launch | None = None


def launch_in_background() -> None:
    """Begin starting the session's control plane (idempotent); tests/conftest.py calls it at collection."""
    global _launch  # noqa: PLW0603 (one control plane per pytest session)
    if _launch is None:
        _launch = _Launch()


def session_control_plane() -> ControlPlane:
    launch_in_background()
    assert _launch is not None
    return _launch.result()


def stop_background() -> None:
    global _launch  # noqa: PLW0603
    if _launch is not None:
        _launch.stop()
        _launch = None


@contextlib.contextmanager
def control_plane() -> Iterator[ControlPlane]:
    """A control plane of one's own (the benchmark's), stopped on exit."""
    plane = ControlPlane.start()
    try:
        yield plane
    finally:
        plane.stop()


if __name__ == "__main__":
    # `python tests/sloguard_testing/kube_cluster.py`: start one, print its kubeconfig, stop on Ctrl-C.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    with control_plane() as plane:
        print(f"KUBECONFIG={plane.kubeconfig} (ready in {plane.ready_s - plane.started_s:.1f} s)", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    sys.exit(0)
