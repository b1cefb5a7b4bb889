"""Power and family-wise error of discovery settings over random worlds (issue 16; `benchmark power`).

For each world (`cube_env.worlds.make_world`) and each named setting
(`SETTINGS`: screen, exploration fraction, confirmation rules), the discovery pipeline
runs `exhaustive` to `max_depth` (prepare, search, confirm: exactly what
`cube_env.discover` does) and scores the confirmed findings against the
planted truth (`score_findings` with the exploration cube: a finding is true
when a planted effect of the same group, measure and sign sits at its cohort,
above or below it, or holds at least half of its rows). A row per (world,
setting) also carries the funnel of each planted effect: its group-versus-rest
z on the exploration and confirmation halves, whether it was a candidate
(significant and new in the exploration half) and whether it was confirmed.

`summarize` pools the rows per (family, setting): recall (planted effects
recalled / planted, with a Clopper-Pearson interval), precision (1 - false /
confirmed; `precision_mirror` also counts a mirrored finding true: another
group of a planted column, opposite sign, see `score_findings(mirror=True)`) and the family-wise error rate on truthless worlds (null and
adjusted confounded: worlds with any confirmed finding / worlds, with its
Clopper-Pearson interval).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from scipy import stats as sps

from cube_env import worlds
from cube_env.data.ingest import filters_to_codes
from cube_env.discovery import pipeline, scoring
from cube_env.discovery.cohorts import cohort_table
from cube_env.discovery.scoring import score_findings
from experiments.launch import compile_cache

TRUTHLESS = ("null", "confounded")


FIELDS = (
  "z_screen",
  "explore_new_z",
  "explore_fraction",
  "q",
  "correction",
  "tilt",
  "confirm_new_z",
  "pooled_check",
  "mirror_z",
)
# The defaults before issue 16: Bonferroni screen, half the rows each, Benjamini-Hochberg, no extra confirmation rule.
OLD = dict(
  z_screen="bonferroni",
  explore_new_z=None,
  explore_fraction=0.5,
  q=0.05,
  correction="bh",
  tilt=2.0,
  confirm_new_z=None,
  pooled_check=False,
  mirror_z=None,
)


@dataclasses.dataclass(frozen=True)
class Setting:
  """Named discovery settings: `overrides` of `cube_env.discovery.pipeline.DiscoveryConfig`'s `FIELDS`."""

  name: str
  overrides: tuple[tuple[str, object], ...] = ()

  def config(self) -> dict:
    """Every one of `FIELDS`, the overrides applied to today's defaults."""
    resolved = pipeline.DiscoveryConfig(**dict(self.overrides))
    return {f: getattr(resolved, f) for f in FIELDS}

  def search_key(self) -> tuple:
    """Settings with the same key share one exploration split and search."""
    config = self.config()
    return (config["z_screen"], config["explore_new_z"], config["explore_fraction"])


def _settings() -> dict[str, Setting]:
  out = {"old": Setting("old", tuple(OLD.items())), "default": Setting("default")}
  for z in (3.5, 4.0):
    for f in (0.5, 0.6):
      for corr, tilts in (("bh", (2.0,)), ("holm", (2.0,)), ("weighted", (1.0, 2.0))):
        for tilt in tilts:
          for new_z in (None, 2.0):
            for pooled in (False, True):
              name = (
                f"z{z:g}-f{f:g}-{corr}"
                + (f"{tilt:g}" if corr == "weighted" else "")
                + (f"-new{new_z:g}" if new_z else "")
                + ("-pooled" if pooled else "")
              )
              study = dict(z_screen=z, explore_fraction=f, correction=corr, tilt=tilt)
              study.update(confirm_new_z=new_z, pooled_check=pooled)
              out[name] = Setting(name, tuple({**OLD, **study}.items()))
  for new_z in (2.0, 2.5, 3.0):  # today's defaults with a lower exploration newness threshold
    name = f"explore-new{new_z:g}"
    out[name] = Setting(name, (("explore_new_z", new_z),))
  for tilt in (0.0, 0.5, 1.0, 1.5):  # ... and a flatter weighting of the candidates (0: plain Holm)
    name = f"explore-new2.5-tilt{tilt:g}"
    out[name] = Setting(name, (("explore_new_z", 2.5), ("tilt", tilt)))
  return out


SETTINGS = _settings()


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
  """Exact binomial interval for k successes in n trials (Clopper & Pearson 1934); (nan, nan) when n = 0."""
  if n == 0:
    return float("nan"), float("nan")
  a = 1.0 - level
  low = 0.0 if k == 0 else float(sps.beta.ppf(a / 2, k, n - k + 1))
  high = 1.0 if k == n else float(sps.beta.ppf(1 - a / 2, k + 1, n - k))
  return low, high


def _plant_z(cube, truth, *, min_group: float, max_depth: int) -> list[float]:
  """Group-versus-rest z of each planted test in `cube` (0 where untestable)."""
  if not truth:
    return []
  codes = np.stack([filters_to_codes(cube.meta, e.cohort) for e in truth])
  table = cohort_table(cube, codes, min_group=min_group, z_screen=40.0, max_depth=max_depth)
  out = []
  for i, e in enumerate(truth):
    rows = table[(table.cohort_index == i) & (table.protected == e.protected) & (table.measure == e.measure)]
    same = rows[rows.group == e.group]
    if len(same):
      out.append(float(same.z.iloc[0]))
    elif len(rows):  # a two-group column is tested on its other group: the mirror image
      out.append(-float(rows.z.iloc[0]))
    else:
      out.append(0.0)
  return out


