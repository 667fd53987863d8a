#!/usr/bin/env bash
# The proxy chain (stage 1, RATIO, stage 2, samples) on one bare GPU machine, ~10 minutes.
#
#   scripts/gpu_proxy.sh DATA_DIR OUT_DIR [KEY=VALUE ...]
#
# DATA_DIR holds the five shards of dualat.proxy.SHARDS (stage them with
# `python -m dualat.proxy stage /path/to/shared/datasets data/proxy`: into data/proxy/shards); OUT_DIR receives at most
# 8 files (fp16 weights, uint8 samples, run.json; 64 MiB in all). Needs python with torch,
# torchvision, numpy, tqdm (and PyYAML, or a params.json made by `python -m dualat.proxy
# params-json`); nothing is downloaded. KEY=VALUE override the proxy profile (tests: tiny sizes).
# PYTHON picks the interpreter (default python). PROXY_BUDGET_S (default 540) is the wall-clock the chain may use; stage 2 is cut to fit it.
# PROXY_STAGE1_SHARE (e.g. 0.45) also lowers stage 1's epochs so that stage 1 + RATIO use at most that share (timed probe).
# PROXY_PARALLEL_RATIO=1 trains RATIO in a second process beside stage 1 and stage 2 (docs/gpu_session.md).
# Afterwards, on the CPU: python -m dualat.proxy ingest OUT_DIR   (docs/proxy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: scripts/gpu_proxy.sh DATA_DIR OUT_DIR [KEY=VALUE ...]}"
out="${2:?usage: scripts/gpu_proxy.sh DATA_DIR OUT_DIR [KEY=VALUE ...]}"
shift 2
params=params.yaml
"${PYTHON:-python}" -c "import yaml" 2>/dev/null || params=params.json
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m dualat.proxy run --data "$data" --out "$out" --work "${PROXY_WORK:-${TMPDIR:-/tmp}/dualat-proxy-work}" \
  --params "$params" --budget-s "${PROXY_BUDGET_S:-540}" ${PROXY_STAGE1_SHARE:+--stage1-share "$PROXY_STAGE1_SHARE"} \
  ${PROXY_PARALLEL_RATIO:+--parallel-ratio} "$@"
