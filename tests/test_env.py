"""The environment: cohorts, masks, rewards, pixels; jit/vmap; cohort_stats vs pandas."""

import operator

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats as ss

import cube_env
from cube_env.discovery import frontier
from cube_env.environment import env as env_lib
from cube_env.environment import groupby as gb
from tests.conftest import SMALL_SCHEMA, make_small_df

CH = {name: i for i, name in enumerate(cube_env.CHANNELS)}


@pytest.fixture(scope="module")
def env_params(small_cube):
  return cube_env.make_env(small_cube, max_depth=3, horizon=12, z_screen=4.0)


@pytest.fixture(scope="module")
def oracle(small_cube):
  return cube_env.enumerate_findings(small_cube, max_depth=3, z_screen=4.0)


def _reference_rows(df, meta, filters, min_group=11):
  """Independent pandas/scipy statistics for one cohort."""
  sub = df
  for col, val in filters.items():
    sub = sub[sub[col].isna()] if val == cube_env.MISSING else sub[sub[col] == val]
  out = {}
  for p in SMALL_SCHEMA.protected:
    if p in filters:
      continue
    for g in sub[p].dropna().unique():
      for m_i, m in enumerate(SMALL_SCHEMA.measures):
        vals = sub[m].astype(float)
        if meta.is_log[m_i]:
          vals = np.log(vals)
        in_g = sub[p] == g
        x, y = vals[in_g].dropna().to_numpy(), vals[~in_g].dropna().to_numpy()
        if len(x) < min_group or len(y) < min_group:
          continue
        if meta.is_binary[m_i]:
          a, b = x.sum(), y.sum()
          chi2, pv, _, _ = ss.chi2_contingency([[a, len(x) - a], [b, len(y) - b]], correction=False)
          z = np.sign(x.mean() - y.mean()) * np.sqrt(chi2)
        else:
          res = ss.ttest_ind(x, y, equal_var=False)
          pv = res.pvalue
          z = np.sign(res.statistic) * ss.norm.isf(pv / 2)
        mg, mr = x.mean(), y.mean()
        if meta.is_log[m_i]:
          mg, mr = np.exp(mg), np.exp(mr)
        out[(p, str(g), m)] = dict(n_group=len(x), n_rest=len(y), mean_group=mg, mean_rest=mr, z=z, p=pv)
  return out


def test_cohorts_asked_for_together_hide_what_their_subtraction_gives_back():
  """A cold audit: women in `proc=a` (61) less those at sites s2 (30) and s3 (25), each from its own call, gave back
  the hidden 6 at s1. Asked for in one call, the cohorts are hidden together: no such difference comes back, and
  each cohort's shown numbers are those of its own call where they stay shown."""
  rng = np.random.default_rng(0)
  rows = []
  for site, n_f, n_m in (("s1", 6, 200), ("s2", 30, 200), ("s3", 25, 200)):
    rows += [("a", site, "F")] * n_f + [("a", site, "M")] * n_m
  rows += [("b", s, x) for s, x in zip(rng.choice(["s1", "s2", "s3"], 600), rng.choice(["F", "M"], 600))]
  df = pd.DataFrame(rows, columns=["proc", "site", "sex"]).assign(y=rng.normal(0, 1, len(rows)))
  cube = cube_env.build_cube(df, cube_env.Schema(dimensions=["proc", "site"], protected=["sex"], measures=["y"]))
  cohorts = [{"proc": "a"}] + [{"proc": "a", "site": s} for s in ("s1", "s2", "s3")]
  women = [cube_env.cohort_stats(cube, c).query("group == 'F'").iloc[0] for c in cohorts]
  assert women[1].n_group is None and women[0].n_group - women[2].n_group - women[3].n_group == 6  # apart: leaks
  table = cube_env.cohort_stats(cube, cohorts)
  assert list(table["cohort"].unique()) == [cube_env.cohort_stats(cube, c)["cohort"].iloc[0] for c in cohorts]
  together = table[table["group"] == "F"].reset_index(drop=True)
  assert len(together) == 4 and together.loc[1, "n_group"] is None
  shown = [n for n in together["n_group"] if n is not None]
  assert len(shown) <= 2  # the parent or a sibling hidden too: no count of 1-10 by subtraction
  for i, alone in enumerate(women):
    if together.loc[i, "n_group"] is not None:
      assert together.loc[i, "n_group"] == alone.n_group
  with pytest.raises(ValueError, match=r"filters\[1\] must be a mapping"):
    cube_env.cohort_stats(cube, [{}, "site=s1"])
  with pytest.raises(ValueError, match="an empty list names no cohort"):
    cube_env.cohort_stats(cube, [])


