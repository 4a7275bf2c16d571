#!/bin/bash
# Quiet AMD EPYC (AVX2 only): the server before batching (780fead, its unfused int8 export) against
# this code (fused int8 export), batching off and on, wrk, 5 interleaved rounds of 5 s per level.
cd /work/main
export SLIMTEXT_DATA=/work/shared/data
TAG=${1:-avx2}
echo "== start $(date -u +%FT%TZ) code $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm-base SLIMTEXT_BACKEND=onnx-int8 PYTHONPATH=/work/base20/src \
  .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port 8801 \
  --http slimtext.serve.app:NoDelayHTTPProtocol --log-level warning > /work/runs/quiet/base.log 2>&1 &
SP=$!
sleep 8
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm-fused --client wrk --batching off,on \
  --baseline-url http://127.0.0.1:8801 --rounds ${ROUNDS:-5} --seconds 5 --concurrency 1,8,32 \
  --json bench/results/load_onnx_int8_vs_before_wrk_${TAG}.json 2>&1 | grep -v "^  round"
kill $SP; wait $SP 2>/dev/null
echo "== end $(date -u +%FT%TZ)"
