"""Quality benchmark: budget accounting (walkers and pysubgroup), pysubgroup's statistics, scoring and summaries."""

import dataclasses
import functools
import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import cube_env
from cube_env import synthetic
from cube_env.discovery import oracle, ranking
from experiments import agent, benchmark
from experiments.agent import unqueried
from experiments.quality import plot as qplot
from experiments.quality import pool as qpool
from experiments.quality import pysubgroup_adapter as bp
from experiments.quality import runner as qrun
from experiments.quality import session as qsession
from experiments.quality import suite as qsuite
from experiments.quality import summary as qsummary
from experiments.quality import tables as qtables
from tests.conftest import SMALL_SCHEMA
from tests.test_discover_report import save_tiny_agent

pytest.importorskip("pysubgroup")


def _quiet(_: str) -> None:
  pass


PLANTED = synthetic.PlantedEffect(cohort={"proc": "A"}, protected="race", group="B", measure="minutes", effect=0.4)


@pytest.fixture(scope="module")
def case(small_df):
  return qsuite.Case(
    scenario="small",
    seed=cube_env.EVAL_SEED_BASE,
    df=small_df,
    schema=SMALL_SCHEMA,
    truth=[PLANTED],
    adjust=(),
    max_categories=12,
  )


@pytest.fixture(scope="module")
def prep(case):
  return qrun.prepare_case(case, max_depth=2)


def test_cohort_ledger_caps_budget_and_counts_each_cohort_once():
  seen = []
  ledger = bp.CohortLedger(4, seen.append)
  ledger.cap = 2
  assert ledger.pay((0, -1)) and ledger.pay((0, -1)) and ledger.pay((1, -1))
  assert not ledger.pay((2, -1))  # the cap for this run is spent
  assert ledger.reachable((-1, -1)) and ledger.reachable((1, -1)) and not ledger.reachable((2, -1))
  ledger.cap = 10  # a later run may not pass the whole budget
  assert ledger.pay((2, -1)) and ledger.pay((3, -1)) and not ledger.pay((4, -1))
  assert ledger.used == 4 and seen == [1, 2, 3, 4]
  # A review: a run the cap cut (an earlier measure's share) but that ended under the budget said "nothing left".
  assert ledger.refused and not bp.CohortLedger(4).refused


def test_pysubgroup_z_matches_scipy_welch(small_df, prep):
  cells = bp.CellData(prep.prepared.space)
  meta = prep.prepared.space.cube.meta
  codes, values, _ = cube_env.encode_table(small_df, SMALL_SCHEMA)
  explore = cube_env.split_rows(small_df, seed=prep.prepared.config.seed)
  f_proc, f_race = meta.filter_names.index("proc"), meta.filter_names.index("race")
  a, b = meta.categories[f_proc].index("A"), meta.categories[f_race].index("B")
  cohort, rows = cells.cohort(((f_proc, a),))
  in_cohort = explore & (codes[:, f_proc] == a)
  assert rows == in_cohort.sum()
  for m, name in enumerate(meta.measure_names):
    v = values[in_cohort, m]
    grp = codes[in_cohort, f_race] == b
    x, y = v[grp & ~np.isnan(v)], v[~grp & ~np.isnan(v)]
    if meta.is_binary[m]:
      pooled = np.concatenate([x, y]).mean()
      want = abs(x.mean() - y.mean()) / math.sqrt(pooled * (1 - pooled) * (1 / len(x) + 1 / len(y)))
    else:
      want = stats.norm.isf(stats.ttest_ind(x, y, equal_var=False).pvalue / 2)
    assert cells.abs_z(cohort, (f_race, b), m) == pytest.approx(want, rel=1e-3, abs=1e-3), name


