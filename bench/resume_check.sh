#!/usr/bin/env bash
# Checkpoint, stop and resume under a launch config, on a real accelerator:
#   bash bench/resume_check.sh accelerate_configs/fsdp_qlora.yaml recipes/nemotron_fiqa_qlora.yaml OUTPUT_DIR [--key value ...]
# Trains with an evaluation and a checkpoint every 2 steps and sends SIGTERM to every worker once
# checkpoint-2 exists: each rank saves its part of one more checkpoint and exits 143 (torchrun then
# reports the job as failed, exit 1), and run_manifest.json says "preempted". The same command is
# run again: it must resume from that checkpoint and finish at step 6 with exit 0. Last, the final
# adapter is opened to show that it is a whole PEFT adapter.
set -u
config=$1 recipe=$2 out=$3
shift 3
cmd=(python3 -m accelerate.commands.launch --config_file "$config" -m recipes.run "$recipe"
     --output_dir "$out" --max_steps 6 --eval_steps 2 --save_steps 2 --logging_steps 1 "$@")
rm -rf "$out"
"${cmd[@]}" > "$out.first.log" 2>&1 &
launcher=$!
until [ -f "$out/checkpoint-2/trainer_state.json" ] || ! kill -0 $launcher 2>/dev/null; do sleep 1; done
pkill -TERM -P $launcher  # every worker, as a scheduler preempting the job does
wait $launcher
echo "first run: launcher exit $?; ranks that stopped on SIGTERM: $(grep -c '^stopped: SIGTERM received' "$out.first.log");" \
     "checkpoints: $(ls -d "$out"/checkpoint-* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')"
echo "newest checkpoint holds: $(ls "$(ls -d "$out"/checkpoint-* | sort -t- -k2 -n | tail -1)" | tr '\n' ' ')"
echo "status after the stop: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['status'])" "$out/run_manifest.json")"
"${cmd[@]}" > "$out.second.log" 2>&1
echo "second run: exit $? (0 expected); $(grep -m1 -E 'resuming from|starting fresh' "$out.second.log")"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
from safetensors import safe_open
run = Path(sys.argv[1])
state = json.loads((run / "trainer_state.json").read_text()) if (run / "trainer_state.json").is_file() else {}
with safe_open(run / "adapter_model.safetensors", "pt") as f:
    shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
lora_a = [s for k, s in shapes.items() if "lora_A" in k]
print(f"final step {state.get('global_step')}; best {state.get('best_model_checkpoint')}; adapter tensors {len(shapes)}, "
      f"lora_A shapes {sorted(set(lora_a))}; manifest status {json.loads((run / 'run_manifest.json').read_text()).get('status')}")
PY
