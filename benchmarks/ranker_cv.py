"""Held-out-world AUC of the learned ranking on its training rows (output: ranker_cv_cpu.txt).

`python benchmarks/ranker_cv.py ROWS.npz`, ROWS from `python -m experiments.train_ranker --rows-file ROWS.npz`.
Fits on three quarters of the worlds, scores the on-path label on the other quarter, overall and per family
(standard, wide, deep, masked), beside the pixel |z| alone (what greedy ranks by).
"""

import sys

import numpy as np

from cube_env.discovery import ranking

z = np.load(sys.argv[1])
x, y, w, g = z["x"], z["y"], z["w"], z["world"]
fam = g % 4  # job order: standard, wide, deep, masked per world index
te = (g // 4) % 4 == 0
configs = [
  (32, 3000, ()),
  (8, 3000, ()),
  (32, 1000, ()),
  (32, 3000, ("column_max", "column_mean", "above_column", "column_values")),
  (32, 3000, ("sibling_rank", "sibling_max")),
]
for hidden, steps, drop in configs:
  m = ranking.fit(x[~te], y[~te], seed=0, hidden=hidden, steps=steps, sample_weight=w[~te], drop=drop)
  s = m.logits(x[te])
  per = [round(ranking.auc(s[fam[te] == f], y[te][fam[te] == f], w[te][fam[te] == f]), 3) for f in range(4)]
  pix = [round(ranking.auc(x[te][fam[te] == f, 0], y[te][fam[te] == f], w[te][fam[te] == f]), 3) for f in range(4)]
  print(hidden, steps, drop, "heldout auc", round(ranking.auc(s, y[te], w[te]), 3), per, "pixel", pix, flush=True)
