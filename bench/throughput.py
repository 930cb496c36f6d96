"""Training throughput of recipes against plain TRL, on random weights of a given shape.

    python -m bench.throughput --data_dir data/fiqa-sample \\
        --variant trl-baseline --variant qlora=recipes/nemotron_fiqa_qlora.yaml \\
        --variant "qlora-packed=recipes/nemotron_fiqa_qlora.yaml --packing true --max_length 8192"

Builds a model of the exact Llama-3.1-Nemotron-Nano-8B-v1 shape with random weights (speed
and memory do not depend on weight values; ``--shape tiny`` for a quick CPU check) and a
BPE tokenizer trained on the data's text, then runs each variant for ``--warmup`` +
``--steps`` optimizer steps in its own process: a recipe through the exact path of
``recipes.run`` (with ``--key value`` overrides), or ``trl-baseline``, TRL's defaults
(QLoRA NF4, LoRA r8 on all linear layers, batch 4 padded, activation checkpointing, sdpa),
``trl-best``, plain TRL at its own best knobs (a bf16 base, LoRA r16 on all linear layers, bfd packing
into 8192-token packs, padding-free, Liger where it imports on a GPU, no activation checkpointing,
flex attention; ``plain_trl_knobs`` says exactly what each sets; ``NAME=trl-best --key value`` changes
SFTConfig fields), or ``unsloth-qlora`` / ``unsloth-lora``, Unsloth at its own recommended settings
(bench/unsloth_variant.py; run from the ``--unsloth_site`` dir that bench/unsloth_wheels.sh fills).
Reports non-padding tokens/s in steady state (after the warm-up), peak GPU memory, MFU and
the ratio to the baseline; writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# Dense bf16 peak of an H100/H200 SXM by the datasheet; MFU is quoted against it.
PEAK_BF16_FLOPS = 989e12

SHAPES = {
    "nemotron": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0}, rope_theta=500000.0),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=4096, max_position_embeddings=4096),
}


# The Nemotron layer shapes with 4 decoder layers: for checks of training behaviour (the losses of
# fast paths against the plain path), where depth only adds time.
SHAPES["nemotron-4-layers"] = {**SHAPES["nemotron"], "num_hidden_layers": 4}


def matmul_parameters(shape: dict) -> int:
    """Weights that every token multiplies through: the decoder's linear layers and lm_head."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + h * i * 3
    return layers * per_layer + h * shape["vocab_size"]


def flops_per_token(shape: dict) -> float:
    """LoRA on a frozen base: forward (2N) + backward through activations (2N); adapters are negligible."""
    return 4.0 * matmul_parameters(shape)


def build_assets(work: Path, shape_name: str, data_dir: Path) -> Path:
    """A random-weight model folder (bf16) with a tokenizer trained on the data's text."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from recipekit.training.smoke_assets import build_tokenizer

    model_dir = work / f"random-{shape_name}"
    if (model_dir / "config.json").is_file():
        return model_dir
    texts = []
    for line in (data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        texts += [record["question"], record["answer"]]
    tokenizer = build_tokenizer(vocab_size=min(16000, SHAPES[shape_name]["vocab_size"] - 8), corpus=texts)
    config = LlamaConfig(**SHAPES[shape_name], bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, torch_dtype="bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if device == "cuda" else torch.float32)
    tokenizer.save_pretrained(model_dir)
    model.save_pretrained(model_dir)
    del model
    # The float32 init and its bf16 copy leave ~31.5 GiB (the 8B shape) cached in this process, which runs
    # no training itself: hand it back, or every worker of the first invocation on a machine trains with
    # that much less GPU memory (an H100 then ran TRL's best knobs out of memory).
    torch.cuda.empty_cache()
    return model_dir


def logged_tokens(row: dict) -> float | None:
    """A log entry's cumulative token count: the trainer's where it kept one, else TRL's ``num_tokens``."""
    return row.get("num_input_tokens_seen", row.get("num_tokens"))


