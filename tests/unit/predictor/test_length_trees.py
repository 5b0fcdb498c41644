"""The numpy trees, word vectors and instruction cues of the length proxy: pure, hand-checked behaviour."""

import numpy as np
import pytest

from sloguard.predictor.cues import _FLAGS, CUE_COUNT, CUE_NAMES, cue_vector
from sloguard.predictor.features import DENSE_FEATURES
from sloguard.predictor.trees import TreeEnsemble, tree_inputs
from sloguard.predictor.vectors import WordVectors

INF = np.inf


def two_trees() -> TreeEnsemble:
    """Tree 0: x0 <= 1 ? (x1 <= 5 ? 10 : 20) : 30.  Tree 1: a single leaf worth 0.5.  Base 100."""
    return TreeEnsemble(
        n_features=2,
        depth=2,
        base=100.0,
        roots=np.array([0, 5], dtype=np.int32),
        feature=np.array([0, 1, 0, 0, 0, 0], dtype=np.int32),
        threshold=np.array([1.0, 5.0, INF, INF, INF, INF]),
        left=np.array([1, 2, 2, 3, 4, 5], dtype=np.int32),
        right=np.array([4, 3, 2, 3, 4, 5], dtype=np.int32),
        value=np.array([0.0, 0.0, 10.0, 20.0, 30.0, 0.5]),
    )


@pytest.mark.parametrize(
    ("x", "expected"),
    [((0.0, 0.0), 110.5), ((1.0, 5.0), 110.5), ((1.0, 5.5), 120.5), ((1.0001, 0.0), 130.5)],
)
def test_a_split_sends_values_equal_to_the_threshold_left(x: tuple[float, float], expected: float) -> None:
    trees = two_trees()
    assert trees.predict(np.array(x)) == expected
    assert trees.predict_many(np.array([x, x]))[1] == expected


def test_the_trees_round_trip_through_arrays() -> None:
    trees = two_trees()
    again = TreeEnsemble.from_arrays(trees.to_arrays("t_"), "t_")
    x = np.array([[0.0, 9.0], [2.0, 0.0], [1.0, 5.0]])
    assert np.array_equal(again.predict_many(x), trees.predict_many(x))
    assert again.trees == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": np.array([1.0, 5.0, 0.0, INF, INF, INF])}, "leaf"),
        ({"left": np.array([1, 2, 2, 3, 4, 9], dtype=np.int32)}, "outside"),
        ({"feature": np.array([0, 2, 0, 0, 0, 0], dtype=np.int32)}, "feature outside"),
        ({"value": np.zeros(5)}, "one entry per node"),
    ],
)
def test_inconsistent_trees_are_rejected(change: dict[str, np.ndarray], message: str) -> None:
    good = two_trees()
    fields = {
        name: getattr(good, name)
        for name in ("n_features", "depth", "base", "roots", "feature", "threshold", "left", "right", "value")
    }
    with pytest.raises(ValueError, match=message):
        TreeEnsemble(**(fields | change))


def test_a_wrongly_sized_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 2 features"):
        two_trees().predict(np.zeros(3))


def vectors() -> WordVectors:
    return WordVectors(
        words=("essay", "poem", "yes"),
        idf=np.array([1.0, 2.0, 1.0], dtype=np.float32),
        vectors=np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], dtype=np.float32),
    )


def test_a_prompt_vector_is_the_unit_idf_weighted_sum_of_its_known_words() -> None:
    table = vectors()
    got = table.embed("An ESSAY and a poem")
    assert got == pytest.approx(np.array([1.0, 2.0]) / np.sqrt(5.0))
    assert np.array_equal(table.embed("nothing known here"), np.zeros(2))
    assert np.array_equal(table.embed(None), np.zeros(2))
    again = WordVectors.from_arrays(table.to_arrays("wv_"), "wv_")
    assert again.words == table.words
    assert again.embed("yes yes poem") == pytest.approx(table.embed("yes yes poem"), abs=1e-3)


def test_duplicate_words_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        WordVectors(words=("a", "a"), idf=np.ones(2, np.float32), vectors=np.ones((2, 1), np.float32))


def cues(text: str | None) -> dict[str, float]:
    return dict(zip(CUE_NAMES, cue_vector(text), strict=True))


def test_cues_read_the_task_and_the_requested_size() -> None:
    story = cues("Write a short story in 3 paragraphs about a dragon.")
    assert story["head_write"] == story["head_long_form"] == story["head_brief"] == 1.0
    assert story["requested_log_tokens"] == pytest.approx(np.log1p(300.0))
    ideas = cues("Give me ten blog post ideas for a bakery")
    assert ideas["requested_items"] == pytest.approx(np.log1p(10.0))
    yes_no = cues("Is the sky blue? Answer yes or no.")
    assert yes_no["head_yes_no"] == yes_no["tail_yes_no"] == 1.0
    assert yes_no["head_write"] == 0.0
    code = cues("Why does this python code fail?\n```\nprint(1)\n```")
    assert code["code_fence"] == code["head_how"] == code["head_code"] == 1.0


def test_no_text_gives_zero_cues_and_every_phrase_fits_the_phrase_window() -> None:
    assert cue_vector(None) == (0.0,) * CUE_COUNT
    assert cues("hi")["has_text"] == 1.0
    assert all(len(p.rstrip("^").split()) <= 3 for _, phrases in _FLAGS for p in phrases)


def test_tree_inputs_put_the_class_last_and_hide_an_unknown_one() -> None:
    table = vectors()
    dense = tuple(float(i) for i in range(DENSE_FEATURES))
    known = tree_inputs(dense=dense, prompt_text="an essay", class_id=1, classes=2, vectors=table)
    unknown = tree_inputs(dense=dense, prompt_text="an essay", class_id=-1, classes=2, vectors=table)
    assert known.shape == (DENSE_FEATURES + CUE_COUNT + 2 + 2,)
    assert list(known[-2:]) == [0.0, 1.0]
    assert list(unknown[-2:]) == [-1.0, -1.0]
    assert np.array_equal(known[:DENSE_FEATURES], dense)
    assert np.array_equal(known[-4:-2], [1.0, 0.0])
    assert np.all(np.isfinite(known))
