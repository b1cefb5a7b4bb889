"""The cell-index group-by, batched steps in chunks, the step's memory bound, and the sparse exact t test.

`pixel_stats(method="index")` is checked against the dense "segment" formulation and against an independent numpy
reference over the cube's raw arrays; steps of an index env against a segment env; `vmap(step)` at several batch
chunks against single steps; XLA's memory analysis of the vmapped step against `CubeEnv.step_memory_bound`; and
`stats.t_test` / `stats.screen` against scipy and `stats.compare`.
"""

import dataclasses
import functools
import operator

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

import cube_env
from cube_env.environment import batching
from cube_env.environment import cells as cl
from cube_env.environment import groupby as gb
from cube_env.environment import stats as st
from experiments.speed.env_speed import random_cube
from tests.conftest import make_small_df

HORIZON = 12
# Jitted once per method; each padded shape compiles once and is reused by every test here.
PIX = {
  m: jax.jit(functools.partial(gb.pixel_stats, method=m), static_argnames="num_values") for m in ("index", "segment")
}
FAMILY = jax.jit(gb.family_stats)

# Columns of the small cube (tests/conftest.py, n_bins=3): proc(5) site(4) urgency(2) bmi(3) | race(3) sex(2).
PROC, SITE, URGENCY, BMI, RACE, SEX = range(6)


def _filters(num_f, **on):
  out = np.full((num_f,), -1, np.int32)
  for col, v in on.items():
    out[{"proc": PROC, "site": SITE, "urgency": URGENCY, "bmi": BMI, "race": RACE, "sex": SEX}[col]] = v
  return out


# (name, filters on the small cube); "urgency=3" is a code past its 2 categories (< C = 5): a value with no cells.
CASES = [
  ("depth0", {}),
  ("proc", {"proc": 0}),
  ("protected", {"race": 1}),
  ("no_cells", {"urgency": 3}),
  ("proc_site", {"proc": 1, "site": 1}),
  ("no_cells_depth2", {"proc": 1, "urgency": 4}),
  ("two_protected", {"race": 2, "sex": 1}),
  ("depth3", {"proc": 2, "sex": 1, "site": 2}),
  ("depth3_protected", {"urgency": 1, "bmi": 0, "race": 0}),
  ("depth4_empty", {"proc": 4, "site": 3, "urgency": 1, "race": 1}),  # values with cells, none together
]


# -- independent numpy reference ----------------------------------------------------------------------------------------
def reference(params, filters, n_real):
  """float64 sums over the first `n_real` cells of the raw arrays, without the index or the dense code paths.

  Returns:
    grid `[F, C, P, G, W]` (per column f, code c on f, protected p, group g: payload summed over the cells matching
    every filter but f's), its sums of |payload| (the scale of float32 rounding), rows `[F, C]`, the cohort
    `[P, G, W]` (cells matching every filter) and its rows.
  """
  codes = np.asarray(params.codes)[:n_real].astype(np.int64)
  stats = np.asarray(params.stats, np.float64)[:n_real]
  rows = np.asarray(params.rows, np.float64)[:n_real]
  prot_col = np.asarray(params.prot_col)
  n, num_f = codes.shape
  num_c, num_p, num_g, width = np.asarray(params.root).shape[1:]
  pay = np.concatenate([stats.reshape(n, -1), rows[:, None]], axis=1)
  filters = np.asarray(filters)
  bad = (codes != filters[None, :]) & (filters[None, :] >= 0)
  match = (bad.sum(axis=1, keepdims=True) - bad) == 0  # [N, F]
  grid = np.zeros((num_f, num_c, num_p, num_g, width))
  scale = np.zeros_like(grid)
  ref_rows = np.zeros((num_f, num_c))
  for f in range(num_f):
    sel = match[:, f]
    np.add.at(ref_rows[f], codes[sel, f], rows[sel])
    for p in range(num_p):
      g = codes[:, prot_col[p]]
      sel_p = sel & (g < num_g)
      np.add.at(grid[f], (codes[sel_p, f], p, g[sel_p]), pay[sel_p])
      np.add.at(scale[f], (codes[sel_p, f], p, g[sel_p]), np.abs(pay[sel_p]))
  inside = ~bad.any(axis=1)
  cohort = np.zeros((num_p, num_g, width))
  for p in range(num_p):
    g = codes[:, prot_col[p]]
    sel_p = inside & (g < num_g)
    np.add.at(cohort, (p, g[sel_p]), pay[sel_p])
  return grid, scale, ref_rows, cohort, rows[inside].sum()


