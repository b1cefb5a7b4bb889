"""Discovery on a case table: `python -m experiments.discover`.

Splits the rows into an exploration and a confirmation half (seeded hash),
searches the exploration half with `--method` under `--budget` group-by
queries, re-tests every candidate on the confirmation half (`--correction` at
`--q`, relative difference at least `--min-relative-diff`) and writes
findings.json, findings.csv and report.html into `--out`. The work is done by
`cube_env.run_discovery` and `experiments.report`; this module parses flags
(docs/design.md, Discovery and confirmation).

The search saves its state as it goes (`--state-dir`, default OUT/state: a
journal of its queries every `--save-every` queries, at the end, and on Ctrl-C
or SIGTERM, which exit with status 130) together with the run's settings;
`--resume DIR` continues such a run to the findings an uninterrupted run gives,
without repeating its flags. A fresh run into a state directory starts over.
The state holds the search's raw statistics (every neighbour's size, no
small-cell rule), so a finished run removes it unless `--keep-state`: what
stays in `--out` is what may be shown.

No count from 1 to 10 is ever printed: tests need `--min-group` >= 11 on both
sides, and every printed count below `--min-group` is blanked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Literal

import tyro
from tqdm import tqdm

import cube_env
from cube_env import synthetic
from cube_env.data import ingest
from cube_env.discovery import journal
from experiments import (
  agent,  # noqa: F401 (importing it registers the muzero method with cube_env)
  report,
)
from experiments.agent.loading import load_agent
from experiments.launch import compile_cache
from experiments.launch.errors import UsageError, flag_error, nearest_existing, path_flag, run_command
from experiments.launch.resume import flag, peek_flag, refuse_repeated_flags

_DEFAULTS = cube_env.DiscoveryConfig()  # the library's defaults are the command's


@dataclasses.dataclass(frozen=True)
class Args:
  """Find cohorts where a protected group's measure differs from the rest, and confirm them on held-out rows."""

  data: str | None = None
  """A CSV or Parquet case table (one row per case); overrides --demo."""
  demo: str | None = "mixed"
  """Synthetic scenario to generate when no --data (null, marginal, interactions, masked, confounded, mixed)."""
  dimensions: tuple[str, ...] = ()
  """Dimension columns of --data (cohort filters)."""
  protected: tuple[str, ...] = ()
  """Protected columns of --data (groups compared)."""
  measures: tuple[str, ...] = ()
  """Measure columns of --data."""
  adjust: tuple[str, ...] = ()
  """Case-mix adjusters (indirect standardization), e.g. procedure asa_class."""
  favorable: tuple[str, ...] = ()
  """Binary measures whose event is the good outcome (their relative difference compares the rates of not having it)."""
  method: Literal["auto", "exhaustive", "frontier", "learned", "uct", "beam", "greedy", "random", "muzero"] = "auto"
  """Search method; auto enumerates every cohort when they fit --budget (and --time-limit), else searches (its
  choice is printed and recorded in the report); muzero plays the packaged agent, or the one --checkpoint names."""
  time_limit: float | None = None
  """Seconds the search may spend (auto plans with it; a walker stops when it is up). None: no limit."""
  checkpoint: str | None = None
  """A trained agent for --method muzero: a directory written by experiments.train, or an .npz exported from one by
  experiments.agent.export (default: the packaged agent)."""
  agent_mode: Literal["frontier", "episodes"] = "frontier"
  """How --method muzero searches: best-first over the frontier of seen cohorts ranked by the agent's search
  (frontier), or the episodes it was trained to play (episodes); see experiments/agent/play.py."""
  budget: int = 100000
  """Group-by queries (environment steps) the search may spend."""
  max_depth: int = 3
  """Most filters in a cohort."""
  min_group: int = cube_env.SMALL_CELL
  """Smallest group (and rest) that is tested or shown; at least 11."""
  q: float = _DEFAULTS.q
  """Level of the confirmation's multiple-testing rule over all candidates (see --correction)."""
  correction: Literal["weighted", "holm", "bh"] = _DEFAULTS.correction  # type: ignore[assignment]
  """Confirmation rule at --q: weighted Holm (family-wise error; more alpha where the exploration half saw more
  evidence), Holm (family-wise error), or Benjamini-Hochberg (false discovery rate: more findings, a share of them
  false)."""
  tilt: float = _DEFAULTS.tilt
  """--correction weighted: a candidate's weight is exp(tilt * its exploration |z|)."""
  confirm_new_z: float | None = _DEFAULTS.confirm_new_z
  """A confirmed finding must also be new on the confirmation half at this |z| (None: newness is not re-tested
  there)."""
  pooled_check: bool = _DEFAULTS.pooled_check
  """On continuous measures the confirmation p is the larger of Welch's and Student's pooled-variance p (a small
  group whose own variance collapsed by chance cannot pass); --no-pooled-check: Welch's p alone."""
  mirror_z: float | None = _DEFAULTS.mirror_z
  """A finding that another group's opposite gap in its cohort explains (its own gap against the rest without that
  group has z below this) is not confirmed; None: no such check."""
  explore_fraction: float = _DEFAULTS.explore_fraction
  """Share of the rows the search sees; the rest confirm."""
  min_relative_diff: float = 0.10
  """Smallest relative difference a confirmed finding must have (AHRQ: 10%)."""
  z_screen: str = str(_DEFAULTS.z_screen)
  """|z| a candidate needs on the exploration half, or 'bonferroni' (the Bonferroni threshold for the number of
  hypotheses searched)."""
  explore_new_z: float | None = _DEFAULTS.explore_new_z
  """A candidate whose parent shows the same gap must exceed the rest of that parent by this heterogeneity z on the
  exploration half to count as new; None: the --z-screen."""
  beam_width: int = 8
  """Width of --method beam."""
  seed: int = 0
  """Seed of the row split, of the method's random choices and of --demo data."""
  n_rows: int = 20000
  """Rows of --demo data."""
  max_categories: int = 12
  """Categories kept per column; rarer values fold into OTHER."""
  out: str = "runs/discover"
  """Directory for findings.json, findings.csv and report.html."""
  show: int = 20
  """Rows of the findings table printed."""
  progress: bool = True
  """Show a progress bar while searching."""
  save_state: bool = True
  """Save the search state as it goes (--no-save-state: a run that cannot be resumed)."""
  state_dir: str | None = None
  """Directory of the saved search state and settings (default: OUT/state)."""
  save_every: int = 100
  """Save the search state every this many queries (also at the end and on Ctrl-C/SIGTERM)."""
  keep_state: bool = False
  """Keep the search state after the run finishes (to --resume it again, e.g. into another --out). It holds the
  search's raw statistics, small counts included: keep it as private as the table. By default a finished run removes
  it, so --out holds only what may be shown; a stopped run always keeps it."""
  resume: str | None = None
  """Continue the run whose state is in this directory (its --state-dir, or its --out); its saved settings are
  used, so no other flag is needed; only --out, --show, --progress, --save-every and --keep-state may differ."""


