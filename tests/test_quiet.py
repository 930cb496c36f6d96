"""The known noise is silenced at its source, one message each, and nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

# In a fresh interpreter, as every command runs (pytest replaces warning filters per test).
PROBE = textwrap.dedent(
    """
    import logging, warnings
    import recipekit  # installs the filters
    for name in ("bitsandbytes.backends.cpu.ops", "liger_kernel.backends.registry"):
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger(name).isEnabledFor(logging.ERROR), name  # real failures still show
    assert logging.getLogger("liger_kernel").isEnabledFor(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`use_liger_kernel=True` is deprecated, use `use_kernels`.", FutureWarning)
        warnings.warn("IProgress not found. Please update jupyter and ipywidgets.", UserWarning)  # tqdm.auto
        warnings.warn("something else is deprecated", FutureWarning)
    print([str(w.message) for w in caught])
    """
)


def test_each_known_message_is_silenced_and_other_messages_are_not():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['something else is deprecated']"


# What bitsandbytes' CPU backend does at import on CPUs with AVX512-BF16, through kernels' public API.
KERNEL_PROBE = textwrap.dedent(
    """
    import sys
    import recipekit  # installs the filters
    from kernels import get_kernel
    for repo in (sys.argv[1], "kernels-community/another-kernel"):
        try:
            get_kernel(repo, version=1)
        except Exception:
            pass  # not in the local cache: what an offline run meets
    """
)


def test_the_offline_kernel_trust_message_is_silenced_for_bitsandbytes_kernel_only():
    from recipekit.runtime.quiet import BITSANDBYTES_CPU_KERNEL

    done = subprocess.run([sys.executable, "-c", KERNEL_PROBE, BITSANDBYTES_CPU_KERNEL], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "Skipping publisher trust check for 'kernels-community/another-kernel'" in done.stderr
    assert BITSANDBYTES_CPU_KERNEL not in done.stderr


def test_the_cuda_allocator_gets_expandable_segments_unless_the_user_chose():
    probe = "import os, recipekit; print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'))"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
    fresh = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60)
    assert fresh.stdout.strip() == "expandable_segments:True", fresh.stderr
    for variable in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        chosen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT,
                                env={**env, variable: "max_split_size_mb:128"}, timeout=60)
        expected = "max_split_size_mb:128" if variable == "PYTORCH_CUDA_ALLOC_CONF" else "None"
        assert chosen.stdout.strip() == expected, (variable, chosen.stderr)