def steady_state(log_history: list[dict], warmup: int) -> dict:
    """Non-padding tokens per second over the steps after the warm-up, from the training logs.

    A log covers the steps since the one before (``step_time_seconds`` is their mean); tokens are
    the trainer's count where it kept one, else TRL's ``num_tokens``. Logs that cover warm-up
    steps are left out whole."""
    rows = [h for h in log_history if "loss" in h and logged_tokens(h) is not None]
    previous_tokens, previous_step, tokens, seconds = 0, 0, 0, 0.0
    for row in rows:
        seen = logged_tokens(row)
        if previous_step >= warmup and "step_time_seconds" in row:  # a log without a time: its window is left out
            tokens += seen - previous_tokens
            seconds += row["step_time_seconds"] * (row["step"] - previous_step)
        previous_tokens, previous_step = seen, row["step"]
    return {"tokens": round(tokens), "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else None}


def measured_run_overrides(model_dir, data_dir, output_dir, max_steps: int, log_every: int = 1) -> list[str]:
    """Recipe overrides for a measured run: the given model and data, a fresh output dir, a log
    every ``log_every`` steps, no evaluation, checkpoints or resuming, and the metrics plugins."""
    return ["--model_name_or_path", str(model_dir), "--data_dir", str(data_dir),
            "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
            "--max_steps", str(max_steps), "--logging_steps", str(log_every),
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--resume_from_checkpoint", "", "--report_to", "none",
            "--plugins", "plugins.throughput.Throughput", "plugins.loss_curves.LossCurves"]


def run_recipe_variant(spec: dict) -> dict:
    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import build_trainer

    argv = [spec["recipe"], *shlex.split(spec.get("overrides", "")),
            *measured_run_overrides(spec["model_dir"], spec["data_dir"], spec["output_dir"],
                                    spec["warmup"] + spec["steps"], spec.get("log_every", 1))]
    recipe = parse_recipe(argv)
    trainer, _ = build_trainer(recipe)
    trainer.train()
    return {"log_history": trainer.state.log_history, "settings": recipe.resolved}


def liger_or_why_not(gpu: bool) -> tuple[bool, str | None]:
    """Whether ``trl-best`` can turn Liger on here, and why not where it cannot."""
    if not gpu:
        return False, "off: Liger's Triton kernels need a GPU"
    try:
        import liger_kernel  # noqa: F401
    except ImportError as exc:
        return False, f"off: liger_kernel does not import ({exc})"
    return True, None


def plain_trl_knobs(kind: str, gpu: bool) -> dict:
    """What a plain-TRL variant sets, on top of TRL's and PEFT's defaults.

    ``baseline`` (``trl-baseline``): TRL's defaults as its documentation writes them: QLoRA NF4 (a bf16
    compute dtype) on a GPU, LoRA r8 alpha 32 on all linear layers, batches of 4 padded, activation
    checkpointing on (SFTConfig's default), sdpa.

    ``best`` (``trl-best``): TRL's own best knobs, no project code: a bf16 base (no quantization), LoRA
    r16 alpha 32 on all linear layers (PEFT's default float32 adapters, dropout 0), TRL's bfd packing
    into one 8192-token pack a step (padding-free, which bfd implies), ``use_liger_kernel`` where
    liger_kernel imports and a GPU is there (the row says when it was off and why), no activation
    checkpointing; flex_attention on a GPU (the attention transformers ships that keeps each packed
    document to itself without flash-attn, which the GPU image lacks), sdpa on a CPU.
    """
    if kind == "baseline":
        quantized = {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}} if gpu else {}
        return {"init": {"attn_implementation": "sdpa", **quantized}, "lora": {"r": 8, "lora_alpha": 32},
                "config": {"per_device_train_batch_size": 4}}
    liger, why_not = liger_or_why_not(gpu)
    return {"init": {"attn_implementation": "flex_attention" if gpu else "sdpa"}, "lora": {"r": 16, "lora_alpha": 32},
            "config": {"per_device_train_batch_size": 1, "packing": True, "packing_strategy": "bfd",
                       "max_length": 8192, "use_liger_kernel": liger, "activation_checkpointing": False},
            "liger_note": why_not}


def sftconfig_overrides(text: str) -> dict:
    """``--key value`` pairs of a ``trl-best`` variant, as SFTConfig arguments (values read as YAML)."""
    import yaml

    words = shlex.split(text)
    if len(words) % 2 or not all(w.startswith("--") for w in words[::2]):
        raise SystemExit(f"error: trl-best overrides must be --key value pairs, not {text!r}")
    return {key[2:]: yaml.safe_load(value) for key, value in zip(words[::2], words[1::2])}


