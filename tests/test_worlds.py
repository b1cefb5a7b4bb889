"""Tests of the random-world generator against pandas/scipy on the worlds it drew."""

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
from scipy import stats

try:
  from numpy.lib import introspect
except ImportError:  # numpy before 2.0
  introspect = None

import cube_env
from cube_env import worlds
from cube_env.discovery import cohorts
from cube_env.environment.params import resolve_z

ROWS = 20000


@functools.cache
def world(seed, family, rows=ROWS):
  return worlds.make_world(seed, family, rows=rows)


def on_test_scale(w, measure):
  """A measure's values on its test scale (log for log-normal measures)."""
  values = w.df[measure].to_numpy(np.float64)
  return np.log(values) if w.measure_kinds[measure] == "lognormal" else values


def rows_of(df, cohort):
  mask = np.ones(len(df), bool)
  for column, value in cohort.items():
    mask &= (df[column] == value).to_numpy()
  return mask


def scipy_z(w, cohort, protected, group, measure):
  """Group versus rest in a cohort: Welch (normal equivalent of its p) or sqrt of Pearson's chi-square."""
  rows = rows_of(w.df, cohort)
  values = on_test_scale(w, measure)[rows]
  in_group = (w.df[protected] == group).to_numpy()[rows]
  ok = ~np.isnan(values)
  a, b = values[ok & in_group], values[ok & ~in_group]
  if w.measure_kinds[measure] == "binary":
    table = [[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]]
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    return np.sign(a.mean() - b.mean()) * np.sqrt(chi2)
  t, p = stats.ttest_ind(a, b, equal_var=False)
  return np.sign(t) * stats.norm.isf(p / 2)


PLANTED = [(6, "standard"), (0, "masked")]  # seed 6: depths 3, 0, 1 on a count and two binary measures
GOLDEN = {"standard": "sha256:3a84a4cc8a3a", "masked": "sha256:bd4c0e62531a"}  # test_a_seed_draws_the_recorded_table


@pytest.mark.parametrize("seed,family", PLANTED)
def test_each_effect_sits_in_its_band(seed, family):
  w = world(seed, family)
  band = worlds.FAMILIES[family].z_band
  assert w.truth, "these families plant effects"
  assert len(w.z) == len(w.truth)
  for e, z_world in zip(w.truth, w.z):
    z = scipy_z(w, e.cohort, e.protected, e.group, e.measure)
    assert band[0] <= abs(z) <= band[1], (e, z)
    assert np.sign(z) == e.sign
    assert z == pytest.approx(z_world, abs=1e-6)
    assert e.kind == ("masked" if family == "masked" else "planted")
    # Planted cohorts use only dimension filters and values that build_cube keeps unfolded.
    assert set(e.cohort) <= set(w.schema.dimensions)
    assert e.protected in w.schema.protected and e.measure in w.schema.measures


@pytest.mark.parametrize("seed,family", PLANTED)
def test_effect_sizes_are_what_was_planted(seed, family):
  """The observed group-minus-rest difference is the planted effect plus chance (within 4 standard errors).

  Binary effects flip an exact number of the group's outcomes (effect * n_group is an integer); the cells of a
  checkerboard carry equal and opposite totals (|effect| * n_cell is the same in every cell).
  """
  w = world(seed, family)
  totals = []
  for e in w.truth:
    rows = rows_of(w.df, e.cohort)
    values = on_test_scale(w, e.measure)[rows]
    group = (w.df[e.protected] == e.group).to_numpy()[rows]
    ok = ~np.isnan(values)
    a, b = values[ok & group], values[ok & ~group]
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean() - e.effect) < 4 * se, e
    assert abs(e.effect) > 2 * se  # the plant, not chance, makes the gap
    if w.measure_kinds[e.measure] == "binary":
      assert e.effect * len(a) == pytest.approx(np.rint(e.effect * len(a)), abs=1e-9)
      assert abs(e.effect) <= worlds.MAX_RISK_DIFFERENCE
    elif w.measure_kinds[e.measure] == "lognormal":
      assert abs(e.effect) <= worlds.MAX_LOG_EFFECT
    totals.append(abs(e.effect) * len(a))
  if family == "masked":
    assert np.ptp(totals) == pytest.approx(0.0, abs=1e-6 * max(totals))


