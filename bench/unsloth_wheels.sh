#!/usr/bin/env bash
# Wheels for the Unsloth baseline of bench/throughput.py, for the GPU machine (Python 3.12, x86_64,
# no network), which already has torch 2.11 + triton 3.6 + transformers 5.17 + peft + accelerate and
# the rest of GPU_HAS below, but not trl, datasets, bitsandbytes or Unsloth.
#
#   bash bench/unsloth_wheels.sh [DEST]        # DEST defaults to .whl_unsloth/ (git-ignored)
#
# Unsloth 2026.10.9 pins trl <= 1.15, transformers <= 5.17 and datasets < 5, so it gets its own
# `pip install --target` dir there (put first on PYTHONPATH only for the Unsloth variants; see
# --unsloth_site in bench/throughput.py). One transfer to the GPU machine carries ~60 MB with the
# repository, so the wheels are grouped into DEST/part1, part2, ... of at most PART_LIMIT bytes each;
# install them one part per call into the same --target dir:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/unsloth_site PART/*.whl
#
# The script then checks here that every wheel installs (for cp312 / manylinux x86_64) and that the
# Requires-Dist of every wheel (no extras) is met by the wheel set or by the GPU machine's packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/.whl_unsloth}
PART_LIMIT=${PART_LIMIT:-48000000}   # bytes a part may hold: < 55 MB, with room for the repo and data

# Exact versions, so a rerun gives the same environment. Why each one is here:
WHEELS=(
  unsloth==2026.10.9          # the newest release; Requires-Dist read from its METADATA
  unsloth_zoo==2026.10.9      # unsloth needs unsloth_zoo>=2026.10.9
  trl==1.15.0                 # newest allowed by unsloth / unsloth_zoo (trl<=1.15.0, !=0.19.0)
  datasets==4.8.5             # newest < 5 and outside unsloth's exclusions (!=4.0.*, 4.1.0, 4.4.*, 4.5.0)
  dill==0.4.1                 # datasets: dill<0.4.2; multiprocess 0.70.19: dill>=0.4.1
  multiprocess==0.70.19       # datasets: multiprocess<0.70.20 (Dataset.map workers)
  fsspec==2026.2.0            # datasets 4.8.5: fsspec<=2026.2.0 (the GPU image's own fsspec may be newer)
  bitsandbytes==0.50.2        # QLoRA NF4 and adamw_8bit; ships libbitsandbytes_cuda130.so for torch+cu130
  torchao==0.17.0             # unsloth_zoo: torchao>=0.13; 0.17.0 is the release built for torch 2.11
                              # (0.18 needs symbols that Unsloth has to stub on 2.11); QLoRA does not use it
  cut_cross_entropy==25.1.1   # unsloth_zoo: fused linear cross-entropy (loss_utils)
  tyro==1.0.17                # unsloth, unsloth_zoo (CLI); + docstring-parser, typeguard
  docstring-parser==0.18.0
  typeguard==4.6.1
  msgspec==0.23.0             # unsloth_zoo (vllm_lora_request)
  hf_transfer==0.1.9          # unsloth, unsloth_zoo (switched off offline by unsloth_zoo itself)
  diffusers==0.42.1           # unsloth Requires-Dist (not imported by `import unsloth`)
  importlib-metadata==9.0.0   # diffusers; 9.0.0 needs only zipp (10.x adds lazy-importer)
  structlog==26.1.0           # unsloth Requires-Dist
  json5==0.17.3               # unsloth Requires-Dist
  nest-asyncio==1.6.0         # unsloth Requires-Dist
  pydantic==2.14.4            # unsloth Requires-Dist; + its pinned core and helpers
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0   # pydantic-core needs >=4.16.0; the GPU image's version is not known
  certifi==2026.10.19.post1   # unsloth, unsloth_zoo: certifi>=2026.10.19
)
# Left out on purpose:
#   torch, triton, transformers, peft, accelerate, huggingface_hub, ...: the GPU machine's own (GPU_HAS).
#   xformers: Requires-Dist on Linux x86_64, but PyPI's wheels are built for one torch and CUDA 12.8;
#     Unsloth catches the ModuleNotFoundError and uses PyTorch SDPA (per-segment / varlen for
#     padding-free batches). flash-attn has no PyPI wheels at all.
OMITTED="xformers"

PIP_PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
  --platform any)

mkdir -p "$DEST"
rm -rf "$DEST"/part* "$DEST/_download"
python3 -m pip download -q --no-deps "${PIP_PLATFORM[@]}" -d "$DEST/_download" "${WHEELS[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# First-fit decreasing into parts of at most PART_LIMIT bytes; a wheel bigger than that is cut
# into NAME.whl.partaa, .partab, ... (rejoin there with `cat NAME.whl.part* > NAME.whl`).
python3 - "$DEST" "$PART_LIMIT" <<'PY'
import os, shutil, subprocess, sys
dest, limit = sys.argv[1], int(sys.argv[2])
src = os.path.join(dest, "_download")
files = sorted(((os.path.getsize(os.path.join(src, f)), f) for f in os.listdir(src)), reverse=True)
pieces = []
for size, name in files:
    if size <= limit:
        pieces.append((size, name))
        continue
    chunk = 45 * 2**20
    subprocess.run(["split", "-b", str(chunk), name, name + ".part"], cwd=src, check=True)
    os.remove(os.path.join(src, name))
    for part in sorted(p for p in os.listdir(src) if p.startswith(name + ".part")):
        pieces.append((os.path.getsize(os.path.join(src, part)), part))
        print(f"NOTE: {name} is {size / 1e6:.1f} MB, cut into {part}; rejoin with `cat {name}.part* > {name}`")