def check_pixels(params, filters, n_real, out, *others, rtol=1e-5):
  """A pixel_stats output (and `others`) equals the numpy reference: sums to `rtol` of their |payload| scale, rows
  exactly, on the real protected columns (a padding one groups by column 0 and nothing reads it).

  Returns:
    the reference's rows `[F, C]`.
  """
  grid, scale, ref_rows, _, _ = reference(params, filters, n_real)
  valid = np.asarray(params.prot_valid)
  ref, scale = grid[:, :, valid, ..., :-1], scale[:, :, valid, ..., :-1]
  all_ref, all_scale = ref.sum(axis=1), scale.sum(axis=1)  # the "all" column: every code of f
  for stats, rows in (out, *others):
    stats, rows = np.asarray(stats, np.float64)[:, :, valid], np.asarray(rows, np.float64)
    got = stats[:, :-1].reshape(ref.shape)
    err = np.abs(got - ref) - rtol * scale - 1e-6
    assert np.all(err <= 0), (filters, float(err.max()))
    assert np.all(np.abs(stats[:, -1].reshape(all_ref.shape) - all_ref) <= rtol * all_scale + 1e-6), filters
    np.testing.assert_array_equal(rows[:, :-1], ref_rows)
    np.testing.assert_array_equal(rows[:, -1], ref_rows.sum(axis=1))
  if others:  # index and segment against each other, directly
    a, b = (np.asarray(o[0], np.float64)[:, :-1, valid].reshape(ref.shape) for o in (out, others[0]))
    assert np.all(np.abs(a - b) <= rtol * scale + 1e-6), filters
    np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(others[0][1]))
  return ref_rows


@pytest.fixture(scope="module")
def other_cube():
  """A second, smaller cube of a narrower schema (2 dimensions, 1 protected column, 1 measure)."""
  return cube_env.build_cube(
    make_small_df(seed=5, n=1500),
    cube_env.Schema(dimensions=["proc", "urgency"], protected=["race"], measures=["minutes"]),
  )


@pytest.fixture(scope="module")
def small_params(small_cube):
  return cube_env.make_params(small_cube)


# -- 1. pixel_stats: index = segment = numpy ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,on", CASES, ids=[c[0] for c in CASES])
def test_index_matches_segment_and_numpy(small_cube, small_params, name, on):
  params = small_params
  c = params.root.shape[1]
  filters = _filters(params.codes.shape[1], **on)
  if name.startswith("no_cells"):
    assert int(params.starts[URGENCY, filters[URGENCY] + 1] - params.starts[URGENCY, filters[URGENCY]]) == 0
  if name == "depth4_empty":
    codes = np.asarray(small_cube.codes)
    assert all((codes[:, f] == v).any() for f, v in enumerate(filters) if v >= 0)
    assert not np.all((codes == filters) | (filters < 0), axis=1).any()
  idx = PIX["index"](params, jnp.asarray(filters), num_values=c)
  seg = PIX["segment"](params, jnp.asarray(filters), num_values=c)
  ref_rows = check_pixels(params, filters, small_cube.num_cells, idx, seg)
  depth = int((filters >= 0).sum())
  # Sanity of the reference itself: at depth 0 every column's codes partition the cube.
  if depth == 0:
    assert np.all(ref_rows.sum(axis=1) == float(np.asarray(small_cube.rows).sum()))
  if name.startswith("no_cells"):  # every cohort but the filtered column's own is empty
    others = np.arange(len(filters)) != URGENCY
    assert not ref_rows[others].any() and ref_rows[URGENCY].sum() > 0


