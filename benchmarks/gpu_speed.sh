#!/usr/bin/env bash
# Issue 15's GPU check, for a session lent a GPU (15 minutes of device time in all): `benchmark speed` with the
# batch sizes that failed before the cell index (1e5 cells x 1,024 environments asked for 161 GiB), time-boxed,
# writing JSON lines as it goes. "Done" is a run with no out-of-memory (`error`) row.
#
# Run from the repository root: OUT=out/gpu bash benchmarks/gpu_speed.sh   (PY picks the interpreter)
set -u
OUT=${OUT:-out/gpu}
PY=${PY:-python3}
SPEED_S=${SPEED_S:-420}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi -L 2>&1; "$PY" -c "import jax, mctx; print('jax', jax.__version__, jax.devices())"; } >> "$OUT/speed.log" 2>&1
timeout -s TERM -k 20 "$SPEED_S" "$PY" -m experiments.benchmark speed --cells 1000 10000 100000 1000000 \
  --batches 1 16 64 1024 --max-work 1e12 --reference-max-work 2e6 --profile-cells 100000 1000000 \
  --table-rows 60000 --wide-rows 0 --out "$OUT/speed_gpu.jsonl" >> "$OUT/speed.log" 2>&1
echo "speed exit $? ($(grep -c '"error"' "$OUT/speed_gpu.jsonl" 2>/dev/null || echo 0) error rows)" | tee -a "$OUT/speed.log"
