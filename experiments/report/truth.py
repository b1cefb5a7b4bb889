"""The truth section of a report on synthetic data: each planted effect and whether it was confirmed."""

from __future__ import annotations

import pandas as pd

import cube_env


def planted_table(run: cube_env.Discovery, truth: list) -> pd.DataFrame:
  """One row per planted effect (cohort, protected, group, measure, effect) with `recalled_after_confirmation`."""
  if not truth:
    return pd.DataFrame()
  if len(run.confirmed):
    matched = cube_env.score_findings(run.confirmed, truth, cube=run.halves.explore)["matched"]
    recalled = list(matched["recalled"])
  else:
    recalled = [False] * len(truth)
  rows = [
    dict(
      cohort=cube_env.cohort_label(t.cohort),
      protected=t.protected,
      group=t.group,
      measure=t.measure,
      effect=t.effect,
    )
    for t in truth
  ]
  return pd.DataFrame(rows).assign(recalled_after_confirmation=recalled)
