"""Confirmation: the row split, Benjamini-Hochberg, the relative-difference rule and case-mix adjustment."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import cube_env
from cube_env.data import adjust, disclosure, holdout
from cube_env.discovery import cohorts, confirm, pipeline
from tests.conftest import SMALL_SCHEMA, make_small_df


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.sampled_from([0.01, 0.05, 0.2]))
def test_bh_matches_scipy(p, q):
  reject, adjusted = cube_env.benjamini_hochberg(p, q=q)
  np.testing.assert_allclose(adjusted, scipy.stats.false_discovery_control(p, method="bh"), rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(reject, adjusted <= q)


def test_bh_by_hand():
  # Sorted p: .001 .008 .039 .041 .042 .06 ; k = 6; p*k/i: .006 .024 .078 .0615 .0504 .06
  # step-up minima from the right: .006 .024 .0504 .0504 .0504 .06
  p = [0.039, 0.001, 0.06, 0.041, 0.008, 0.042]
  reject, adjusted = cube_env.benjamini_hochberg(p, q=0.05)
  np.testing.assert_allclose(adjusted, [0.0504, 0.006, 0.06, 0.0504, 0.024, 0.0504])
  assert reject.tolist() == [False, True, False, False, True, False]
  with pytest.raises(ValueError, match="q must"):
    cube_env.benjamini_hochberg(p, q=0)


def test_holm_by_hand():
  # Sorted p: .005 .01 .03 .04 ; k = 4; p * (k - j + 1): .02 .03 .06 .04 ; running max: .02 .03 .06 .06
  p = [0.01, 0.04, 0.03, 0.005]
  reject, adjusted = confirm.holm(p, alpha=0.05)
  np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
  assert reject.tolist() == [True, False, False, True]
  # Weights 3, 1, 1, 3 (mean 2 -> 1.5, .5, .5, 1.5): p / w = .0067 .08 .06 .0033; first .005 * 4 / 1.5 = .0133,
  # then .01 * 2.5 / 1.5 = .0167, then .03 * 1 / .5 = .06, then .04 * .5 / .5 = .04 -> running max .06.
  reject, adjusted = confirm.holm(p, alpha=0.05, weights=[3, 1, 1, 3])
  np.testing.assert_allclose(adjusted, [0.01 * 2.5 / 1.5, 0.06, 0.06, 0.005 * 4 / 1.5])
  assert reject.tolist() == [True, False, False, True]
  with pytest.raises(ValueError, match="weights"):
    confirm.holm(p, weights=[1, 1, 0, 1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30), st.sampled_from([0.01, 0.05, 0.2]))
def test_holm_matches_the_step_down_loop(p, alpha):
  reject, adjusted = confirm.holm(p, alpha=alpha)
  order = np.argsort(p, kind="stable")
  expected = np.zeros(len(p), bool)
  for j, i in enumerate(order):  # Holm (1979): reject while p_(j) <= alpha / (k - j)
    if p[i] > alpha / (len(p) - j):
      break
    expected[i] = True
  np.testing.assert_array_equal(reject, expected)
  same, _ = confirm.holm(p, alpha=alpha, weights=np.full(len(p), 7.0))
  np.testing.assert_array_equal(same, reject)


def test_weighted_holm_keeps_the_family_wise_error_under_the_null():
  rng = np.random.default_rng(0)
  weights = confirm.exploration_weights(rng.normal(0, 2, 20), tilt=2.0)
  assert weights.mean() == pytest.approx(1.0) and weights.min() > 0
  trials = 20_000
  hits = sum(confirm.holm(rng.random(20), alpha=0.05, weights=weights)[0].any() for _ in range(trials))
  # Exact for the first step (weighted Bonferroni): P(any) <= sum(alpha w / k) = alpha; 3 standard errors above.
  assert hits / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
  assert hits / trials >= 0.04  # and not far below: the weights spend the whole alpha
  tiny = confirm.exploration_weights([40.0, 3.5], tilt=10.0)  # exp(-365): floored, not 0, so Holm accepts it
  # Step 1 rejects the heavy one at alpha * 2 / 2; step 2 tests the last at the whole alpha.
  assert tiny.min() > 0 and confirm.holm([1e-6, 0.01], weights=tiny)[0].tolist() == [True, True]


def test_pooled_p_matches_scipy():
  rng = np.random.default_rng(1)
  a, b = rng.poisson(0.3, 12).astype(float), rng.poisson(0.7, 300).astype(float)
  expected = scipy.stats.ttest_ind(a, b, equal_var=True).pvalue
  got = confirm.pooled_p(len(a), a.var(ddof=1), len(b), b.var(ddof=1), a.mean() - b.mean())
  assert got == pytest.approx(expected, rel=1e-9)
  assert confirm.pooled_p(1, 0.0, 1, 0.0, 0.5) == 1.0  # no degrees of freedom: untestable, not NaN


def test_mirror_check_of_a_rate_that_subtraction_rounds_below_zero():
  # The rest (22 rows, 15 events) without the other group (15 rows, all events) holds 7 rows and 0 events, which
  # 22 * (15 / 22) - 15 computes as -1.8e-15; the candidate's group has no event either, so their pooled rate is 0
  # (se 0) and the candidate's gap vanishes without the other group: a mirror, decided without a NaN or a warning,
  # and whichever way the subtraction rounds (the same group with a positive gap, so that the rounding's sign would
  # have made the old "different means" branch's infinite z count for it: still a mirror).
  table = pd.DataFrame(
    {
      "cohort_index": [0, 0],
      "protected": ["race", "race"],
      "measure": ["complication", "complication"],
      "group": ["H", "G"],
      "tested": [True, True],
      "z": [-3.0, 6.0],
      "scale": ["binary", "binary"],
      "n_group": [10.0, 15.0],
      "mean_group": [0.0, 1.0],
      "var_group": [0.0, 0.0],
      "n_rest": [22.0, 17.0],
      "mean_rest": [15.0 / 22.0, 0.0],
      "var_rest": [15.0 / 22.0 * 7.0 / 22.0 * 22.0 / 21.0, 0.0],
    }
  )
  n, mean, _ = confirm._moments_without(table.iloc[0], table.iloc[1])
  assert n == 7.0 and mean < 0.0  # the rounding this guards against
  with np.errstate(invalid="raise"):
    assert confirm.mirror_of(table.iloc[:1], table, np.array([0]), z_min=2.0) == ["G"]
    flipped = table.assign(z=[3.0, -6.0])  # signs only: the candidate's side reads the rates, the same as above
    assert confirm._vanishes_without(flipped.iloc[0], flipped.iloc[1], 2.0)
  unknown = table.assign(mean_group=[np.nan, 1.0])  # a rate that is not a number decides nothing: no mirror
  assert confirm.mirror_of(unknown.iloc[:1], unknown, np.array([0]), z_min=2.0) == [None]


def _cohort_rows(groups: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
  """One cohort's table rows (linear scale) from each group's (n, mean, variance): each group against the pooled
  rest, Welch's z."""
  rows = []
  for g, (n, m, v) in groups.items():
    rest = [groups[h] for h in groups if h != g]
    n_r = sum(r[0] for r in rest)
    m_r = sum(r[0] * r[1] for r in rest) / n_r
    v_r = (sum((r[0] - 1) * r[2] + r[0] * r[1] ** 2 for r in rest) - n_r * m_r**2) / (n_r - 1)
    z = (m - m_r) / np.sqrt(v / n + v_r / n_r)
    rows.append(dict(group=g, z=z, n_group=n, mean_group=m, var_group=v, n_rest=n_r, mean_rest=m_r, var_rest=v_r))
  return pd.DataFrame(rows).assign(cohort_index=0, protected="race", measure="minutes", tested=True, scale="linear")


