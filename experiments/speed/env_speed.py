"""Environment speed: a step against today's formulation and against the bare reduction, in one run (docs/design.md, Benchmarks and honesty).

Every step is one group-by pass plus the statistics of every cohort one
action away. For each cube size and batch this module times, on the same
cube and the same environments:

  * the step (`cube_env.default_groupby()`, the cell index);
  * the reference step: the dense `segment` group-by under a plain `vmap`,
    which is what a step cost before the index (`batch_chunk` = batch);
    its statistics are today's faster ones, so the speed-up is a lower bound
    on the gain over the old code;
  * the bare reduction: the same additions with nothing else (the index
    group-by of the cohorts the step reaches, as XLA runs it: no statistics,
    observation or state), and the same additions done by `numpy.bincount`
    (one per payload column over (column, code, protected column, group)
    keys, single-threaded; batch 1 only);
  * the peak memory of the compiled batched step (XLA's memory analysis)
    against `CubeEnv.step_memory_bound`, and the reference's.

The environments are a fixed mix: states at depth 0, 1 and 2 (reached by
random legal actions) each taking one more random legal action, so a figure
is an average over the kinds of step a search makes, not the cheapest one.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

import cube_env
from cube_env.environment import batching, findings, groupby

# Sizes like the synthetic schema: 9 dimensions + 6 protected, 12 values, 9 measures.
NUM_DIMS, NUM_PROT, NUM_VALUES, NUM_GROUPS, NUM_MEASURES = 9, 6, 12, 6, 9
SINGLE_STATES = 12  # distinct environments timed one by one at batch 1 (4 at each depth 0, 1, 2)
REFERENCE = "segment"  # the dense group-by every step used before the cell index


def reference_env(env: cube_env.CubeEnv) -> cube_env.CubeEnv:
  """Today's step on the same env: the dense `REFERENCE` group-by under a plain vmap (every batched env in one chunk)."""
  return dataclasses.replace(env, groupby=REFERENCE, batch_chunk=1 << 30)


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


def _take(tree, idx):
  return jax.tree.map(lambda x: x[idx], tree)


def workload(env, params, count: int, seed: int = 0):
  """`count` environments at depths 0, 1, 2 (cycling) and one random legal action each.

  Returns:
    (keys `[count, 2]`, states batched `[count, ...]`, actions `[count]`).
  """
  rng = np.random.default_rng(seed)
  keys = jax.random.split(jax.random.PRNGKey(seed), count)
  reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
  step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))

  def legal_actions(states):
    masks = np.asarray(states.mask)
    return jnp.asarray([rng.choice(np.nonzero(m)[0]) for m in masks], jnp.int32)

  def keep_moved(take, old, new):
    return jax.tree.map(lambda a, b: jnp.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), b, a), old, new)

  _, states = reset(keys, params)
  depth = np.arange(count) % 3
  for k in range(2):
    _, moved, *_ = step(keys, states, legal_actions(states), params)
    states = keep_moved(jnp.asarray(depth > k), states, moved)
  return keys, states, legal_actions(states)


def _seconds(fn, calls, *, min_time: float = 1.0, min_passes: int = 5, max_passes: int = 30, warmup: bool = True):
  """Median seconds of one pass over `calls` (each a tuple of args).

  After a warm-up pass, passes run until `min_passes` and `min_time` are
  both reached (or `max_passes`); the median is robust to the other
  tenants of a shared machine.
  """
  if warmup:
    jax.block_until_ready([fn(*c) for c in calls])
  times: list[float] = []
  while len(times) < max_passes and (len(times) < min_passes or sum(times) < min_time):
    t0 = time.perf_counter()
    jax.block_until_ready([fn(*c) for c in calls])
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _batches(keys, states, actions, batch: int):
  """The workload as calls of `batch` environments (batch 1: each environment alone)."""
  if batch == 1:
    return [(keys[i : i + 1], _take(states, slice(i, i + 1)), actions[i : i + 1]) for i in range(len(actions))]
  return [(keys, states, actions)]


