"""Versioned step-time profiles shipped as package data (`<name>.json`), and their loader.

Each profile carries a provenance header (sources, derivation, fit error) and the coefficients of
`sloguard.sim.engine.step_time.ProfileStepTime`. Written by `sloguard sim fit-profile`
(`sloguard.sim.profiles.fit`); read by the HTTP server, the benchmarks and the cluster simulation.
"""

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sloguard.sim.engine.step_time import ProfileStepTime

SUPPORTED_VERSION = 1


@dataclass(frozen=True)
class Profile:
    name: str
    data: dict[str, Any]

    @property
    def default_num_gpu_blocks(self) -> int:
        return int(self.data["default_num_gpu_blocks"])

    @property
    def block_size(self) -> int:
        return int(self.data["block_size"])

    @property
    def max_model_len(self) -> int:
        return int(self.data["max_model_len"])

    @property
    def model(self) -> str:
        return str(self.data["model"])

    def step_time(self) -> ProfileStepTime:
        return ProfileStepTime(self.data["model_coefficients"])


def available_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".json") for p in resources.files(__name__).iterdir() if p.name.endswith(".json")
    )


def load_profile(name: str) -> Profile:
    """Load a shipped profile by name (e.g. "llama-3-8b-h100"). Unknown names list the known ones."""
    names = available_profiles()
    if name not in names:
        raise ValueError(f"unknown profile {name!r}; available: {', '.join(names)}")
    data = json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())
    if data.get("profile_version") != SUPPORTED_VERSION:
        raise ValueError(
            f"profile {name} has version {data.get('profile_version')}, expected {SUPPORTED_VERSION}"
        )
    return Profile(name, data)
