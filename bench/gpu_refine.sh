#!/usr/bin/env bash
# One GPU call of the device tool: `train all --preset refine_gpu` up to the student, on a machine with
# neither PyAV nor the text encoder's package (log.md, 2026-12-04). `bash bench/gpu_prepare.sh` puts both
# stand-ins in .gpu/ first: PyAV's wheel unpacked and xz-packed (the tree that travels is capped at 64 MiB),
# and the captions' embeddings of the same recording made here (`worldstream captions`).
# The streaming view's and the student's weights (bfloat16), configs and logs come back in $OUT as
# <run>.tar.part-NN pieces (15 MiB each), packed as soon as each stage ends; bench/gpu_unpack.sh rebuilds them.
# Then, in what is left of the call, the new student against the shipped model free-running
# (bench/rollout_vs_still.py on the GPU: $OUT/rollout_vs_still.json and .png), so the session that made
# it can decide to ship it without waiting for the CPU.
#   OUT=/tmp/out bash bench/gpu_refine.sh
set -uo pipefail
t0=$(date +%s)  # the call's start, near enough: the check below is fitted into what is left
OUT=${OUT:-gpu-out}; ROOT=${ROOT:-/tmp/pipeline}; DEVICE=${DEVICE:-cuda}; PRESET=${PRESET:-refine_gpu}
UNTIL=${UNTIL:-student}  # view: leave the student to the CPU (2.5 s a step eager on the H200)
CALL_SECONDS=${CALL_SECONDS:-600}  # the device call's limit: the check gets what is left of it (less 20 s), if 40 s or more
mkdir -p "$OUT" /tmp/site
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD WORLDSTREAM_TEXT_TABLE=$PWD/.gpu/captions.safetensors
python3 -c "import av" 2>/dev/null || tar xJf .gpu/av.tar.xz -C /tmp/site || exit 1
python3 -c "import av, torch; print('av', av.__version__, 'torch', torch.__version__,
            torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" || exit 1
stage() {  # train all up to $1; tqdm's bars go to the full log only
    python3 -m worldstream train all --preset "$PRESET" --out "$ROOT" --device "$DEVICE" --until "$1" 2>&1 \
        | tee -a "$OUT/log.txt" | tr '\r' '\n' | grep -vE '[0-9]+%\||^\s*$' ; local rc=${PIPESTATUS[0]}
    echo "== $1 done at $(( $(date +%s) - t0 )) s (rc $rc)"; return "$rc"
}
pack() {  # pack <run>: its weights in bfloat16, config and log, in 15 MiB pieces under $OUT
    python3 - "$ROOT/runs/$1" "/tmp/pack/$1" <<'PY' || return 1
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
run, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
w = load_file(str(run / "model.safetensors"))
save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in w.items()},
          str(dst / "model.safetensors"))
for f in ("config.json", "log.jsonl"):
    if (run / f).exists():
        shutil.copy(run / f, dst / f)
PY
    tar cf "/tmp/pack/$1.tar" -C /tmp/pack "$1" && split -b 15M -d "/tmp/pack/$1.tar" "$OUT/$1.tar.part-"
    ls -la "$OUT"
}
stage record || exit 1
python3 - "$ROOT" <<'PY'  # decode every episode once, in parallel (`encode` decodes one at a time: 400 frames/s there)
import sys
from multiprocessing import Pool
from worldstream.data.format import Dataset
def decode(ep):
    return ep.frames().shape[0]
eps = [e for d in ("overworld", "overworld_wide") for e in Dataset(f"{sys.argv[1]}/data/{d}").episodes]
with Pool(16) as pool:
    print("decoded", sum(pool.map(decode, eps, chunksize=1)), "frames")
PY
stage latents || exit 1
python3 - "$ROOT" <<'PY'  # every recorded caption in the table? (else they train as the empty prompt)
import sys
from worldstream.tokenizers.text import TextTable, dataset_captions
import os
caps = dataset_captions([f"{sys.argv[1]}/data/overworld", f"{sys.argv[1]}/data/overworld_wide"])
missing = [c for c in caps if c not in TextTable(os.environ["WORLDSTREAM_TEXT_TABLE"]).table]
print(f"captions: {len(caps)}, not in the table: {len(missing)} {missing[:5]}")
open("/tmp/missing", "w").write(str(len(missing)))
PY
[ "$(cat /tmp/missing 2>/dev/null)" = "0" ] || export WORLDSTREAM_TEXT_TABLE_MISSING=empty
stage view && pack teacher_view
[ "$UNTIL" = view ] || { stage student && pack student; }
left=$(( CALL_SECONDS - 20 - $(date +%s) + t0 ))
if [ "$UNTIL" != view ] && [ "$left" -ge 40 ] && [ -f "$ROOT/runs/student/model.safetensors" ]; then
    timeout "$left" python3 bench/rollout_vs_still.py --data "$ROOT/data/overworld" --device "$DEVICE" \
        --model "new=$ROOT/runs/student" --model shipped=default --starts 12 --frames 48 --steps 1 --no-compile \
        --json "$OUT/rollout_vs_still.json" --sheet "$OUT/rollout_vs_still.png" 2>&1 | tr '\r' '\n' | grep -vE '[0-9]+%\|'
    echo "== check done at $(( $(date +%s) - t0 )) s"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
echo "== all done at $(( $(date +%s) - t0 )) s"