SETTINGS = "settings.json"  # the run's `Args`, beside its journal
SAFE_ON_RESUME = ("out", "show", "progress", "save_every", "keep_state")  # flags a resumed run may change


def save_settings(args: Args, directory: str) -> None:
  """Writes `args` (--data, --checkpoint and --out made absolute) to DIRECTORY/settings.json, atomically."""
  fields = dataclasses.asdict(args)
  for name in ("data", "checkpoint", "out"):
    if fields[name] is not None:
      fields[name] = os.path.abspath(fields[name])
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, SETTINGS + ".tmp")
  with open(tmp, "w", encoding="utf-8") as handle:
    json.dump(fields, handle, indent=1)
  os.replace(tmp, os.path.join(directory, SETTINGS))


def saved_args(resume: str) -> Args:
  """The settings saved by the run whose state is in `resume` (its --state-dir, or its --out), as `Args` that
  continue it (`resume`, its state directory, saving on).

  Raises:
    UsageError: no saved run there, or a settings file that is not what `save_settings` writes (named).
  """
  directory = resume
  if not os.path.isdir(resume):
    raise UsageError(f"--resume {resume}: not a directory (give the run's --out, or its --state-dir)")
  if not os.path.isfile(os.path.join(directory, SETTINGS)) and os.path.isfile(
    os.path.join(directory, "state", SETTINGS)
  ):
    directory = os.path.join(directory, "state")
  path = os.path.join(directory, SETTINGS)
  try:
    with open(path, encoding="utf-8") as handle:
      saved = json.load(handle)
  except FileNotFoundError:
    raise UsageError(
      f"--resume {resume}: no saved discovery run there (no {SETTINGS}; a finished run removes its state unless "
      "--keep-state)"
    ) from None
  except ValueError as err:
    raise UsageError(f"--resume {resume}: {path} is unreadable ({err})") from None
  if not isinstance(saved, dict):
    raise UsageError(f"--resume {resume}: {path} holds {type(saved).__name__}, not the run's settings")
  values = {}
  for field in dataclasses.fields(Args):
    default = getattr(Args(), field.name)
    value = saved.get(field.name, default)
    value = tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    if not _fits(value, default):
      raise UsageError(
        f"--resume {resume}: {path} holds {field.name}={value!r}, which is not a setting of this command "
        "(the file is written by discover: start the run again, or restore the file)"
      )
    values[field.name] = int(value) if type(default) is int else value
  if saved.get("state_dir") is None:  # the state was its --out's own (OUT/state): that directory, wherever it is now
    values["out"] = os.path.dirname(os.path.abspath(directory))  # (a CLI audit: a moved copy wrote to the old --out)
  return Args(**{**values, "resume": resume, "state_dir": directory, "save_state": True})