def test_index_on_random_filters(small_cube, small_params):
  """Random filters at depths 0-4 (values past the categories included) against the numpy reference and segment."""
  params = small_params
  c = params.root.shape[1]
  n_cats = np.asarray(params.n_cats)
  rng = np.random.default_rng(0)
  depths = []
  for _ in range(24):
    depth = int(rng.integers(0, 5))
    filters = np.full((len(n_cats),), -1, np.int32)
    for f in rng.choice(len(n_cats), depth, replace=False):
      filters[f] = rng.integers(0, n_cats[f] + 1) if rng.random() < 0.2 else rng.integers(0, n_cats[f])
    idx = PIX["index"](params, jnp.asarray(filters), num_values=c)
    check_pixels(params, filters, small_cube.num_cells, idx, PIX["segment"](params, jnp.asarray(filters), num_values=c))
    depths.append(depth)
  assert set(depths) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("bigger", [False, True], ids=["bucketed", "all_dims"])
def test_padded_cells_are_never_read(small_cube, small_params, bigger):
  """Padding cells hold poison (rows, statistics, code 0 everywhere); the index and its root grid never read them."""
  shape = cube_env.bucketed_shape(small_cube)
  if bigger:
    shape = cube_env.EnvShape(
      num_cells=2048, num_filters=8, num_values=7, num_protected=3, num_groups=4, num_measures=5
    )
  assert shape.num_cells > small_cube.num_cells
  params = cube_env.make_params(small_cube, shape)
  n = small_cube.num_cells
  assert int(params.starts[0, -1]) == n and np.all(np.asarray(params.order)[:, :n] < n)
  c, g = shape.num_values, shape.num_groups
  poisoned = params.replace(rows=params.rows.at[n:].set(7.0), stats=params.stats.at[n:].set(1000.0))
  root = cl.root_sums(
    poisoned.codes,
    poisoned.stats,
    poisoned.rows,
    poisoned.prot_col,
    poisoned.order,
    poisoned.starts,
    num_values=c,
    num_groups=g,
  )
  np.testing.assert_array_equal(np.asarray(root), np.asarray(params.root))
  poisoned = poisoned.replace(root=root)
  # The same cohorts as on the unpadded cube: real parts agree with it, padding is zero.
  own = small_params
  c_own, f_own = own.root.shape[1], own.codes.shape[1]
  for _, on in CASES:
    filters = _filters(shape.num_filters, **on)
    idx = PIX["index"](poisoned, jnp.asarray(filters), num_values=c)
    check_pixels(poisoned, filters, n, idx, PIX["segment"](params, jnp.asarray(filters), num_values=c))
    small = PIX["index"](own, jnp.asarray(filters[:f_own]), num_values=c_own)
    p_own, g_own, m_own = own.root.shape[2], own.root.shape[3], own.stats.shape[1]
    real = (slice(f_own), np.r_[:c_own, c], slice(p_own), slice(g_own), slice(m_own))  # the "all" column included
    np.testing.assert_array_equal(np.asarray(idx[1])[real[:2]], np.asarray(small[1]))
    np.testing.assert_allclose(np.asarray(idx[0])[real], np.asarray(small[0]), rtol=1e-5, atol=1e-3)
    # Padding values, groups and measures hold nothing (padding columns f >= 6 have every cell at code 0).
    assert not np.asarray(idx[0])[:, c_own:c].any() and not np.asarray(idx[1])[:, c_own:c].any()
    assert not np.asarray(idx[0])[:, :, :p_own, g_own:].any() and not np.asarray(idx[0])[..., m_own:, :].any()


