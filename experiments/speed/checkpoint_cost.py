"""Checkpoint cost of a preset's whole training state (docs/design.md, The agent).

The state is the parameters, the optimiser, a replay full of random values
(the worst case for the writer's compression: a fresh replay is zeros) and the
actors. Each repeat times the blocking part of an asynchronous save, the time
until it is on disk, a verified full restore and a parameters-only load, in a
fresh directory.
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np

import muzero_jax
from experiments.speed.agent import agent_setup


def _random_like(rng: np.random.Generator, x) -> np.ndarray:
  """Random values of `x`'s shape and dtype (booleans, integers in [0, 100) or standard normals)."""
  if x.dtype == bool:
    values = rng.random(x.shape) < 0.5
  elif np.issubdtype(x.dtype, np.integer):
    values = rng.integers(0, 100, x.shape)
  else:
    values = rng.standard_normal(x.shape)
  return values.astype(x.dtype)


def checkpoint_rows(preset: str, *, repeats: int) -> list[dict]:
  """One row per repeat: state and disk size (MiB) and the four times in seconds."""
  config, env, pool, tag = agent_setup(preset)
  trainer = muzero_jax.make_train(config, env, pool)
  state = trainer.init()
  rng = np.random.default_rng(0)
  state = state.replace(replay=jax.tree.map(lambda x: _random_like(rng, x), state.replay))
  state = jax.block_until_ready(jax.device_put(state, jax.devices()[0]))
  template = jax.eval_shape(trainer.init)
  nbytes = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
  rows = []
  for i in range(repeats):
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
  return rows
