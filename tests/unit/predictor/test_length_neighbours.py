"""The TF-IDF neighbour index: finds near-duplicates, keeps to the request's class, round-trips to disk,
and answers None when a prompt shares nothing with the index."""

import math

import numpy as np
import pytest

from sloguard.predictor.features import prompt_features
from sloguard.predictor.model import ProxyLengthPredictor, ProxyWeights, load_default_predictor
from sloguard.predictor.neighbours import NeighbourIndex

PROMPTS = [
    ("Write a long essay about the history of Rome and its emperors.", 900, 0),
    ("Answer yes or no: is the sky blue?", 2, 0),
    ("Translate this sentence into French: good morning, my friend.", 12, 0),
    ("Write a long essay about the history of Rome and its emperors.", 300, 1),
    ("List ten fruits that grow in tropical climates.", 60, 0),
]


def features(text: str) -> tuple[int, ...]:
    return prompt_features(text, len(text) // 4, hash_bits=20).indices


def build(k: int = 3) -> NeighbourIndex:
    return NeighbourIndex.build(
        [features(t) for t, _, _ in PROMPTS],
        [math.log1p(n) for _, n, _ in PROMPTS],
        [c for _, _, c in PROMPTS],
        k=k,
        power=4.0,
        min_similarity=0.05,
        max_df=0.9,
    )


@pytest.mark.parametrize(("class_id", "expected_tokens"), [(0, 900), (1, 300)])
def test_a_duplicate_prompt_gets_the_length_of_its_twin_in_the_same_class(
    class_id: int, expected_tokens: int
) -> None:
    answer = build(k=1).query(features(PROMPTS[0][0]), class_id)
    assert answer is not None
    assert answer.best_similarity == pytest.approx(1.0, abs=1e-3)
    assert answer.log_length == pytest.approx(math.log1p(expected_tokens), rel=1e-5)


def test_an_unknown_class_competes_over_all_rows() -> None:
    answer = build(k=2).query(features(PROMPTS[0][0]), -1)
    assert answer is not None
    assert math.log1p(300) <= answer.log_length <= math.log1p(900)


def test_a_prompt_sharing_nothing_gets_no_answer() -> None:
    assert build().query(features("zzzqqq xxyyzz"), 0) is None
    assert build().query((), 0) is None


def test_the_index_round_trips_through_arrays() -> None:
    index = build()
    again = NeighbourIndex.from_arrays(index.to_arrays("p_"), "p_")
    query = features("Write an essay about Rome.")
    assert again.query(query, 0) == index.query(query, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"k": 0}, "k must"), ({"min_similarity": 0.0}, "min_similarity"), ({"max_df": 0.9}, None)],
)
def test_bad_parameters_are_rejected(change: dict[str, float], message: str | None) -> None:
    args: dict[str, float] = {"k": 3, "power": 4.0, "min_similarity": 0.05, "max_df": 0.9} | change
    rows = ([features(t) for t, _, _ in PROMPTS], [1.0] * 5, [0] * 5)
    if message is None:
        NeighbourIndex.build(
            *rows,
            k=int(args["k"]),
            power=args["power"],
            min_similarity=args["min_similarity"],
            max_df=args["max_df"],
        )
        return
    with pytest.raises(ValueError, match=message):
        NeighbourIndex.build(
            *rows,
            k=int(args["k"]),
            power=args["power"],
            min_similarity=args["min_similarity"],
            max_df=args["max_df"],
        )


def test_the_shipped_model_blends_neighbours_and_an_mlp_only_artifact_still_loads() -> None:
    shipped = load_default_predictor().weights
    assert shipped.neighbours is not None
    arrays = {k: v for k, v in shipped.to_arrays().items() if not k.startswith(("nn_", "tree_", "wv_"))}
    for name in ("neighbour_hash_bits", "blend", "stack"):
        arrays.pop(name)
    mlp_only = ProxyWeights.from_arrays(arrays)
    assert mlp_only.neighbours is None and mlp_only.trees is None
    text = "Write a Python function that sorts a list."
    mlp_z = mlp_only.predict_log(text, 10, "sharegpt")
    assert np.isfinite(mlp_z)
    blend = {k: v for k, v in shipped.to_arrays().items() if not k.startswith(("tree_", "wv_"))}
    blend.pop("stack")
    blend_only = ProxyWeights.from_arrays(blend)
    # without text the neighbours have nothing to say: the blend and the MLP alone answer alike
    assert blend_only.predict_log(None, 10, "sharegpt") == pytest.approx(
        mlp_only.predict_log(None, 10, "sharegpt")
    )
    prediction = ProxyLengthPredictor(mlp_only).predict(
        prompt_text=text, prompt_tokens=10, slo_class="x", max_tokens=100
    )
    assert 0 <= prediction.mean_tokens <= 100


def test_a_single_mlp_artifact_of_the_older_layout_loads_as_a_one_member_ensemble() -> None:
    arrays = load_default_predictor().weights.to_arrays()
    older = {
        k: v
        for k, v in arrays.items()
        if not k.startswith(("nn_", "tree_", "wv_")) and k not in {"blend", "neighbour_hash_bits", "stack"}
    }
    for name in ("embeddings", "w1", "b1", "w2", "b2"):
        older[name] = np.asarray(arrays[name])[0]  # member 0, without the member axis
    weights = ProxyWeights.from_arrays(older)
    assert weights.embeddings.shape[0] == 1
    assert weights.b2.shape == (1,)
    assert np.isfinite(weights.predict_log("Write a poem about the sea.", 8, "sharegpt"))
