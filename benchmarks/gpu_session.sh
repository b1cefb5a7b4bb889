#!/usr/bin/env bash
# The GPU figures in this folder (`*_gpu*`), on a lent GPU machine whose whole loan is 15 minutes of device
# time and whose calls last at most 600 s each, so every stage is time-boxed and writes as it goes.
#
#   1. train: `python -m experiments.train --preset "$PRESET"`, stopped by SIGTERM after TRAIN_S seconds at the
#      latest (the trainer finishes its iteration and saves an Orbax checkpoint); a checkpoint already in $CKPT
#      is resumed (STAGE=train), so a second call continues it. The 2026-11-26 run's preset had 2000 iterations
#      and did not fit; today's `gpu` preset (64 iterations on 16 random training worlds, 4 more drawn for
#      evaluation) needs about 540 s on an idle H200 (2026-12-04: drawing the worlds ~60 s idle, 197 s beside the
#      quality suite; compilation 79 s; 5.9-6.8 s an iteration), so STAGE=train's TRAIN_S is 570 and the call's
#      timeout_s 600; that session reached iteration 51 (STAGE=parallel, then a resumed STAGE=train);
#   2. quality: the agent exported to $OUT/agent_gpu.npz (`experiments.agent.export`), then
#      `python -m experiments.benchmark quality --suite "$SUITE"` with it: QUALITY_SCENARIOS x
#      SEEDS cases in WORKERS processes on QUALITY_PLATFORM (default cpu: the machine's 16 cores; on 2026-11-26
#      12 processes sharing the GPU spent over 30 ms a query, a small jitted step and a copy to the host each,
#      and no walker finished; `gpu` shares it with XLA_PYTHON_CLIENT_PREALLOCATE=false), only the first
#      wave of cases (--time-limit-s), killed after QUALITY_S seconds at the latest (rows of cases cut short
#      survive in the .partial file); then the same command with --time-limit-s 0: no new case, summary rows,
#      headline table and plot.
#
# STAGE=all (the default) runs both in one call, sized to fit 600 s (TRAIN_S 210, QUALITY_S 250: the agent is
# then cut short). For the preset to completion, two calls back to back on the same warm machine (it is given
# back 30 s after a call, and the checkpoint does not come back): STAGE=train, then STAGE=quality.
# STAGE=parallel runs both at once in one call (TRAIN_S 460, QUALITY_S 480): training on the GPU, and the quality
# suite on the CPU cores with the packaged agent (the trained one is not ready until the end; it comes back as
# $OUT/agent_gpu.npz to be measured elsewhere). Its seconds are then contended: read them as such.
#
# Run from the repository root: OUT=out/gpu STAGE=train bash benchmarks/gpu_session.sh   (PY picks the interpreter)
set -u
STAGE=${STAGE:-all}
case "$STAGE" in
  all) TRAIN_S=${TRAIN_S:-210} QUALITY_S=${QUALITY_S:-250} ;;
  train) TRAIN_S=${TRAIN_S:-570} ;;
  quality) QUALITY_S=${QUALITY_S:-450} ;;
  parallel) TRAIN_S=${TRAIN_S:-460} QUALITY_S=${QUALITY_S:-480} ;;  # the 2026-12-04 call: 512.9 s in all
  *) echo "STAGE must be all, train, quality or parallel, got '$STAGE'" >&2; exit 2 ;;
esac
OUT=${OUT:-out/gpu}
PY=${PY:-python3}
WORKERS=${WORKERS:-14}
QUALITY_PLATFORM=${QUALITY_PLATFORM:-cpu}
SEEDS=${SEEDS:-2}
QUALITY_SCENARIOS=${QUALITY_SCENARIOS:-"standard wide deep masked null confounded"}
CKPT=${CKPT:-checkpoints/gpu}
# TensorBoard events; parallel keeps them out of $OUT, which brings back 8 files at most
if [ "$STAGE" = parallel ]; then LOGDIR=${LOGDIR:-/tmp/gpu_runs}; else LOGDIR=${LOGDIR:-$OUT/runs}; fi
METHODS=${METHODS:-}  # a subset of the suite's methods (empty: all)
PRESET=${PRESET:-gpu}  # smoke: a dry run of this script on a CPU
SUITE=${SUITE:-full}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$OUT/session.log"; }