def checkerboard(w):
  """(columns, {column: its two values}) of a masked world's cells."""
  cells = [e for e in w.truth if e.kind == "masked"]
  columns = sorted(cells[0].cohort)
  values = {c: sorted({e.cohort[c] for e in cells}) for c in columns}
  return cells, columns, values


def test_masked_marginals_are_quiet():
  w = world(0, "masked")
  cells, columns, values = checkerboard(w)
  assert len(cells) == 2 ** len(columns) and all(len(v) == 2 for v in values.values())
  (p, g, m), *others = {(e.protected, e.group, e.measure) for e in cells}
  assert not others
  # Opposite signs: the sign of a cell is the product of one +-1 per column.
  signs = {tuple(e.cohort[c] == values[c][0] for c in columns): e.sign for e in cells}
  for key, sign in signs.items():
    flipped = tuple(not k if i == 0 else k for i, k in enumerate(key))
    assert signs[flipped] == -sign
  n_marginals = 0
  for k in range(len(columns)):
    for subset in itertools.combinations(columns, k):
      for chosen in itertools.product(*(values[c] for c in subset)):
        z = scipy_z(w, dict(zip(subset, chosen)), p, g, m)
        assert abs(z) < worlds.MASKED_QUIET_Z, (subset, chosen, z)
        n_marginals += 1
  assert n_marginals == 3 ** len(columns) - 2 ** len(columns)


def welch_table(df, by, protected, values, binary):
  """Group-versus-rest z of every (value of `by`, group) with pandas sums, scipy for the p-value; valid tests only."""
  frame = pd.DataFrame({"by": df[by] if by else 0, "p": df[protected], "x": values}).dropna(subset=["x"])
  frame["x2"] = frame["x"] ** 2
  cell = frame.groupby(["by", "p"], dropna=True)[["x", "x2"]].agg(["count", "sum"])
  total = frame.groupby("by")[["x", "x2"]].sum()
  n_tot = frame.groupby("by")["x"].count()
  keys = cell.index.get_level_values(0)
  n_g = cell[("x", "count")].to_numpy(float)
  s_g, q_g = cell[("x", "sum")].to_numpy(), cell[("x2", "sum")].to_numpy()
  n_r = n_tot.loc[keys].to_numpy(float) - n_g
  s_r = total["x"].loc[keys].to_numpy() - s_g
  q_r = total["x2"].loc[keys].to_numpy() - q_g
  ok = (n_g >= 11) & (n_r >= 11)
  n_g, n_r, s_g, s_r, q_g, q_r = (a[ok] for a in (n_g, n_r, s_g, s_r, q_g, q_r))
  m_g, m_r = s_g / n_g, s_r / n_r
  if binary:
    pooled = (s_g + s_r) / (n_g + n_r)
    expected = np.minimum.reduce([n_g * pooled, n_r * pooled, n_g * (1 - pooled), n_r * (1 - pooled)])
    keep = expected >= 5
    n_g, n_r, m_g, m_r, pooled = (a[keep] for a in (n_g, n_r, m_g, m_r, pooled))
    return (m_g - m_r) / np.sqrt(pooled * (1 - pooled) * (1 / n_g + 1 / n_r))
  v_g = (q_g - n_g * m_g**2) / (n_g - 1) / n_g
  v_r = (q_r - n_r * m_r**2) / (n_r - 1) / n_r
  t = (m_g - m_r) / np.sqrt(v_g + v_r)
  dof = (v_g + v_r) ** 2 / (v_g**2 / (n_g - 1) + v_r**2 / (n_r - 1))
  return np.sign(t) * stats.norm.isf(stats.t.sf(np.abs(t), dof))


@pytest.mark.parametrize("seed", [0, 1])
def test_null_world_has_no_gap_beyond_chance(seed):
  w = world(seed, "null")
  assert w.truth == [] and w.confounders == () and w.schema.adjusters == ()
  zs = []
  for p in w.schema.protected:
    for m in w.schema.measures:
      binary = w.measure_kinds[m] == "binary"
      values = on_test_scale(w, m)
      zs.append(welch_table(w.df, None, p, values, binary))
      for d in w.schema.dimensions + tuple(q for q in w.schema.protected if q != p):
        zs.append(welch_table(w.df, d, p, values, binary))
  zs = np.concatenate(zs)
  bound = stats.norm.isf(0.05 / (2 * len(zs)))  # Bonferroni over the root and depth-1 tests
  assert len(zs) > 200
  assert np.abs(zs).max() < bound, (np.abs(zs).max(), bound, len(zs))
  # Not only no extreme gap: the z's look like N(0, 1).
  assert abs(zs.mean()) < 0.15 and 0.8 < zs.std() < 1.2