def world_rows(
  world: worlds.World, settings: Sequence[Setting], *, max_depth: int = 3, split_seed: int = 0
) -> Iterator[dict]:
  """One row per setting: counts, scores and the planted effects' funnel (see the module docstring)."""
  adjust = tuple(world.schema.adjusters)
  searched: dict[tuple, tuple] = {}
  for setting in settings:
    t0 = time.perf_counter()
    config = pipeline.DiscoveryConfig(
      method="exhaustive", budget=10**12, max_depth=max_depth, seed=split_seed, adjust=adjust, **setting.config()
    )
    key = setting.search_key()
    if key not in searched:
      prepared = pipeline.prepare(world.df, world.schema, config)
      result = pipeline.search(prepared, "exhaustive")
      kw = dict(min_group=config.min_group, max_depth=max_depth)
      plant_z = (
        _plant_z(prepared.halves.explore, world.truth, **kw),
        _plant_z(prepared.halves.confirm, world.truth, **kw),
      )
      searched[key] = (prepared, result, time.perf_counter() - t0, plant_z)
      t0 = time.perf_counter()
    prepared, result, search_seconds, (explore_z, confirm_z) = searched[key]
    prepared = dataclasses.replace(prepared, config=config)
    findings = pipeline.confirm(result, prepared)
    run = pipeline.Discovery(
      config=config, halves=prepared.halves, search=result, findings=findings, seconds=search_seconds
    )
    seconds = search_seconds + time.perf_counter() - t0
    cand = score_findings(run.search.candidates, world.truth, cube=run.halves.explore)
    conf = score_findings(run.confirmed, world.truth, cube=run.halves.explore)
    mirrored = score_findings(run.confirmed, world.truth, cube=run.halves.explore, mirror=True)
    yield {
      "family": world.family,
      "seed": world.seed,
      "rows": world.rows,
      "setting": setting.name,
      **setting.config(),
      "z_screen_used": float(run.search.z_screen),
      "max_depth": max_depth,
      "split_seed": split_seed,
      "adjusted": bool(adjust),
      "queries": int(run.search.queries),
      "candidates": int(len(run.search.candidates)),
      "confirmed": int(len(run.confirmed)),
      "n_truth": len(world.truth),
      "n_recalled": conf["n_recalled"],
      "n_false": conf["n_false"],
      "n_false_mirror": mirrored["n_false"],
      "scoring": scoring.RULE,
      "candidate_recalled": cand["n_recalled"],
      "truth_z": [float(z) for z in world.z],
      "truth_kind": [e.kind for e in world.truth],
      "truth_depth": [len(e.cohort) for e in world.truth],
      "explore_z": explore_z,
      "confirm_z": confirm_z,
      "is_candidate": [bool(x) for x in cand["matched"]["recalled"]] if world.truth else [],
      "is_confirmed": [bool(x) for x in conf["matched"]["recalled"]] if world.truth else [],
      "false_findings": [
        {"filters": dict(f.filters), "protected": f.protected, "group": f.group, "measure": f.measure, "z": float(f.z)}
        for f in conf["false"].itertuples()
      ],
      "seconds": round(seconds, 2),
    }


def power_rows(
  families: Sequence[str],
  count: int,
  settings: Sequence[Setting],
  *,
  split: str = "eval",
  rows: int | None = None,
  max_depth: int = 3,
  first: int = 0,
) -> Iterator[dict]:
  """`world_rows` for worlds `first .. first + count - 1` of each family's split, world by world."""
  for i in range(first, first + count):
    for family in families:
      seed = worlds.world_seeds(split, i + 1, family)[i]
      t0 = time.perf_counter()
      try:
        world = worlds.make_world(seed, family=family, rows=rows)
      except ValueError as err:  # a world that cannot be drawn is reported, not skipped silently
        yield {"family": family, "seed": seed, "split": split, "error": str(err)}
        continue
      made = time.perf_counter() - t0
      for row in world_rows(world, settings, max_depth=max_depth):
        yield {**row, "split": split, "world_seconds": round(made, 2)}
      compile_cache.release_if_crowded()  # each world compiles programs for its own shapes


def summarize(rows: Iterable[dict]) -> list[dict]:
  """Pooled recall, precision and FWER per (family, setting), with Clopper-Pearson intervals."""
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    if "setting" in r and "family" in r and "error" not in r:
      groups.setdefault((r["family"], r["setting"]), []).append(r)
  out = []
  for (family, setting), rs in sorted(groups.items()):
    planted = sum(r["n_truth"] for r in rs)
    recalled = sum(r["n_recalled"] for r in rs)
    confirmed = sum(r["confirmed"] for r in rs)
    false = sum(r["n_false"] for r in rs)
    with_any = sum(1 for r in rs if r["n_false"] > 0)
    row = {
      "summary": "power",
      "family": family,
      "setting": setting,
      "worlds": len(rs),
      "planted": planted,
      "recall": recalled / planted if planted else None,
      "recall_ci": list(clopper_pearson(recalled, planted)) if planted else None,
      "candidate_recall": sum(r["candidate_recalled"] for r in rs) / planted if planted else None,
      "confirmed": confirmed,
      "precision": 1.0 - false / confirmed if confirmed else None,
      "precision_mirror": 1.0 - sum(r.get("n_false_mirror", r["n_false"]) for r in rs) / confirmed
      if confirmed
      else None,
      "mean_candidates": float(np.mean([r["candidates"] for r in rs])),
      "mean_seconds": float(np.mean([r["seconds"] for r in rs])),
    }
    if family in TRUTHLESS:
      row["fwer"] = with_any / len(rs)
      row["fwer_ci"] = list(clopper_pearson(with_any, len(rs)))
    out.append(row)
  return out
