#!/usr/bin/env bash
# Issue 4's evidence on the sample domain: three arms built and evaluated in their own workspaces.
#   selected vs random   — does IFD + K-center beat a random subset of the same size?   (evidence a)
#   selected_raft vs selected — do retrieval-aware examples raise RAG-on accuracy?      (evidence b)
#   every arm's MMLU slice vs the base model — the forgetting guard's effect            (evidence c)
# Usage: benchmarks/selection/run.sh [arm ...]   (default: all five; ~20 minutes each on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
for arm in "${@:-selected random selected_raft random_seed1 kcenter}"; do
  for a in $arm; do
    /usr/bin/time -f "$a: %e s wall, %M KB max RSS" .venv/bin/hangjia build \
      --config "benchmarks/selection/$a.yaml" --workspace "workspaces/selection-$a"
  done
done
