"""Discovery on a case table: `python -m experiments.discover`.

Now: the exhaustive oracle on a built-in synthetic scenario (`--demo`) or on a
user's CSV/Parquet table (`--data` with `--dimensions/--protected/--measures`),
printing the new findings as a table and, for synthetic data, their score
against the planted truth. Later issues add search methods, holdout
confirmation and the HTML report.

No count from 1 to 10 is ever printed: tests need `--min-group` >= 11 on both
sides, and visited cohorts have at least `2 * min_group` rows.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Literal

import pandas as pd
import tyro

import cube_env
from cube_env import synthetic

SMALL_CELL = 11  # the small-cell rule of US health data reporting: no count 1-10 is shown


@dataclasses.dataclass(frozen=True)
class Args:
  """Find cohorts where a protected group's measure differs from the rest."""

  demo: str | None = "mixed"
  """Synthetic scenario to generate (null, marginal, interactions, masked, confounded, mixed)."""
  data: str | None = None
  """A CSV or Parquet case table (overrides --demo)."""
  dimensions: tuple[str, ...] = ()
  """Dimension columns of --data (cohort filters)."""
  protected: tuple[str, ...] = ()
  """Protected columns of --data (groups compared)."""
  measures: tuple[str, ...] = ()
  """Measure columns of --data."""
  seed: int = 0
  """Seed of the synthetic data."""
  n_rows: int = 20000
  """Rows of synthetic data."""
  method: Literal["exhaustive"] = "exhaustive"
  """Search method (more come with the discovery issue)."""
  max_depth: int = 3
  """Most filters in a cohort."""
  min_group: int = 11
  """Smallest group (and rest) that is tested; at least 11."""
  z_screen: str = "bonferroni"
  """|z| threshold for significance, or 'bonferroni' (from the number of hypotheses)."""
  max_categories: int = 12
  """Categories kept per column; rarer values fold into OTHER."""
  show: int = 40
  """Rows of the findings table to print."""


def _load(args: Args):
  if args.data is not None:
    for flag in ("dimensions", "protected", "measures"):
      if not getattr(args, flag):
        raise ValueError(f"--data needs --{flag}")
    df = cube_env.read_table(args.data)
    schema = cube_env.Schema(dimensions=args.dimensions, protected=args.protected, measures=args.measures)
    return df, schema, None, args.data
  if args.demo not in synthetic.SCENARIOS:
    raise ValueError(f"--demo must be one of {synthetic.SCENARIOS}, got {args.demo!r}")
  df, schema, truth = synthetic.make_cases(args.demo, args.seed, n_rows=args.n_rows)
  return df, schema, truth, f"synthetic {args.demo!r} (seed {args.seed}, {len(df)} rows)"


def _z_screen(text: str):
  if text == "bonferroni":
    return text
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"--z-screen must be a number or 'bonferroni', got {text!r}") from None


def run(args: Args) -> dict:
  """Runs discovery; returns the findings and score (also printed)."""
  if args.min_group < SMALL_CELL:
    raise ValueError(f"--min-group must be at least {SMALL_CELL} (small-cell rule), got {args.min_group}")
  t0 = time.perf_counter()
  df, schema, truth, source = _load(args)
  cube = cube_env.build_cube(df, schema, max_categories=args.max_categories)
  findings = cube_env.enumerate_findings(cube, max_depth=args.max_depth, min_group=args.min_group,
                                         z_screen=_z_screen(args.z_screen), include_old=True)
  seconds = time.perf_counter() - t0
  new = findings[findings["new"]].sort_values("z", key=abs, ascending=False)
  print(f"data: {source}; {cube.num_cells} cells; {len(cube.meta.filter_names)} filter columns")
  for line in cube.meta.summary:
    print(f"  {line}")
  print(f"method: {args.method}; {findings.attrs['queries']} group-by queries; {seconds:.1f} s; "
        f"|z| >= {findings.attrs['z_screen']:.2f}")
  print(f"{len(findings)} significant disparities, {len(new)} new findings")
  if len(new):
    table = new[["cohort", "protected", "group", "measure", "n_group", "n_rest", "mean_group", "mean_rest",
                 "ratio", "z"]].head(args.show)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
      print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
  score = None
  if truth is not None:
    score = cube_env.score_findings(findings, truth)
    print(f"truth: {score['n_truth']} planted; recall {score['recall']:.2f}; "
          f"precision {score['precision']:.2f} ({score['n_false']} false of {score['n_reported']})")
  return {"findings": findings, "score": score, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
  args = tyro.cli(Args, args=argv)
  try:
    run(args)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
