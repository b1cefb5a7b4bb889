"""Scaling checks: log-log slopes of environment step time against cube cells or batch.

A slope of 1.0 is linear cost. On a CPU, fixed per-call overhead makes small
sizes cheaper than linear, so slopes below 1 are expected; a slope above
`LINEAR_SLOPE` means cost grows faster than linearly.
"""

from __future__ import annotations

import numpy as np

LINEAR_SLOPE = 1.15  # a fitted slope above this means cost grows faster than linearly


def slopes(rows: list[dict], *, x: str, group: str, bench: str | None = None) -> list[dict]:
  """Log-log slope of `step_s` against `x` per (group-by method, value of `group`), over env rows.

  Args:
    rows: rows of `env_speed_rows`; those without `step_s` (skipped, errors) are left out.
    x: "cells" or "batch".
    group: the other one.
    bench: name of the rows made (default `env_scaling_{x}`).

  Returns:
    One row per (method, group value) with at least two distinct `x`: the slope, the number of points and
    whether it is at most linear.
  """
  pts: dict = {}
  for r in rows:
    if r.get("bench") == "env" and "step_s" in r:
      pts.setdefault((r.get("method", ""), r[group]), []).append((r[x], r["step_s"]))
  out = []
  for (method, key), p in sorted(pts.items()):
    if len({a for a, _ in p}) >= 2:
      slope = float(np.polyfit(np.log([a for a, _ in p]), np.log([b for _, b in p]), 1)[0])
      out.append(
        {
          "bench": bench or f"env_scaling_{x}",
          "method": method,
          group: key,
          "slope": slope,
          "points": len(p),
          "at_most_linear": slope <= LINEAR_SLOPE,
        }
      )
  return out
