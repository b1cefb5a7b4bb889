"""The console summary of a discovery run: data, method, counts, the top findings, the truth score."""

from __future__ import annotations

import pandas as pd

import cube_env

SHOWN = [
  "cohort",
  "protected",
  "group",
  "measure",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "relative_diff",
  "z",
  "p_adjusted",
]


def print_summary(run: cube_env.Discovery, *, source: str, score: dict | None, paths: dict, show: int) -> None:
  """Prints the summary to stdout; counts under `min_group` in the coding notes are redacted."""
  s, c = run.search, run.config
  print(f"data: {source}; {run.halves.explore_rows} exploration rows, {run.halves.confirm_rows} confirmation rows")
  for line in run.halves.summary:
    print(f"  {cube_env.redact_counts(line, c.min_group)}")
  print(
    f"method: {c.method}; {s.queries} group-by queries of {c.budget}; {s.seconds:.1f} s searching, "
    f"{run.seconds:.1f} s in all; |z| >= {s.z_screen:.2f}" + (f"; {s.note}" if s.note else "")
  )
  n_conf = int(run.findings["confirmed"].sum()) if len(run.findings) else 0
  print(
    f"{len(run.findings)} candidates (new findings on the exploration half), {n_conf} confirmed "
    f"(Benjamini-Hochberg q={c.q:g}, relative difference >= {c.min_relative_diff:.0%})"
  )
  if len(run.findings):
    with pd.option_context("display.width", 220, "display.max_colwidth", 60):
      print(run.findings[SHOWN + ["confirmed"]].head(show).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
  if score is not None:
    for stage, sc in score.items():
      print(
        f"truth ({stage}): {sc['n_truth']} planted; recall {sc['recall']:.2f}; precision {sc['precision']:.2f} "
        f"({sc['n_false']} false of {sc['n_reported']})"
      )
  print(f"report: {paths['report.html']} (also findings.json, findings.csv)")
