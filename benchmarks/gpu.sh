#!/usr/bin/env bash
# The GPU check (issue 26), one command, about 8 minutes on one H100:
#   1. the CUDA test tier (pytest -m cuda; skipped tests mean no GPU was seen);
#   2. speed at output sizes 256 and 512 (benchmarks/infer.py --output-sizes), batch 1 and 16;
#   3. a short meta-learning run of the warp-guided model at 256 px, continued from the bundled
#      128-px model, on a data pack (benchmarks/gpu_pack.py, about 30 MB), exported as a
#      checkpoint of at most 16 MB (fp16).
# Figures go to $OUT/gpu.log; record them with the GPU's name in docs/benchmarks.md.
#
#   python benchmarks/gpu_pack.py /work/shared/data/faces/manifest.csv --out packs/faces256   # here (~26 MB;
#       packs/ is git-ignored: carry it to the GPU machine, e.g. the device tool's carry=["packs/faces256"])
#   bash benchmarks/gpu.sh                       # on the GPU machine, the pack carried in packs/faces256
#   bash benchmarks/gpu.sh --faces /work/shared/data/faces   # builds the pack first (needs the shared data)
#   bash benchmarks/gpu.sh --device cpu --dry-run            # a few CPU minutes: every step, tiny settings
#
# Options: --pack DIR (default packs/faces256), --faces DIR (build the pack there if missing),
# --out DIR (default runs/gpu), --device cuda|cpu, --dry-run (tiny settings), --minutes N
# (meta-learning wall time, default 4).
set -euo pipefail

PACK=packs/faces256
FACES=""
OUT=runs/gpu
DEVICE=cuda
DRY=0
MINUTES=4
while [ $# -gt 0 ]; do
  case "$1" in
    --pack) PACK=$2; shift 2 ;;
    --faces) FACES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --minutes) MINUTES=$2; shift 2 ;;
    *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
START=$(date +%s)

if [ "$DEVICE" = cuda ]; then
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
    | tee -a "$LOG"
fi

if [ -z "$(ls -A "$PACK" 2>/dev/null)" ]; then
  if [ -z "$FACES" ]; then
    echo "error: no data pack at $PACK; build it with --faces DIR (the shared faces data) or carry it" >&2
    exit 2
  fi
  say "building the data pack $PACK from $FACES"
  if [ "$DRY" = 1 ]; then
    python benchmarks/gpu_pack.py "$FACES/manifest.csv" --out "$PACK" --identities 3 --max-frames 12 | tee -a "$LOG"
  else
    python benchmarks/gpu_pack.py "$FACES/manifest.csv" --out "$PACK" | tee -a "$LOG"
  fi
fi

say "1. CUDA test tier"
if [ "$DEVICE" = cuda ]; then
  python -m pytest -q -m cuda tests/ 2>&1 | tail -n 15 | tee -a "$LOG"
else
  python -m pytest -q -m cuda tests/test_detail_cuda.py 2>&1 | tail -n 3 | tee -a "$LOG"  # skips without CUDA
fi

say "2. speed at output sizes 256 and 512 ($DEVICE)"
FRAMES=200
[ "$DRY" = 1 ] && FRAMES=8
python benchmarks/infer.py --device "$DEVICE" --presets --no-finetune --output-sizes 256 512 --frames "$FRAMES" \
  2>&1 | tee -a "$LOG"

say "3. meta-learning at 256 px from the bundled model (warp-guided), $MINUTES min"
STEPS=100000
SETTINGS=(model.image_size=256 model.attention_sizes=64 model.decoder_attention_sizes=64
          train.checkpoint_every=200 train.image_every=1000000 train.batch_size=8)
if [ "$DRY" = 1 ]; then
  STEPS=2
  SETTINGS=(model.image_size=256 model.attention_sizes=64 model.decoder_attention_sizes=64
            train.checkpoint_every=1 train.image_every=1000000 train.batch_size=1 train.num_workers=0
            train.shots=2 train.disc_steps=1)
fi
python -m talkinghead.cli train "$PACK" --out "$OUT/meta256" --overwrite --allow-pixel-loss \
  --init-from src/talkinghead/assets/meta_small.safetensors --device "$DEVICE" --steps "$STEPS" \
  --max-minutes "$MINUTES" --no-progress --set "${SETTINGS[@]}" 2>&1 | tail -n 20 | tee -a "$LOG"
python -m talkinghead.cli export "$OUT/meta256/latest.safetensors" -o "$OUT/meta256.safetensors" | tee -a "$LOG"
BYTES=$(stat -c %s "$OUT/meta256.safetensors")
if [ "$BYTES" -gt $((16 * 1024 * 1024)) ]; then
  echo "error: $OUT/meta256.safetensors is $BYTES bytes, over 16 MB" | tee -a "$LOG" >&2
  exit 1
fi
say "checkpoint $OUT/meta256.safetensors: $((BYTES / 1024)) KB"
say "done in $(( $(date +%s) - START )) s; figures in $LOG"