def test_two_groups_that_hold_the_cohort_between_them_are_told_by_the_smaller_one():
  """Mirrors both ways (an audit): when neither of two opposite gaps stands without the other group's rows, the
  smaller group's finding is kept and the larger group's is its mirror, whichever |z| is larger; a gap that stands
  alone keeps the rule by |z|."""
  # B (300 rows) and W (600) hold the cohort; A (40 rows) lies between them. W's |z| is larger here.
  table = _cohort_rows({"B": (300, 1.0, 1.0), "W": (600, 0.8, 0.5), "A": (40, 0.9, 1.0)})
  z = table.set_index("group")["z"]
  assert z["B"] > 2 and z["W"] < -2 and abs(z["W"]) > abs(z["B"])  # as the audit's confirmation half read
  for g in ("B", "W"):  # neither gap stands without the other group's rows (by hand: each against A alone)
    me, a = table.set_index("group").loc[g], table.set_index("group").loc["A"]
    assert abs((me.mean_group - a.mean_group) / np.sqrt(me.var_group / me.n_group + a.var_group / a.n_group)) < 2
  got = confirm.mirror_of(table, table, np.zeros(3, int), z_min=2.0)
  assert got == [None, "B", "W"]  # B kept; W is B's mirror (before: B was W's, by |z| alone); A, W's (by |z|)
  # The size rule holds only between two candidates: with W the only one (B missed the exploration screen), W is
  # kept by |z|, or neither would tell the story (a review).
  assert confirm.mirror_of(table.iloc[[1]], table, np.zeros(1, int), z_min=2.0) == [None]
  # With the sizes swapped the larger group is B: W tells the story.
  swapped = _cohort_rows({"B": (600, 1.0, 0.5), "W": (300, 0.8, 1.0), "A": (40, 0.9, 1.0)})
  assert confirm.mirror_of(swapped, swapped, np.zeros(3, int), z_min=2.0) == ["W", None, "B"]
  # A gap that stands alone (C far above A and W) keeps the rule by |z|: W and A, lower only against a rest holding
  # C, are C's mirrors and C is kept.
  alone = _cohort_rows({"C": (300, 2.0, 1.0), "W": (600, 0.8, 1.0), "A": (200, 0.8, 1.0)})
  assert confirm.mirror_of(alone, alone, np.zeros(3, int), z_min=2.0) == [None, "C", "C"]


def test_a_mirror_is_not_confirmed():
  # Group A's minutes are doubled; B and C are drawn like the rest, so B (and C) look lower than a rest that holds A.
  rng = np.random.default_rng(2)
  n = 6000
  race = rng.choice(["B", "C", "A"], n, p=[0.5, 0.3, 0.2])
  df = pd.DataFrame(
    {
      "proc": rng.choice(["P", "Q"], n),
      "race": race,
      "minutes": rng.lognormal(4, 0.5, n) * np.where(race == "A", 2.0, 1.0),
    }
  )
  schema = cube_env.Schema(dimensions=("proc",), protected=("race",), measures=("minutes",))
  halves = cube_env.split_cubes(df, schema, seed=0)
  cand = cube_env.cohort_table(halves.explore, [[-1, -1]], z_screen=4.0, only_new=True)
  assert set(cand.group) >= {"A", "B"}
  out = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0, mirror_z=2.0).set_index("group")
  assert bool(out.loc["A", "confirmed"]) and pd.isna(out.loc["A", "mirror_of"])
  assert not out.loc["B", "confirmed"] and out.loc["B", "mirror_of"] == "A" and "mirror" in out.loc["B", "reason"]
  # By hand: B against the rest without A (C's rows), Welch on the log scale, is not lower.
  rows = df[~cube_env.split_rows(df, seed=0)]
  t, _ = scipy.stats.ttest_ind(
    np.log(rows.minutes[rows.race == "B"]), np.log(rows.minutes[rows.race == "C"]), equal_var=False
  )
  assert -t < 2.0
  plain = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0).set_index("group")
  assert bool(plain.loc["B", "confirmed"])  # without the check it is confirmed


def test_relative_difference_rules():
  rd = confirm.relative_difference
  assert rd(
    {"scale": "log", "mean_group": 2.0, "mean_rest": 1.0, "diff": np.log(1.25)}, adjusted=False, favorable=False
  ) == pytest.approx(0.25)
  rate = {"scale": "binary", "mean_group": 0.12, "mean_rest": 0.10, "diff": 0.02}
  assert rd(rate, adjusted=False, favorable=False) == pytest.approx(0.2)
  assert rd(rate, adjusted=False, favorable=True) == pytest.approx((0.88 - 0.90) / 0.90)
  lin = {"scale": "linear", "mean_group": 0.03, "mean_rest": -0.01, "diff": 0.04}
  assert rd(lin, adjusted=True, favorable=False, rest_observed=0.2) == pytest.approx(0.2)
  assert np.isnan(
    rd({"scale": "linear", "mean_group": None, "mean_rest": 1.0, "diff": 0.1}, adjusted=False, favorable=False)
  )
  ratio = {"scale": "ratio", "mean_group": 1.15, "mean_rest": 0.92, "diff": 0.23}  # mean observed / expected
  assert rd(ratio, adjusted=True, favorable=False, rest_observed=7.0) == pytest.approx(0.25)


def test_relative_interval_maps_the_differences_interval_as_the_relative_difference():
  """Log scale: exp of the limits, minus one; otherwise the limits over the rest's mean (non-event rates for a
  favorable rate, the observed rest mean when adjusted), in order; NaN where the difference is not shown."""
  ri = confirm.relative_interval
  log = {"scale": "log", "mean_group": 2.0, "mean_rest": 1.0, "diff": np.log(1.5), "ci_low": np.log(1.3)}
  log["ci_high"] = np.log(1.7)
  np.testing.assert_allclose(ri(log, adjusted=False, favorable=False), (0.3, 0.7))
  lin = {"scale": "linear", "mean_group": 12.0, "mean_rest": 10.0, "diff": 2.0, "ci_low": 1.0, "ci_high": 3.0}
  np.testing.assert_allclose(ri(lin, adjusted=False, favorable=False), (0.1, 0.3))
  rate = {"scale": "binary", "mean_group": 0.1, "mean_rest": 0.2, "diff": -0.1, "ci_low": -0.15, "ci_high": -0.05}
  assert confirm.relative_difference(rate, adjusted=False, favorable=True) == pytest.approx(0.125)
  np.testing.assert_allclose(ri(rate, adjusted=False, favorable=True), (0.0625, 0.1875))
  np.testing.assert_allclose(ri(rate, adjusted=False, favorable=False), (-0.75, -0.25))
  excess = {"scale": "binary", "mean_group": 0.05, "mean_rest": 0.0, "diff": 0.05, "ci_low": 0.01, "ci_high": 0.09}
  np.testing.assert_allclose(ri(excess, adjusted=True, favorable=False, rest_observed=0.2), (0.05, 0.45))
  np.testing.assert_allclose(ri(excess, adjusted=True, favorable=True, rest_observed=0.2), (-0.1125, -0.0125))
  ratio = {"scale": "ratio", "mean_group": 1.2, "mean_rest": 1.0, "diff": 0.2, "ci_low": 0.1, "ci_high": 0.3}
  np.testing.assert_allclose(ri(ratio, adjusted=True, favorable=False, rest_observed=7.0), (0.1, 0.3))
  assert np.isnan(ri({**lin, "ci_low": None}, adjusted=False, favorable=False)).all()
  assert np.isnan(ri({**lin, "mean_rest": 0.0}, adjusted=False, favorable=False)).all()


