#!/usr/bin/env bash
# Round 10 (issue #31): every measurement the issue asks for, as three kinds of invocation, each ONE
# results file however many calls it takes (`--resume` keeps what a call measured and runs the rest):
#
#   scaling      OUT/scaling.json: the QLoRA and LoRA recipes on 1 GPU (2 accumulation steps), DDP and
#                FSDP on 2, and FSDP without resharding after forward (parameters stay gathered from
#                forward to backward, one all-gather a step instead of two). Only where 2+ GPUs are
#                visible, and then first: such machines are lent rarely.
#   table        OUT/throughput.json: TRL's defaults, TRL at its own best knobs (at 8192 and 4096), the
#                three recipes as committed, Unsloth QLoRA and LoRA (when UNSLOTH_SITE names
#                bench/unsloth_wheels.sh's --target dir) and the equal-memory rows, then the levers: the
#                lean recipe at 4096-token packs three times in a row (steadiness), each recipe with
#                regional compilation and Liger's loss kernel only (-rcl), and the lean recipe at 4096
#                with static shapes (packs padded to 4096) plain and with CUDA graphs (-rcg: regional
#                compilation in torch.compile's reduce-overhead mode), three times.
#   equivalence  OUT/equivalence_NAME.json (+ _report.json, _losses.png): each lever's per-step losses
#                against the same recipe without it, 22 steps on the 4-layer Nemotron shape, within 0.1%
#                (bench/fast_path_report.py).
#
#   export PYTHONPATH=/tmp/site:$PWD   # where a lent image lacks trl, datasets, bitsandbytes, liger-kernel
#   bash bench/perf_round10.sh OUT     # again, with the same OUT, until it prints "all measured"
#
# Each invocation runs under what is left of BUDGET_S (default 560 s, for a 600 s call); the variant it
# was measuring when time ran out is measured again by the next call. An invocation that ran to its end
# is done (OUT/NAME.done) and is not started again with the same variants, even where one of them
# failed: the failure is in its results file, with the worker's log beside it.
#
# Environment: FIQA (the FiQA CSV folder, or a preprocessed JSONL folder; default shared/data/fiqa-sample,
# then ../shared/data/fiqa-sample), WORK (default /tmp/round10_work: the random models, runs and the
# inductor cache, reused on a warm machine), BUDGET_S, UNSLOTH_SITE, PYTHON (default python3),
# SHAPE / EQ_SHAPE (default nemotron / nemotron-4-layers; tiny for a dry run of the plumbing on a CPU),
# STAGES (default "scaling table equivalence").
set -uo pipefail
out=${1:?usage: bash bench/perf_round10.sh OUT_DIR}
work=${WORK:-/tmp/round10_work}
budget=${BUDGET_S:-560}
py=${PYTHON:-python3}
shape=${SHAPE:-nemotron}; eq_shape=${EQ_SHAPE:-nemotron-4-layers}
stages=" ${STAGES:-scaling table equivalence} "
mkdir -p "$out" "$work"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$work/inductor}  # one cache for every compiled variant
export USE_HUB_KERNELS=${USE_HUB_KERNELS:-NO} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1
export TORCH_LOGS=${TORCH_LOGS:-graph_breaks,recompiles}  # the compiled variants' logs say where a layer broke
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
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

