"""Every speed figure in one run: `python -m experiments.benchmark speed --out speed.jsonl`.

Gathers the measurements of the earlier issues with their own functions:
environment steps/s against cube cells (1e3-1e6) and batch with the ratio to
the bandwidth bound (`experiments.bench_env`), mctx search simulations/s and
the overhead ratio, self-play moves/s and learner updates/s
(`muzero_jax.benchmark_*` on the cube task of a `experiments.train` preset),
with the compile times each reports. A first row names the device; the last
rows fit log-log slopes of step time against cells (per batch) and against
batch (per cube size) and say whether cost grows at most linearly (slope <=
`LINEAR_SLOPE`: on a CPU, fixed per-call overhead makes small sizes cheaper
than linear, so slopes below 1 are expected).
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable, Iterable

import numpy as np

LINEAR_SLOPE = 1.15  # a fitted slope above this means cost grows faster than linearly


@dataclasses.dataclass(frozen=True)
class Speed:
  """All speed figures in one run: env vs cells and batch, search, self-play, learner, compile times."""

  cells: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
  batches: tuple[int, ...] = (1, 16, 64)
  """Environment batch sizes (vmapped states)."""
  max_work: float = 2e6
  """Skip env configurations with cells x batch above this (use 1e12 on a GPU; one that runs out of device
  memory gets an `error` row and the run goes on)."""
  groupby: tuple[str, ...] | None = None
  """Group-by formulations of the env figures (default: the backend's own, `cube_env.groupby.default_method`:
  segment on a CPU, matmul on an accelerator)."""
  preset: str = "cpu"
  """experiments.train preset for the agent figures."""
  search_batches: tuple[int, ...] = (1, 16, 64)
  selfplay_envs: tuple[int, ...] = (8, 32)
  learner_batches: tuple[int, ...] = (32, 128)
  out: str | None = None


def slopes(rows: list[dict], *, x: str, group: str) -> list[dict]:
  """Log-log slope of `step_s` against `x` for each value of `group` (env rows with at least two points)."""
  pts: dict = {}
  for r in rows:
    if r.get("bench") == "env" and "step_s" in r:
      pts.setdefault((r.get("method", ""), r[group]), []).append((r[x], r["step_s"]))
  out = []
  for (method, key), p in sorted(pts.items()):
    if len({a for a, _ in p}) >= 2:
      slope = float(np.polyfit(np.log([a for a, _ in p]), np.log([b for _, b in p]), 1)[0])
      out.append(
        {
          "bench": f"env_scaling_{x}",
          "method": method,
          group: key,
          "slope": slope,
          "points": len(p),
          "at_most_linear": slope <= LINEAR_SLOPE,
        }
      )
  return out


def run(args: Speed, emit: Callable[[Iterable[dict], str | None], list[dict]]) -> list[dict]:
  import jax  # noqa: PLC0415

  import muzero_jax  # noqa: PLC0415
  from experiments import bench_env  # noqa: PLC0415
  from experiments.benchmark import Agent, _agent_setup  # noqa: PLC0415

  device = jax.devices()[0]
  rows = emit(
    [
      dict(
        bench="device",
        device=device.device_kind,
        platform=device.platform,
        devices=len(jax.devices()),
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        load_average=os.getloadavg(),
        jax=jax.__version__,
      )
    ],
    args.out,
  )
  from cube_env.groupby import default_method  # noqa: PLC0415

  groupby = args.groupby or (default_method(),)
  env_rows = emit(bench_env.bench_env(args.cells, args.batches, groupby, args.max_work), args.out)
  rows += env_rows
  rows += emit(slopes(env_rows, x="cells", group="batch") + slopes(env_rows, x="batch", group="cells"), args.out)
  config, env, pool, tag = _agent_setup(Agent(preset=args.preset))
  rows += emit(
    (
      dict(tag, bench="search", **r)
      for r in muzero_jax.benchmark_search(config, env, pool, batch_sizes=args.search_batches)
    ),
    args.out,
  )
  rows += emit(
    (
      dict(tag, bench="selfplay", **r)
      for r in muzero_jax.benchmark_selfplay(config, env, pool, num_envs=args.selfplay_envs)
    ),
    args.out,
  )
  rows += emit(
    (
      dict(tag, bench="learner", **r)
      for r in muzero_jax.benchmark_learner(config, env, pool, batch_sizes=args.learner_batches)
    ),
    args.out,
  )
  rows += emit([dict(bench="device_after", load_average=os.getloadavg())], args.out)
  return rows
