"""Silence, deliberately and narrowly, the messages every run printed that are not the user's concern.

Each filter matches one known message and says why it is safe to hide; anything else still
prints. Called first by the command-line entry points, before torch or bitsandbytes load.
"""

from __future__ import annotations

import logging
import warnings

# bitsandbytes' CPU backend asks `kernels` for this hub kernel at import, on CPUs with AVX512-BF16.
BITSANDBYTES_CPU_KERNEL = "kernels-community/quantization-bitsandbytes"


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with one known text; passes every other."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def quiet_known_noise() -> None:
    # bitsandbytes looks for an optional CPU kernel from the hub at import and logs its absence as
    # "Failed to load ...". Nothing here runs 4-bit on a CPU (it is refused), so it is noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # Before it fails there, `kernels` (huggingface_hub 2.4+) says offline mode skips its publisher
    # check, for that one kernel, on every run. Other kernels' trust messages still print. The logger
    # is named after kernels' module (no public handle): tests/test_quiet.py calls kernels' public
    # get_kernel in a fresh interpreter, so a rename upstream fails the test instead of printing again.
    logging.getLogger("kernels._internals.hf_hub").addFilter(
        _DropMessage(f"Skipping publisher trust check for '{BITSANDBYTES_CPU_KERNEL}'"))
    # Raised inside TRL and PEFT (they read model.is_gradient_checkpointing), not by this project.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # Decided: the recipes keep Liger. TRL 1.16 deprecates `use_liger_kernel` in favour of hub
    # kernels (`use_kernels`), which download from the hub at start; Liger is a pip package that
    # runs offline and on clusters without hub access. Revisit when TRL 2 removes it.
    warnings.filterwarnings("ignore", message=r"`use_liger_kernel=True` is deprecated", category=FutureWarning)
    # Liger 0.8.5 probes optional backends for each op (CuTe DSL, Ascend) and warns about every one
    # that is not installed; the Triton kernels it runs here are there. Seen on the H200 runs.
    logging.getLogger("liger_kernel.backends.registry").setLevel(logging.ERROR)
    # tqdm.auto in a notebook without ipywidgets: it falls back to text progress bars, which work.
    # `pip install -e ".[notebook]"` brings ipywidgets for the widget bars.
    warnings.filterwarnings("ignore", message=r"IProgress not found")
