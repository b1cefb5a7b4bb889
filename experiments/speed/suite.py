"""Every speed figure in one run: `python -m experiments.benchmark speed --out speed.jsonl` (docs/design.md).

Gathers the measurements with their own functions: environment steps/s
against cube cells (1e3-1e6) and batch, each beside today's dense step, the
bare reduction and the peak memory against its bound
(`experiments.speed.env_speed`), log-log slopes of step time against cells
and batch (`experiments.speed.scaling`), where a step's time goes
(`env_speed.profile_rows`), milliseconds per query of a greedy search on an
analyst's 60,000-row table (beside today's step) and on a 1,000,000-row,
40-column one, with ingest times (`experiments.speed.queries`), self-play
moves/s and training moves/s (self-play with the learner's updates) as
now and as before this round side by side, mctx search simulations/s and learner updates/s
(`experiments.speed.agent` on the cube task of an `experiments.train`
preset), with the compile times each reports. A first row names the device.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable

import jax

from experiments.speed import agent, env_speed, queries, scaling

Emit = Callable[[Iterable[dict]], list[dict]]  # prints (and stores) rows as they come; returns them


def device_row() -> dict:
  """The device, the host and its load before the run."""
  device = jax.devices()[0]
  return dict(
    bench="device",
    device=device.device_kind,
    platform=device.platform,
    devices=len(jax.devices()),
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    load_average=os.getloadavg(),
    jax=jax.__version__,
  )


def speedup_summary(rows: list[dict], bench: str) -> list[dict]:
  """Moves/s of `bench` rows ("selfplay" or "training") over the same rows as before this round, per number of environments (same run).

  Rows that differ only in `learner_loop` (training) each get their own summary, over the one reference.
  """
  rows = [r for r in rows if r.get("bench") == bench]
  reference = {r["num_envs"]: r["moves_per_s"] for r in rows if r["reference"]}
  out = []
  for r in sorted((r for r in rows if not r["reference"]), key=lambda r: (r["num_envs"], r.get("learner_loop", ""))):
    n = r["num_envs"]
    if n in reference:
      loop = {"learner_loop": r["learner_loop"]} if "learner_loop" in r else {}
      out.append(
        dict(
          bench=f"{bench}_speedup",
          num_envs=n,
          **loop,
          moves_per_s=r["moves_per_s"],
          reference_moves_per_s=reference[n],
          speedup=r["moves_per_s"] / reference[n],
        )
      )
  return out


def run_speed_suite(
  *,
  cells: Iterable[int],
  batches: Iterable[int],
  max_work: float,
  reference_max_work: float,
  groupby: Iterable[str] | None,
  profile_cells: Iterable[int],
  preset: str,
  search_batches: Iterable[int],
  selfplay_envs: Iterable[int],
  learner_batches: Iterable[int],
  table_rows: int,
  wide_rows: int,
  emit: Emit,
) -> list[dict]:
  """Every speed row, handed to `emit` group by group (a killed run keeps what it measured).

  `groupby`: group-by formulations of the env figures (None: `cube_env.default_groupby`);
  the other arguments are the flags of `experiments.benchmark speed`.
  """
  rows = emit([device_row()])
  env_rows = emit(
    env_speed.env_speed_rows(cells, batches, tuple(groupby) if groupby else None, max_work, reference_max_work)
  )
  rows += env_rows
  rows += emit(scaling.slopes(env_rows, x="cells", group="batch") + scaling.slopes(env_rows, x="batch", group="cells"))
  rows += emit(env_speed.profile_rows(tuple(profile_cells)))
  if table_rows:
    rows += emit(queries.table_rows(rows=table_rows))
  if wide_rows:
    rows += emit(queries.wide_rows(rows=wide_rows))
  setup = agent.agent_setup(preset)
  play = emit(agent.selfplay_rows(setup, selfplay_envs) + agent.selfplay_rows(setup, selfplay_envs, reference=True))
  rows += play + emit(speedup_summary(play, "selfplay"))
  train = emit(agent.training_rows(setup) + agent.training_rows(setup, reference=True))
  rows += train + emit(speedup_summary(train, "training"))
  rows += emit(agent.search_rows(setup, search_batches))
  rows += emit(agent.learner_rows(setup, learner_batches))
  rows += emit([dict(bench="device_after", load_average=os.getloadavg())])
  return rows