def test_same_seed_same_world_and_new_seed_new_schema():
  a, b = world(6, "standard"), worlds.make_world(6, "standard", rows=ROWS)
  pd.testing.assert_frame_equal(a.df, b.df)
  assert a.truth == b.truth and a.schema == b.schema and a.z == b.z
  c, d = world(0, "null"), world(1, "null")
  assert c.schema != d.schema and not set(c.df.columns) & set(d.df.columns)
  # The family and the row count are part of the seed.
  assert world(0, "null").schema != a.schema


def test_log_normal_values_are_recorded_to_fixed_places():
  """The table's log-normal columns are rounded (`worlds.recorded`), so a last-bit difference in `exp` between two
  machines does not reach the bits that the row split hashes."""
  w = world(6, "standard")
  logs = [m for m, k in w.measure_kinds.items() if k == "lognormal"]
  assert logs
  for m in logs:
    v = w.df[m].to_numpy(np.float64)
    ok = ~np.isnan(v)
    np.testing.assert_array_equal(v[ok], np.round(v[ok], worlds.DECIMALS))
    assert v[ok].min() > 0  # still a log-normal measure (log_scale)
  x = np.exp(np.random.default_rng(0).normal(3.0, 1.5, 100_000))  # 0.1 to several thousand
  for nudged in (np.nextafter(x, np.inf), np.nextafter(x, -np.inf)):
    assert not np.array_equal(nudged, x)
    np.testing.assert_array_equal(worlds.recorded(nudged), worlds.recorded(x))


def test_a_seed_draws_the_recorded_table():
  """One seed, one table, on any machine: a content hash of two worlds as drawn on the machine that wrote this
  test (AMD EPYC, AVX2, no AVX-512; numpy 2.4; the same on an Intel Xeon with AVX-512), by the hash benchmark rows
  record (`world_sha256`). A change here is a change of `worlds.VERSION`."""
  digests = {family: worlds.content_id(world(seed, family).df, world(seed, family).truth) for seed, family in PLANTED}
  assert digests == GOLDEN, digests


def _exp_kernel() -> str:
  """The instruction-set group numpy's float64 `exp` dispatches to here ('' where numpy cannot say)."""
  if introspect is None:
    return ""
  return (
    introspect.opt_func_info(func_name="^exp$", signature="float64").get("exp", {}).get("dd", {}).get("current", "")
  )