def test_an_unadjusted_relative_interval_is_the_log_ratios_with_both_sides_uncertain():
  """The difference's limits over the rest's mean, that mean taken as known, covered 82% at "95%" for two sides of
  similar size (a statistics audit): with the sides' sizes, rates get Katz's interval of the rate ratio (35/123
  events against 20/147: 0.276 to 2.43 as relative differences, the audit's figures; it was 0.378 to 1.81) and
  linear measures the delta method's on the log of the ratio of means."""
  ri = confirm.relative_interval
  a, n1, c, n2 = 35, 123, 20, 147
  rate = dict(scale="binary", mean_group=a / n1, mean_rest=c / n2, n_group=n1, n_rest=n2, var_group=0.2, var_rest=0.1)
  rate |= dict(diff=a / n1 - c / n2, ci_low=0.05, ci_high=0.25)  # the Wald limits no longer matter here
  katz = np.sqrt(1 / a - 1 / n1 + 1 / c - 1 / n2)  # the textbook form
  rr = (a / n1) / (c / n2)
  expected = (rr * np.exp(-1.959964 * katz) - 1, rr * np.exp(1.959964 * katz) - 1)
  np.testing.assert_allclose(ri(rate, adjusted=False, favorable=False), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, (0.276, 2.43), atol=0.005)
  # A favorable rate: Katz's interval of the non-event ratio, which holds the point estimate.
  lo, hi = ri(rate, adjusted=False, favorable=True)
  assert lo < confirm.relative_difference(rate, adjusted=False, favorable=True) < hi < 0
  lin = dict(scale="linear", mean_group=12.0, mean_rest=10.0, n_group=50, n_rest=200, var_group=16.0, var_rest=9.0)
  lin |= dict(diff=2.0, ci_low=1.0, ci_high=3.0)
  se = np.sqrt(16 / (50 * 144) + 9 / (200 * 100))
  np.testing.assert_allclose(
    ri(lin, adjusted=False, favorable=False), 1.2 * np.exp([-1.959964 * se, 1.959964 * se]) - 1
  )
  # A count measure (whole numbers, tested as linear) too; a small group's interval takes the difference's own t
  # quantile, read off its interval (a review: the normal one covered 92.8% at 11 rows against 2,000).
  np.testing.assert_allclose(
    ri({**lin, "scale": "count"}, adjusted=False, favorable=False), ri(lin, adjusted=False, favorable=False)
  )
  small = dict(lin, n_group=11, n_rest=2000, var_group=16.0, var_rest=9.0)
  se_diff, t = np.sqrt(16 / 11 + 9 / 2000), 2.2  # Welch's t quantile near 10 degrees of freedom
  small |= dict(ci_low=2.0 - t * se_diff, ci_high=2.0 + t * se_diff)
  se = np.sqrt(16 / (11 * 144) + 9 / (2000 * 100))
  np.testing.assert_allclose(ri(small, adjusted=False, favorable=False), 1.2 * np.exp([-t * se, t * se]) - 1)
  # Without the sizes, a mean at 0 or below, or adjusted: the limits over the rest's mean, as before.
  np.testing.assert_allclose(ri({**lin, "mean_rest": -10.0, "diff": 22.0}, adjusted=False, favorable=False), (0.1, 0.3))
  np.testing.assert_allclose(ri({**lin, "n_group": None}, adjusted=False, favorable=False), (0.1, 0.3))
  zero = {**rate, "mean_group": 0.0, "ci_low": -0.2, "ci_high": -0.1}
  assert ri(zero, adjusted=False, favorable=False, rate=True)[0] == -1.0


def test_a_rates_side_interval_is_wilsons():
  """A group's or rest's rate gets Wilson's score interval (scipy's): Wald's read [1, 1] for 94 events in 94 cases
  and [0, 0] for none in 65 (a statistics audit)."""
  side = cohorts._side_interval
  for events, n in ((94, 94), (0, 65), (35, 123), (20, 147)):
    wilson = scipy.stats.binomtest(events, n).proportion_ci(method="wilson")
    np.testing.assert_allclose(side(events / n, 0.0, n, "binary"), (wilson.low, wilson.high), atol=1e-12)
  assert side(1.0, 0.0, 94, "binary")[1] == 1.0 and side(0.0, 0.0, 65, "binary")[0] == 0.0


def test_a_means_side_interval_is_students_t():
  """A group's or rest's mean gets Student's t interval on its sample variance (scipy's `t.interval`), on the log
  scale back-transformed; it was the normal 1.96, which covers 92% at 11 rows (a cold statistics audit). The
  disclosure check still reads a side's variance back from the interval it shows."""
  side, rng = cohorts._side_interval, np.random.default_rng(0)
  for n in (11, 15, 40, 400):
    x = rng.normal(10.0, 2.0, n)
    ref = scipy.stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    np.testing.assert_allclose(side(x.mean(), x.var(ddof=1), n, "linear"), ref, rtol=1e-12)
    logs = np.log(rng.lognormal(3.0, 0.5, n))
    ref = scipy.stats.t.interval(0.95, n - 1, loc=logs.mean(), scale=scipy.stats.sem(logs))
    np.testing.assert_allclose(side(logs.mean(), logs.var(ddof=1), n, "log"), np.exp(ref), rtol=1e-12)
    low, high = side(x.mean(), x.var(ddof=1), n, "count")
    table = pd.DataFrame({"n_group": [n], "mean_group": [x.mean()], "var_group": [np.nan], "group_ci_low": [low]})
    table["group_ci_high"], table["scale"] = high, "count"
    moments = disclosure.value_counts(table, (0.0, 1.0, 2.0), "group") @ np.array([0.0, 1.0, 4.0])
    np.testing.assert_allclose(moments, (n - 1) * x.var(ddof=1) + n * x.mean() ** 2, rtol=1e-9)


def test_split_is_seeded_and_ignores_row_order():
  df = make_small_df(n=2000)
  a = cube_env.split_rows(df, seed=3)
  assert 0.45 < a.mean() < 0.55
  np.testing.assert_array_equal(a, cube_env.split_rows(df, seed=3))
  shuffled = df.sample(frac=1.0, random_state=0)
  np.testing.assert_array_equal(cube_env.split_rows(shuffled, seed=3), a[shuffled.index.to_numpy()])
  assert (cube_env.split_rows(df, seed=4) != a).mean() > 0.3
  assert 0.2 < cube_env.split_rows(df, seed=3, fraction=0.25).mean() < 0.3


def test_rows_whose_text_cells_are_all_missing_follow_the_seed():
  """A cold audit: pandas' keyed hash ignores the key on missing text, so rows whose text cells were all missing (or
  every row, where a text column was empty) went to the same half under every seed. Each seed draws them anew, and
  rows with text keep the split they had."""
  rng = np.random.default_rng(0)
  n = 4000
  df = pd.DataFrame({"age": rng.integers(18, 90, n), "los": rng.random(n)})  # no repeated rows
  df["note"] = pd.Series([None] * n, dtype=object)  # an empty text column
  df["proc"] = pd.Series(np.where(rng.random(n) < 0.7, None, rng.choice(["A", "B", "C"], n)), dtype=object)
  empty = df.drop(columns="proc")
  halves = np.stack([cube_env.split_rows(empty, seed=s) for s in range(5)])
  assert 0.03 < (halves == halves[0]).all(axis=0).mean() < 0.1  # 1/16 by chance; 1.0 before
  halves = np.stack([cube_env.split_rows(df, seed=s) for s in range(5)])
  missing = df.proc.isna().to_numpy()
  for rows in (missing, ~missing):
    assert 0.03 < (halves[:, rows] == halves[0, rows]).all(axis=0).mean() < 0.1
  # Rows with text: the split pandas' keyed hash gives, as before (seed 3 by hand: the key reaches their hash).
  key = f"{3:016x}"
  hashed = pd.util.hash_pandas_object(df, index=False, hash_key=key).to_numpy(np.uint64)
  by_hand = (hashed >> np.uint64(11)).astype(np.float64) / float(2**53) < 0.5
  np.testing.assert_array_equal(cube_env.split_rows(df, seed=3)[~missing], by_hand[~missing])


