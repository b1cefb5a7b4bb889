"""Environment speed: steps/s against cube size and batch, with a bandwidth bound (docs/design.md, Discovery and confirmation).

Every step is one group-by pass over the cube's cells, so its floor is the
time to stream the cube's bytes once per environment. The bound is measured
in the same run as a jitted reduction over arrays of the cube's size, and
each step time is reported as a ratio to `batch x bound`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import cube_env

# Sizes like the synthetic schema: 9 dimensions + 6 protected, 12 values, 9 measures.
NUM_DIMS, NUM_PROT, NUM_VALUES, NUM_GROUPS, NUM_MEASURES = 9, 6, 12, 6, 9


def random_cube(num_cells: int, seed: int = 0) -> cube_env.Cube:
  """A cube with random cells of the synthetic data's shape (content is irrelevant to speed)."""
  rng = np.random.default_rng(seed)
  f = NUM_DIMS + NUM_PROT
  cats = [NUM_VALUES] * NUM_DIMS + [NUM_GROUPS] * NUM_PROT
  codes = np.stack([rng.integers(0, c, num_cells) for c in cats], 1).astype(np.int32)
  rows = rng.integers(1, 5, num_cells).astype(np.float32)
  x = rng.normal(0, 1, (num_cells, NUM_MEASURES)).astype(np.float32)
  stats = np.stack([rows[:, None] * np.ones_like(x), rows[:, None] * x, rows[:, None] * (x * x + 1)], -1)
  meta = cube_env.CubeMeta(
    filter_names=tuple(f"c{i}" for i in range(f)),
    categories=tuple(tuple(f"v{j}" for j in range(c)) for c in cats),
    n_dimensions=NUM_DIMS,
    measure_names=tuple(f"m{i}" for i in range(NUM_MEASURES)),
    is_binary=(False,) * NUM_MEASURES,
    is_log=(False,) * NUM_MEASURES,
    shift=(0.0,) * NUM_MEASURES,
    n_rows=int(rows.sum()),
    summary=(),
  )
  return cube_env.Cube(codes=jnp.asarray(codes), rows=jnp.asarray(rows), stats=jnp.asarray(stats), meta=meta)


def _time(fn, *args, repeats: int):
  out = fn(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats


def bandwidth_bound(params) -> float:
  """Seconds to read the cube's arrays once (a jitted full reduction)."""
  read = jax.jit(lambda p: jnp.sum(p.codes) + jnp.sum(p.rows) + jnp.sum(p.stats))
  return _time(read, params, repeats=20)


def env_speed_rows(
  cells=(1_000, 10_000, 100_000, 200_000),
  batches=(1, 64, 1024),
  methods=("segment", "matmul"),
  max_work: float = 3e6,
  horizon: int = 32,
):
  """Yields one dict per (method, cells, batch): steps/s, compile s, bound and ratio.

  `max_work` caps cells x batch on this machine (larger configurations are
  reported as skipped with the reason), so the CPU run stays short.
  """
  device = jax.devices()[0]
  for n in cells:
    cube = random_cube(n)
    for method in methods:
      env, params = cube_env.make_env(cube, horizon=horizon, groupby=method, min_group=2, min_cohort=1)
      bound = bandwidth_bound(params)
      nbytes = sum(x.size * x.dtype.itemsize for x in (params.codes, params.rows, params.stats))
      for b in batches:
        row = dict(
          bench="env",
          method=method,
          cells=n,
          batch=b,
          device=device.device_kind,
          platform=device.platform,
          cube_bytes=int(nbytes),
        )
        if n * b > max_work:
          yield dict(row, skipped=f"cells x batch > {max_work:g} on this machine")
          continue
        keys = jax.random.split(jax.random.PRNGKey(0), b)
        reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
        step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
        actions = jnp.asarray(np.random.default_rng(0).integers(0, env.num_actions, b), jnp.int32)
        try:
          _, states = reset(keys, params)
          t0 = time.perf_counter()
          jax.block_until_ready(step.lower(keys, states, actions, params).compile()(keys, states, actions, params))
          compile_s = time.perf_counter() - t0
          per_step = _time(step, keys, states, actions, params, repeats=max(2, min(20, int(2e6 / (n * b)))))
        except jax.errors.JaxRuntimeError as err:  # out of device memory: report it, go on with the rest
          yield dict(row, error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
          continue
        yield dict(
          row,
          steps_per_s=b / per_step,
          step_s=per_step,
          compile_s=compile_s,
          bound_s=bound * b,
          ratio_to_bound=per_step / (bound * b),
        )
