"""Resolving spec.autoscaling.prometheus and the objects it names into a connection
(sloguard.operator.core.prometheus_connection): TLS verification on by default, CA from a Secret or a
ConfigMap, bearer token or basic auth from a Secret, and a clear error for every missing piece."""

import base64
from typing import Any

import pytest

from sloguard.api.inferencepool import AutoscalingSpec
from sloguard.operator.core.prometheus_connection import (
    CredentialsError,
    ObjectRef,
    PrometheusConnection,
    references,
    resolve,
)

URL = "https://thanos-querier.openshift-monitoring.svc:9091"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _secret(**data: str) -> dict[str, Any]:
    return {"kind": "Secret", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _spec(**prometheus: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"enabled": True, "prometheus": {"url": URL, **prometheus}})


OBJECTS: dict[ObjectRef, dict[str, Any] | None] = {
    ("Secret", "token"): _secret(token="s3cr3t-token\n"),
    ("Secret", "basic"): _secret(username="sloguard", password="pa:ss\n", user="other", pw="x"),
    ("Secret", "ca"): _secret(**{"ca.crt": PEM}),
    ("ConfigMap", "service-ca"): {"kind": "ConfigMap", "data": {"service-ca.crt": PEM}},
    ("Secret", "not-base64"): {"data": {"token": "***"}},
    ("Secret", "empty"): _secret(token="  \n"),
    ("ConfigMap", "not-pem"): {"data": {"ca.crt": "hello"}},
}

RESOLVED = [
    ("url only", {}, PrometheusConnection(URL)),
    ("old spelling", None, PrometheusConnection("http://prometheus:9090")),
    ("skip verify", {"insecureSkipVerify": True}, PrometheusConnection(URL, verify_tls=False)),
    (
        "CA from a Secret",
        {"caSecretRef": {"name": "ca", "key": "ca.crt"}},
        PrometheusConnection(URL, ca_pem=PEM),
    ),
    (
        "CA from a ConfigMap, bearer token",
        {
            "caConfigMapRef": {"name": "service-ca", "key": "service-ca.crt"},
            "bearerTokenSecretRef": {"name": "token", "key": "token"},
        },
        PrometheusConnection(URL, ca_pem=PEM, bearer_token="s3cr3t-token"),
    ),
    (
        "basic auth, default keys",
        {"basicAuthSecretRef": {"name": "basic"}},
        PrometheusConnection(URL, basic_auth=("sloguard", "pa:ss")),
    ),
    (
        "basic auth, own keys",
        {"basicAuthSecretRef": {"name": "basic", "usernameKey": "user", "passwordKey": "pw"}},
        PrometheusConnection(URL, basic_auth=("other", "x")),
    ),
]


@pytest.mark.parametrize(("case", "prometheus", "expected"), RESOLVED, ids=[c[0] for c in RESOLVED])
def test_resolve(case: str, prometheus: dict[str, Any] | None, expected: PrometheusConnection) -> None:
    if prometheus is None:
        spec = AutoscalingSpec.model_validate({"enabled": True, "prometheusUrl": "http://prometheus:9090"})
    else:
        spec = _spec(**prometheus)
    assert resolve(spec, OBJECTS) == expected
    assert set(references(spec)) <= set(OBJECTS)


ERRORS = [
    ({"caSecretRef": {"name": "missing", "key": "ca.crt"}}, "Secret missing not found"),
    ({"caSecretRef": {"name": "ca", "key": "tls.crt"}}, "Secret ca has no key tls.crt"),
    ({"caConfigMapRef": {"name": "service-ca", "key": "ca.crt"}}, "ConfigMap service-ca has no key ca.crt"),
    ({"caConfigMapRef": {"name": "not-pem", "key": "ca.crt"}}, "holds no PEM certificate"),
    ({"bearerTokenSecretRef": {"name": "not-base64", "key": "token"}}, "not base64-encoded"),
    ({"bearerTokenSecretRef": {"name": "empty", "key": "token"}}, "Secret empty key token is empty"),
    ({"basicAuthSecretRef": {"name": "basic", "passwordKey": "nope"}}, "Secret basic has no key nope"),
]


@pytest.mark.parametrize(("prometheus", "message"), ERRORS)
def test_a_missing_piece_is_a_clear_error(prometheus: dict[str, Any], message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        resolve(_spec(**prometheus), OBJECTS)


def test_references_name_each_object_once() -> None:
    spec = _spec(
        caSecretRef={"name": "shared", "key": "ca.crt"},
        basicAuthSecretRef={"name": "shared"},
    )
    assert references(spec) == [("Secret", "shared")]
    assert references(AutoscalingSpec.model_validate({"prometheusUrl": "http://p:9090"})) == []


def test_secrets_never_show_in_repr() -> None:
    connection = resolve(
        _spec(
            bearerTokenSecretRef={"name": "token", "key": "token"},
            caSecretRef={"name": "ca", "key": "ca.crt"},
        ),
        OBJECTS,
    )
    assert "s3cr3t" not in repr(connection) and "BEGIN" not in repr(connection)
    assert connection.auth_kind == "bearer"
