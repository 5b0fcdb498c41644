"""The autoscaler's Prometheus client against a real Prometheus that serves HTTPS and demands basic
auth (its own --web.config.file; certificates made with openssl), and against a bearer-token proxy in
front of it (the shape of OpenShift's Thanos querier behind kube-rbac-proxy).

TLS is verified by default: the default public CAs refuse the test CA, a CA bundle from the pool's
ConfigMap or Secret is accepted, `insecureSkipVerify` skips the check. Wrong or missing credentials
are an unavailable snapshot naming the HTTP status, never an exception into the operator.
"""

import base64
import http.server
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sloguard_testing.prometheus_server import (
    WebSecurity,
    backfilled_prometheus,
    labels_text,
    make_web_security,
)

from sloguard.api.inferencepool import AutoscalingSpec
from sloguard.operator.core.autoscaling import ReplicaCounts
from sloguard.operator.core.prometheus_connection import ObjectRef, PrometheusConnection, references, resolve
from sloguard.operator.prometheus_adapter import PrometheusSnapshotSource

pytestmark = pytest.mark.prometheus

POOL, NAMESPACE = "chat", "serving"
T_END = (int(time.time()) // 3600 - 2) * 3600  # two hours ago, on the hour
TOKEN = "bearer-token-for-the-test"


def _openmetrics() -> str:
    lines = ["# TYPE sloguard_in_flight_cap gauge"]
    for pod in ("chat-0", "chat-1"):
        labels = labels_text({"pool": POOL, "namespace": NAMESPACE, "pod": pod})
        lines += [f"sloguard_in_flight_cap{labels} 8 {t}" for t in range(T_END - 300, T_END + 1, 15)]
    lines.append("# TYPE vllm:kv_cache_usage_perc gauge")
    labels = labels_text({"pool": POOL, "namespace": NAMESPACE, "pod": "chat-0", "model_name": "m"})
    lines += [f"vllm:kv_cache_usage_perc{labels} 0.25 {t}" for t in range(T_END - 300, T_END + 1, 15)]
    lines.append("# TYPE vllm:num_requests_running gauge")
    lines += [f"vllm:num_requests_running{labels} 3 {t}" for t in range(T_END - 300, T_END + 1, 15)]
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WebSecurity]]:
    tmp = tmp_path_factory.mktemp("prometheus-tls")
    web = make_web_security(tmp / "certs")
    with backfilled_prometheus(tmp, _openmetrics(), web=web) as url:
        yield url, web


def _snapshot(connection: PrometheusConnection) -> Any:
    source = PrometheusSnapshotSource(connection)
    try:
        return source.snapshot(
            pool=POOL,
            namespace=NAMESPACE,
            class_names=[],
            replicas=ReplicaCounts(current=2, ready=2),
            now_s=T_END,
        )
    finally:
        source.close()


def test_a_verified_ca_bundle_and_basic_auth_read_the_pool(secured: tuple[str, WebSecurity]) -> None:
    url, web = secured
    snapshot = _snapshot(
        PrometheusConnection(url, ca_pem=web.ca_pem.read_text(), basic_auth=(web.username, web.password))
    )
    assert snapshot.available, snapshot.unavailable_reason
    assert snapshot.scraped_pods == 2
    assert snapshot.in_flight_cap_total == 16
    assert snapshot.kv_usage_max == 0.25 and snapshot.engine_running == 3


def test_the_system_trust_store_refuses_the_unknown_ca(secured: tuple[str, WebSecurity]) -> None:
    url, web = secured
    snapshot = _snapshot(PrometheusConnection(url, basic_auth=(web.username, web.password)))
    assert not snapshot.available
    assert snapshot.unavailable_kind == "PrometheusError"
    assert "CERTIFICATE_VERIFY_FAILED" in snapshot.unavailable_reason


def test_insecure_skip_verify_skips_the_check(secured: tuple[str, WebSecurity]) -> None:
    url, web = secured
    snapshot = _snapshot(PrometheusConnection(url, verify_tls=False, basic_auth=(web.username, web.password)))
    assert snapshot.available, snapshot.unavailable_reason


