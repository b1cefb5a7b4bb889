"""Scoring reported findings against planted truth (docs/design.md, What a finding is).

A planted effect is *recalled* when a new finding with the same (protected,
group, measure) and sign is reported at exactly its cohort. A reported
finding is *false* when no planted effect with the same (protected, group,
measure) and sign sits at its cohort, an ancestor of it or a descendant of it,
or (when the cube is given) holds at least half of its rows
(`OVERLAP_TRUE`): with a liberal screen, a sibling that mostly contains a
planted cohort is confirmed too, and it tells the same story.
For a protected column with two groups only one group is tested; the finding
"group a, sign s" is the same hypothesis as "group b, sign -s", and scoring
treats it so (via the finding's `reference` column). A column with two groups
and a few other rows (missing values, a rare category) tests both groups, each
against its rest; when the cube is given, "group h, sign -s" counts as the
planted "group g, sign s" at a cohort where the other rows with the measure
are fewer than `SMALL_CELL` or at most `OTHER_SIDE_SHARE` (5%) of g's and h's
(`other_side`): the same comparison read from its other side, and
confirmation's mirror check may keep either one.

Ancestor and descendant are read from the filters (one filter set contains
the other) and, when the cube is given, also from the rows: a cohort whose
cells all lie inside another's is its descendant even with other filters
(procedure=cataract_extraction lies inside service_line=ophthalmology).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cube_env.data.disclosure import SMALL_CELL

# A near-binary column's other side (`score_findings`' `other_side`): the other rows may be this share of the two
# groups' at most (or fewer than SMALL_CELL). Up to 2026-12-07 only the SMALL_CELL floor (rule "other_side"): a cold
# audit found a root plant on a two-group column with 96 missing rows among ~5,000 (standard world 7) scored as
# missed, and its other side as a false finding, by every method (confirmation's mirror check kept the other side).
OTHER_SIDE_SHARE = 0.05
# The default rule's name, as benchmark rows record it (`scoring`); rows without one predate "other_side", the
# rule of 2026-12-04 (the SMALL_CELL floor alone; `RULES`).
RULE = "other_side_share"
RULES = {"other_side": {"other_side": True, "other_side_share": 0.0}, RULE: {"other_side": True}}
OVERLAP_TRUE = 0.5  # a finding whose cohort has at least this share of its rows inside a planted cohort is true


def _get(effect: Any, name: str):
  return effect[name] if isinstance(effect, Mapping) else getattr(effect, name)


def _norm(cohort: Mapping) -> dict[str, str]:
  return {str(k): str(v) for k, v in dict(cohort).items()}


def _same_test(row: Mapping, effect: Any) -> bool:
  if row["protected"] != _get(effect, "protected") or row["measure"] != _get(effect, "measure"):
    return False
  sign = np.sign(_get(effect, "effect"))
  row_sign = np.sign(row["z"])
  group = str(_get(effect, "group"))
  if str(row["group"]) == group and row_sign == sign:
    return True
  return str(row.get("reference", "rest")) == group and row_sign == -sign


def _mirror(row: Mapping, effect: Any) -> bool:
  """Another group of the planted column, opposite sign: its rest holds the planted group (same story, mirrored; on a
  near-binary column, the other side of the same comparison, see `score_findings`' `other_side`)."""
  if row["protected"] != _get(effect, "protected") or row["measure"] != _get(effect, "measure"):
    return False
  return str(row["group"]) != str(_get(effect, "group")) and np.sign(row["z"]) == -np.sign(_get(effect, "effect"))


def _pair_and_others(cube, mask, protected: str, groups: tuple[str, str], measure: str) -> tuple[float, float]:
  """(rows of the two `groups`, rows of other protected values) of the cohort `mask` with the measure; (0, inf)
  where unknown (a column, measure or group the cube lacks, or no row of the two groups here)."""
  meta = cube.meta
  if protected not in meta.filter_names or measure not in meta.measure_names:
    return 0.0, float("inf")
  f = meta.column_index(protected)
  cats = meta.categories[f]
  if any(g not in cats for g in groups):
    return 0.0, float("inf")
  codes = np.asarray(cube.codes)[:, f]
  n = np.asarray(cube.stats[:, meta.measure_names.index(measure), 0], np.float64)
  pair = (codes == cats.index(groups[0])) | (codes == cats.index(groups[1]))
  in_pair = float(n[mask & pair].sum())
  if not in_pair > 0:  # no row of the two groups here (a cohort of another cube): nothing to read
    return 0.0, float("inf")
  return in_pair, float(n[mask & ~pair].sum())


def other_side_holds(in_pair: float, others: float, share: float = OTHER_SIDE_SHARE) -> bool:
  """Whether one group against its rest is the other group against its rest read from the other side: the rows
  outside the two groups are fewer than `SMALL_CELL` or at most `share` of the two groups' rows."""
  return others < SMALL_CELL or others <= share * in_pair


def _related(a: dict, b: dict) -> bool:
  """a is b, an ancestor of b, or a descendant of b (filter sets nested)."""
  items_a, items_b = set(a.items()), set(b.items())
  return items_a <= items_b or items_b <= items_a


def _cell_mask(cube, cohort: dict) -> np.ndarray:
  meta = cube.meta
  codes = np.asarray(cube.codes)
  mask = np.ones(codes.shape[0], bool)
  for name, label in cohort.items():
    f = meta.column_index(name)
    cats = meta.categories[f]
    mask &= codes[:, f] == (cats.index(label) if label in cats else -99)
  return mask


def score_findings(
  findings: pd.DataFrame,
  truth: Iterable[Any],
  *,
  only_new: bool = True,
  cube=None,
  mirror: bool = False,
  other_side: bool = True,
  other_side_share: float = OTHER_SIDE_SHARE,
) -> dict:
  """Recall and precision of reported findings against planted effects.

  Args:
    findings: rows with columns filters (dict), protected, group, measure, z,
      and optionally reference and new.
    truth: planted effects with cohort (dict), protected, group, measure and
      effect (its sign counts).
    only_new: score only rows with `new` True (the reported findings).
    cube: optional; if given, cohorts whose cells nest count as ancestor or
      descendant even when their filters differ, and a finding whose cohort
      has at least `OVERLAP_TRUE` of its rows inside a planted cohort is true.
    mirror: also count as true a finding for another group of a planted
      effect's protected column with the opposite sign, at a related cohort
      (the planted group sits in its rest: when one group's rate is lowered,
      the others' is higher than their rest's). Off by default: issue 16's
      precision counts them false; benchmarks report both.
    other_side: with the cube, a finding for another group h of a planted
      effect's column, opposite sign, counts as that effect's own test (it
      recalls it at its cohort, and is not false at a related one) where, in
      the finding's cohort, the measure's rows outside the planted group and h
      are fewer than `SMALL_CELL` or at most `other_side_share` of theirs
      (`other_side_holds`): h against its rest is then the planted group
      against its rest, read from the other side (on a near-binary column both
      are tested, and confirmation's mirror check may keep either). False
      reproduces the rule before 2026-12-04; `other_side_share=0` the rule of
      2026-12-04 to 2026-12-07 ("other_side", `RULES`).

  Returns:
    dict with recall (nan when there is no truth), precision (nan when nothing
    is reported), n_truth, n_reported, n_recalled, n_false, matched (one row
    per planted effect with `recalled`), and false (the false findings).
  """
  truth = list(truth)
  rows = findings
  if only_new and "new" in rows.columns:
    rows = rows[rows["new"].astype(bool)]
  rows = rows.reset_index(drop=True)
  recs = rows.to_dict("records")
  cohorts = [_norm(r["filters"]) for r in recs]
  cache: dict = {}

  def mask_of(c: dict) -> np.ndarray:
    key = tuple(sorted(c.items()))
    if key not in cache:
      cache[key] = _cell_mask(cube, c)
    return cache[key]

  def same(r: Mapping, c: dict, effect: Any) -> bool:
    """r tests `effect`'s hypothesis at its own cohort c (directly, via its reference, or from the other side)."""
    if _same_test(r, effect):
      return True
    if not (other_side and cube is not None and _mirror(r, effect)):
      return False
    pair = (str(_get(effect, "group")), str(r["group"]))
    in_pair, others = _pair_and_others(cube, mask_of(c), str(r["protected"]), pair, str(r["measure"]))
    return other_side_holds(in_pair, others, other_side_share)

  recalled = []
  for effect in truth:
    target = _norm(_get(effect, "cohort"))
    recalled.append(any(c == target and same(r, c, effect) for r, c in zip(recs, cohorts)))

  def related(a: dict, b: dict) -> bool:
    if _related(a, b):
      return True
    if cube is None:
      return False
    ma, mb = mask_of(a), mask_of(b)
    if not (mb.any() and ma.any()):
      return False
    if not (mb & ~ma).any() or not (ma & ~mb).any():
      return True
    rows = np.asarray(cube.rows, np.float64)
    return bool(rows[ma & mb].sum() >= OVERLAP_TRUE * rows[ma].sum())

  false_mask = []
  for r, c in zip(recs, cohorts):
    ok = any((same(r, c, e) or (mirror and _mirror(r, e))) and related(c, _norm(_get(e, "cohort"))) for e in truth)
    false_mask.append(not ok)
  matched = pd.DataFrame(
    {
      "cohort": [_norm(_get(e, "cohort")) for e in truth],
      "protected": [_get(e, "protected") for e in truth],
      "group": [_get(e, "group") for e in truth],
      "measure": [_get(e, "measure") for e in truth],
      "effect": [float(_get(e, "effect")) for e in truth],
      "recalled": recalled,
    }
  )
  n_rep = len(recs)
  n_false = int(np.sum(false_mask)) if false_mask else 0
  return {
    "recall": float(np.mean(recalled)) if truth else float("nan"),
    "precision": 1.0 - n_false / n_rep if n_rep else float("nan"),
    "n_truth": len(truth),
    "n_reported": n_rep,
    "n_recalled": int(np.sum(recalled)),
    "n_false": n_false,
    "matched": matched,
    "false": rows[np.asarray(false_mask, bool)] if n_rep else rows,
  }