# invocation NAME COMMAND...: run COMMAND (a --resume invocation writing OUT/NAME.json) under what is
# left of the budget, unless an earlier call ran it to its end.
invocation() {
  local name=$1
  shift
  # done means run to its end with these very variants: a call that adds one (Unsloth's site arrived) resumes it
  if [ -f "$out/$name.done" ] && [ "$(cat "$out/$name.done")" = "$*" ]; then echo "$name: all measured"; return; fi
  local left=$((budget - (SECONDS - start)))
  if ((${#pending[@]} || left < 60)); then
    echo "left for the next call: $name (${left}s left)"
    pending+=("$name")
    return
  fi
  local began=$SECONDS
  timeout "$left" "$@" >> "$out/$name.stdout" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "$name: cut off after $((SECONDS - began))s, the rest is left for the next call"
    pending+=("$name")
  else
    printf '%s' "$*" > "$out/$name.done"
    echo "$name: ran to its end in $((SECONDS - began))s (exit $rc)"
  fi
}

throughput() {  # throughput NAME SHAPE BENCH_ARGS...: one bench.throughput invocation, OUT/NAME.json
  local name=$1 shape=$2
  shift 2
  invocation "$name" "$py" -m bench.throughput --data_dir "$data" --shape "$shape" --work_dir "$work" \
    --out "$out/$name.json" --resume --keep_logs "$@"
}

L=recipes/nemotron_fiqa_lora.yaml
Q=recipes/nemotron_fiqa_qlora.yaml
N=recipes/nemotron_fiqa_qlora_lean.yaml
# Regional compilation with Liger's fused cross-entropy only: round 9 found Liger's RoPE, a
# torch.compiler.disable'd call, breaking every compiled layer (bench/README.md, round 9).
RC="--torch_compile true --regional_compilation true --liger_kernel_config '{\"rope\": false, \"rms_norm\": false, \"swiglu\": false}'"
P4096="--packing true --max_length 4096"
STATIC="--pad_to_multiple_of 4096"  # every pack padded to 4096 tokens: one shape, which CUDA graphs need
GRAPHS="$RC --torch_compile_mode reduce-overhead $STATIC"
U="--packing true --max_seq_length 8192 --per_device_train_batch_size 1"  # Unsloth as round 8 ran it
C="--include_num_input_tokens_seen non_padding"  # rows beside Unsloth count tokens as its rows do
OFFLOAD="--activation_checkpointing true --activation_checkpointing_kwargs '{\"offload\": true}'"

if [[ $stages == *" scaling "* ]]; then
  if ((gpus >= 2)); then
    invocation scaling "$py" -m bench.scaling --data_dir "$data" --shape "$shape" --work_dir "$work" \
      --out "$out/scaling.json" --resume --timeout 540 \
      --case "qlora-1gpu=single_gpu:1:$Q --gradient_accumulation_steps 2" \
      --case "qlora-ddp-2=multi_gpu:2:$Q" \
      --case "qlora-fsdp-2=fsdp_qlora:2:$Q" \
      --case "qlora-fsdp-2-gathered=fsdp_qlora+fsdp_reshard_after_forward=false:2:$Q" \
      --case "lora-1gpu=single_gpu:1:$L --gradient_accumulation_steps 2" \
      --case "lora-ddp-2=multi_gpu:2:$L" \
      --case "lora-fsdp-2=fsdp_lora:2:$L" \
      --case "lora-fsdp-2-gathered=fsdp_lora+fsdp_reshard_after_forward=false:2:$L" \
      --reference qlora-1gpu --reference lora-1gpu
  else
    echo "scaling: needs 2 GPUs, $gpus visible"
  fi
fi

if [[ $stages == *" table "* ]]; then
  V=(--variant trl-baseline --variant "nemotron_fiqa_qlora=$Q" --variant "nemotron_fiqa_lora=$L"
     --variant "nemotron_fiqa_qlora_lean=$N")
  if [ -n "${UNSLOTH_SITE:-}" ]; then
    V+=(--unsloth_site "$UNSLOTH_SITE" --variant "unsloth-qlora=unsloth-qlora $U" --variant "unsloth-lora=unsloth-lora $U")
  else
    echo "table: no Unsloth rows (set UNSLOTH_SITE)"
  fi
  V+=(--variant trl-best --variant "trl-best-4096=trl-best --max_length 4096"
      --variant "lean-4096-a=$N $P4096 $C" --variant "lean-4096-b=$N $P4096 $C" --variant "lean-4096-c=$N $P4096 $C"
      --variant "lora-rcl=$L $RC" --variant "qlora-rcl=$Q $RC" --variant "lean-rcl=$N $RC"
      --variant "lora-offload=$L $OFFLOAD $C" --variant "lean-4096-static=$N $P4096 $C $STATIC"
      --variant "lean-4096-rcg-a=$N $P4096 $C $GRAPHS" --variant "lean-4096-rcg-b=$N $P4096 $C $GRAPHS"
      --variant "lean-4096-rcg-c=$N $P4096 $C $GRAPHS")
  throughput throughput "$shape" --steps 10 --warmup 10 --log_every 10 "${V[@]}"
fi

if [[ $stages == *" equivalence "* ]]; then
  E=(--steps 22 --warmup 3 --log_every 1)  # every step's loss
  throughput equivalence_lora "$eq_shape" "${E[@]}" --variant "lora=$L" --variant "lora-rcl=$L $RC"
  throughput equivalence_qlora "$eq_shape" "${E[@]}" --variant "qlora=$Q" --variant "qlora-rcl=$Q $RC"
  throughput equivalence_lean "$eq_shape" "${E[@]}" --variant "lean=$N" --variant "lean-rcl=$N $RC"
  throughput equivalence_lean4096 "$eq_shape" "${E[@]}" --variant "lean-4096=$N $P4096" \
    --variant "lean-4096-static=$N $P4096 $STATIC" --variant "lean-4096-rcg=$N $P4096 $GRAPHS"
  for pair in lora:lora qlora:qlora lean:lean lean4096:lean-4096; do  # invocation:its plain variant
    file=$out/equivalence_${pair%%:*}.json
    [ -f "${file%.json}.done" ] && [ ! -f "${file%.json}_report.json" ] || continue
    "$py" -m bench.fast_path_report "$file" --reference "${pair#*:}" --tolerance 0.001 \
      --out "${file%.json}_report.json" --plot "${file%.json}_losses.png" > /dev/null 2>&1 \
      || echo "note: fast_path_report failed for $file"
  done
fi

"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    if path.name.endswith("_report.json"):
        for c in json.loads(path.read_text())["comparisons"]:
            print(f"{path.stem:24} {c['name']:20} max rel loss diff {c['max_relative_difference']} over "
                  f"{c['steps_compared']} steps: {'within' if c['within_tolerance'] else 'OUTSIDE'} 0.1%")
        continue
    for r in json.loads(path.read_text())["results"]:
        speed = r.get("tokens_per_second") or 0
        print(f"{path.stem:24} {r['name']:20} " + (f"FAILED {r['error'][:100]}" if r.get("error") else
              f"{speed:>9,.0f} tok/s  {r.get('peak_allocated_gib', r.get('gpu_peak_used_gib', 'n/a'))} GiB  "
              f"{r.get('wall_seconds')}s" + (f"  scaling {r['scaling_efficiency']:.0%}" if "scaling_efficiency" in r else "")))
EOF
if ((${#pending[@]})); then
  echo "elapsed $((SECONDS - start))s; left for the next call: ${pending[*]}"
else
  echo "elapsed $((SECONDS - start))s; all measured"
fi
