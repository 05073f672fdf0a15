#!/usr/bin/env bash
# The peer's own venv, so lm-eval's dependencies never touch .venv:
#   benchmarks/.venvs/lm-eval  with torch 2.13.0 (CPU) + lm-eval[hf] (transformers, accelerate, datasets, ...).
# transformers is pinned to the version in .venv (when there is one) so both sides run the same model code.
# Usage: benchmarks/mcq_vs_lm_eval/setup.sh     (~2 minutes; re-running it is a no-op upgrade check)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=benchmarks/.venvs/lm-eval
PY=${PY:-python3.11}
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
"$VENV/bin/pip" install -q torch==2.13.0
pins=()
if test -x .venv/bin/python; then
  tf=$(.venv/bin/python -c "import transformers; print(transformers.__version__)" 2>/dev/null || true)
  test -n "$tf" && pins+=("transformers==$tf")
fi
"$VENV/bin/pip" install -q "lm-eval[hf]>=0.4.9,<0.5" "${pins[@]}"
"$VENV/bin/python" -c "import lm_eval, torch, transformers; print('lm-eval', lm_eval.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