def _peak(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def numpy_sums(params, filters: np.ndarray, num_values: int) -> int:
  """The index group-by's additions done by `numpy.bincount`; returns the number of cell-column pairs read.

  For the filters with the fewest cells (a) and the next (b): every column but
  a over a's cells, column a over b's cells (or none at depth 1: the root grid
  is kept), each matching cell added at (column, its code, protected column,
  its group) for every payload column.
  """
  codes, order, starts = params["codes"], params["order"], params["starts"]
  pay, prot = params["payload"], params["prot_col"]
  num_f, num_p, num_g = codes.shape[1], len(prot), params["num_groups"]
  on = filters >= 0
  if not on.any():
    return 0
  value = np.maximum(filters, 0)
  lo, hi = starts[np.arange(num_f), value], starts[np.arange(num_f), value + 1]
  size = np.where(on, hi - lo, np.iinfo(np.int64).max)
  a = int(np.argmin(size))
  size[a] = np.iinfo(np.int64).max
  b = int(np.argmin(size))
  passes = [(a, None)] + ([(b, a)] if on.sum() > 1 else [])
  read = 0
  for src, column in passes:
    cells = order[src, lo[src] : hi[src]]
    cc = codes[cells]
    bad = (cc != filters[None, :]) & on[None, :]
    match = (bad.sum(1, keepdims=True) - bad) == 0  # [n, F]
    cols = np.arange(num_f) if column is None else np.asarray([column])
    if column is None:
      match[:, a] = False
    else:
      match = match[:, cols]
    groups = cc[:, prot]  # [n, P]
    cell_i, col_i = np.nonzero(match)
    key = (cols[col_i] * num_values + cc[cell_i, cols[col_i]])[:, None] * num_p + np.arange(num_p)[None, :]
    key = (key * num_g + groups[cell_i]).reshape(-1)
    for w in range(pay.shape[1]):
      np.bincount(key, weights=np.repeat(pay[cells[cell_i], w], num_p), minlength=num_f * num_values * num_p * num_g)
    read += len(cell_i)
  return read


def _numpy_params(params, num_groups: int) -> dict:
  stats = np.asarray(params.stats)
  return dict(
    codes=np.asarray(params.codes),
    order=np.asarray(params.order),
    starts=np.asarray(params.starts).astype(np.int64),
    payload=np.concatenate([stats.reshape(len(stats), -1), np.asarray(params.rows)[:, None]], axis=1),
    prot_col=np.asarray(params.prot_col),
    num_groups=num_groups,
  )


def env_speed_rows(
  cells=(1_000, 10_000, 100_000, 1_000_000),
  batches=(1, 16, 64),
  methods=None,
  max_work: float = 2e7,
  reference_max_work: float = 2e6,
  horizon: int = 32,
):
  """Yields one dict per (method, cells, batch), with the reference, the bare reductions and memory.

  Args:
    cells, batches: cube sizes and numbers of environments stepped together.
    methods: group-by formulations of the step (default: `cube_env.default_groupby()`).
    max_work: skip configurations with cells x batch above this (reported as skipped).
    reference_max_work: time the dense reference only up to this cells x batch (its memory grows as
      cells x batch x columns); above it only its compiled peak memory is reported.
    horizon: episode length of the env (the visited list in the state).
  """
  device = jax.devices()[0]
  for n in cells:
    cube = random_cube(n)
    for method in methods or (cube_env.default_groupby(),):
      t0 = time.perf_counter()
      env, params = cube_env.make_env(cube, horizon=horizon, groupby=method, min_group=2, min_cohort=1)
      jax.block_until_ready(params)
      params_s = time.perf_counter() - t0
      num_values = env.shape.num_values
      run = [b for b in batches if n * b <= max_work]  # the workload serves only the batches that run
      keys_all, states_all, actions_all = workload(env, params, max(run + [SINGLE_STATES]))
      np_params = _numpy_params(params, env.shape.num_groups)
      for b in batches:
        row = dict(
          bench="env",
          method=method,
          reference=REFERENCE,
          cells=n,
          batch=b,
          device=device.device_kind,
          platform=device.platform,
          cube_bytes=batching.tree_bytes(params),
          params_s=params_s,
        )
        if n * b > max_work:
          yield dict(row, skipped=f"cells x batch > {max_work:g} on this machine")
          continue
        count = SINGLE_STATES if b == 1 else b
        keys, states, actions = keys_all[:count], _take(states_all, slice(0, count)), actions_all[:count]
        calls = _batches(keys, states, actions, b)
        vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
        try:
          t0 = time.perf_counter()
          compiled = vstep.lower(*calls[0], params).compile()
          row["compile_s"] = time.perf_counter() - t0
          row["peak_bytes"] = _peak(compiled)
          row["bound_bytes"] = env.step_memory_bound(params, b)
          step_s = _seconds(compiled, [c + (params,) for c in calls]) / len(calls)
        except jax.errors.JaxRuntimeError as err:  # out of device memory: report it, go on with the rest
          yield dict(row, error=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
          continue
        row.update(step_s=step_s, steps_per_s=b / step_s)
        # The bare reduction: the same group-by of the cohorts reached, run the way the step runs it.
        reached = vstep(keys, states, actions, params)[1].filters
        sums = functools.partial(groupby.pixel_stats, num_values=num_values, method=method)
        sums = batching.map_when_batched(sums, env.batch_chunk or batching.default_chunk())
        reduce = jax.jit(jax.vmap(sums, in_axes=(None, 0)))
        filt_calls = [(params, reached[i : i + 1]) for i in range(count)] if b == 1 else [(params, reached)]
        reduction_s = _seconds(reduce, filt_calls) / len(filt_calls)
        row.update(reduction_s=reduction_s, ratio_to_reduction=step_s / reduction_s)
        if b == 1:
          t0 = time.perf_counter()
          read = sum(numpy_sums(np_params, np.asarray(f), num_values) for f in np.asarray(reached))
          numpy_s = (time.perf_counter() - t0) / count
          row.update(numpy_reduction_s=numpy_s, ratio_to_numpy=step_s / numpy_s if numpy_s > 0 else None)
          row["cell_columns_summed_per_step"] = read / count  # (cell, column) pairs added, each at P keys
        # Today's step: the dense formulation under a plain vmap.
        ref_env = reference_env(env)
        ref_step = jax.jit(jax.vmap(ref_env.step, in_axes=(0, 0, 0, None)))
        ref_compiled = ref_step.lower(*calls[0], params).compile()
        row["reference_peak_bytes"] = _peak(ref_compiled)
        if n * b <= reference_max_work:
          ref_calls = [c + (params,) for c in calls]
          ref_s = _seconds(ref_compiled, ref_calls, min_time=10.0, min_passes=1, max_passes=3, warmup=False)
          ref_s /= len(calls)
          row.update(reference_step_s=ref_s, speedup=ref_s / step_s)
        else:
          row["reference_skipped"] = (
            f"cells x batch > {reference_max_work:g}: the dense step needs cells x batch memory"
          )
        yield row


def profile_rows(cells=(10_000, 100_000, 1_000_000), horizon: int = 32):
  """Where a batch-1 step's time goes, on the same mix of environments as `env_speed_rows`.

  Parts timed alone (each jitted): the group-by (matching and summing the
  cells), the observation's tests (`findings.pixel_features`), the reward's
  tests (`findings.assess`, exact p-values and novelty), the whole step, and
  the host transfer of the observation (what a search walker reads back).
  `other_s` is the step minus the three parts (legality, visited marks,
  stacking the observation, the state update).
  """
  for n in cells:
    env, params = cube_env.make_env(random_cube(n), horizon=horizon, min_group=2, min_cohort=1)
    yield _profile(env, params, n)


def _pixels(params, filters, *, num_values: int):
  return groupby.pixel_stats(params, filters, num_values=num_values)


def _features(params, grid, filters, *, num_values: int):
  return findings.pixel_features(params, grid, findings.pixel_protected(params, filters, num_values))


def _reward(params, grid, filters, *, num_values: int):
  here = jnp.where(filters[0] >= 0, filters[0], num_values)
  prot = findings.protected_filtered(params, filters)
  return findings.assess(params, prot, grid[0, here], grid[:, num_values], filters >= 0)[2]


def _profile(env, params, n: int) -> dict:
  device = jax.devices()[0]
  c = env.shape.num_values
  keys, states, actions = workload(env, params, SINGLE_STATES)
  step = jax.jit(env.step)
  calls = [(keys[i], _take(states, i), actions[i], params) for i in range(SINGLE_STATES)]
  step_s = _seconds(step, calls) / SINGLE_STATES
  reached = [step(*call)[1].filters for call in calls]
  pix = jax.jit(functools.partial(_pixels, num_values=c))
  groupby_s = _seconds(pix, [(params, f) for f in reached]) / SINGLE_STATES
  grids = [pix(params, f)[0] for f in reached]
  parts = [(params, g, f) for g, f in zip(grids, reached)]
  features_s = _seconds(jax.jit(functools.partial(_features, num_values=c)), parts) / SINGLE_STATES
  reward_s = _seconds(jax.jit(functools.partial(_reward, num_values=c)), parts) / SINGLE_STATES
  obs = jax.block_until_ready([step(*call)[0] for call in calls])
  t0 = time.perf_counter()
  for o in obs:
    jax.device_get(o)
  transfer_s = (time.perf_counter() - t0) / SINGLE_STATES
  return dict(
    bench="env_profile",
    cells=n,
    device=device.device_kind,
    platform=device.platform,
    step_s=step_s,
    groupby_s=groupby_s,
    observation_tests_s=features_s,
    reward_tests_s=reward_s,
    other_s=step_s - groupby_s - features_s - reward_s,
    host_transfer_s=transfer_s,
  )
