"""Discovery on a case table: prepare (split, adjust, space), search, confirm (docs/design.md, Discovery and confirmation).

    findings = cube_env.discover(df, schema, method="uct", budget=2000)
    findings[findings.confirmed]

The steps are public, so benchmarks and tools run exactly these:

    prepared = prepare(df, schema, config)       # once per table
    result = search(prepared, "beam")             # any registered method, or a `Method`
    findings = confirm(result, prepared)

`run_discovery` runs the three and returns everything a report needs
(`Discovery`); `discover` returns its findings table. A method is a name in
the registry (`methods.method_names()`; plug-ins join with
`methods.register_method`) or any function with the signature
`method(space, *, budget, seed, progress=None, **options) -> SearchResult`.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np
import pandas as pd

from cube_env.data import holdout
from cube_env.data.disclosure import SMALL_CELL, disclosure_limit, hide_small_cells, note_text
from cube_env.data.ingest import Cube, near_names, table_measure_numbers
from cube_env.data.schema import Schema, column_names
from cube_env.discovery import auto as _auto  # noqa: F401 (registers the `auto` method)
from cube_env.discovery import confirm as cf
from cube_env.discovery.journal import Journal, fingerprint_arrays
from cube_env.discovery.methods import Method, check_options, get_method
from cube_env.discovery.scoring import score_findings
from cube_env.discovery.space import Progress, SearchResult, Space, TimeLimit, make_space
from cube_env.discovery.stories import group_stories
from cube_env.environment.stats import MIN_EXPECTED

SAME_VALUES = 1e-6  # a measure whose sum of squared deviations is under this share of its sum of squares: one value
MAX_DEPTH = 64  # most filters a cohort may have (its int32 arrays; a depth that large searches every cohort anyway)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
  """Settings of one discovery run (all recorded in the report)."""

  method: str = "uct"  # name of the search method
  budget: int = 1000  # group-by queries (environment steps) the search may spend
  time_limit: float | None = None  # seconds the search may spend (`TimeLimit`; `auto` plans with it); None: no limit
  max_depth: int = 3  # most filters in a cohort
  min_group: int = SMALL_CELL  # smallest group (and rest) tested; the small-cell rule needs >= 11
  # Defaults chosen on training worlds (issue 16; docs/design.md, Discovery and confirmation); before issue 16:
  # z_screen="bonferroni", explore_new_z=None, correction="bh", confirm_new_z=None, pooled_check=False, mirror_z=None.
  # explore_new_z 2.5 and tilt 1 (was 2) chosen later on 18 training worlds (README, Power and false findings).
  # |z| for a candidate, or "bonferroni" over the search space. The library functions' own default is 4.0
  # (`make_env`, `cohort_table`, `confirm_candidates`; training's `CubeTask` "bonferroni"): a run passes this one.
  z_screen: float | str = 3.5
  # Exploration newness: a candidate whose parent shows the same gap must exceed that parent's rest by this
  # heterogeneity z (None: z_screen, the behaviour before it was a setting).
  explore_new_z: float | None = 2.5
  q: float = 0.05  # level of the confirmation's multiple-testing rule over the candidates
  correction: str = "weighted"  # that rule: "weighted" or "holm" (family-wise error), "bh" (false discovery rate)
  tilt: float = 1.0  # "weighted": candidate weights exp(tilt * exploration |z|)
  confirm_new_z: float | None = 2.0  # also re-test newness on the confirmation half at this |z| (None: no)
  pooled_check: bool = True  # continuous measures: the corrected p is max(Welch, Student's pooled)
  mirror_z: float | None = 2.0  # not confirmed: another group's opposite gap explains it (confirm.mirror_of)
  min_relative_diff: float = 0.10  # smallest relative difference reported (AHRQ rule)
  adjust: tuple[str, ...] = ()  # case-mix adjusters (indirect standardization)
  favorable: tuple[str, ...] = ()  # binary measures whose event is good (`check_favorable`)
  seed: int = 0  # row split and the method's random choices
  explore_fraction: float = 0.5  # share of rows the search sees
  max_categories: int = 12  # categories kept per column (rarer ones fold into OTHER)
  method_options: tuple[tuple[str, Any], ...] = ()  # e.g. (("width", 8),) for beam

  def __post_init__(self):
    _check_types(self)
    if self.budget < 1:  # a whole number (`_check_types`)
      raise ValueError(f"budget must be a whole number of group-by queries >= 1, got {self.budget!r}")
    if self.time_limit is not None and not 0 < self.time_limit < float("inf"):  # inf: None says no limit
      raise ValueError(f"time_limit must be a positive number of seconds or None, got {self.time_limit!r}")
    if self.min_group < SMALL_CELL:
      raise ValueError(f"min_group must be at least {SMALL_CELL} (small-cell rule), got {self.min_group}")
    if not 0.0 < self.q < 1.0:
      raise ValueError(f"q must lie in (0, 1), got {self.q}")
    if self.correction not in cf.CORRECTIONS:
      raise ValueError(f"correction must be one of {cf.CORRECTIONS}, got {self.correction!r}")
    if self.explore_new_z is not None and not 0.0 < self.explore_new_z <= 40.0:
      raise ValueError(f"explore_new_z must lie in (0, 40] or be None, got {self.explore_new_z}")
    if self.confirm_new_z is not None and not 0.0 < self.confirm_new_z <= 40.0:
      raise ValueError(f"confirm_new_z must lie in (0, 40] or be None, got {self.confirm_new_z}")
    if self.mirror_z is not None and not -40.0 <= self.mirror_z <= 40.0:
      raise ValueError(f"mirror_z must lie in [-40, 40] or be None, got {self.mirror_z}")
    if not 0.0 <= self.tilt <= 10.0:
      raise ValueError(f"tilt must lie in [0, 10], got {self.tilt}")
    if not 0.0 <= self.min_relative_diff < float("inf"):  # NaN too: no difference would ever pass it
      raise ValueError(f"min_relative_diff must be a number >= 0, got {self.min_relative_diff}")
    if self.max_depth < 1:
      raise ValueError(f"max_depth must be at least 1, got {self.max_depth}")
    if self.max_depth > MAX_DEPTH:
      raise ValueError(f"max_depth must be at most {MAX_DEPTH}, got {self.max_depth}")
    if isinstance(self.z_screen, str):
      if self.z_screen != "bonferroni":
        raise ValueError(f"z_screen must be a positive number or 'bonferroni', got {self.z_screen!r}")
    elif not 0.0 < float(self.z_screen) < float("inf"):
      raise ValueError(f"z_screen must be a positive number or 'bonferroni', got {self.z_screen!r}")
    if not 0 <= self.seed < 16**16:  # a whole number (`_check_types`)
      raise ValueError(f"seed must be a non-negative integer below 16**16, got {self.seed!r}")
    if not 0.0 < self.explore_fraction < 1.0:
      raise ValueError(f"explore_fraction must lie in (0, 1), got {self.explore_fraction}")
    if self.max_categories < 2:
      raise ValueError(f"max_categories must be >= 2, got {self.max_categories}")
    for name in ("adjust", "favorable"):  # a bare string would be read letter by letter (an audit)
      object.__setattr__(self, name, column_names(getattr(self, name), name))
      names = getattr(self, name)
      twice = sorted({n for n in names if names.count(n) > 1})
      if twice:  # as a column named twice in the schema (a CLI audit: the report said adjusted by ['a', 'a'])
        raise ValueError(f"{name} names {', '.join(map(repr, twice))} twice")
    if self.method == "exhaustive" and self.time_limit is not None:  # a CLI audit: it ran 20 s under a limit of 1 s
      raise ValueError(
        "time_limit is not applied by method 'exhaustive', which enumerates every cohort to the depth its budget "
        "fits: give it a smaller budget, or use method 'auto', which plans with the time limit"
      )
    object.__setattr__(self, "method_options", tuple(sorted(dict(self.method_options).items())))


_WHOLE = ("budget", "max_depth", "max_categories", "seed")  # DiscoveryConfig's whole-number fields
_REAL = ("min_group", "q", "tilt", "min_relative_diff", "explore_fraction", "z_screen")
_OPTIONAL = ("explore_new_z", "confirm_new_z", "mirror_z", "time_limit")  # numbers or None


def _check_types(config: DiscoveryConfig) -> None:
  """ValueError naming the field for a setting of the wrong type (a string '11' or 2.5 queries raised TypeError deep
  in the checks, or ran: max_depth 2.5 searched depth 3, an API audit); NumPy scalars become Python numbers (the
  report writes the settings as JSON)."""
  for name in _WHOLE + _REAL + _OPTIONAL:
    value = getattr(config, name)
    if value is None and name in _OPTIONAL or name == "z_screen" and isinstance(value, str):
      continue
    whole = name in _WHOLE
    kinds = (int, np.integer) if whole else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
      what = "a whole number" if whole else "a number" + (" or None" if name in _OPTIONAL else "")
      what += " or 'bonferroni'" if name == "z_screen" else ""
      raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, np.generic):
      object.__setattr__(config, name, value.item())
  if not isinstance(config.pooled_check, (bool, np.bool_)):  # "no" would read as True
    raise ValueError(f"pooled_check must be True or False, got {config.pooled_check!r}")
  object.__setattr__(config, "pooled_check", bool(config.pooled_check))
  if not np.isfinite(config.min_group):
    raise ValueError(f"min_group must be a finite number, got {config.min_group!r}")


def confirmation_rule(config: DiscoveryConfig) -> str:
  """The confirmation rules of `config` in one line (`confirm.rule_text`)."""
  return cf.rule_text(
    q=config.q,
    correction=config.correction,
    tilt=config.tilt,
    new_z=config.confirm_new_z,
    pooled_check=config.pooled_check,
    mirror_z=config.mirror_z,
    min_relative_diff=config.min_relative_diff,
  )


@dataclasses.dataclass(frozen=True)
class Discovery:
  """One discovery run."""

  config: DiscoveryConfig
  halves: holdout.Halves
  search: SearchResult
  findings: pd.DataFrame  # `confirm.confirm_candidates` output: every candidate, confirmed ones first
  seconds: float  # whole run: split, search, confirmation

  @property
  def confirmed(self) -> pd.DataFrame:
    """The confirmed rows of `findings`, with every number as computed: small counts included (a library audit).
    What to show anyone: `cube_env.shown_findings(run.findings, run.config.min_group, halves=run.halves)`, as the
    report does, which hides them."""
    return self.findings[self.findings["confirmed"].astype(bool)].reset_index(drop=True)


def _resolve_method(method: str | Method, options: tuple[tuple[str, Any], ...] = ()) -> tuple[str, Method]:
  """(name, function) of a registered name or of a method function (named by its `method_name` or `__name__`);
  ValueError for an unknown name or an option the method does not take (`methods.check_options`)."""
  if callable(method):
    name, fn = getattr(method, "method_name", getattr(method, "__name__", "custom")), method
  else:
    name, fn = method, get_method(method)
  check_options(name, fn, dict(options))
  return name, fn


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What a search needs, built once per table (`prepare`)."""

  config: DiscoveryConfig
  halves: holdout.Halves  # exploration and confirmation cubes (adjusted when config.adjust)
  space: Space  # the exploration cube ready to search


