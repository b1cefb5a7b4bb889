"""Quality benchmark analysis (issue 17): bootstrap and paired intervals against hand computations, summary rows,
family-wise error, the headline tables and the plot. No JAX computation; every number here is worked by hand."""

import itertools
import json
import math

import matplotlib
import numpy as np
import pytest
from PIL import Image

from experiments.quality import plot as qplot
from experiments.quality import tables as qtables
from experiments.quality.pool import json_line
from experiments.quality.power import clopper_pearson
from experiments.quality.suite import SUITE_METHODS
from experiments.quality.summary import best_settings, bootstrap_interval, paired, sign_flip_p, suite_pairs, summarize


def _run(family, method, seed, *, fraction=0.01, budget=None, recall=math.nan, **kw):
  """A run row; budget: a fixed query count (budget_kind 'fixed') instead of `fraction` of 10,000 queries."""
  fixed = budget is not None
  base = dict(
    kind="run",
    suite="t",
    scenario=family,
    family=family,
    split="eval",
    seed=seed,
    method=method,
    budget=budget if fixed else round(fraction * 10000),
    budget_kind="fixed" if fixed else "fraction",
    nominal_fraction=None if fixed else fraction,
    budget_fraction=(budget / 1e6) if fixed else fraction,
    exhaustive_queries=1_000_000 if fixed else 10000,
    applicable=True,
    queries=budget if fixed else round(fraction * 10000),
    rows_scanned=1000,
    seconds=1.0,
    search_seconds=0.5,
    recall=recall,
    n_truth=0 if math.isnan(recall) else 10,
    recalled=[] if math.isnan(recall) else list(range(round(10 * recall))),
    precision=1.0,
    confirmed=1,
    false_confirmed=0,
    family_wise_error=False,
  )
  return dict(base, **kw)


# Three worlds whose values are equally spaced, a, a + h, a + 2h: a resample's mean is a + h s / 3 where s, the sum
# of three draws from {0, 1, 2}, takes 0..6 in 1, 3, 6, 7, 6, 3, 1 of the 27 ordered resamples. Sorted, the 27 means
# are a + h s / 3 at positions 0 | 1-3 | 4-9 | 10-16 | 17-22 | 23-25 | 26. The 2.5% quantile sits at position
# 26 x 0.025 = 0.65, between s = 0 and s = 1: a + 0.65 h / 3; the 97.5% one at 25.35, between s = 5 and s = 6:
# a + 5.35 h / 3.
def _three_spaced(a, h):
  return a + 0.65 * h / 3, a + 5.35 * h / 3


def test_bootstrap_interval_enumerates_the_27_resamples_of_three_worlds():
  low, high = bootstrap_interval([0.0, 0.3, 0.6])
  assert (low, high) == pytest.approx((0.065, 0.535)) and _three_spaced(0.0, 0.3) == pytest.approx((0.065, 0.535))
  assert bootstrap_interval([0.6, 0.0, 0.3], seed=5) == (low, high)  # exact: no draw, no order
  # two worlds at 0.2 and one at 0.5: the mean is 0.2 + 0.1 k, k ~ Binomial(3, 1/3) resamples of the third world:
  # 8, 12, 6, 1 of 27; positions 0.65 (k = 0) and 25.35 (between k = 2 at 25 and k = 3 at 26)
  assert bootstrap_interval([0.2, 0.5, 0.2]) == pytest.approx((0.2, 0.4 + 0.35 * 0.1))
  assert bootstrap_interval([0.7]) == (0.7, 0.7)
  assert np.isnan(bootstrap_interval([])).all()


def test_bootstrap_interval_draws_when_enumeration_is_too_long():
  v = np.array([0.13, 0.91, 0.42, 0.38, 0.77, 0.05])
  means = [v[list(d)].mean() for d in itertools.product(range(6), repeat=6)]  # all 46,656 resamples
  exact = np.quantile(means, [0.025, 0.975])
  assert bootstrap_interval(v, reps=6**6) == pytest.approx(tuple(exact))
  drawn = bootstrap_interval(v, reps=10000, seed=3)
  assert drawn == bootstrap_interval(v, reps=10000, seed=3) != bootstrap_interval(v, reps=10000, seed=4)
  np.testing.assert_allclose(drawn, exact, atol=0.02)


