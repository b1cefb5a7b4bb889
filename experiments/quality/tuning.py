"""Hyperparameters by Nevergrad (issue 18, point 4), with an objective measured on training worlds only.

`tune` asks a Nevergrad optimizer (Rapin & Teytaud 2018; `NGOpt` picks an
algorithm from the budget and the parametrization) for settings, scores each
with an objective (higher is better) and returns the recommendation and the
history. `ranker_objective` is the objective for the learned frontier ranking:
it fits a ranker with the settings on cached training rows
(`ranker_training.training_rows`, training worlds from index 20) and returns
its mean recall on other training worlds (indices 0 to `worlds - 1` of each
family with planted effects; quick sizes) at the budgets where the settings
sweep chooses (`summary.SWEEP_FRACTIONS`, `summary.SWEEP_FIXED`). No evaluation
world enters: the suite runs with `split="train"`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable

import numpy as np

from cube_env.discovery import ranking
from experiments.quality import ranker_training
from experiments.quality.session import run_quality
from experiments.quality.summary import sweep_window

Objective = Callable[[dict], float]  # settings -> score (higher is better)


@dataclasses.dataclass(frozen=True)
class Bound:
  """One tuned setting: a range, searched on a log scale when `log`, rounded to a whole number when `integer`."""

  lower: float
  upper: float
  log: bool = False
  integer: bool = False

  def __post_init__(self):
    if not self.lower < self.upper or (self.log and self.lower <= 0):
      raise ValueError(f"a tuned range needs lower < upper (and lower > 0 on a log scale), got {self}")


RANKER_SPACE = {  # the ranker's main hyperparameters (`ranking.fit`)
  "hidden": Bound(4, 32, log=True, integer=True),
  "steps": Bound(500, 6000, log=True, integer=True),
  "learning_rate": Bound(1e-3, 2e-2, log=True),
  "weight_decay": Bound(1e-6, 1e-2, log=True),
}


def _parametrization(space: dict[str, Bound], seed: int):
  import nevergrad as ng  # noqa: PLC0415 (an optional dependency: the bench extra)

  params = {}
  for name, b in space.items():
    p = ng.p.Log(lower=b.lower, upper=b.upper) if b.log else ng.p.Scalar(lower=b.lower, upper=b.upper)
    params[name] = p.set_integer_casting() if b.integer else p
  out = ng.p.Dict(**params)
  out.random_state = np.random.RandomState(seed)  # Nevergrad's own draws: seeded
  return out


def tune(
  objective: Objective,
  space: dict[str, Bound],
  *,
  budget: int,
  seed: int,
  optimizer: str = "NGOpt",
  log: Callable[[dict], None] | None = None,
) -> tuple[dict, list[dict]]:
  """(recommended settings, history) after `budget` sequential evaluations of `objective` (maximised).

  History rows: `{"step", "settings", "score"}`, in order; `log` sees each as it comes.
  """
  import nevergrad as ng  # noqa: PLC0415

  if budget < 1:
    raise ValueError(f"the tuning budget must be at least 1 evaluation, got {budget}")
  if optimizer not in ng.optimizers.registry:
    raise ValueError(f"unknown Nevergrad optimizer {optimizer!r} (for example NGOpt, OnePlusOne, CMA, RandomSearch)")
  opt = ng.optimizers.registry[optimizer](parametrization=_parametrization(space, seed), budget=budget, num_workers=1)
  history = []
  for step in range(budget):
    candidate = opt.ask()
    settings = dict(candidate.value)
    score = float(objective(settings))
    if not np.isfinite(score):
      raise ValueError(f"the tuning objective returned {score} for {settings}")
    opt.tell(candidate, -score)  # Nevergrad minimises
    row = {"step": step, "settings": settings, "score": score}
    history.append(row)
    if log is not None:
      log(row)
  return dict(opt.provide_recommendation().value), history


def ranker_objective(
  rows: tuple[np.ndarray, ...],
  *,
  worlds: int,
  workdir: str,
  seed: int = 0,
  workers: int = 2,
) -> Objective:
  """Mean recall of `learned` with a ranker fitted at the given settings on `rows` ((x, y, w) training rows,
  `ranker_training.load_rows`), on
  `worlds` training worlds of each family with planted effects (quick sizes, `split="train"`)."""
  x, y, w = rows
  os.makedirs(workdir, exist_ok=True)

  def objective(settings: dict) -> float:
    weights = ranking.fit(x, y, seed=seed, sample_weight=w, **settings)
    tmp = os.path.join(workdir, "candidate.npz")
    ranking.save(weights, tmp)
    digest = ranking.weights_id(tmp).removeprefix("sha256:")  # named by content, as run rows record the ranker
    path = os.path.join(workdir, f"ranker-{digest}.npz")
    os.replace(tmp, path)
    method = f"learned@weights={path}"
    with contextlib.redirect_stdout(io.StringIO()):  # run_quality prints its summary rows
      rows_out = run_quality(
        "quick",
        checkpoint=None,
        method_names=(method,),
        plot_path=os.path.join(workdir, f"ranker-{digest}.png"),
        out=os.path.join(workdir, "runs.jsonl"),
        emit=lambda rows, _out: list(rows),
        log=lambda _text: None,
        scenarios=ranker_training.FAMILIES,
        workers=workers,
        seeds=worlds,
        split="train",
      )
    runs = sweep_window([r for r in rows_out if r.get("method") == method])
    if runs.empty:
      raise RuntimeError(f"no run of {method} in the tuning window")
    return float(runs["recall"].astype(float).mean())

  return objective