def _check_columns(df: pd.DataFrame, schema: Schema, config: DiscoveryConfig) -> None:
  for name in config.adjust:
    if name not in df.columns:
      raise ValueError(
        f"adjuster column {name!r} is not in the table{near_names(name, df.columns)}; columns are {list(df.columns)}"
      )
    if name in schema.measures or name in schema.protected:
      raise ValueError(f"adjuster column {name!r} is a measure or protected column")
  check_favorable(config.favorable, schema.measures, df)


def check_favorable(
  favorable: Iterable[str],
  measures: Iterable[str],
  df: pd.DataFrame | None = None,
  *,
  numbers: Mapping[str, np.ndarray] | None = None,
) -> None:
  """ValueError naming a favorable measure that is not one of the measures or, given the table `df`, not binary.

  Favorable turns a binary measure's event from adverse to good (its relative difference and plain-words sentence
  then speak of the non-event rate); a continuous measure has no event to turn, so naming one is refused rather
  than ignored (its higher mean shows as a positive difference whatever it means). `numbers`: measures' values a
  caller has already read from `df` (`table_measure_numbers`), used instead of reading them again."""
  for name in favorable:
    if name not in measures:
      raise ValueError(f"favorable measure {name!r} is not one of the measures {list(measures)}")
    if df is not None and name in df.columns:  # a missing column is named by `validate_table`
      values = numbers[name] if numbers and name in numbers else table_measure_numbers(df, name)[0]
      seen = values[np.isfinite(values)]
      if not np.all((seen == 0.0) | (seen == 1.0)):
        raise ValueError(
          f"favorable measure {name!r} is not binary (0/1 events): favorable names measures whose event is good "
          "(e.g. discharged home); a continuous measure's direction shows in the sign of its difference"
        )


