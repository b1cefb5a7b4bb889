"""Summaries of the quality benchmark's run rows: per (scenario, method, budget) over seeds, and the headlines.

A budget is the suite's nominal fraction of the exhaustive count (`large`: the
fixed query count). See docs/design.md, Discovery and confirmation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from experiments.quality.suite import RECALL_TARGET, SUITE_METHODS, SUITE_SCENARIOS, TRUTHLESS


def summarize(rows: list[dict]) -> list[dict]:
  """Mean and sample standard deviation (None for one seed) over seeds per (scenario, method, budget).

  A budget is the suite's nominal fraction of the exhaustive count (`large`:
  the fixed query count); `budget_fraction` is the seeds' mean actual one.
  """
  runs = pd.DataFrame([r for r in rows if r.get("kind") == "run"])
  if runs.empty:
    return []
  nominal = runs["nominal_fraction"] if "nominal_fraction" in runs else pd.Series(np.nan, index=runs.index)
  runs["nominal"] = nominal
  runs["budget_key"] = [
    f"f{f:g}" if pd.notna(f) else f"q{b}" if s == "large" else f"r{x:.2f}"  # older: no nominal
    for f, b, s, x in zip(nominal, runs["budget"], runs["scenario"], runs["budget_fraction"])
  ]
  if "recall" not in runs.columns:  # only not-applicable rows
    runs["recall"] = np.nan
  runs["recall_of_oracle"] = _recall_of_oracle(runs)
  out = []
  for (scenario, method, key), g in runs.groupby(["scenario", "method", "budget_key"], sort=False):
    ok = g[g["applicable"].astype(bool)]
    row = dict(
      kind="summary",
      suite=g["suite"].iloc[0],
      scenario=scenario,
      method=method,
      budget_key=key,
      budget_fraction=round(float(g["budget_fraction"].mean()), 4),
      budget=float(g["budget"].mean()),
      nominal_fraction=None if pd.isna(g["nominal"].iloc[0]) else float(g["nominal"].iloc[0]),
      seeds=int(len(g)),
      applicable=bool(len(ok)),
    )
    if len(ok):
      for col in (
        "recall",
        "recall_of_oracle",
        "precision",
        "confirmed",
        "false_confirmed",
        "queries",
        "seconds",
        "candidate_recall",
      ):
        v = pd.to_numeric(ok[col], errors="coerce").to_numpy(float)
        row[f"{col}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else None
        row[f"{col}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else None
      row["family_wise_error_rate"] = float(ok["family_wise_error"].astype(bool).mean())
    else:
      row["note"] = str(g["note"].iloc[0])
    out.append(row)
  return out


def _recall_of_oracle(runs: pd.DataFrame) -> np.ndarray:
  """Share of the planted effects that exhaustive search with the whole budget confirmed (same cube) that a run
  confirmed too; NaN where there is no such effect or no such exhaustive run."""
  if "recalled" not in runs.columns:
    return np.full(len(runs), np.nan)
  full = runs[(runs["method"] == "exhaustive") & (runs["budget_fraction"] >= 1.0) & runs["applicable"].astype(bool)]
  oracle = {(r.scenario, r.seed): set(r.recalled) for r in full.itertuples() if isinstance(r.recalled, list)}
  out = []
  for r in runs.itertuples():
    want = oracle.get((r.scenario, r.seed))
    got = r.recalled if isinstance(r.recalled, list) else None
    out.append(len(want & set(got)) / len(want) if want and got is not None else np.nan)
  return np.asarray(out, float)


def headline(summary: list[dict], *, metric: str = "recall_mean") -> pd.DataFrame:
  """Per scenario and method: the smallest measured budget fraction whose mean `metric` >= 0.9.

  `metric` is recall of the planted effects (`recall_mean`) or of those the
  exhaustive search confirms with the whole budget (`recall_of_oracle_mean`).

  Truthless scenarios (null, confounded) give instead the family-wise error
  rate over all their runs (share of runs with any confirmed finding).
  """
  table = pd.DataFrame(summary)
  if table.empty:
    return pd.DataFrame()
  cells: dict = {}
  for (scenario, method), g in table.groupby(["scenario", "method"], sort=False):
    g = g.sort_values("budget_fraction")
    if not g["applicable"].any():
      cells[(method, scenario)] = "n/a"
    elif scenario in TRUTHLESS:
      ok = g[g["applicable"]]
      fwer = float(np.average(ok["family_wise_error_rate"], weights=ok["seeds"]))
      cells[(method, scenario)] = f"FWER {fwer:.2f}"
    else:
      values = g[metric] if metric in g else pd.Series(np.nan, index=g.index)
      hit = g[g["applicable"] & (values.fillna(0) >= RECALL_TARGET)]
      best = float(values.max())
      cells[(method, scenario)] = (
        f"{hit['budget_fraction'].iloc[0]:.3g}" if len(hit) else f"> {g['budget_fraction'].max():.3g} (best {best:.2f})"
      )
  scenarios = in_order(table["scenario"], SUITE_SCENARIOS)
  rows = in_order(table["method"], SUITE_METHODS)
  return pd.DataFrame(
    [[cells.get((m, s), "") for s in scenarios] for m in rows], columns=scenarios, index=pd.Index(rows, name="method")
  )


def at_equal_budget(
  summary: list[dict], methods: Iterable[str] = ("muzero", "beam", "pysubgroup-beam", "pysubgroup-dfs")
) -> pd.DataFrame:
  """Mean recall (null/confounded: mean confirmed false findings) per scenario and budget, one column per method.

  "n/a": the method cannot search this cube; "-": not run at this budget (or nothing to score).
  """
  table = pd.DataFrame(summary)
  if table.empty:
    return pd.DataFrame()
  methods = [m for m in methods if m in set(table["method"])]
  out = []
  order = []
  for (scenario, _), g in table.groupby(["scenario", "budget_key"], sort=False):
    y = "false_confirmed" if scenario in TRUTHLESS else "recall"
    row = {"scenario": scenario, "budget": f"{g['budget_fraction'].mean():.3g} ({g['budget'].mean():.0f} q)"}
    for m in methods:
      h = g[g["method"] == m]
      if len(h) == 0:
        row[m] = "-"
      elif not bool(h["applicable"].iloc[0]):
        row[m] = "n/a"
      elif f"{y}_mean" not in h or pd.isna(h[f"{y}_mean"].iloc[0]):
        row[m] = "-"
      else:
        mean, std = h[f"{y}_mean"].iloc[0], h[f"{y}_std"].iloc[0]
        row[m] = f"{mean:.2f}" + (f" ± {std:.2f}" if int(h["seeds"].iloc[0]) > 1 and pd.notna(std) else "")
    out.append(row)
    order.append(
      (SUITE_SCENARIOS.index(scenario) if scenario in SUITE_SCENARIOS else len(SUITE_SCENARIOS), g["budget"].mean())
    )
  return pd.DataFrame([out[i] for i in sorted(range(len(out)), key=order.__getitem__)])


def in_order(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
  """Distinct names, those in `order` first in its order, then the others as they come."""
  names = list(dict.fromkeys(names))
  return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))
