#!/usr/bin/env sh
# Re-resolves the locks from pyproject.toml's ranges: the newest versions inside them, for
# Linux x86_64 and CPython 3.11 (the tested platform). Run by `make lock`, after changing a
# range in pyproject.toml or TORCH_VERSION in the Makefile; then `make test` and commit requirements/.
#
#   sh requirements/lock.sh VENV TORCH_VERSION
#
#   cpu.txt    machines without an NVIDIA GPU: torch==X+cpu, the extras `dev`
#   gpu.txt    machines with one: torch==X from PyPI (CUDA), the extras `dev` and `gpu`
#   build.txt  the setuptools that builds the project itself
set -eu
venv=$1
torch=$2
cd "$(dirname "$0")/.."
venv=$(cd "$venv" && pwd)
compile() { "$venv/bin/uv" pip compile --quiet --custom-compile-command "make lock" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 "$@"; }

sources=$(sh requirements/torch_sources.sh "$venv/bin/python")
if [ -z "$sources" ]; then
    echo "lock: PyTorch's CPU index (${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}) cannot be reached and pip names no wheel folder" \
         "holding torch==$torch+cpu, so requirements/cpu.txt cannot be resolved here." >&2
    exit 1
fi
# shellcheck disable=SC2086  # $sources is a list of flags
echo "torch==$torch+cpu" | compile pyproject.toml - --extra dev $sources -o requirements/cpu.txt
echo "torch==$torch" | compile pyproject.toml - --extra dev --extra gpu -o requirements/gpu.txt
echo "setuptools>=77" | compile - -o requirements/build.txt
echo "lock: wrote requirements/cpu.txt, gpu.txt and build.txt"