def prepare(df: pd.DataFrame, schema: Schema, config: DiscoveryConfig) -> Prepared:
  """Checks the columns, splits the rows (and adjusts for case mix), builds the exploration search space.

  The adjusters are `config.adjust`, or the schema's `adjusters` where the config names none (a cold audit: a
  schema's adjusters were checked, then left unused without a word, so the run was not adjusted); both given and
  different is an error.

  Raises:
    ValueError naming the problem (unknown column, empty cohort space, ...).
  """
  from_schema = tuple(schema.adjusters or ())
  if from_schema and not config.adjust:
    config = dataclasses.replace(config, adjust=from_schema)
  elif from_schema and tuple(config.adjust) != from_schema:
    raise ValueError(
      f"the schema's adjusters {list(from_schema)} differ from adjust {list(config.adjust)}: name the case-mix "
      "adjusters in one place"
    )
  _check_columns(df, schema, config)
  halves = holdout.split_cubes(
    df,
    schema,
    seed=config.seed,
    fraction=config.explore_fraction,
    adjusters=config.adjust,
    max_categories=config.max_categories,
    min_rows=min_halves(config),
  )
  space = make_space(
    halves.explore,
    max_depth=config.max_depth,
    min_group=config.min_group,
    z_screen=config.z_screen,
    new_z=config.explore_new_z,
  )
  notes = untested_groups(halves.explore, config.min_group) + untestable_measures(halves.explore, config.min_group)
  halves = dataclasses.replace(halves, summary=halves.summary + notes)
  return Prepared(config=config, halves=halves, space=space)