parts = []  # [used bytes, [names]]
for size, name in sorted(pieces, reverse=True):
    home = next((p for p in parts if p[0] + size <= limit), None)
    if home is None:
        home = [0, []]
        parts.append(home)
    home[0] += size
    home[1].append(name)
for i, (used, names) in enumerate(parts, 1):
    folder = os.path.join(dest, f"part{i}")
    os.makedirs(folder)
    for name in names:
        shutil.move(os.path.join(src, name), os.path.join(folder, name))
os.rmdir(src)
PY

echo "== manifest ($DEST, limit $PART_LIMIT bytes a part)"
total=0
for part in "$DEST"/part*; do
  bytes=$(du -cb "$part"/* | tail -1 | cut -f1)
  total=$((total + bytes))
  printf '%s  %6.1f MB  %d files\n' "$(basename "$part")" "$(echo "$bytes / 1000000" | bc -l)" "$(ls "$part" | wc -l)"
  for f in "$part"/*; do printf '    %8.2f MB  %s\n' "$(echo "$(stat -c %s "$f") / 1000000" | bc -l)" "$(basename "$f")"; done
done
printf 'total  %.1f MB\n' "$(echo "$total / 1000000" | bc -l)"

echo "== check 1: every wheel installs into one --target dir (as cp312 manylinux x86_64)"
site=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile "${PIP_PLATFORM[@]}" --target "$site" "$DEST"/part*/*.whl \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "ok: $(ls "$site" | grep -c '\.dist-info$') distributions in $site"
rm -rf "$site"

echo "== check 2: Requires-Dist (no extras) of every wheel, against the wheel set + the GPU machine"
python3 - "$DEST" "$OMITTED" <<'PY'
import glob, re, sys, zipfile
from email.parser import Parser
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
from packaging.version import Version

# The GPU machine (cp312, Linux x86_64): versions where known (the brief and the device notes'
# `pip list`), None where only the name is known (the image's package list of 2026-11-17).
GPU_HAS = {"torch": "2.11.0+cu130", "triton": "3.6.0", "transformers": "5.17.0", "accelerate": "1.15.0",
           "huggingface-hub": "1.33.0", "safetensors": "0.8.0", "tokenizers": "0.23.2", "numpy": "2.5.2",
           "sentencepiece": "0.2.2", "torchvision": "0.26.0", "torchaudio": "2.11.0",
           "sentence-transformers": "6.0.1", "tiktoken": "0.14.0"}
for name in """peft protobuf psutil tqdm pyarrow pandas xxhash fsspec regex requests packaging typer rich
        aiohttp httpx httpcore hf-xet filelock pyyaml jinja2 markupsafe pillow einops wheel setuptools click
        shellingham urllib3 idna charset-normalizer certifi zipp typing-extensions networkx sympy mpmath
        markdown-it-py mdurl pygments anyio h11 aiosignal multidict yarl frozenlist propcache attrs
        python-dateutil six scipy scikit-learn timm""".split():
    GPU_HAS.setdefault(canon(name), None)
FORBIDDEN = {"torch", "triton", "transformers", "peft", "accelerate", "huggingface-hub", "tokenizers", "safetensors"}
omitted = {canon(n) for n in sys.argv[2].split()}

env = default_environment()
env.update(python_version="3.12", python_full_version="3.12.3", sys_platform="linux", platform_system="Linux",
           platform_machine="x86_64", os_name="posix", implementation_name="cpython",
           platform_python_implementation="CPython", extra="")
wheels = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/part*/*.whl")):
    with zipfile.ZipFile(path) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    name = canon(meta["Name"])
    if name in wheels:
        sys.exit(f"FAIL: two versions of {name}")
    wheels[name] = (Version(meta["Version"]), meta.get_all("Requires-Dist") or [], meta.get("Requires-Python"))
bad = [n for n in wheels if n in FORBIDDEN]
unmet, assumed, skipped = [], set(), set()
for name, (version, requires, requires_python) in sorted(wheels.items()):
    if requires_python and Version("3.12.3") not in __import__("packaging.specifiers").specifiers.SpecifierSet(requires_python):
        unmet.append(f"{name} {version}: Requires-Python {requires_python}")
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        dep = canon(req.name)
        if dep in wheels:
            if wheels[dep][0] not in req.specifier:
                unmet.append(f"{name} {version}: {text}  (wheel set has {wheels[dep][0]})")
        elif dep in GPU_HAS:
            have = GPU_HAS[dep]
            if have is None:
                if str(req.specifier):
                    assumed.add(f"{req.name}{req.specifier}")
            elif not req.specifier.contains(Version(have), prereleases=True):
                unmet.append(f"{name} {version}: {text}  (GPU machine has {have})")
        elif dep in omitted:
            skipped.add(f"{text}  (required by {name}; left out on purpose)")
        else:
            unmet.append(f"{name} {version}: {text}  (neither in the wheel set nor on the GPU machine)")
print(f"{len(wheels)} wheels: " + ", ".join(f"{n}=={v[0]}" for n, v in sorted(wheels.items())))
for line in sorted(skipped):
    print("omitted:", line)
for line in sorted(assumed):
    print("assumed (on the GPU machine, version not known here):", line)
if bad:
    print("FAIL: wheel set shadows the GPU machine's own:", ", ".join(bad))
for line in unmet:
    print("UNMET:", line)
if unmet or bad:
    sys.exit(1)
print("ok: every requirement is met by the wheel set or the GPU machine")
PY