def test_pool_under_vmap(small_cube, other_cube):
  """Two different cubes padded to one shape, vmapped over (params, filters): each equals its own numpy reference."""
  _, pool = cube_env.make_env_pool([small_cube, other_cube], horizon=HORIZON)
  c = pool.root.shape[2]
  n_real = [small_cube.num_cells, other_cube.num_cells]
  # The second cube is padded with cells, columns and a protected column.
  assert n_real[1] < pool.codes.shape[1] and np.asarray(pool.n_cats[1]).tolist() == [5, 2, 3, 0, 0, 0]
  assert np.asarray(pool.prot_valid).tolist() == [[True, True], [True, False]]
  batched = jax.jit(jax.vmap(functools.partial(gb.pixel_stats, num_values=c, method="index")))
  # Codes per column. The small cube: proc site urgency bmi | race sex; the other: proc urgency | race, then padding.
  pairs = [
    ([-1, -1, -1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]),
    ([0, -1, -1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]),
    ([1, 1, -1, -1, 0, -1], [1, 1, -1, -1, -1, -1]),
    ([-1, -1, -1, -1, -1, 1], [3, 0, -1, -1, -1, -1]),
    ([2, -1, 3, -1, -1, -1], [2, 1, 2, -1, -1, -1]),  # urgency 3 has no cell; the other cube at depth 3 with race
    ([4, 0, 1, 2, -1, -1], [-1, -1, 1, -1, -1, -1]),  # depth 4; the other cube filtered on its protected column only
  ]
  for on_a, on_b in pairs:
    filters = np.asarray([on_a, on_b], np.int32)
    stats, rows = batched(pool, jnp.asarray(filters))
    for i in range(2):
      one = jax.tree.map(operator.itemgetter(i), pool)
      seg = PIX["segment"](one, jnp.asarray(filters[i]), num_values=c)
      check_pixels(one, filters[i], n_real[i], (stats[i], rows[i]), seg)


# -- 2. family_stats -----------------------------------------------------------------------------------------------------
def test_family_stats_matches_numpy(small_cube, small_params):
  params = small_params
  num_f = params.codes.shape[1]
  for _, on in CASES:
    filters = _filters(num_f, **on)
    grid, scale, _, cohort, cohort_rows = reference(params, filters, small_cube.num_cells)
    fam, fam_rows = FAMILY(params, jnp.asarray(filters))
    fam, fam_rows = np.asarray(fam, np.float64), np.asarray(fam_rows, np.float64)
    parents = grid.sum(axis=1)  # [F, P, G, W]: every code of f = the cohort without f's filter
    want = np.concatenate([cohort[None], parents])[..., :-1]
    # The cohort's cells lie in every parent: its rounding scale is at most the smallest parent's.
    tol = 1e-5 * np.concatenate([scale.sum(axis=1).min(axis=0)[None], scale.sum(axis=1)])[..., :-1] + 1e-6
    assert np.all(np.abs(fam.reshape(want.shape) - want) <= tol), on
    assert fam_rows[0] == cohort_rows
    np.testing.assert_array_equal(fam_rows[1:], parents[:, 0, :, -1].sum(axis=-1))
    # Unfiltered columns' parents are the cohort itself.
    for f in np.nonzero(filters < 0)[0]:
      assert fam_rows[1 + f] == cohort_rows


# -- 3. steps: index env = segment env ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def envs(small_cube, other_cube):
  env, params = cube_env.make_env(small_cube, max_depth=3, horizon=HORIZON, z_screen=4.0)
  assert env.groupby == "index" and env.batch_chunk == 0
  seg = dataclasses.replace(env, groupby="segment")
  _, pool = cube_env.make_env_pool([small_cube, other_cube], max_depth=3, horizon=HORIZON, z_screen=4.0)
  # The pool's shape is the small cube's own, so one compiled single step serves both cubes.
  assert pool.codes.shape[1:] == params.codes.shape and pool.root.shape[1:] == params.root.shape
  return dict(
    env=env,
    params=params,
    pool=pool,
    reset=jax.jit(env.reset),
    step=jax.jit(env.step),
    seg_reset=jax.jit(seg.reset),
    seg_step=jax.jit(seg.step),
  )


def _assert_states_equal(a, b):
  for name in ("filters", "t", "visited", "mask", "rows", "found"):
    np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


