"""The output-length predictor: how many tokens a request will generate, before it runs.

A package of its own beside the sidecar (mapped as `sloguard.predictor`). This module is its serving
surface, the one import path for code outside the package: the scheduling core (`sloguard.sidecar.core`:
policies and the latency model ask it), the sidecar's policy adapter, the simulator's cluster and the
benchmarks. Everything here is pure and numpy-only (no clock, no I/O beyond reading the shipped weights,
`model.npz`, from package data).

- `LengthPrediction`, `OutputLengthPredictor`: what every predictor answers, and the protocol (`prediction`);
- `ProxyLengthPredictor`, `load_default_predictor`: the trained proxy model and its shipped weights (`model`,
  over `features`, `cues`, `vectors`, `neighbours`, `trees`);
- `FixedLength`, `ClassMeanLengths`: simple online predictors (`simple`);
- `GlobalMeanPredictor`, `ClassMeanPredictor`, `PromptLinearPredictor`, `OraclePredictor`: fitted
  baselines and the oracle (true lengths, for benchmark bounds only) (`baselines`).

The offline side (dataset, training, tree export, held-out evaluation) lives in `sloguard.predictor.training`
and may import the `train` extra (lightgbm, scipy, the Qwen tokenizer); nothing here imports it.
"""

from sloguard.predictor.baselines import (
    ClassMeanPredictor,
    GlobalMeanPredictor,
    OraclePredictor,
    PromptLinearPredictor,
)
from sloguard.predictor.model import ProxyLengthPredictor, load_default_predictor
from sloguard.predictor.prediction import LengthPrediction, OutputLengthPredictor
from sloguard.predictor.simple import ClassMeanLengths, FixedLength

__all__ = [
    "ClassMeanLengths",
    "ClassMeanPredictor",
    "FixedLength",
    "GlobalMeanPredictor",
    "LengthPrediction",
    "OraclePredictor",
    "OutputLengthPredictor",
    "PromptLinearPredictor",
    "ProxyLengthPredictor",
    "load_default_predictor",
]
