#!/usr/bin/env bash
# Paired check of the toy's GRPO learning rate (README, "What `make run` shows"): GRPO rounds through
# the CLI steps (masa rollout -> score -> train), 128 prompts per round drawn once with seed 0, so every
# setting sees the same prompts and sampling seeds in round r; prints the training-rollout accuracy of
# round r (the policy after r rounds, 1,024 samples) per setting, and the base model's on those prompts.
#
#   bash bench/grpo_lr_check.sh OUT [ROUNDS]       # settings: lr 2e-4 (the preset until 2026-12-02) and 2e-5 (since)
#
# 2026-12-02, 2-core machine, 5 rounds: base 0.312/0.300/0.292/0.324/0.295, lr 2e-4 0.312/0.205/0.243/
# 0.232/0.222, lr 2e-5 0.312/0.302/0.314/0.344/0.331. ~2 min per round on an idle machine.
set -euo pipefail
out=$(realpath -m "$1"); rounds=${2:-5}
cd "$(dirname "$0")/.."
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
masa=.venv/bin/masa
mkdir -p "$out"
# the toy model and data (built into the toy cache if missing)
dirs=$(.venv/bin/python -c "
from masa.toy import build, get_recipe
a = build(get_recipe('toy'), progress=False)
print(a.model_dir, a.train_parquet)")
read -r base train <<<"$dirs"
.venv/bin/python - "$train" "$out" "$rounds" <<'EOF'
import sys, pandas as pd
d = pd.read_parquet(sys.argv[1]).sample(frac=1, random_state=0)
for r in range(int(sys.argv[3])):
    d.iloc[r * 128:(r + 1) * 128].to_parquet(f"{sys.argv[2]}/prompts_{r}.parquet")
EOF
accuracy() { .venv/bin/python -c "import json,sys; t=open(sys.argv[1]).read(); print(json.loads(t[t.index('{'):])['train_accuracy'])" "$1"; }

run() {  # NAME TRAIN(yes|no) [--set k=v ...]
  local name=$1 train=$2; shift 2
  local w=$out/$name m=$base line=$name
  for r in $(seq 0 $((rounds - 1))); do
    $masa rollout --prompts "$out/prompts_$r.parquet" --model "$m" --out "$w/r$r/roll" --round "$r" --branch grpo --preset toy "$@" > "$w.r$r.log" 2>&1
    $masa score --rollouts "$w/r$r/roll/rollouts.parquet" --model "$m" --out "$w/r$r/score" --branch grpo --preset toy "$@" > "$w.r$r.score.log" 2>&1
    line="$line $(accuracy "$w.r$r.score.log")"
    if [ "$train" = yes ] && [ "$r" -lt $((rounds - 1)) ]; then
      $masa train --model "$m" --scored "$w/r$r/score/scored.parquet" --out "$w/r$r/ckpt" --branch grpo --round "$r" --preset toy --store "$w/store" "$@" >> "$w.r$r.log" 2>&1
      m=$w/r$r/ckpt
    fi
  done
  echo "$line"
}
echo "training-rollout accuracy per round (round 0: the base model):"
run base no
run lr2e-4 yes --set train.lr=2e-4
run lr2e-5 yes --set train.lr=2e-5