def min_halves(config: DiscoveryConfig) -> int:
  """Fewest rows each half of the split must hold: a group and a rest of `min_group` rows each (`prepare`; the
  service checks an upload against it before queueing the job)."""
  return int(np.ceil(2 * config.min_group))


def untested_groups(cube: Cube, min_group: float) -> tuple[str, ...]:
  """A coding note per protected column with groups of fewer than `min_group` rows in `cube` (never tested).

  Such a group is in the rest of every other group's tests but never compared itself, in any cohort; the
  note names it without its count (`disclosure_limit`). Where the shown groups' counts would give its rows in a
  cohort back, that cohort's tests of the column show no numbers (`hide_remainders`).
  """
  meta, codes, rows = cube.meta, np.asarray(cube.codes), np.asarray(cube.rows, np.float64)
  notes = []
  for p, name in enumerate(meta.protected_names):
    column = meta.n_dimensions + p
    labels = meta.categories[column]
    per_group = np.bincount(codes[:, column], weights=rows, minlength=len(labels))
    small = [label for label, n in zip(labels, per_group) if n < min_group]
    if len(small) == 1:
      notes.append(
        f"protected {name!r}: group {small[0]!r} has fewer than {disclosure_limit(min_group)} exploration rows "
        f"and is never tested (its rows stay in the other groups' rest; a cohort's {name!r} tests whose numbers "
        "would give a small count of them back show none)"
      )
    elif small:
      notes.append(
        f"protected {name!r}: groups {', '.join(repr(g) for g in small)} have fewer than "
        f"{disclosure_limit(min_group)} exploration rows each and are never tested (their rows stay in the other "
        f"groups' rest; a cohort's {name!r} tests whose numbers would give a small count of them back show none)"
      )
  return tuple(notes)