def test_index_and_segment_steps_agree(envs):
  params, key = envs["params"], jax.random.PRNGKey(0)
  obs_i, s_i = envs["reset"](key, params)
  obs_s, s_s = envs["seg_reset"](key, params)
  np.testing.assert_allclose(np.asarray(obs_i), np.asarray(obs_s), atol=1e-4)
  _assert_states_equal(s_i, s_s)
  found_at_root = int(s_i.found)
  rng = np.random.default_rng(3)
  depths, total = set(), 0.0
  for _ in range(HORIZON):
    a = int(rng.choice(np.nonzero(np.asarray(s_i.mask))[0]))
    obs_i, s_i, r_i, term_i, _, info_i = envs["step"](key, s_i, a, params)
    obs_s, s_s, r_s, term_s, _, info_s = envs["seg_step"](key, s_s, a, params)
    np.testing.assert_allclose(np.asarray(obs_i), np.asarray(obs_s), atol=1e-4)
    assert float(r_i) == float(r_s) and bool(term_i) == bool(term_s)
    assert int(info_i["new_findings"]) == int(info_s["new_findings"])
    _assert_states_equal(s_i, s_s)
    depths.add(int(jnp.sum(s_i.filters >= 0)))
    total += float(r_i)
    if bool(term_i):
      break
  assert int(s_i.t) >= 6 and max(depths) >= 2  # the walk went somewhere
  assert int(s_i.found) == found_at_root + total


# -- 4. batching -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def walk_states(envs):
  """States along a random legal walk on each cube of the pool, stepped one at a time (the reference path)."""
  out = []
  for i in range(2):
    params = jax.tree.map(operator.itemgetter(i), envs["pool"])
    _, state = envs["reset"](jax.random.PRNGKey(0), params)
    rng = np.random.default_rng(10 + i)
    states = [state]
    for _ in range(6):
      legal = np.nonzero(np.asarray(state.mask))[0]
      _, state, *_ = envs["step"](jax.random.PRNGKey(0), state, int(rng.choice(legal)), params)
      states.append(state)
    out.append(states)
  return out


BATCH = 7


# Each vmapped step costs a compile (3-4 s on 2 cores; a chunk that does not divide the batch compiles the step twice,
# for the chunks and the remainder), so three of the six (chunk, params) pairs, each chunk and each in_axes once: the
# CPU default (1) with shared params, a non-dividing chunk with pooled params, the whole batch at once with shared.
@pytest.mark.parametrize(
  "chunk,params_axis",
  [(0, None), (3, 0), (BATCH + 1, None)],
  ids=["default-shared", "chunk3-pool", "whole_batch-shared"],
)
def test_vmapped_step_equals_single_steps(envs, walk_states, chunk, params_axis):
  env = dataclasses.replace(envs["env"], batch_chunk=chunk)
  pool = envs["pool"]
  rng = np.random.default_rng(chunk)
  cube = [0] * BATCH if params_axis is None else [i % 2 for i in range(BATCH)]
  states = [walk_states[k][i % len(walk_states[k])] for i, k in enumerate(cube)]
  actions = []
  for i, s in enumerate(states):
    mask = np.asarray(s.mask)
    # One illegal action (a no-op with reward 0) among legal ones.
    actions.append(int(np.nonzero(~mask)[0][0]) if i == 3 else int(rng.choice(np.nonzero(mask)[0])))
  keys = jax.random.split(jax.random.PRNGKey(1), BATCH)
  batch_states = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  actions = jnp.asarray(actions, jnp.int32)
  if params_axis is None:
    params = jax.tree.map(operator.itemgetter(0), pool)
  else:
    params = jax.tree.map(lambda x: x[np.asarray(cube)], pool)
  step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, params_axis)))
  obs, new, reward, term, trunc, info = step(keys, batch_states, actions, params)
  assert obs.shape == (BATCH, *env.observation_shape)
  for i in range(BATCH):
    one_params = jax.tree.map(operator.itemgetter(cube[i]), pool)
    o, s, r, t, _, inf = envs["step"](keys[i], states[i], int(actions[i]), one_params)
    np.testing.assert_allclose(np.asarray(obs[i]), np.asarray(o), atol=1e-5)
    _assert_states_equal(jax.tree.map(operator.itemgetter(i), new), s)
    assert float(reward[i]) == float(r) and bool(term[i]) == bool(t) and not bool(trunc[i])
    assert bool(info["illegal"][i]) == bool(inf["illegal"]) == (i == 3)
    assert int(info["new_findings"][i]) == int(inf["new_findings"])
  assert len({tuple(np.asarray(s.filters)) for s in states}) >= 4  # the batch holds different cohorts


