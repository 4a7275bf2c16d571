#!/bin/bash
# Quiet measurements while issue 21's training is stopped (kill -STOP; CONT at the end):
# the fused int8 export (e4326b9) and the cheapest cuts of a gathered call, model side and served.
cd /work/main
export SLIMTEXT_DATA=/work/shared/data
PIDS=$(pgrep -f "slimtext train")
echo "stopping $PIDS"; kill -STOP $PIDS
trap 'kill -CONT $PIDS; echo "continued $PIDS"' EXIT
echo "== start $(date -u +%FT%TZ) code $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== model side: fixed cuts of 8 vs cheapest cuts, fused export, with the per-call grid"
.venv/bin/python bench/batch_cuts.py --run /work/runs/toxic-minilm-fused --n 1,4,8,16,32 --grid --threads 2 \
  --json bench/results/batch_cuts_onnx_int8_fused_2026-12-01.json
echo "== model side: 32 tweets one call each vs one call, unfused (runs/toxic-minilm) then fused (runs/toxic-minilm-fused)"
for r in toxic-minilm toxic-minilm-fused; do
  .venv/bin/python bench/batch_gain.py --run /work/runs/$r --backend onnx-int8 --n 32 --rounds 15 --threads 2 \
    --json bench/results/batch_gain_onnx_int8_${r}_2026-12-01d.json
done
echo "== load: before batching (780fead, unfused export) as baseline; off, on with the fused export; wrk"
SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm SLIMTEXT_BACKEND=onnx-int8 PYTHONPATH=/work/base20/src \
  .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port 8801 \
  --http slimtext.serve.app:NoDelayHTTPProtocol --log-level warning > /work/runs/quiet/base.log 2>&1 &
SP=$!
sleep 8
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm-fused --client wrk --batching off,on \
  --baseline-url http://127.0.0.1:8801 --rounds 3 --seconds 5 --concurrency 1,8,32 \
  --json bench/results/load_onnx_int8_cuts_vs_before_wrk_2026-12-01.json 2>&1 | grep -v "^  round"
echo "== load: the same code and baseline with the unfused export, batching on, 32 clients"
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm --client wrk --batching on \
  --baseline-url http://127.0.0.1:8801 --rounds 3 --seconds 5 --concurrency 32 \
  --json bench/results/load_onnx_int8_cuts_unfused_vs_before_wrk_2026-12-01.json 2>&1 | grep -v "^  round"
kill $SP; wait $SP 2>/dev/null
echo "== end $(date -u +%FT%TZ)"
