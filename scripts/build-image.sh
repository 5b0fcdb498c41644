#!/usr/bin/env bash
# Build the one SLOGuard image (operator and sidecar) with docker or podman, tagged with the chart's
# appVersion: `make image` (IMAGE=registry/name to choose the repository, CONTAINER_ENGINE=podman to
# choose the engine). Without a working engine it says so and exits 0, so `make image` never fails a
# machine that cannot build images (a docker client with no daemon counts as no engine).
set -euo pipefail

image="${1:?usage: build-image.sh REPOSITORY [TAG]}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${2:-}"
if [[ -z "$tag" ]]; then
  tag="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/charts/sloguard/Chart.yaml")"
fi
if [[ -z "$tag" ]]; then
  echo "build-image: no appVersion in charts/sloguard/Chart.yaml" >&2
  exit 1
fi

engines=("${CONTAINER_ENGINE:-}")
[[ -n "${engines[0]}" ]] || engines=(docker podman)
for engine in "${engines[@]}"; do
  if ! command -v "$engine" >/dev/null 2>&1; then
    continue
  fi
  if ! "$engine" info >/dev/null 2>&1; then
    echo "build-image: $engine is installed but cannot reach its engine (no daemon or socket); trying the next" >&2
    continue
  fi
  echo "build-image: $engine build -t $image:$tag $root"
  "$engine" build -t "$image:$tag" "$root"
  echo "build-image: built $image:$tag; push it with: $engine push $image:$tag"
  exit 0
done
echo "build-image: skipped, no working docker or podman here (set CONTAINER_ENGINE to name one)."
echo "build-image: would build $image:$tag from $root/Dockerfile"
exit 0
