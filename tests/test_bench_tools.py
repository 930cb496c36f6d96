"""The profiling and evaluation-timing benchmarks: their bookkeeping, on known inputs."""

from __future__ import annotations

import json

import pytest

from bench.eval_timing import write_timing_data
from bench.step_profile import OTHER_KIND, idle_gaps, kernel_kind, summarise_kernels

# Kernel names as torch.profiler reported them for the recipes on an H200 (2026-11-30).
H200_KERNELS = {
    "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT": "matrix multiply",
    "void kDequantizeBlockwise<__nv_bfloat16, 512, 64, 8, 2>(float*, unsigned char*, float*)": "4-bit dequantisation",
    "triton_tem_fused_flex_attention_backward_mul_1": "attention",
    "triton_red_fused_flex_attention_backward_mul_0": "attention",
    "_swiglu_backward_kernel": "Liger / Triton fused",
    "_rms_norm_forward_kernel": "Liger / Triton fused",
    "_triton_rope": "Liger / Triton fused",
    "Memcpy DtoD (Device -> Device)": "copies and casts",
    "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(at::TensorIteratorBase&)": "copies and casts",
    "void at::native::vectorized_elementwise_kernel<8, at::native::CUDAFunctor_add<c10::BFloat16>, std::array<char*, 3> >": OTHER_KIND,
    "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>": "optimizer",
}


@pytest.mark.parametrize("name, kind", H200_KERNELS.items())
def test_kernels_are_put_in_the_right_bucket(name, kind):
    assert kernel_kind(name) == kind


def test_a_step_summary_adds_up_and_names_the_idle_time():
    kernels = [("nvjet_sm90_tst_a", 300.0), ("nvjet_sm90_tst_a", 100.0), ("triton_tem_fused_flex_attention_0", 50.0),
               ("Memcpy DtoD (Device -> Device)", 50.0)]
    summary = summarise_kernels(kernels, step_seconds=0.001)  # 1 ms of wall time, 0.5 ms of kernels
    assert summary["kernel_ms"] == 0.5 and summary["gpu_idle_ms"] == 0.5 and summary["kernel_launches"] == 4
    assert summary["by_kind"]["matrix multiply"] == {"ms": 0.4, "share_of_step": 0.4}
    assert list(summary["by_kind"]) == ["matrix multiply", "attention", "copies and casts"]  # longest first
    assert summary["longest_kernels"][0] == {"name": "nvjet_sm90_tst_a", "kind": "matrix multiply", "ms": 0.4, "launches": 2}


def test_idle_gaps_are_bucketed_by_length_merge_overlapping_kernels_and_name_the_longest():
    spans = [("a", 0.0, 100.0), ("copy", 50.0, 120.0),  # overlaps a: no gap, and busy until 120
             ("b", 2120.0, 2200.0),                      # 2 ms after the copy ends
             ("c", 2250.0, 2300.0),                      # 0.05 ms
             ("d", 2500.0, 2600.0)]                      # 0.2 ms
    gaps = idle_gaps(spans)
    assert gaps["between_kernels"] == {"1 ms or more": {"count": 1, "ms": 2.0},
                                       "0.1 to 1 ms": {"count": 1, "ms": 0.2},
                                       "under 0.1 ms": {"count": 1, "ms": 0.05}}
    assert gaps["largest"][0] == {"ms": 2.0, "after": "copy", "before": "b"}
    assert [gap["ms"] for gap in gaps["largest"]] == [2.0, 0.2, 0.05]
    assert idle_gaps([])["largest"] == []


def test_the_timing_split_cycles_the_data_questions_to_the_size_asked(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for split, count in (("train", 5), ("validation", 2), ("test", 3)):
        rows = [json.dumps({"question": f"{split} {i}?", "answer": "a"}) for i in range(count)]
        (source / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    target = write_timing_data(source, tmp_path / "timing", questions=23)
    test = [json.loads(line)["question"] for line in (target / "test.jsonl").read_text().splitlines()]
    assert len(test) == 23 and test[:3] == ["test 0?", "test 1?", "test 2?"] and test[10] == "test 0?"  # 10 per cycle
    assert len(set(test)) == 10  # every question of every split, none invented
    assert (target / "train.jsonl").read_text() == (source / "train.jsonl").read_text()


def test_a_cpu_recipe_timing_reads_the_trainers_own_time_tokens_and_final_evaluation():
    from bench.cpu_recipe_timing import summarize

    rows = [{"step": 1, "kind": "train", "loss": 3.5}, {"step": 2, "kind": "train", "loss": 3.0},
            {"step": 2, "kind": "eval", "eval_loss": 2.9},
            {"step": 2, "epoch": 1.0, "kind": "summary", "train_runtime": 4.0, "train_loss": 3.2,
             "num_input_tokens_seen": 1000},
            {"step": 2, "kind": "final_eval", "eval_loss": 2.8}]
    assert summarize(rows) == {"train_runtime_seconds": 4.0, "optimizer_steps": 2, "epochs": 1.0, "tokens_seen": 1000,
                               "tokens_per_second": 250.0, "seconds_per_optimizer_step": 2.0, "first_loss": 3.5, "train_loss": 3.2,
                               "final_eval_loss": 2.8}
    cut_short = summarize(rows[:2])  # a run that never finished has no summary: nothing is made up
    assert cut_short["train_runtime_seconds"] is None and cut_short["tokens_per_second"] is None
    assert cut_short["seconds_per_optimizer_step"] is None
    assert cut_short["first_loss"] == 3.5 and cut_short["final_eval_loss"] is None
