#!/bin/bash
# Quiet (issue 21's training stopped with kill -STOP, CONT at the end): batching on, fused int8
# export; the code before gc.freeze (the pre-freeze worktree) as baseline against this code.
cd /work/main
export SLIMTEXT_DATA=/work/shared/data
PIDS=$(pgrep -f "slimtext train")
echo "stopping $PIDS"; kill -STOP $PIDS
trap 'kill -CONT $PIDS; echo "continued $PIDS"' EXIT
echo "== start $(date -u +%FT%TZ) code $(git rev-parse --short HEAD), baseline $(git -C /work/pre-freeze rev-parse --short HEAD)"
SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm-fused SLIMTEXT_BACKEND=onnx-int8 SLIMTEXT_BATCHING=on PYTHONPATH=/work/pre-freeze/src \
  .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port 8801 \
  --http slimtext.serve.app:NoDelayHTTPProtocol --log-level warning > /work/runs/quiet/base.log 2>&1 &
SP=$!
sleep 8
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm-fused --client wrk --batching on \
  --baseline-url http://127.0.0.1:8801 --rounds 5 --seconds 5 --concurrency 1,8,32 \
  --json bench/results/load_onnx_int8_freeze_vs_nofreeze_wrk_2026-12-01.json 2>&1 | grep -v "^  round"
kill $SP; wait $SP 2>/dev/null
echo "== end $(date -u +%FT%TZ)"
