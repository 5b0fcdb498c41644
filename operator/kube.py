"""A small async Kubernetes REST client for the handlers: get, list, create, apply, status patch, delete.

Adapter (aiohttp). Credentials come from the in-cluster service account or the kubeconfig through the
`kubernetes` package's loaders, or from nothing when `apiserver_url` is set (`kubectl proxy`, tests).
`apply` is a server-side apply with one field manager, and sends nothing when the live object already
carries what was last applied (`sloguard.operator.core.drift`), so resyncs are free.
"""

import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes import config as kube_config

from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.drift import needs_apply, with_digest
from sloguard.operator.core.names import FIELD_MANAGER
from sloguard.operator.core.paths import object_path

LOG = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `message` the Status object's message."""

    def __init__(self, status: int, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: the API server refuses new objects in it with a 403 that
        is no RBAC problem, and the pool there is about to go (its children with it)."""
        return self.status == 403 and "being terminated" in self.message


def _credentials(config: OperatorConfig) -> tuple[str, ssl.SSLContext | bool, Callable[[], dict[str, str]]]:
    """(base URL, TLS context, header factory) from the loaders of the `kubernetes` package."""
    if config.apiserver_url:
        return config.apiserver_url.rstrip("/"), False, dict
    cfg = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        kube_config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def headers() -> dict[str, str]:
        hook: Any = getattr(cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(cfg)  # rotates projected service-account tokens
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        return {"Authorization": token} if token else {}

    return str(cfg.host).rstrip("/"), context, headers


class KubeApi:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        headers: Callable[[], dict[str, str]],
        ssl_context: ssl.SSLContext | bool,
    ) -> None:
        self._base = base_url
        self._session = session
        self._headers = headers
        self._ssl = ssl_context

    @classmethod
    def connect(cls, config: OperatorConfig) -> "KubeApi":
        base, context, headers = _credentials(config)
        timeout = aiohttp.ClientTimeout(total=config.request_timeout_s, connect=config.connect_timeout_s)
        return cls(base, aiohttp.ClientSession(timeout=timeout), headers, context)

    async def close(self) -> None:
        await self._session.close()

    @property
    def closed(self) -> bool:
        """True once the operator's cleanup closed the client: loops using it should end."""
        return bool(self._session.closed)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        headers = {"Accept": "application/json", **self._headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            async with self._session.request(
                method, self._base + path, data=data, headers=headers, params=params, ssl=self._ssl
            ) as response:
                text = await response.text()
                code = response.status
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as err:  # RuntimeError: session closed
            raise ApiError(503, f"{type(err).__name__}: {err}", method=method, path=path) from None
        return self._parse(method, path, code, text)

    @staticmethod
    def _parse(method: str, path: str, code: int, text: str) -> dict[str, Any] | None:
        if code == 404 and method in {"GET", "DELETE"}:
            return None
        if code >= 300:
            try:
                message = str(json.loads(text).get("message", text))
            except (ValueError, AttributeError):
                message = text
            raise ApiError(code, message[:500], method=method, path=path)
        try:
            parsed: dict[str, Any] = json.loads(text) if text else {}
        except ValueError:
            raise ApiError(502, f"not JSON: {text[:200]!r}", method=method, path=path) from None
        return parsed

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._call("GET", path)

    async def list(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        found = await self._call("GET", path, params=params)
        return list((found or {}).get("items", []) or [])

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to the collection `path`; returns the created object."""
        return await self._call("POST", path, body=body, params={"fieldManager": FIELD_MANAGER}) or body

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch of `path` (an object or a subresource such as `/scale`)."""
        return await self._call(
            "PATCH",
            path,
            body=patch,
            content_type="application/merge-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )

    async def delete(self, path: str) -> bool:
        """True when something was deleted, False when it was already gone."""
        return await self._call("DELETE", path) is not None

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        """Merge-patch the `status` subresource, under the operator's field manager like every write."""
        await self._call(
            "PATCH",
            path + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Make the live object carry `manifest`; returns the live object. Writes only on drift.

        Always a server-side apply, from the first write on, with one field manager: the operator then
        owns exactly the fields it declares, a field dropped from the manifest is pruned, and a
        concurrent writer's field is taken back (`force`). `core.drift.needs_apply` decides.
        """
        desired = with_digest(manifest)
        path = object_path(desired)
        live = await self.get(path)
        if not needs_apply(desired, live):
            assert live is not None
            return live
        applied = await self._call(
            "PATCH",
            path,
            body=desired,
            content_type="application/apply-patch+yaml",  # JSON is YAML
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        verb = "created" if live is None else "applied (drift repaired or spec changed)"
        LOG.info("%s %s %s", verb, desired["kind"], path)
        return applied or desired
