#!/usr/bin/env sh
# Installs the project into a virtualenv from the lock that fits this machine, with uv.
#
#   sh requirements/install.sh VENV locked   # the tested versions (make setup, make test, CI)
#   sh requirements/install.sh VENV latest   # the newest versions pyproject.toml allows (make test-latest)
#
# Why a script: the right torch depends on the machine. With an NVIDIA GPU (nvidia-smi on PATH),
# requirements/gpu.txt takes the CUDA build from PyPI. Without one, requirements/cpu.txt takes
# the CPU build (torch==X+cpu, ~200 MB) from PyTorch's CPU wheel index when it answers, or from
# a wheel folder pip is configured with (uv reads no pip configuration, so those folders are
# passed on). Where neither has it, the plain pin from PyPI is the fallback: the GPU lock, whose
# CUDA build also runs on a CPU but downloads several GB.
set -eu

venv=$1
mode=${2:-locked}
here=$(cd "$(dirname "$0")" && pwd)
python="$venv/bin/python"
uv="$venv/bin/uv"
torch_cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# The setuptools that builds the project itself is locked too (requirements/build.txt).
install() { "$uv" pip install --quiet --python "$python" --build-constraints "$here/build.txt" "$@"; }

if command -v nvidia-smi >/dev/null 2>&1; then
    lock="$here/gpu.txt"
    sources=""
else
    lock="$here/cpu.txt"
    sources=$(sh "$here/torch_sources.sh" "$python")
fi

# The torch build of the lock (X+cpu or X): `latest` keeps it and moves everything else.
torch_pin=$(grep -E '^torch==' "$lock")

# shellcheck disable=SC2086  # $sources is a list of flags
if [ "$mode" = latest ]; then
    echo "$torch_pin" > "$venv/torch-constraint.txt"
    install $sources --upgrade --constraint "$venv/torch-constraint.txt" -e "$here/..[dev]"
elif install $sources -r "$lock"; then
    install --no-deps -e "$here/.."
else
    echo "install: $torch_pin was found neither on PyTorch's CPU index ($torch_cpu_index) nor in a" \
         "local wheel folder; installing the CUDA build from PyPI instead (several GB; it runs on a CPU too)." >&2
    lock="$here/gpu.txt"
    install -r "$lock"
    install --no-deps -e "$here/.."
fi
echo "installed from $(basename "$lock") ($mode):"
"$uv" pip list --python "$python" 2>/dev/null | grep -iE "^(torch|trl|transformers|peft|datasets|accelerate|bitsandbytes) "
