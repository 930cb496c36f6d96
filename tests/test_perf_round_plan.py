"""bench/perf_round10.sh's plumbing on a CPU, with a stand-in for Python that records each invocation:
a GPU call is a few minutes, so the script must resume, skip what is done and say what is left."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

# Stands in for `python`: records its arguments; `-m bench.throughput|scaling` writes one result per
# variant or case to --out (keeping the earlier ones, as --resume does); `-c` says how many GPUs.
STAND_IN = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["CALLS"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "-c":
    print(os.environ.get("GPUS", "1"))
elif args[:2] in (["-m", "bench.throughput"], ["-m", "bench.scaling"]):
    out = Path(args[args.index("--out") + 1])
    results = json.loads(out.read_text())["results"] if out.is_file() else []
    flag = "--variant" if args[1] == "bench.throughput" else "--case"
    for i, arg in enumerate(args):
        name = args[i + 1].split("=")[0] if arg == flag else None
        if name and name not in {{r["name"] for r in results}}:
            results.append({{"name": name, "tokens_per_second": 1.0, "wall_seconds": 1}})
    out.write_text(json.dumps({{"results": results}}))
elif args[:2] == ["-m", "bench.fast_path_report"]:
    Path(args[args.index("--out") + 1]).write_text(json.dumps({{"comparisons": []}}))
elif args[0] == "-":
    os.execv({sys.executable!r}, [{sys.executable!r}, *args])
"""


def run_plan(tmp_path: Path, **env: str) -> tuple[str, list[list[str]]]:
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.jsonl"
    calls.unlink(missing_ok=True)
    data = tmp_path / "fiqa"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("{}\n")
    full_env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_SITE"}  # only where a test names one
    full_env.update(PYTHON=str(python), CALLS=str(calls), FIQA=str(data), WORK=str(tmp_path / "work"), **env)
    done = subprocess.run(["bash", str(REPO_ROOT / "bench" / "perf_round10.sh"), str(tmp_path / "out")],
                          cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    invoked = [json.loads(line) for line in calls.read_text().splitlines()] if calls.is_file() else []
    return done.stdout, [a for a in invoked if a[0] == "-m"]


def modules(invoked: list[list[str]]) -> list[str]:
    return [a[a.index("--out") + 1].rsplit("/", 1)[-1] if "--out" in a else a[1] for a in invoked]


def test_a_call_runs_each_invocation_once_then_says_all_is_measured(tmp_path):
    out, invoked = run_plan(tmp_path, GPUS="1")
    assert "scaling: needs 2 GPUs, 1 visible" in out and "all measured" in out.splitlines()[-1]
    runs = [a for a in invoked if a[1] == "bench.throughput"]
    assert [a[a.index("--out") + 1].rsplit("/", 1)[-1] for a in runs] == [
        "throughput.json", "equivalence_lora.json", "equivalence_qlora.json", "equivalence_lean.json",
        "equivalence_lean4096.json"]
    assert all("--resume" in a for a in runs)  # one results file per invocation, however many calls
    table = runs[0]
    names = [table[i + 1].split("=")[0] for i, arg in enumerate(table) if arg == "--variant"]
    assert names[:4] == ["trl-baseline", "nemotron_fiqa_qlora", "nemotron_fiqa_lora", "nemotron_fiqa_qlora_lean"]
    assert {"trl-best", "lean-4096-a", "lean-4096-b", "lean-4096-c", "lean-4096-rcg-a"} <= set(names)
    assert not any(n.startswith("unsloth") for n in names) and "no Unsloth rows" in out
    reports = [a for a in invoked if a[1] == "bench.fast_path_report"]
    assert [a[a.index("--reference") + 1] for a in reports] == ["lora", "qlora", "lean", "lean-4096"]
    assert "throughput               lean-4096-c" in out  # the summary lists every measured row

    again, invoked = run_plan(tmp_path, GPUS="1")
    assert invoked == [] and again.count("all measured") == 6  # five invocations, then the last line

    site = tmp_path / "unsloth_site"
    with_unsloth, invoked = run_plan(tmp_path, GPUS="1", UNSLOTH_SITE=str(site))
    assert modules(invoked) == ["throughput.json"]  # the table again, for the rows it did not have
    assert "unsloth-qlora=unsloth-qlora --packing true" in " ".join(invoked[0])
    assert invoked[0][invoked[0].index("--unsloth_site") + 1] == str(site)


def test_two_gpus_run_scaling_first_and_a_spent_budget_leaves_the_rest_for_the_next_call(tmp_path):
    out, invoked = run_plan(tmp_path, GPUS="2", BUDGET_S="30")
    assert invoked == []
    assert "left for the next call: scaling (30s left)" in out
    assert out.splitlines()[-1].endswith("left for the next call: scaling throughput equivalence_lora "
                                         "equivalence_qlora equivalence_lean equivalence_lean4096")

    out, invoked = run_plan(tmp_path, GPUS="2")
    assert modules(invoked)[0] == "scaling.json"
    cases = [invoked[0][i + 1] for i, arg in enumerate(invoked[0]) if arg == "--case"]
    assert [c.split("=")[0] for c in cases] == [
        "qlora-1gpu", "qlora-ddp-2", "qlora-fsdp-2", "qlora-fsdp-2-gathered",
        "lora-1gpu", "lora-ddp-2", "lora-fsdp-2", "lora-fsdp-2-gathered"]
    assert "fsdp_qlora+fsdp_reshard_after_forward=false:2:" in cases[3]
    results = json.loads((tmp_path / "out" / "scaling.json").read_text())["results"]
    assert len(results) == 8
