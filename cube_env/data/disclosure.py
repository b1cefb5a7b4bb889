"""The small-cell rule: which counts may be shown.

US health-data reporting shows no cell count from 1 to 10 (CMS cell-size
suppression policy), so no group smaller than `SMALL_CELL` is tested or
reported, and wherever a count in `[1, max(min_group, SMALL_CELL))` would
appear, it is hidden: a statistic that reveals it is blanked
(`cube_env.discovery.cohorts.suppress`) and a count in a coding note becomes
"fewer than N" (`redact_counts`). A rate is a count too: a binary measure's
mean times its side's rows is that side's events, so where a side's events
or non-events are in that range, every statistic of the test that would
reveal them is blanked in what is shown (`hide_small_rates`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

SMALL_CELL = 11  # smallest count that may be shown (and the default min_group)

_COUNT_PHRASE = re.compile(r"\b(\d+)( missing values| rows)")


def disclosure_limit(min_group: float) -> int:
  """Smallest count shown: `max(min_group, SMALL_CELL)`, rounded up to a whole count."""
  return max(int(-(-float(min_group) // 1)), SMALL_CELL)


def is_small_cell(count: float | None, min_group: float) -> bool:
  """True for a count that must be hidden: `1 <= count < disclosure_limit(min_group)` (None: nothing shown)."""
  return count is not None and 0 < count < disclosure_limit(min_group)


def redact_counts(text: str, min_group: float) -> str:
  """Replaces each "N rows" / "N missing values" with N hidden by "fewer than L rows" (L the limit)."""
  limit = disclosure_limit(min_group)

  def sub(match):
    n = int(match.group(1))
    return f"fewer than {limit}{match.group(2)}" if is_small_cell(n, min_group) else match.group(0)

  return _COUNT_PHRASE.sub(sub, text)


# A test's statistics that reveal its sides' rates (so, for a binary measure, their events), by column name.
RATE_STATISTICS = (
  "mean_group",
  "mean_rest",
  "diff",
  "ci_low",
  "ci_high",
  "ratio",
  "relative_diff",
  "smd",
  "z",
  "p_value",
  "p_confirm",
  "p_adjusted",
  "group_ci_low",
  "group_ci_high",
  "rest_ci_low",
  "rest_ci_high",
  "var_group",
  "var_rest",
)


def hide_small_rates(
  table: pd.DataFrame, min_group: float, *, prefixes: tuple[str, ...] = ("", "explore_")
) -> pd.DataFrame:
  """A copy of `table` whose binary tests with a small event count show no statistic that reveals it.

  For each row on scale "binary" and each half's column prefix (the
  confirmation's "", the exploration's "explore_"), the events of a side are
  `n_<side> x mean_<side>` and its non-events `n_<side> x (1 - mean_<side>)`;
  where any of the four is a small cell (`is_small_cell`), that half's
  `RATE_STATISTICS` (means, difference, intervals, ratio, z and p, variances)
  become None. The counts stay (they are at least the limit, or already
  blank), as do the finding's cohort, group, measure and flags. Rows of other
  scales and columns absent from `table` are left alone.

  Args:
    table: report rows (`cohort_table`'s or a discovery run's findings).
    min_group: the run's smallest group (the limit is `disclosure_limit`).
    prefixes: the column prefixes of the halves to check.
  """
  out = table.copy()
  if not len(out) or "scale" not in out.columns:
    return out
  binary = (out["scale"] == "binary").to_numpy()
  limit = disclosure_limit(min_group)
  for prefix in prefixes:
    small = np.zeros(len(out), bool)
    for side in ("group", "rest"):
      n_col, m_col = f"{prefix}n_{side}", f"{prefix}mean_{side}"
      if n_col not in out.columns or m_col not in out.columns:
        continue
      n = pd.to_numeric(out[n_col], errors="coerce").to_numpy(float)
      rate = pd.to_numeric(out[m_col], errors="coerce").to_numpy(float)
      with np.errstate(invalid="ignore"):
        for count in (np.round(n * rate), np.round(n * (1.0 - rate))):
          small |= (count >= 1) & (count < limit)  # NaN compares False: nothing shown, nothing to hide
    small &= binary
    columns = [prefix + c for c in RATE_STATISTICS if prefix + c in out.columns]
    if small.any() and columns:
      out[columns] = out[columns].astype(object)
      out.loc[small, columns] = None
  return out
