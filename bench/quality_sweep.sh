#!/usr/bin/env bash
# The quality sweep behind the quality table in docs/evaluation.md: SmolLM2-135M-Instruct on the FiQA sample.
# One setting changes at a time around a centre (chat template, unpacked batch 8, lr 2e-4,
# 3 epochs, LoRA on all linear layers, greedy decoding with repetition_penalty 1.2), plus the
# recipe as it was before the sweep (completion format, packed 1024, 2 x 4 packs a step, 1 epoch).
# The recipe file now holds the chosen values, so every trial spells out what it changes.
# Trials run in order of importance, so a run cut short loses the least.
#
#   bash bench/quality_sweep.sh SOURCE_DIR WORK_DIR [FIRST LAST] [-- extra bench.quality run options]
#   python -m bench.quality score --work WORK_DIR --out bench/results/quality_....json
#
# FIRST and LAST (1-based, inclusive) run a slice of the list, e.g. when one machine call
# cannot hold them all; the slices share WORK_DIR and are scored together.
set -euo pipefail
source_dir=$1; work=$2; shift 2
first=${1:-1}; last=${2:-99}
[ $# -ge 2 ] && shift 2
[ "${1:-}" = "--" ] && shift
R=recipes/smollm2_fiqa_cpu.yaml
# Unpacked batches of 8, evaluated (and checkpointed) once per epoch on the tune slice; 1280 tokens
# keeps every FiQA-sample answer whole (1024 cut 6 of 284 answers and their EOS).
U="--packing false --per_device_train_batch_size 8 --gradient_accumulation_steps 1 --max_length 1280 --eval_strategy epoch --save_strategy epoch --num_train_epochs 3"
RP="--repetition_penalty 1.2"   # greedy decoding loops without a repetition guard (see bench/README.md)
trials=(
  "chat=$R --data_format chat $U $RP"
  "chat-norepeat4=$R --data_format chat $U --no_repeat_ngram_size 4"
  "completion=$R $U $RP"
  "completion-norepeat4=$R $U --no_repeat_ngram_size 4"
  "recipe-as-was=$R $RP --packing true --per_device_train_batch_size 2 --gradient_accumulation_steps 4 --max_length 1024 --num_train_epochs 1 --eval_strategy steps --eval_steps 4 --save_strategy steps --save_steps 4"
  "chat-lr5e-4=$R --data_format chat $U $RP --learning_rate 5e-4"
  "chat-5ep=$R --data_format chat $U $RP --num_train_epochs 5"
  "chat-packed=$R --data_format chat $U $RP --packing true --per_device_train_batch_size 1 --max_length 2456"
  "chat-lr1e-4=$R --data_format chat $U $RP --learning_rate 1e-4"
  "chat-qkv=$R --data_format chat $U $RP --lora_target_modules q_proj k_proj v_proj"
  "chat-1ep=$R --data_format chat $U $RP --num_train_epochs 1"
  "chat-greedy=$R --data_format chat $U"
)
args=()
for i in "${!trials[@]}"; do
  n=$((i + 1))
  if [ "$n" -ge "$first" ] && [ "$n" -le "$last" ]; then args+=(--trial "${trials[$i]}"); fi
done
python -m bench.quality run --source "$source_dir" --work "$work" "$@" "${args[@]}"