@pytest.mark.parametrize("algorithm", ["beam", "dfs"])
def test_pysubgroup_stops_exactly_at_budget_and_counts_cohorts(prep, algorithm):
  method = functools.partial(bp.pysubgroup_search, algorithm=algorithm, width=8)
  small = method(prep.prepared.space, budget=5, seed=0)
  assert small.queries == 5 and len(small.visits) == 5 and small.stopped_by == cube_env.STOPPED_BUDGET
  big = method(prep.prepared.space, budget=10**6, seed=0)
  assert big.stopped_by == cube_env.STOPPED_DONE
  evaluations = int(big.note.split(";")[1].split()[0])
  assert big.queries < prep.exhaustive_queries  # no intersectional cohorts in its space
  assert evaluations > big.queries  # many (group, measure) qualities per cohort, one query each
  assert big.visits["depth"].max() <= 2
  oracle = cube_env.enumerate_findings(
    prep.prepared.space.cube, max_depth=2, z_screen=prep.prepared.space.z_screen, include_old=False
  )
  key = lambda t: set(zip(t["cohort"], t["protected"], t["group"], t["measure"]))  # noqa: E731
  assert key(big.candidates) <= key(oracle)
  if algorithm == "dfs":  # DFS saw every cohort: it reports the planted gap
    assert cube_env.score_findings(big.candidates, [PLANTED], cube=prep.prepared.space.cube)["recall"] == 1.0


def test_cohort_ledger_reachability_is_coarser_than_a_paid_cohort():
  rng = np.random.default_rng(0)
  ledger = bp.CohortLedger(budget=6)
  while not ledger.full():
    ledger.pay(tuple(int(v) for v in np.where(rng.random(5) < 0.5, rng.integers(0, 3, 5), -1)))
  for _ in range(300):
    key = tuple(int(v) for v in np.where(rng.random(5) < 0.4, rng.integers(0, 3, 5), -1))
    want = any(all(v == -1 or v == k for v, k in zip(key, paid)) for paid in ledger.order)
    assert ledger.reachable(key) == want, key
  assert ledger.reachable((-1,) * 5) and not ledger.pay((9,) * 5)


def test_enumeration_warm_up_compiles_every_program(prep):
  """After `compile_enumeration`, an enumeration of the same cube to the same depth compiles nothing."""
  space = prep.prepared.space
  kw = dict(min_group=space.min_group, min_cohort=float(space.params.min_cohort), z_screen=space.z_screen)
  compiled = (oracle._subset_table, oracle._screen_chunk, oracle._novelty_chunk, oracle._parents)
  for f in compiled:
    f.clear_cache()  # as in a fresh process
  oracle.compile_enumeration(space.cube, max_depth=space.max_depth, new_z=space.new_z, **kw)
  before = [f._cache_size() for f in compiled]
  found = cube_env.enumerate_findings(space.cube, max_depth=space.max_depth, new_z=space.new_z, **kw)
  assert len(found) > 0 and [f._cache_size() for f in compiled] == before


def test_prepared_case_confirms_as_run_discovery(small_df, case, prep):
  ours = cube_env.confirm(cube_env.search(prep.prepared, "random", budget=30), prep.prepared)
  events = []  # run_discovery's parts as they start, and each query (progress) between them
  ref = cube_env.run_discovery(
    small_df,
    SMALL_SCHEMA,
    method="random",
    budget=30,
    seed=case.seed,
    max_depth=2,
    stage=events.append,
    progress=lambda used: events.append(used),
  )
  assert events == ["preparing", "searching", *range(1, ref.search.queries + 1), "confirming"]
  cols = ["cohort", "protected", "group", "measure", "z", "p_adjusted", "confirmed"]
  pd.testing.assert_frame_equal(ours[cols].reset_index(drop=True), ref.findings[cols].reset_index(drop=True))


