"""Loads the sidecar configuration file and hot-reloads it when its content changes.

A ConfigMap mount changes by an atomic symlink swap, so the watcher polls the content hash (not only
the mtime) every `interval_s`. A new file that fails to parse or validate (sloguard.api.SidecarConfig)
is refused: the old configuration stays in use, the reason is logged and counted
(`sloguard_config_reloads_total{result="invalid"}`, `sloguard_config_last_reload_success` 0). Ports
cannot change without a restart; a file changing them is refused the same way.
"""

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from sloguard.api.sidecar_config import SidecarConfig
from sloguard.sidecar.metrics import SidecarMetrics

log = logging.getLogger(__name__)


class ConfigError(Exception):
    pass


def parse_config(data: bytes, source: str) -> SidecarConfig:
    """Validate configuration bytes (JSON, or YAML for .yaml/.yml files)."""
    try:
        text = data.decode()
        raw = yaml.safe_load(text) if source.endswith((".yaml", ".yml")) else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(
            f"{source}: not valid {'YAML' if source.endswith(('.yaml', '.yml')) else 'JSON'}: {error}"
        ) from None
    try:
        return SidecarConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid sidecar configuration: {error}") from None


def load_config(path: Path) -> tuple[SidecarConfig, str]:
    data = path.read_bytes()
    return parse_config(data, str(path)), hashlib.sha256(data).hexdigest()


def _ports(config: SidecarConfig) -> tuple[int, int, int]:
    return (config.grpc_port, config.http_port, config.metrics_port)


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        *,
        current: SidecarConfig,
        current_hash: str,
        apply: Callable[[SidecarConfig], None],
        metrics: SidecarMetrics,
        interval_s: float = 1.0,
    ) -> None:
        self.path = path
        self.current = current
        self.current_hash = current_hash
        self.apply = apply
        self.metrics = metrics
        self.interval_s = interval_s
        self._last_seen_hash = current_hash
        self.last_error: str | None = None
        metrics.config_last_reload_ok.labels(metrics.pool).set(1)

    def check(self) -> bool:
        """Look at the file once; returns True when a new configuration was applied."""
        try:
            data = self.path.read_bytes()
        except OSError as error:
            return self._refuse(f"{self.path}: cannot read: {error}", digest=None)
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._last_seen_hash:
            return False
        self._last_seen_hash = digest
        try:
            config = parse_config(data, str(self.path))
        except ConfigError as error:
            return self._refuse(str(error), digest)
        if _ports(config) != _ports(self.current):
            return self._refuse(f"{self.path}: ports cannot change without a restart", digest)
        try:
            self.apply(config)
        except ValueError as error:
            return self._refuse(f"{self.path}: cannot apply: {error}", digest)
        self.current, self.current_hash, self.last_error = config, digest, None
        self.metrics.config_reloads.labels(self.metrics.pool, "applied").inc()
        self.metrics.config_last_reload_ok.labels(self.metrics.pool).set(1)
        log.info("configuration reloaded from %s (sha256 %s)", self.path, digest[:12])
        return True

    def _refuse(self, reason: str, digest: str | None) -> bool:
        if digest is None and self.last_error == reason:
            return False  # an unreadable file is reported once until it changes
        self.last_error = reason
        self.metrics.config_reloads.labels(self.metrics.pool, "invalid").inc()
        self.metrics.config_last_reload_ok.labels(self.metrics.pool).set(0)
        log.error("configuration refused, keeping the previous one: %s", reason)
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()
