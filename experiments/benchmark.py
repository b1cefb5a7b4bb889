"""Benchmarks: `python -m experiments.benchmark {env,search,selfplay}`.

  env       environment steps/s vs cube cells and batch, bandwidth bound, scaling slope
  search    mctx search simulations/s and the overhead ratio (search / network-only time)
  selfplay  self-play moves/s, then learner updates/s


Each prints machine-readable JSON lines (one per measurement) to stdout and,
with `--out FILE`, appends them to FILE. Speed targets live here, not in
tests.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Iterable

import tyro


def _emit(rows: Iterable[dict], out: str | None) -> list[dict]:
  done = []
  handle = open(out, "a") if out else None
  try:
    for row in rows:
      line = json.dumps(row, sort_keys=True)
      print(line, flush=True)
      if handle:
        handle.write(line + "\n")
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
  from experiments import cube_task, train
  task, config, _ = train.build(train.Args(preset=args.preset))
  cubes = cube_task.make_cubes(task, split="train")
  env, (pool,) = cube_task.make_pool(task, [cubes])
  device = jax.devices()[0]
  tag = dict(preset=args.preset, device=device.device_kind, platform=device.platform,
             num_actions=env.num_actions, num_simulations=config.num_simulations, search=config.search)
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


COMMANDS = {"env": (Env, run_env), "search": (Agent, run_search), "selfplay": (Agent, run_selfplay)}


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