@pytest.mark.parametrize(
  "filters",
  [
    {},
    {"proc": "A"},
    {"proc": "B", "site": "s2"},
    {"site": cube_env.MISSING},
    {"race": "W", "urgency": "urgent"},
    {"proc": "C", "sex": "F", "site": "s1"},
  ],
)
def test_cohort_stats_matches_pandas(small_df, small_cube, filters):
  got = cube_env.cohort_stats(small_cube, filters)
  ref = _reference_rows(small_df, small_cube.meta, filters)
  assert len(got) > 0
  checked = 0
  for row in got.itertuples():
    if row.protected == "sex" and row.group not in ("F", "M"):
      continue
    key = (row.protected, row.group, row.measure)
    if not row.tested or row.n_group is None or np.isnan(row.n_group):
      continue
    r = ref[key]
    assert row.n_group == r["n_group"] and row.n_rest == r["n_rest"], key
    if row.mean_group is None:  # no rate shown where some group of this test has 1-10 events or non-events on a side
      block = [v for k, v in ref.items() if k[0] == row.protected and k[2] == row.measure]
      sides = [(v[n], v[m]) for v in block for n, m in (("n_group", "mean_group"), ("n_rest", "mean_rest"))]
      assert row.scale == "binary" and any(1 <= round(n * x) <= 10 for n, m in sides for x in (m, 1 - m)), key
      assert row.z is None and row.diff is None and row.ci_low is None, key
      continue
    assert np.isclose(row.mean_group, r["mean_group"], rtol=1e-4), key
    assert np.isclose(row.mean_rest, r["mean_rest"], rtol=1e-4), key
    assert abs(row.z - r["z"]) < 2e-3 + 1e-3 * abs(r["z"]), (key, row.z, r["z"])
    checked += 1
  # Small-cell rule: no count from 1 to 10 is shown.
  for col in ("n_group", "n_rest"):
    shown = got[col].dropna()
    assert not ((shown >= 1) & (shown <= 10)).any()
  # Two-group columns test one group: sex appears once per measure.
  assert (got.protected == "sex").sum() <= len(SMALL_SCHEMA.measures)
  assert checked >= 3


def test_scripted_episode(small_cube, env_params, oracle):
  env, params = env_params
  step = jax.jit(env.step)
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
  meta = small_cube.meta
  total = meta.n_rows

  def new_at(filters):
    sel = oracle[oracle["new"] & oracle["filters"].map(lambda f: f == filters)]
    return len(sel)

  assert int(state.found) == new_at({})
  # The pixel for (proc, A) describes the cohort proc=A.
  a = env.action_for("proc", "A")
  f, v = env.decode_action(a)
  n_a = int((make_small_df().proc == "A").sum())
  assert np.isclose(obs[CH["log_size"], f, v], np.log1p(n_a) / np.log1p(total), atol=1e-5)
  script = [
    (("proc", "A"), {"proc": "A"}, True),
    (("site", "s1"), {"proc": "A", "site": "s1"}, True),
    (("urgency", "urgent"), {"proc": "A", "site": "s1", "urgency": "urgent"}, True),
    (("proc", "B"), {"proc": "B", "site": "s1", "urgency": "urgent"}, True),  # switch at max depth
    (("site", None), {"proc": "B", "urgency": "urgent"}, True),  # roll-up
    (("proc", "A"), {"proc": "A", "urgency": "urgent"}, True),
    (("urgency", None), {"proc": "A"}, False),  # revisit: no reward
  ]
  ret = 0.0
  for (col, val), expect, first in script:
    a = env.action_for(col, val)
    assert bool(state.mask[a]), (col, val)
    obs, state, r, term, trunc, info = step(jax.random.PRNGKey(1), state, a, params)
    got = cube_env.codes_to_filters(meta, np.asarray(state.filters))
    assert got == expect
    assert float(r) == (new_at(expect) if first else 0.0), (expect, float(r))
    ret += float(r)
    cur_f, cur_v = divmod(a, env.shape.num_values + 1)
    assert obs[CH["current"], cur_f, cur_v] == 1.0
    assert obs[CH["visited"], cur_f, cur_v] == 1.0
  assert ret > 0  # the planted gap (race B, minutes, proc A) is new at proc=A
  # Masks at depth 3: adding a fourth filter is illegal, switching and clearing are legal.
  obs, state, *_ = step(jax.random.PRNGKey(2), state, env.action_for("site", "s2"), params)
  obs, state, *_ = step(jax.random.PRNGKey(2), state, env.action_for("urgency", "elective"), params)
  assert int(jnp.sum(state.filters >= 0)) == 3
  assert not bool(state.mask[env.action_for("bmi", 0)])
  assert not bool(state.mask[env.action_for("proc", "A")])  # the current filter itself
  assert not bool(state.mask[env.action_for("race", None)])  # clearing an unfiltered column
  assert bool(state.mask[env.action_for("proc", None)])
  # The mask is the observation's legal channel.
  assert np.array_equal(np.asarray(obs[CH["legal"]]).reshape(-1) > 0, np.asarray(state.mask))