{ nvidia-smi -L 2>&1; nproc; "$PY" -c "import jax, flax, optax, orbax.checkpoint, mctx, tyro, pysubgroup, tensorboardX
import cube_env, muzero_jax
print('jax', jax.__version__, 'flax', flax.__version__, 'mctx', mctx.__version__, jax.devices())"; } \
  >> "$OUT/session.log" 2>&1 || { stamp "imports failed"; exit 1; }
stamp "imports ok"

# shellcheck disable=SC2206
quality_args=(--suite "$SUITE" --scenarios $QUALITY_SCENARIOS --seeds "$SEEDS" --out "$OUT/quality_gpu.jsonl"
  --plot "$OUT/recall_vs_budget_gpu.png")
# shellcheck disable=SC2206
[ -n "$METHODS" ] && quality_args+=(--methods $METHODS)
if [ "$STAGE" = parallel ]; then  # the packaged agent plays; the suite's cases start until half its time is gone
  JAX_PLATFORMS=$QUALITY_PLATFORM timeout -s TERM -k 20 "$QUALITY_S" "$PY" -m experiments.benchmark quality \
    "${quality_args[@]}" --workers "$WORKERS" --time-limit-s $((QUALITY_S / 2)) > /dev/null 2> "$OUT/quality.log" &
  quality_pid=$!
fi

if [ "$STAGE" != quality ]; then
  [ "$STAGE" != train ] && rm -rf "$CKPT"
  if ls "$CKPT" 2>/dev/null | grep -q '^[0-9]'; then
    start=(--resume "$CKPT")
  else
    start=(--preset "$PRESET" --checkpoint-dir "$CKPT" --checkpoint-every 20)
  fi
  timeout -s TERM -k 60 "$TRAIN_S" "$PY" -m experiments.train "${start[@]}" --no-evaluate --logdir "$LOGDIR" \
    >> "$OUT/train.log" 2>&1
  stamp "train exit $? ($(ls "$CKPT" 2>/dev/null | tr '\n' ' '))"
fi
trained=1
ls "$CKPT" 2>/dev/null | grep -q '^[0-9]' || { tail -30 "$OUT/train.log"; trained=0; }
[ "$STAGE" = train ] && exit $((1 - trained))

# The agent as one .npz (written where the checkpoint was made; read on any platform, and it comes back in $OUT).
if [ "$trained" = 1 ]; then
  "$PY" -m experiments.agent.export "$CKPT" --out "$OUT/agent_gpu.npz" >> "$OUT/session.log" 2>&1 \
    && stamp "exported $(du -h "$OUT/agent_gpu.npz" | cut -f1)" || { stamp "export failed"; trained=0; }
fi
AGENT="$OUT/agent_gpu.npz"

if [ "$STAGE" = parallel ]; then  # the suite's summary whatever became of the training
  wait "$quality_pid"
  stamp "quality exit $?"
  JAX_PLATFORMS=$QUALITY_PLATFORM "$PY" -m experiments.benchmark quality "${quality_args[@]}" --workers 1 \
    --time-limit-s 0 > /dev/null 2> "$OUT/summary.log"
  stamp "summary exit $?"
  tail -40 "$OUT/summary.log"
  exit $((1 - trained))
fi
[ "$trained" = 1 ] || exit 1

JAX_PLATFORMS=$QUALITY_PLATFORM timeout -s TERM -k 20 "$QUALITY_S" "$PY" -m experiments.benchmark quality \
  "${quality_args[@]}" --checkpoint "$AGENT" --workers "$WORKERS" --time-limit-s 10 > /dev/null 2> "$OUT/quality.log"
stamp "quality exit $?"

JAX_PLATFORMS=$QUALITY_PLATFORM "$PY" -m experiments.benchmark quality "${quality_args[@]}" --checkpoint "$AGENT" \
  --workers 1 --time-limit-s 0 > /dev/null 2> "$OUT/summary.log"
stamp "summary exit $?"
tail -40 "$OUT/summary.log"
