"""Convert a trained lightgbm booster's model dump into the numpy `TreeEnsemble` the sidecar serves.

Called by `sloguard.predictor.training.proxy` (training only) and the export test, which checks that the
arrays answer exactly as lightgbm's own `predict` on a sample. Input is `Booster.dump_model()`'s dict, so
this module itself does not import lightgbm. Only what the trainer produces is accepted: numerical `<=`
splits of a single-output regression (categorical splits, linear trees or several classes are refused).
Leaf values in the dump already include the learning rate, and lightgbm folds the starting average into
the first tree, so the ensemble's base is 0.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from sloguard.predictor.trees import TreeEnsemble


class _Builder:
    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.value: list[float] = []

    def add(self, node: Mapping[str, Any]) -> tuple[int, int]:
        """Append `node` and its subtree; returns (its global id, its depth in steps to a leaf)."""
        me = len(self.feature)
        self.feature.append(0)
        self.threshold.append(np.inf)
        self.left.append(me)
        self.right.append(me)
        self.value.append(0.0)
        if "leaf_value" in node:
            self.value[me] = float(node["leaf_value"])
            return me, 0
        if node.get("decision_type") != "<=":
            raise ValueError(f"only numerical '<=' splits can be exported, got {node.get('decision_type')!r}")
        if node.get("missing_type") == "Zero":
            raise ValueError("splits that treat zero as missing cannot be exported")
        self.feature[me] = int(node["split_feature"])
        self.threshold[me] = float(node["threshold"])
        left, left_depth = self.add(node["left_child"])
        right, right_depth = self.add(node["right_child"])
        self.left[me], self.right[me] = left, right
        return me, 1 + max(left_depth, right_depth)


def ensemble_from_dump(dump: Mapping[str, Any]) -> TreeEnsemble:
    """The numpy form of `lightgbm.Booster.dump_model()`'s output."""
    if int(dump.get("num_class", 1)) != 1 or int(dump.get("num_tree_per_iteration", 1)) != 1:
        raise ValueError("only a single-output regression can be exported")
    trees = dump["tree_info"]
    if not trees:
        raise ValueError("the booster has no trees")
    builder = _Builder()
    roots: list[int] = []
    depth = 0
    for tree in trees:
        if tree.get("is_linear"):
            raise ValueError("linear trees cannot be exported")
        root, tree_depth = builder.add(tree["tree_structure"])
        roots.append(root)
        depth = max(depth, tree_depth)
    return TreeEnsemble(
        n_features=int(dump["max_feature_idx"]) + 1,
        depth=depth,
        base=0.0,
        roots=np.array(roots, dtype=np.int32),
        feature=np.array(builder.feature, dtype=np.int32),
        threshold=np.array(builder.threshold, dtype=np.float64),
        left=np.array(builder.left, dtype=np.int32),
        right=np.array(builder.right, dtype=np.int32),
        value=np.array(builder.value, dtype=np.float64),
    )