@pytest.mark.parametrize("chunk", [1, 2, 5, 8])
def test_map_when_batched_toy(chunk):
  def fn(x, y):
    return x * jnp.sum(y) + jnp.cumsum(x), jnp.sum(y) * 2.0

  x = jnp.arange(15.0).reshape(5, 3)
  y = jnp.array([1.0, 2.0, 3.0, 4.0])
  mapped = jax.vmap(batching.map_when_batched(fn, chunk), in_axes=(0, None))
  a, b = jax.jit(mapped)(x, y)
  want_a = np.asarray(x) * 10.0 + np.cumsum(np.asarray(x), axis=1)
  np.testing.assert_allclose(np.asarray(a), want_a, rtol=1e-6)
  assert b.shape == (5,)  # every output is batched, even one that depends only on the shared argument
  np.testing.assert_array_equal(np.asarray(b), np.full(5, 20.0, np.float32))
  # Unbatched, the function is itself.
  a1, b1 = batching.map_when_batched(fn, chunk)(x[2], y)
  np.testing.assert_allclose(np.asarray(a1), want_a[2], rtol=1e-6)
  assert float(b1) == 20.0
  # It runs as a scan over chunks of the batch (remainder apart), with y closed over rather than broadcast.
  jaxpr = jax.make_jaxpr(mapped)(x, y).jaxpr
  (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
  assert scan.params["length"] == 5 // min(chunk, 5)
  assert scan.params["num_consts"] == 1 and scan.invars[0].aval.shape == (4,)
  assert not any(v.aval.shape == (5, 4) for e in jaxpr.eqns for v in e.outvars)
  with pytest.raises(ValueError, match="chunk"):
    batching.map_when_batched(fn, 0)


# -- 5. memory ---------------------------------------------------------------------------------------------------------
@functools.cache
def _random_env(num_cells):
  return cube_env.make_env(random_cube(num_cells), horizon=16, min_group=2, min_cohort=1)


def _step_memory(env, params, batch):
  """(temp, total, bound) bytes of the jitted vmapped step over `batch` envs sharing `params` (compiled, never run)."""
  keys = jax.random.split(jax.random.PRNGKey(0), batch)
  _, states = jax.eval_shape(jax.vmap(env.reset, in_axes=(0, None)), keys, params)
  actions = jax.ShapeDtypeStruct((batch,), jnp.int32)
  step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  mem = step.lower(keys, states, actions, params).compile().memory_analysis()
  total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  return mem.temp_size_in_bytes, total, env.step_memory_bound(params, batch)


def _random_step_temp(num_cells, chunk, batch):
  """Temp bytes of the step on a random cube, after checking its total against the bound."""
  env, params = _random_env(num_cells)
  temp, total, bound = _step_memory(dataclasses.replace(env, batch_chunk=chunk), params, batch)
  assert total <= bound, (num_cells, chunk, batch, total, bound)
  return temp


def test_step_memory_is_bounded_and_flat():
  """Total bytes <= step_memory_bound; temp grows neither with cells nor, at the default chunk, with batch.

  Four (cells, chunk, batch) points: each is a compile of 4-6 s on 2 cores, so cells and batch change together between
  the first two (temp grows with either in the dense step).
  """
  points = [(1000, 0, 1), (8000, 0, 64), (8000, 16, 16), (64000, 16, 16)]
  temp = {key: _random_step_temp(*key) for key in points}
  # 8x the cells and 64x the batch at the default chunk (1 env at a time on a CPU): the same working set.
  assert abs(temp[8000, 0, 64] - temp[1000, 0, 1]) <= 0.02 * temp[1000, 0, 1], temp
  # Chunk 16 (environments vmapped within a chunk, as on accelerators) holds 16 environments' working set, and
  # none of it grows with cells (an environment's row of the cell order is read chunk by chunk, never copied).
  assert 8 * temp[8000, 0, 64] < temp[8000, 16, 16] < 20 * temp[8000, 0, 64], temp
  assert abs(temp[64000, 16, 16] - temp[8000, 16, 16]) <= 0.01 * temp[8000, 16, 16], temp


def test_step_memory_bound_holds_on_a_small_grid(envs):
  """The bound on the conftest cube (grid 7,200 bytes, smaller than a cell chunk's scatter) at the CPU default chunk
  (the program of a batching test); the scatter term of the bound is what covers it."""
  temp, total, bound = _step_memory(envs["env"], envs["params"], BATCH)
  assert temp > 0 and total <= bound, (temp, total, bound)


def test_dense_groupby_memory_grows_with_batch(small_params):
  """The failure the index and the chunked batch fix, on the dense group-by alone (cheap to compile, tiny cube): the
  segment pass vmapped over a batch holds every environment's cells x columns at once."""
  params = small_params
  c, num_f = params.root.shape[1], params.codes.shape[1]
  temp = {}
  for b in (1, 8):
    fn = jax.jit(jax.vmap(functools.partial(gb.pixel_stats, num_values=c, method="segment"), (None, 0)))
    filters = jax.ShapeDtypeStruct((b, num_f), jnp.int32)
    temp[b] = fn.lower(params, filters).compile().memory_analysis().temp_size_in_bytes
  # ~6x from batch 1 to 8 (385 KB to 2.3 MB here); even one environment holds ~28x the cube's codes (columns x cells).
  assert temp[8] > 4 * temp[1] and temp[1] > 10 * params.codes.size * 4, temp


# -- 6. statistics ------------------------------------------------------------------------------------------------------
T_TEST = jax.jit(st.t_test)
T_DENSE = jax.jit(st.t_two_sided_p)


def _t_inputs(rng, size, frac_small, frac_zero):
  t = rng.uniform(-8.0, 8.0, size)
  small = rng.random(size) < frac_small
  df = np.where(small, rng.uniform(1.0, 199.0, size), rng.uniform(200.0, 1e5, size))
  whole = small & (rng.random(size) < 0.3)
  df[whole] = rng.integers(1, 200, int(whole.sum()))  # some whole degrees of freedom
  t[rng.random(size) < frac_zero] = 0.0
  return t.astype(np.float32), df.astype(np.float32)


@pytest.mark.parametrize(
  "size,frac_small,frac_zero,loops",
  [
    (60, 0.6, 0.1, "one"),  # an array smaller than EXACT_CHUNK: one chunk
    (3000, 0.7, 0.05, "several"),  # chunks of 375 (size / 8): about 2,000 needed, 6 chunks
    (500, 0.4, 0.1, "none"),  # t = 0 wherever df < 200: the incomplete beta never runs
  ],
)
def test_t_test_matches_scipy(size, frac_small, frac_zero, loops):
  rng = np.random.default_rng(size)
  t, df = _t_inputs(rng, size, frac_small, frac_zero)
  if loops == "none":
    t[df < 200] = 0.0
  need = (df < 200) & (t != 0)
  chunk = max(st.EXACT_CHUNK, -(-size // 8))
  steps = -(-int(need.sum()) // chunk)
  assert {"none": steps == 0, "one": steps == 1, "several": steps > 1}[loops], steps
  z, p = map(np.asarray, T_TEST(jnp.asarray(t), jnp.asarray(df)))
  t64, df64 = t.astype(np.float64), df.astype(np.float64)
  p_ref = 2 * ss.t.sf(np.abs(t64), df64)
  z_ref = np.sign(t64) * ss.norm.isf(p_ref / 2)
  zero = t == 0
  assert np.all(p[zero] == 1.0) and np.all(z[zero] == 0.0)
  np.testing.assert_allclose(p, p_ref, rtol=2e-3, atol=1e-6)
  assert np.all(np.abs(z - z_ref) <= 1e-3 + 1e-3 * np.abs(z_ref)), float(np.max(np.abs(z - z_ref)))
  assert np.all(np.sign(z[~zero]) == np.sign(t[~zero]))
  # Small df: the exact p of the incomplete beta on the whole array (its float32 result varies ~3e-5 with the array).
  if need.any():
    dense = np.asarray(T_DENSE(jnp.asarray(t), jnp.asarray(df)))
    np.testing.assert_allclose(p[need], dense[need], rtol=1e-4, atol=1e-7)
  assert np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(z))


def _suff(rng, n, binary, shift):
  """Shifted sufficient statistics (n, s1, s2) of n random values; some constant."""
  if binary:
    x = (rng.random(n) < rng.uniform(0.0, 0.5)).astype(np.float64)
  elif rng.random() < 0.1:
    x = np.full(n, rng.normal())  # zero variance
  else:
    x = rng.normal(rng.normal(0, 0.3), rng.uniform(0.5, 2.0), n)
  d = x - shift
  return np.array([n, d.sum(), (d * d).sum()])


def test_screen_equals_compare_wallace():
  """Continuous and binary measures, groups from 0 rows up, constant values: the same z and valid, bit for bit."""
  rng = np.random.default_rng(0)
  size = 600
  binary = rng.random(size) < 0.35
  shift = np.where(binary, 0.2, 0.1)
  n_group = np.where(rng.random(size) < 0.4, rng.integers(0, 14, size), rng.integers(14, 300, size))
  n_rest = np.where(rng.random(size) < 0.2, rng.integers(0, 14, size), rng.integers(14, 2000, size))
  group = np.stack([_suff(rng, n, b, s) for n, b, s in zip(n_group, binary, shift)]).astype(np.float32)
  rest = np.stack([_suff(rng, n, b, s) for n, b, s in zip(n_rest, binary, shift)]).astype(np.float32)
  args = (jnp.asarray(group), jnp.asarray(rest), jnp.asarray(shift, jnp.float32), jnp.asarray(binary))
  for min_group in (2.0, 11.0):
    z, valid = jax.jit(functools.partial(st.screen, min_group=min_group))(*args)
    cmp = jax.jit(functools.partial(st.compare, min_group=min_group, z_method="wallace"))(*args)
    np.testing.assert_array_equal(np.asarray(valid), np.asarray(cmp.valid))
    np.testing.assert_array_equal(np.asarray(z), np.asarray(cmp.z))
    valid = np.asarray(valid)
    # Both kinds of test, tiny groups and invalid tests are all in the sample.
    assert valid[binary].any() and valid[~binary].any() and (~valid).sum() > 50
    assert np.all(np.asarray(z)[~valid] == 0.0) and np.abs(np.asarray(z)[valid]).max() > 3


def test_space_padded_to_a_larger_shape(small_cube):
  """A space whose params have an extra (padding) filter column: its empty-space check ignores the padding column
  (whose one "value" holds every row), and a search's candidate table is read with the space's own params."""
  names = small_cube.meta.filter_names
  shape = dataclasses.replace(cube_env.bucketed_shape(small_cube), num_filters=len(names) + 1)
  codes, rows = np.asarray(small_cube.codes), np.asarray(small_cube.rows)
  largest = max(np.bincount(codes[:, f], weights=rows).max() for f in range(len(names)))
  assert largest < small_cube.meta.n_rows - 2  # so some min_group empties the space while the root stays
  with pytest.raises(ValueError, match="empty cohort space"):
    cube_env.make_space(small_cube, max_depth=2, min_group=int(largest) // 2 + 1, z_screen=4.0, shape=shape)
  space = cube_env.make_space(small_cube, max_depth=2, z_screen=4.0, shape=shape)
  own = cube_env.make_space(small_cube, max_depth=2, z_screen=4.0)
  got, ref = cube_env.greedy(space, budget=6, seed=0), cube_env.greedy(own, budget=6, seed=0)
  cols = ["cohort", "parent", "n_new"]
  assert got.visits[cols].equals(ref.visits[cols]) and len(got.visits) == 6
  assert got.candidates.drop(columns=["path"]).equals(ref.candidates.drop(columns=["path"]))
