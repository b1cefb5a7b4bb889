"""Tests of the synthetic case generator against scipy on what it made."""

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cube_env import synthetic
from cube_env.data.schema import Schema
from cube_env.environment import pools

N = 20000


@functools.cache
def cases(scenario, seed=0, n_rows=N, cohorts="drawn"):
  return synthetic.make_cases(scenario, seed, n_rows, cohorts=cohorts)


PRESETS = pytest.mark.parametrize("cohorts", synthetic.COHORTS)


_COLUMNS: dict[int, tuple[pd.DataFrame, dict[str, np.ndarray]]] = {}


def column(df, name):
  """Column as a numpy array (object for labels, float for measures), cached per frame."""
  # The frame is kept alive with its cache, so its id cannot be reused by another frame.
  _, cache = _COLUMNS.setdefault(id(df), (df, {}))
  if name not in cache:
    cache[name] = df[name].to_numpy(float if name in synthetic.MEASURES else object)
  return cache[name]


def rows_of(df, cohort):
  mask = np.ones(len(df), bool)
  for name, value in cohort.items():
    mask &= column(df, name) == value
  return mask


def scipy_z(df, cohort, protected, group, measure):
  """(z, diff) of group versus rest in a cohort: Welch on logs, or pooled two-proportion z."""
  rows = rows_of(df, cohort)
  values = column(df, measure)[rows]
  in_group = column(df, protected)[rows] == group
  ok = ~np.isnan(values)
  a, b = values[ok & in_group], values[ok & ~in_group]
  if measure in synthetic.BINARY_MEASURES:
    pooled = (a.sum() + b.sum()) / (len(a) + len(b))
    diff = a.mean() - b.mean()
    return diff / np.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b))), diff
  a, b = np.log(a), np.log(b)
  t, p = stats.ttest_ind(a, b, equal_var=False)
  return np.sign(t) * stats.norm.isf(p / 2), a.mean() - b.mean()


