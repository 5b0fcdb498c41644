"""Operator settings as one immutable value, read from SLOGUARD_* environment variables or CLI flags.

Pure: `from_env` takes the mapping, it does not read `os.environ` itself. The startup hook
(`sloguard.operator.handlers.configure`) turns it into kopf settings.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields

from sloguard.operator.core.children import DEFAULT_SIDECAR_IMAGE


@dataclass(frozen=True)
class OperatorConfig:
    resync_interval_s: float = 30.0
    """Every pool is re-applied this often: the safety net that repairs drift of owned children."""
    retry_delay_s: float = 5.0
    """Delay before a handler retries after a TemporaryError (conflict, server error, missing class)."""
    missing_class_retry_s: float = 30.0
    """Retry delay while a referenced SLOClass does not exist (an SLOClass event also retries at once)."""
    watch_server_timeout_s: int = 300
    """Server-side watch timeout: watches are re-established at least this often (kopf issue 810).

    An integer: it travels as the `timeoutSeconds` query parameter, and the API server refuses `300.0`."""
    watch_client_timeout_s: float = 330.0
    """Client-side timeout of a watch request, a little above the server-side one."""
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    apiserver_url: str = ""
    """Talk to this URL without credentials (e.g. `kubectl proxy`); empty means in-cluster or kubeconfig."""
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    namespaces: str = ""
    """Comma-separated namespaces whose pools are served; empty means all."""
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    """The sidecar image of every pool that does not pin `spec.sidecar.image` (chart value `sidecar.image`).
    Not a CRD default, so an operator upgrade also upgrades those pools' sidecars."""
    autoscale_rate_window_s: float = 60.0
    """rate()/increase() window of the autoscaler's PromQL; at least 4 scrape intervals."""

    def serves(self, namespace: str) -> bool:
        served = {n.strip() for n in self.namespaces.split(",") if n.strip()}
        return not served or namespace in served

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "OperatorConfig":
        """Each field from `SLOGUARD_<FIELD>` (upper case) when set."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"SLOGUARD_{f.name.upper()}")
            if raw is None:
                continue
            if f.type in (int, "int"):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"SLOGUARD_{f.name.upper()}={raw!r} is not a whole number") from None
            elif f.type in (float, "float"):
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise ValueError(f"SLOGUARD_{f.name.upper()}={raw!r} is not a number") from None
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]
