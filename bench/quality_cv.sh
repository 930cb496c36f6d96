#!/usr/bin/env bash
# The cross-validated quality runs behind "Cross-validated quality" in bench/README.md: each real model
# on the pooled FiQA sample, 5 folds, its own recipe and prompt format. Resumable: rerun the same line
# (e.g. in the next machine call) and finished folds are kept; --stop_after ends a call cleanly.
#
#   bash bench/quality_cv.sh MODEL SOURCE_DIR WORK_DIR [-- extra bench.quality_cv run options]
#   python -m bench.quality_cv score --work WORK_DIR --out bench/results/quality_cv_MODEL_....json
#
# MODEL: smollm2 (SmolLM2-135M-Instruct, chat template: its sweep's choice) or gemma3 (Gemma-3-270M,
# pretrained, no chat template: completion format). The tuned model answers with the two repetition
# guards only: plain greedy made the tuned SmolLM2 loop (bench/README.md); the base model also
# answers plain greedy, and each side's decoding is chosen on the fold's tune slice.
set -euo pipefail
model=$1; source_dir=$2; work=$3; shift 3
[ "${1:-}" = "--" ] && shift
case $model in
  smollm2) recipe=recipes/smollm2_fiqa_cpu.yaml; format=chat ;;
  gemma3) recipe=recipes/gemma3_fiqa_cpu.yaml; format=completion ;;
  *) echo "error: MODEL must be smollm2 or gemma3" >&2; exit 2 ;;
esac
python -m bench.quality_cv run --model "$model" --source "$source_dir" --work "$work" --recipe "$recipe" \
  --data_format "$format" --folds 5 --tune_questions 40 --tuned_decodings rp1.2 norepeat4 "$@"