def _fits(value, default) -> bool:
  """`value` has the type of a setting whose default is `default` (None: a path or number, or None)."""
  if default is None:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, (int, float)):  # a whole-number setting takes no fraction (nor inf or NaN)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and (isinstance(default, float) or float(value).is_integer())
  if isinstance(default, tuple):
    return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
  return isinstance(value, type(default))


def resumed_args(argv: list[str]) -> Args:
  """The command line `argv` (with `--resume DIR`) parsed over the settings the run in DIR saved: every flag not
  given keeps its saved value, the flags of `SAFE_ON_RESUME` may change, and any other given flag must equal
  the saved value (even where it is the flag's default).

  Raises:
    UsageError: as `saved_args`; a given flag that contradicts the saved run (every one named).
  """
  saved = saved_args(peek_flag(argv, "resume"))
  args = tyro.cli(Args, default=saved, args=argv, prog="python -m experiments.discover")
  paths = ("data", "checkpoint")  # saved absolute (`save_settings`): a relative path to the same file agrees
  args = dataclasses.replace(
    args, **{n: _absolute(getattr(args, n)) for n in paths if getattr(args, n) != getattr(saved, n)}
  )
  conflicts = [
    f"{flag(f.name)} {getattr(args, f.name)} (saved: {getattr(saved, f.name)})"
    for f in dataclasses.fields(Args)
    if f.name not in SAFE_ON_RESUME and getattr(args, f.name) != getattr(saved, f.name)
  ]
  if conflicts:
    raise UsageError(
      f"--resume {args.resume}: {'; '.join(conflicts)} contradict{'s' if len(conflicts) == 1 else ''} the run "
      f"saved in {saved.state_dir}; only {', '.join(flag(n) for n in SAFE_ON_RESUME)} may change on --resume"
    )
  return args


def _absolute(path: str | None) -> str | None:
  return None if path is None else os.path.abspath(path)


def state_directory(args: Args) -> str | None:
  """Where `args`' run keeps its search state (None: --no-save-state)."""
  if not args.save_state:
    return None
  return args.state_dir or os.path.join(args.out, "state")


_COLUMN_FLAGS = ("dimensions", "protected", "measures")  # the flags that name columns of --data