def test_repeated_rows_are_split_independently():
  """A table of few patterns (categories and a 0/1 outcome, no identifier): each pattern's copies go to both halves
  about as the fraction says, not all to one; the split still ignores the row order, and a row's first copy keeps
  the half its content alone gives (a table without repeats splits as before copies were counted)."""
  rng = np.random.default_rng(0)
  n = 6000
  df = pd.DataFrame(
    {"race": rng.choice(["A", "B", "C"], n), "sex": rng.choice(["F", "M"], n), "readmit": rng.random(n) < 0.2}
  )
  assert len(df.drop_duplicates()) == 12
  mask = cube_env.split_rows(df, seed=3)
  assert 0.47 < mask.mean() < 0.53
  share = pd.Series(mask).groupby([df.race, df.sex, df.readmit]).mean()
  assert share.between(0.35, 0.65).all(), share  # one hash per pattern would give only 0 and 1
  shuffled = df.sample(frac=1.0, random_state=1)
  again = cube_env.split_rows(shuffled, seed=3)
  np.testing.assert_array_equal(
    pd.Series(again).groupby([shuffled.race.to_numpy(), shuffled.sex.to_numpy(), shuffled.readmit.to_numpy()]).sum(),
    pd.Series(mask).groupby([df.race.to_numpy(), df.sex.to_numpy(), df.readmit.to_numpy()]).sum(),
  )  # copies are interchangeable: each pattern sends as many rows to exploration in any order
  first = ~df.duplicated().to_numpy()
  np.testing.assert_array_equal(mask[first], cube_env.split_rows(df[first], seed=3))


def test_a_column_of_lists_no_setting_names_is_refused_with_why_it_counts():
  """An ingest audit: a list column no flag named refused the table with "column 'codes' holds lists (...)", not why
  a column the run does not use matters: every column counts in the row split's hash."""
  df = pd.DataFrame({"race": ["a", "b"] * 20, "codes": [["x", "y"]] * 40})
  with pytest.raises(
    ValueError,
    match=r"column 'codes' holds lists \(the first at row 1\): each cell must be one "
    r"value; every column of the table counts in the row split \(its hash\), used by the run or not",
  ):
    cube_env.split_rows(df, seed=0)


