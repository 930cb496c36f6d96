#!/usr/bin/env bash
# Round 9 (issue #31) on one GPU: plain TRL's defaults and its own best knobs, Unsloth (QLoRA and LoRA, when
# UNSLOTH_SITE names bench/unsloth_wheels.sh's --target dir) and the equal-memory rows beside them, the
# three Nemotron recipes with and without regional compilation (`torch_compile: true` +
# `regional_compilation: true`: accelerate compiles each decoder layer once and reuses it for all 32; the
# -rcl rows keep only Liger's loss kernel, so that nothing in a layer escapes the compiler), the lean
# recipe at 4096-token packs three times in a row with and without it (steadiness), and the per-step
# losses of each compiled recipe against the same recipe uncompiled on the 4-layer Nemotron shape (22
# steps, bench/fast_path_report.py, 0.1%).
#
#   export PYTHONPATH=/tmp/site:$PWD USE_HUB_KERNELS=NO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
#   bash bench/perf_round9.sh "$OUT" [DONE_DIR]
#
# Every row is its own `bench.throughput` invocation writing OUT/NAME.json (and OUT/NAME.NAME.log, the
# worker's whole output: compiled rows run with TORCH_LOGS=graph_breaks,recompiles) as soon as it ends.
# Resumable: a row whose JSON is already in OUT or in DONE_DIR (default bench/results/round9; copy the
# previous call's files there, the working tree carries them) is skipped, its DONE_DIR files copied to OUT
# so that OUT always holds the whole set so far. A row whose worker failed has a JSON too (with "error")
# and is not retried. Rows run in order of priority; the first row whose estimate does not fit in what is
# left of BUDGET_S (default 540 s, for a 600 s call) and every row after it are left for the next call
# (so pairs and the three steadiness rows stay together), and printed as such. The whole set
# needs about 45 device minutes from a bare machine (several calls). ONLY picks a call's rows when its
# packages arrive in parts (the TRL baselines and the 4-bit recipes need bitsandbytes, Unsloth its site).
#
# Environment: FIQA (the FiQA CSV folder, or a preprocessed JSONL folder; default shared/data/fiqa-sample,
# then ../shared/data/fiqa-sample), WORK (default /tmp/round9_work: the random models, runs and the
# inductor cache, all reused on a warm machine), BUDGET_S, STEPS / WARMUP / LOG_EVERY (10 / 10 / 10, as
# round 8), UNSLOTH_SITE, ONLY (space-separated row names: run just these, still skipping finished ones), PYTHON
# (default python3), SHAPE / EQ_SHAPE (default nemotron / nemotron-4-layers; tiny for a dry run on a CPU).
set -uo pipefail
out=${1:?usage: bash bench/perf_round9.sh OUT_DIR [DONE_DIR]}
done_dir=${2:-bench/results/round9}
work=${WORK:-/tmp/round9_work}
budget=${BUDGET_S:-540}
steps=${STEPS:-10}; warmup=${WARMUP:-10}; log_every=${LOG_EVERY:-10}
only=" ${ONLY:-} "
py=${PYTHON:-python3}
shape=${SHAPE:-nemotron}; eq_shape=${EQ_SHAPE:-nemotron-4-layers}  # SHAPE=tiny EQ_SHAPE=tiny: a dry run of the plumbing
mkdir -p "$out" "$work"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$work/inductor}  # one cache for every compiled row
export USE_HUB_KERNELS=${USE_HUB_KERNELS:-NO} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1
start=$SECONDS
pending=()

src=${FIQA:-}
if [ -z "$src" ]; then
  for candidate in shared/data/fiqa-sample ../shared/data/fiqa-sample; do
    [ -d "$candidate" ] && src=$candidate && break
  done
fi
if [ -f "$src/train.jsonl" ]; then
  data=$src
