#!/usr/bin/env bash
# LLaMA-Factory in its own venv (benchmarks/.venvs/llamafactory), beside Hangjia's, for run.py.
#
# Same torch as Hangjia's venv (2.13.0, the CPU build on this machine's disk), installed first: an unpinned
# torch pulls a CUDA build of several GB. LLaMA-Factory 0.9.5 also lists torchvision and torchaudio, which
# its text-only SFT path never calls. PyPI's torchvision wants another torch (0.29 pins 2.14, and beside 2.13.0
# it fails to import), so it is left out (pip then prints "llamafactory requires torchvision, which is not
# installed": expected) and transformers skips its image processors. torchaudio is imported at load time
# (llamafactory/data/mm_plugin.py): 2.11.0 declares no torch pin, but its compiled extensions are CUDA
# builds (they need libc10_cuda.so), so they are deleted; torchaudio then imports without them, as it does
# when the extension is absent, and LLaMA-Factory's audio loading (never reached for text) would fail.
# Every other requirement is installed as LLaMA-Factory declares it (transformers <= 5.6, peft 0.18, trl <= 0.24).
#
#   benchmarks/train_vs_llamafactory/setup.sh            # ~2.1 GB; 18 min on a busy 2-core machine
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=benchmarks/.venvs/llamafactory
LLAMAFACTORY=${LLAMAFACTORY:-llamafactory==0.9.5}

[ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps "$LLAMAFACTORY" torchaudio==2.11.0
# LLaMA-Factory's own requirements, less the torch family handled above.
mapfile -t REQS < <("$VENV/bin/python" - <<'PY'
import re
from importlib.metadata import requires

for req in requires("llamafactory") or []:
    if "extra ==" in req:
        continue
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
    if name not in {"torch", "torchvision", "torchaudio"}:
        print(req.split(";")[0].strip())
PY
)
"${PIP[@]}" "${REQS[@]}" torch==2.13.0  # torch named again so nothing may replace it
rm -f "$VENV"/lib/python3.11/site-packages/torchaudio/lib/*.so
"$VENV/bin/python" -c "import torch, transformers, peft, trl, llamafactory, llamafactory.train.tuner; \
print('llamafactory', llamafactory.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__, \
'peft', peft.__version__, 'trl', trl.__version__)"
