"""Calibration of the adjusted confirmation test on a pure-confounding null (not a timing).

Each world: 4,000 rows in ten strata that drive both measures (log minutes from 3 to 5, an event rate from 5% to
60%) and group B's share (2% to 97%), with no gap within any stratum; adjusted by the stratum
(`holdout.split_cubes(..., adjusters=("strat",))`). Group B's whole-table confirmation z on each measure, without and
with the variance of the estimated expectations (`confirm.with_extra_variance`, `adjust.extra_variance`): a
calibrated test has z of unit spread and rejects 5% at |z| > 1.96.

`python benchmarks/adjusted_null.py [WORLDS]` (500 in `adjusted_null_cpu.txt`).
"""

import sys

import numpy as np
import pandas as pd

import cube_env
from cube_env.data import holdout
from cube_env.discovery import confirm


def main() -> None:
  worlds = int(sys.argv[1]) if len(sys.argv) > 1 else 500
  schema = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["minutes", "event"])
  cand = pd.DataFrame(
    {"filters": [{}, {}], "protected": ["race"] * 2, "group": ["B"] * 2, "measure": ["minutes", "event"]}
  )
  old, new = [], []
  rng = np.random.default_rng(0)
  for w in range(worlds):
    n = 4000
    s = rng.integers(0, 10, n)
    race = np.where(rng.random(n) < np.linspace(0.02, 0.97, 10)[s], "B", np.where(rng.random(n) < 0.8, "W", "A"))
    df = pd.DataFrame(
      {
        "proc": rng.choice(["A", "B"], n),
        "strat": s.astype(str),
        "race": race,
        "minutes": np.exp(np.linspace(3.0, 5.0, 10)[s] + rng.normal(0, 0.5, n)),
        "event": (rng.random(n) < np.linspace(0.05, 0.6, 10)[s]).astype(float),
      }
    )
    halves = holdout.split_cubes(df, schema, seed=w, adjusters=("strat",))
    again = confirm.retest(cand, halves.confirm, min_group=11, z_screen=3.0, max_depth=2)
    extra = confirm.expectation_variances(cand, halves.confirm.meta, halves.expectation)
    old.append(again["z"].astype(float).to_numpy())
    new.append(confirm.with_extra_variance(again, extra)["z"].astype(float).to_numpy())
  old, new = np.asarray(old), np.asarray(new)
  print(f"# python benchmarks/adjusted_null.py {worlds}")
  for j, m in enumerate(["minutes", "event"]):
    for name, z in (("Welch alone", old[:, j]), ("with the estimates' variance", new[:, j])):
      print(f"{m}: {name}: sd {z.std():.3f}, rejected at |z| > 1.96: {np.mean(np.abs(z) > 1.96):.3f} of {worlds}")


if __name__ == "__main__":
  main()
