"""Markdown tables of the quality benchmark's summaries (no tabulate dependency)."""

from __future__ import annotations

import pandas as pd

from experiments.quality.suite import RECALL_TARGET
from experiments.quality.summary import at_equal_budget, headline


def markdown(table: pd.DataFrame, *, index: bool = False) -> str:
  """A pipe table."""
  frame = table.reset_index() if index else table
  cols = [str(c) for c in frame.columns]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
  return "\n".join(lines)


def headline_tables(summary: list[dict], *, suite_name: str, wall_s: float, calls: int, device_kind: str) -> str:
  """The three tables the `quality` command logs: budget to the recall target (of the planted effects, of what
  exhaustive search confirms) and recall at equal budget."""
  return (
    f"\nfraction of exhaustive queries to reach recall {RECALL_TARGET} (null/confounded: family-wise error "
    f"rate), suite {suite_name}, {wall_s / 60:.1f} min in {calls} call(s) on {device_kind}:\n"
    f"{markdown(headline(summary), index=True)}\n\nthe same for recall of what exhaustive search confirms:\n"
    f"{markdown(headline(summary, metric='recall_of_oracle_mean'), index=True)}\n\n"
    "at equal budget (recall; null/confounded: confirmed false findings):\n"
    f"{markdown(at_equal_budget(summary))}"
  )
