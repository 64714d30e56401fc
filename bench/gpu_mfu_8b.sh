#!/usr/bin/env bash
# One device lease: training MFU of the paper's model shape (Qwen3-8B-Base, all 36 layers, random init,
# bf16) on one GPU at the paper's sequence lengths, beside the Qwen3-0.6B shape measured before (the same
# script, the same session: how far the cost model's earlier constant was from the real shape).
#     run: bash bench/gpu_mfu_8b.sh        (writes one JSON per configuration under $OUT, default /tmp/mfu)
set -u
OUT=${OUT:-/tmp/mfu}; mkdir -p "$OUT"
PY=$(command -v python || command -v python3)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
run() {  # name, then the bench's arguments
    local name=$1; shift
    timeout 150 "$PY" bench/gpu_train_mfu.py "$@" --max-steps 12 --time-box 120 >"$OUT/$name.json" \
        || echo "{\"failed\": \"$name\"}" >"$OUT/$name.json"
    "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], {k: d.get(k) for k in ('model','batch','seq','tokens_per_s','mfu','max_memory_gib','note','failed')})" "$OUT/$name.json"
}
run mfu_0.6b_b8_s2048 --shape 0.6b --batch 8 --seq 2048
run mfu_8b_b2_s4096 --shape 8b --batch 2 --seq 4096
run mfu_8b_b1_s8192 --shape 8b --batch 1 --seq 8192
run mfu_8b_b2_s8192 --shape 8b --batch 2 --seq 8192