def _load(args: Args):
  if args.data is not None:
    for flag in _COLUMN_FLAGS:
      if not getattr(args, flag):
        raise ValueError(f"--data needs --{flag}")
    df = cube_env.read_table(args.data)
    schema = cube_env.Schema(dimensions=args.dimensions, protected=args.protected, measures=args.measures)
    return df, schema, None, args.data
  given = [f"--{flag}" for flag in _COLUMN_FLAGS if getattr(args, flag)]
  if given:  # without --data they would be ignored and the demo table searched instead
    raise ValueError(
      f"{' and '.join(given)} name columns of --data, which is not given (without it the run uses --demo data)"
    )
  if args.demo not in synthetic.SCENARIOS:
    raise ValueError(f"--demo must be one of {synthetic.SCENARIOS}, got {args.demo!r}")
  df, schema, truth = synthetic.make_cases(args.demo, args.seed, n_rows=args.n_rows)
  # The generator's schema names the case-mix columns it drew (`synthetic.ADJUSTERS`); here --adjust decides.
  schema = dataclasses.replace(schema, adjusters=())
  return df, schema, truth, f"synthetic {args.demo!r} (seed {args.seed}, {len(df)} rows)"


def _z_screen(text: str):
  if text == "bonferroni":
    return text
  try:
    return float(text)
  except ValueError:
    raise ValueError(f"--z-screen must be a number or 'bonferroni', got {text!r}") from None


def _method_options(args: Args) -> dict:
  """Options of the `--method` (registered in `cube_env`; `experiments.agent` registers muzero)."""
  if args.method == "muzero":
    # Absolute: the journal's fingerprint holds it, and a resumed run may start elsewhere.
    options = {"mode": args.agent_mode}
    return {"checkpoint": os.path.abspath(args.checkpoint), **options} if args.checkpoint is not None else options
  if args.checkpoint is not None:
    raise ValueError(f"--checkpoint is only used by --method muzero (got --method {args.method})")
  if args.agent_mode != "frontier":
    raise ValueError(f"--agent-mode is only used by --method muzero (got --method {args.method})")
  return {"width": args.beam_width} if args.method == "beam" else {}