else
  data=$work/fiqa-sample
  if [ ! -f "$data/train.jsonl" ]; then
    [ -d "$src" ] || { echo "error: no FiQA folder (set FIQA)" >&2; exit 2; }
    "$py" -m preprocess.fiqa --source "$src" --out "$data" || exit 1
  fi
fi

[ -f "$out/environment.json" ] || "$py" - > "$out/environment.json" <<'EOF'
import importlib, json, os, torch
versions = {}
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger_kernel", "datasets", "triton"):
    try:
        module = importlib.import_module(name)
        versions[name] = getattr(module, "__version__", "?")
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        versions[name] = f"not importable: {type(exc).__name__}: {exc}"
print(json.dumps({"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "versions": versions,
                  "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "USE_HUB_KERNELS", "TORCHINDUCTOR_CACHE_DIR")}},
                 indent=2))
EOF

# row NAME ESTIMATE_S SHAPE BENCH_ARGS...: one bench.throughput invocation, OUT/NAME.json.
row() {
  local name=$1 estimate=$2 shape=$3
  shift 3
  if [ "$only" != "  " ] && [[ $only != *" $name "* ]]; then return; fi
  if [ -f "$out/$name.json" ]; then echo "skip $name: in $out"; return; fi
  if [ -f "$done_dir/$name.json" ]; then
    cp "$done_dir/$name".* "$out/" 2>/dev/null
    echo "skip $name: done in $done_dir"
    return
  fi
  local left=$((budget - (SECONDS - start)))
  if ((${#pending[@]} || estimate > left)); then  # in order: once one row waits, the rest wait behind it
    echo "left for the next call: $name (~${estimate}s, ${left}s left)"
    pending+=("$name")
    return
  fi
  local began=$SECONDS logs=()
  [[ $* == *regional_compilation* ]] && logs=(TORCH_LOGS=graph_breaks,recompiles)  # an empty TORCH_LOGS fails torch
  env "${logs[@]}" "$py" -m bench.throughput --data_dir "$data" --shape "$shape" --work_dir "$work" \
    --out "$out/$name.json" --keep_logs "$@" > "$out/$name.stdout" 2>&1
  echo "$name: exit $?, $((SECONDS - began))s (estimate ${estimate}s), $(tail -n 1 "$out/$name.stdout")"
}

# equivalence NAME: the per-step losses of NAME's variants against its first one, within 0.1%.
equivalence() {
  local name=$1 reference=$2
  [ -f "$out/$name.json" ] && [ ! -f "$out/${name}_report.json" ] || return 0
  "$py" -m bench.fast_path_report "$out/$name.json" --reference "$reference" --tolerance 0.001 \
    --out "$out/${name}_report.json" --plot "$out/${name}_losses.png" > /dev/null 2>&1 \
    || echo "note: fast_path_report failed for $name"
}

L=recipes/nemotron_fiqa_lora.yaml
Q=recipes/nemotron_fiqa_qlora.yaml
N=recipes/nemotron_fiqa_qlora_lean.yaml
# Regional compilation with Liger's fused cross-entropy only: round 9 (one H100) found Liger's RoPE, a
# torch.compiler.disable'd call, breaking every compiled layer (bench/README.md, round 9).
RC="--torch_compile true --regional_compilation true --liger_kernel_config '{\"rope\": false, \"rms_norm\": false, \"swiglu\": false}'"
M=(--steps "$steps" --warmup "$warmup" --log_every "$log_every")
E=(--steps 22 --warmup 3 --log_every 1)  # every step's loss, as the fast-path equivalence rows
P4096="--packing true --max_length 4096"
U="--packing true --max_seq_length 8192 --per_device_train_batch_size 1"  # Unsloth as round 8 ran it
C="--include_num_input_tokens_seen non_padding"  # the equal-memory rows count tokens as the Unsloth rows do

# Estimates (seconds, one H100, from round 9's wall times: the model build 38, trl-baseline 55, trl-best
# 116, qlora 155, lora 41, lean 113, lora compiled 88). The first row of a group carries the whole
# group's estimate, so that a pair or the three steadiness rows start only where all fit.
row trl-baseline 100 "$shape" "${M[@]}" --variant trl-baseline
row trl-best 130 "$shape" "${M[@]}" --variant trl-best
if [ -f "$out/trl-best.json" ] && grep -qi "out of memory" "$out/trl-best.json"; then
  row trl-best-4096 60 "$shape" "${M[@]}" --variant "trl-best-4096=trl-best --max_length 4096"
fi
row lora 150 "$shape" "${M[@]}" --variant "lora=$L"
row lora-rcl 100 "$shape" "${M[@]}" --variant "lora-rcl=$L $RC"
row qlora 300 "$shape" "${M[@]}" --variant "qlora=$Q"
row qlora-rcl 150 "$shape" "${M[@]}" --variant "qlora-rcl=$Q $RC"
row lean 250 "$shape" "${M[@]}" --variant "lean=$N"
row lean-rcl 130 "$shape" "${M[@]}" --variant "lean-rcl=$N $RC"
if [ -n "${UNSLOTH_SITE:-}" ]; then  # bench/unsloth_wheels.sh's --target dir
  row unsloth-qlora 200 "$shape" "${M[@]}" --variant "unsloth-qlora=unsloth-qlora $U" --unsloth_site "$UNSLOTH_SITE"
  row unsloth-lora 100 "$shape" "${M[@]}" --variant "unsloth-lora=unsloth-lora $U" --unsloth_site "$UNSLOTH_SITE"
else
  echo "left: unsloth-qlora, unsloth-lora (set UNSLOTH_SITE)"
fi
row lora-offload 80 "$shape" "${M[@]}" \
  --variant "lora-offload=$L --activation_checkpointing true --activation_checkpointing_kwargs '{\"offload\": true}' $C"
row lean-4096-a 300 "$shape" "${M[@]}" --variant "lean-4096-a=$N $P4096 $C"
for run in b c; do row "lean-4096-$run" 100 "$shape" "${M[@]}" --variant "lean-4096-$run=$N $P4096 $C"; done
row lean-4096-rcl-a 360 "$shape" "${M[@]}" --variant "lean-4096-rcl-a=$N $P4096 $C $RC"
for run in b c; do row "lean-4096-rcl-$run" 120 "$shape" "${M[@]}" --variant "lean-4096-rcl-$run=$N $P4096 $C $RC"; done
row eq-lora 150 "$eq_shape" "${E[@]}" --variant "lora=$L" --variant "lora-rcl=$L $RC"
equivalence eq-lora lora
row eq-lean 200 "$eq_shape" "${E[@]}" --variant "lean=$N" --variant "lean-rcl=$N $RC"
equivalence eq-lean lean
row eq-qlora 200 "$eq_shape" "${E[@]}" --variant "qlora=$Q" --variant "qlora-rcl=$Q $RC"
equivalence eq-qlora qlora

"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    if path.name == "environment.json" or path.name.endswith("_report.json"):
        continue
    for r in json.loads(path.read_text())["results"]:
        print(f"{path.stem:16} {r['name']:16} " + (f"FAILED {r['error'][:100]}" if "error" in r else
              f"{r['tokens_per_second'] or 0:>9,.0f} tok/s  {r.get('peak_allocated_gib', 'n/a')} GiB  {r['wall_seconds']}s"))
for path in sorted(out.glob("*_report.json")):
    for c in json.loads(path.read_text())["comparisons"]:
        print(f"{path.stem:16} {c['name']:16} max rel loss diff {c['max_relative_difference']} over "
              f"{c['steps_compared']} steps: {'within' if c['within_tolerance'] else 'OUTSIDE'} 0.1%")
EOF
echo "elapsed $((SECONDS - start))s; left for the next call: ${pending[*]:-none}"
