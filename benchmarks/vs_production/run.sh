#!/usr/bin/env bash
# Issue 5's "vs production" matrix on the sample domain: the demo's adapter is the model in service; a candidate
# trained with candidate.yaml's changes is evaluated against base and it (× RAG off/on), then gated against it.
# Usage: benchmarks/vs_production/run.sh   (the demo build, if not there yet, then ~one more train + eval)
set -euo pipefail
cd "$(dirname "$0")/../.."
ws=workspaces/vs-production
.venv/bin/hangjia build --config configs/kestrel.yaml --workspace workspaces/kestrel   # skips what is current
if [ ! -d "$ws" ]; then
  # The candidate starts from the demo's workspace (ingest, synth, index reused); its adapter is "production".
  cp -r workspaces/kestrel "$ws"
  cp -r workspaces/kestrel/train/adapter "$ws/production-adapter"
fi
/usr/bin/time -f "candidate build: %e s wall, %M KB max RSS" \
  .venv/bin/hangjia build --config benchmarks/vs_production/candidate.yaml --workspace "$ws"
.venv/bin/hangjia eval --config benchmarks/vs_production/candidate.yaml --workspace "$ws" --gate || echo "gate exit $?"