def untestable_measures(cube: Cube, min_group: float = SMALL_CELL) -> tuple[str, ...]:
  """A coding note per measure that no cohort of `cube` can test: such a measure is never tested, and a run shows no
  finding of it (not the same as no disparity). The notes give no count.

  A binary test needs `MIN_EXPECTED` expected events and non-events on each side, so a cohort with fewer than twice
  that many has none, and no cohort has more than the whole table. Any test needs `min_group` rows with the measure
  on each side, so a measure with fewer than twice that many values has none; nor does one whose values are all the
  same (an ingest audit: such measures, constant or nearly empty in the exploration half, left the search without a
  word, where a rare binary one was named).
  """
  meta, stats = cube.meta, np.asarray(cube.stats, np.float64)
  limit = disclosure_limit(min_group)
  never = "it is never tested, so no finding of it is not evidence of no disparity"
  notes = []
  for m, name in enumerate(meta.measure_names):
    n = stats[:, m, 0].sum()
    if meta.is_binary[m]:
      events = round(stats[:, m, 1].sum() + meta.shift[m] * n)
      if min(events, n - events) < 2 * MIN_EXPECTED:
        notes.append(
          f"measure {name!r}: fewer than {2 * MIN_EXPECTED} events or non-events in the exploration rows, too few "
          f"for any test (a binary test needs {MIN_EXPECTED} expected of each on each side); {never}"
        )
    elif n < 2 * limit:
      notes.append(
        f"measure {name!r}: fewer than {2 * limit} values in the exploration rows, too few for any test (a test "
        f"needs {limit} on each side); {never}"
      )
    else:  # the sums are of values less the table's mean (float32 cells): no spread against their squares
      s1, s2 = stats[:, m, 1].sum(), stats[:, m, 2].sum()
      if s2 - s1**2 / n <= SAME_VALUES * s2:
        notes.append(f"measure {name!r}: one value in every exploration row, nothing to compare; {never}")
  return tuple(notes)


def search_fingerprint(prepared: Prepared, name: str, budget: int) -> dict:
  """What fixes a search's queries (the journal of a resumable run must match it): method, budget, seed, options,
  and a digest of the search space (the exploration cube's arrays and thresholds)."""
  config, space = prepared.config, prepared.space
  return {
    "method": name,
    "budget": int(budget),
    "seed": int(config.seed),
    "method_options": json.dumps(dict(config.method_options), sort_keys=True, default=lambda o: type(o).__name__),
    "max_depth": int(space.max_depth),
    "space": fingerprint_arrays(*jax.tree.leaves(space.params)),
  }


def search(
  prepared: Prepared,
  method: str | Method,
  *,
  budget: int | None = None,
  progress: Progress | None = None,
  state_dir: str | None = None,
  save_every: int = 100,
) -> SearchResult:
  """Runs `method` on the prepared space with the config's seed and method options.

  Args:
    prepared: from `prepare`.
    method: a registered name or a method function.
    budget: group-by queries allowed (default `prepared.config.budget`).
    progress: called with the queries spent so far, after each query.
    state_dir: makes the search resumable: its queries are journaled there (`journal.Journal`), saved every
      `save_every` queries and at the end; a journal already there (of the same search) is resumed. Exact for
      every method without `config.time_limit`; with one, the resumed run has its whole time again (and `auto`,
      which plans with the time, may plan otherwise and be refused with `JournalMismatch`).

  Raises:
    ValueError: unknown method name, or a journal in `state_dir` of another search; RuntimeError: the method
    spent more than its budget; `journal.JournalMismatch`: a resumed method asked other queries than journaled.
  """
  config = prepared.config
  name, fn = _resolve_method(method, config.method_options)
  budget = config.budget if budget is None else budget
  if state_dir is not None:
    fingerprint = search_fingerprint(prepared, name, budget)
    progress = Journal(state_dir, fingerprint=fingerprint, every=save_every, progress=progress)
  if config.time_limit is not None:  # not reproducible query for query: a resumed run gets its time again
    progress = TimeLimit(config.time_limit, progress)
  result = fn(prepared.space, budget=budget, seed=config.seed, progress=progress, **dict(config.method_options))
  if result.queries > budget:
    raise RuntimeError(f"method {name} spent {result.queries} queries, over its budget {budget}")
  return result


