"""From a pool's `spec.autoscaling` and the Secrets/ConfigMaps it names to a Prometheus connection.

Pure: `references` says which objects to read, `resolve` turns their bodies (as the API server returns
them: Secret `data` base64-encoded, ConfigMap `data` plain) into a `PrometheusConnection`, or raises
`CredentialsError` with a message naming the missing object or key. The autoscaler
(`sloguard.operator.autoscale`) reads the objects and the Prometheus adapter
(`sloguard.operator.prometheus_adapter`) connects with the result.
"""

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sloguard.api.inferencepool import AutoscalingSpec

ObjectKind = Literal["Secret", "ConfigMap"]
ObjectRef = tuple[ObjectKind, str]
"""(kind, name) of an object in the pool's namespace."""


class CredentialsError(ValueError):
    """A referenced Secret or ConfigMap, or a key in it, is missing or unreadable."""


@dataclass(frozen=True)
class PrometheusConnection:
    """Everything needed to query one Prometheus. Secrets never appear in repr()."""

    url: str
    verify_tls: bool = True
    ca_pem: str | None = field(default=None, repr=False)  # None: requests' default public CAs (certifi)
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def auth_kind(self) -> str:
        return "bearer" if self.bearer_token else "basic" if self.basic_auth else "none"


def references(spec: AutoscalingSpec) -> list[ObjectRef]:
    """The objects `resolve` needs, each once."""
    p = spec.prometheus
    if p is None:
        return []
    refs: list[ObjectRef] = []
    for ref in (p.ca_secret_ref, p.bearer_token_secret_ref, p.basic_auth_secret_ref):
        if ref is not None:
            refs.append(("Secret", ref.name))
    if p.ca_config_map_ref is not None:
        refs.append(("ConfigMap", p.ca_config_map_ref.name))
    return list(dict.fromkeys(refs))


Objects = Mapping[ObjectRef, dict[str, Any] | None]


def resolve(spec: AutoscalingSpec, objects: Objects) -> PrometheusConnection:
    """The connection for `spec`; `objects` holds the body of every reference (None: not found)."""
    url = spec.prometheus_base_url
    if url is None:
        raise CredentialsError("no Prometheus URL (spec.autoscaling.prometheus.url)")
    p = spec.prometheus
    if p is None:
        return PrometheusConnection(url=url)
    ca_pem = None
    if p.ca_secret_ref is not None:
        ca_pem = _value(objects, "Secret", p.ca_secret_ref.name, p.ca_secret_ref.key)
    elif p.ca_config_map_ref is not None:
        ca_pem = _value(objects, "ConfigMap", p.ca_config_map_ref.name, p.ca_config_map_ref.key)
    if ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise CredentialsError("the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    token = None
    if p.bearer_token_secret_ref is not None:
        ref = p.bearer_token_secret_ref
        token = _value(objects, "Secret", ref.name, ref.key).strip()
        if not token:
            raise CredentialsError(f"Secret {ref.name} key {ref.key} is empty")
    basic = None
    if p.basic_auth_secret_ref is not None:
        ref_b = p.basic_auth_secret_ref
        user = _value(objects, "Secret", ref_b.name, ref_b.username_key)
        password = _value(objects, "Secret", ref_b.name, ref_b.password_key)
        basic = (user.rstrip("\r\n"), password.rstrip("\r\n"))
    return PrometheusConnection(
        url=url, verify_tls=not p.insecure_skip_verify, ca_pem=ca_pem, bearer_token=token, basic_auth=basic
    )


def _value(objects: Objects, kind: ObjectKind, name: str, key: str) -> str:
    body = objects.get((kind, name))
    if body is None:
        raise CredentialsError(f"{kind} {name} not found in the pool's namespace")
    if kind == "ConfigMap":
        value = (body.get("data") or {}).get(key)
        if value is None:
            raise CredentialsError(f"ConfigMap {name} has no key {key}")
        return str(value)
    encoded = (body.get("data") or {}).get(key)
    if encoded is None:
        plain = (body.get("stringData") or {}).get(key)  # never returned by a server; tolerated
        if plain is None:
            raise CredentialsError(f"Secret {name} has no key {key}")
        return str(plain)
    try:
        return base64.b64decode(str(encoded), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise CredentialsError(f"Secret {name} key {key} is not base64-encoded UTF-8 text") from err
