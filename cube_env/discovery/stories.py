"""Stories: confirmed findings that tell the same disparity, grouped under one headline.

A gap concentrated in orthopaedics at site A also shows, diluted, in all of
orthopaedics and at all of site A; an analyst should read it once. Confirmed
findings are grouped into *stories* (docs/design.md, Discovery and
confirmation, *Stories*):

* **Key.** (protected, group, measure, sign of the confirmation z). A
  protected column with two groups is tested on one of them ("a versus b,
  sign s" is the hypothesis "b versus a, sign -s"), so such a finding (its
  `reference` is the other group, not "rest") is keyed by the alphabetically
  first of the two groups, with the sign flipped when that is the reference.
* **Related.** Two findings of one key are related when their cohorts share
  at least `MIN_OVERLAP` (half) of the smaller cohort's rows in the cube:
  `rows(a & b) >= MIN_OVERLAP * min(rows(a), rows(b))` with `min > 0`. Rows
  are counted in the cube's cells, not guessed from the filters: `a & b` is
  the cohort of both filter sets (no rows when they give one column two
  labels), so a nested cohort qualifies whether its filters contain the
  other's or only its cells lie inside the other's
  (procedure=cataract_extraction inside service_line=ophthalmology).
* **Greedy assignment to leads, strongest first.** Confirmed findings are
  ordered by |z| (ties: cohort label, protected, group, measure, table
  order). Repeatedly, with `s` the strongest finding not yet in a story:
  the *eligible* findings are the unassigned ones related to `s` (`s`
  included) whose |z| is at least `LEAD_FRACTION` (3/4) of |z_s|; the *lead*
  is the deepest eligible cohort (ties: fewer rows, then larger |z|, then the
  order above); the *story* is the lead and every unassigned finding related
  to the lead (`s` among them). Stories are numbered 0, 1, ... as they are
  made, so story 0 holds the strongest finding, and `s` is the strongest of
  its story.

Greedy leads rather than connected components: every member overlaps its own
headline, so a broad cohort cannot chain two disjoint gaps into one story. A
deeper cohort leads only when it is nearly as strong as the story's
strongest: a uniform gap gives a sub-cohort holding a fraction f of the rows
about sqrt(f) of the z (0.71 for half), below 3/4, so a broad gap keeps its
broad headline, while a gap concentrated in the sub-cohort gives it the larger
z; a cohort under 3/4 of the strongest |z| never leads.

`group_stories` adds `story` (int, -1 for unconfirmed rows), `story_lead`
(bool) and `story_size` (findings in the story, 0 for unconfirmed rows), and
orders the table: each story's lead, then its members by |z|, stories in
number order, then the unconfirmed rows in their given order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from cube_env.data.ingest import Cube, cohort_label, filters_to_codes

MIN_OVERLAP = 0.5  # shared rows, as a share of the smaller cohort, that relate two findings
LEAD_FRACTION = 0.75  # a lead's |z| is at least this share of its story's strongest |z|
STORY_COLUMNS = ("story", "story_lead", "story_size")

Filters = Mapping[str, str]


def story_key(row: Mapping) -> tuple[str, str, str, int]:
  """(protected, group, measure, sign): the hypothesis a finding tests, two-group columns written one way.

  A two-group column (`reference` not "rest") is keyed by the alphabetically
  first of group and reference; the sign flips when that is the reference.
  """
  group, reference = str(row["group"]), str(row.get("reference", "rest"))
  sign = int(np.sign(np.nan_to_num(float(row["z"]))))
  if reference != "rest" and reference < group:
    group, sign = reference, -sign
  return str(row["protected"]), group, str(row["measure"]), sign


def merge_filters(a: Filters, b: Filters) -> dict[str, str] | None:
  """The filters of the cohort in both `a` and `b`; None when they give one column two labels (no rows)."""
  out = {str(k): str(v) for k, v in a.items()}
  for name, label in b.items():
    if out.setdefault(str(name), str(label)) != str(label):
      return None
  return out


def row_counter(cube: Cube) -> Callable[[Filters | None], float]:
  """Rows of the cube's cells that match every filter, remembered per filter set; None (no cohort) has 0 rows.

  The returned function raises ValueError (`filters_to_codes`) on a column or label the cube lacks.
  """
  codes, rows, meta = np.asarray(cube.codes), np.asarray(cube.rows, np.float64), cube.meta
  cache: dict[tuple, float] = {}

  def count(filters: Filters | None) -> float:
    if filters is None:
      return 0.0
    key = tuple(sorted(filters.items()))
    if key not in cache:
      want = filters_to_codes(meta, filters)
      cols = np.flatnonzero(want >= 0)
      cache[key] = float(rows[np.all(codes[:, cols] == want[cols], axis=1)].sum())
    return cache[key]

  return count


def cohort_rows(cube: Cube, filters: Filters) -> float:
  """Rows of the cube's cells that match every filter (`row_counter` for many cohorts of one cube)."""
  return row_counter(cube)(filters)