def confirm(result: SearchResult, prepared: Prepared) -> pd.DataFrame:
  """`confirm.confirm_candidates` of the search's candidates on the confirmation half, with the config's settings.

  The confirmed findings are grouped into stories (`stories.group_stories`, overlap counted in the raw
  confirmation cube's rows): each story's lead, then its members, then the unconfirmed candidates.
  """
  config, halves = prepared.config, prepared.halves
  found = cf.confirm_candidates(
    result.candidates,
    halves.confirm,
    q=config.q,
    min_relative_diff=config.min_relative_diff,
    min_group=config.min_group,
    z_screen=prepared.space.z_screen,
    max_depth=config.max_depth,
    raw_cube=halves.confirm_raw if config.adjust else None,
    explore_raw_cube=halves.explore_raw if config.adjust else None,
    expectation=halves.expectation,  # None unless adjusted
    favorable=config.favorable,
    correction=config.correction,
    tilt=config.tilt,
    new_z=config.confirm_new_z,
    pooled_check=config.pooled_check,
    mirror_z=config.mirror_z,
  )
  return group_stories(found, halves.confirm_raw)


def run_discovery(
  df: pd.DataFrame,
  schema: Schema,
  *,
  method: str | Method = "uct",
  progress: Progress | None = None,
  state_dir: str | None = None,
  save_every: int = 100,
  stage: Callable[[str], None] | None = None,
  **settings,
) -> Discovery:
  """Splits the rows, searches the exploration half, confirms on the other half (`prepare`, `search`, `confirm`).

  Args:
    df, schema: the case table and its column roles.
    method: a registered name (`methods.method_names()`) or a method function.
    progress: called with the queries spent so far, after each query.
    state_dir, save_every: a resumable search (`search`); confirmation runs after it and is deterministic.
    stage: called with each part's name as it starts: "preparing" (the split, the cubes, the search space),
      "searching" (then `progress` counts the queries), "confirming" (on the held-out half).
    **settings: `DiscoveryConfig` fields (budget, max_depth, min_group,
      z_screen, q, min_relative_diff, adjust, favorable, seed, ...).

  Raises:
    ValueError naming the problem (unknown column, empty cohort space, bad
    budget, unknown method, ...).
  """
  config = DiscoveryConfig(method=_resolve_method(method)[0], **settings)
  _resolve_method(method, config.method_options)  # before the table is read
  stage = stage or (lambda _name: None)
  t0 = time.perf_counter()
  stage("preparing")
  prepared = prepare(df, schema, config)
  stage("searching")
  result = search(prepared, method, progress=progress, state_dir=state_dir, save_every=save_every)
  stage("confirming")
  findings = confirm(result, prepared)
  return Discovery(
    config=prepared.config, halves=prepared.halves, search=result, findings=findings, seconds=time.perf_counter() - t0
  )


def shown_findings(findings: pd.DataFrame, min_group: float, *, halves: holdout.Halves | None = None) -> pd.DataFrame:
  """A run's findings as shown to people (`discover`, the report's files and console, the service).

  A binary test whose events or non-events on a side are a small count shows no
  statistic that reveals them, no small count comes back by one subtraction between
  a cohort and its shown children or within a cohort's tests (`hide_small_cells`:
  `hide_small_rates`, `hide_cohort_remainders`, `hide_remainders`), and a candidate the
  confirmation half could not test shows no z or p there (`confirm.blank_untested`).
  `halves`: the run's split, whose sizes are shown beside the table (the report's summary):
  the whole half less its shown cohorts of one filter is then checked too, even where the
  whole table has no finding of its own (pass it wherever the sizes are shown); and its
  measures with at most 16 values have each value's cases checked on every side
  (`CubeMeta.few_values`, `disclosure.value_counts`, `disclosure.pinned_small`).
  The column `direction` ("higher" or "lower": the group's mean or rate against its reference, on the
  confirmation half, the exploration half's where that has no z) is added before the rules run, so a finding whose
  numbers they blank still says which way it goes (a sign gives no count back; a report audit: "differed from").
  `findings` itself is not changed.
  """
  known = {}  # what the halves tell: their sizes, and the measures with few values
  if halves is not None:
    meta = halves.explore.meta
    known = dict(
      confirm_rows=halves.confirm_rows,
      explore_rows=halves.explore_rows,
      few_values=meta.few_values_by_measure,
      categories=dict(zip(meta.filter_names, meta.categories)),
    )
  return cf.blank_untested(hide_small_cells(with_direction(findings), min_group, **known))


