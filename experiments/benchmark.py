"""Benchmarks: `python -m experiments.benchmark {env,search,selfplay,checkpoint}`.

  env       environment steps/s vs cube cells and batch, bandwidth bound, scaling slope
  search    mctx search simulations/s and the overhead ratio (search / network-only time)
  selfplay  self-play moves/s, then learner updates/s
  cartpole  MuZero on gymnax CartPole-v1: moves/s, learner steps/s, wall time to a greedy mean return >= 475
  checkpoint  Orbax save (blocking part and until on disk), full restore and params-only load times
  quality   discovery recall/precision per query budget: muzero vs baselines vs pysubgroup (bench_quality.py)
  speed     every speed figure above in one run, with linearity checks in cells and batch (bench_speed.py)


Each prints machine-readable JSON lines (one per measurement) to stdout and,
with `--out FILE`, appends them to FILE. Speed targets live here, not in
tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable

import tyro

import cube_env
from experiments import bench_speed, cartpole_bench


def _emit(rows: Iterable[dict], out: str | None) -> list[dict]:
  done = []
  handle = open(out, "a") if out else None
  try:
    for row in rows:
      line = json.dumps(row, sort_keys=True)
      print(line, flush=True)
      if handle:
        handle.write(line + "\n")
        handle.flush()  # a killed run keeps every row it printed
      done.append(row)
  finally:
    if handle:
      handle.close()
  return done


@dataclasses.dataclass(frozen=True)
class Env:
  """Environment steps/s against cube cells and batch, with the bandwidth bound."""

  cells: tuple[int, ...] = (1_000, 10_000, 100_000, 200_000)
  batches: tuple[int, ...] = (1, 64, 1024)
  methods: tuple[str, ...] = ("segment", "matmul")
  max_work: float = 3e6
  """Skip configurations with cells x batch above this (use 1e12 on a GPU)."""
  out: str | None = None


def run_env(args: Env) -> list[dict]:
  from experiments import bench_env

  rows = _emit(bench_env.bench_env(args.cells, args.batches, args.methods, args.max_work), args.out)
  return rows + _emit(bench_env.linearity(rows), args.out)


@dataclasses.dataclass(frozen=True)
class Agent:
  """MuZero speed on the cube task: search (with overhead ratio), self-play, learner."""

  preset: str = "smoke"
  """experiments.train preset for the network and cube sizes."""
  batch_sizes: tuple[int, ...] = (1, 16, 64)
  """Search batch sizes (search) or environments (selfplay) or learner batches (learner)."""
  out: str | None = None


def _agent_setup(args: Agent):
  import jax

  from experiments import train

  task, config, _ = train.build(train.Args(preset=args.preset))
  cubes = cube_env.make_cubes(task, split="train")
  env, (pool,) = cube_env.make_pool(task, [cubes])
  device = jax.devices()[0]
  tag = dict(
    preset=args.preset,
    device=device.device_kind,
    platform=device.platform,
    num_actions=env.num_actions,
    num_simulations=config.num_simulations,
    search=config.search,
  )
  return config, env, pool, tag


def run_search(args: Agent) -> list[dict]:
  import muzero_jax

  config, env, pool, tag = _agent_setup(args)
  rows = muzero_jax.benchmark_search(config, env, pool, batch_sizes=args.batch_sizes)
  return _emit((dict(tag, bench="search", **r) for r in rows), args.out)


def run_selfplay(args: Agent) -> list[dict]:
  import muzero_jax

  config, env, pool, tag = _agent_setup(args)
  rows = muzero_jax.benchmark_selfplay(config, env, pool, num_envs=args.batch_sizes)
  rows = _emit((dict(tag, bench="selfplay", **r) for r in rows), args.out)
  learner = muzero_jax.benchmark_learner(config, env, pool, batch_sizes=(config.batch_size,))
  return rows + _emit((dict(tag, bench="learner", **r) for r in learner), args.out)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Checkpoint cost of a preset's whole training state (parameters, optimiser, a replay full of random values,
  actors): the blocking part of an asynchronous save, the time until it is on disk, a verified full restore
  and a parameters-only load."""

  preset: str = "cpu"
  """experiments.train preset whose training state is saved."""
  repeats: int = 3
  """Saves (and restores) timed; each into a fresh directory."""
  out: str | None = None