@pytest.mark.parametrize("auth", [None, ("sloguard", "wrong")], ids=["no credentials", "wrong password"])
def test_missing_or_wrong_credentials_are_unavailable_not_errors(
    secured: tuple[str, WebSecurity], auth: tuple[str, str] | None
) -> None:
    url, web = secured
    snapshot = _snapshot(PrometheusConnection(url, ca_pem=web.ca_pem.read_text(), basic_auth=auth))
    assert not snapshot.available
    assert "401" in snapshot.unavailable_reason


def test_the_pools_secret_and_config_map_resolve_into_a_working_connection(
    secured: tuple[str, WebSecurity],
) -> None:
    """The whole path from the pool's spec: CA from a ConfigMap, basic auth from a Secret."""
    url, web = secured
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "prometheus": {
                "url": url,
                "caConfigMapRef": {"name": "prometheus-ca", "key": "ca.crt"},
                "basicAuthSecretRef": {"name": "prometheus-basic"},
            },
        }
    )

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    bodies: dict[ObjectRef, dict[str, Any] | None] = {
        ("ConfigMap", "prometheus-ca"): {"data": {"ca.crt": web.ca_pem.read_text()}},
        ("Secret", "prometheus-basic"): {
            "data": {"username": b64(web.username), "password": b64(web.password)}
        },
    }
    assert set(references(spec)) == set(bodies)
    snapshot = _snapshot(resolve(spec, bodies))
    assert snapshot.available, snapshot.unavailable_reason
    assert snapshot.scraped_pods == 2


def test_the_ca_file_is_removed_on_close(secured: tuple[str, WebSecurity]) -> None:
    url, web = secured
    source = PrometheusSnapshotSource(
        PrometheusConnection(url, ca_pem=web.ca_pem.read_text(), basic_auth=(web.username, web.password))
    )
    loads = source.pod_loads(pool=POOL, namespace=NAMESPACE, now_s=T_END)
    assert loads == {}  # no in-flight series here: known, empty
    ca_file = source._ca_file
    assert ca_file is not None and ca_file.exists()
    source.close()
    assert not ca_file.exists()


class _BearerProxy(http.server.BaseHTTPRequestHandler):
    """Checks `Authorization: Bearer TOKEN`, then forwards the GET to Prometheus with basic auth."""

    upstream = ""
    web: WebSecurity

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_error(401, "bad bearer token")
            return
        request = urllib.request.Request(self.upstream + self.path)
        request.add_header("Authorization", self.web.authorization())
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.web.client_context()) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def bearer_proxy(secured: tuple[str, WebSecurity]) -> Iterator[str]:
    url, web = secured
    handler = type("Proxy", (_BearerProxy,), {"upstream": url, "web": web})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(web.cert_pem, web.key_pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_bearer_token_is_sent_as_authorization(bearer_proxy: str, secured: tuple[str, WebSecurity]) -> None:
    ca = secured[1].ca_pem.read_text()
    good = _snapshot(PrometheusConnection(bearer_proxy, ca_pem=ca, bearer_token=TOKEN))
    assert good.available, good.unavailable_reason
    assert good.scraped_pods == 2
    bad = _snapshot(PrometheusConnection(bearer_proxy, ca_pem=ca, bearer_token="stolen"))
    assert not bad.available and "401" in bad.unavailable_reason


def test_a_ca_bundle_that_did_not_sign_the_server_is_refused(
    secured: tuple[str, WebSecurity], tmp_path: Path
) -> None:
    """The bundle is what verifies: another CA's bundle fails where the right one passes."""
    url, web = secured
    other = make_web_security(tmp_path / "other")
    snapshot = _snapshot(
        PrometheusConnection(url, ca_pem=other.ca_pem.read_text(), basic_auth=(web.username, web.password))
    )
    assert not snapshot.available
    assert "CERTIFICATE_VERIFY_FAILED" in snapshot.unavailable_reason