def test_a_table_of_numbers_alone_splits_by_its_seed():
  """pandas keys only text and categories: integer codes and a 0/1 outcome hashed alike under every seed (a review).
  A seed other than 0 is now mixed in there; seed 0, and any table with a text column, split as before."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"race": rng.integers(1, 4, 4000), "sex": rng.integers(0, 2, 4000), "los": rng.random(4000)})
  split = {seed: cube_env.split_rows(df, seed=seed) for seed in (0, 1, 7)}
  assert 0.4 < (split[0] != split[1]).mean() < 0.6 and 0.4 < (split[1] != split[7]).mean() < 0.6
  assert 0.47 < split[1].mean() < 0.53
  content = pd.util.hash_pandas_object(df, index=False).to_numpy(np.uint64)
  np.testing.assert_array_equal(split[0], (content >> np.uint64(11)).astype(np.float64) / 2.0**53 < 0.5)
  texts = df.assign(race=df.race.astype(str))
  assert (cube_env.split_rows(texts, seed=3) != cube_env.split_rows(texts, seed=4)).mean() > 0.4
  # Categories of integers are hashed by their codes, unkeyed too (an audit: seeds 0-2 gave one split).
  coded = df.assign(race=df.race.astype("category"))
  assert 0.4 < (cube_env.split_rows(coded, seed=1) != cube_env.split_rows(coded, seed=2)).mean() < 0.6
  labelled = df.assign(race=df.race.astype(str).astype("category"))  # categories of text: pandas keys them
  np.testing.assert_array_equal(cube_env.split_rows(labelled, seed=3), cube_env.split_rows(texts, seed=3))


def test_halves_share_coding_and_partition_rows():
  df = make_small_df(n=2000)
  halves = cube_env.split_cubes(df, SMALL_SCHEMA, seed=1)
  mask = cube_env.split_rows(df, seed=1)
  assert halves.explore.meta.categories == halves.confirm.meta.categories
  assert (halves.explore_rows, halves.confirm_rows) == (int(mask.sum()), int((~mask).sum()))
  for cube, rows in ((halves.explore, df[mask]), (halves.confirm, df[~mask])):
    assert float(np.asarray(cube.rows).sum()) == len(rows)
    stats = np.asarray(cube.stats, np.float64)
    for m, name in enumerate(SMALL_SCHEMA.measures):
      assert stats[:, m, 0].sum() == rows[name].notna().sum()  # a missing value leaves only its measure
      values = np.log(rows[name]) if cube.meta.is_log[m] else rows[name]
      mean = cube.meta.shift[m] + stats[:, m, 1].sum() / stats[:, m, 0].sum()
      assert mean == pytest.approx(values.mean(), rel=1e-5)


def test_a_fraction_that_leaves_a_half_too_few_rows_is_refused_naming_it():
  """explore_fraction 0.999 of 5,000 rows ran with 4 confirmation rows, and the report said "4 confirmation" (a count
  under the small-cell limit) beside candidates none of which could be tested: each half needs a group and a rest of
  min_group rows, or the run is refused before any search, the count in the message redacted."""
  df = make_small_df(n=2000)
  config = cube_env.DiscoveryConfig(method="greedy", budget=5, explore_fraction=0.995)
  mask = cube_env.split_rows(df, seed=0, fraction=0.995)
  assert 1 <= int((~mask).sum()) <= 10  # the case: a count that must not be shown
  with pytest.raises(ValueError) as err:
    pipeline.prepare(df, SMALL_SCHEMA, config)
  assert str(err.value) == (
    "the confirmation half holds fewer than 11 rows at explore_fraction = 0.995; each half needs at least 22 rows, a "
    "group and a rest of min_group = 11 each: explore_fraction must move toward 0.5 (or use more rows)"
  )
  assert pipeline.min_halves(cube_env.DiscoveryConfig(min_group=20.5)) == 41
  mask = cube_env.split_rows(df, seed=0, fraction=0.02)
  assert 22 <= int(mask.sum()) < 41  # enough for min_group 11, not for 20.5
  holdout.check_halves(mask, fraction=0.02, min_rows=22)
  with pytest.raises(
    ValueError,
    match=r"^the exploration half holds \d+ rows at explore_fraction = 0.02; each half needs at least 41 rows",
  ):
    holdout.check_halves(mask, fraction=0.02, min_rows=41)
  with pytest.raises(
    ValueError, match=r"min_group = 500.5 each: min_group must be lower \(or use more rows\)"
  ):  # half the table would not do either
    holdout.check_halves(mask, fraction=0.02, min_rows=1001)
  # Both halves short: both given, never the table's rows (a review: 995 of 1,000 gave the other half's 5 back); at
  # 0.5 with min_group at the rule's 11 only more rows help.
  mask = cube_env.split_rows(df.head(1000), seed=0, fraction=0.995)
  with pytest.raises(ValueError) as err:
    holdout.check_halves(mask, fraction=0.995, min_rows=1000)
  assert str(err.value).startswith(
    f"the exploration half holds {int(mask.sum())} rows and the confirmation half holds fewer than 11 rows at "
  )
  mask = cube_env.split_rows(df.head(40), seed=0)
  with pytest.raises(ValueError, match="min_group = 11 each: the table is too small to split: use more rows$"):
    holdout.check_halves(mask, fraction=0.5, min_rows=22)
  one_row = "exploration half holds 0 rows at explore_fraction = 1e-300; each half needs at least 1 row: explore_"
  with pytest.raises(ValueError, match=one_row + "fraction must move"):
    cube_env.split_cubes(df, SMALL_SCHEMA, seed=0, fraction=1e-300)  # one row at least, with no min_group


def test_a_side_without_rows_has_no_mean_difference_or_z(small_cube):
  """A candidate whose cohort or group is absent from the confirmation half showed the measure's shift as both means
  (30.2 against 30.2 over 0 rows) and a relative difference of 0 with the interval 0 to 0; the rest's mean stays
  where the rest has rows."""
  meta = small_cube.meta
  cmp = dict(n_group=0.0, n_rest=40.0, mean_group=3.4, mean_rest=3.6, diff=-0.2, ci_low=-0.2, ci_high=-0.2)
  cmp.update(ratio=0.8, smd=0.0, z=0.0, p_value=1.0)
  row = cohorts.finding_row(meta, {}, 40.0, 0, 0, 0, cmp, False, False, min_group=11)
  assert row["n_group"] == 0 and row["n_rest"] == 40 and row["mean_rest"] == pytest.approx(np.exp(3.6))
  blank = ("mean_group", "diff", "ci_low", "ci_high", "ratio", "smd", "z", "p_value")
  assert [row[k] for k in blank] == [None] * len(blank)
  both = cohorts.finding_row(meta, {}, 0.0, 0, 0, 0, {**cmp, "n_rest": 0.0}, False, False, min_group=11)
  assert both["mean_rest"] is None and both["mean_group"] is None
  assert np.isnan(confirm.relative_difference({**both, "scale": "log"}, adjusted=False, favorable=False))
  kept = cohorts.finding_row(meta, {}, 80.0, 0, 0, 0, {**cmp, "n_group": 40.0}, False, False, min_group=11)
  assert kept["mean_group"] == pytest.approx(np.exp(3.4)) and kept["z"] == 0.0 and kept["p_value"] == 1.0
  assert kept["ratio"] == pytest.approx(np.exp(-0.2))  # a log measure's ratio of geometric means stays
  binary = meta.is_binary.index(True)  # a rest rate of 0: no ratio (the statistics' placeholder was 1e6)
  rates = dict(cmp, n_group=40.0, mean_group=0.1, mean_rest=0.0, ratio=1e6)
  assert cohorts.finding_row(meta, {}, 80.0, 0, 0, binary, rates, False, False, min_group=11)["ratio"] is None


def test_expected_values_are_stratum_means_of_the_fitting_rows():
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"a": rng.choice(["x", "y", "z"], 300), "b": rng.choice([1, 2], 300), "v": rng.normal(size=300)})
  df.loc[:5, "v"] = np.nan
  fit = rng.random(300) < 0.5
  strata = adjust.strata(df, ["a", "b"])
  exp = adjust.expected_values(strata, df[["v"]].to_numpy(), fit)[:, 0]
  ref = df[fit].groupby(["a", "b"])["v"].mean()
  want = [ref.loc[(a, b)] for a, b in zip(df.a, df.b)]
  np.testing.assert_allclose(exp, want)
  with pytest.raises(ValueError, match="'nope'"):
    adjust.strata(df, ["nope"])
  # A measure without a value on the fitting rows is named (an ingest audit: "measure 0 has no value ...").
  empty = np.where(fit[:, None], np.nan, df[["v"]].to_numpy())
  with pytest.raises(ValueError, match="measure 'minutes' has no value on the exploration half, whose rows the"):
    adjust.residualize(df, ["a"], empty, fit, names=["minutes"])


def test_count_measures_are_standardized_by_ratio():
  """Case mix that scales a count's rate: a cohort where another driver lowers the rate by f shows, observed minus
  expected, a gap for the group that sits in high-rate strata; observed / expected is f for every stratum."""
  rng = np.random.default_rng(1)
  n = 60_000
  group = rng.random(n) < 0.3
  stratum = np.where(rng.random(n) < np.where(group, 0.7, 0.2), "high", "low")  # the group sits in high-rate strata
  driver = rng.random(n) < 0.3  # lowers the rate by 4, for everyone
  rate = np.where(stratum == "high", 8.0, 1.0) * np.where(driver, 0.25, 1.0)
  df = pd.DataFrame({"s": stratum, "g": np.where(group, "a", "b"), "d": driver, "v": rng.poisson(rate).astype(float)})
  values = df[["v"]].to_numpy()
  fit = rng.random(n) < 0.5
  assert adjust.ratio_measures(values, [False], [False]) == (True,)
  assert adjust.ratio_measures(values - 1.0, [False], [False]) == (False,)  # a negative value: by difference
  assert adjust.ratio_measures(values, [False], [True]) == (False,)
  ratio, line, used = adjust.residualize(df, ["s"], values, fit, ratio=(True,), names=["v"])
  diff, _, none = adjust.residualize(df, ["s"], values, fit)
  assert used == (True,) and none == (False,) and "'v' observed / expected (ratio" in line
  means = df[fit].groupby("s")["v"].mean()
  np.testing.assert_allclose(ratio[:, 0], df["v"] / df["s"].map(means))
  np.testing.assert_allclose(diff[:, 0], df["v"] - df["s"].map(means))
  cohort = driver & ~fit

  def z(adjusted, cohort, group):
    a, b = adjusted[cohort & group, 0], adjusted[cohort & ~group, 0]
    return scipy.stats.ttest_ind(a, b, equal_var=False).statistic

  assert abs(z(diff, cohort, group)) > 8  # the explained gap, by difference
  assert abs(z(ratio, cohort, group)) < 3  # gone, by ratio


def test_ratio_standardization_needs_precise_strata():
  """No effect anywhere, one rate; a group spread over 200 small strata (about 20 fitting rows each), the rest over
  4 large ones. Dividing by the small strata's noisy means inflates the group's ratios on the other half (E[1/mean]
  > 1/E[mean]); the precision rule adjusts such a measure by difference, which shows no gap."""
  rng = np.random.default_rng(2)
  n = 60_000
  group = rng.random(n) < 0.13
  stratum = np.where(group, "g" + rng.integers(0, 200, n).astype(str), "r" + rng.integers(0, 4, n).astype(str))
  df = pd.DataFrame({"s": stratum, "v": rng.poisson(0.3, n).astype(float)})
  values, fit = df[["v"]].to_numpy(), rng.random(n) < 0.5
  forced = values / adjust.expected_values(adjust.strata(df, ["s"]), values, fit)
  forced = np.where(np.isfinite(forced), forced, np.nan)
  a, b = forced[~fit & group, 0], forced[~fit & ~group, 0]
  assert np.nanmean(a) / np.nanmean(b) > 1.1  # the bias: a 10% "gap" that is not there
  assert adjust.ratio_precision(adjust.adjuster_levels(df, ["s"]), values[:, 0], fit) > adjust.MAX_RATIO_CV2
  out, line, used = adjust.residualize(df, ["s"], values, fit, ratio=(True,), names=["v"])
  assert used == (False,) and "'v' by difference" in line
  z = scipy.stats.ttest_ind(out[~fit & group, 0], out[~fit & ~group, 0], equal_var=False).statistic
  assert abs(z) < 3


def test_a_ratio_refused_for_a_one_row_level_says_no_count_below_eleven():
  """The note of a measure adjusted by difference because an adjuster level has one fitting row said "one row",
  a count the small-cell rule hides (a cold audit); it now says "fewer than 11 rows"."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"s": ["a"] * 200 + ["b"] * 200 + ["c"]})
  values, fit = rng.gamma(2.0, 1.0, (len(df), 1)) + 0.5, np.ones(len(df), bool)
  _, line, used = adjust.residualize(df, ["s"], values, fit, ratio=(True,), names=["v"])
  assert used == (False,) and "an adjuster level with fewer than 11 rows or a zero mean" in line
  assert "one row" not in line