def test_small_cohorts_are_masked(small_cube):
  env, params = cube_env.make_env(small_cube, min_cohort=500, horizon=4)
  _, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
  counts = make_small_df().proc.value_counts()
  for label, n in counts.items():
    assert bool(state.mask[env.action_for("proc", label)]) == (n >= 500)


def test_rewards_match_oracle_on_random_walks(small_cube, env_params, oracle):
  env, params = env_params
  meta = small_cube.meta
  new = oracle[oracle["new"]]
  counts = new.groupby(new["filters"].map(lambda f: tuple(sorted(f.items())))).size().to_dict()
  step = jax.jit(env.step)
  rng = np.random.default_rng(0)
  seen = set()
  total = 0
  for ep in range(3):
    _, state = jax.jit(env.reset)(jax.random.PRNGKey(ep), params)
    seen = {()}
    for _ in range(env.horizon):
      legal = np.nonzero(np.asarray(state.mask))[0]
      a = int(rng.choice(legal))
      _, state, r, term, *_ = step(jax.random.PRNGKey(0), state, a, params)
      key = tuple(sorted(cube_env.codes_to_filters(meta, np.asarray(state.filters)).items()))
      expect = 0 if key in seen else counts.get(key, 0)
      seen.add(key)
      assert float(r) == expect, key
      total += float(r)
      if bool(term):
        break
  assert oracle.attrs["queries"] > 100


def test_groupby_methods_agree(small_cube):
  """The three group-by formulations give the same grid (the index against numpy: tests/test_groupby_index.py)."""
  env, params = cube_env.make_env(small_cube, horizon=6)
  c = env.shape.num_values
  for names in ({}, {"proc": "A"}, {"proc": "B", "race": "W"}):
    filters = jnp.asarray(cube_env.filters_to_codes(small_cube.meta, names))
    grids = {m: gb.pixel_stats(params, filters, num_values=c, method=m) for m in gb.GROUPBY_METHODS}
    for m in ("matmul", "segment"):
      assert np.allclose(grids[m][0], grids["index"][0], rtol=1e-5, atol=1e-2), (m, names)
      assert np.array_equal(grids[m][1], grids["index"][1]), (m, names)


def test_vmap_64_agrees_with_single_steps(env_params):
  """(The protocol conformance of this env, `muzero_jax.check_env`, runs in test_env_protocol.py.)"""
  env, params = env_params
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  obs, states = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
  rng = np.random.default_rng(1)
  actions = np.array([rng.choice(np.nonzero(np.asarray(states.mask[i]))[0]) for i in range(64)], np.int32)
  out = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))(keys, states, jnp.asarray(actions), params)
  step = jax.jit(env.step)
  for i in range(0, 64, 7):
    one = step(keys[i], jax.tree.map(operator.itemgetter(i), states), int(actions[i]), params)
    assert np.allclose(out[0][i], one[0], atol=1e-5)
    assert float(out[2][i]) == float(one[2])
    assert np.array_equal(out[1].filters[i], one[1].filters)


