"""The operator's REST client (sloguard.operator.kube) against a scripted aiohttp server on 127.0.0.1."""

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sloguard.operator.core.config import OperatorConfig
from sloguard.operator.core.drift import APPLIED_DIGEST_ANNOTATION, with_digest
from sloguard.operator.kube import ApiError, KubeApi

CM: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "c", "namespace": "ns"},
    "data": {"k": "v"},
}
PATH = "/api/v1/namespaces/ns/configmaps/c"


class Script:
    """Answers (status, body) per "METHOD path" in order, and records what it was sent."""

    def __init__(self, answers: dict[str, list[tuple[int, Any]]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, str, dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = json.loads(text) if text else None
        key = f"{request.method} {request.path}"
        self.seen.append((request.method, request.path, request.content_type, dict(request.query), body))
        status, payload = self.answers[key].pop(0)
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)


async def client_for(script: Script) -> tuple[KubeApi, TestServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api = KubeApi.connect(OperatorConfig(apiserver_url=str(server.make_url("/"))))
    return api, server


async def test_apply_creates_with_a_server_side_apply_stamped_with_its_digest() -> None:
    """The first write is an apply too (no POST), so the operator's field manager owns every field."""
    stamped = with_digest(CM)
    script = Script(
        {f"GET {PATH}": [(404, {"kind": "Status", "code": 404})], f"PATCH {PATH}": [(200, stamped)]}
    )
    api, server = await client_for(script)
    try:
        assert await api.apply(CM) == stamped
    finally:
        await api.close()
        await server.close()
    assert [s[0] for s in script.seen] == ["GET", "PATCH"]
    method, _, content_type, query, body = script.seen[-1]
    assert (method, content_type) == ("PATCH", "application/apply-patch+yaml")
    assert query == {"fieldManager": "sloguard-operator", "force": "true"}
    assert body == stamped and body["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION]


async def test_apply_writes_nothing_when_the_live_object_carries_the_same_digest() -> None:
    stamped = with_digest(CM)
    live = {**stamped, "metadata": {**stamped["metadata"], "uid": "u", "resourceVersion": "7"}}
    script = Script({f"GET {PATH}": [(200, live)]})
    api, server = await client_for(script)
    try:
        assert await api.apply(CM) == live
    finally:
        await api.close()
        await server.close()
    assert [s[0] for s in script.seen] == ["GET"]


async def test_status_patches_carry_the_field_manager() -> None:
    script = Script({f"PATCH {PATH}/status": [(200, CM)]})
    api, server = await client_for(script)
    try:
        await api.patch_status(PATH, {"phase": "x"})
    finally:
        await api.close()
        await server.close()
    assert script.seen[-1][3] == {"fieldManager": "sloguard-operator"}


@pytest.mark.parametrize(
    ("status", "payload", "retryable"),
    [
        (500, {"message": "etcd timeout"}, True),
        (409, {"message": "conflict"}, True),
        (429, {"message": "slow down"}, True),
        (422, {"message": "spec.replicas: Invalid value"}, False),
        (403, "forbidden, not JSON", False),
    ],
)
async def test_errors_carry_status_message_and_retryability(
    status: int, payload: Any, retryable: bool
) -> None:
    script = Script({f"PATCH {PATH}/status": [(status, payload)]})
    api, server = await client_for(script)
    try:
        with pytest.raises(ApiError) as caught:
            await api.patch_status(PATH, {"x": 1})
    finally:
        await api.close()
        await server.close()
    assert caught.value.status == status
    assert caught.value.retryable is retryable
    assert (payload["message"] if isinstance(payload, dict) else payload) in str(caught.value)
    assert script.seen[0][2] == "application/merge-patch+json"
    assert script.seen[0][4] == {"status": {"x": 1}}


async def test_an_unreachable_server_is_a_retryable_error() -> None:
    script = Script({})
    api, server = await client_for(script)
    await server.close()  # nothing listens on that port any more
    try:
        with pytest.raises(ApiError) as caught:
            await api.get(PATH)
    finally:
        await api.close()
    assert caught.value.status == 503 and caught.value.retryable
