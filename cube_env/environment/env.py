"""The cube as a pure-functional environment (gymnax 1.0 style).

Episode: an analysis session of `horizon` steps starting at the whole
population. Action `(f, v)` on the grid `F x (C + 1)` sets the filter on
column f to value v (adding or switching it); column C clears it (roll-up).
The reward is the number of new significant findings of the cohort reached,
on its first visit only (revisits give 0), so an episode's return counts the
distinct findings discovered (the root's findings, which every search gets at
reset, are in `state.found` but not in the return).

Illegal actions (see `action_mask`) are no-ops that still use a time step and
give reward 0 (`info["illegal"]`). `info["new_findings"]` is the number of new
significant findings of the cohort the step observes, credited or not (after a
revisit or an illegal no-op it is that cohort's count again; the reward is what
was credited). The time left is part of the observation,
so reaching the horizon is a true terminal state: `terminated` is True at the
horizon (and when no action is legal); `truncated` is always False. `step`
does not auto-reset; trainers do (muzero_jax.selfplay).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from cube_env.data.disclosure import SMALL_CELL
from cube_env.data.ingest import Cube, CubeMeta
from cube_env.environment import batching
from cube_env.environment import cells as cl
from cube_env.environment import findings as fd
from cube_env.environment import groupby as gb
from cube_env.environment.params import EnvParams, EnvShape, make_params, stack_params

CHANNELS = (
  "legal",
  "log_size",
  "max_abs_z",
  "log_num_significant",
  "visited",
  "current",
  "real",
  "depth",
  "time_left",
  "current_log_size",
)
NUM_CHANNELS = len(CHANNELS)
Z_SCALE = 10.0  # |z| is divided by this (and clipped at 3) in the observation
EXPERT_SEEN = 100.0  # `expert_logits`' penalty (|z| units) on a target already visited: greedy goes to fresh ones


@struct.dataclass
class EnvState:
  filters: chex.Array  # [F] int32 category per column, -1 = all
  t: chex.Array  # [] int32 steps taken (= group-by queries after reset)
  visited: chex.Array  # [T + 1, F] int32 filters of visited cohorts; -2 rows unused
  mask: chex.Array  # [F * (C + 1)] bool legal actions from here
  rows: chex.Array  # [] float32 rows in the current cohort
  found: chex.Array  # [] int32 new findings seen so far, root included


@dataclasses.dataclass(frozen=True)
class CubeEnv:
  """Stateless environment over cubes padded to `shape`.

  Attributes:
    shape: padded sizes; every params given to this env has them.
    horizon: steps per episode (the query budget T).
    groupby: "index", "matmul" or "segment" (see `cube_env.environment.groupby`).
    meta: the cube's metadata for naming actions (None for pools).
    batch_chunk: environments stepped together under `vmap` (0: the
      backend's default, `batching.default_chunk`); see
      `cube_env.environment.batching`.
  """

  shape: EnvShape
  horizon: int = 64
  groupby: str = "index"
  meta: CubeMeta | None = None
  batch_chunk: int = 0

  @property
  def num_actions(self) -> int:
    return self.shape.num_filters * (self.shape.num_values + 1)

  @property
  def observation_shape(self) -> tuple[int, int, int]:
    return (NUM_CHANNELS, self.shape.num_filters, self.shape.num_values + 1)

  # -- naming -----------------------------------------------------------------
  def action_for(self, column: str | int, value: Any | None) -> int:
    """Action that sets `column` to `value` (a label or code), or clears it (None)."""
    width = self.shape.num_values + 1
    if isinstance(column, str):
      if self.meta is None:
        raise ValueError("this env has no cube metadata; pass the column index")
      f = self.meta.column_index(column)
    else:
      f = int(column)
    if value is None:
      return f * width + self.shape.num_values
    if isinstance(value, str) and self.meta is not None:
      v = self.meta.code(self.meta.filter_names[f], value)
    else:
      v = int(value)
    return f * width + v

  def decode_action(self, action: int) -> tuple[int, int | None]:
    width = self.shape.num_values + 1
    f, v = divmod(int(action), width)
    return f, (None if v == self.shape.num_values else v)

  # -- dynamics ---------------------------------------------------------------
  def _observe(self, params: EnvParams, filters, t, visited):
    """Group-by pass: observation, legal mask, the cohort's findings and its rows.

    Under `vmap` it runs over chunks of environments (`batching.map_when_batched`). Called eagerly (no
    argument traced), it runs compiled as one program: evaluated op by op, a `custom_vmap` function compiles
    each of its ~430 operations apart (a first eager `reset` took 19 s instead of 3 s). Traced calls (`jit`,
    `vmap`) are unchanged.
    """
    if not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((params, filters, t, visited))):
      return _observe_compiled(self, params, filters, t, visited)
    return self._observe_batched(params, filters, t, visited)

  def _observe_batched(self, params: EnvParams, filters, t, visited):
    chunk = self.batch_chunk or batching.default_chunk()
    return batching.map_when_batched(self._observe_one, chunk)(params, filters, t, visited)

  def _observe_one(self, params: EnvParams, filters, t, visited):
    c = self.shape.num_values
    num_f = self.shape.num_filters
    pix, pix_rows = gb.pixel_stats(params, filters, num_values=c, method=self.groupby)
    # The cohort itself is a pixel: column 0 at its current value or "all";
    # its parents are the "all" pixels of the filtered columns.
    col0 = jnp.where(filters[0] >= 0, filters[0], c)
    cohort = pix[0, col0]
    cohort_rows = pix_rows[0, col0]
    prot_pix = fd.pixel_protected(params, filters, c)  # [F, C + 1, P]
    prot_own = fd.protected_filtered(params, filters)
    # Pixels (observation features) use Wallace's closed form; the cohort and
    # its parents (the reward) use exact p-values.
    max_z, n_sig = fd.pixel_features(params, pix, prot_pix)
    _, _, new = fd.assess(params, prot_own, cohort, pix[:, c], filters >= 0)

    vs = jnp.arange(c + 1)[None, :]
    depth = jnp.sum(filters >= 0)
    filt = filters[:, None]
    real = jnp.where(vs < c, vs < params.n_cats[:, None], params.n_cats[:, None] > 0)
    current = jnp.where(vs < c, filt == vs, filt < 0)
    adding = (vs < c) & (filt < 0)
    legal = (
      real
      & ~current
      & ~((vs == c) & (filt < 0))
      & ~(adding & (depth >= params.max_depth))
      & (pix_rows >= params.min_cohort)
    )

    # Visited: target (f, v) equals visited row r iff r agrees off column f and
    # has value v (or -1 for "all") on f.
    off = visited != filters[None, :]  # [R, F]
    n_off = jnp.sum(off, axis=1, keepdims=True)
    agree_except = (n_off - off) == 0  # [R, F]
    target_val = jnp.where(vs == c, -1, vs)  # [1, C + 1]
    seen = jnp.any(agree_except[:, :, None] & (visited[:, :, None] == target_val[None]), axis=0)

    log_total = jnp.log1p(params.total_rows)
    ones = jnp.ones((num_f, c + 1), jnp.float32)
    # A padded column (no categories) codes every cell 0, so its pixels would repeat the cohort's own statistics; its
    # pixel planes read 0 as a padded value's do, so a cube shows one image on any padded grid (a cold audit: an agent
    # pooling over the grid read a copy of the cohort per padded column). The global planes stay everywhere.
    on = real.astype(jnp.float32)
    obs = jnp.stack(
      [
        legal.astype(jnp.float32),
        on * jnp.log1p(pix_rows) / log_total,
        on * jnp.minimum(max_z / Z_SCALE, 3.0),
        on * jnp.log1p(n_sig.astype(jnp.float32)),
        on * seen.astype(jnp.float32),
        on * current.astype(jnp.float32),
        on,
        ones * depth / params.max_depth,
        ones * jnp.maximum(1.0 - t / self.horizon, 0.0),  # (1 - t / T read -1.5e-8 at t = T)
        ones * jnp.log1p(cohort_rows) / log_total,
      ]
    )
    n_new = jnp.sum(new).astype(jnp.int32)
    return obs, legal.reshape(-1), n_new, cohort_rows

  def reset(self, key: chex.PRNGKey, params: EnvParams):
    """Starts at the whole population. Returns (obs, state)."""
    del key  # deterministic start
    num_f = self.shape.num_filters
    filters = jnp.full((num_f,), -1, jnp.int32)
    visited = jnp.full((self.horizon + 1, num_f), -2, jnp.int32).at[0].set(filters)
    t = jnp.int32(0)
    obs, mask, n_new, rows = self._observe(params, filters, t, visited)
    state = EnvState(filters=filters, t=t, visited=visited, mask=mask, rows=rows, found=n_new)
    return obs, state

  def step(self, key: chex.PRNGKey, state: EnvState, action: chex.Array, params: EnvParams):
    """Applies `action`. Returns (obs, state, reward, terminated, truncated, info)."""
    del key
    c = self.shape.num_values
    action = jnp.asarray(action, jnp.int32)
    # An action outside [0, A) is illegal (indexing clamps it to the last action's legality; a cold audit).
    legal = (action >= 0) & (action < self.num_actions) & state.mask[jnp.clip(action, 0, self.num_actions - 1)]
    f, v = action // (c + 1), action % (c + 1)
    moved = state.filters.at[f].set(jnp.where(v == c, -1, v))
    filters = jnp.where(legal, moved, state.filters)
    first = ~jnp.any(jnp.all(state.visited == filters[None, :], axis=1))
    t = state.t + 1
    visited = state.visited.at[jnp.minimum(t, self.horizon)].set(filters)
    obs, mask, n_new, rows = self._observe(params, filters, t, visited)
    reward = jnp.where(legal & first, n_new, 0).astype(jnp.float32)
    terminated = (t >= self.horizon) | ~jnp.any(mask)
    state = EnvState(
      filters=filters, t=t, visited=visited, mask=mask, rows=rows, found=state.found + reward.astype(jnp.int32)
    )
    info = {"illegal": ~legal, "first_visit": legal & first, "new_findings": n_new}
    return obs, state, reward, terminated, jnp.bool_(False), info

  def step_memory_bound(self, params: EnvParams, batch: int) -> int:
    """Bytes a jitted `vmap(step)` over `batch` environments sharing `params` may hold at its peak.

    `2 x (cube + batch x (observation + state)) + 8 x chunk x (grid + scatter)`:
    the cube and the batch's inputs and outputs, plus a fixed working set for
    the `chunk` environments stepped at once (`batching`), where grid is one
    environment's pixel grid (`[F, C, P, G, M * 3 + 1]` float32, the size of
    `params.root`) and scatter one chunk of cells' updates
    (`cells.CHUNK_CELLS x F x P x (M * 3 + 1)` float32). No term grows with
    cells x batch. Checked against XLA's memory analysis on a CPU in
    tests/test_groupby_index.py and reported by `python -m experiments.benchmark speed`.
    """
    obs, state = jax.eval_shape(self.reset, jax.random.PRNGKey(0), params)
    chunk = min(self.batch_chunk or batching.default_chunk(), batch)
    per_env = batching.tree_bytes(obs) + batching.tree_bytes(state)
    num_f, _, num_p, _, width = params.root.shape[-5:]
    work = batching.tree_bytes(params.root) + 4 * cl.CHUNK_CELLS * num_f * num_p * width
    return 2 * (batching.tree_bytes(params) + batch * per_env) + 8 * chunk * work

  def expert_logits(self, obs: chex.Array, state: EnvState, params: EnvParams) -> chex.Array:
    """`[num_actions]` greedy search's preference, in |z| units: the target's strongest pixel |z|.

    The expert of `muzero_jax`'s imitation warm start (`MuZeroConfig.imitation_iterations`):
    `10 x max_abs_z + 0.01 x log(1 + significant tests)`, less `EXPERT_SEEN` for a target
    already visited, so its argmax over the legal actions is `cube_env.get_method("greedy")`'s move.
    """
    del state, params
    z = obs[CHANNELS.index("max_abs_z")] * Z_SCALE + 1e-2 * obs[CHANNELS.index("log_num_significant")]
    return (z - EXPERT_SEEN * obs[CHANNELS.index("visited")]).reshape(-1)

  def action_mask(self, state: EnvState, params: EnvParams) -> chex.Array:
    """`[num_actions]` bool, True = legal."""
    del params
    return state.mask


# `CubeEnv._observe` called eagerly: the environment static (hashed by its fields), the rest traced.
_observe_compiled = jax.jit(CubeEnv._observe_batched, static_argnums=0)


def make_env(
  cube: Cube,
  *,
  max_depth: int = 3,
  horizon: int = 64,
  min_group: float = SMALL_CELL,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  new_z: float | None = None,
  groupby: str | None = None,
  shape: EnvShape | None = None,
) -> tuple[CubeEnv, EnvParams]:
  """Environment and params for one cube.

  Args:
    cube: from `build_cube`.
    max_depth: most filters at once.
    horizon: steps per episode (query budget).
    min_group: a group or rest smaller than this is not tested (small cells).
    min_cohort: smallest cohort that may be visited (default 2 * min_group).
    z_screen: |z| for significance, or "bonferroni" (from the search space size). The default, 4.0, is this
      function's (and `cohort_table`'s, which the worlds' newness check calls with its family's 4.0); callers pass
      their own: training (`CubeTask.z_screen`) "bonferroni", a discovery run `DiscoveryConfig.z_screen` (3.5).
    new_z: heterogeneity z for newness under a parent with the same gap (default z_screen; `make_params`).
    groupby: "index", "matmul" or "segment" (default `cube_env.default_groupby()`).
    shape: pad to this shape (to share one compiled env across cubes).
  """
  if horizon < 1:
    raise ValueError(f"horizon must be >= 1, got {horizon}")
  params = make_params(
    cube, shape, max_depth=max_depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen, new_z=new_z
  )
  method = groupby or gb.default_groupby()
  if method not in gb.GROUPBY_METHODS:
    raise ValueError(f"groupby must be one of {gb.GROUPBY_METHODS}, got {method!r}")
  env = CubeEnv(shape=shape or EnvShape.of(cube), horizon=horizon, groupby=method, meta=cube.meta)
  return env, params


def make_env_pool(cubes: list[Cube], **kwargs) -> tuple[CubeEnv, EnvParams]:
  """One env and params stacked `[len(cubes), ...]`, all padded to a common shape."""
  if not cubes:
    raise ValueError("make_env_pool needs at least one cube")
  shape = EnvShape.of(cubes[0])
  for cube in cubes[1:]:
    shape = shape.union(EnvShape.of(cube))
  kwargs = dict(kwargs)
  kwargs["shape"] = shape
  envs_params = [make_env(cube, **kwargs) for cube in cubes]
  env = dataclasses.replace(envs_params[0][0], meta=None)
  return env, stack_params([p for _, p in envs_params])
