"""How the operator reaches a pool's Prometheus: `InferencePool.spec.autoscaling.prometheus`.

Part of the InferencePool contract (`sloguard.api.inferencepool.AutoscalingSpec` holds it). TLS
verification is on unless `insecureSkipVerify` says otherwise; a CA bundle comes from a Secret or a
ConfigMap key (OpenShift's service CA, a private CA), and credentials from a Secret: a bearer token
(managed Prometheus, OpenShift's Thanos querier with a ServiceAccount token) or basic auth. Every
reference names an object in the pool's own namespace, read by the operator with `get` only. The
operator resolves the references (`sloguard.operator.prometheus_credentials`) into a
`sloguard.operator.core.prometheus_client.PrometheusConnection`.
"""

from pydantic import ConfigDict, Field, JsonValue, model_validator

from sloguard.api.kube import KubeModel

_OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_DATA_KEY = r"^[-._a-zA-Z0-9]+$"  # a Secret's or ConfigMap's data key


class KeyRef(KubeModel):
    """One key of a Secret or ConfigMap in the pool's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=_OBJECT_NAME, description="Object name.")
    key: str = Field(min_length=1, max_length=253, pattern=_DATA_KEY, description="Key in its data.")


class BasicAuthSecretRef(KubeModel):
    """A Secret in the pool's namespace holding a user name and a password."""

    name: str = Field(min_length=1, max_length=253, pattern=_OBJECT_NAME, description="Secret name.")
    username_key: str = Field(
        default="username", min_length=1, max_length=253, pattern=_DATA_KEY, description="Key of the user."
    )
    password_key: str = Field(
        default="password", min_length=1, max_length=253, pattern=_DATA_KEY, description="Key of the secret."
    )


_RULES: list[JsonValue] = [
    {
        "rule": "!(has(self.caSecretRef) && has(self.caConfigMapRef))",
        "message": "set at most one of caSecretRef and caConfigMapRef",
    },
    {
        "rule": "!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))",
        "message": "set at most one of bearerTokenSecretRef and basicAuthSecretRef",
    },
    {
        "rule": "!(has(self.insecureSkipVerify) && self.insecureSkipVerify"
        " && (has(self.caSecretRef) || has(self.caConfigMapRef)))",
        "message": "a CA bundle is pointless with insecureSkipVerify",
    },
]


class PrometheusConnectionSpec(KubeModel):
    """The Prometheus (or Thanos querier) the autoscaler queries, and how it authenticates."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _RULES})

    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="Prometheus base URL (without /api/v1); the same as prometheusUrl, which it replaces.",
    )
    ca_secret_ref: KeyRef | None = Field(
        default=None, description="PEM CA bundle to verify the server's certificate, from a Secret key."
    )
    ca_config_map_ref: KeyRef | None = Field(
        default=None, description="PEM CA bundle from a ConfigMap key (e.g. OpenShift's service-ca.crt)."
    )
    bearer_token_secret_ref: KeyRef | None = Field(
        default=None, description="Secret key holding a bearer token sent as `Authorization: Bearer`."
    )
    basic_auth_secret_ref: BasicAuthSecretRef | None = Field(
        default=None, description="Secret holding a user name and password for HTTP basic auth."
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server's TLS certificate (testing only)."
    )

    @model_validator(mode="after")
    def _check_exclusive(self) -> "PrometheusConnectionSpec":
        if self.ca_secret_ref is not None and self.ca_config_map_ref is not None:
            raise ValueError("set at most one of caSecretRef and caConfigMapRef")
        if self.bearer_token_secret_ref is not None and self.basic_auth_secret_ref is not None:
            raise ValueError("set at most one of bearerTokenSecretRef and basicAuthSecretRef")
        if self.insecure_skip_verify and (self.ca_secret_ref or self.ca_config_map_ref):
            raise ValueError("a CA bundle is pointless with insecureSkipVerify")
        return self