def run(args: Args, *, fresh: bool = True) -> dict:
  """Runs discovery and writes the report; returns the run, its score and the report paths.

  A `fresh` run clears the journal in its state directory and saves its settings there; otherwise (`--resume`)
  the journal there is continued.
  """
  if args.min_group < cube_env.SMALL_CELL:
    raise ValueError(f"--min-group must be at least {cube_env.SMALL_CELL} (small-cell rule), got {args.min_group}")
  if args.budget < 1:
    raise ValueError(f"--budget must be at least 1 group-by query, got {args.budget}")
  if args.save_every < 1:
    raise ValueError(f"--save-every must be at least 1 query, got {args.save_every}")
  if args.show < 0:
    raise ValueError(f"--show must be at least 0 rows, got {args.show}")
  if fresh:  # a saved run keeps what it was started with (an earlier version took these combinations)
    _check_combinations(args)
  options = _method_options(args)
  _check_paths(args)
  settings = dict(
    budget=args.budget,
    time_limit=args.time_limit,
    max_depth=args.max_depth,
    min_group=args.min_group,
    z_screen=_z_screen(args.z_screen),
    explore_new_z=args.explore_new_z,
    q=args.q,
    correction=args.correction,
    tilt=args.tilt,
    confirm_new_z=args.confirm_new_z,
    pooled_check=args.pooled_check,
    mirror_z=args.mirror_z,
    explore_fraction=args.explore_fraction,
    min_relative_diff=args.min_relative_diff,
    adjust=args.adjust,
    favorable=args.favorable,
    seed=args.seed,
    max_categories=args.max_categories,
    method_options=tuple(options.items()),
  )
  cube_env.DiscoveryConfig(method=args.method, **settings)  # its checks, before any directory is made or read
  made_out = not os.path.exists(args.out)
  state_dir = state_directory(args)
  saved = journal.saved_queries(state_dir) if state_dir is not None and fresh else 0
  if saved > 0:  # a CLI audit: a fresh run cleared it
    raise ValueError(
      f"--out {args.out}: {state_dir} holds a stopped run's saved search ({saved:,} "
      f"queries): continue it with --resume {args.out if args.state_dir is None else state_dir}, or give another "
      f"--out{' or --state-dir' if args.state_dir is None else ''} (or remove {state_dir})"
    )
  df, schema, truth, source = _load(args)
  if state_dir is not None and fresh:
    journal.clear(state_dir)
    save_settings(args, state_dir)
  bar = None  # opened once the search starts (a split refused while preparing printed "0%" before its error)

  def stopped(step: str) -> None:  # a signal after the search: stopped between steps, the search state saved
    saved = (
      f"the search state is saved in {state_dir}" if state_dir is not None else "nothing is saved (--no-save-state)"
    )
    journal.check_stop(f"stopped by a signal {step}; {saved}")

  def stage(name: str) -> None:
    nonlocal bar
    if name != "searching":
      stopped(f"before {name}")
    if name == "searching":
      kw = dict(unit="query", desc=f"{args.method} search", disable=not args.progress, file=sys.stderr, leave=False)
      bar = tqdm(total=args.budget, **kw)

  def progress(used: int) -> None:
    bar.update(used - bar.n)

  try:
    result = cube_env.run_discovery(
      df,
      schema,
      method=args.method,
      progress=progress,
      stage=stage,
      state_dir=state_dir,
      save_every=args.save_every,
      **settings,
    )
  except Exception:  # failed before any query was saved (a column, a setting, a missing agent): nothing to resume
    if state_dir is not None and fresh and journal.saved_queries(state_dir) == 0:
      remove_state(state_dir)  # (an audit found an empty OUT/state/ after each refused run)
      if made_out and os.path.isdir(args.out) and not os.listdir(args.out):
        os.rmdir(args.out)  # and the empty --out that held it
    raise
  finally:
    if bar is not None:
      bar.close()
  score = cube_env.truth_score(result, truth) if truth is not None else None
  planted = report.planted_table(result, truth) if truth is not None else None
  if os.path.isfile(os.path.join(args.out, "findings.json")):  # said, not silent (a CLI audit)
    print(f"note: --out {args.out} held an earlier analysis: its findings and report are replaced", file=sys.stderr)
  stopped("before writing the report")
  paths = report.write_report(result, args.out, source=source, truth=score, planted=planted)
  report.print_summary(result, source=source, score=score, paths=paths, show=args.show)
  if state_dir is not None and not args.keep_state:  # the findings are saved: the raw state is not needed
    remove_state(state_dir)
  return {"run": result, "score": score, "paths": paths}


