#!/bin/bash
# Quiet measurements while the sweep's training is stopped (kill -STOP; CONT at the end).
cd /work/main
export SLIMTEXT_DATA=/work/shared/data
PIDS=$(pgrep -f "slimtext train")
echo "stopping $PIDS"; kill -STOP $PIDS
trap 'kill -CONT $PIDS; echo "continued $PIDS"' EXIT
echo "== start $(date -u +%FT%TZ) code $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== memory: now (off,on), then before (9b68896, off)"
.venv/bin/python bench/train_memory.py --model minilm-l6 --steps 60 --bucket off,on --json bench/results/train_memory_minilm_2026-12-01.json
PYTHONPATH=/work/before-mem/src .venv/bin/python bench/train_memory.py --model minilm-l6 --steps 60 --bucket off --json bench/results/train_memory_minilm_before_9b68896_2026-12-01.json
echo "== memory: mpnet-base, 2 steps of 8 x 512 tokens: now, then before (9b68896)"
.venv/bin/python bench/train_memory.py --model mpnet-base --steps 2 --lengths 512-512 --bucket off --json bench/results/train_memory_mpnet512_2026-12-01.json
PYTHONPATH=/work/before-mem/src .venv/bin/python bench/train_memory.py --model mpnet-base --steps 2 --lengths 512-512 --bucket off --json bench/results/train_memory_mpnet512_before_9b68896_2026-12-01.json
echo "== load: before batching (780fead) as baseline, off, on; wrk"
SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm SLIMTEXT_BACKEND=onnx-int8 PYTHONPATH=/work/base20/src \
  .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port 8801 \
  --http slimtext.serve.app:NoDelayHTTPProtocol --log-level warning > /work/runs/quiet/base.log 2>&1 &
SP=$!
SLIMTEXT_BACKEND=onnx-int8 .venv/bin/python bench/load.py --run /work/runs/toxic-minilm --client wrk --batching off,on \
  --baseline-url http://127.0.0.1:8801 --rounds 3 --seconds 5 --concurrency 1,8,32 \
  --json bench/results/load_onnx_int8_vs_before_wrk_2026-12-01b.json 2>&1 | grep -v "^  round"
kill $SP; wait $SP 2>/dev/null
echo "== end $(date -u +%FT%TZ)"