def test_run_case_budgets_scores_and_cut_off(case, prep):
  suite = qsuite.Suite(name="test", fractions=(0.02, 1.0), max_depth=2, walker_max_fraction=1.0)
  fns = qrun.build_methods(("random", "pysubgroup-dfs"), None)
  rows = list(qrun.run_case(case, suite, fns, log=_quiet))
  budgets = qrun.budgets_for(case, prep, suite)
  assert budgets == [round(0.02 * prep.exhaustive_queries), prep.exhaustive_queries]
  assert [(r["method"], r["budget"]) for r in rows] == [(m, b) for m in fns for b in budgets]
  for r in rows:
    assert r["queries"] <= r["budget"] and r["budget_fraction"] == r["budget"] / prep.exhaustive_queries
    if r["method"] == "random":
      assert r["queries"] == r["budget"]  # cut off exactly at the budget
  full = rows[-1]  # pysubgroup DFS with the whole budget reports and confirms the planted gap
  assert full["recall"] == 1.0 and full["family_wise_error"] == (full["false_confirmed"] > 0)
  # the confirmed findings travel in the row (strict JSON), and score again to the row's recall without a search
  kept = json.loads(json.dumps(full["confirmed_findings"], allow_nan=False))
  assert len(kept) == full["confirmed"] and all(isinstance(f["filters"], dict) for f in kept)
  assert cube_env.score_findings(pd.DataFrame(kept), case.truth)["recall"] == full["recall"]
  assert {r["scoring"] for r in rows} == {qrun.SCORING}  # the scoring rule the rows were scored by
  capped = qsuite.Suite(name="test", fractions=(0.02, 1.0), max_depth=2, walker_max_fraction=0.2)
  assert qrun.budgets_for(case, prep, capped, "random") == budgets[:1]
  assert qrun.budgets_for(case, prep, capped, "pysubgroup-dfs") == budgets
  skipped = list(qrun.run_case(case, suite, fns, log=_quiet, skip={(case.scenario, case.seed, "random", budgets[0])}))
  # every row names its world's content: the same table hashes alike, one changed value does not
  assert {r["world_sha256"] for r in rows} == {qsuite.world_id(case)} and qsuite.world_id(case).startswith("sha256:")
  changed = case.df.copy()
  changed.iloc[0, changed.columns.get_loc("minutes")] += 1e-9
  assert qsuite.world_id(dataclasses.replace(case, df=changed)) != qsuite.world_id(case)
  assert len(skipped) == len(rows) - 1


def _row(scenario, method, fraction, seed, **kw):
  base = dict(
    kind="run",
    suite="t",
    scenario=scenario,
    method=method,
    budget=int(fraction * 1000),
    budget_fraction=fraction,
    seed=seed,
    applicable=True,
    recall=math.nan,
    precision=1.0,
    confirmed=1,
    false_confirmed=0,
    queries=int(fraction * 1000),
    seconds=1.0,
    candidate_recall=1.0,
    family_wise_error=False,
  )
  return dict(base, **kw)


