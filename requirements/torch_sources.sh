#!/usr/bin/env sh
# Prints the uv flags that find the CPU build of torch (torch==X+cpu): PyTorch's CPU wheel
# index when it answers, and every wheel folder pip is configured with (uv reads no pip
# configuration). Prints nothing where neither exists. Used by install.sh and lock.sh.
#
#   sh requirements/torch_sources.sh PYTHON
set -eu
python=$1
index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
flags=""
for folder in ${PIP_FIND_LINKS:-} $("$python" -m pip config get global.find-links 2>/dev/null || true); do
    case " $flags " in *" $folder "*) continue ;; esac
    [ -d "$folder" ] && flags="$flags --find-links $folder"
done
if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
    "$index/torch/" >/dev/null 2>&1; then
    # unsafe-best-match: PyTorch's index also serves common packages (numpy, jinja2...);
    # each version is taken from whichever index has it.
    flags="$flags --extra-index-url $index --index-strategy unsafe-best-match"
fi
echo "$flags"
