cd /work/main
export SLIMTEXT_BACKEND=onnx-int8 SLIMTEXT_RUN_DIR=/work/runs/toxic-minilm
date -u +%FT%TZ
base() {  # port, extra uvicorn flags
  PYTHONPATH=/tmp/base20/src .venv/bin/python -m uvicorn --factory slimtext.serve.app:app_from_env --host 127.0.0.1 --port $1 --log-level warning "${@:2}" > /tmp/lb/base.log 2>&1 &
  SP=$!
}
echo "== before (780fead) as shipped: h11 + asyncio, wrk"
base 8801 --http h11 --loop asyncio
.venv/bin/python bench/load.py --url http://127.0.0.1:8801 --client wrk --rounds 3 --seconds 5 --concurrency 1,8,32 --json bench/results/load_onnx_int8_before_batching_wrk_quiet_2026-12-01.json 2>&1 | tail -4
echo "== before (780fead) as shipped: h11 + asyncio, httpx"
.venv/bin/python bench/load.py --url http://127.0.0.1:8801 --rounds 3 --seconds 5 --concurrency 1,8,32 --json bench/results/load_onnx_int8_before_batching_quiet_2026-12-01.json 2>&1 | tail -4
kill $SP; wait $SP 2>/dev/null
echo "== before (780fead) with httptools + uvloop, wrk"
base 8802 --http httptools --loop uvloop
.venv/bin/python bench/load.py --url http://127.0.0.1:8802 --client wrk --rounds 3 --seconds 5 --concurrency 1,8,32 --json bench/results/load_onnx_int8_before_batching_httptools_wrk_quiet_2026-12-01.json 2>&1 | tail -4
kill $SP; wait $SP 2>/dev/null
echo "== now, off/on, wrk"
.venv/bin/python bench/load.py --run /work/runs/toxic-minilm --client wrk --batching off,on --rounds 3 --seconds 5 --concurrency 1,8,32 --json bench/results/load_onnx_int8_batching_wrk_quiet_2026-12-01.json 2>&1 | tail -10
echo "== now, off/on, httpx"
.venv/bin/python bench/load.py --run /work/runs/toxic-minilm --batching off,on --rounds 3 --seconds 5 --concurrency 1,8,32 --json bench/results/load_onnx_int8_batching_quiet_2026-12-01.json 2>&1 | tail -10
date -u +%FT%TZ