def test_summary_and_headline_numbers():
  rows = [
    _row("mixed", "a", 0.01, 0, recall=0.5),
    _row("mixed", "a", 0.01, 1, recall=0.7),
    _row("mixed", "a", 0.2, 0, recall=0.9),
    _row("mixed", "a", 0.2, 1, recall=1.0),
    _row("mixed", "b", 1.0, 0, recall=0.8),
    _row("mixed", "b", 1.0, 1, recall=0.8),
    _row("null", "a", 0.2, 0, family_wise_error=True, false_confirmed=2),
    _row("null", "a", 0.2, 1),
    _row("null", "b", 1.0, 0, applicable=False, note="does not fit"),
  ]
  summary = qsummary.summarize(rows)
  first = next(s for s in summary if s["method"] == "a" and s["budget_fraction"] == 0.01)
  assert first["recall_mean"] == pytest.approx(0.6) and first["recall_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
  assert first["seeds"] == 2
  table = qtables.headline(summary)
  assert table.loc["a", "mixed"] == "20% = 200 q, 1 s"
  assert table.loc["b", "mixed"] == "> 100% (best 0.80)"
  null = {s["method"]: s for s in summary if s["family"] == "null"}
  assert null["a"]["family_wise_error_rate"] == 0.5 and not null["b"]["applicable"]


def test_evaluation_worlds_share_neither_seeds_nor_schemas_with_training_worlds():
  suite = qsuite.Suite(name="t", n_rows=2000, seeds=2)
  qsuite.check_seed_split(suite)
  test = qsuite.make_case("null", 1, suite)
  train = qsuite.make_case("null", 1, qsuite.resize(suite, split="train"))
  assert test.seed == cube_env.worlds.EVAL_SEED_BASE + 1 and test.split == "eval"
  assert train.seed == cube_env.worlds.TRAIN_SEED_BASE + 1 and train.split == "train"
  assert not set(test.df.columns) & set(train.df.columns)  # names drawn from disjoint halves of the vocabulary
  with pytest.raises(ValueError, match="training worlds only"):
    qsuite.resize(suite, sweep=True)
  swept = qsuite.resize(suite, split="train", sweep=True, method_names=("beam", "greedy"))
  assert "beam@width=16" in swept.methods and "greedy" in swept.methods
  assert qsuite.parse_variant("pysubgroup-beam@width=20,depth=2") == ("pysubgroup-beam", {"width": 20, "depth": 2})
  assert qsuite.parse_variant("frontier@lift=0.5") == ("frontier", {"lift": 0.5})
  assert qsuite.parse_variant("learned@weights=/tmp/r.npz") == ("learned", {"weights": "/tmp/r.npz"})


@pytest.mark.parametrize("name", ["random", "greedy", "beam", "uct", "frontier"])
def test_anytime_read_off_equals_a_run_at_each_budget(prep, name):
  fn = cube_env.METHODS[name]
  budgets = (3, 11, 40)
  anytime = cube_env.Anytime(budgets)
  final = fn(prep.prepared.space, budget=max(budgets), seed=7, progress=anytime)
  read = anytime.results(final)
  assert sorted(read) == list(budgets)
  for b in budgets:
    direct = fn(prep.prepared.space, budget=b, seed=7)
    assert read[b].queries == direct.queries <= b and read[b].budget == b
    pd.testing.assert_frame_equal(read[b].visits, direct.visits)
    pd.testing.assert_frame_equal(read[b].candidates, direct.candidates)
  with pytest.raises(RuntimeError, match="one search"):
    fn(prep.prepared.space, budget=5, seed=7, progress=anytime)


def test_summary_groups_by_nominal_fraction_and_time_limit_runs_no_case():
  rows = [
    _row("mixed", "a", 0.0498, 0, recall=0.4, nominal_fraction=0.05),
    _row("mixed", "a", 0.0503, 1, recall=0.6, nominal_fraction=0.05),
  ]
  (only,) = qsummary.summarize(rows)
  assert only["seeds"] == 2 and only["recall_mean"] == pytest.approx(0.5)
  assert only["nominal_fraction"] == 0.05 and only["budget_fraction"] == pytest.approx(0.05005, abs=1e-4)
  suite = qsuite.Suite(name="t", scenarios=("standard", "wide", "null"), seeds=2, n_rows=300)
  order = [("wide", 0), ("standard", 0), ("null", 0), ("wide", 1), ("standard", 1), ("null", 1)]
  assert qsuite.case_order(suite) == order
  assert list(qpool.run_suite(suite, {}, log=_quiet, deadline=0.0)) == []


def test_the_in_process_suite_releases_compiled_programs_after_each_case(monkeypatch):
  """As a worker process does (case_in_worker): each world's programs serve no other, and a process holding them all
  dies once their memory mappings reach Linux's limit."""
  calls, rows = [], []
  monkeypatch.setattr(qpool, "make_case", lambda scenario, i, *_: (scenario, i))
  monkeypatch.setattr(qpool, "run_case", lambda case, *_, **__: iter([{"case": case}]))
  monkeypatch.setattr(qpool.compile_cache, "release_if_crowded", lambda: calls.append(len(rows)))
  suite = qsuite.Suite(name="t", scenarios=("standard", "wide"), seeds=2, n_rows=300)
  for row in qpool.run_suite(suite, {}, log=_quiet):
    rows.append(row)
  assert [r["case"] for r in rows] == qsuite.case_order(suite) and calls == [1, 2, 3, 4]


def test_fixed_budgets_on_wide_and_deep_worlds(case, prep, tmp_path):
  suite = qsuite.Suite(name="t", fixed_budgets=(5, 50, 10**9))
  wide = dataclasses.replace(case, scenario="wide")
  assert qrun.nominal_budgets(wide, prep, suite) == {5: None, 50: None}  # a budget over enumeration's count is dropped
  assert suite.depth("deep") == qsuite.DEEP_DEPTH and suite.depth("wide") == suite.max_depth
  fractions = qrun.nominal_budgets(
    case, prep, qsuite.Suite(name="t", fractions=(0.01, 1.0), walker_max_fraction=0.05), "greedy"
  )
  assert fractions == {round(0.01 * prep.exhaustive_queries): 0.01}
  auto = qrun.nominal_budgets(
    case, prep, qsuite.Suite(name="t", fractions=(0.01, 1.0), walker_max_fraction=0.05), "auto"
  )
  assert auto == {round(0.01 * prep.exhaustive_queries): 0.01, prep.exhaustive_queries: 1.0}
  # the settings a run row records: the signature's defaults under the suite's tuned ones and a variant's own
  assert qsuite.SUITES["quick"].options_row("frontier") == [["lift", 0.5], ["ranker", None]]
  assert qsuite.SUITES["quick"].options_row("beam") == [["width", 32]]
  assert qsuite.SUITES["quick"].options_row("beam@width=4") == [["width", 4]]
  packaged = ranking.weights_id()
  assert packaged.startswith("sha256:") and len(packaged) == len("sha256:") + 12
  # the learned searches' depth preference: None, by the space's depth (`ranking.default_depth`); auto's fallback's too
  assert qsuite.SUITES["quick"].options_row("auto") == [
    ["depth", None],
    ["fallback", "learned"],
    ["weights_sha256", packaged],
  ]
  assert qsuite.SUITES["quick"].options_row("learned") == [
    ["depth", None],
    ["weights", None],
    ["weights_sha256", packaged],
  ]
  assert qsuite.SUITES["quick"].options_row("muzero@refine=2.0") == [
    ["advantage", "centred"],  # the agent's search advantage centred over its visited moves
    ["agent_sha256", agent.agent_id()],  # the packaged agent, by content: a retrained one's rows are told apart
    ["backup", "mean"],
    ["checkpoint", None],
    ["depth", None],
    ["mode", "frontier"],
    ["prior", None],  # episodes' weight on greedy's preference: the agent's own, else EPISODES_PRIOR
    ["refine", 2.0],
    ["refine_at", "top"],  # the agent searches a cohort once one of its drill-downs reaches the top
    ["simulations", 0],
    ["weights_sha256", packaged],
  ]
  other = tmp_path / "other-agent.npz"  # rows of a suite run with --checkpoint carry that agent's hash
  other.write_bytes(b"another agent")
  played = dict(map(tuple, qsuite.resize(qsuite.SUITES["quick"], checkpoint=str(other)).options_row("muzero")))
  assert played["agent_sha256"] == agent.agent_id(str(other)) != agent.agent_id()
  with pytest.raises(ValueError, match="above_walkers"):
    qsuite.Suite(name="t", above_walkers=("greedy",))
  # a suite that runs only enumeration above the walkers' fractions: auto and the peers stop with the walkers
  below = qsuite.Suite(name="t", fractions=(0.01, 1.0), walker_max_fraction=0.05, above_walkers=("exhaustive",))
  for method in ("auto", "pysubgroup-dfs", "pysubgroup-dfs@depth=2"):
    assert qrun.nominal_budgets(case, prep, below, method) == fractions
  assert qrun.nominal_budgets(case, prep, below)[prep.exhaustive_queries] == 1.0


def test_run_keeps_rows_a_killed_call_spilled(tmp_path):
  out = tmp_path / "q.jsonl"
  spilled = _row(
    "standard", "exhaustive", 0.01, 5000, suite="tiny", recall=0.5, nominal_fraction=0.01, n_rows=3000, options=[]
  )
  spilled["worlds_version"] = qsuite.worlds.VERSION
  other_size = dict(spilled, seed=5001, n_rows=999)  # rows of another size of the suite are dropped,
  other_budget = dict(spilled, seed=5002, nominal_fraction=0.05)  # of a budget the suite no longer has,
  other_settings = dict(spilled, seed=5003, method="pysubgroup-beam", options=[["width", 5]])  # of other settings,
  unrecorded = dict(spilled, seed=5004)
  del unrecorded["options"]  # of settings not recorded,
  old_worlds = dict(spilled, seed=5005, worlds_version=qsuite.worlds.VERSION - 1)  # of other worlds
  walker_past_top = dict(spilled, seed=5006, method="greedy", nominal_fraction=1.0)  # a walker past its fractions
  # two rows of one world seed that record different tables (drawn on two machines): kept, and named
  table_a = dict(spilled, seed=5007, world_sha256="sha256:aaaaaaaaaaaa", scoring=qrun.SCORING)
  table_b = dict(table_a, budget=1000, budget_fraction=1.0, nominal_fraction=1.0, world_sha256="sha256:bbbbbbbbbbbb")
  dropped = (other_size, other_budget, other_settings, unrecorded, old_worlds, walker_past_top)
  spilled_rows = (spilled, table_a, table_b, *dropped)
  (tmp_path / "q.jsonl.partial").write_text("".join(json.dumps(r) + "\n" for r in spilled_rows))
  call = dict(
    kind="invocation",
    suite="tiny",
    n_rows=3000,
    wall_s=7.0,
    method_options=[["beam", [["width", 32]]], ["pysubgroup-dfs", [["depth", 2]]]],
    worlds_version=qsuite.worlds.VERSION,
  )
  stale_call = dict(call, wall_s=99.0, method_options=[["beam", [["width", 3]]]])  # another call's settings: dropped
  old_call = dict(call, wall_s=98.0, worlds_version=qsuite.worlds.VERSION - 1)  # a call on other worlds: dropped
  unversioned_call = {k: v for k, v in call.items() if k != "worlds_version"}  # one that did not say: dropped
  calls = (call, stale_call, old_call, unversioned_call)
  out.write_text("".join(json.dumps(c) + "\n" for c in calls))
  said: list[str] = []
  rows = qsession.run_quality(
    "tiny",
    checkpoint=None,
    method_names=("exhaustive",),
    plot_path=str(tmp_path / "p.png"),
    out=str(out),
    emit=lambda rs, _: list(rs),
    log=said.append,
    time_limit_s=0,
    workers=1,
  )
  assert not (tmp_path / "q.jsonl.partial").exists() and (tmp_path / "p.png").exists()
  kept = [r for r in rows if r["kind"] == "run"]
  assert len(kept) == 3 and kept[0]["recall"] == 0.5
  earlier, invocation = [r for r in rows if r["kind"] == "invocation"]
  assert earlier["wall_s"] == 7.0 and invocation["cases_run"] == 0 and invocation["cases_in_suite"] == 2
  assert invocation["worlds_version"] == qsuite.worlds.VERSION
  assert invocation["worlds_differ"] == [["standard", 5007]]
  # rows scored by today's rule beside rows that record none (scored before it): both named, and the call says so
  assert invocation["scoring_rules"] == sorted([qrun.SCORING, qsession.UNSCORED])
  assert any("scored by different rules" in line and qsession.UNSCORED in line for line in said)
  assert qsession.scoring_rules([table_a, table_b]) == [qrun.SCORING]  # one rule: nothing to warn of
  versions = invocation["versions"]  # what the call ran with: the worlds' draw can depend on it
  assert versions["numpy"] == np.__version__ and versions["pandas"] == pd.__version__ and versions["python"]
  kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
  assert kinds[:6] == ["run"] * 3 + ["invocation", "invocation", "summary"] and set(kinds[5:]) <= {"summary", "paired"}


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--methods", "foo", "random"], "--methods: unknown 'foo'"),
    (["--scenarios", "standard", "nul"], "--scenarios: unknown 'nul'"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--time-limit-s", "-1"], "--time-limit-s must be >= 0"),
    # Before any world is drawn (an audit: each was a traceback from a worker, the last one minutes in).
    (["--split", "bogus"], "--split must be one of train, eval"),
    (["--scenarios", "deep"], "--scenarios: the tiny suite's worlds hold only standard, null, not deep"),
    (["--checkpoint", "/nonexistent/agent"], "--checkpoint '/nonexistent/agent': no such file or directory"),
    (["--suite", "huge"], "--suite must be one of tiny, quick, standard, full"),
    (["--split", "train", "--seeds", "21"], "train the packaged ranker (and the agent)"),
    (["--sweep"], "--sweep tunes method settings: it runs on training worlds only (--split train)"),
    # Other commands' numbers and names.
    (["power", "--split", "bogus"], "--split must be one of train, eval"),
    (["power", "--families", "standard", "bogus"], "unknown --families ['bogus']"),
    (["power", "--worlds", "0"], "--worlds and --max-depth must be at least 1, --rows at least 1000"),
    (["power", "--rows", "0"], "--rows at least 1000"),
    (["env", "--cells", "0"], "--cells and --batches must be at least 1"),
    # Before any case runs (an audit: a family given twice ran twice and counted as more worlds; a method's setting
    # it does not take, or a value it refuses, was a traceback from inside the first case).
    (["--scenarios", "standard", "standard", "--time-limit-s", "0"], "--scenarios: 'standard' given twice"),
    (
      ["--methods", "greedy@bogus=3", "--scenarios", "standard", "--workers", "1", "--time-limit-s", "0"],
      "--methods 'greedy@bogus=3': method 'greedy' has no option 'bogus'",
    ),
    (
      ["--methods", "beam@width=0", "--scenarios", "standard", "--workers", "1", "--time-limit-s", "0"],
      "--methods 'beam@width=0': beam width must be at least 1, got 0",
    ),
  ],
)
def test_quality_cli_names_the_bad_flag(argv, message, capsys):
  full = argv if argv[0] in ("power", "env") else ["quality", *(["--suite", "tiny"] * ("--suite" not in argv)), *argv]
  with pytest.raises(SystemExit, match=re.escape(message)) as exit_:
    benchmark.main(full)
  assert exit_.value.code == 2 and message in capsys.readouterr().err  # a usage error's status (it was 1: an audit)


