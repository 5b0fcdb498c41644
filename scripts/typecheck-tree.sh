#!/usr/bin/env bash
# mypy cannot follow setuptools' editable import hook, and our folders are mapped into the `sloguard`
# namespace (api/ -> sloguard.api, ...). Build a tree of symlinks with the installed layout so that
# `MYPYPATH=<tree> mypy -p sloguard` sees every module under its real name.
set -euo pipefail
tree=${1:?usage: typecheck-tree.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$tree"
mkdir -p "$tree/sloguard"
for f in "$root"/sloguard/*.py "$root"/sloguard/py.typed; do
  [ -e "$f" ] && ln -s "$f" "$tree/sloguard/"
done
for d in "$root"/sloguard/*/; do  # subpackages that live inside sloguard/ itself (sloguard/demo)
  [ -e "$d/__init__.py" ] && ln -s "${d%/}" "$tree/sloguard/"
done
for sub in api sidecar operator sim bench predictor; do
  ln -s "$root/$sub" "$tree/sloguard/$sub"
done
