#!/usr/bin/env bash
# Issue 4's evidence on the sample domain: each arm built and evaluated in its own workspace.
#   selected, chunks vs random — top-IFD / IFD + rounds over chunks vs a random subset (evidence a;
#     seeds 0-7 for selected and random, 0-2 for chunks)
#   selected_raft vs selected — do retrieval-aware examples raise RAG-on accuracy? seeds 0-2 (evidence b)
#   every arm's MMLU slice vs the base model — the forgetting guard's effect            (evidence c)
# Usage: benchmarks/selection/run.sh [arm ...]   (default: all twenty-three; ~6-20 minutes each on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
for arm in "${@:-selected selected_seed1 selected_seed2 selected_seed3 selected_seed4 selected_seed5 selected_seed6 selected_seed7
  random random_seed1 random_seed2 random_seed3 random_seed4 random_seed5 random_seed6 random_seed7
  chunks chunks_seed1 chunks_seed2 selected_raft selected_raft_seed1 selected_raft_seed2 kcenter}"; do
  for a in $arm; do
    /usr/bin/time -f "$a: %e s wall, %M KB max RSS" .venv/bin/hangjia build \
      --config "benchmarks/selection/$a.yaml" --workspace "workspaces/selection-$a"
  done
done
