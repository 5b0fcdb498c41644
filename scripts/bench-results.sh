#!/usr/bin/env bash
# Regenerate the committed benchmark results in bench/results/ (the full variants: NAME.md, NAME.json and
# the plots), one scenario at a time. `make bench-results` runs it for every registered scenario;
# `scripts/bench-results.sh NAME ...` for some. The wall-clock scenarios run under the machine's shared
# heavy-job lock ($SLOGUARD_HEAVY_LOCK, default /tmp/sloguard-heavy.lock) so that no other heavy job skews
# them; the virtual-time ones depend only on their seeds. Prints each scenario's run time to stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${BIN:-$root/.venv/bin}
export PYTHONSAFEPATH=1
if [ "$#" -gt 0 ]; then
  names=("$@")
else
  read -r -a names <<<"$("$bin/python" -c 'from sloguard.bench import SCENARIOS; print(*sorted(SCENARIOS))')"
fi
lock=${SLOGUARD_HEAVY_LOCK:-/tmp/sloguard-heavy.lock}
for name in "${names[@]}"; do
  started=$(date +%s)
  case "$name" in
    sim-speed | sidecar-overhead | decision-cost)  # wall-clock measurements
      flock "$lock" "$bin/sloguard" bench "$name" --json "bench/results/$name.json" ;;
    *)
      "$bin/sloguard" bench "$name" --json "bench/results/$name.json" ;;
  esac
  echo "bench-results: $name took $(($(date +%s) - started)) s" >&2
done
