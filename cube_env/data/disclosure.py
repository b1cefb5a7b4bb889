"""The small-cell rule: which counts may be shown.

US health-data reporting shows no cell count from 1 to 10 (CMS cell-size
suppression policy), so no group smaller than `SMALL_CELL` is tested or
reported, and wherever a count in `[1, max(min_group, SMALL_CELL))` would
appear, it is hidden: a statistic that reveals it is blanked
(`cube_env.discovery.cohorts.suppress`) and a count in a coding note becomes
"fewer than N" (`redact_counts`).
"""

from __future__ import annotations

import re

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
