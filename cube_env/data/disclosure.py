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


RAW_SMALL_EVENTS = "raw_small_events"  # optional bool column: the unadjusted confirmation half's events are small


def small_events(table: pd.DataFrame, min_group: float, prefix: str = "") -> np.ndarray:
  """`[rows]` bool: binary tests whose events or non-events (`n x rate`) on a side of the `prefix` half are small."""
  small = np.zeros(len(table), bool)
  if "scale" not in table.columns:
    return small
  limit = disclosure_limit(min_group)
  for side in ("group", "rest"):
    n_col, m_col = f"{prefix}n_{side}", f"{prefix}mean_{side}"
    if n_col not in table.columns or m_col not in table.columns:
      continue
    n = pd.to_numeric(table[n_col], errors="coerce").to_numpy(float)
    rate = pd.to_numeric(table[m_col], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
      for count in (np.round(n * rate), np.round(n * (1.0 - rate))):
        small |= (count >= 1) & (count < limit)  # NaN compares False: nothing shown, nothing to hide
  return small & (table["scale"] == "binary").to_numpy()


def hide_small_rates(
  table: pd.DataFrame, min_group: float, *, prefixes: tuple[str, ...] = ("", "explore_")
) -> pd.DataFrame:
  """A copy of `table` whose binary tests with a small event count show no statistic that reveals it.

  For each half's column prefix (the confirmation's "", the exploration's
  "explore_"), a binary test's events on a side are `n_<side> x mean_<side>`
  and its non-events `n_<side> x (1 - mean_<side>)` (`small_events`; with
  case-mix adjustment the means are excess rates, so the confirmation half
  also reads `RAW_SMALL_EVENTS`, which `confirm_candidates` sets from the
  unadjusted rows). Where any is a small cell (`is_small_cell`), that half's
  `RATE_STATISTICS` (means, difference, intervals, ratio, z and p, variances)
  become None for every row of the same cohort, protected column and measure
  (otherwise the other groups' rows give the hidden group's events back by
  subtraction from their rests), and the numbers in such a row's `reason`
  are dropped. The counts stay (they are at least the limit, or already
  blank), as do the cohort, group, measure and flags. Subtractions across
  other tests (another protected column's rows of the cohort, its parent's
  or its siblings') are not suppressed (README, Small cells).

  Args:
    table: report rows (`cohort_table`'s or a discovery run's findings).
    min_group: the run's smallest group (the limit is `disclosure_limit`).
    prefixes: the column prefixes of the halves to check.
  """
  out = table.copy()
  if not len(out) or "scale" not in out.columns:
    return out
  keys = [c for c in ("cohort", "protected", "measure") if c in out.columns]
  block = out[keys].astype(str).agg("\x1f".join, axis=1).to_numpy() if len(keys) == 3 else None
  for prefix in prefixes:
    small = small_events(out, min_group, prefix)
    if prefix == "" and RAW_SMALL_EVENTS in out.columns:
      small |= out[RAW_SMALL_EVENTS].fillna(False).to_numpy(bool)
    if block is not None and small.any():
      small = np.isin(block, block[small])
    columns = [prefix + c for c in RATE_STATISTICS if prefix + c in out.columns]
    if small.any() and columns:
      out[columns] = out[columns].astype(object)
      out.loc[small, columns] = None
    if prefix == "" and small.any() and "reason" in out.columns:
      reason = out.loc[small, "reason"].astype(str)
      reason = reason.str.replace(r" \(adjusted p [^)]*\)", "", regex=True)
      out.loc[small, "reason"] = reason.str.replace(
        r"relative difference \S+ below", "relative difference below", regex=True
      )
  return out
