"""How much a deep world's plant shows along its path (issue 18, the `deep` family; training worlds 0-7 only).

`python benchmarks/deep_path_signal.py` (output: deep_path_signal_cpu.txt). For each plant of training worlds 0-7 of
`deep` (quick-suite size, 10,000 rows; the search sees the exploration half of them, so its z are about 0.7x these)
and each ancestor of its cohort (the planted filters' subsets, by depth 0-4): the planted test's |z| (its group
versus the rest of the cohort, its measure; `worlds.group_z` on the test scale ingest chooses, `encode_table`)
against the strongest |z| of every other test of the same cohort, leaving out the planted test's own protected
column and measure (its other groups mirror it). This is what a per-pixel maximum can see: where the planted test is below the others, the
ancestor does not stand out by |z|.
"""

import dataclasses
import itertools

import numpy as np

from cube_env import worlds
from cube_env.data.ingest import encode_table
from experiments.quality.suite import SUITES, make_case

suite = dataclasses.replace(SUITES["quick"], split="train")


def zs(df, values, is_binary, keep, schema):
  """{(p, g, m): z} of every test of the rows `keep`; `values` `[rows, M]` on the test scale (`encode_table`)."""
  out = {}
  for p in schema.protected:
    has = keep & df[p].notna().to_numpy()
    for g in df[p].dropna().unique():
      in_g = (df[p] == g).to_numpy()[has]
      for m in range(len(schema.measures)):
        out[(p, g, schema.measures[m])] = worlds.group_z(values[has, m], in_g, binary=is_binary[m])
  return out


agg = {}
for idx in range(8):
  case = make_case("deep", idx, suite)
  df = case.df
  _, values, meta = encode_table(df, case.schema)  # the test scale the cube uses (logs where ingest takes them)
  for t in case.truth:
    cols = list(t.cohort)
    for k in range(0, len(cols) + 1):
      ratios = []
      for sub in itertools.combinations(cols, k):
        keep = np.ones(len(df), bool)
        for c in sub:
          keep &= (df[c] == t.cohort[c]).to_numpy()
        z = zs(df, values, meta.is_binary, keep, case.schema)
        mine = abs(z[(t.protected, t.group, t.measure)])
        best = max(abs(v) for key, v in z.items() if (key[0], key[2]) != (t.protected, t.measure))
        ratios.append((mine, best))
      agg.setdefault(k, []).extend(ratios)
      print("world", idx, "depth", k, "planted/others", " ".join(f"{a:.1f}/{b:.1f}" for a, b in ratios), flush=True)
for k, r in sorted(agg.items()):
  r = np.array(r)
  print(
    "depth",
    k,
    "planted |z| mean",
    r[:, 0].mean().round(2),
    "other max |z| mean",
    r[:, 1].mean().round(2),
    "share planted > others",
    (r[:, 0] > r[:, 1]).mean().round(2),
  )
