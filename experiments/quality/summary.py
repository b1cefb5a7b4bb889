"""Numbers from the quality benchmark's run rows (issue 17): per (family, method, budget) over worlds, and paired.

A world is one generated table: a (family, seed) pair. A budget is a key:
`f<fraction>` where enumeration is feasible (the nominal fraction of
enumeration's query count, `budget_kind="fraction"`), `q<queries>` on the
fixed-budget families (`budget_kind="fixed"`: wide, deep; the older `large`);
rows from before nominal fractions get `r<fraction>`. Only one split's worlds
are summarized (default the evaluation worlds; a row without `split` is one).
Intervals over worlds are percentile bootstraps (`bootstrap_interval`), over
pooled counts Clopper-Pearson (`experiments.quality.power.clopper_pearson`).
See docs/design.md, Discovery and confirmation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from experiments.quality.power import clopper_pearson
from experiments.quality.suite import (
  HEURISTICS,
  LEARNED_SEARCHES,
  SUITE_METHODS,
  SUITE_SCENARIOS,
  SWEEP,
  TRUTHLESS,
  parse_variant,
)

LEVEL = 0.95  # of every interval
# Display order: issue 17's families, then the scenarios of older suites.
FAMILY_ORDER = tuple(dict.fromkeys(("standard", "wide", "deep", "masked", "null", "confounded", *SUITE_SCENARIOS)))
# Per-world quantities whose mean (and sample standard deviation) over worlds a summary row carries.
MEANS = (
  "recall",
  "recall_of_oracle",
  "precision",
  "confirmed",
  "false_confirmed",
  "queries",
  "rows_scanned",
  "seconds",
  "search_seconds",
  "candidate_recall",
)


def run_frame(rows: Iterable[dict], *, split: str = "eval") -> pd.DataFrame:
  """The run rows of `split`, one per (world, method, budget), with `family`, `budget_kind`, `nominal_fraction`
  and `budget_key` filled in for older rows (family = scenario; fixed budgets on `large`) and every column of
  `MEANS` present (NaN where a row lacks it)."""
  runs = pd.DataFrame([r for r in rows if r.get("kind") == "run" and (r.get("split") or "eval") == split])
  if runs.empty:
    return runs
  family = runs["family"] if "family" in runs else pd.Series(None, index=runs.index, dtype=object)
  runs["family"] = family.where(family.notna(), runs["scenario"])
  nominal = runs.get("nominal_fraction", pd.Series(np.nan, index=runs.index)).astype(float)
  runs["nominal_fraction"] = nominal
  kind = runs["budget_kind"] if "budget_kind" in runs else pd.Series(None, index=runs.index, dtype=object)
  runs["budget_kind"] = [
    k if isinstance(k, str) else "fraction" if pd.notna(f) or s != "large" else "fixed"
    for k, f, s in zip(kind, nominal, runs["scenario"])
  ]
  runs["budget_key"] = [
    f"f{f:g}" if pd.notna(f) else f"q{b}" if k == "fixed" else f"r{x:.2f}"
    for f, b, k, x in zip(nominal, runs["budget"], runs["budget_kind"], runs["budget_fraction"])
  ]
  runs["applicable"] = runs["applicable"].astype(bool)
  for col in MEANS:
    runs[col] = pd.to_numeric(runs[col], errors="coerce") if col in runs else np.nan
  runs["recall_of_oracle"] = _recall_of_oracle(runs)
  return runs


def bootstrap_interval(
  values: Iterable[float], *, reps: int = 10000, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `values`, one per world (Efron & Tibshirani 1993, ch. 13).

  A resample draws n worlds from the n with replacement; there are n**n equally
  likely ordered draws. When n**n <= `reps` every one of them is taken (the
  interval is exact, no randomness); otherwise `reps` draws come from
  `numpy.random.default_rng(seed)`. The bounds are the (1 - level) / 2 and
  (1 + level) / 2 quantiles of the resample means (numpy's default linear
  interpolation). (nan, nan) for no value.
  """
  v = np.asarray(list(values), float)
  n = len(v)
  if n == 0:
    return math.nan, math.nan
  if n**n <= reps:
    draws = np.indices((n,) * n).reshape(n, -1).T  # [n**n, n]: every ordered draw
  else:
    draws = np.random.default_rng(seed).integers(0, n, size=(reps, n))
  tail = (1.0 - level) / 2
  low, high = np.quantile(v[draws].mean(axis=1), [tail, 1.0 - tail])
  return float(low), float(high)


