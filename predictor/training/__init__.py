"""Offline side of the output-length predictor: data, training, tree export and held-out evaluation.

Called by `sloguard predictor train|eval` (sloguard/predictor_command.py), the predictor tests, and the
benchmarks' workloads (which draw prompts from the dataset's test split). Writes the weights the serving side
(`sloguard.predictor`) loads. May use the `train` extra (lightgbm, scipy, the Qwen tokenizer) and the clock;
the sidecar, the operator and the simulator never import it.

- `dataset`: the prompt/response rows and their fixed train/validation/test split;
- `proxy`: fits the MLP/neighbour blend (`train`), then the stacked trees;
- `trees`: word vectors and lightgbm trees stacked on the blend; `tree_export`: lightgbm dump -> numpy trees;
- `evaluation`: accuracy and latency of the model and the baselines on the test split.
"""