def _check_combinations(args: Args) -> None:
  """ValueError for a flag that the rest of the command line would leave unread (a CLI audit: each was taken and
  ignored): given away from its default, that is (a flag given at its default changes nothing)."""
  defaults = Args()
  unread = []
  if args.method != "beam" and args.beam_width != defaults.beam_width:
    unread.append(f"--beam-width is only used by --method beam (got --method {args.method})")
  if args.correction != "weighted" and args.tilt != defaults.tilt:
    unread.append(f"--tilt is only used by --correction weighted (got --correction {args.correction})")
  if args.data is not None and (args.demo != defaults.demo or args.n_rows != defaults.n_rows):
    given = [flag(n) for n in ("demo", "n_rows") if getattr(args, n) != getattr(defaults, n)]
    unread.append(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} not used with --data (a file's rows)")
  if unread:
    raise ValueError("; ".join(unread))


def _check_paths(args: Args) -> None:
  """ValueError naming the flag for a path the run could not use, before the table is read or a query spent (a CLI
  audit: a directory as --data, a file as --out or --state-dir, an unwritable one, each a traceback, the last after
  the whole search had run and nothing could be saved)."""
  if args.data is not None and os.path.isdir(args.data) and not args.data.lower().endswith((".parquet", ".pq")):
    # A folder named .parquet is a Parquet dataset (part files, as Spark writes), which `read_table` reads (an
    # ingest audit: the command refused what the library read).
    raise ValueError(
      f"--data {args.data} is a directory, not a table file (a folder of Parquet part files is read when its name "
      "ends in .parquet)"
    )
  directories = [("out", args.out)] + ([("state_dir", args.state_dir)] if args.save_state and args.state_dir else [])
  for name, path in directories:
    if os.path.exists(path) and not os.path.isdir(path):
      raise ValueError(f"{flag(name)} {path} is a file, not a directory")
    existing = nearest_existing(path)  # the deepest part that exists: it will be made under it
    if not os.path.isdir(existing):
      raise ValueError(f"{flag(name)} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
      raise ValueError(f"{flag(name)} {path}: {existing} is not writable by this user")
  if args.method == "muzero" and args.checkpoint is not None:  # loaded again by the search: seconds, not a table's
    load_agent(args.checkpoint)  # read and prepared first (an audit: its error came after both)


def remove_state(directory: str) -> None:
  """Removes a finished run's journal and settings from `directory`, and the directory when that leaves it empty."""
  journal.clear(directory)
  for name in (SETTINGS, SETTINGS + ".tmp"):
    if os.path.exists(os.path.join(directory, name)):
      os.remove(os.path.join(directory, name))
  if os.path.isdir(directory) and not os.listdir(directory):
    os.rmdir(directory)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    refuse_repeated_flags(argv)
    fresh = peek_flag(argv, "resume") is None
    args = tyro.cli(Args, args=argv, prog="python -m experiments.discover") if fresh else resumed_args(argv)
    state_dir = state_directory(args)
    with journal.stop_on_signals():
      # Its state folder (settings and journal, `--resume`'s) is resumable once written; not a training checkpoint.
      return run_command(
        lambda: run(args, fresh=fresh),
        program="experiments.discover",
        checkpoint_dir=state_dir,
        resumable=os.path.isdir,
        paths=_paths(argv),
      )
  except ValueError as err:
    print(f"error: {_as_flags(str(err))}", file=sys.stderr)
    return 2
  except OSError as err:  # a file the checks could not foresee (a disk full, a permission changed mid-run)
    print(f"error: {path_flag(err, _paths(argv))}{err}", file=sys.stderr)
    return 1


def _paths(argv: list[str]) -> dict[str, str | None]:
  """The paths the command line gives, by flag (an error at one of them names its flag: `path_flag`)."""
  return {name: peek_flag(argv, name) for name in ("out", "state_dir", "data", "resume", "checkpoint")}


def _as_flags(message: str) -> str:
  """The library's names in an error as this command's flags: schema fields (`schema.dimensions` -> `--dimensions`)
  anywhere, and a setting that opens the message (`max_depth must be ...` -> `--max-depth must be ...`; the
  settings of `cube_env.DiscoveryConfig` and the beam's width that this command sets from a flag of that name), and
  such a setting anywhere as the subject of a value or a rule (`launch.errors.flag_error`)."""
  for role in ingest.ROLES:
    message = message.replace(f"schema.{role}", flag("adjust" if role == "adjusters" else role))
  for name in _SETTING_FLAGS:
    if message.startswith(name + " "):
      message = flag(name.replace(" ", "_")) + message[len(name) :]
      break
  # and one written as the subject of a setting anywhere (`min_group = 11`, `min_group must be lower`)
  return str(flag_error(ValueError(message), [n for n in _SETTING_FLAGS if " " not in n]))


# The library's settings that are also this command's flags (the same name, `_` as `-`); "beam width" is how the
# beam search names its width (`--beam-width`); `n_rows`, the synthetic generator's (`--n-rows`; a CLI audit).
_SETTING_FLAGS = ("beam width", "n_rows") + tuple(
  sorted({f.name for f in dataclasses.fields(cube_env.DiscoveryConfig)} & {f.name for f in dataclasses.fields(Args)})
)


if __name__ == "__main__":
  compile_cache.enable()
  sys.exit(main())
