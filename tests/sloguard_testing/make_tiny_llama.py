"""Write the tiny random Llama of the real-vLLM test tier: runs bench/tiny_llama.py, where the code lives.

Run with the vLLM virtualenv's python (which has no sloguard installed, hence a path, not an import):
    .cache/vllm-venv/bin/python tests/sloguard_testing/make_tiny_llama.py OUT_DIR
Called by tests/sloguard_testing/vllm_server.py before it starts servers; the benchmark
`sloguard bench real-vllm` runs the same file.
"""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[2] / "bench" / "tiny_llama.py"), run_name="__main__")