def test_confirmation_retests_on_the_other_half(small_df):
  halves = cube_env.split_cubes(small_df, SMALL_SCHEMA, seed=0)
  cand = cube_env.cohort_table(halves.explore, [[0, -1, -1, -1, -1, -1]], z_screen=4.0, only_new=True)
  assert halves.explore.meta.categories[0][0] == "A" and len(cand) >= 1
  out = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0)
  row = out[(out.protected == "race") & (out.group == "B") & (out.measure == "minutes")].iloc[0]
  # Reference: Welch's t on the confirmation rows of proc A (log scale), scipy in float64.
  rows = small_df[~cube_env.split_rows(small_df, seed=0) & (small_df.proc == "A")]
  g, r = np.log(rows.minutes[rows.race == "B"]), np.log(rows.minutes[rows.race != "B"])
  t, p = scipy.stats.ttest_ind(g, r, equal_var=False)
  assert row.n_group == len(g) and row.n_rest == len(r)
  assert row.p_value == pytest.approx(p, rel=1e-3, abs=1e-12)
  assert row.z == pytest.approx(np.sign(t) * scipy.stats.norm.isf(p / 2), abs=1e-2)
  assert row.mean_group == pytest.approx(np.exp(g.mean()), rel=1e-4)
  assert row.relative_diff == pytest.approx(np.exp(g.mean() - r.mean()) - 1, rel=1e-3)
  # The relative difference's interval: Welch's interval of the log ratio (scipy), exp, minus one.
  ci = scipy.stats.ttest_ind(g, r, equal_var=False).confidence_interval(0.95)
  assert row.relative_ci_low == pytest.approx(np.exp(ci.low) - 1, rel=2e-3)
  assert row.relative_ci_high == pytest.approx(np.exp(ci.high) - 1, rel=2e-3)
  assert row.relative_ci_low < row.relative_diff < row.relative_ci_high
  assert row.explore_z == pytest.approx(cand[(cand.group == "B") & (cand.measure == "minutes")].z.item(), abs=1e-6)
  np.testing.assert_allclose(out["p_adjusted"], cube_env.benjamini_hochberg(out["p_value"].to_numpy(float))[1])
  assert bool(row.confirmed) and row.reason == "confirmed"
  holm = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0, correction="holm")
  np.testing.assert_allclose(holm["p_adjusted"], confirm.holm(holm["p_value"].to_numpy(float))[1])
  weighted = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0, correction="weighted", tilt=1.0)
  w = confirm.exploration_weights(weighted["explore_z"].to_numpy(float), tilt=1.0)
  np.testing.assert_allclose(weighted["p_adjusted"], confirm.holm(weighted["p_value"].to_numpy(float), weights=w)[1])
  strict = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0, min_relative_diff=5.0)
  assert not strict["confirmed"].any() and strict["reason"].str.contains("relative difference").all()


def test_multiplicative_expected_is_the_main_effects_fit():
  """Two adjusters whose effects multiply: iterative proportional fitting matches every level's observed sum on the
  fitting rows and recovers the rate ratios (0.5 and 3) within sampling error."""
  rng = np.random.default_rng(3)
  n = 40_000
  a, b = rng.integers(0, 3, n), rng.integers(0, 4, n)
  rate = 2.0 * np.array([1.0, 0.5, 2.0])[a] * np.array([1.0, 3.0, 1.0, 0.25])[b]
  v = rng.poisson(rate).astype(float)
  v[:50] = np.nan
  fit = rng.random(n) < 0.5
  levels = np.stack([a, b], axis=1)
  e = adjust.multiplicative_expected(levels, v, fit)
  use = fit & ~np.isnan(v)
  for col in (a, b):
    for level in range(col.max() + 1):
      sel = use & (col == level)
      assert e[sel].sum() == pytest.approx(v[sel].sum(), rel=1e-8)
  assert e[(a == 1) & (b == 0)][0] / e[(a == 0) & (b == 0)][0] == pytest.approx(0.5, rel=0.05)
  assert e[(a == 0) & (b == 1)][0] / e[(a == 0) & (b == 0)][0] == pytest.approx(3.0, rel=0.05)


def test_a_favorable_measure_must_be_binary(small_df):
  """favorable turns a binary measure's event from adverse to good; naming a continuous measure is refused, naming
  it, before any search (it used to be accepted and do nothing, or give NaN relative differences adjusted)."""
  with pytest.raises(ValueError, match="favorable measure 'minutes' is not binary"):
    cube_env.run_discovery(small_df, SMALL_SCHEMA, method="random", budget=5, favorable=("minutes",))
  with pytest.raises(ValueError, match=r"column 'los' \(schema.measures\) is not in the table"):  # named, no KeyError
    cube_env.run_discovery(small_df.drop(columns="los"), SMALL_SCHEMA, method="random", budget=5, favorable=("los",))
  pipeline.check_favorable(("complication",), SMALL_SCHEMA.measures, small_df)  # 0/1 events
  yes_no = small_df.assign(complication=small_df["complication"].map({1.0: "Y", 0.0: "N"}))
  pipeline.check_favorable(("complication",), SMALL_SCHEMA.measures, yes_no)  # read as 1/0, as a run reads it
  # values a caller already read (the service's column check) are the ones judged: the column is not read again
  read = {"minutes": np.array([0.0, 1.0, np.nan])}
  pipeline.check_favorable(("minutes",), SMALL_SCHEMA.measures, small_df, numbers=read)
  with pytest.raises(ValueError, match="'minutes' is not binary"):
    pipeline.check_favorable(("minutes",), SMALL_SCHEMA.measures, small_df, numbers={"los": read["minutes"]})


def test_a_p_value_below_float32s_range_is_given_in_float64_from_z():
  """A gap at |z| about 20: the environment's float32 p underflows to 0, the table's p is 2 Phi(-|z|) in float64
  (scipy), and the ordinary p-values are the environment's."""
  rng = np.random.default_rng(0)
  n = 4000
  df = pd.DataFrame({"site": rng.choice(["a", "b"], n), "race": rng.choice(["A", "B"], n), "los": rng.normal(5, 1, n)})
  df.loc[df.race == "B", "los"] += 1.0
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["los"])
  cube = cube_env.build_cube(df, schema)
  table = cohorts.cohort_table(cube, np.array([[-1, -1], [0, -1]]), z_screen=4.0)  # the root and site a
  big = table[table["z"].abs() > 14]
  assert len(big) and (big["p_value"] > 0).all()
  np.testing.assert_allclose(big["p_value"], 2 * scipy.stats.norm.sf(big["z"].abs()), rtol=1e-9)
  assert cohorts.p_value64(0.0123, 2.5) == 0.0123  # a p in float32's range is kept as it is


