"""A real Prometheus for tests: backfill OpenMetrics text with promtool, serve it on 127.0.0.1.

`backfilled_prometheus(tmp, text)` runs `promtool tsdb create-blocks-from openmetrics`, starts Debian's
`prometheus` on an ephemeral port over that data directory, waits for `/-/ready` by polling and stops it
(SIGTERM, then kill) on exit. Samples may lie in the future: an instant query at time T sees only
samples at or before T, so a test can lay out a timeline that the operator walks through in real time.

With `web=WebSecurity(...)` (`make_web_security(tmp)`: a CA and a server certificate for 127.0.0.1
made with openssl, a basic-auth user with a bcrypt hash) it serves HTTPS and demands basic auth,
configured through Prometheus's own `--web.config.file`.
"""

import base64
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labels_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclass(frozen=True)
class WebSecurity:
    """TLS files and one basic-auth user for Prometheus's --web.config.file."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    username: str = "sloguard"
    password: str = "s3cret:pass"

    def web_config(self) -> str:
        import bcrypt  # a test dependency (pyproject's test group)

        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        return (
            "tls_server_config:\n"
            f"  cert_file: {self.cert_pem}\n"
            f"  key_file: {self.key_pem}\n"
            "basic_auth_users:\n"
            f"  {self.username}: {hashed}\n"
        )

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def make_web_security(tmp: Path, host: str = "127.0.0.1") -> WebSecurity:
    """A throwaway CA and a server certificate for `host` (an IP SAN), made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not installed: run `bash scripts/install-system-deps.sh`")
    tmp.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = tmp / "ca.key", tmp / "ca.crt"
    key, csr, cert, ext = tmp / "server.key", tmp / "server.csr", tmp / "server.crt", tmp / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_pem), "-days", "2",
        "-subj", "/CN=sloguard-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    ext.write_text(
        f"subjectAltName=IP:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return WebSecurity(ca_pem=ca_pem, cert_pem=cert, key_pem=key)


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float, web: WebSecurity | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url + "/-/ready")
    context = None
    if web is not None:
        request.add_header("Authorization", web.authorization())
        context = web.client_context()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}; see its log in the temp dir")
        try:
            with urllib.request.urlopen(request, timeout=1.0, context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)  # poll interval, not a wait for a condition
    raise TimeoutError(f"prometheus at {url} not ready after {timeout_s}s")


@contextmanager
def backfilled_prometheus(
    tmp: Path,
    openmetrics: str,
    *,
    ready_timeout_s: float = 30.0,
    web: WebSecurity | None = None,
    scrape_configs: str = "[]",
) -> Iterator[str]:
    """The base URL of a Prometheus serving exactly the samples in `openmetrics` (HTTPS with `web`).

    `scrape_configs` (YAML, a list) makes it scrape targets too; an empty `openmetrics` backfills nothing.
    """
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if binary is None or promtool is None:
        pytest.fail("prometheus/promtool not installed: run `bash scripts/install-system-deps.sh`")
    data = tmp / "data"
    source = tmp / "series.om"
    source.write_text(openmetrics)
    if openmetrics:
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    config = tmp / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 15s\nscrape_configs: {scrape_configs}\n")
    port = free_port()
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=30d",
        "--log.level=warn",
    ]
    if web is not None:
        web_config = tmp / "web.yml"
        web_config.write_text(web.web_config())
        args.append(f"--web.config.file={web_config}")
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        url = f"{'https' if web else 'http'}://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, ready_timeout_s, web)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