def stratified_z(df, protected, group, measure, strata):
  """Within-strata z: inverse-variance pooled Welch (log scale) or Cochran-Mantel-Haenszel."""
  values = df[measure].to_numpy(float)
  binary = measure in synthetic.BINARY_MEASURES
  if not binary:
    values = np.log(values)
  in_group = (df[protected] == group).to_numpy()
  keys = df.groupby(list(strata), dropna=False).ngroup().to_numpy()
  ok = ~np.isnan(values)
  num = den = 0.0
  for key in np.unique(keys):
    r = ok & (keys == key)
    a, b = values[r & in_group], values[r & ~in_group]
    if binary:
      n1, n, t = len(a), len(a) + len(b), a.sum() + b.sum()
      if n < 2:
        continue
      num += a.sum() - n1 * t / n
      den += n1 * (n - n1) * t * (n - t) / (n * n * (n - 1))
    elif len(a) >= 5 and len(b) >= 5:
      w = 1 / (a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
      num += w * (a.mean() - b.mean())
      den += w
  return num / np.sqrt(den)


@PRESETS
def test_same_seed_same_table_other_seed_other_table(cohorts):
  df1, schema1, truth1 = synthetic.make_cases("mixed", 7, 3000, cohorts=cohorts)
  df2, schema2, truth2 = synthetic.make_cases("mixed", 7, 3000, cohorts=cohorts)
  pd.testing.assert_frame_equal(df1, df2)
  assert truth1 == truth2 and schema1 == schema2
  df3, _, truth3 = synthetic.make_cases("mixed", 8, 3000, cohorts=cohorts)
  assert (df1["case_minutes"].to_numpy() != df3["case_minutes"].to_numpy()).mean() > 0.9
  assert (df1["procedure"].to_numpy() != df3["procedure"].to_numpy()).mean() > 0.5
  # The masked cells' effects depend on the realized group counts.
  assert [e.effect for e in truth1] != [e.effect for e in truth3]
  df4, _, _ = synthetic.make_cases("null", 7, 3000, cohorts=cohorts)
  assert (df1["case_minutes"].to_numpy() != df4["case_minutes"].to_numpy()).mean() > 0.9


def test_columns_dtypes_and_values():
  df, schema, _ = cases("null")
  assert isinstance(schema, Schema)
  assert list(df.columns) == list(schema.dimensions) + list(schema.protected) + list(schema.measures)
  assert schema.dimensions == (
    "procedure",
    "service_line",
    "site",
    "surgeon",
    "asa_class",
    "urgency",
    "anesthesia_type",
    "weekday",
    "first_case",
  )
  assert schema.protected == ("race", "ethnicity", "sex", "age_group", "payer", "language")
  assert schema.adjusters == ("procedure", "asa_class", "urgency")
  assert schema.log_scale == dict.fromkeys(synthetic.LOG_MEASURES, True)
  assert len(df) == N
  for column in schema.filter_columns:
    assert pd.api.types.is_string_dtype(df[column]), column
    assert all(isinstance(v, str) for v in df[column].dropna()), column
  assert df["procedure"].nunique() == 11
  assert df["site"].nunique() == 5
  assert 60 <= df["surgeon"].nunique() <= 80
  assert set(df["asa_class"].dropna()) == {"1", "2", "3", "4"}
  assert set(df["urgency"]) == {"elective", "urgent", "emergent"}
  assert set(df["weekday"]) == {"Mon", "Tue", "Wed", "Thu", "Fri"}
  assert set(df["race"].dropna()) == {"White", "Black", "Asian", "Other"}
  assert set(df["age_group"]) == {"18-44", "45-64", "65-79", "80+"}
  # service_line is a function of procedure; each surgeon works at one site in one service line.
  assert df.groupby("procedure")["service_line"].nunique().max() == 1
  assert df.groupby("surgeon")[["site", "service_line"]].nunique().max().max() == 1
  for m in schema.measures:
    assert df[m].dtype == np.float64, m
    v = df[m].dropna()
    if m in synthetic.BINARY_MEASURES:
      assert set(v.unique()) == {0.0, 1.0}, m
    else:
      # The default log-scale rule of the cube agrees with schema.log_scale.
      assert v.min() > 0 and v.skew() > 1, m
  rates = df[list(synthetic.BINARY_MEASURES)].mean()
  assert 0.04 < rates["complication"] < 0.10
  assert 0.04 < rates["readmit_30d"] < 0.10
  assert 0.62 < rates["ponv_prophylaxis"] < 0.78
  by_proc = df.groupby("procedure")["complication"].mean()
  assert by_proc.min() > 0.01 and by_proc.max() < 0.2
  medians = df.groupby("procedure")["case_minutes"].median()
  assert medians["cataract_extraction"] < 40 < 200 < medians["cabg"]

  # Age and ASA are independent outside `confounded`, correlated there.
  def asa34_by_age(frame):
    return frame.assign(high=frame["asa_class"].isin(["3", "4"])).groupby("age_group")["high"].mean()

  null_asa = asa34_by_age(df)
  assert null_asa.max() - null_asa.min() < 0.05
  conf_asa = asa34_by_age(cases("confounded")[0])
  assert conf_asa["80+"] - conf_asa["18-44"] > 0.3


def test_protected_columns_are_independent_of_case_mix_except_when_confounded():
  def p_value(frame, a, b):
    return stats.chi2_contingency(pd.crosstab(frame[a], frame[b])).pvalue

  df = cases("null")[0]
  for protected, dimension in [
    ("race", "procedure"),
    ("race", "site"),
    ("payer", "site"),
    ("age_group", "asa_class"),
    ("age_group", "urgency"),
    ("sex", "procedure"),
    ("language", "anesthesia_type"),
  ]:
    assert p_value(df, protected, dimension) > 1e-3, (protected, dimension)
  # Realistic links among protected columns that are never planted on.
  assert p_value(df, "ethnicity", "language") < 1e-100
  hispanic_spanish = (df.loc[df["ethnicity"] == "Hispanic", "language"] == "Spanish").mean()
  assert 0.3 < hispanic_spanish < 0.42
  conf = cases("confounded")[0]
  assert p_value(conf, "race", "procedure") < 1e-20
  assert p_value(conf, "age_group", "asa_class") < 1e-100
  assert p_value(conf, "payer", "procedure") > 1e-3


@settings(max_examples=12, deadline=None)
@given(
  scenario=st.sampled_from(synthetic.SCENARIOS),
  seed=st.integers(0, 2**31),
  n_rows=st.integers(300, 1500),
  cohorts=st.sampled_from(synthetic.COHORTS),
)
def test_any_seed_and_size_gives_a_valid_table(scenario, seed, n_rows, cohorts):
  df, schema, truth = synthetic.make_cases(scenario, seed, n_rows, cohorts=cohorts)
  again, _, truth_again = synthetic.make_cases(scenario, seed, n_rows, cohorts=cohorts)
  pd.testing.assert_frame_equal(df, again)
  assert truth == truth_again
  assert df.shape == (n_rows, 24)
  measures = df[list(schema.measures)]
  assert np.isfinite(measures.fillna(1.0).to_numpy()).all()
  for m in synthetic.LOG_MEASURES:
    assert (df[m].dropna() > 0).all()
  for m in synthetic.BINARY_MEASURES:
    assert df[m].isin([0.0, 1.0]).all()


def test_missing_values():
  df, _, _ = cases("mixed")
  missing = df.isna().mean()
  for column in ("race", "ethnicity", "language", "asa_class", "anesthesia_type", "turnover_minutes", "opioid_mme"):
    assert 0.01 < missing[column] < 0.045, (column, missing[column])
  for column in (
    "procedure",
    "service_line",
    "site",
    "surgeon",
    "urgency",
    "weekday",
    "first_case",
    "sex",
    "age_group",
    "payer",
    "case_minutes",
    "length_of_stay",
    "complication",
    "readmit_30d",
    "ponv_prophylaxis",
  ):
    assert missing[column] == 0, column
  first = (df["first_case"] == "yes").to_numpy()
  assert 0.15 < first.mean() < 0.35
  assert np.array_equal(df["first_case_delay_minutes"].isna().to_numpy(), ~first)
  assert df.loc[df["procedure"] == "cabg", "pacu_minutes"].isna().all()
  assert 0.01 < df.loc[df["procedure"] != "cabg", "pacu_minutes"].isna().mean() < 0.03


@PRESETS
@pytest.mark.parametrize("scenario", synthetic.SCENARIOS)
def test_every_scenario_builds(scenario, cohorts):
  df, schema, truth = synthetic.make_cases(scenario, 1, 2000, cohorts=cohorts)
  assert df.shape == (2000, 24)
  n_effects = {"null": 0, "marginal": 3, "interactions": 3, "masked": 4, "confounded": 0, "mixed": 8}
  assert len(truth) == n_effects[scenario]
  for e in truth:
    assert e.kind == "planted" and e.sign == (1 if e.effect >= 0 else -1)
    assert e.protected in schema.protected and e.measure in schema.measures
    assert set(e.cohort) <= set(schema.dimensions)
    assert e.group in set(df[e.protected].dropna())
    for column, value in e.cohort.items():
      assert value in set(df[column].dropna()), (column, value)
  assert len({(e.protected, e.measure, tuple(sorted(e.cohort.items()))) for e in truth}) == len(truth)
  assert bool(synthetic.confounders(scenario)) == (scenario == "confounded")


@PRESETS
def test_depths_of_scenarios(cohorts):
  def depths(s):
    return sorted(e.depth for e in cases(s, cohorts=cohorts)[2])

  assert depths("marginal") == [0, 1, 1]
  assert depths("interactions") == [2, 2, 3]
  assert depths("masked") == [2, 2, 2, 2]
  assert depths("mixed") == [0, 1, 2, 2, 2, 2, 2, 3]


def test_bad_arguments():
  with pytest.raises(ValueError, match="'nul'"):
    synthetic.make_cases("nul", 0)
  with pytest.raises(ValueError, match="'nul'"):
    synthetic.confounders("nul")
  with pytest.raises(ValueError, match="seed"):
    synthetic.make_cases("null", -1)
  with pytest.raises(ValueError, match="n_rows"):
    synthetic.make_cases("null", 0, 0)
  with pytest.raises(ValueError, match="effect_scale"):
    synthetic.make_cases("null", 0, 100, effect_scale=-1.0)
  with pytest.raises(ValueError, match="masked"):
    synthetic.make_cases("masked", 0, 20)
  with pytest.raises(ValueError, match="masked"):
    synthetic.make_cases("masked", 0, 20, cohorts="fixed")
  with pytest.raises(ValueError, match="cohorts"):
    synthetic.make_cases("marginal", 0, 100, cohorts="random")


def test_planted_effect_dataclass():
  e = synthetic.PlantedEffect(
    cohort={"procedure": "cabg"}, protected="race", group="Black", measure="case_minutes", effect=-0.2
  )
  assert e.sign == -1 and e.depth == 1 and e.kind == "planted"
  same = synthetic.PlantedEffect(
    cohort={"procedure": "cabg"}, protected="race", group="Black", measure="case_minutes", effect=-0.2
  )
  assert e == same and hash(e) == hash(same) and len({e, same}) == 1
  with pytest.raises(dataclasses.FrozenInstanceError):
    e.effect = 1.0


@PRESETS
@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_effects_are_visible_in_their_cohort(scenario, cohorts):
  df, _, truth = cases(scenario, cohorts=cohorts)
  for e in truth:
    z, diff = scipy_z(df, e.cohort, e.protected, e.group, e.measure)
    assert abs(z) > 5 and np.sign(z) == e.sign, (e, z)
    # The realized difference is the planted one, within sampling error (|z| ~ 9 means se ~ d / 9).
    assert abs(diff - e.effect) < 0.4 * abs(e.effect), (e, diff)


@PRESETS
@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_effects_are_not_mirrored_nor_leaked(scenario, cohorts):
  # Other groups of the planted column see the planted group in their "rest" (a mirror of
  # about 0.35 times the planted z); other protected columns are independent or weakly related.
  df, schema, truth = cases(scenario, cohorts=cohorts)
  planted = {(e.protected, e.group, e.measure, tuple(sorted(e.cohort.items()))) for e in truth}
  strongest = []
  for e in truth:
    zs = [
      abs(scipy_z(df, e.cohort, protected, group, e.measure)[0])
      for protected in schema.protected
      for group in df[protected].dropna().unique()
      if (protected, group, e.measure, tuple(sorted(e.cohort.items()))) not in planted
    ]
    assert len(zs) == 19
    strongest.append(max(zs))
  assert max(strongest) < 6, strongest
  assert np.median(strongest) < 4.5, strongest


def checkerboard(truth):
  """The four cells of the masked checkerboard: the planted effects that share one (protected, group, measure)."""
  tests = [(e.protected, e.group, e.measure) for e in truth]
  (test,) = {t for t in tests if tests.count(t) == 4}
  return [e for e in truth if (e.protected, e.group, e.measure) == test]


@PRESETS
@pytest.mark.parametrize("scenario", ["masked", "mixed"])
def test_masked_marginals_cancel(scenario, cohorts):
  df, _, truth = cases(scenario, cohorts=cohorts)
  cells = checkerboard(truth)
  assert all(e.depth == 2 for e in cells)
  ((dim_a, dim_b),) = {tuple(e.cohort) for e in cells}
  if cohorts == "fixed":
    assert (dim_a, dim_b) == ("procedure", "anesthesia_type")
  protected, group, measure = cells[0].protected, cells[0].group, cells[0].measure
  assert sorted(e.sign for e in cells) == [-1, -1, 1, 1]
  marginals = [{}] + [{k: v} for e in cells for k, v in e.cohort.items()]
  assert len({tuple(m.items()) for m in marginals}) == 5
  for cohort in marginals:
    z, _ = scipy_z(df, cohort, protected, group, measure)
    assert abs(z) < 2, (cohort, z)
  # Opposite partners: diagonal cells share a sign.
  sign = {tuple(e.cohort.values()): e.sign for e in cells}
  (a1, b1), (a2, b2) = [k for k, s in sign.items() if s == 1]
  assert a1 != a2 and b1 != b2 and sign.get((a1, b2)) == sign.get((a2, b1)) == -1


@PRESETS
@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_difference_is_the_truth_in_any_cohort(scenario, cohorts):
  df, _, truth = cases(scenario, cohorts=cohorts)
  for e in truth:
    at = synthetic.planted_difference(df, truth, e.cohort, e.protected, e.group, e.measure)
    assert at == pytest.approx(e.effect, abs=1e-12)
    # The rest of the groups carry none of it; other measures none.
    other = "sex" if e.protected != "sex" else "payer"
    for g in df[other].dropna().unique():
      assert abs(synthetic.planted_difference(df, truth, e.cohort, other, g, e.measure)) < 0.1 * abs(e.effect)
    unplanted = next(m for m in synthetic.MEASURES if m not in {t.measure for t in truth})
    assert synthetic.planted_difference(df, truth, e.cohort, e.protected, e.group, unplanted) == 0


def test_planted_difference_in_related_and_nested_cohorts():
  df, _, truth = cases("marginal", cohorts="fixed")
  (tka,) = [e for e in truth if e.cohort == {"procedure": "total_knee_arthroplasty"}]

  def diff(cohort):
    return synthetic.planted_difference(df, truth, cohort, "race", "Black", "case_minutes")

  # Diluted in the ancestors and in the service line that holds the procedure, absent elsewhere.
  share = (df["procedure"] == tka.cohort["procedure"]).mean()
  assert diff({}) == pytest.approx(tka.effect * share, rel=0.1)
  ortho = df["service_line"] == "orthopedics"
  share = (df.loc[ortho, "procedure"] == tka.cohort["procedure"]).mean()
  assert diff({"service_line": "orthopedics"}) == pytest.approx(tka.effect * share, rel=0.1)
  assert diff({"procedure": "cabg"}) == 0
  assert diff({"procedure": "total_knee_arthroplasty", "site": "community_north"}) == pytest.approx(tka.effect)
  df, _, truth = cases("masked", cohorts="fixed")
  e = truth[0]
  for cohort in [{}, {"procedure": "total_knee_arthroplasty"}, {"anesthesia_type": "general"}]:
    assert abs(synthetic.planted_difference(df, truth, cohort, e.protected, e.group, e.measure)) < 1e-12


def test_null_has_no_root_gap():
  for seed in (0, 1):
    df, schema, truth = cases("null", seed)
    assert truth == []
    zs = [
      scipy_z(df, {}, p, g, m)[0] for p in schema.protected for g in df[p].dropna().unique() for m in schema.measures
    ]
    assert len(zs) == 20 * 9
    assert max(abs(z) for z in zs) < 4


def test_confounded_gap_is_explained_by_case_mix():
  df, _, truth = cases("confounded")
  assert truth == []
  gaps = synthetic.confounders("confounded")
  assert {(c["protected"], c["group"]) for c in gaps} == {
    ("race", "Black"),
    ("age_group", "80+"),
    ("age_group", "18-44"),
  }
  assert len(gaps) == 11
  for c in gaps:
    raw, _ = scipy_z(df, {}, c["protected"], c["group"], c["measure"])
    within = stratified_z(df, c["protected"], c["group"], c["measure"], c["explained_by"])
    assert abs(raw) > 5 and abs(within) < 3, (c, raw, within)
  # Race acts through the procedure mix only: no gap within procedure strata in any measure.
  for m in synthetic.MEASURES:
    assert abs(stratified_z(df, "race", "Black", m, ["procedure"])) < 3, m


@PRESETS
def test_effect_scale_multiplies_effects(cohorts):
  for scenario in ("marginal", "mixed"):
    _, _, base = synthetic.make_cases(scenario, 3, 4000, cohorts=cohorts)
    _, _, double = synthetic.make_cases(scenario, 3, 4000, effect_scale=2.0, cohorts=cohorts)
    assert [2 * e.effect for e in base] == pytest.approx([e.effect for e in double])
    assert [e.cohort for e in base] == [e.cohort for e in double]  # drawn cohorts do not depend on the scale
  df, _, zero = synthetic.make_cases("marginal", 0, N, effect_scale=0.0, cohorts=cohorts)
  assert all(e.effect == 0 for e in zero)
  for e in zero:
    assert abs(scipy_z(df, e.cohort, e.protected, e.group, e.measure)[0]) < 4


# `cohorts="fixed"` is today's generator bit for bit: these were computed before drawn cohorts existed.
FIXED_TABLES = {
  ("marginal", 0, 20000): 5003547083664286383,
  ("masked", 3, 2000): 16129452180205047194,
  ("masked", 7, 500): 8199143704077373017,
  ("mixed", 5000, 8000): 2634970824735817490,
  ("interactions", 1001, 6000): 4081301078474867520,
  ("null", 7, 500): 10092629164458881470,
  ("confounded", 0, 20000): 16578893360429115408,
}


def table_hash(df):
  return int(pd.util.hash_pandas_object(df, index=True).to_numpy().sum(dtype=np.uint64))


def test_fixed_preset_is_unchanged():
  for (scenario, seed, n_rows), expected in FIXED_TABLES.items():
    df, _, _ = synthetic.make_cases(scenario, seed, n_rows, cohorts="fixed")
    assert table_hash(df) == expected, (scenario, seed, n_rows)
  df, _, truth = synthetic.make_cases("mixed", 11, 3000, effect_scale=2.0, cohorts="fixed")
  assert table_hash(df) == 11075691796562113965
  df, _, truth = cases("marginal", 0, cohorts="fixed")
  sums = {m: float(np.nansum(df[m].to_numpy())) for m in synthetic.MEASURES}
  assert sums == pytest.approx(
    {
      "case_minutes": 2102431.0,
      "turnover_minutes": 649567.0,
      "pacu_minutes": 1439085.0,
      "length_of_stay": 41196.5833,
      "complication": 1322.0,
      "readmit_30d": 1300.0,
      "ponv_prophylaxis": 14131.0,
      "opioid_mme": 891426.8,
      "first_case_delay_minutes": 52692.0,
    },
    abs=1e-3,
  )
  assert df["race"].value_counts().to_dict() == {"White": 8692, "Other": 6767, "Black": 2577, "Asian": 1368}
  assert [(e.cohort, e.protected, e.group, e.measure, e.effect) for e in truth] == [
    ({}, "payer", "Medicaid", "readmit_30d", 0.045),
    ({"procedure": "total_knee_arthroplasty"}, "race", "Black", "case_minutes", 0.13),
    ({"asa_class": "3"}, "age_group", "80+", "pacu_minutes", 0.18),
  ]
  _, _, truth = synthetic.make_cases("masked", 3, 2000, cohorts="fixed")
  assert [(e.cohort, e.effect) for e in truth] == [
    ({"procedure": "total_knee_arthroplasty", "anesthesia_type": "neuraxial"}, pytest.approx(0.16105769230769232)),
    ({"procedure": "total_knee_arthroplasty", "anesthesia_type": "general"}, pytest.approx(-0.2791666666666667)),
    ({"procedure": "total_hip_arthroplasty", "anesthesia_type": "neuraxial"}, pytest.approx(-0.29910714285714285)),
    ({"procedure": "total_hip_arthroplasty", "anesthesia_type": "general"}, pytest.approx(0.3489583333333333)),
  ]


def test_drawn_is_the_default_and_shares_rows_with_fixed():
  drawn, _, truth = synthetic.make_cases("marginal", 4, 3000)
  again, _, same = synthetic.make_cases("marginal", 4, 3000, cohorts="drawn")
  pd.testing.assert_frame_equal(drawn, again)
  assert truth == same
  fixed, _, fixed_truth = synthetic.make_cases("marginal", 4, 3000, cohorts="fixed")
  assert truth != fixed_truth
  # Same rows and base measures: only the measures that either truth plants differ.
  planted = {e.measure for e in truth + fixed_truth}
  unplanted = [c for c in drawn.columns if c not in planted]
  pd.testing.assert_frame_equal(drawn[unplanted], fixed[unplanted])
  # Nothing is planted in null and confounded: one table.
  for scenario in ("null", "confounded"):
    a, _, _ = synthetic.make_cases(scenario, 4, 3000)
    b, _, _ = synthetic.make_cases(scenario, 4, 3000, cohorts="fixed")
    pd.testing.assert_frame_equal(a, b)


def effect_key(e):
  return (tuple(sorted(e.cohort.items())), e.protected, e.group, e.measure)


@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_drawn_cohorts_differ_between_seeds(scenario):
  tables = [synthetic.make_cases(scenario, seed, 4000)[2] for seed in range(20)]
  fixed = {effect_key(e) for e in synthetic.make_cases(scenario, 0, 4000, cohorts="fixed")[2]}
  distinct = {tuple(sorted(effect_key(e) for e in truth)) for truth in tables}
  assert len(distinct) >= 10, distinct
  effects = [e for truth in tables for e in truth]
  assert sum(effect_key(e) in fixed for e in effects) < 0.2 * len(effects)
  # Each part of a planted effect varies: the columns filtered, the group, the measure, the sign.
  # (Checkerboards mostly fall on procedure x ASA class or anesthesia type: the other pairs have a dominant value.)
  assert len({tuple(sorted(e.cohort)) for e in effects if e.depth}) >= (2 if scenario == "masked" else 3)
  assert len({(e.protected, e.group) for e in effects}) >= 4
  assert len({e.measure for e in effects}) >= 3
  assert {e.sign for e in effects} == {-1, 1}


def test_drawn_cohorts_follow_the_rules():
  lines = {}
  for p in synthetic._PROCEDURES:
    lines.setdefault(p.service_line, []).append(p.name)
  alone = {names[0] for names in lines.values() if len(names) == 1}
  for scenario in ("marginal", "interactions", "masked", "mixed"):
    fixed_depths = sorted(e.depth for e in cases(scenario, cohorts="fixed")[2])
    for seed in range(6):
      df, _, truth = synthetic.make_cases(scenario, seed, 8000)
      assert sorted(e.depth for e in truth) == fixed_depths
      masked = [] if scenario in ("marginal", "interactions") else checkerboard(truth)
      # One measure per planted spec, so effects never add up.
      assert len({e.measure for e in truth}) == len(truth) - 3 * bool(masked)
      for e in truth:
        assert (e.protected, e.group) in synthetic.DRAWN_GROUPS and e.measure in synthetic.DRAWN_MEASURES
        assert set(e.cohort) <= set(synthetic.DRAWN_DIMENSIONS) and e.cohort.get("procedure") not in alone
        cap = 0.6 if e.measure in synthetic.LOG_MEASURES else 0.2
        assert abs(e.effect) <= cap + 1e-12, e
        rows = rows_of(df, e.cohort).sum()
        share = 0.6 if e in masked else 0.45
        for name in e.cohort:
          parent = rows_of(df, {k: v for k, v in e.cohort.items() if k != name}).sum()
          assert rows <= share * parent, (e, name, rows, parent)
        group = (column(df, e.protected) == e.group) & rows_of(df, e.cohort) & ~np.isnan(column(df, e.measure))
        assert group.sum() >= 40 * 8000 / 20000, e
      if masked:
        assert set(masked[0].cohort) <= {"procedure", "asa_class", "anesthesia_type", "urgency"}
        assert masked[0].measure in synthetic.LOG_MEASURES


@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_drawn_effects_are_visible_where_planted(scenario):
  # Drawn effects are sized for a Welch statistic of ~9 at 20000 rows, as the fixed ones; scipy's p-value (t with
  # Welch's df, small groups) turned into a z reads lower, ~7-8.
  zs = {"fixed": [], "drawn": []}
  for cohorts in zs:
    for seed in range(1, 5):
      df, _, truth = synthetic.make_cases(scenario, seed, N, cohorts=cohorts)
      for e in truth:
        z, diff = scipy_z(df, e.cohort, e.protected, e.group, e.measure)
        assert np.sign(z) == e.sign, (cohorts, seed, e, z)
        assert abs(diff - e.effect) < 0.4 * abs(e.effect), (cohorts, seed, e, diff)
        zs[cohorts].append(abs(z))
  assert min(zs["fixed"]) > 5.5 and min(zs["drawn"]) > 5.5, zs
  assert 6.5 < np.median(zs["drawn"]) < 11, zs
  assert abs(np.median(zs["drawn"]) - np.median(zs["fixed"])) < 1.5, zs


def test_held_out_cubes_plant_nowhere_a_training_cube_planted():
  """The main job's task (the `cpu` preset's: 8 training cubes, 4 held out, 4,000 rows): 9 of the 16 held-out
  plants off the root sat at a cohort a training cube had planted (a cold audit, 2026-12-07), so remembering
  positions paid on the held-out report. `make_cases(avoid=...)` draws elsewhere; training cubes are unchanged."""
  task = pools.CubeTask(
    scenarios=pools.TASK_SCENARIOS, num_train_cubes=8, num_eval_cubes=4, n_rows=4000, horizon=16, max_depth=3
  )
  train, held_out = pools.make_cubes(task, split="train"), pools.make_cubes(task, split="eval")
  trained = {frozenset(e.cohort.items()) for truth in train.truths for e in truth if e.cohort}
  plants = [e for truth in held_out.truths for e in truth if e.cohort]
  assert len(plants) == 16 and not [e for e in plants if frozenset(e.cohort.items()) in trained]
  for seed, truth in zip(train.seeds, train.truths):  # training draws as without `avoid`
    scenario = pools.TASK_SCENARIOS[(seed - pools.TRAIN_SEED_BASE) % 4]
    assert truth == synthetic.make_cases(scenario, seed, 4000, effect_scale=(20000 / 4000) ** 0.5)[2]
  # Avoiding a table's own plants moves each of them (the root excepted).
  _, _, truth = synthetic.make_cases("mixed", 3, 4000)
  _, _, moved = synthetic.make_cases("mixed", 3, 4000, avoid=[e.cohort for e in truth])
  assert not {frozenset(e.cohort.items()) for e in moved if e.cohort} & {frozenset(e.cohort.items()) for e in truth}
  assert len(moved) == len(truth)


def test_held_out_cubes_that_cannot_avoid_the_training_positions_say_so():
  """16 training cubes of 4,000 rows plant so many cohorts that no masked checkerboard of a held-out cube clears
  them (a review): the error names the avoidance and the two flags that help, not the row count alone."""
  task = pools.CubeTask(
    scenarios=pools.TASK_SCENARIOS, num_train_cubes=16, num_eval_cubes=4, n_rows=4000, horizon=16, max_depth=3
  )
  with pytest.raises(ValueError, match=r"clear of the \d+ cohorts to avoid .*--num-train-cubes.*--n-rows"):
    pools.make_cubes(task, split="eval")
  assert len(pools.make_cubes(dataclasses.replace(task, n_rows=6000), split="eval").cubes) == 4