def test_agent_prefers_cohorts_not_yet_queried(prep):
  space = prep.prepared.space
  ledger = cube_env.Ledger(space, 10)
  _, state, _ = ledger.root()
  c = space.env.shape.num_values
  legal = np.nonzero(np.asarray(state.mask))[0]
  here = tuple(int(v) for v in np.asarray(state.filters))
  ledger.step(state, int(legal[0]))  # one child queried: the agent is steered away from it
  mask = np.asarray(unqueried(ledger, state, c))
  assert not mask[legal[0]] and mask[legal[1:]].all() and mask.sum() == len(legal) - 1
  for action in legal[1:]:  # every child known: passing through one is allowed again
    ledger.index[cube_env.target(here, int(action), c)] = 0
  np.testing.assert_array_equal(np.asarray(unqueried(ledger, state, c)), np.asarray(state.mask))


def test_muzero_runs_through_the_registry_or_is_not_applicable(case, prep, tmp_path):
  fits, narrow = str(tmp_path / "fits"), str(tmp_path / "narrow")
  save_tiny_agent(fits, case.df, case.schema)  # untrained, on this case's grid
  narrow_schema = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["minutes"])
  save_tiny_agent(narrow, case.df, narrow_schema, policy_head="dense")  # dense heads: its own grid only
  suite = qsuite.Suite(name="test", fractions=(0.02,), max_depth=2)
  (row,) = qrun.run_case(case, suite, qrun.build_methods(("muzero",), fits), log=_quiet)
  assert row["method"] == "muzero" and row["applicable"] and 0 < row["queries"] <= row["budget"]
  assert "best-first over the frontier" in row["note"]
  (row,) = qrun.run_case(case, suite, qrun.build_methods(("muzero",), narrow), log=_quiet)
  assert not row["applicable"] and "trained on a grid" in row["note"]
  # A variant names its own agent, beside the suite's (two agents compared in one call).
  both = qrun.build_methods(("muzero", f"muzero@checkpoint={fits}"), narrow)
  assert both["muzero"].agent.directory == narrow and both[f"muzero@checkpoint={fits}"].agent.directory == fits
  # Without a checkpoint the packaged agent plays (trained on random training worlds, exported to an .npz).
  found = cube_env.search(prep.prepared, "muzero", budget=5)
  assert found.method == "muzero" and found.queries == 5 and "the packaged agent" in found.note