def run_checkpoint(args: Checkpoint) -> list[dict]:
  import tempfile
  import time

  import jax
  import numpy as np

  import muzero_jax

  config, env, pool, tag = _agent_setup(Agent(preset=args.preset))
  trainer = muzero_jax.make_train(config, env, pool)
  state = trainer.init()
  # A full replay of random values: the worst case for the writer's compression (a fresh one is zeros).
  rng = np.random.default_rng(0)
  fill = lambda x: (
    rng.random(x.shape) < 0.5
    if x.dtype == bool
    # noqa: E731
    else rng.integers(0, 100, x.shape)
    if np.issubdtype(x.dtype, np.integer)
    else rng.standard_normal(x.shape)
  ).astype(x.dtype)
  state = jax.block_until_ready(
    jax.device_put(state.replace(replay=jax.tree.map(fill, state.replay)), jax.devices()[0])
  )
  template = jax.eval_shape(trainer.init)
  nbytes = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
  rows = []
  for i in range(args.repeats):
    with tempfile.TemporaryDirectory() as directory:
      ckpt = muzero_jax.Checkpointer(directory)
      t0 = time.perf_counter()
      ckpt.save(1, state, config=config, env=env)
      blocking = time.perf_counter() - t0
      ckpt.wait()
      on_disk = time.perf_counter() - t0
      t1 = time.perf_counter()
      restored = ckpt.restore(template, env=env, config=config)
      jax.block_until_ready(restored.state)
      restore_s = time.perf_counter() - t1
      ckpt.close()
      t2 = time.perf_counter()
      jax.block_until_ready(muzero_jax.load_params(directory)[0])
      params_s = time.perf_counter() - t2
      disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(directory) for f in fs)
    rows.append(
      dict(
        tag,
        bench="checkpoint",
        repeat=i,
        state_mb=nbytes / 2**20,
        disk_mb=disk / 2**20,
        save_blocking_s=blocking,
        save_until_on_disk_s=on_disk,
        restore_verified_s=restore_s,
        load_params_s=params_s,
      )
    )
  return _emit(rows, args.out)


@dataclasses.dataclass(frozen=True)
class Quality:
  """Discovery quality per query: every method (the muzero agent, the baselines, pysubgroup) at budgets from 1% to
  100% of the exhaustive query count on held-out synthetic cubes; recall, precision, confirmed findings, queries and
  seconds (experiments/bench_quality.py)."""

  suite: str = "quick"
  """quick (2 cubes of 2,500 rows per scenario and 1 large cube, every method at 1-100%: 14 minutes on 2 CPU cores
  with 2 workers), full (5 cubes of 20,000 rows, 7 budgets: for a GPU) or tiny (seconds of work)."""
  checkpoint: str | None = None
  """Agent for the muzero method (a directory written by experiments.train). Without it the agent in
  checkpoints/bench-cpu is used, or trained there first with the cpu preset (about 13 more minutes)."""
  methods: tuple[str, ...] | None = None
  """Subset of methods (default: the suite's)."""
  scenarios: tuple[str, ...] | None = None
  """Subset of scenarios (default: the suite's)."""
  plot: str | None = None
  """Plot path (default: recall_vs_budget.png beside --out)."""
  workers: int | None = None
  """Cases run at once in separate processes (default: 2 on a CPU with 2+ cores, 1 on a GPU; more on one GPU
  needs XLA_PYTHON_CLIENT_PREALLOCATE=false)."""
  seeds: int | None = None
  """Evaluation cubes per scenario (default: the suite's)."""
  time_limit_s: float | None = None
  """Start no case after this many seconds (a started case finishes; cases go seed by seed across scenarios)."""
  out: str | None = None
  """JSON lines file. Its run rows of the same suite and sizes are kept and not run again (use a new file for a
  fresh run); the rows of a killed call, kept in OUT.partial by the workers, are merged too."""


def run_quality(args: Quality) -> list[dict]:
  from experiments import bench_quality

  if args.suite not in bench_quality.SUITES:
    raise SystemExit(f"error: --suite must be one of {sorted(bench_quality.SUITES)}")
  try:
    bench_quality.check_request(args.methods, args.scenarios, args.workers, args.seeds, args.time_limit_s)
  except ValueError as err:
    raise SystemExit(f"error: {err}") from None
  return bench_quality.run(
    args.suite,
    checkpoint=args.checkpoint,
    method_names=args.methods,
    plot_path=args.plot,
    out=args.out,
    emit=_emit,
    scenarios=args.scenarios,
    workers=args.workers,
    seeds=args.seeds,
    time_limit_s=args.time_limit_s,
  )


def run_speed(args: bench_speed.Speed) -> list[dict]:
  return bench_speed.run(args, _emit)


COMMANDS = {
  "env": (Env, run_env),
  "search": (Agent, run_search),
  "selfplay": (Agent, run_selfplay),
  "checkpoint": (Checkpoint, run_checkpoint),
  "quality": (Quality, run_quality),
  "speed": (bench_speed.Speed, run_speed),
  "cartpole": (cartpole_bench.CartPole, lambda args: cartpole_bench.run(args, _emit)),
}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(f"usage: python -m experiments.benchmark {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
    return 2
  cls, fn = COMMANDS[argv[0]]
  fn(tyro.cli(cls, args=argv[1:], prog=f"experiments.benchmark {argv[0]}"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