@pytest.mark.skipif(
  _exp_kernel() != "X86_V4", reason="numpy's exp has no X86_V4 (AVX-512) kernel here (numpy 2.4 naming)"
)
def test_the_table_does_not_depend_on_the_exp_kernel():
  """The cause of worlds version 3, shown on one machine: with numpy's AVX-512 `exp` kernel switched off
  (`NPY_DISABLE_CPU_FEATURES=X86_V4`, the AVX2 kernel, which agrees with glibc's) `exp` differs in the last bit
  of some values, and the recorded tables are the same (`GOLDEN`). Under version 2 (no rounding) training world 0
  of `wide` split into 4,957 exploration rows with the AVX-512 kernel and 4,951 without (benchmarks/README.md)."""
  script = (
    "import hashlib, json, numpy as np; from numpy.lib import introspect; from cube_env import worlds\n"
    "x = np.random.default_rng(0).normal(3.0, 1.5, 100_000)\n"
    f"ids = {{f: worlds.content_id(w.df, w.truth) for s, f in {PLANTED!r} for w in [worlds.make_world(s, f, rows={ROWS})]}}\n"
    "kernel = introspect.opt_func_info(func_name='^exp$', signature='float64')['exp']['dd']['current']\n"
    "print(json.dumps({'ids': ids, 'kernel': kernel, 'exp': hashlib.sha256(np.exp(x).tobytes()).hexdigest()}))\n"
  )
  env = dict(os.environ, NPY_DISABLE_CPU_FEATURES="X86_V4", JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  other = json.loads(done.stdout.strip().splitlines()[-1])
  assert other["kernel"] != "X86_V4"  # the switch took effect
  x = np.random.default_rng(0).normal(3.0, 1.5, 100_000)
  # exp itself differs between the kernels (in numpy 2.4.6; a numpy whose AVX-512 exp matched glibc's would end this)
  assert other["exp"] != hashlib.sha256(np.exp(x).tobytes()).hexdigest()
  assert other["ids"] == GOLDEN


def test_splits_share_neither_seeds_nor_names():
  train, evaluation = worlds.world_seeds("train", 4), worlds.world_seeds("eval", 4)
  assert not set(train) & set(evaluation)
  assert {worlds.split_of(s) for s in train} == {"train"} and {worlds.split_of(s) for s in evaluation} == {"eval"}
  names = {}
  for split, seeds in (("train", train), ("eval", evaluation)):
    drawn = [worlds.make_world(s, "null", rows=2000) for s in seeds]
    assert {w.split for w in drawn} == {split}
    names[split] = {c for w in drawn for c in w.df.columns}
    schemas = [w.schema for w in drawn]
    assert all(a != b for a, b in itertools.combinations(schemas, 2))
  assert not names["train"] & names["eval"]
  first = {split: {c[4:6] for c in cols} for split, cols in names.items()}
  assert first["train"] <= set(worlds.SYLLABLES[: len(worlds.SYLLABLES) // 2])
  assert first["eval"] <= set(worlds.SYLLABLES[len(worlds.SYLLABLES) // 2 :])


def _cohort_rows(cube, filters, z_screen):
  """`cube_env.cohort_stats`' rows before the small-cell rule (a cohort's few rows missing a measure blank its
  tests there): the statistics this test checks against scipy."""
  codes = cube_env.filters_to_codes(cube.meta, dict(filters))
  z = resolve_z(cube, z_screen, 3)
  return cohorts.cohort_table(cube, codes[None], z_screen=z)[list(cohorts.FINDING_COLUMNS) + ["tested"]]


@pytest.mark.parametrize("seed,family", PLANTED)
def test_cohort_stats_calls_each_effect_new(seed, family):
  w = world(seed, family)
  cube = cube_env.build_cube(w.df, w.schema)
  z_screen = worlds.FAMILIES[family].z_screen
  for e in w.truth:
    table = _cohort_rows(cube, e.cohort, z_screen)
    rows = table[(table.protected == e.protected) & (table.measure == e.measure)]
    hit = rows[
      ((rows.group == e.group) & (np.sign(rows.z) == e.sign))
      | ((rows.reference == e.group) & (np.sign(rows.z) == -e.sign))
    ]
    assert len(hit) == 1, (e, rows)
    assert bool(hit.significant.iloc[0]) and bool(hit.new.iloc[0])
    assert abs(hit.z.iloc[0]) == pytest.approx(abs(scipy_z(w, e.cohort, e.protected, e.group, e.measure)), rel=2e-3)
  # And the project's scoring recalls every planted effect from these rows.
  rows = pd.concat([_cohort_rows(cube, e.cohort, z_screen) for e in w.truth])
  rows["filters"] = [dict(f) for f in rows["filters"]]
  assert cube_env.score_findings(rows, w.truth)["recall"] == 1.0


def stratified_z(w, protected, group, measure, adjusters):
  """Within-strata gap: inverse-variance pooled group-minus-rest differences (Welch or pooled-proportion SE)."""
  values = on_test_scale(w, measure)
  binary = w.measure_kinds[measure] == "binary"
  in_group = (w.df[protected] == group).to_numpy()
  strata = w.df[list(adjusters)].astype(str).agg("|".join, axis=1).to_numpy()
  num = den = 0.0
  for s in np.unique(strata):
    rows = (strata == s) & ~np.isnan(values)
    a, b = values[rows & in_group], values[rows & ~in_group]
    if len(a) < 5 or len(b) < 5:
      continue
    if binary:
      pooled = np.concatenate([a, b]).mean()
      se2 = pooled * (1 - pooled) * (1 / len(a) + 1 / len(b))
    else:
      se2 = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
    if se2 > 0:
      num += (a.mean() - b.mean()) / se2
      den += 1 / se2
  return num / np.sqrt(den)


@pytest.mark.parametrize("seed", [0, 1])
def test_confounded_gaps_vanish_within_adjuster_strata(seed):
  w = world(seed, "confounded")
  assert w.truth == [] and w.confounders and w.schema.adjusters
  assert set(w.schema.adjusters) <= set(w.schema.dimensions)
  for c in w.confounders:
    raw = scipy_z(w, {}, c["protected"], c["group"], c["measure"])
    assert abs(raw) > 5 and raw == pytest.approx(c["z"], abs=1e-6)
    assert c["explained_by"] == list(w.schema.adjusters)
    assert abs(stratified_z(w, c["protected"], c["group"], c["measure"], w.schema.adjusters)) < 3.5, c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drawn_schema_follows_the_family(seed):
  w = world(seed, "null")
  fam = worlds.FAMILIES["null"]
  s = w.schema
  assert fam.dimensions[0] <= len(s.dimensions) <= fam.dimensions[1]
  assert fam.protected[0] <= len(s.protected) <= fam.protected[1]
  assert fam.measures[0] <= len(s.measures) <= fam.measures[1]
  assert set(w.df.columns) == set(s.dimensions) | set(s.protected) | set(s.measures)
  for d in s.dimensions:
    assert 2 <= w.df[d].nunique() <= 40 and w.df[d].notna().all()
    assert w.df[d].map(lambda v: v.startswith("v")).all()
  for p in s.protected:
    assert 2 <= w.df[p].nunique() <= 6
  for child, (relation, parent) in w.parents.items():
    if relation == "nested":  # a child's value determines its parent's (surgeon within site)
      assert (w.df.groupby(child)[parent].nunique() == 1).all()
  for m, kind in w.measure_kinds.items():
    x = w.df[m].dropna().to_numpy()
    assert w.df[m].isna().mean() < 0.05
    if kind == "binary":
      assert set(np.unique(x)) <= {0.0, 1.0}
    elif kind == "count":
      assert (x == np.rint(x)).all() and x.min() >= 0 and s.log_scale[m] is False
    else:
      assert x.min() > 0 and s.log_scale[m] is True


def test_families_draw_their_ranges():
  fams = worlds.FAMILIES
  assert set(fams) == {"narrow", "standard", "wide", "deep", "masked", "null", "confounded"}
  assert fams["narrow"].dimensions == (4, 8) and fams["standard"].dimensions == (7, 12)
  assert fams["wide"].dimensions[0] >= 40 and fams["deep"].depths == (4,)
  assert all(fams[f].plants == (0, 0) for f in ("masked", "null", "confounded"))
  assert fams["masked"].masked == (2, 3) and fams["confounded"].confounders > 0
  assert fams["standard"].rows >= 50_000
  for name, fam in fams.items():
    rng = np.random.default_rng(0)
    names = worlds._Names(rng, "train")
    for _ in range(5):
      dims = worlds._dimensions(rng, fam, names)
      assert fam.dimensions[0] <= len(dims) <= fam.dimensions[1], name
      assert all(2 <= len(d.labels) <= 40 for d in dims)
      assert dims[0].relation == "root" and all(d.parent is None or d.parent < j for j, d in enumerate(dims))


def test_too_few_rows_for_the_family_is_a_clear_error():
  with pytest.raises(ValueError, match="use more rows"):
    worlds.make_world(0, "deep", rows=1000)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="unknown family"):
    worlds.make_world(0, "nope")
  with pytest.raises(ValueError, match="seed"):
    worlds.make_world(-1)
  with pytest.raises(ValueError, match="rows"):
    worlds.make_world(0, rows=10)
  with pytest.raises(ValueError, match="split"):
    worlds.world_seeds("test", 3)


def test_held_out_cubes_stop_before_the_ranker_training_worlds(monkeypatch):
  """An audit: `make_task_cubes(split="eval")` drew held-out worlds from training-split index 0 and stopped only at
  the agent's own (1000), so 25 of a family reported on worlds 20-24, the learned ranker's training worlds (the
  agent plays its frontier value). Up to 20 a family are drawn; more is an error naming num_eval_cubes."""
  drawn = []

  def world(seed, family, **_):
    drawn.append(seed - worlds.TRAIN_SEED_BASE)
    return types.SimpleNamespace(df=None, schema=None, truth=[], family=family, seed=seed)

  monkeypatch.setattr(worlds, "make_world", world)
  monkeypatch.setattr(worlds, "build_cube", lambda *_: None)
  task = cube_env.CubeTask(families=("wide",), num_eval_cubes=worlds.VALIDATION_WORLDS, n_rows=3000)
  worlds.make_task_cubes(task, split="eval")
  assert drawn == list(range(worlds.VALIDATION_WORLDS))
  with pytest.raises(ValueError, match=r"num_eval_cubes: .*'wide'.*ranker's training worlds \(from 20\)"):
    worlds.make_task_cubes(dataclasses.replace(task, num_eval_cubes=25), split="eval")