def test_a_call_keeps_the_rows_of_other_suites_and_splits_in_its_out_file(tmp_path):
  """`quality --out F` rewrites F: the rows of another suite or split, and lines of no suite, are kept as they were
  (an audit: a `--split train` call wiped a file's evaluation rows without a word)."""
  path = tmp_path / "rows.jsonl"
  rows = [
    {"kind": "run", "suite": "tiny", "split": "eval", "seed": 1},
    {"kind": "run", "suite": "tiny", "split": "train", "seed": 2},
    {"kind": "summary", "suite": "quick", "split": "train"},
    {"kind": "mine"},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  tiny_train = dataclasses.replace(qsuite.SUITES["tiny"], split="train")
  assert qsession.other_rows(tiny_train, str(path)) == [rows[0], rows[2], rows[3]]


def _tiny_call(tmp_path, out, **kw):
  """A `quality` call on the tiny suite that runs no case (time limit 0): it only rewrites `out`."""
  settings = dict(
    checkpoint=None,
    method_names=("exhaustive",),
    plot_path=str(tmp_path / "p.png"),
    out=str(out),
    emit=lambda rs, _: list(rs),
    log=_quiet,
    scenarios=("standard",),
    time_limit_s=0,
    workers=1,
  )
  return qsession.run_quality("tiny", **{**settings, **kw})


def test_quality_rewrites_its_out_file_whole_or_not_at_all(tmp_path, monkeypatch):
  """A kill while `--out` is rewritten leaves it as it was (an audit: rewritten in place, a SIGTERM left 0 of its
  5,439 rows): the new text goes to a temporary file, fsynced, then renamed over it."""
  out = tmp_path / "q.jsonl"
  before = "".join(json.dumps({"kind": "mine", "n": i}) + "\n" for i in range(200))
  out.write_text(before)

  def killed(_fd):  # SIGTERM once the rows are written, before they are renamed over `out`
    raise KeyboardInterrupt("SIGTERM")

  with monkeypatch.context() as patch:
    patch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
      _tiny_call(tmp_path, out)
  assert out.read_text() == before
  _tiny_call(tmp_path, out)
  lines = out.read_text().splitlines()
  assert lines[:200] == before.splitlines() and json.loads(lines[200])["kind"] == "invocation"


def test_quality_prints_its_invocation_row_to_stdout(tmp_path, capsys):
  """The machine a call ran on comes to stdout too, as the other commands print theirs (it went only to --out)."""
  _tiny_call(tmp_path, tmp_path / "q.jsonl")
  first = json.loads(capsys.readouterr().out.splitlines()[0])
  assert first["kind"] == "invocation" and first["cpu_count"] == os.cpu_count() and first["versions"]["numpy"]
  assert first["device"] and first["platform"] and first["suite"] == "tiny"


def test_quality_refuses_an_agent_that_does_not_load(tmp_path, capsys):
  junk, empty = tmp_path / "junk.npz", tmp_path / "empty"
  junk.write_bytes(b"junk")
  empty.mkdir()
  for path in (junk, empty):
    argv = ["quality", "--suite", "tiny", "--methods", "muzero", "--checkpoint", str(path), "--workers", "1"]
    with pytest.raises(SystemExit) as exit_:
      benchmark.main([*argv, "--scenarios", "standard", "--time-limit-s", "0"])
    assert exit_.value.code == 2 and f"--checkpoint {str(path)!r}: cannot load an agent" in capsys.readouterr().err


def test_quality_plot_title_counts_the_worlds_plotted(tmp_path, monkeypatch):
  """The title counts the worlds of the summary rows plotted (every call's in --out), not this call's --seeds."""
  out = tmp_path / "q.jsonl"
  run = _row("standard", "exhaustive", 0.01, 0, suite="tiny", recall=0.5, nominal_fraction=0.01, n_rows=3000)
  run.update(options=[], worlds_version=qsuite.worlds.VERSION)
  seeds = qsuite.worlds.world_seeds("eval", 2)
  out.write_text("".join(json.dumps(dict(run, seed=seed)) + "\n" for seed in seeds))  # 2 worlds of an earlier call
  titles = []
  monkeypatch.setattr(qsession, "plot", lambda _summary, _path, title: titles.append(title))
  _tiny_call(tmp_path, out, seeds=1)
  (title,) = titles
  assert "mean over 2 worlds per family" in title and "seed" not in title


def test_quality_plot_legend_fits_one_family(tmp_path):
  """One family's panels are narrow: the legend's columns fit its width, below the panels (it was cut at both
  edges)."""
  methods = ("exhaustive", "auto", "greedy", "pysubgroup-beam", "pysubgroup-dfs")
  rows = [
    _row("standard", m, f, s, recall=0.5 + f / 4, nominal_fraction=f)
    for m in methods
    for f in (0.01, 1.0)
    for s in (0, 1)
  ]
  fig = qplot.plot(qsummary.summarize(rows), str(tmp_path / "p.png"), title="suite tiny on cpu; mean over 2 worlds")
  (legend,) = fig.legends
  box = legend.get_window_extent()
  assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0
  assert box.y1 <= min(ax.get_tightbbox().y0 for ax in fig.axes)  # below the lower panels' axis labels


def test_headline_tables_name_the_split_of_their_worlds():
  rows = [_row("mixed", "a", 0.01, s, recall=0.5, split="train") for s in (0, 1)]
  args = dict(suite_name="t", wall_s=60.0, calls=1, device_kind="cpu")
  train = qtables.headline_tables(qsummary.summarize(rows, split="train"), **args)
  assert "means over training worlds" in train and "evaluation" not in train
  evaluation = [dict(r, split="eval") for r in rows]
  assert "means over evaluation worlds" in qtables.headline_tables(qsummary.summarize(evaluation), **args)
