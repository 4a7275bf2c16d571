#!/bin/bash
cd /work/main
PIDS=$(pgrep -f "slimtext train"); kill -STOP $PIDS; trap 'kill -CONT $PIDS; echo continued' EXIT
echo "== $(date -u +%FT%TZ) no spinning (baseline) vs default spinning (on), fused export, batching on"
SLIMTEXT_BATCHING=on SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm-fused SLIMTEXT_BACKEND=onnx-int8 PYTHONPATH=<a worktree of 0080954 with allow_spinning 0>/src \
  .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port 8802 \
  --http slimtext.serve.app:NoDelayHTTPProtocol --log-level warning > /work/runs/quiet/spin.log 2>&1 &
SP=$!; sleep 8
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm-fused --client wrk --batching on \
  --baseline-url http://127.0.0.1:8802 --rounds 3 --seconds 4 --concurrency 1,8,32 --json bench/results/load_onnx_int8_spin_vs_nospin_wrk_2026-12-01.json 2>&1 | grep -v "^  round\|^wrote\|^server"
kill $SP; wait $SP 2>/dev/null