def test_pool_of_different_cubes(small_cube):
  other = cube_env.build_cube(
    make_small_df(seed=5, n=1500),
    cube_env.Schema(dimensions=["proc", "urgency"], protected=["race"], measures=["minutes"]),
  )
  env, pool = cube_env.make_env_pool([small_cube, other], horizon=5)
  assert pool.codes.shape[0] == 2
  env_o, params_o = cube_env.make_env(other, horizon=5)
  obs_b, states = jax.jit(jax.vmap(env.reset, in_axes=(0, 0)))(jax.random.split(jax.random.PRNGKey(0), 2), pool)
  obs_o, state_o = jax.jit(env_o.reset)(jax.random.PRNGKey(0), params_o)
  f, c1 = obs_o.shape[1], obs_o.shape[2] - 1
  # Real pixels of the small cube agree with its own env; padding columns are illegal.
  assert np.allclose(obs_b[1][:, :f, :c1], obs_o[:, :, :c1], atol=1e-5)
  assert np.allclose(obs_b[1][:, :f, -1], obs_o[:, :, -1], atol=1e-5)
  assert not np.asarray(obs_b[1][0, f:]).any()
  a_pool = env.action_for(0, 1)
  a_own = env_o.action_for(0, 1)
  out = jax.jit(jax.vmap(env.step, in_axes=(None, 0, None, 0)))(jax.random.PRNGKey(0), states, a_pool, pool)
  own = jax.jit(env_o.step)(jax.random.PRNGKey(0), state_o, a_own, params_o)
  assert float(out[2][1]) == float(own[2])
  assert env.meta is None and obs_b.shape[1] == env_lib.NUM_CHANNELS
  # Every pixel plane of a padding column reads 0, as a padded value's does: one was each column's value 0, whose
  # cells are all the cohort's (a padded column codes every cell 0), so it repeated the cohort's size, |z| and
  # findings, and its "all" pixel read current and seen (a cold audit). The global planes fill the grid.
  pixel_planes = [
    CH[n] for n in ("legal", "log_size", "max_abs_z", "log_num_significant", "visited", "current", "real")
  ]
  for obs in (obs_b[1], out[0][1]):
    assert not np.asarray(obs)[pixel_planes, f:].any()
    np.testing.assert_array_equal(np.asarray(obs)[CH["time_left"], f:], np.asarray(obs)[CH["time_left"], 0, 0])


def test_an_action_out_of_range_is_illegal_and_time_left_ends_at_zero(env_params):
  """An action outside [0, A) is illegal and moves nothing (indexing the mask clamped it to the last action's
  legality, and the move itself was dropped: a no-op reported legal); the time-left plane reaches exactly 0 at the
  horizon (it read -1.5e-8 there, 1 - t x (1 / T) in float32)."""
  env, params = env_params
  step = jax.jit(env.step)
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
  # In a cohort of the last column the last action (its "all": the roll-up) is legal, which a clamped index read.
  _, drilled, *_ = step(jax.random.PRNGKey(0), state, env.action_for(env.shape.num_filters - 1, 0), params)
  assert bool(drilled.mask[env.num_actions - 1])
  for bad in (env.num_actions, env.num_actions + 7, -1):
    _, moved, reward, _, _, info = step(jax.random.PRNGKey(0), drilled, bad, params)
    assert bool(info["illegal"]) and float(reward) == 0.0, bad
    np.testing.assert_array_equal(np.asarray(moved.filters), np.asarray(drilled.filters))
  for t in range(env.horizon):
    legal = np.flatnonzero(np.asarray(state.mask))
    action = int(legal[t % len(legal)])
    obs, state, *_ = step(jax.random.PRNGKey(t), state, action, params)
  assert int(state.t) == env.horizon and float(np.asarray(obs)[CH["time_left"]].min()) == 0.0


def test_small_cells_are_never_shown():
  df = make_small_df(n=200)
  df["sex"] = np.where(np.arange(len(df)) < 8, "F", "M")  # a group of 8
  cube = cube_env.build_cube(
    df, cube_env.Schema(dimensions=["proc", "site"], protected=["sex", "race"], measures=["minutes"])
  )
  got = cube_env.cohort_stats(cube, {})
  row = got[got.protected == "sex"].iloc[0]
  for col in ("cohort_rows", "n_group", "n_rest", "mean_group", "mean_rest", "diff", "z", "ci_low"):
    assert row[col] is None or np.isnan(row[col]), col
  assert got[got.protected == "race"]["n_group"].notna().all()