def with_direction(findings: pd.DataFrame) -> pd.DataFrame:
  """A copy of `findings` with `direction` (see `shown_findings`; None where neither half has a nonzero z): the
  confirmation z's sign, or where that is blank its difference's (an untested candidate's shown means: a report
  audit found "lower" beside a group mean of 1.0 against 0.885, read off the exploration z), else the exploration
  z's."""

  def numbers(column: str) -> np.ndarray:
    if column not in findings.columns:
      return np.full(len(findings), np.nan)
    return pd.to_numeric(findings[column], errors="coerce").to_numpy(float)

  z, diff, explore = numbers("z"), numbers("diff"), numbers("explore_z")
  sign = np.where(np.isfinite(diff) & (diff != 0), np.sign(diff), np.sign(np.nan_to_num(explore)))
  sign = np.where(np.isfinite(z) & (z != 0), np.sign(z), sign)
  return findings.assign(direction=[{1.0: "higher", -1.0: "lower"}.get(float(s)) for s in sign])


def discover(df: pd.DataFrame, schema: Schema, *, method: str | Method = "uct", **settings) -> pd.DataFrame:
  """`run_discovery(...).findings` as shown (`shown_findings`): one row per candidate, `confirmed` first.

  `run_discovery(...).findings` keeps every number. `df.attrs` holds queries,
  budget, seconds, method, z_screen and notes: the coding, split and adjustment notes as the report shows them
  (`note_text`: counts under the small-cell limit redacted, others rounded); each note that is a warning (a
  suspect value, a measure missing where it matters) is also raised as a `UserWarning`, which the report's readers
  see and a library caller did not (an audit: a table whose one code of 99999999 hid every finding said nothing).
  """
  run = run_discovery(df, schema, method=method, **settings)
  out = shown_findings(run.findings, run.config.min_group, halves=run.halves)
  summary = run.halves.summary if run.halves is not None else ()  # (a run put together by hand may have none)
  notes = tuple(note_text(line, run.config.min_group) for line in summary)
  for warning in warnings_in(notes):
    warnings.warn(warning, UserWarning, stacklevel=2)
  out.attrs.update(
    queries=run.search.queries,
    budget=run.config.budget,
    seconds=run.seconds,
    method=run.config.method,
    z_screen=run.search.z_screen,
    notes=notes,
  )
  return out


WARNING = "warning: "  # how a coding note that asks the analyst to look opens (`ingest._suspect_values`)


def warnings_in(notes: Iterable[str]) -> list[str]:
  """The notes that are warnings (those that open with `WARNING`), in their order, without that opening: as
  `discover` raises them, and the report's "Check these first" box, the console and findings.csv's `warnings` column
  show them. It redacts nothing: give it notes as shown (`note_text`), never a run's raw ones."""
  return [note[len(WARNING) :] for note in notes if note.startswith(WARNING)]


def truth_score(run: Discovery, truth: Iterable[Any]) -> dict:
  """Recall and precision (docs/design.md, What a finding is) of the candidates and of the confirmed findings."""
  truth = list(truth)
  keep = ("recall", "precision", "n_truth", "n_reported", "n_recalled", "n_false")
  scores = {
    "candidates": score_findings(run.search.candidates, truth, cube=run.halves.explore),
    "confirmed": score_findings(run.confirmed, truth, cube=run.halves.explore),
  }
  return {which: {k: s[k] for k in keep} for which, s in scores.items()}