def test_a_rates_relative_difference_and_interval_are_never_below_minus_one():
  """An adjusted binary measure's relative difference divides the difference of excess rates by the rest's observed
  rate: a group without events whose expected rate exceeds that rate would read -110%; a rate cannot fall by more
  than all of it (an audit), so it and its interval stop at -1. Other measures are unchanged."""
  row = dict(scale="linear", mean_group=-0.11, mean_rest=0.0, diff=-0.11, ci_low=-0.15, ci_high=-0.07)
  how = dict(adjusted=True, favorable=False, rest_observed=0.10)
  assert confirm.relative_difference(row, **how) == pytest.approx(-1.1)  # a continuous measure: as it is
  assert confirm.relative_difference(row, **how, rate=True) == -1.0
  assert confirm.relative_interval(row, **how, rate=True) == pytest.approx((-1.0, -0.7))
  assert confirm.relative_interval(row, **how) == pytest.approx((-1.5, -0.7))
  # Unadjusted (another audit): a group rate of 0 against the rest's 0.2 is -100%, its normal interval's lower limit
  # -0.22 over 0.2 would read -110%; it stops at -100% too.
  zero = dict(scale="binary", mean_group=0.0, mean_rest=0.2, diff=-0.2, ci_low=-0.22, ci_high=-0.18)
  assert confirm.relative_difference(zero, adjusted=False, favorable=False, rate=True) == pytest.approx(-1.0)
  assert confirm.relative_interval(zero, adjusted=False, favorable=False, rate=True) == pytest.approx((-1.0, -0.9))
  assert confirm.relative_interval(zero, adjusted=False, favorable=False) == pytest.approx((-1.1, -0.9))


def test_an_adjusted_binary_candidate_keeps_the_expected_counts_rule():
  """Adjustment tests a binary measure as excess rates (Welch's z of observed minus expected), which has no
  expected-counts rule: a group with no events reads a large |z| (an audit: 148 of 153 adjusted binary candidates).
  A candidate whose unadjusted exploration rates fail the binary rule is left out of the correction's family (p
  adjusted 1, never confirmed, its z and p not shown), checked by hand on the exploration rows; a planted rate gap
  is still confirmed."""
  rng = np.random.default_rng(5)
  n = 12000
  df = pd.DataFrame(
    {
      "proc": rng.choice(list("ABCD"), n),
      "site": rng.choice(["n", "s", "e"], n),
      "urgency": rng.choice(["elective", "urgent"], n, p=[0.8, 0.2]),
      "race": rng.choice(["W", "B", "A", "O"], n, p=[0.6, 0.25, 0.1, 0.05]),
    }
  )
  rate = np.where(df.urgency == "urgent", 0.10, 0.02) + np.where((df.proc == "A") & (df.race == "B"), 0.12, 0.0)
  df["complication"] = (rng.random(n) < rate).astype(float)
  schema = cube_env.Schema(dimensions=("proc", "site", "urgency"), protected=("race",), measures=("complication",))
  run = cube_env.run_discovery(df, schema, method="exhaustive", budget=10**6, max_depth=2, adjust=("urgency",))
  f = run.findings
  left_out = f[f["reason"] == confirm.RATE_UNTESTED]
  assert len(left_out) >= 3 and not left_out["confirmed"].any() and (left_out["p_adjusted"] == 1.0).all()
  assert (f["proc"] if "proc" in f else f["cohort"]) is not None
  confirmed = f[f["confirmed"].astype(bool)]
  assert any(r.group == "B" and r.filters == {"proc": "A"} for r in confirmed.itertuples())
  # By hand, on the exploration rows: each left-out candidate's unadjusted rates fail min(n1, n2) x min(events,
  # non-events) >= 5 n; a binary candidate kept in the family passes it.
  explore = df[cube_env.split_rows(df, seed=0)]

  def passes(r):
    rows = explore
    for col, value in r.filters.items():
      rows = rows[rows[col] == value]
    g = rows.race == r.group
    n1, n2, events = int(g.sum()), int((~g).sum()), int(rows.complication.sum())
    return min(n1, n2) * min(events, len(rows) - events) >= 5 * len(rows)

  assert not any(passes(r) for r in left_out.itertuples())
  kept = f[f["reason"] != confirm.RATE_UNTESTED]
  assert len(kept) and all(passes(r) for r in kept.itertuples())
  shown = cube_env.shown_findings(f, 11)
  assert shown.loc[shown["reason"] == confirm.RATE_UNTESTED, ["z", "p_value", "p_adjusted"]].isna().all().all()
  # Excess rates (adjusted by difference) have no ratio of means (a review: -0.665 was in the files); either half's.
  assert f["ratio"].isna().all() and f["explore_ratio"].isna().all()


def test_a_measure_with_values_below_zero_has_no_relative_difference_and_is_sized_in_standard_deviations():
  """A change score (a report audit on ACTG 175's cd4_change: means -6.9 and 31.1 read "122% lower", and an interval
  to +6,682%): no relative difference or interval; the size rule reads |smd| >= min_relative_diff instead."""
  rng = np.random.default_rng(5)
  n = 6000
  race = rng.choice(["B", "W"], n, p=[0.3, 0.7])
  change = rng.normal(20.0, 60.0, n) - np.where(race == "B", 25.0, 0.0)  # about 0.4 sd lower, 37% below 0
  df = pd.DataFrame({"proc": rng.choice(["P", "Q"], n), "race": race, "change": change, "minutes": np.abs(change)})
  schema = cube_env.Schema(dimensions=("proc",), protected=("race",), measures=("change", "minutes"))
  halves = cube_env.split_cubes(df, schema, seed=0)
  assert halves.confirm_raw.meta.is_signed == (True, False) == halves.explore.meta.is_signed
  cand = cube_env.cohort_table(halves.explore, [[-1, -1]], z_screen=4.0, only_new=True)
  cand = cand[cand.measure == "change"]
  assert len(cand) == 1
  out = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0)
  row = out.iloc[0]
  assert np.isnan(row.relative_diff) and np.isnan(row.relative_ci_low) and np.isnan(row.relative_ci_high)
  assert bool(row.confirmed) and abs(row.smd) > 0.3, row
  strict = cube_env.confirm_candidates(cand, halves.confirm, z_screen=4.0, min_relative_diff=0.9)
  assert not strict.iloc[0].confirmed
  assert strict.iloc[0].reason == (
    f"standardized difference {abs(row.smd):.2f} below 0.9 (the measure takes values below 0: no relative difference)"
  )
  assert "standardized difference >= 0.1" in confirm.rule_text(
    q=0.05, correction="bh", tilt=2.0, new_z=None, pooled_check=False, mirror_z=None, min_relative_diff=0.1
  )


def test_a_reason_never_reads_its_number_as_the_threshold():
  """A report audit: "relative difference 10.0% below 10%" and "adjusted p 0.05 > 0.05"; more digits instead."""
  kw = dict(q=0.05, min_rel=0.1, correction="holm", new_z=None)
  assert confirm._reason(True, True, True, False, 0.01, -0.09996, True, None, 5.0, **kw) == (
    "relative difference 9.996% below 10%"
  )
  assert confirm._reason(True, True, True, False, 0.01, 0.05, True, None, 5.0, **kw) == (
    "relative difference 5.0% below 10%"
  )
  assert confirm._reason(True, False, True, True, 0.050004, 0.2, True, None, 5.0, **kw) == (
    "not significant after Holm (adjusted p 0.050004 > 0.05)"
  )
  assert confirm._reason(True, True, True, False, 0.01, float("nan"), True, None, 5.0, **kw) == (
    "relative difference undefined (no ratio to the rest's mean or rate)"
  )
  # A limit that is no whole percentage is printed as it is (a review: "12.49% below 12%").
  assert confirm._reason(True, True, True, False, 0.01, 0.1249, True, None, 5.0, **(kw | {"min_rel": 0.125})) == (
    "relative difference 12.49% below 12.5%"
  )
  assert "relative difference >= 2.5% (" in confirm.rule_text(
    q=0.05, correction="bh", tilt=2.0, new_z=None, pooled_check=False, mirror_z=None, min_relative_diff=0.025
  )


