"""`sloguard sidecar --event-loop`: uvloop where installed (less CPU per relayed token), or asyncio."""

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from sloguard.cli import main
from sloguard.sidecar import command


def test_asyncio_is_the_standard_library_loop() -> None:
    assert command.loop_factory("asyncio") is None


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_where_installed(choice: str) -> None:
    factory = command.loop_factory(choice)
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert command.loop_factory("auto") is None


def test_asking_for_uvloop_without_it_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(ImportError):
        command.loop_factory("uvloop")


def test_the_command_refuses_uvloop_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert main(["sidecar", "--config", "/nonexistent.json", "--event-loop", "uvloop"]) == 2