def test_sign_flip_p_against_scipy_and_by_hand():
  """The paired randomization test (a cold audit: 4 worlds better and 16 equal put the bootstrap's low end above 0;
  their smallest two-sided p is 2 / 2**4)."""
  scipy_stats = pytest.importorskip("scipy.stats")
  assert sign_flip_p([0.7] * 4 + [0.0] * 16) == 0.125
  assert sign_flip_p([0.0, 0.0]) == 1.0 and sign_flip_p([]) == 1.0
  # by hand: +0.3, +0.2, -0.1 sum to 0.4; of the 8 patterns |sum| >= 0.4 for (+,+,-), (+,+,+) and their negatives
  assert sign_flip_p([0.3, 0.2, -0.1]) == 0.5
  for zero_sum in ([0.1, 0.2, -0.3], [0.1] * 3 + [-0.3], [0.1, 0.2, 0.3, -0.6]):  # float sums a hair off 0: p is 1
    assert sign_flip_p(zero_sum) == 1.0
  rng = np.random.default_rng(7)
  for v in (rng.normal(0.3, 1.0, 9), np.r_[rng.choice([-0.5, 0.25, 0.5, 1.0], 13), np.zeros(7)]):
    want = scipy_stats.permutation_test(
      (v,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert sign_flip_p(v) == pytest.approx(want, abs=1e-12)
  v = rng.normal(0.2, 1.0, 24)  # 24 nonzero: drawn patterns, reproducible by seed, near scipy's exact p
  want = scipy_stats.permutation_test(
    (v,), np.mean, permutation_type="samples", n_resamples=2**20, alternative="two-sided", random_state=0
  ).pvalue
  assert sign_flip_p(v, seed=1) == sign_flip_p(v, seed=1) == pytest.approx(want, abs=0.01)


def _paired_runs():
  recall = {
    "exhaustive": [1.0, 0.4, 0.7],  # mean 0.7: the leader
    "random": [0.4, 0.1, 0.1],  # mean 0.2
    "greedy": [0.6, 0.6, 0.6],  # mean 0.6: the runner-up
    "beam": [0.9, 0.9],  # mean 0.9 on worlds 0 and 1 only: never the best other of a method run on three worlds
  }
  rows = [_run("standard", m, w, recall=r) for m, rs in recall.items() for w, r in enumerate(rs)]
  rows.append(_run("standard", "uct", 0, applicable=False, note="does not fit"))
  rows += [_run("null", m, w) for m in ("exhaustive", "random") for w in range(3)]  # no truth: no paired row
  rows.append(_run("standard", "greedy", 9, recall=0.0, split="train"))  # a training world: ignored
  return rows


def test_suite_pairs_compare_every_learned_search_the_runs_hold():
  """The `versus` rows come from the runs, not from the methods of the latest call (which may re-run one)."""
  runs = _paired_runs() + [_run("standard", m, w, recall=0.5) for m in ("learned", "muzero") for w in range(3)]
  rows = suite_pairs(runs)
  versus = {r["method"]: r for r in rows if r["kind"] == "versus"}
  # beam ran on worlds 0 and 1 only: the yardstick is the best of all the heuristics, so only those two worlds count
  assert set(versus) == {"learned", "muzero"} and {r["other"] for r in versus.values()} == {"beam"}
  assert versus["muzero"]["diff_mean"] == pytest.approx(0.5 - 0.9)
  assert versus["muzero"]["seeds"] == 2 and versus["muzero"]["worlds_dropped"] == 1
  assert [r for r in rows if r["kind"] == "paired"] == paired(runs)
  assert [r for r in suite_pairs(_paired_runs()) if r["kind"] == "versus"] == []
  table = qtables.versus_table([r for r in rows if r["kind"] == "versus"])  # the worlds paired, of the method's
  cell = table.loc[("standard", "1%"), "muzero"]
  assert cell.startswith("-0.40 [") and cell.endswith("(2 of 3)")


def test_paired_differences_against_a_hand_computation():
  rows = paired(_paired_runs())
  assert all(json.loads(json.dumps(r, allow_nan=False)) == r for r in rows)  # strict JSON lines
  by = {r["method"]: r for r in rows}
  assert set(by) == {"exhaustive", "random", "greedy", "beam"}
  leader = by["exhaustive"]  # over the runner-up, greedy: d = 0.4, -0.2, 0.1 (spaced by 0.3 from -0.2)
  assert leader["other"] == "greedy" and leader["seeds"] == 3
  assert leader["diff_mean"] == pytest.approx(0.1)
  assert (leader["diff_low"], leader["diff_high"]) == pytest.approx(_three_spaced(-0.2, 0.3))
  greedy = by["greedy"]  # over the leader: d = -0.4, 0.2, -0.1
  assert greedy["other"] == "exhaustive" and greedy["diff_mean"] == pytest.approx(-0.1)
  assert (greedy["diff_low"], greedy["diff_high"]) == pytest.approx(_three_spaced(-0.4, 0.3))
  random = by["random"]  # d = -0.6, -0.3, -0.6: two worlds at -0.6 (see the bootstrap test's Binomial case)
  assert random["other"] == "exhaustive" and random["diff_mean"] == pytest.approx(-0.5)
  assert (random["diff_low"], random["diff_high"]) == pytest.approx((-0.6, -0.4 + 0.35 * 0.1))
  beam = by["beam"]  # on its two worlds: exhaustive 0.7 > greedy 0.6 > random 0.25; d = -0.1, 0.5
  assert beam["other"] == "exhaustive" and beam["seeds"] == 2 and beam["diff_mean"] == pytest.approx(0.2)
  # the 4 resamples' means: -0.1, 0.2, 0.2, 0.5; positions 3 x 0.025 = 0.075 and 3 x 0.975 = 2.925
  assert (beam["diff_low"], beam["diff_high"]) == pytest.approx((-0.1 + 0.075 * 0.3, 0.2 + 0.925 * 0.3))
  assert beam["recall_mean"] == pytest.approx(0.9) and beam["other_recall_mean"] == pytest.approx(0.7)
  # and its sign flip: d = -0.1, 0.5, |sum| 0.4; the 4 patterns' sums are +-0.4 and +-0.6, all as far; one world
  # each way
  assert beam["sign_flip_p"] == 1.0 and (beam["worlds_better"], beam["worlds_worse"]) == (1, 1)
  assert {r["budget_key"] for r in by.values()} == {"f0.01"} and leader["family"] == "standard"
  # one method against the best of a few (issue 18's yardstick): greedy against random only, d = 0.2, 0.3, 0.5
  (versus,) = paired(_paired_runs(), method="greedy", among=("random",))
  assert versus["kind"] == "versus" and versus["method"] == "greedy" and versus["other"] == "random"
  assert versus["diff_mean"] == pytest.approx(by["greedy"]["recall_mean"] - by["random"]["recall_mean"])


def test_summary_rows_means_intervals_and_family_wise_error():
  rows = [
    _run("standard", "beam", 0, recall=0.0, queries=90, rows_scanned=5000, seconds=2.0),
    _run("standard", "beam", 1, recall=0.3, queries=100, rows_scanned=7000, seconds=4.0),
    _run("standard", "beam", 2, recall=0.6, queries=80, rows_scanned=6000, seconds=3.0),
    _run("standard", "beam", 3, recall=0.9, split="train"),
    _run("wide", "beam", 0, budget=300, recall=0.5, n_truth=4, recalled=[0, 3]),
    _run("wide", "beam", 1, budget=300, recall=1.0, n_truth=2, recalled=[0, 1]),
    _run("wide", "muzero", 0, budget=300, applicable=False, note="not on this grid"),
    *[_run("null", "beam", w, budget=None, family_wise_error=w == 0, false_confirmed=2 * (w == 0)) for w in range(4)],
  ]
  summary = summarize(rows)
  assert all(json.loads(json.dumps(r, allow_nan=False)) == r for r in summary)  # strict JSON lines
  # Run rows as the benchmark writes them: strict JSON too (a null world's recall, NaN here, is null), read back
  # to the same summary.
  lines = [json_line(r) for r in rows]
  assert all('"recall": null' in line for line in lines[-4:]) and '"recall": 0.3' in lines[1]
  assert summarize([json.loads(line) for line in lines]) == summary
  by = {(s["family"], s["method"], s["budget_key"]): s for s in summary}
  assert set(by) == {
    ("standard", "beam", "f0.01"),
    ("wide", "beam", "q300"),
    ("wide", "muzero", "q300"),
    ("null", "beam", "f0.01"),
  }
  s = by["standard", "beam", "f0.01"]  # the training world is not summarized
  assert s["seeds"] == 3 and s["recall_mean"] == pytest.approx(0.3)
  assert s["recall_std"] == pytest.approx(0.3)
  assert (s["queries_mean"], s["rows_scanned_mean"], s["seconds_mean"]) == pytest.approx((90, 6000, 3.0))
  assert (s["recall_low"], s["recall_high"]) == pytest.approx(_three_spaced(0.0, 0.3))
  assert s["recall_pooled"] == pytest.approx(9 / 30)  # 0 + 3 + 6 of 10 + 10 + 10 planted effects
  assert (s["recall_pooled_low"], s["recall_pooled_high"]) == pytest.approx(clopper_pearson(9, 30))
  w = by["wide", "beam", "q300"]
  assert w["budget_kind"] == "fixed" and w["nominal_fraction"] is None and w["budget"] == 300
  assert w["recall_mean"] == pytest.approx(0.75) and w["recall_pooled"] == pytest.approx(4 / 6)
  assert not by["wide", "muzero", "q300"]["applicable"] and "grid" in by["wide", "muzero", "q300"]["note"]
  n = by["null", "beam", "f0.01"]
  assert n["family_wise_error_rate"] == 0.25 and n["false_confirmed_mean"] == 0.5
  assert (n["fwer_low"], n["fwer_high"]) == pytest.approx(clopper_pearson(1, 4))
  assert n["recall_mean"] is None and n["recall_low"] is None and n["recall_pooled"] is None


def _table_rows():
  rows = []
  for w, (low, high) in enumerate([(0.6, 1.0), (0.8, 0.95), (0.7, 0.9)]):
    rows.append(_run("standard", "exhaustive", w, fraction=0.01, recall=low, seconds=0.5))
    rows.append(_run("standard", "exhaustive", w, fraction=0.05, recall=high, seconds=1.5))
    rows.append(_run("standard", "greedy", w, fraction=0.01, recall=0.5))
    rows.append(_run("standard", "greedy", w, fraction=0.05, recall=0.5))
    rows.append(_run("standard", "greedy", w, fraction=0.2, recall=0.6))
    rows.append(_run("wide", "greedy", w, budget=300, recall=0.95, seconds=2.5))
    rows.append(_run("wide", "greedy", w, budget=100, recall=0.2, seconds=0.7))
    rows.append(_run("wide", "beam", w, budget=300, recall=0.5))
    rows.append(_run("wide", "exhaustive", w, budget=300, applicable=False, note="too large"))
    rows.append(_run("null", "greedy", w, fraction=0.01, family_wise_error=w == 2))
  return rows


def test_headline_tables_cells():
  runs = _table_rows()
  summary = summarize(runs)
  head = qtables.headline(summary)
  assert list(head.columns) == ["standard", "wide"] and list(head.index) == ["exhaustive", "greedy", "beam"]
  assert head.loc["exhaustive", "standard"] == "5% = 500 q, 1.5 s"  # mean recall 0.95 at 5%, 0.7 at 1%
  assert head.loc["greedy", "standard"] == "> 20% (best 0.60)"
  assert head.loc["greedy", "wide"] == "300 q, 2.5 s" and head.loc["exhaustive", "wide"] == "n/a"
  at = qtables.at_budgets(summary)
  assert list(at.index) == [("standard", "1%"), ("standard", "5%"), ("wide", "100 q"), ("wide", "300 q")]
  s = next(r for r in summary if r["method"] == "exhaustive" and r["budget_key"] == "f0.01")
  assert at.loc[("standard", "1%"), "exhaustive"] == f"0.70 [{s['recall_low']:.2f}, {s['recall_high']:.2f}]"
  assert at.loc[("wide", "300 q"), "greedy"] == "0.95 [0.95, 0.95]"
  assert at.loc[("wide", "300 q"), "exhaustive"] == "n/a" and at.loc[("wide", "100 q"), "exhaustive"] == "-"
  pair = qtables.paired_table(paired(runs))
  assert list(pair.index) == [("standard", "1%"), ("standard", "5%"), ("wide", "300 q")]
  assert pair.loc[("standard", "5%"), "leader"] == "exhaustive"
  # exhaustive minus greedy at 5%: 0.5, 0.45, 0.4 (spaced by 0.05 from 0.4)
  low, high = _three_spaced(0.4, 0.05)
  assert pair.loc[("standard", "5%"), "exhaustive"] == f"+0.45 [{low:+.2f}, {high:+.2f}]"
  assert pair.loc[("standard", "5%"), "greedy"] == f"-0.45 [{-high:+.2f}, {-low:+.2f}]"
  assert (
    pair.loc[("wide", "300 q"), "greedy"] == "+0.45 [+0.45, +0.45]"
    and pair.loc[("wide", "300 q"), "leader"] == "greedy"
  )
  assert pair.loc[("standard", "1%"), "beam"] == "-"  # beam did not run there
  fwer = qtables.fwer_table(summary)
  k_low, k_high = clopper_pearson(1, 3)
  assert fwer.loc[("null", "1%"), "greedy"] == f"0.33 [{k_low:.2f}, {k_high:.2f}]"
  text = qtables.headline_tables(summary, suite_name="t", wall_s=120.0, calls=1, device_kind="cpu", pairs=paired(runs))
  assert "| exhaustive | 5% = 500 q, 1.5 s | n/a |" in text and "paired per world" in text and "2.0 min" in text
  assert "paired" not in qtables.headline_tables(summary, suite_name="t", wall_s=1.0, calls=1, device_kind="cpu")
  null = [r for r in summary if r["family"] == "null"]  # a suite of truthless worlds: the FWER table alone
  text = qtables.headline_tables(
    null,
    suite_name="t",
    wall_s=1.0,
    calls=1,
    device_kind="cpu",
    pairs=paired([r for r in runs if r["family"] == "null"]),
  )
  assert "recall" not in text and f"| null | 1% | 0.33 [{k_low:.2f}, {k_high:.2f}] |" in text


def test_plot_panels_per_family_against_queries_and_seconds(tmp_path):
  summary = summarize(_table_rows())
  path = tmp_path / "p.png"
  fig = qplot.plot(summary, str(path), title="t")
  with Image.open(path) as image:
    assert image.size == (round(3.6 * 3 * 110), round(6.6 * 110))  # three families, two rows
  axes = np.array(fig.axes[:6]).reshape(2, 3)
  assert [ax.get_title() for ax in axes[0]] == ["standard", "wide", "null"]
  greedy = {ax: next(line for line in ax.get_lines() if line.get_label() == "greedy") for ax in axes.flat}
  np.testing.assert_allclose(greedy[axes[0, 0]].get_xdata(), [100, 500, 2000])  # mean queries spent
  np.testing.assert_allclose(greedy[axes[0, 0]].get_ydata(), [0.5, 0.5, 0.6])
  np.testing.assert_allclose(greedy[axes[1, 1]].get_xdata(), [0.7, 2.5])  # wide: mean seconds
  np.testing.assert_allclose(greedy[axes[1, 2]].get_ydata(), [1 / 3])  # null: family-wise error rate
  assert len({line.get_color() for line in greedy.values()}) == 1
  assert all(ax.get_xscale() == "log" for ax in axes.flat)


def test_plot_gives_every_suite_method_a_colour_of_its_own():
  """The suite's eleven methods and a few extra ones: no two share a colour (tab10's cycle gave pysubgroup-dfs
  exhaustive's blue); the first ten keep tab10's colours."""
  methods = [*SUITE_METHODS, "learned@depth=0", "muzero@mode=episodes"]
  colours = [qplot.colour(m, methods) for m in methods]
  assert len(set(colours)) == len(methods)
  tab10 = [matplotlib.colors.to_rgb(f"C{i}") for i in range(10)]
  np.testing.assert_allclose(colours[:10], tab10)


def test_best_settings_picks_the_best_mean_recall_on_common_runs_ties_to_defaults():
  rows = []
  for seed in (1, 2):
    for fraction in (0.005, 0.05, 0.2):  # 0.2 lies outside the sweep's window
      big = 0.9 if fraction == 0.2 else 0.5
      rows += [
        _run("standard", "beam", seed, fraction=fraction, recall=0.4, split="train"),
        _run("standard", "beam@width=16", seed, fraction=fraction, recall=0.6 if seed == 1 else 0.5, split="train"),
        _run("standard", "beam@width=32", seed, fraction=fraction, recall=big, split="train"),
        _run("standard", "uct", seed, fraction=fraction, recall=0.3, split="train"),
        _run("standard", "uct@exploration=2.0", seed, fraction=fraction, recall=0.3, split="train"),
        _run("null", "uct@exploration=0.5", seed, fraction=fraction, recall=1.0, split="train"),  # truthless
      ]
  rows.append(_run("masked", "beam@width=16", 3, fraction=0.01, recall=0.0, split="train"))  # not run by the others
  rows.append(_run("standard", "beam@width=4", 1, fraction=0.01, recall=1.0))  # evaluation split: never used
  choice = {r["method"]: r for r in best_settings(rows)}
  assert set(choice) == {"beam", "uct"}
  assert choice["beam"]["chosen"] == "beam@width=16" and choice["beam"]["options"] == [("width", 16)]
  assert choice["beam"]["recall_mean"] == pytest.approx(0.55)  # (0.6 + 0.6 + 0.5 + 0.5) / 4
  assert choice["beam"]["candidates"]["beam@width=32"] == {"recall_mean": pytest.approx(0.5), "runs": 4}
  assert choice["uct"]["chosen"] == "uct" and choice["uct"]["options"] == []  # a tie goes to the defaults