def _confounded_table(seed: int, n: int = 6000) -> pd.DataFrame:
  """No gap within any stratum; group B's share runs from 2% to 97% over ten strata that drive both measures."""
  rng = np.random.default_rng(seed)
  s = rng.integers(0, 10, n)
  race = np.where(rng.random(n) < np.linspace(0.02, 0.97, 10)[s], "B", np.where(rng.random(n) < 0.8, "W", "A"))
  minutes = np.exp(np.linspace(3.0, 5.0, 10)[s] + rng.normal(0, 0.5, n))
  event = (rng.random(n) < np.linspace(0.05, 0.6, 10)[s]).astype(float)
  return pd.DataFrame(
    {"proc": rng.choice(["A", "B"], n), "strat": s.astype(str), "race": race, "minutes": minutes, "event": event}
  )


CONFOUNDED = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["minutes", "event"])


def test_adjusted_confirmation_adds_the_variance_of_the_estimated_expectations():
  """A cold audit: the confirmation half's expected values are stratum means estimated on the exploration half,
  and every row of a stratum shares its estimate's error, which Welch's test of the residuals left out: on a
  pure-confounding null 9% (continuous) and 12% (binary) of the tests were rejected at 5%. The test now adds
  sum over strata (group's share - rest's share)^2 x var / n of the stratum's fitting rows, as computed here by hand."""
  df = _confounded_table(0)
  halves = holdout.split_cubes(df, CONFOUNDED, seed=0, adjusters=("strat",))
  cand = pd.DataFrame(
    {
      "filters": [{}, {"proc": "A"}],
      "protected": ["race", "race"],
      "group": ["B", "B"],
      "measure": ["minutes", "event"],
    }
  )
  again = confirm.retest(cand, halves.confirm, min_group=11, z_screen=3.0, max_depth=2)
  extra = confirm.expectation_variances(cand, halves.confirm.meta, halves.expectation)
  new = confirm.with_extra_variance(again, extra)
  fit = holdout.split_rows(df, seed=0)
  s = df["strat"].astype(int).to_numpy()
  for i, (measure, cohort) in enumerate(
    [("minutes", np.ones(len(df), bool)), ("event", df["proc"].eq("A").to_numpy())]
  ):
    v = np.log(df[measure].to_numpy()) if measure == "minutes" else df[measure].to_numpy(float)
    n_s = np.bincount(s[fit], minlength=10)
    mean_s = np.bincount(s[fit], v[fit], 10) / n_s
    var_s = np.array([v[fit & (s == k)].var(ddof=1) for k in range(10)])
    r = v - mean_s[s]
    g, rest = ~fit & cohort & (df["race"] == "B").to_numpy(), ~fit & cohort & (df["race"] != "B").to_numpy()
    share_g, share_r = np.bincount(s[g], minlength=10) / g.sum(), np.bincount(s[rest], minlength=10) / rest.sum()
    by_hand = np.sum((share_g - share_r) ** 2 * var_s / n_s)
    assert extra[i] == pytest.approx(by_hand, rel=1e-9)
    se2 = r[g].var(ddof=1) / g.sum() + r[rest].var(ddof=1) / rest.sum()
    assert by_hand > 0.1 * se2  # the confounded group: a large share of the difference's variance
    t = (r[g].mean() - r[rest].mean()) / np.sqrt(se2 + by_hand)
    assert float(new["p_value"][i]) == pytest.approx(2 * scipy.stats.norm.sf(abs(t)), rel=0.02)  # df in the thousands
    assert float(new["z"][i]) == pytest.approx(t, rel=2e-3)
  unadjusted = confirm.with_extra_variance(again, np.zeros(2))
  pd.testing.assert_frame_equal(unadjusted, again)  # nothing added, nothing changed
  assert confirm.expectation_variances(cand, halves.confirm.meta, None).tolist() == [0.0, 0.0]


def test_an_adjusted_run_confirms_with_the_estimates_variance(monkeypatch):
  """`run_discovery` passes the halves' `expectation` to confirmation: a planted gap's confirmation z is the one
  `with_extra_variance` gives, not Welch's alone. The mirror rule sets Welch's z against its rivals' Welch z (a
  review: the candidate's had the estimates' variance, its rivals' in the cohort's table not)."""
  df = _confounded_table(1)
  df.loc[(df["proc"] == "A") & (df["race"] == "B"), "minutes"] *= 1.5
  seen = []
  mirror_of = confirm.mirror_of
  monkeypatch.setattr(
    confirm, "mirror_of", lambda again, *a, **k: seen.append(again.copy()) or mirror_of(again, *a, **k)
  )
  run = cube_env.run_discovery(df, CONFOUNDED, method="exhaustive", budget=100, max_depth=1, adjust=["strat"], seed=0)
  found = run.findings[run.findings["measure"].eq("minutes") & run.findings["group"].eq("B")]
  assert len(found) and found["confirmed"].any()
  cand = found[["filters", "protected", "group", "measure"]].reset_index(drop=True)
  again = confirm.retest(cand, run.halves.confirm, min_group=11, z_screen=3.0, max_depth=1)
  extra = confirm.expectation_variances(cand, run.halves.confirm.meta, run.halves.expectation)
  assert (extra > 0).all()
  want = confirm.with_extra_variance(again, extra)["z"].astype(float).to_numpy()
  np.testing.assert_allclose(found["z"].astype(float).to_numpy(), want, rtol=1e-9)
  assert not np.allclose(want, again["z"].astype(float).to_numpy(), rtol=1e-3)
  (given,) = seen  # every candidate's z as Welch's, the rivals' scale
  keys = ["cohort", "group", "measure"]
  welch = given[keys + ["z"]].merge(again[keys + ["z"]], on=keys, suffixes=("", "_welch"))
  assert len(welch) == len(again) and np.allclose(welch["z"].astype(float), welch["z_welch"].astype(float))


def test_a_schemas_adjusters_adjust_the_run():
  """A cold audit: `Schema(adjusters=...)` was checked, then left unused without a word (the run unadjusted); they
  now adjust it as `adjust=` does, and naming other adjusters in both places is an error."""
  df = _confounded_table(2, 3000)
  with_schema = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["minutes"], adjusters=["strat"])
  kw = dict(method="exhaustive", budget=100, max_depth=1, seed=0)
  a = cube_env.run_discovery(df, with_schema, **kw)
  b = cube_env.run_discovery(df, dataclasses.replace(with_schema, adjusters=()), adjust=["strat"], **kw)
  assert a.config.adjust == ("strat",) and a.halves.adjusters == ("strat",) and a.halves.expectation is not None
  pd.testing.assert_frame_equal(a.findings.drop(columns="filters"), b.findings.drop(columns="filters"))
  with pytest.raises(ValueError, match=r"the schema's adjusters \['strat'\] differ from adjust \['proc'\]"):
    cube_env.run_discovery(df, with_schema, adjust=["proc"], **kw)