def _welch(df, filters, p, g, m, is_log, drop=None):
  """(diff, se) of group g vs the rest of p in measure m on the test scale, over the rows of `filters` minus `drop`."""
  keep = np.ones(len(df), bool)
  for col, val in filters.items():
    keep &= (df[col].isna() if val == cube_env.MISSING else df[col] == val).to_numpy()
  if drop is not None:
    keep &= ~drop
  sub = df[keep]
  vals = np.log(sub[m].astype(float)) if is_log else sub[m].astype(float)
  in_g = (sub[p] == g).to_numpy()
  x, y = vals[in_g].dropna().to_numpy(), vals[~in_g].dropna().to_numpy()
  return x.mean() - y.mean(), np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)), keep


def test_newness_threshold_new_z(small_df, small_cube, oracle):
  """`new_z` only moves the heterogeneity bar: significance is unchanged, the new set grows as it falls, and every
  finding it adds was blocked by a parent with the same gap whose rest differs from it by a z in [new_z, z_screen)."""
  low = cube_env.enumerate_findings(small_cube, max_depth=3, z_screen=4.0, new_z=1.0)
  same = cube_env.enumerate_findings(small_cube, max_depth=3, z_screen=4.0, new_z=4.0)

  def keys(df, only_new):
    df = df[df["new"]] if only_new else df
    return {(tuple(sorted(r.filters.items())), r.protected, r.group, r.measure) for r in df.itertuples()}

  assert keys(low, False) == keys(oracle, False) == keys(same, False)
  assert keys(same, True) == keys(oracle, True)
  gained = keys(low, True) - keys(oracle, True)
  assert keys(oracle, True) < keys(low, True) and gained
  meta = small_cube.meta
  sig = {(tuple(sorted(r.filters.items())), r.protected, r.group, r.measure): np.sign(r.z) for r in oracle.itertuples()}
  checked = 0
  for filt, p, g, m in sorted(gained):
    m_i = list(meta.measure_names).index(m)
    if meta.is_binary[m_i] or "bmi" in dict(filt):  # a binned column's label is not a value of small_df
      continue
    child = dict(filt)
    d_c, se_c, mask = _welch(small_df, child, p, g, m, meta.is_log[m_i])
    hets = []
    for col in child:
      parent = {k: v for k, v in child.items() if k != col}
      if sig.get((tuple(sorted(parent.items())), p, g, m)) != np.sign(d_c):
        continue  # this parent does not show the same gap: it blocks nothing
      d_o, se_o, _ = _welch(small_df, parent, p, g, m, meta.is_log[m_i], drop=mask)
      hets.append(np.sign(d_c) * (d_c - d_o) / np.hypot(se_c, se_o))
    assert hets and 1.0 - 1e-2 <= min(hets) < 4.0 + 1e-2, (filt, p, g, m, hets)
    checked += 1
  assert checked >= 1


def test_expert_logits_pick_greedy_move(small_cube):
  """The imitation expert's best legal action is greedy search's move: the fresh target of strongest pixel |z|."""
  env, params = cube_env.make_env(small_cube, max_depth=3, horizon=12, z_screen=4.0)
  reset, step, expert_logits = jax.jit(env.reset), jax.jit(env.step), jax.jit(env.expert_logits)
  obs, state = reset(jax.random.PRNGKey(0), params)
  for _ in range(4):
    expert = np.asarray(expert_logits(obs, state, params))
    legal = np.nonzero(np.asarray(state.mask))[0]
    seen = np.asarray(obs[env_lib.CHANNELS.index("visited")]).reshape(-1) > 0
    fresh = legal[~seen[legal]]
    greedy = fresh[np.argmax(frontier.pixel_scores(np.asarray(obs))[fresh])]
    assert expert.shape == (env.num_actions,)
    assert legal[np.argmax(expert[legal])] == greedy
    obs, state, *_ = step(jax.random.PRNGKey(0), state, int(greedy), params)
