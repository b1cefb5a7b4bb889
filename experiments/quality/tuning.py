"""Hyperparameters by Nevergrad (issue 18, point 4), with an objective measured on training worlds only.

`tune` asks a Nevergrad optimizer (Rapin & Teytaud 2018; `NGOpt` picks an
algorithm from the budget and the parametrization) for settings, scores each
with an objective (higher is better) and returns the recommendation and the
history. `agent_objective` is the objective for the MuZero agent: it trains an
agent with the settings (a `experiments.launch.cube_presets` preset's cubes,
network and learner, the settings over its config, a given number of
iterations) and returns the mean recall of `muzero` playing it on training
worlds 0 to `worlds - 1` (its own episodes by default: in frontier mode the
learned ranking it refines decides most of the recall, so that objective barely
sees the agent). `ranker_objective` is the objective for the learned frontier ranking:
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
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable

import numpy as np

import muzero_jax
from cube_env.discovery import ranking
from experiments import train
from experiments.launch import compile_cache
from experiments.launch.cube_presets import PRESETS
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


AGENT_SPACE = {  # the agent's main training hyperparameters: `MuZeroConfig` fields, and `imitation`, the share of
  # the iterations that imitate greedy search (`imitation_iterations` = round(share x iterations))
  "learning_rate": Bound(1e-3, 1e-2, log=True),
  "imitation": Bound(0.0, 0.9),
  "num_simulations": Bound(4, 32, log=True, integer=True),
  "value_loss_weight": Bound(0.1, 1.0, log=True),
  "n_step": Bound(1, 10, integer=True),
}
AGENT_MODES = ("episodes", "frontier")  # what `agent_objective` scores: the agent's own play, or muzero's default


def agent_config(base: muzero_jax.MuZeroConfig, settings: dict, iterations: int) -> muzero_jax.MuZeroConfig:
  """`base` with `settings` (`AGENT_SPACE` keys) over it, `imitation` turned into `imitation_iterations`."""
  fields = dict(settings)
  share = fields.pop("imitation", None)
  if share is not None:
    if not 0.0 <= share <= 1.0:
      raise ValueError(f"imitation is a share of the iterations, in [0, 1]; got {share}")
    fields["imitation_iterations"] = int(round(share * iterations))
  known = {f.name for f in dataclasses.fields(base)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"not MuZeroConfig fields: {unknown}")
  return base.replace(**fields)


def preset_settings(preset: str) -> dict:
  """`AGENT_SPACE`'s settings as `preset` has them (its imitation iterations as a share of its iterations): the
  baseline an agent tuning is read against."""
  base = PRESETS[preset]
  share = min(base.config.imitation_iterations / base.iterations, 1.0)
  return {name: share if name == "imitation" else getattr(base.config, name) for name in AGENT_SPACE}


def _parametrization(space: dict[str, Bound], seed: int):
  import nevergrad as ng  # noqa: PLC0415 (an optional dependency: the bench extra)

  params = {}
  for name, b in space.items():
    p = ng.p.Log(lower=b.lower, upper=b.upper) if b.log else ng.p.Scalar(lower=b.lower, upper=b.upper)
    params[name] = p.set_integer_casting() if b.integer else p
  out = ng.p.Dict(**params)
  out.random_state = np.random.RandomState(seed)  # Nevergrad's own draws: seeded
  return out


def check_tuning(*, budget: int, optimizer: str) -> None:
  """ValueError for a tuning budget under 1 or an optimizer Nevergrad does not register."""
  import nevergrad as ng  # noqa: PLC0415 (an optional dependency: the bench extra)

  if budget < 1:
    raise ValueError(f"the tuning budget must be at least 1 evaluation, got {budget}")
  if optimizer not in ng.optimizers.registry:
    raise ValueError(f"unknown Nevergrad optimizer {optimizer!r} (for example NGOpt, OnePlusOne, CMA, RandomSearch)")


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

  check_tuning(budget=budget, optimizer=optimizer)
  opt = ng.optimizers.registry[optimizer](parametrization=_parametrization(space, seed), budget=budget, num_workers=1)
  history = []
  for step in range(budget):
    candidate = opt.ask()
    settings = dict(candidate.value)
    score = float(objective(settings))
    compile_cache.release_if_crowded()  # a candidate's programs (its shapes, its settings) may serve no other
    if not np.isfinite(score):
      raise ValueError(f"the tuning objective returned {score} for {settings}")
    opt.tell(candidate, -score)  # Nevergrad minimises
    row = {"step": step, "settings": settings, "score": score}
    history.append(row)
    if log is not None:
      log(row)
  return dict(opt.provide_recommendation().value), history


def _score(
  method: str,
  *,
  checkpoint: str | None,
  workdir: str,
  name: str,
  worlds: int,
  workers: int,
  families: tuple[str, ...],
) -> float:
  """Mean recall of `method` on training worlds 0 to `worlds - 1` of `families` in the settings sweep's window.
  Its run rows go to `workdir/NAME-wWORLDS-FAMILIES.jsonl` (a call with the same worlds resumes from them; one
  with other worlds or families never mixes in their rows)."""
  stem = os.path.join(workdir, f"{name}-w{worlds}-{'-'.join(families)}")
  with contextlib.redirect_stdout(io.StringIO()):  # run_quality prints its summary rows
    rows_out = run_quality(
      "quick",
      checkpoint=checkpoint,
      method_names=(method,),
      plot_path=stem + ".png",
      out=stem + ".jsonl",
      emit=lambda rows, _out: list(rows),
      log=lambda _text: None,
      scenarios=tuple(families),
      workers=workers,
      seeds=worlds,
      split="train",
    )
  runs = sweep_window([r for r in rows_out if r.get("method") == method])
  if runs.empty:
    raise RuntimeError(f"no run of {method} in the tuning window")
  return float(runs["recall"].astype(float).mean())


def agent_objective(
  *,
  preset: str,
  iterations: int,
  worlds: int,
  workdir: str,
  mode: str = "episodes",
  workers: int = 2,
  families: tuple[str, ...] = ranker_training.FAMILIES,
) -> Objective:
  """Trains an agent at the given settings (`AGENT_SPACE`) for `iterations` on `preset`'s cubes (training worlds
  only: the presets draw from the training split, from index 1,000), then scores `muzero` (`mode` "episodes":
  the agent's own play; "frontier": the default mode) on `worlds` training worlds of each of `families` (quick
  sizes, `split="train"`). `pretrain` trains on random training worlds from index 1,000, the other presets on the
  generator's training cubes. Each candidate's checkpoint and run rows stay in `workdir`, named by the hash of the
  preset's task, the iterations and the config; a candidate already trained there is scored again, not retrained.
  A candidate trains into `NAME.partial` and is renamed to `NAME` when its last iteration is saved, so a stopped
  tuning never scores a half-trained agent (its partial directory is trained afresh by the next call). The
  objective's training seed is the preset config's (`MuZeroConfig.seed`)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; one of {sorted(PRESETS)}")
  if mode not in AGENT_MODES:
    raise ValueError(f"mode must be one of {AGENT_MODES}, got {mode!r}")
  if iterations < 1:
    raise ValueError(f"iterations must be at least 1, got {iterations}")
  base = PRESETS[preset]
  os.makedirs(workdir, exist_ok=True)
  method = "muzero@mode=episodes" if mode == "episodes" else "muzero"

  def objective(settings: dict) -> float:
    config = agent_config(base.config, settings, iterations)
    key = json.dumps(
      [dataclasses.asdict(base.task), iterations, dataclasses.asdict(config)], sort_keys=True, default=str
    )
    name = f"agent-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    checkpoint = os.path.join(workdir, name)
    if not os.path.isdir(checkpoint):
      partial = checkpoint + ".partial"
      shutil.rmtree(partial, ignore_errors=True)  # a stopped call's half-trained candidate
      args = train.Args(
        config=config,
        task=base.task,
        preset=preset,
        iterations=iterations,
        logdir=None,
        checkpoint_dir=partial,
        evaluate=False,
      )
      with contextlib.redirect_stdout(io.StringIO()):
        done = train.run(args, None)
      if done["iteration"] != iterations:
        raise RuntimeError(f"candidate {name} stopped at iteration {done['iteration']} of {iterations}")
      os.replace(partial, checkpoint)
    return _score(
      method, checkpoint=checkpoint, workdir=workdir, name=name, worlds=worlds, workers=workers, families=families
    )

  return objective


def ranker_objective(
  rows: tuple[np.ndarray, ...],
  *,
  worlds: int,
  workdir: str,
  seed: int = 0,
  workers: int = 2,
  families: tuple[str, ...] = ranker_training.FAMILIES,
) -> Objective:
  """Mean recall of `learned` with a ranker fitted at the given settings on `rows` ((x, y, w) training rows,
  `ranker_training.load_rows`), on
  `worlds` training worlds of each of `families` (quick sizes, `split="train"`)."""
  x, y, w = rows
  os.makedirs(workdir, exist_ok=True)

  def objective(settings: dict) -> float:
    weights = ranking.fit(x, y, seed=seed, sample_weight=w, **settings)
    tmp = os.path.join(workdir, "candidate.npz")
    ranking.save(weights, tmp)
    digest = ranking.weights_id(tmp).removeprefix("sha256:")  # named by content, as run rows record the ranker
    path = os.path.join(workdir, f"ranker-{digest}.npz")
    os.replace(tmp, path)
    return _score(
      f"learned@weights={path}",
      checkpoint=None,
      workdir=workdir,
      name=f"ranker-{digest}",
      worlds=worlds,
      workers=workers,
      families=families,
    )

  return objective
