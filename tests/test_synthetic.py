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

N = 20000


@functools.cache
def cases(scenario, seed=0, n_rows=N):
  return synthetic.make_cases(scenario, seed, n_rows)


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


def test_same_seed_same_table_other_seed_other_table():
  df1, schema1, truth1 = synthetic.make_cases("mixed", 7, 3000)
  df2, schema2, truth2 = synthetic.make_cases("mixed", 7, 3000)
  pd.testing.assert_frame_equal(df1, df2)
  assert truth1 == truth2 and schema1 == schema2
  df3, _, truth3 = synthetic.make_cases("mixed", 8, 3000)
  assert (df1["case_minutes"].to_numpy() != df3["case_minutes"].to_numpy()).mean() > 0.9
  assert (df1["procedure"].to_numpy() != df3["procedure"].to_numpy()).mean() > 0.5
  # The masked cells' effects depend on the realized group counts.
  assert [e.effect for e in truth1] != [e.effect for e in truth3]
  df4, _, _ = synthetic.make_cases("null", 7, 3000)
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


@settings(max_examples=8, deadline=None)
@given(scenario=st.sampled_from(synthetic.SCENARIOS), seed=st.integers(0, 2**31), n_rows=st.integers(300, 1500))
def test_any_seed_and_size_gives_a_valid_table(scenario, seed, n_rows):
  df, schema, truth = synthetic.make_cases(scenario, seed, n_rows)
  again, _, truth_again = synthetic.make_cases(scenario, seed, n_rows)
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


@pytest.mark.parametrize("scenario", synthetic.SCENARIOS)
def test_every_scenario_builds(scenario):
  df, schema, truth = synthetic.make_cases(scenario, 1, 2000)
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


def test_depths_of_scenarios():
  def depths(s):
    return sorted(e.depth for e in cases(s)[2])

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


@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_effects_are_visible_in_their_cohort(scenario):
  df, _, truth = cases(scenario)
  for e in truth:
    z, diff = scipy_z(df, e.cohort, e.protected, e.group, e.measure)
    assert abs(z) > 5 and np.sign(z) == e.sign, (e, z)
    # The realized difference is the planted one, within sampling error (|z| ~ 9 means se ~ d / 9).
    assert abs(diff - e.effect) < 0.4 * abs(e.effect), (e, diff)


@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_effects_are_not_mirrored_nor_leaked(scenario):
  # Other groups of the planted column see the planted group in their "rest" (a mirror of
  # about 0.35 times the planted z); other protected columns are independent or weakly related.
  df, schema, truth = cases(scenario)
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


@pytest.mark.parametrize("scenario", ["masked", "mixed"])
def test_masked_marginals_cancel(scenario):
  df, _, truth = cases(scenario)
  cells = [e for e in truth if e.depth == 2 and set(e.cohort) == {"procedure", "anesthesia_type"}]
  assert len(cells) == 4
  ((protected, group, measure),) = {(e.protected, e.group, e.measure) for e in cells}
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


@pytest.mark.parametrize("scenario", ["marginal", "interactions", "masked", "mixed"])
def test_planted_difference_is_the_truth_in_any_cohort(scenario):
  df, _, truth = cases(scenario)
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
  df, _, truth = cases("marginal")
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
  df, _, truth = cases("masked")
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


def test_effect_scale_multiplies_effects():
  _, _, base = synthetic.make_cases("marginal", 3, 4000)
  _, _, double = synthetic.make_cases("marginal", 3, 4000, effect_scale=2.0)
  assert [2 * e.effect for e in base] == pytest.approx([e.effect for e in double])
  df, _, zero = synthetic.make_cases("marginal", 0, N, effect_scale=0.0)
  assert all(e.effect == 0 for e in zero)
  for e in zero:
    assert abs(scipy_z(df, e.cohort, e.protected, e.group, e.measure)[0]) < 4
