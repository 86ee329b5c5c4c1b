#!/usr/bin/env bash
# The one prepared command for a GPU machine lent through the device tool (bare image: python3 with torch and
# transformers, no network). From a session with a GPU:
#   here:    make device-wheels          (the two pure-Python wheels semsim needs beyond that image, into .whl/)
#   device:  run(command="bash bench/device_run.sh", carry=[".whl"], timeout_s=540)
#   here:    cp <files_at>/device_check_cuda.json bench/measured/ && make nbs NB=nbs/tutorials/performance.ipynb
# Elsewhere (any CUDA machine with semsim installed): `make device-check`. Writes to $OUT (default bench/results/device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/semsim-site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/semsim-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, transformers, fastcore, semsim; print('torch', torch.__version__, '| transformers', transformers.__version__, '| fastcore', fastcore.__version__, '| cuda', torch.cuda.is_available())" || exit 3
python3 bench/device_check.py --out "$OUT" --budget-s "${BUDGET_S:-420}" "$@" 2>&1 | tee "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"
