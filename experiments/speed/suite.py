"""Every speed figure in one run: `python -m experiments.benchmark speed --out speed.jsonl` (docs/design.md).

Gathers the measurements of the earlier issues with their own functions:
environment steps/s against cube cells (1e3-1e6) and batch with the ratio to
the bandwidth bound (`experiments.speed.env_speed`), mctx search simulations/s and
the overhead ratio, self-play moves/s and learner updates/s
(`experiments.speed.agent` on the cube task of an `experiments.train` preset),
with the compile times each reports. A first row names the device; then come
log-log slopes of step time against cells (per batch) and against batch (per
cube size), which say whether cost grows at most linearly
(`experiments.speed.scaling`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable

import jax

import cube_env
from experiments.speed import agent, env_speed, scaling

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


def run_speed_suite(
  *,
  cells: Iterable[int],
  batches: Iterable[int],
  max_work: float,
  groupby: Iterable[str] | None,
  preset: str,
  search_batches: Iterable[int],
  selfplay_envs: Iterable[int],
  learner_batches: Iterable[int],
  emit: Emit,
) -> list[dict]:
  """Every speed row, handed to `emit` group by group (a killed run keeps what it measured).

  `groupby`: group-by formulations of the env figures (None: the backend's own,
  `cube_env.default_groupby`); the other arguments are the flags of
  `experiments.benchmark speed`.
  """
  rows = emit([device_row()])
  env_rows = emit(env_speed.env_speed_rows(cells, batches, tuple(groupby or (cube_env.default_groupby(),)), max_work))
  rows += env_rows
  rows += emit(scaling.slopes(env_rows, x="cells", group="batch") + scaling.slopes(env_rows, x="batch", group="cells"))
  setup = agent.agent_setup(preset)
  rows += emit(agent.search_rows(setup, search_batches))
  rows += emit(agent.selfplay_rows(setup, selfplay_envs))
  rows += emit(agent.learner_rows(setup, learner_batches))
  rows += emit([dict(bench="device_after", load_average=os.getloadavg())])
  return rows