EXACT_SIGNS = 20  # sign_flip_p enumerates every sign pattern up to this many nonzero differences (2**20 patterns)


def sign_flip_p(values: Iterable[float], *, reps: int = 100_000, seed: int = 0) -> float:
  """Two-sided p of the paired randomization test of a mean difference of 0 (Fisher's sign flip): under the null
  that the two methods' labels are exchangeable within each world, each d(w) is as likely -d(w), and p is the share
  of the 2**m sign patterns of the m nonzero differences whose |sum| is at least the observed |sum| (a world with
  d(w) = 0 adds nothing either way). Exact for m <= `EXACT_SIGNS`; above, `reps` patterns drawn from
  `numpy.random.default_rng(seed)` with the observed one counted, (1 + hits) / (1 + reps). 1.0 for no nonzero value.

  Why beside `bootstrap_interval`: with 20 worlds of which most differ by exactly 0, the percentile bootstrap's
  interval excludes 0 too easily (a cold audit of the benchmark's statistics: 4 worlds better and 16 equal put its
  low end above 0 whenever a resample holds one of the 4, in 98.8% of resamples; the sign flip gives p = 0.125, the
  smallest two-sided p that 4 differences can give). Matches `scipy.stats.permutation_test` with
  `permutation_type='samples'` on one sample (tests/test_quality_summary.py).
  """
  v = np.asarray(list(values), float)
  v = v[v != 0]
  m = len(v)
  if m == 0:
    return 1.0
  # "At least as far" up to the rounding of a float sum: a tolerance on the scale of the values, not of the sum (a
  # review: [0.1, 0.2, -0.3] sums to 5.6e-17, which a relative one counted as beyond the patterns summing to 0).
  observed = abs(v.sum()) - 1e-9 * np.abs(v).sum()
  if m <= EXACT_SIGNS:

    def pattern_sums(part: np.ndarray) -> np.ndarray:  # [2**len(part)]: the sum of every sign pattern of `part`
      bits = (np.arange(2 ** len(part))[:, None] >> np.arange(len(part))) & 1
      return (1 - 2 * bits) @ part

    # the first half's pattern sums against the second's, a block at a time: all 2**m sums in small memory
    hits, low_sums = 0, pattern_sums(v[: m // 2])
    for h in pattern_sums(v[m // 2 :]):
      hits += int(np.count_nonzero(np.abs(low_sums + h) >= observed))
    return hits / 2**m
  signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(reps, m))
  hits = int(np.count_nonzero(np.abs(signs @ v) >= observed))
  return (1 + hits) / (1 + reps)


def summarize(rows: Iterable[dict], *, reps: int = 10000, seed: int = 0, split: str = "eval") -> list[dict]:
  """One `summary` row per (family, method, budget key) over the worlds of `split`.

  Fields: the budget (`budget`, `budget_fraction`: means over worlds of the
  queries allowed and of budget / enumeration's queries; `nominal_fraction`,
  `budget_kind`, `budget_key`), `seeds` (runs), `applicable`; then, over the
  applicable runs, `<x>_mean` and `<x>_std` for each x of `MEANS` (None
  without a value; std None for one world), `recall_low`/`recall_high` (the
  mean recall's `bootstrap_interval` over worlds with `reps` and `seed`),
  `recall_pooled` (planted effects recalled / planted over all worlds) with
  its Clopper-Pearson `recall_pooled_low`/`recall_pooled_high`, and
  `family_wise_error_rate` (worlds with any false confirmed finding / worlds;
  meaningful on truthless families) with `fwer_low`/`fwer_high`.
  """
  runs = run_frame(rows, split=split)
  if runs.empty:
    return []
  return [
    _summary_row(g, split=split, reps=reps, seed=seed)
    for _, g in runs.groupby(["family", "method", "budget_key"], sort=False)
  ]


def _summary_row(g: pd.DataFrame, *, split: str, reps: int, seed: int) -> dict:
  first = g.iloc[0]
  ok = g[g["applicable"]]
  row = dict(
    kind="summary",
    suite=first["suite"],
    split=split,
    family=first["family"],
    scenario=first["family"],  # the name before issue 17
    method=first["method"],
    budget_key=first["budget_key"],
    budget_kind=first["budget_kind"],
    budget=float(g["budget"].mean()),
    budget_fraction=round(float(g["budget_fraction"].mean()), 4),
    nominal_fraction=_or_none(first["nominal_fraction"]),
    seeds=int(len(g)),
    applicable=bool(len(ok)),
  )
  if not len(ok):
    row["note"] = str(first.get("note", ""))
    return row
  for col in MEANS:
    v = ok[col].to_numpy(float)
    finite = v[np.isfinite(v)]
    row[f"{col}_mean"] = float(finite.mean()) if len(finite) else None
    row[f"{col}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else None
  recall = ok["recall"].to_numpy(float)
  low, high = bootstrap_interval(recall[np.isfinite(recall)], reps=reps, seed=seed)
  row.update(recall_low=_or_none(low), recall_high=_or_none(high))
  recalled, planted = _planted(ok)
  low, high = clopper_pearson(recalled, planted)
  row.update(
    recall_pooled=recalled / planted if planted else None,
    recall_pooled_low=_or_none(low),
    recall_pooled_high=_or_none(high),
  )
  errors = ok["family_wise_error"].eq(True)  # a missing value is no error
  low, high = clopper_pearson(int(errors.sum()), len(errors))
  row.update(family_wise_error_rate=float(errors.mean()), fwer_low=low, fwer_high=high)
  return row


def _planted(ok: pd.DataFrame) -> tuple[int, int]:
  """Planted effects recalled and planted, summed over the worlds with a truth (recalled: the `recalled` list,
  else recall x n_truth)."""
  if "n_truth" not in ok:
    return 0, 0
  k = n = 0
  for r in ok.itertuples():
    if pd.notna(r.n_truth) and r.n_truth > 0 and np.isfinite(r.recall):
      got = getattr(r, "recalled", None)
      k += len(got) if isinstance(got, list) else round(r.recall * r.n_truth)
      n += int(r.n_truth)
  return k, n


def _recall_of_oracle(runs: pd.DataFrame) -> np.ndarray:
  """Share of the planted effects that exhaustive search with the whole budget confirmed (same world) that a run
  confirmed too; NaN where there is no such effect or no such exhaustive run."""
  if "recalled" not in runs.columns:
    return np.full(len(runs), np.nan)
  full = runs[(runs["method"] == "exhaustive") & (runs["budget_fraction"] >= 1.0) & runs["applicable"]]
  oracle = {(r.family, r.seed): set(r.recalled) for r in full.itertuples() if isinstance(r.recalled, list)}
  out = []
  for r in runs.itertuples():
    want = oracle.get((r.family, r.seed))
    got = r.recalled if isinstance(r.recalled, list) else None
    out.append(len(want & set(got)) / len(want) if want and got is not None else np.nan)
  return np.asarray(out, float)


def paired(
  runs: Iterable[dict],
  *,
  reps: int = 10000,
  seed: int = 0,
  split: str = "eval",
  method: str | None = None,
  among: Iterable[str] | None = None,
) -> list[dict]:
  """Each method's recall minus the best other method's, paired per world: one `paired` row per (family, budget
  key, method).

  With `method` and `among` (issue 18's yardstick: `learned` against the best heuristic), only `method`'s rows,
  its best other taken among `among`; those rows are of kind `versus`. There W is cut to the worlds where every
  method of `among` that ran at that family and budget has a finite recall (the best of all of them, never of
  whichever happened to run: a call stopped part-way leaves worlds some methods did not reach), and
  `worlds_dropped` counts the worlds of `method` left out so.

  Definition. At a family and budget key, let W be the worlds where method m
  has an applicable run with a finite recall r_m(w) (worlds with planted
  effects). The methods eligible against m are the others with a finite
  recall on every world of W; the best other, o, is the eligible method with
  the highest mean recall over W (ties: the first in `SUITE_METHODS` order,
  then by name). The paired difference is d(w) = r_m(w) - r_o(w) for w in W;
  the row gives `diff_mean` (the mean of d over W) and `diff_low`/`diff_high`,
  the percentile bootstrap 95% interval of that mean over worlds
  (`bootstrap_interval(d, reps=reps, seed=seed)`: worlds resampled with
  replacement, exact when |W|**|W| <= reps); `sign_flip_p`, the paired
  randomization test's two-sided p (`sign_flip_p(d, seed=seed)`, the stricter
  reading where most worlds differ by 0), and `worlds_better` / `worlds_worse`,
  the worlds where d > 0 / d < 0. For the method with the highest
  mean recall, o is the runner-up and d >= 0 on average; for every other
  method, o is the leader (when it covers W). A method with no eligible other
  has no row. Also: `other` (o), `recall_mean` and `other_recall_mean` (over
  W), `seeds` (|W|), and the budget fields of `summarize`'s rows.
  """
  frame = run_frame(runs, split=split)
  if frame.empty:
    return []
  wanted = None if among is None else set(among)
  ok = frame[frame["applicable"] & np.isfinite(frame["recall"])]
  out = []
  for (family, key), g in ok.groupby(["family", "budget_key"], sort=False):
    recall = g.pivot_table(index="seed", columns="method", values="recall", aggfunc="mean")  # [worlds, methods]
    methods = sorted(recall.columns, key=lambda m: (_rank(m), m))
    budget = dict(
      suite=g["suite"].iloc[0],
      split=split,
      family=family,
      budget_key=key,
      budget_kind=g["budget_kind"].iloc[0],
      budget=float(g["budget"].mean()),
      budget_fraction=round(float(g["budget_fraction"].mean()), 4),
      nominal_fraction=_or_none(g["nominal_fraction"].iloc[0]),
    )
    pool = methods if among is None else [o for o in methods if o in wanted]
    for m in methods if method is None else [m for m in methods if m == method]:
      here = recall[recall[m].notna()]
      if among is None:
        others = [o for o in pool if o != m and here[o].notna().all()]
        dropped = 0
      else:  # the best of all of `among` that ran here, on the worlds where every one of them ran
        others = [o for o in pool if o != m]
        complete = here[others].notna().all(axis=1)
        here, dropped = here[complete], int((~complete).sum())
      if not others or here.empty:
        continue
      best = max(others, key=lambda o: here[o].mean())  # the first of equals, in `methods` order
      d = (here[m] - here[best]).to_numpy(float)
      low, high = bootstrap_interval(d, reps=reps, seed=seed)
      out.append(
        dict(
          kind="paired" if method is None else "versus",
          **budget,
          method=m,
          other=best,
          seeds=int(len(d)),
          recall_mean=float(here[m].mean()),
          other_recall_mean=float(here[best].mean()),
          diff_mean=float(d.mean()),
          diff_low=low,
          diff_high=high,
          sign_flip_p=sign_flip_p(d, seed=seed),
          worlds_better=int(np.count_nonzero(d > 0)),
          worlds_worse=int(np.count_nonzero(d < 0)),
          **({} if method is None else dict(worlds_dropped=dropped)),
        )
      )
  return out


def _rank(method: str) -> int:
  return SUITE_METHODS.index(method) if method in SUITE_METHODS else len(SUITE_METHODS)


def _or_none(x) -> float | None:
  """A float, or None for a missing value (JSON has no NaN)."""
  return None if x is None or pd.isna(x) else float(x)


def in_order(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
  """Distinct names, those in `order` first in its order, then the others as they come."""
  names = list(dict.fromkeys(names))
  return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))


SWEEP_FRACTIONS = (0.005, 0.01, 0.05)  # budgets where the settings are chosen (where methods differ)
SWEEP_FIXED = (300, 1000)  # the same on fixed-budget families


def sweep_window(rows: Iterable[dict], *, split: str = "train") -> pd.DataFrame:
  """`run_frame` rows where settings are chosen: budgets of `SWEEP_FRACTIONS` / `SWEEP_FIXED`, applicable runs,
  families with planted effects."""
  runs = run_frame(rows, split=split)
  if runs.empty:
    return runs
  window = runs["nominal_fraction"].isin(SWEEP_FRACTIONS) | (
    (runs["budget_kind"] == "fixed") & runs["budget"].isin(SWEEP_FIXED)
  )
  return runs[window & runs["applicable"].astype(bool) & ~runs["family"].isin(TRUTHLESS)]


def best_settings(rows: Iterable[dict], *, split: str = "train") -> list[dict]:
  """One `sweep_choice` row per swept method: the setting (`suite.SWEEP` variant, or the method's defaults) with the
    best mean recall over the worlds and budgets of `SWEEP_FRACTIONS` / `SWEEP_FIXED`, ties to the defaults, then to
    the first swept; with every candidate's mean recall and its number of runs. Planted families only; compared on the
  (world, budget) runs every candidate has (a sweep cut short compares like with like)."""
  runs = sweep_window(rows, split=split)
  if runs.empty:
    return []
  out = []
  for base, variants in SWEEP.items():
    names = [base] + [n for n in in_order(runs["method"], ()) if n.partition("@")[0] == base and n != base]
    keyed = {n: runs[runs["method"] == n].set_index(["family", "seed", "budget_key"])["recall"] for n in names}
    keyed = {n: r for n, r in keyed.items() if len(r)}
    if not keyed:
      continue
    keyed = {n: r[~r.index.duplicated()] for n, r in keyed.items()}  # a row run twice counts once
    common = functools.reduce(lambda a, b: a.intersection(b), [r.index for r in keyed.values()])
    if len(common) == 0:  # no run that every setting has: nothing to compare
      continue
    scores = {n: (float(r.loc[common].astype(float).mean()), len(common)) for n, r in keyed.items()}
    best = max(scores, key=lambda n: (round(scores[n][0], 9), n == base, -names.index(n)))
    out.append(
      dict(
        kind="sweep_choice",
        method=base,
        chosen=best,
        options=sorted(parse_variant(best)[1].items()),
        recall_mean=scores[best][0],
        candidates={n: {"recall_mean": s, "runs": k} for n, (s, k) in scores.items()},
        families=sorted(runs["family"].unique()),
        split=split,
        swept=len(variants),
      )
    )
  return out


def suite_pairs(runs: Iterable[dict], *, split: str = "eval") -> list[dict]:
  """`paired` rows of every method, then issue 18's `versus` rows (each learned search against the best
  heuristic) for every learned search the runs hold, whichever methods the latest call ran: a call that
  re-runs one method keeps the others' comparisons."""
  runs = list(runs)
  present = {r.get("method") for r in runs}
  pairs = paired(runs, split=split)
  for method in LEARNED_SEARCHES:
    if method in present:
      pairs += paired(runs, split=split, method=method, among=HEURISTICS)
  return pairs