def run_plain_trl(spec: dict) -> dict:
    """Plain TRL SFTTrainer + PEFT, as a user would write it from TRL's documentation, with the knobs of
    ``plain_trl_knobs`` (``trl-baseline``: TRL's defaults; ``trl-best``: TRL's own best knobs)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from plugins.throughput import ThroughputCallback

    gpu = torch.cuda.is_available()
    knobs = plain_trl_knobs(spec.get("trl", "baseline"), gpu)
    knobs["config"].update(sftconfig_overrides(spec.get("overrides", "")))
    init = {"dtype": torch.bfloat16 if gpu else torch.float32, **knobs["init"]}
    if "quantization_config" in init:
        init["quantization_config"] = BitsAndBytesConfig(**init["quantization_config"],
                                                         bnb_4bit_compute_dtype=torch.bfloat16)
    config = SFTConfig(output_dir=spec["output_dir"], max_steps=spec["warmup"] + spec["steps"],
                       logging_steps=spec.get("log_every", 1), save_strategy="no", report_to="none", bf16=gpu,
                       use_cpu=not gpu, model_init_kwargs=init, dataloader_pin_memory=gpu,
                       **knobs["config"])  # no trainer token count, TRL's default: the timer reads TRL's
    dataset = load_dataset("json", data_files=str(Path(spec["data_dir"]) / "train.jsonl"), split="train")
    timer = ThroughputCallback()
    trainer = SFTTrainer(
        model=spec["model_dir"], args=config, train_dataset=dataset.select_columns(["prompt", "completion"]),
        processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]),
        peft_config=LoraConfig(**knobs["lora"], target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[timer],
    )
    trainer.train()
    settings = {"load_in_4bit": "quantization_config" in init, "lora_r": knobs["lora"]["r"],
                "lora_target_modules": "all-linear", "attn_implementation": init["attn_implementation"],
                "per_device_train_batch_size": config.per_device_train_batch_size,
                "activation_checkpointing": config.activation_checkpointing, "max_length": config.max_length,
                "packing": config.packing, "packing_strategy": config.packing_strategy if config.packing else None,
                "padding_free": bool(getattr(trainer, "padding_free", config.padding_free)),
                "use_liger_kernel": config.use_liger_kernel}
    if knobs.get("liger_note"):
        settings["liger_note"] = knobs["liger_note"]
    return {"log_history": trainer.state.log_history, "settings": settings}


def worker(spec: dict) -> dict:
    """One variant, in this process: train, then measure."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    load_before = os.getloadavg()[0]  # a short-pack step waits on the CPU: a busy host shows in its speed
    if spec["kind"] == "unsloth":
        from bench.unsloth_variant import run_unsloth_variant

        outcome = run_unsloth_variant(spec)
    else:
        outcome = run_plain_trl(spec) if spec["kind"] == "baseline" else run_recipe_variant(spec)
    result = {"name": spec["name"], **steady_state(outcome["log_history"], spec["warmup"]),
              "settings": outcome["settings"], "wall_seconds": round(time.perf_counter() - started, 1),
              "losses": [[h["step"], h["loss"]] for h in outcome["log_history"] if "loss" in h],
              "host_load_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}
    if torch.cuda.is_available():
        result["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        result["gpu"] = torch.cuda.get_device_name(0)
    shape = SHAPES[spec["shape"]]
    if result["tokens_per_second"]:
        result["mfu"] = round(result["tokens_per_second"] * flops_per_token(shape) / PEAK_BF16_FLOPS, 4)
    return result


def parse_variant(text: str) -> dict:
    from bench.unsloth_variant import is_unsloth_variant

    if text == "trl-baseline":
        return {"name": "trl-baseline", "kind": "baseline"}
    base, _, overrides = text.partition(" ")
    if base == "trl-best":  # trl-best [--sftconfig_key value ...]
        return {"name": "trl-best", "kind": "baseline", "trl": "best", "overrides": overrides.strip()}
    if is_unsloth_variant(text):  # unsloth-qlora / unsloth-lora [--key value ...]
        base, _, overrides = text.partition(" ")
        return {"name": base, "kind": "unsloth", "base": base, "overrides": overrides.strip()}
    name, _, rest = text.partition("=")
    if not rest:
        raise SystemExit(f"error: variant {text!r} must be trl-baseline, trl-best, unsloth-qlora, unsloth-lora "
                         "or NAME=RECIPE.yaml [--key value ...]")
    recipe, _, overrides = rest.strip().partition(" ")
    if recipe == "trl-best":  # NAME=trl-best --max_length 4096
        return {"name": name, "kind": "baseline", "trl": "best", "overrides": overrides.strip()}
    if is_unsloth_variant(recipe):  # NAME=unsloth-lora --packing true
        return {"name": name, "kind": "unsloth", "base": recipe, "overrides": overrides.strip()}
    return {"name": name, "kind": "recipe", "recipe": recipe, "overrides": overrides}


def worker_env(spec: dict, unsloth_site: Path | None, base: dict | None = None) -> dict:
    """The environment of a variant's worker process: the caller's own, except that an Unsloth
    variant's PYTHONPATH is its separate site dir and this project only (its trl, datasets and
    transformers pins differ from the project's) and it gets Unsloth's offline switches."""
    env = dict(os.environ if base is None else base)
    if spec["kind"] != "unsloth":
        return env
    from bench.unsloth_variant import OFFLINE_ENV

    if unsloth_site is not None:  # its site dir and this project only: the project's own wheel dir on the
        # caller's PYTHONPATH would shadow the image's transformers with one newer than Unsloth supports
        env["PYTHONPATH"] = os.pathsep.join((str(Path(unsloth_site).resolve()), str(Path(__file__).resolve().parents[1])))
    env.update(OFFLINE_ENV)
    return env


RESULT_PREFIX = "RESULT "


def run_worker(command: list[str], spec: dict, env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    """Run one variant in a fresh process (``command`` ends in ``--worker SPEC``) and read back the
    result line it prints; a failed worker gives ``{"name", "error"}`` with the last lines it wrote."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT_PREFIX):]), done
    return {"name": spec["name"], "error": " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])}, done


def measured_results(out: Path) -> list[dict]:
    """What ``--resume`` keeps: the rows an earlier call of the same invocation measured in ``out``
    without an error (none when there is no file yet); a failed row is measured again."""
    if not out.is_file():
        return []
    return [r for r in json.loads(out.read_text())["results"] if not r.get("error")]


def table(results: list[dict]) -> str:
    baseline = next((r["tokens_per_second"] for r in results if r["name"] == "trl-baseline" and r.get("tokens_per_second")), None)
    lines = ["| variant | tokens/s | peak GiB (allocated) | MFU | vs TRL defaults |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:80]} | | | |")
            continue
        ratio = f"{r['tokens_per_second'] / baseline:.2f}x" if baseline and r["tokens_per_second"] else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        lines.append(f"| {r['name']} | {r['tokens_per_second']:,.0f} | {r.get('peak_allocated_gib', 'n/a')} | {mfu} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="JSONL splits from preprocess.fiqa")
    parser.add_argument("--variant", action="append", default=[],
                        help="trl-baseline, trl-best, unsloth-qlora, unsloth-lora or NAME=RECIPE [--key value ...]")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nemotron")
    parser.add_argument("--steps", type=int, default=10, help="measured steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--log_every", type=int, default=1,
                        help="log every N steps (every variant; --steps and --warmup multiples of N). Each log reads "
                             "the loss from the GPU, a wait the recipes pay every logging_steps (10) only; 1 keeps a "
                             "loss for every step")
    parser.add_argument("--work_dir", type=Path, default=None, help="where the random model is written (reused)")
    parser.add_argument("--out", type=Path, default=Path("throughput.json"))
    parser.add_argument("--unsloth_site", type=Path, default=None,
                        help="pip --target dir with Unsloth and its pins (bench/unsloth_wheels.sh), put first on "
                             "PYTHONPATH for the unsloth-* variants only")
    parser.add_argument("--keep_logs", action="store_true",
                        help="write every variant's output beside --out (OUT_STEM.NAME.log), not only a failed one's: "
                             "e.g. torch.compile's graph breaks and recompiles under TORCH_LOGS")
    parser.add_argument("--resume", action="store_true",
                        help="keep the results already in --out and skip each variant measured there without an "
                             "error: one invocation (one results file) finished over several calls, e.g. on a "
                             "machine that is lent 10 minutes at a time or whose packages arrive in parts")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    if args.log_every < 1 or args.steps % args.log_every or args.warmup % args.log_every:
        parser.error(f"--steps ({args.steps}) and --warmup ({args.warmup}) must be multiples of --log_every "
                     f"({args.log_every}), so that each measured log covers measured steps only")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="throughput-"))
    started = time.perf_counter()
    model_dir = build_assets(work, args.shape, args.data_dir)
    print(f"random {args.shape} model in {model_dir} ({time.perf_counter() - started:.0f}s)", flush=True)
    results = measured_results(args.out) if args.resume else []
    measured = {r["name"] for r in results}
    for text in args.variant or ["trl-baseline"]:
        variant = parse_variant(text)
        if variant["name"] in measured:
            print(f"{variant['name']}: measured in {args.out}, kept", flush=True)
            continue
        spec = {**variant, "model_dir": str(model_dir), "data_dir": str(args.data_dir),
                "output_dir": str(work / "runs" / text.split("=")[0]), "steps": args.steps, "warmup": args.warmup,
                "shape": args.shape, "log_every": args.log_every}
        result, done = run_worker([sys.executable, "-m", "bench.throughput", "--data_dir", str(args.data_dir),
                                   "--worker", json.dumps(spec)], spec, env=worker_env(spec, args.unsloth_site))
        results.append(result)
        if "error" in result or args.keep_logs:
            log = args.out.with_name(f"{args.out.stem}.{spec['name']}.log")  # the whole story, beside --out
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
        print(f"{spec['name']}: {json.dumps({k: v for k, v in results[-1].items() if k != 'settings'})}", flush=True)
        report = {"date": date.today().isoformat(), "shape": args.shape, "steps": args.steps, "warmup": args.warmup,
                  "log_every": args.log_every,
                  "flops_per_token": flops_per_token(SHAPES[args.shape]), "peak_flops_assumed": PEAK_BF16_FLOPS,
                  "results": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every variant: a cut-off run keeps its numbers
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