def overlaps(rows_a: float, rows_b: float, rows_both: float, *, min_overlap: float = MIN_OVERLAP) -> bool:
  """True when the shared rows are at least `min_overlap` of the smaller (non-empty) cohort."""
  smaller = min(rows_a, rows_b)
  return smaller > 0 and rows_both >= min_overlap * smaller


def choose_lead(eligible: Sequence[int], depth: np.ndarray, rows: np.ndarray, strength: np.ndarray) -> int:
  """The deepest of `eligible` (positions in the strength order); ties: fewer rows, larger |z|, then position."""
  return min(eligible, key=lambda i: (-depth[i], rows[i], -strength[i], i))


def _strength_order(confirmed: pd.DataFrame) -> list[int]:
  """Positions of `confirmed` by |z| descending; ties by cohort label, protected, group, measure, table order."""
  z = np.abs(np.nan_to_num(confirmed["z"].to_numpy(float)))
  labels = [cohort_label(f) for f in confirmed["filters"]]
  keys = [
    (-z[i], labels[i], str(p), str(g), str(m), i)
    for i, (p, g, m) in enumerate(zip(confirmed["protected"], confirmed["group"], confirmed["measure"]))
  ]
  return [k[-1] for k in sorted(keys)]


def assign_stories(
  findings: pd.DataFrame, cube: Cube, *, min_overlap: float = MIN_OVERLAP, lead_fraction: float = LEAD_FRACTION
) -> list[list[int]]:
  """The stories of `findings` (all taken as confirmed), by the module's greedy rule.

  Returns:
    One list per story, in story order: the positions (into `findings`) of
    its lead, then of its members by |z| (ties as in the strength order).
  """
  frame = findings.reset_index(drop=True)
  order = _strength_order(frame)
  recs = frame.to_dict("records")
  keys = [story_key(recs[i]) for i in order]
  filters = [dict(recs[i]["filters"]) for i in order]
  count = row_counter(cube)
  rows = np.array([count(f) for f in filters])
  depth = np.array([len(f) for f in filters])
  strength = np.abs(np.nan_to_num(frame["z"].to_numpy(float)))[order]

  def related(i: int, j: int) -> bool:
    if i == j:
      return True
    if keys[i] != keys[j]:
      return False
    return overlaps(rows[i], rows[j], count(merge_filters(filters[i], filters[j])), min_overlap=min_overlap)

  free = list(range(len(order)))  # positions in the strength order, strongest first
  stories = []
  while free:
    seed = free[0]
    eligible = [i for i in free if strength[i] >= lead_fraction * strength[seed] and related(seed, i)]
    lead = choose_lead(eligible, depth, rows, strength)
    members = [i for i in free if i != lead and related(lead, i)]
    stories.append([order[i] for i in [lead] + members])
    taken = {lead, *members}
    free = [i for i in free if i not in taken]
  return stories


def group_stories(
  findings: pd.DataFrame, cube: Cube, *, min_overlap: float = MIN_OVERLAP, lead_fraction: float = LEAD_FRACTION
) -> pd.DataFrame:
  """Adds `story`, `story_lead`, `story_size` to a findings table and orders it story by story (module docstring).

  Args:
    findings: `confirm.confirm_candidates` output (filters, protected, group,
      reference, measure, z, confirmed; `depth` is read from the filters).
    cube: the cube the confirmation statistics came from (its rows measure
      the overlap of cohorts).
    min_overlap: shared share of the smaller cohort that relates two findings.
    lead_fraction: a lead's |z| is at least this share of the story's strongest.

  Returns:
    A new table (the same rows, `attrs` kept): confirmed rows story by story,
    lead first, then unconfirmed rows (story -1, not a lead, size 0).
  """
  frame = findings.reset_index(drop=True)
  confirmed = np.flatnonzero(frame["confirmed"].to_numpy(bool)) if len(frame) else np.zeros(0, int)
  stories = assign_stories(frame.iloc[confirmed], cube, min_overlap=min_overlap, lead_fraction=lead_fraction)
  story = np.full(len(frame), -1, np.int64)
  lead = np.zeros(len(frame), bool)
  size = np.zeros(len(frame), np.int64)
  ordered = []
  for k, members in enumerate(stories):
    positions = confirmed[members]
    story[positions], size[positions], lead[positions[0]] = k, len(positions), True
    ordered.extend(positions.tolist())
  ordered.extend(i for i in range(len(frame)) if story[i] < 0)
  out = frame.assign(story=story, story_lead=lead, story_size=size).iloc[ordered].reset_index(drop=True)
  out.attrs.update(findings.attrs)
  return out
