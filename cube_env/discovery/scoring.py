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
treats it so (via the finding's `reference` column).

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
  """Another group of the planted column, opposite sign: its rest holds the planted group (same story, mirrored)."""
  if row["protected"] != _get(effect, "protected") or row["measure"] != _get(effect, "measure"):
    return False
  return str(row["group"]) != str(_get(effect, "group")) and np.sign(row["z"]) == -np.sign(_get(effect, "effect"))


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
  findings: pd.DataFrame, truth: Iterable[Any], *, only_new: bool = True, cube=None, mirror: bool = False
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
  recalled = []
  for effect in truth:
    target = _norm(_get(effect, "cohort"))
    recalled.append(any(c == target and _same_test(r, effect) for r, c in zip(recs, cohorts)))
  cache: dict = {}

  def related(a: dict, b: dict) -> bool:
    if _related(a, b):
      return True
    if cube is None:
      return False
    masks = []
    for c in (a, b):
      key = tuple(sorted(c.items()))
      if key not in cache:
        cache[key] = _cell_mask(cube, c)
      masks.append(cache[key])
    ma, mb = masks
    if not (mb.any() and ma.any()):
      return False
    if not (mb & ~ma).any() or not (ma & ~mb).any():
      return True
    rows = np.asarray(cube.rows, np.float64)
    return bool(rows[ma & mb].sum() >= OVERLAP_TRUE * rows[ma].sum())

  false_mask = []
  for r, c in zip(recs, cohorts):
    ok = any((_same_test(r, e) or (mirror and _mirror(r, e))) and related(c, _norm(_get(e, "cohort"))) for e in truth)
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
