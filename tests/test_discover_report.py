"""The discover CLI and its report: files, escaping, small cells, stories, determinism, errors, the muzero method."""

import base64
import json
import os
import shutil
import subprocess
import types
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import struct
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.markers import MarkerStyle
from matplotlib.text import Text

import cube_env
import muzero_jax
from cube_env.discovery import pipeline
from experiments import discover
from experiments.agent import play as agent_play
from experiments.report import console, files, findings_table, markup, plots, print_summary, render_html
from experiments.report.files import CSV_COLUMNS
from experiments.report.markup import finding_sentence
from tests.conftest import make_small_df


def _read(path) -> str:
  with open(path, encoding="utf-8") as handle:
    return handle.read()


EVIL = "<script>alert(1)</script>"
FLAGS = [
  "--dimensions",
  "proc",
  "site",
  "urgency",
  "--protected",
  "race",
  "sex",
  "--measures",
  "minutes",
  "complication",
  "--max-depth",
  "2",
  "--z-screen",
  "4",
  "--no-progress",
]
COUNTS = ("cohort_rows", "n_group", "n_rest", "explore_cohort_rows", "explore_n_group", "explore_n_rest")


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
  df = make_small_df(n=3000)
  df["proc"] = df["proc"].replace({"A": EVIL})  # the planted gap sits in this cohort
  df.loc[df["race"] == "B", "minutes"] *= 1.15  # and a mild one everywhere: the whole table tells proc A's story
  df.loc[df.index[:7], "urgency"] = None  # 7 missing values: a small count the coding note must not show
  path = tmp_path_factory.mktemp("data") / "cases.csv"
  df.to_csv(path, index=False)
  return str(path)


@pytest.fixture(scope="module")
def report(csv_path, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("report"))
  code = discover.main(
    ["--data", csv_path, *FLAGS, "--method", "beam", "--budget", "60", "--min-group", "15", "--out", out]
  )
  assert code == 0
  return out


def test_report_files_and_escaping(report):
  html = _read(os.path.join(report, "report.html"))
  ET.fromstring(html.encode("utf-8"))  # well-formed: parses as XML
  assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
  assert html.count("data:image/png;base64,") >= 2  # a finding plot and the explored tree
  # What "confirmed" means, in words, with the run's own screen, level and candidate count; the corrected p shown.
  summary_now = json.loads(_read(os.path.join(report, "findings.json")))["summary"]
  assert "What &#8220;confirmed on held-out rows&#8221; means." in html
  assert (
    f"reached {summary_now['z_screen']:g} there and that were not a larger cohort's gap again" in html
    and f"among all {summary_now['candidates']:,} candidates" in html
  )
  # The exploration's newness threshold is recorded (the default explore_new_z, 2.5) and shown in the summary table.
  assert summary_now["explore_new_z"] == 2.5 and "by a z of 2.5 or more" in html
  assert '<th scope="row">explore_new_z</th><td>2.5</td>' in html
  assert "keeps the chance of even one false confirmation at most 0.05" in html and ">p_<wbr/>confirm</th>" in html
  assert "Not adjusted for case mix." in html  # this run has no --adjust
  bh = markup._how_confirmed({"q": 0.1}, adjusted=True, config=cube_env.DiscoveryConfig(correction="bh"))
  assert "expected share of false findings among those confirmed at most 0.1" in bh and "Not adjusted" not in bh
  summary = json.loads(_read(os.path.join(report, "findings.json")))["summary"]
  assert summary["method"] == "beam" and 0 < summary["queries"] <= 60 and summary["confirmed"] >= 1
  for key in ("Summary", "Confirmed findings", "Explored tree", "Unconfirmed candidates"):
    assert f">{key}<" in html
  found = pd.read_csv(os.path.join(report, "findings.csv"))
  hit = found[(found.cohort == f"proc={EVIL}") & (found.group == "B") & (found.measure == "minutes")]
  assert len(hit) == 1 and bool(hit.confirmed.item()) and hit.relative_diff.item() > 0.3
  assert hit.path.item() == f"(all cases) > proc={EVIL}"


def _stories_table(html: str) -> list[dict]:
  """The report's confirmed findings, one dict per headline row: its cells by header and the cohorts under it."""
  ns = {"h": "http://www.w3.org/1999/xhtml"}
  table = next(t for t in ET.fromstring(html.encode("utf-8")).iterfind(".//h:table", ns) if t.get("class") == "stories")
  head = ["".join(th.itertext()) for th in table.findall("h:thead/h:tr/h:th", ns)]
  rows = []
  for tr in table.findall("h:tbody/h:tr", ns):
    if tr.get("class") == "members":
      rows[-1]["members"] = ["".join(inner.find("h:td", ns).itertext()) for inner in tr.iterfind(".//h:tbody/h:tr", ns)]
    else:
      rows.append({h: "".join(td.itertext()) for h, td in zip(head, tr.findall("h:td", ns))} | {"members": []})
  return rows


def test_each_story_is_shown_once_under_its_lead(report):
  found = pd.read_csv(os.path.join(report, "findings.csv"))
  confirmed = found[found["confirmed"]]
  # Race B's longer minutes show in proc A and, diluted, in the whole table: one story, led by proc A.
  story = confirmed[(confirmed.group == "B") & (confirmed.measure == "minutes")]
  assert story["cohort"].tolist() == [f"proc={EVIL}", "(all cases)"] and story["story"].nunique() == 1
  assert story["story_lead"].tolist() == [True, False] and (story["story_size"] == 2).all()
  assert confirmed.groupby("story")["story_lead"].sum().eq(1).all()
  assert (found.loc[~found["confirmed"], "story"] == -1).all()
  records = json.loads(_read(os.path.join(report, "findings.json")))
  n_stories = records["summary"]["stories"]
  assert n_stories == int(confirmed["story_lead"].sum()) < len(confirmed)
  assert [r["story_lead"] for r in records["findings"][:2]] == [True, False]
  html = _read(os.path.join(report, "report.html"))
  assert f"{len(confirmed)} confirmed findings in {n_stories} stories" in html
  shown = _stories_table(html)
  assert len(shown) == n_stories  # one headline row per story
  for row, (_, rows) in zip(shown, confirmed.groupby("story", sort=True)):
    assert row["story"] == str(rows["story"].iloc[0]) and row["cohort"] == rows["cohort"].iloc[0]
    assert row["members"] == rows["cohort"].iloc[1:].tolist()
  assert shown[0]["cohort"] == f"proc={EVIL}" and shown[0]["members"] == ["(all cases)"]
  assert "<details><summary>1 more finding of this story</summary>" in html


def test_no_cell_under_min_group_anywhere(report):
  html = _read(os.path.join(report, "report.html"))
  # Ingest writes its notes under the small-cell limit (11); the report leaves a limit already written alone.
  assert "7 missing values" not in html and "&#x27;urgency&#x27;: fewer than 11 missing values" in html
  found = pd.read_csv(os.path.join(report, "findings.csv"))
  records = json.loads(_read(os.path.join(report, "findings.json")))["findings"]
  for col in COUNTS:
    values = found[col].dropna().to_numpy()
    assert (values >= 15).all(), col
    assert all(r[col] is None or r[col] >= 15 for r in records)
  suppressed = found[found["n_group"].isna()]
  assert suppressed[["mean_group", "mean_rest", "z", "p_value"]].isna().all().all()


def test_a_rare_outcomes_small_event_counts_are_never_shown(tmp_path, capsys):
  """A rate times its rows is a count: a rare binary outcome's findings show their counts but no statistic of a
  half where a side's events (or non-events) are 1 to 14 (min_group 15), in the files or on the console; the run's
  own findings keep the numbers (confirmation used them)."""
  df = make_small_df(n=3000)
  rng = np.random.default_rng(1)
  hit = ((df.proc == "A") & (df.race == "B")).to_numpy()
  df["complication"] = (rng.random(len(df)) < np.where(hit, 0.25, 0.01)).astype(float)  # about 1% outside the plant
  path, out = tmp_path / "rare.csv", str(tmp_path / "out")
  df.to_csv(path, index=False)
  assert (
    discover.main(
      ["--data", str(path), *FLAGS, "--method", "beam", "--budget", "60", "--min-group", "15", "--out", out]
    )
    == 0
  )
  printed = capsys.readouterr().out
  found = pd.read_csv(os.path.join(out, "findings.csv"))
  records = pd.DataFrame(json.loads(_read(os.path.join(out, "findings.json")))["findings"])
  rates = ["mean_group", "mean_rest", "diff", "ci_low", "ci_high", "z", "p_value", "p_adjusted"]
  for shown in (found, records):
    binary = shown[shown.scale == "binary"]
    assert len(binary) >= 1 and binary[rates + ["explore_mean_group", "explore_z"]].isna().all().all()
    assert (binary[["n_group", "n_rest", "explore_n_group", "explore_n_rest"]] >= 15).all().all()  # counts stay
    for prefix in ("", "explore_"):
      for side in ("group", "rest"):
        n, rate = shown[f"{prefix}n_{side}"].to_numpy(float), shown[f"{prefix}mean_{side}"].to_numpy(float)
        for count in (np.round(n * rate), np.round(n * (1 - rate))):
          assert not ((count >= 1) & (count < 15)).any(), (prefix, side)
  assert bool(found[found.scale == "binary"].confirmed.any())  # a confirmed finding is hidden too, not dropped
  rows = [line.split() for line in printed.splitlines() if " complication " in line]
  assert rows and all(r[r.index("complication") + 3 : r.index("complication") + 5] == ["-", "-"] for r in rows)
  assert "None" not in printed and "nan" not in printed.lower().split()  # blank numbers print as "-"
  assert " 1094 " in printed and "e+03" not in printed  # counts print whole (n_rest of the whole table's rest)


def test_same_seed_same_report(csv_path, report, tmp_path, capsys):
  again = str(tmp_path / "again")
  assert (
    discover.main(
      ["--data", csv_path, *FLAGS, "--method", "beam", "--budget", "60", "--min-group", "15", "--out", again]
    )
    == 0
  )
  printed = capsys.readouterr().out  # the console lists stories too: the lead, then "+" and its other findings
  assert "confirmed in 2 stories" in printed and f"0 (+1) proc={EVIL}" in printed and "  + (all cases)" in printed
  a = json.loads(_read(os.path.join(report, "findings.json")))
  b = json.loads(_read(os.path.join(again, "findings.json")))
  for d in (a, b):
    for key in ("search_seconds", "total_seconds"):
      d["summary"].pop(key)
  assert a == b
  assert _read(os.path.join(report, "findings.csv")) == _read(os.path.join(again, "findings.csv"))


def _browser():
  return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no Chromium on this machine (.ci/run installs it where apt works)")
def test_report_renders_in_headless_chromium(report, tmp_path):
  shot = tmp_path / "report.png"
  proc = subprocess.run(
    [
      _browser(),
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--hide-scrollbars",
      f"--screenshot={shot}",
      "--window-size=1200,1600",
      "file://" + os.path.abspath(os.path.join(report, "report.html")),
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000


def test_bad_input_gives_clear_errors(csv_path, tmp_path, capsys):
  out = ["--out", str(tmp_path / "x")]
  cases = [
    (["--data", str(tmp_path / "missing.csv"), *FLAGS], "does not exist"),
    (["--data", csv_path, *FLAGS, "--adjust", "nope"], "'nope'"),
    (
      ["--data", csv_path, "--dimensions", "proc", "nope", "--protected", "race", "--measures", "minutes"],
      "column 'nope' (--dimensions) is not in the table",
    ),
    (
      ["--data", csv_path, "--dimensions", "proc", "proc", "--protected", "race", "--measures", "minutes"],
      "column 'proc' is listed twice in --dimensions",
    ),
    (
      ["--data", csv_path, *FLAGS, "--min-group", "3000"],
      "needs at least 6000 rows, a group and a rest of --min-group = 3000 each: --min-group must be lower (or use",
    ),
    (["--data", csv_path, *FLAGS, "--min-group", "700"], "empty cohort space"),
    (["--data", csv_path, *FLAGS, "--budget", "0"], "--budget"),
    (["--data", csv_path, *FLAGS, "--method", "muzero", "--checkpoint", str(tmp_path / "a.npz")], "no such file"),
    (["--data", csv_path, *FLAGS, "--agent-mode", "episodes"], "--agent-mode is only used by --method muzero"),
    (["--data", csv_path, *FLAGS, "--method", "muzero", "--checkpoint", str(tmp_path / "none")], "no such directory"),
    (["--data", csv_path, *FLAGS, "--q", "1.5"], "q must"),
  ]
  for argv, message in cases:
    assert discover.main(argv + out) == 2, argv
    assert message in capsys.readouterr().err, message
    assert not os.path.exists(os.path.join(out[1], "state")), argv  # a refused run leaves no empty state folder


def test_library_face_returns_a_dataframe(small_df):
  schema = cube_env.Schema(
    dimensions=["proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "complication"]
  )
  found = cube_env.discover(small_df, schema, method="uct", budget=25, max_depth=2, z_screen=4.0, seed=1)
  assert isinstance(found, pd.DataFrame) and found.attrs["queries"] <= 25 and found.attrs["method"] == "uct"
  assert {"confirmed", "p_adjusted", "relative_diff", "explore_z", "path", "smd", "explore_smd"} <= set(found.columns)
  assert not found["smd"].equals(found["explore_smd"])  # each half's own effect size (the small-cell rule reads both)
  assert any(n.startswith("rows split by a hash seeded with 1: ") for n in found.attrs["notes"])
  coded = small_df.copy()  # a code for unknown among the minutes: the report warns, and so does the library now
  coded.loc[coded.index[:3], "minutes"] = 99999.0
  with pytest.warns(UserWarning, match=r"measure 'minutes': fewer than 11 rows hold values of at least 100 times"):
    again = cube_env.discover(coded, schema, method="uct", budget=25, max_depth=2, z_screen=4.0, seed=1)
  assert any(n.startswith("warning: measure 'minutes': fewer than 11 rows hold") for n in again.attrs["notes"])


@struct.dataclass
class _AgentState:
  params: dict
  iteration: int


def save_tiny_agent(directory, df, schema, policy_head="auto"):
  """An untrained agent saved like experiments.train saves one (parameters, config, env identity, task).

  Its policy is fully convolutional (plays any grid) unless `policy_head` is "dense".
  """
  cube = cube_env.build_cube(df, schema)
  env, _ = cube_env.make_env(cube, horizon=4, max_depth=2)
  config = muzero_jax.MuZeroConfig(
    channels=4,
    num_blocks=1,
    head_channels=2,
    latent_size=8,
    hidden_size=8,
    num_simulations=2,
    max_num_considered_actions=2,
    max_episode_steps=4,
    seed=0,
    policy_head=policy_head,
  )
  net = muzero_jax.make_network(config, env.num_actions, env.observation_shape)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + env.observation_shape), jnp.zeros((1,), jnp.int32))
  muzero_jax.save(
    directory, _AgentState(params=params, iteration=jnp.int32(1)), config, env=env, extra={"task": {"horizon": 4}}
  )


def test_shown_findings_have_no_test_where_the_confirmation_half_had_none(monkeypatch):
  run = types.SimpleNamespace(
    config=types.SimpleNamespace(min_group=11),
    halves=None,  # no half sizes shown beside it
    findings=pd.DataFrame(
      {
        "confirmed": [True, False],
        "reason": ["confirmed", "not testable in the confirmation half (small group or too few events)"],
        "scale": ["linear", "binary"],
        "n_group": [40.0, 300.0],
        "n_rest": [400.0, 500.0],
        "mean_group": [3.0, 0.5],
        "mean_rest": [2.0, 0.5],
        "z": [5.0, 0.0],
        "p_value": [1e-6, 1.0],
        "p_adjusted": [1e-5, 1.0],
        "explore_z": [6.0, 4.5],
      }
    ),
  )
  shown = findings_table(run)
  assert shown.loc[1, ["z", "p_value", "p_adjusted"]].isna().all() and shown.loc[1, "explore_z"] == 4.5
  assert shown.loc[0, "z"] == 5.0 and shown.loc[1, "n_group"] == 300.0
  assert run.findings.loc[1, "z"] == 0.0  # the run's own rows are not changed
  # The library's table is the same view: `cube_env.discover` shows what the report shows.
  library = cube_env.shown_findings(run.findings, 11)
  assert library.loc[1, ["z", "p_value", "p_adjusted"]].isna().all() and library.loc[0, "p_value"] == 1e-6
  run.search, run.seconds = types.SimpleNamespace(queries=3, z_screen=4.0), 0.5
  run.config = types.SimpleNamespace(min_group=11, budget=10, method="greedy")
  monkeypatch.setattr(pipeline, "run_discovery", lambda *_args, **_kwargs: run)
  shown_by_discover = cube_env.discover(
    pd.DataFrame(), cube_env.Schema(dimensions=["a"], protected=["b"], measures=["c"])
  )
  assert (
    shown_by_discover.loc[1, ["z", "p_value", "p_adjusted"]].isna().all() and shown_by_discover.attrs["queries"] == 3
  )


def test_a_binary_measure_too_rare_for_any_test_is_named_in_the_coding_notes(small_df):
  """Fewer than 2 x MIN_EXPECTED events (or non-events) in a cube: no cohort can test the measure; the note says so
  without the count; 10 are enough to note nothing. A run's notes carry it (its exploration half's cube)."""
  schema = cube_env.Schema(dimensions=["proc", "site"], protected=["race"], measures=["minutes", "rare"])
  df = small_df.assign(rare=0.0)
  df.loc[df.index[:9], "rare"] = 1.0
  (note,) = cube_env.untestable_measures(cube_env.build_cube(df, schema))
  assert (
    note.startswith("measure 'rare': fewer than 10 events or non-events in the exploration rows") and "9" not in note
  )
  df.loc[df.index[9], "rare"] = 1.0
  assert cube_env.untestable_measures(cube_env.build_cube(df, schema)) == ()
  flipped = df.assign(rare=1.0 - df["rare"])  # 10 non-events: the same
  assert cube_env.untestable_measures(cube_env.build_cube(flipped, schema)) == ()
  halves = cube_env.split_cubes(df, schema, seed=0)  # 10 events in all: under 10 in the exploration half
  assert cube_env.untestable_measures(halves.explore) == (note,)
  prepared = cube_env.prepare(df, schema, cube_env.DiscoveryConfig(method="greedy", budget=10))
  assert note in prepared.halves.summary  # a run's coding notes


def test_a_continuous_measure_no_cohort_can_test_is_named_in_the_coding_notes(small_df):
  """An ingest audit: a measure with fewer than 2 x min_group values in the exploration half, or one value in all of
  them, left the search without a word (a rare binary one was named). 22 values are enough to note nothing."""
  schema = cube_env.Schema(dimensions=["proc", "site"], protected=["race"], measures=["minutes", "sparse", "flat"])
  df = small_df.assign(sparse=np.nan, flat=7.5)
  df.loc[df.index[:21], "sparse"] = np.arange(21.0)
  df.loc[df.index[-50:], "flat"] = 9.0  # not constant in the table (ingest refuses that)
  cube = cube_env.build_cube(df, schema)
  stats = np.asarray(cube.stats).copy()  # as a half without those rows reads: 7.5 less the table's mean everywhere
  flat = 7.5 - cube.meta.shift[2]
  stats[:, 2, 1], stats[:, 2, 2] = stats[:, 2, 0] * flat, stats[:, 2, 0] * np.float32(flat) ** 2
  cube = cube.replace(stats=jnp.asarray(stats))
  notes = cube_env.untestable_measures(cube)
  assert notes == (
    "measure 'sparse': fewer than 22 values in the exploration rows, too few for any test (a test needs 11 on each "
    "side); it is never tested, so no finding of it is not evidence of no disparity",
    "measure 'flat': one value in every exploration row, nothing to compare; it is never tested, so no finding of it "
    "is not evidence of no disparity",
  )
  assert cube_env.untestable_measures(cube, min_group=10.5) == notes  # the limit is the small-cell rule's at least
  df.loc[df.index[21], "sparse"] = 21.0
  assert cube_env.untestable_measures(cube_env.build_cube(df, schema)) == ()
  assert len(cube_env.untestable_measures(cube_env.build_cube(df, schema), min_group=20)) == 1  # 22 < 2 x 20


def test_groups_too_small_to_test_are_named_in_the_coding_notes(small_df):
  """A protected group under min_group rows is never tested: the notes say so, without its count."""
  schema = cube_env.Schema(dimensions=["proc", "site"], protected=["race", "sex"], measures=["minutes"])
  assert cube_env.untested_groups(cube_env.split_cubes(small_df, schema, seed=0).explore, 11) == ()
  df = small_df.copy()
  df.loc[df.index[:5], "race"] = "AIAN"  # 5 rows: two or three in each half
  explore = cube_env.split_cubes(df, schema, seed=0).explore
  assert cube_env.untested_groups(explore, 11) == (
    "protected 'race': group 'AIAN' has fewer than 11 exploration rows and is never tested (its rows stay in the "
    "other groups' rest; a cohort's 'race' tests whose numbers would give a small count of them back show none)",
  )
  race, sex = cube_env.untested_groups(explore, 2000)  # about 2,000 exploration rows: every group is under
  assert race.startswith("protected 'race': groups 'W', 'B', 'A', 'AIAN' have fewer than 2000 exploration rows each")
  assert sex.startswith("protected 'sex': groups ")


def test_muzero_method_plays_a_saved_agent_within_budget(csv_path, tmp_path, capsys, monkeypatch):
  df = pd.read_csv(csv_path)
  schema = cube_env.Schema(
    dimensions=["proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "complication"]
  )
  ckpt, dense = str(tmp_path / "agent"), str(tmp_path / "dense")
  save_tiny_agent(ckpt, df, schema)
  save_tiny_agent(dense, df, schema, policy_head="dense")
  out = str(tmp_path / "mz")
  base = ["--data", csv_path, *FLAGS, "--method", "muzero", "--checkpoint", ckpt, "--budget", "11", "--out", out]
  for mode, note in (("frontier", "best-first over the frontier"), ("episodes", "episodes of up to 4")):
    assert discover.main(base + ["--agent-mode", mode]) == 0
    summary = json.loads(_read(os.path.join(out, "findings.json")))["summary"]
    assert summary["method"] == "muzero" and summary["queries"] == 11, mode  # frontier: 11 cohorts; episodes: cut
    assert note in summary["method_note"], summary["method_note"]
  wider = [
    "--data",
    csv_path,
    "--dimensions",
    "proc",
    "site",
    "urgency",
    "bmi",
    "--protected",
    "race",
    "sex",
    "--measures",
    "minutes",
    "--method",
    "muzero",
    "--budget",
    "6",
    "--out",
    out,
    "--no-progress",
  ]
  # A grid-policy agent plays a wider table than it was saved for; a dense-head one refuses it (and the frontier).
  assert discover.main(wider + ["--checkpoint", ckpt]) == 0
  assert json.loads(_read(os.path.join(out, "findings.json")))["summary"]["queries"] == 6
  assert discover.main(wider + ["--checkpoint", dense, "--agent-mode", "episodes"]) == 2
  assert "trained on a grid" in capsys.readouterr().err
  assert discover.main(wider + ["--checkpoint", dense]) == 2
  assert "needs an agent with grid policy heads; use --agent-mode episodes" in capsys.readouterr().err
  # Beyond the largest grid: the limit and the flags that narrow the table.
  monkeypatch.setattr(agent_play, "MAX_FILTERS", 5)
  assert discover.main(wider + ["--checkpoint", ckpt]) == 2
  err = capsys.readouterr().err
  assert "at most 5 filter columns x 40 categories; this table has 6 x" in err and "--max-categories" in err


def _tree_run(visits, findings):
  """A run as far as `tree_figure` reads one: its visits (cohort, parent, depth) and findings (query, confirmed)."""
  return types.SimpleNamespace(
    search=types.SimpleNamespace(visits=pd.DataFrame(visits)), findings=pd.DataFrame(findings)
  )


def _marker(collection) -> str:
  """The marker a scatter's points are drawn with: the one of "o" and "s" whose path is theirs."""
  drawn = collection.get_paths()[0].vertices
  shapes = {m: MarkerStyle(m).get_path().transformed(MarkerStyle(m).get_transform()).vertices for m in ("o", "s")}
  return next(m for m, v in shapes.items() if v.shape == drawn.shape and np.allclose(v, drawn))


def test_explored_tree_colours_are_its_legends():
  """Red edges lead to confirmed findings, orange dashed ones only to unconfirmed candidates, grey ones elsewhere;
  a candidate's cohort is an orange square, not a dot (an accessibility audit: told apart by colour alone, in an
  orange of 2.5:1 on white); the legend lists exactly these and only confirmed findings' cohorts are labelled."""
  visits = {
    "cohort": ["(all cases)", "a=1", "b=1", "a=1 & c=1", "a=1 & c=2", "b=1 & c=1"],
    "parent": [-1, 0, 0, 1, 1, 2],
    "depth": [0, 1, 1, 2, 2, 2],
  }
  # Query 3 holds a confirmed and an unconfirmed finding; query 5 only an unconfirmed one; 4 none.
  fig = plots.tree_figure(_tree_run(visits, {"query": [3, 3, 5], "confirmed": [True, False, False]}))
  ax = fig.axes[0]
  red, orange, grey = "#d62728", "#b35900", "#cccccc"
  ypos = {0: 0.5, 1: 0.25, 2: 0.75, 3: 1 / 6, 4: 0.5, 5: 5 / 6}  # (i + 0.5) / n in query order at each depth
  by_child = {(d, ypos[q]): q for q, d in enumerate(visits["depth"])}
  edges = {
    by_child[(line.get_xdata()[1], line.get_ydata()[1])]: (to_hex(line.get_color()), line.get_linestyle())
    for line in ax.lines
  }
  assert edges == {1: (red, "-"), 3: (red, "-"), 2: (orange, "--"), 5: (orange, "--"), 4: (grey, "-")}
  nodes = {
    (to_hex(c.get_facecolors()[0]), _marker(c)): [by_child[tuple(xy)] for xy in c.get_offsets()] for c in ax.collections
  }
  assert nodes == {("#888888", "o"): [0, 1, 2, 4], (orange, "s"): [5], (red, "o"): [3]}
  legend = ax.get_legend()
  assert [t.get_text() for t in legend.get_texts()] == [
    "path to a confirmed finding",
    "path to unconfirmed candidates only",
    "cohort with a confirmed finding (labelled)",
    "cohort with unconfirmed candidates only",
    "other visited cohort",
  ]
  assert [to_hex(h.get_color()) for h in legend.legend_handles] == [red, orange, red, orange, "#888888"]
  assert [h.get_marker() for h in legend.legend_handles] == ["None", "None", "o", "s", "o"]  # lines, then dots
  assert [h.get_linestyle() for h in legend.legend_handles[:2]] == ["-", "--"]
  assert [t.get_text() for t in ax.texts] == ["a=1 & c=1"]
  assert ax.get_title() == "6 cohorts visited"


def test_explored_tree_labels_do_not_overlap_with_dozens_of_candidates():
  """67 candidates at depths 2 and 3, 25 or all of them confirmed: the confirmed cohorts are labelled, and no two
  labels' boxes overlap once drawn, though their nodes are closer than a label's height; 67 labels make the figure
  taller than its least height (5 inches)."""
  rng = np.random.default_rng(0)
  cohort, parent, depth = ["(all cases)"], [-1], [0]
  for d, n, first in ((1, 6, 0), (2, 40, 1), (3, 160, 7)):  # children of the previous depth's queries
    for i in range(n):
      p = 0 if d == 1 else int(rng.integers(first, first + {2: 6, 3: 40}[d]))
      cohort.append(f"{cohort[p]} & f{d}=level {i}".removeprefix("(all cases) & "))
      parent.append(p)
      depth.append(d)
  queries = rng.choice(np.arange(7, len(cohort)), 67, replace=False)
  for n_confirmed, tall in ((25, False), (67, True)):  # 8-point labels: 30 would need 5.002 inches
    run = _tree_run(
      {"cohort": cohort, "parent": parent, "depth": depth},
      {"query": queries, "confirmed": np.arange(67) < n_confirmed},
    )
    fig = plots.tree_figure(run)
    ax = fig.axes[0]
    labelled = queries[:n_confirmed]
    assert sorted(t.get_text() for t in ax.texts) == sorted(
      plots._short_middle(cohort[q], 70 if depth[q] == 3 else 40) for q in labelled
    )
    assert (fig.get_size_inches()[1] > 5.0) == tall
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text's own box, not its leader line
    assert [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])] == []
    deepest = sorted(ax.transData.transform((3, (i + 0.5) / 160))[1] for i in range(160) if 47 + i in set(labelled))
    assert min(np.diff(deepest)) < min(b.height for b in boxes)  # at their nodes' heights they would overlap
    colours = [line.get_color() for line in ax.lines]
    assert colours.count("#d62728") >= n_confirmed and (colours.count("#b35900") >= 1) == (n_confirmed < 67)


def _report_table(**extra) -> pd.DataFrame:
  """A findings table as `findings_table` gives it: a confirmed log-scale finding, an unconfirmed binary one."""
  table = pd.DataFrame(
    {
      "confirmed": [True, False],
      "story": [0, -1],
      "story_lead": [True, False],
      "story_size": [1, 1],
      "reason": ["confirmed", "relative difference 2.7% below 10%"],
      "cohort": ["site=South Campus & triage_level=3", "(all cases)"],
      "protected": ["race", "race"],
      "group": ["Black", "Asian"],
      "reference": ["rest", "rest"],
      "measure": ["wait_minutes", "readmitted"],
      "scale": ["log", "binary"],
      "cohort_rows": [14862.0, 30000.0],
      "n_group": [3434.0, np.nan],
      "n_rest": [11428.0, 14862.0],
      "mean_group": [87.3, 0.1],
      "mean_rest": [58.3, 0.0974],
      "diff": [0.4048, 0.0026],
      "ci_low": [0.3437, -0.01],
      "ci_high": [0.4661, 0.015],
      "relative_diff": [0.4991, 0.027],
      "z": [12.9, 0.4],
      "p_value": [0.0, 0.0123],
      "p_adjusted": [0.0, 0.9],
      "explore_z": [11.0, 4.1],
      "explore_p_value": [0.0, 4.1e-5],
      "path": ["(all cases) > site=South Campus", "(all cases)"],
      "query": [2, 0],
    }
  )
  for k, (name, values) in enumerate(extra.items()):  # right after relative_diff, in order
    table.insert(table.columns.get_loc("relative_diff") + 1 + k, name, values)
  return table


def _render(table: pd.DataFrame, planted: pd.DataFrame | None = None, **info) -> str:
  run = _tree_run(
    {
      "cohort": ["(all cases)", "site=South Campus", "site=South Campus & triage_level=3"],
      "parent": [-1, 0, 1],
      "depth": [0, 1, 2],
    },
    table[["query", "confirmed"]],
  )
  run.config = types.SimpleNamespace(favorable=())
  info = {"data": "er.csv", "confirmed": 1, "stories": 1, "exploration_rows": 29724, "adjusted_by": []} | info
  html = render_html(run, info, table, planted=planted)
  ET.fromstring(html.encode("utf-8"))  # well-formed
  return html


def _cells(html: str, header: str) -> list[dict]:
  """The rows of the table that follows `header` (an <h2>), as {column: text}."""
  ns = {"h": "http://www.w3.org/1999/xhtml"}
  body = ET.fromstring(html.encode("utf-8")).find("h:body/h:main", ns)
  kids = list(body)
  after = kids[[("".join(k.itertext())) for k in kids].index(header) + 1 :]
  # The first table after it, as is or in the scrolling box that holds it (`markup.STYLE`'s .wide).
  table = next(t for k in after for t in ([k] if k.tag.endswith("table") else k.iterfind(".//h:table", ns)))
  head = ["".join(th.itertext()) for th in table.findall("h:thead/h:tr/h:th", ns)]
  return [
    {h: "".join(td.itertext()) for h, td in zip(head, tr.findall("h:td", ns))}
    for tr in table.findall("h:tbody/h:tr", ns)
  ]


def test_the_coding_warnings_open_the_report_in_a_box():
  """The coding notes that are warnings open the report, above the findings (an analyst's audit); none, no box."""
  coding = [
    "'site': about 50 missing values coded as 'MISSING'",
    "warning: measure 'minutes': about 40 rows hold 99999",
  ]
  html = _render(_report_table(), coding=coding)
  box = html.index('<div class="warn"><h2>Check these first</h2>')
  assert (
    box < html.index("<h2>In plain words</h2>")
    and html.index(markup.esc("measure 'minutes': about 40 rows hold 99999")) > box
  )
  assert (
    html[box:].index("</div>") > html[box:].index("99999")
    and "about 50 missing" not in html[box : html.index("</div>", box)]
  )
  assert "Check these first" not in _render(_report_table(), coding=coding[:1])


def test_html_prints_counts_whole_p_values_floored_and_plurals_right():
  html = _render(_report_table())
  (lead,) = _stories_table(html)
  assert (lead["n_group"], lead["n_rest"], lead["mean_group"], lead["relative_diff"]) == (
    "3,434",
    "11,428",
    "87.3",
    "0.4991",
  )
  assert lead["p_value"] == lead["p_adjusted"] == "< 1e-300" and lead["z"] == "12.9"
  (other,) = _cells(html, "Unconfirmed candidates")
  assert (other["n_group"], other["n_rest"], other["p_value"]) == ("-", "14,862", "0.0123")  # blank stays blank
  assert other["reason"] == "relative difference 2.7% below 10%"
  assert "e+04" not in html and ">0.0<" not in html
  assert '<th scope="row">exploration_rows</th><td>29,724</td>' in html
  assert '<th scope="row">adjusted_by</th><td>none</td>' in html
  assert "1 confirmed finding in 1 story. A story" in html and "1 stories" not in html
  assert '<th scope="row">adjusted_by</th><td>asa, proc</td>' in _render(_report_table(), adjusted_by=["asa", "proc"])
  # Without the interval of relative_diff the tables are today's; the note still names ci_low/ci_high's scale.
  assert "relative_ci_low" not in html and list(lead)[13:15] == ["relative_diff", "z"]
  assert "<code>ci_low</code> to <code>ci_high</code> are on the test scale, not the natural one" in html


def test_html_shows_the_interval_of_the_relative_difference_beside_it():
  html = _render(_report_table(relative_ci_low=[0.41, -0.02], relative_ci_high=[0.6, 0.08]))
  (lead,) = _stories_table(html)
  assert list(lead)[13:17] == ["relative_diff", "relative_ci_low", "relative_ci_high", "z"]
  assert (lead["ci_low"], lead["ci_high"]) == ("0.3437", "0.4661")
  assert (lead["relative_diff"], lead["relative_ci_low"], lead["relative_ci_high"]) == ("0.4991", "0.41", "0.6")
  (other,) = _cells(html, "Unconfirmed candidates")
  assert (other["relative_diff"], other["relative_ci_low"], other["relative_ci_high"]) == ("0.027", "-0.02", "0.08")
  assert (
    "<code>relative_diff</code> is on the natural scale (group over rest, minus 1: 0.5 is 50% higher) and "
    "<code>relative_ci_low</code> to <code>relative_ci_high</code> its 95% interval on that same scale." in html
  )


def test_html_opens_with_one_plain_sentence_per_confirmed_finding():
  html = _render(_report_table(relative_ci_low=[0.41, -0.02], relative_ci_high=[0.6, 0.08]))
  assert html.index("In plain words") < html.index("<h2>Summary</h2>")
  sentence = (
    "In site=South Campus &amp; triage_level=3, the geometric mean of wait_minutes for race=Black was 50% higher "
    "(95% CI 41% to 60%) than for the rest of that cohort (geometric means 87.3 vs 58.3); confirmed on held-out "
    "rows."
  )
  assert f"<ul><li>{sentence}</li></ul>" in html  # the unconfirmed candidate has none
  assert html.count("everyone else in it") == 1 and "including rows whose group is unknown or missing" in html
  assert "<p>No finding was confirmed on the held-out rows.</p>" in _render(_report_table().assign(confirmed=False))


def test_plain_sentences_name_each_scale_and_hide_small_cells():
  rate = dict(
    cohort="(all cases)",
    protected="sex",
    group="F",
    reference="M",
    measure="readmitted",
    scale="binary",
    mean_group=0.125,
    mean_rest=0.1,
    relative_diff=0.25,
    relative_ci_low=-0.05,
    relative_ci_high=0.6,
  )
  assert finding_sentence(rate) == (
    "In the whole table, the rate of readmitted for sex=F was 25% higher (95% CI of the relative difference -5% to "
    "+60%) than for sex=M (rates 0.125 vs 0.1); confirmed on held-out rows."
  )
  # A favorable outcome: relative_diff is of the non-event rates (0.4 / 0.32 - 1); the shown rates are the events'.
  home = rate | dict(
    measure="home",
    mean_group=0.6,
    mean_rest=0.68,
    relative_diff=0.25,
    relative_ci_low=0.1,
    relative_ci_high=0.42,
    reference="rest",
    cohort="unit=B",
  )
  assert finding_sentence(home, favorable=("home",)) == (
    "In unit=B, the rate of no home for sex=F was 25% higher (95% CI 10% to 42%) than for the rest of that cohort "
    "(rates of home 0.6 vs 0.68); confirmed on held-out rows."
  )
  cost = dict(
    cohort="unit=B",
    protected="race",
    group="W",
    reference="rest",
    measure="cost",
    scale="linear",
    mean_group=-350.0,
    mean_rest=12500.0,
    relative_diff=-0.3,
    relative_ci_low=-0.42,
    relative_ci_high=-0.2,
  )
  assert finding_sentence(cost, adjusted_by=["asa"]) == (
    "In unit=B, the mean of cost for race=W was 30% lower (95% CI 20% to 42%) than for the rest of that cohort after "
    "adjustment for case mix (asa) (means of observed minus expected -350 vs 12,500); confirmed on held-out rows."
  )
  # A binary measure under adjustment is tested as excess rates (its row's scale "linear"): it still reads as rates.
  excess = cost | dict(measure="readmitted", mean_group=-0.05, mean_rest=0.01, relative_diff=-0.6)
  excess |= dict(relative_ci_low=-1.0, relative_ci_high=-0.2)
  assert finding_sentence(excess, adjusted_by=["asa"], binary=["readmitted"]) == (
    "In unit=B, the rate of readmitted for race=W was 60% lower (95% CI 20% to 100%) than for the rest of that "
    "cohort after adjustment for case mix (asa) (excess rates of readmitted over expected -0.05 vs 0.01); "
    "confirmed on held-out rows."
  )
  hidden = rate | dict(mean_group=None, mean_rest=None, relative_diff=None, relative_ci_low=None)
  assert finding_sentence(hidden) == (
    "In the whole table, the rate of readmitted for sex=F differed from sex=M; its numbers are hidden by the "
    "small-cell rule; confirmed on held-out rows."
  )
  why = "this cohort's rows missing the measure (fewer than 11) would follow: run the measure on the rows that have it"
  assert finding_sentence(
    hidden | dict(explore_z=None, direction="lower", hidden=f"{why}; exploration half: {why}")
  ) == (
    "In the whole table, the rate of readmitted for sex=F was lower than for sex=M; its numbers are hidden by the "
    "small-cell rule because in both halves, this cohort's rows missing the measure (fewer than 11) would follow (to "
    "see them, run the measure on the rows that have it); confirmed on held-out rows."
  )
  no_interval = {k: v for k, v in rate.items() if not k.startswith("relative_ci")}
  assert "was 25% higher than for sex=M (rates" in finding_sentence(no_interval)


def test_report_opens_with_the_runs_findings_in_plain_words(report):
  found = pd.read_csv(os.path.join(report, "findings.csv"))
  html = _read(os.path.join(report, "report.html"))
  confirmed = found[found["confirmed"]]
  assert html.count("; confirmed on held-out rows.</li>") == len(confirmed) >= 2
  lead = confirmed.iloc[0]  # race B's longer minutes in proc A, on the log scale
  assert lead.scale == "log" and lead.relative_diff > 0
  words = (
    f"In proc=&lt;script&gt;alert(1)&lt;/script&gt;, the geometric mean of minutes for race=B was "
    f"{lead.relative_diff:.0%} higher"
  )
  means = f"than for the rest of that cohort (geometric means {lead.mean_group:.4g} vs {lead.mean_rest:.4g})"
  assert words in html and means in html


def test_findings_files_list_the_interval_of_the_relative_difference_beside_it():
  i = CSV_COLUMNS.index("relative_diff")
  assert CSV_COLUMNS[i : i + 3] == ("relative_diff", "relative_ci_low", "relative_ci_high")
  findings = _report_table(relative_ci_low=[0.41, -0.02], relative_ci_high=[0.6, 0.08])
  run = types.SimpleNamespace(config=types.SimpleNamespace(min_group=11), findings=findings, halves=None)  # no sizes
  shown = findings_table(run)
  assert list(shown.columns[shown.columns.get_loc("relative_diff") :][:3]) == list(CSV_COLUMNS[i : i + 3])
  assert shown.loc[0, ["relative_ci_low", "relative_ci_high"]].tolist() == [0.41, 0.6]
  assert shown.loc[1, ["relative_ci_low", "relative_ci_high"]].tolist() == [-0.02, 0.08]


def _console_run(findings: pd.DataFrame):
  return types.SimpleNamespace(
    config=cube_env.DiscoveryConfig(method="greedy", budget=10),
    search=types.SimpleNamespace(queries=3, seconds=0.25, z_screen=4.0, note="", stopped_by=cube_env.STOPPED_DONE),
    halves=types.SimpleNamespace(
      explore_rows=14862,
      confirm_rows=14862,
      summary=(),
      explore=types.SimpleNamespace(
        meta=types.SimpleNamespace(few_values_by_measure={}, filter_names=(), categories=())
      ),
    ),
    findings=findings,
    seconds=0.5,
  )


def test_console_repeats_the_coding_warnings_below_its_table(capsys):
  run = _console_run(_report_table())
  run.halves.summary = (
    "'site': 40 missing values coded as 'MISSING'",
    "warning: measure 'minutes': 44 rows hold 99999",
  )
  print_summary(run, source="er.csv", score=None, paths={"report.html": "out/report.html"}, show=10)
  lines = capsys.readouterr().out.splitlines()
  assert lines[1:3] == [
    "  'site': about 40 missing values coded as 'MISSING'",
    "  warning: measure 'minutes': about 40 rows hold 99999",
  ]
  assert lines[-3:] == [
    "check these first (how the table was read; each is also above):",
    "  measure 'minutes': about 40 rows hold 99999",
    "report: out/report.html (also findings.json, findings.csv)",
  ]


def test_console_gives_reasons_intervals_floored_p_values_and_plurals(capsys):
  table = _report_table(relative_ci_low=[0.41, -0.02], relative_ci_high=[0.6, 0.08])
  table.loc[1, "n_group"] = 3000.0
  paths = {"report.html": "out/report.html"}
  print_summary(_console_run(table), source="er.csv", score=None, paths=paths, show=10)
  lines = capsys.readouterr().out.splitlines()
  assert lines[1].endswith("|z| >= 4.00, new at z 2.50")  # the exploration's screen and newness threshold
  assert lines[2].startswith("2 candidates (new findings on the exploration half), 1 confirmed in 1 story (")
  head, lead, other = lines[3:6]
  assert head.split() == [
    "story",
    "cohort",
    "protected",
    "group",
    "measure",
    "n_group",
    "n_rest",
    "mean_group",
    "mean_rest",
    "relative_diff",
    "relative_ci",
    "z",
    "p_adjusted",
    "confirmed",
    "reason",
  ]
  assert lead.split()[8:] == [
    "3434",
    "11428",
    "87.3",
    "58.3",
    "0.499",
    "0.41",
    "to",
    "0.6",
    "12.9",
    "<",
    "1e-300",
    "True",
  ]
  assert " ".join(other.split()[6:]) == (  # an unconfirmed candidate's reason, last
    "3000 14862 0.1 0.0974 0.027 -0.02 to 0.08 0.4 0.9 False relative difference 2.7% below 10%"
  )
  print_summary(
    _console_run(table.iloc[1:].drop(columns=["relative_ci_low", "relative_ci_high"])),
    source="er.csv",
    score=None,
    paths=paths,
    show=10,
  )
  lines = capsys.readouterr().out.splitlines()
  assert lines[2].startswith("1 candidate (new findings on the exploration half), 0 confirmed in 0 stories (")
  assert "relative_ci" not in lines[3] and lines[3].split()[-4:] == ["z", "p_adjusted", "confirmed", "reason"]


def test_console_writes_a_blank_number_as_a_dash_never_none_nan_or_na(capsys):
  """An untested candidate's blank numbers (a hidden count, a side without rows) and the precision of no reported
  findings printed as None, NaN, <NA> and nan beside each other (an audit's run with --explore-fraction 0.99)."""
  table = _report_table(relative_ci_low=[0.41, np.nan], relative_ci_high=[0.6, np.nan])
  table.loc[1, ["n_rest", "mean_group", "mean_rest", "relative_diff", "z", "p_adjusted"]] = np.nan
  score = {
    "candidates": {"n_truth": 0, "recall": float("nan"), "precision": 0.0, "n_false": 3, "n_reported": 3},
    "confirmed": {"n_truth": 8, "recall": 0.0, "precision": float("nan"), "n_false": 0, "n_reported": 0},
  }
  print_summary(_console_run(table), source="er.csv", score=score, paths={"report.html": "out/report.html"}, show=10)
  out = capsys.readouterr().out
  assert not {"None", "NaN", "nan", "nan;", "<NA>"} & set(out.split()), out
  # Nothing planted (a null demo): recall "-", not "nan" (a report audit); and why the search stopped, as the
  # report and findings.json say it (the console did not).
  assert "truth (candidates): 0 planted; recall -; precision 0.00 (3 false of 3)" in out
  assert "3 group-by queries of 10, stopped before its budget: the method had no cohort left to visit;" in out
  other = out.splitlines()[5].split()
  assert other[other.index("readmitted") + 1 :][:9] == ["-"] * 8 + ["False"]  # n_group to p_adjusted
  assert "truth (confirmed): 8 planted; recall 0.00; precision - (0 false of 0)" in out
  assert [console._cell(v) for v in (np.float32("nan"), np.float64(0.12345), None, pd.NA, 7)] == [
    "-",
    "0.123",
    "-",
    "-",
    "7",
  ]


def test_console_says_why_a_confirmed_findings_numbers_are_hidden(capsys):
  table = _report_table(relative_ci_low=[0.41, -0.02], relative_ci_high=[0.6, 0.08])
  why = "this cohort's rows missing the measure (fewer than 11) would follow: run the measure on the rows that have it"
  table["hidden"] = [why, None]
  print_summary(_console_run(table), source="er.csv", score=None, paths={"report.html": "out/report.html"}, show=10)
  out = capsys.readouterr().out
  assert f"True numbers hidden: {why}" in " ".join(out.split())


def test_plain_sentences_read_a_favorable_measures_direction_from_its_non_event_rates():
  """A review's cases: the exploration z is of the event rates, so a hidden favorable finding's direction flips; an
  adjusted run codes a binary measure on scale "linear", still a rate of no event; no relative difference (the
  rest's mean 0) gives the means alone, not "hidden"."""
  base = dict(cohort="(all cases)", protected="race", group="B", measure="survived", scale="binary", reference="rest")
  hidden = dict(base, mean_group=None, mean_rest=None, relative_diff=None, direction="lower", hidden="why")
  assert finding_sentence(hidden, favorable=["survived"]).startswith(
    "In the whole table, the rate of no survived for race=B was higher than for the rest of the table; its numbers"
  )
  assert "the rate of survived for race=B was lower than" in finding_sentence(hidden)
  adjusted = dict(base, scale="linear", measure="home", mean_group=-0.05, mean_rest=0.03, relative_diff=0.25)
  assert finding_sentence(adjusted, favorable=["home"], adjusted_by=["asa"]) == (
    "In the whole table, the rate of no home for race=B was 25% higher than for the rest of the table after "
    "adjustment for case mix (asa) (excess rates of home over expected -0.05 vs 0.03); confirmed on held-out rows."
  )
  zero = dict(base, scale="linear", measure="cost", mean_group=12.0, mean_rest=0.0, relative_diff=float("nan"))
  assert finding_sentence(zero) == (
    "In the whole table, the mean of cost for race=B differed from the rest of the table (means 12 vs 0); confirmed "
    "on held-out rows."
  )
  # A review: a measure with values below 0 (no relative difference) reads its direction and standardized gap.
  change = dict(zero, measure="change", mean_group=10.82, mean_rest=35.72, smd=-0.406, direction="lower")
  assert finding_sentence(change) == (
    "In the whole table, the mean of change for race=B was lower than for the rest of the table (means 10.82 vs "
    "35.72, 0.41 standard deviations apart); confirmed on held-out rows."
  )
  # Hidden numbers of an adjusted run say so; a table without `direction` reads explore_z's sign.
  assert "was lower than for the rest of the table after adjustment for case mix (asa); its numbers" in (
    finding_sentence(dict(hidden, direction="higher"), favorable=["survived"], adjusted_by=["asa"])
  )
  older = {k: v for k, v in hidden.items() if k != "direction"} | {"explore_z": 4.0}
  assert "the rate of survived for race=B was higher than" in finding_sentence(older)


def test_stories_beyond_the_plots_are_counted_with_the_right_verb(monkeypatch):
  monkeypatch.setattr(markup, "MAX_PLOTS", 0)  # the one story is beyond the plots
  assert "1 more story is not plotted (each is in the table above and in findings.csv)." in _render(_report_table())


def test_findings_csv_cells_a_spreadsheet_would_run_are_written_as_text():
  """CSV injection: a category named '=HYPERLINK(...)' (or starting with +, -, @) is written with an apostrophe
  before it, so a spreadsheet shows it instead of running it; numbers (negative ones too) stay numbers."""
  table = pd.DataFrame(
    {
      "group": ['=HYPERLINK("http://example.invalid/","B")', "+1", "-x", "@SUM(A1)", "B", None],
      "cohort": ["site=a", "site=b", "site=-1", "(all cases)", "site=c", "site=d"],
      "z": [-1.5, 2.0, -3.0, 4.0, 5.0, -6.0],
    }
  )
  safe = files._spreadsheet_safe(table)
  assert safe["group"].tolist()[:5] == ["'" + table["group"][0], "'+1", "'-x", "'@SUM(A1)", "B"]
  assert pd.isna(safe["group"][5]) and safe["cohort"].equals(table["cohort"]) and safe["z"].equals(table["z"])


SENTINEL_WARNING = (
  "measure 'minutes': fewer than 11 rows hold values of at least 100 times its median magnitude (55.67), e.g. "
  "99999: if they are codes for unknown, recode them as missing"
)


def _warnings_column(out: str) -> list[str]:
  """findings.csv's `warnings` cells as written ("" where empty, not NaN)."""
  return pd.read_csv(os.path.join(out, "findings.csv"), usecols=["warnings"], keep_default_na=False)[
    "warnings"
  ].tolist()


def test_findings_csv_carries_the_runs_warnings_on_every_row(tmp_path):
  """An analyst's audit: a findings.csv forwarded alone lost every caveat of how the table was read. Each row now
  carries the run's warnings (3 minutes of 99999 here), redacted as the report's box shows them; routine notes stay
  out, and so does the JSON's records (its summary lists each note once)."""
  df = make_small_df(n=3000)
  df.loc[df.index[:3], "minutes"] = 99999.0  # 3 rows: a count the cell must not show
  path, out = tmp_path / "coded.csv", str(tmp_path / "out")
  df.to_csv(path, index=False)
  argv = ["--data", str(path), *FLAGS, "--method", "greedy", "--budget", "10", "--min-group", "15", "--out", out]
  assert discover.main(argv) == 0
  info = json.loads(_read(os.path.join(out, "findings.json")))
  assert [line for line in info["summary"]["coding"] if line.startswith("warning: ")] == [
    f"warning: {SENTINEL_WARNING}"
  ]
  assert len(info["summary"]["coding"]) > 1  # routine notes too (missing sites, the log scale, the split)
  cells = _warnings_column(out)
  assert len(cells) == len(info["findings"]) >= 1 and cells == [SENTINEL_WARNING] * len(cells)
  assert markup.esc(SENTINEL_WARNING) in _read(os.path.join(out, "report.html"))  # as the box shows it
  header = _read(os.path.join(out, "findings.csv")).splitlines()[0].split(",")
  assert header.index("warnings") == header.index("hidden") + 1
  assert "3 rows" not in _read(os.path.join(out, "findings.csv"))
  assert all("warnings" not in record for record in info["findings"])


def test_findings_csv_warnings_are_empty_without_warnings_and_written_as_text(report):
  """No warning in the run: the column is there and empty. A warning is joined by " | " after the others, and one
  that a spreadsheet would run (a value quoted at its start) is written after an apostrophe, like any cell."""
  coding = json.loads(_read(os.path.join(report, "findings.json")))["summary"]["coding"]
  assert coding and not any(line.startswith("warning: ") for line in coding)
  cells = _warnings_column(report)
  assert len(cells) >= 2 and cells == [""] * len(cells)
  notes = ["'site': about 50 missing values coded as 'MISSING'", "warning: =1+1 looks like a formula"]
  notes.append(f"warning: {SENTINEL_WARNING}")
  csv = files.csv_table(_report_table(), notes)
  assert csv["warnings"].tolist() == [f"'=1+1 looks like a formula | {SENTINEL_WARNING}"] * 2
  assert list(csv.columns[csv.columns.get_loc("reason") :][:2]) == ["reason", "warnings"]
  assert files.csv_table(_report_table().iloc[:0], notes)["warnings"].tolist() == []


def test_a_finding_plot_whose_numbers_are_hidden_says_so(monkeypatch):
  """An audit: a finding whose means the small-cell rule blanked drew an empty chart; it now says why."""
  figures = []
  monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or "png")
  row = dict(group="B", reference="rest", measure="complication", scale="binary", cohort="unit=A", protected="race")
  plots.finding_plot(row)
  shown = row | dict(mean_group=0.2, mean_rest=0.1, explore_mean_group=0.21, explore_mean_rest=0.1)
  plots.finding_plot(shown)
  texts = [[t.get_text() for t in fig.axes[0].texts] for fig in figures]
  assert texts == [["numbers hidden by the small-cell rule"], []]
  # A '$' in a value is drawn as it is (a security audit: a group named '$\\foo$' failed the report: mathtext).
  plots.finding_plot(shown | dict(measure="cost_$"))  # escaped once in the default y label (a review: twice)
  assert figures[-1].axes[0].get_ylabel() == "cost_\\$ (rate)"
  monkeypatch.undo()
  assert plots.finding_plot(shown | dict(group="$\\foo$", cohort="unit=$x$")).startswith("data:image/png;base64,")


def test_html_says_why_rows_are_blank_what_the_plots_show_and_which_relative_differences_differ(report):
  """A report audit: the HTML dropped `hidden` (dashes with no reason), the plots had no legend and adjusted ones a
  wrong axis label, a favorable measure's relative difference (of non-event rates) and a measure below 0 (none) were
  not explained, a hidden finding lost its direction, and wide tables ran off the page."""
  html = _read(os.path.join(report, "report.html"))
  assert 'class="c-hidden">hidden</th>' in html and '<div class="wide" role="region"' in html
  assert ".wide{overflow-x:auto" in html
  assert "the group (red) and the rest or reference group (blue)" in html and "does not start at 0" in html
  table = pd.read_csv(os.path.join(report, "findings.csv"))
  z = np.where(table["diff"].notna() & (table["diff"] != 0), table["diff"], table["explore_z"])
  z = np.where(table["z"].notna() & (table["z"] != 0), table["z"], z)
  shown = pd.notna(z)
  assert shown.any() and list(table["direction"][shown]) == ["higher" if v > 0 else "lower" for v in z[shown]]
  with_dir = pipeline.with_direction(pd.DataFrame({"z": [2.0, -3.0, 0.0, None], "explore_z": [1.0, -1.0, -4.0, 5.0]}))
  assert list(with_dir["direction"]) == ["higher", "lower", "lower", "higher"]
  # An untested candidate's confirmation means are shown without a z: the direction is theirs (a report audit:
  # "lower" beside a group mean of 1.0 against 0.885, read off the exploration z).
  untested = pd.DataFrame({"z": [None, None], "diff": [0.115, None], "explore_z": [-4.0, -4.0]})
  assert list(pipeline.with_direction(untested)["direction"]) == ["higher", "lower"]
  note = markup._scales_note(
    pd.DataFrame({"measure": ["survived", "cd4_change"]}), favorable=["survived"], signed=["cd4_change"]
  )
  assert "(<code>survived</code>), <code>relative_diff</code> compares the rates of not having it" in note
  assert "(<code>cd4_change</code>) has no <code>relative_diff</code>" in note and "in standard deviations" in note
  assert "compares the rates" not in markup._scales_note(pd.DataFrame({"measure": ["x"]}), favorable=["survived"])
  label = markup._plot_label
  assert label({"scale": "log", "measure": "opioid_mme"}, adjusted=True, binary=[]) == (
    "opioid_mme (geometric means of observed / expected)"
  )
  assert label({"scale": "linear", "measure": "complication"}, adjusted=True, binary=["complication"]) == (
    "excess rates of complication over expected"
  )
  assert label({"scale": "log", "measure": "opioid_mme"}, adjusted=False, binary=[]) == "opioid_mme (geometric means)"


def test_long_cohort_labels_keep_the_filters_that_tell_them_apart():
  """A report audit: two confirmed cohorts' tree labels were cut to the same "procedure=total_knee_arthroplasty &
  a..."; cut in the middle, their last filters stay."""
  a = "procedure=total_knee_arthroplasty & anesthesia_type=general & site=north"
  b = "procedure=total_knee_arthroplasty & anesthesia_type=general & site=south"
  short = [plots._short_middle(x, 40) for x in (a, b)]
  assert short[0] != short[1] and all(len(x) == 40 and "..." in x for x in short)
  assert short[1].startswith("procedure=total_kn") and short[1].endswith("site=south")
  assert plots._short_middle("site=a", 40) == "site=a"


NS = {"h": "http://www.w3.org/1999/xhtml"}
HIDDEN = "this cohort's rows missing the measure (fewer than 11) would follow"


def _story_of_two(**extra) -> pd.DataFrame:
  """`_report_table` with a second confirmed finding in the lead's story (the whole table), under it."""
  table = _report_table(**extra)
  member = table.iloc[:1].assign(story_lead=False, story_size=2, cohort="(all cases)", query=0)
  return pd.concat([table.iloc[:1], member, table.iloc[1:]], ignore_index=True).assign(
    story_size=[2, 2, 1], hidden=[None, None, f"{HIDDEN}; exploration half: {HIDDEN}"]
  )


def test_html_tables_are_named_scoped_and_print_on_a4():
  """An accessibility and print audit (WCAG 2.2 AA; A4 in headless Chromium): tables had no name and header cells
  no scope, scrolling boxes could not be reached by keyboard, the body no <main>; printed, word-break broke numbers
  into single characters ("7.733e-15" as "7. / 73 / 3e / -1 / 5") and a story's other findings, in a closed
  <details>, were left out; a hidden row's reason was given twice."""
  truth = {
    "candidates": {"recall": 0.5, "precision": 0.25, "n_truth": 12, "n_reported": 48},
    "confirmed": {"recall": 0.5, "precision": 1.0, "n_truth": 12, "n_reported": 12},
  }
  planted = pd.DataFrame({"cohort": ["(all cases)"], "protected": ["race"], "group": ["Black"], "effect": [0.4]})
  html = _render(_story_of_two(), planted=planted, truth=truth)
  root = ET.fromstring(html.encode("utf-8"))
  body = root.find("h:body", NS)
  assert [k.tag for k in body] == [f"{{{NS['h']}}}main"]
  assert '<meta name="viewport" content="width=device-width, initial-scale=1"/>' in html
  captions = [c.text for c in root.iter(f"{{{NS['h']}}}caption")]
  assert captions == [
    "Run summary",
    "Truth score: the planted effects found",
    "Planted effects (synthetic truth)",
    "Confirmed findings (one row per story)",
    "Other findings of story 0",
    "Unconfirmed candidates: not confirmed on held-out rows",
  ]
  # A printout names the columns it leaves out (the print CSS hides them by their class).
  notes = ["".join(span.itertext()) for span in root.iterfind(".//h:caption/h:span", NS)]
  assert notes == ["; printed without diff, ci_low, ci_high, p_value, path (in findings.csv)"] * 2
  assert all(span.get("class") == "print-only" for span in root.iterfind(".//h:caption/h:span", NS))
  # Each scrolling box is a region named by its table's caption that a keyboard can scroll.
  boxes = [d for d in root.iter(f"{{{NS['h']}}}div") if d.get("class") == "wide"]
  assert [(d.get("role"), d.get("tabindex"), d.get("aria-label")) for d in boxes] == [
    ("region", "0", c) for c in captions[2:]
  ]
  assert all(d.find("h:table/h:caption", NS).text == d.get("aria-label") for d in boxes)
  # Every header cell has a scope: the summary's and the truth score's row names are row headers.
  ths = list(root.iter(f"{{{NS['h']}}}th"))
  assert ths and all(th.get("scope") in ("col", "row") for th in ths)
  rows = ["".join(th.itertext()) for th in ths if th.get("scope") == "row"]
  assert rows[:3] == ["data", "exploration_rows", "confirmation_rows"] and rows[-2:] == ["candidates", "confirmed"]
  truth_table = next(t for t in root.iter(f"{{{NS['h']}}}table") if t.find("h:caption", NS).text.startswith("Truth"))
  corner = truth_table.find("h:tr", NS)[0]
  assert corner.tag == f"{{{NS['h']}}}td" and not "".join(corner.itertext())  # an empty corner is no header
  # Numbers are classed "num" (printed, they never wrap); every cell has its column's class.
  stories = next(t for t in root.iter(f"{{{NS['h']}}}table") if t.get("class") == "stories")
  lead = stories.find("h:tbody/h:tr", NS)
  classes = {c.get("class").split()[0]: c.get("class").split()[1:] for c in lead}
  assert classes["c-n_group"] == classes["c-p_value"] == classes["c-mean_group"] == ["num"]
  assert classes["c-cohort"] == classes["c-group"] == []
  assert lead.find("h:td[@class='c-p_value num']", NS).text == "< 1e-300"  # printed whole, never broken
  head = stories.findall("h:thead/h:tr/h:th", NS)
  assert [th.get("class") for th in head][:3] == ["c-story", "c-cohort", "c-protected"]
  # Long headers may break after "_"; n_group, no wider than its counts, stays whole (and th.text reads it).
  assert ">relative_<wbr/>diff</th>" in html and ">n_group</th>" in html
  # The story's other findings: one cell spanning the whole row.
  (members,) = [tr for tr in stories.findall("h:tbody/h:tr", NS) if tr.get("class") == "members"]
  assert len(members) == 1 and members[0].get("colspan") == str(len(head))
  # The print rules, and none that breaks a number.
  style = markup.STYLE
  assert "@page{size:landscape}" in style and "word-break:break-word" not in style
  assert "td,th{word-break:normal;overflow-wrap:break-word}td.num{white-space:nowrap}" in style
  # A cohort breaks anywhere (a 120-character value without a space made a 1,050 px print 1,784 px wide).
  assert "td.c-cohort{overflow-wrap:anywhere}" in style
  assert ".c-diff,.c-ci_low,.c-ci_high,.c-p_value,.c-p_confirm,.c-path{display:none}" in style
  assert "@media print{details::details-content{content-visibility:visible;display:contents}}" in style
  assert ".print-only{display:none}" in style and ".print-only{display:inline}}" in style
  assert "img{max-width:100%;height:auto}" in style
  # A hidden row's reason once, not again as the exploration half's: marked as both halves.
  (other,) = _cells(html, "Unconfirmed candidates")
  assert other["hidden"] == f"{HIDDEN} (both halves)"


def test_plots_are_drawn_for_print_shown_at_their_old_size_and_described():
  """A print audit: plots at 90 dpi were blurry on paper; at 180 dpi each is shown at half its pixels, as large as
  before on screen. Their alt text says which side is higher and when the small-cell rule blanked the numbers."""
  means = dict(explore_mean_group=[90.1, 0.1], explore_mean_rest=[57.2, 0.1])
  shown = _render(_report_table(direction=["higher", "higher"], **means))
  blank = _report_table(direction=["lower", "higher"], **means)
  blank.loc[0, ["mean_group", "mean_rest", "explore_mean_group", "explore_mean_rest"]] = np.nan
  hidden = _render(blank)
  imgs = {}
  for html in (shown, hidden):
    for img in ET.fromstring(html.encode("utf-8")).iter(f"{{{NS['h']}}}img"):
      png = base64.b64decode(img.get("src").removeprefix("data:image/png;base64,"))
      assert png[:8] == b"\x89PNG\r\n\x1a\n"
      width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
      assert (int(img.get("width")), int(img.get("height"))) == (round(width / 2), round(height / 2))
      imgs.setdefault(html is hidden, []).append((img.get("alt"), width))
  (plot, tree), (blank_plot, _) = imgs[False], imgs[True]
  assert plot[1] > 4.6 * 150  # the finding plot's 4.6 inches at 180 dpi, less the trimmed margins
  assert plot[0] == "site=South Campus & triage_level=3: Black vs rest, wait_minutes; Black higher than rest"
  assert blank_plot[0] == (
    "site=South Campus & triage_level=3: Black vs rest, wait_minutes; Black lower than rest; numbers hidden by the "
    "small-cell rule"
  )
  assert "path column" in tree[0]
  # A payload that is not a whole PNG header gets no size (a review: one crashed the report, a JPEG's gave 0 x 0).
  jpeg = "data:image/png;base64," + base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(40)).decode()
  assert plots.shown_size("data:image/png;base64,iVBORw0KGgo=") is None and plots.shown_size(jpeg) is None


def test_findings_files_write_a_p_value_under_the_floor_as_text_not_zero(tmp_path, capsys):
  """A cold audit: a |z| at the statistics' cap (40) has p exactly 0.0 in float64, and findings.csv and findings.json
  (so the service's API too) wrote 0.0, a certainty no test gives; the report and the console showed "< 1e-300".
  The files now write that text too; every other p-value stays a number."""
  df = make_small_df(n=20000)
  # In proc A each side's minutes are one value (no spread): at these rows (Welch's df near 700) |z| reaches the
  # statistics' cap of 40, where p is 0.0 in float64.
  df.loc[df.proc == "A", "minutes"] = np.where(df.race[df.proc == "A"] == "B", 600.0, 60.0)
  data = tmp_path / "cases.csv"
  df.to_csv(data, index=False)
  out = tmp_path / "out"
  assert discover.main(["--data", str(data), *FLAGS, "--method", "beam", "--budget", "60", "--out", str(out)]) == 0
  records = json.loads((out / "findings.json").read_text())["findings"]
  csv = pd.read_csv(out / "findings.csv", keep_default_na=False)
  lead = next(r for r in records if r["cohort"] == "proc=A" and r["group"] == "B" and r["measure"] == "minutes")
  assert abs(lead["z"]) == 40.0 and lead["confirmed"]
  ps = ("p_value", "p_confirm", "p_adjusted", "explore_p_value")
  assert all(lead[p] == "< 1e-300" for p in ps if p in lead) and "p_adjusted" in lead
  row = csv[(csv.cohort == "proc=A") & (csv.group == "B") & (csv.measure == "minutes")].iloc[0]
  assert all(row[p] == "< 1e-300" for p in ps if p in csv.columns)
  # No p-value anywhere is written as 0; the others are numbers in (0, 1].
  others = [r[p] for r in records for p in ps if p in r and r[p] is not None and r[p] != "< 1e-300"]
  assert others and all(isinstance(p, float) and 0.0 < p <= 1.0 for p in others)
  assert not any(r[p] == 0 for r in records for p in ps if p in r)
  # The report and the console show that z as at least the cap (it may be larger), not as a measured 40.
  (lead_row,) = [r for r in _stories_table((out / "report.html").read_text()) if r["cohort"] == "proc=A"]
  assert lead_row["z"] == "≥ 40" and lead_row["p_value"] == "< 1e-300"
  printed = capsys.readouterr().out
  assert "≥ 40" in printed and " 40.0 " not in printed


def test_floored_p_leaves_numbers_and_blanks_alone():
  table = _report_table()  # the lead's p-values are 0.0 (an underflow), the other's 0.0123, 0.9 and 4.1e-5
  table.loc[1, "p_value"] = np.nan
  out = files.floored_p(table)
  assert out["p_value"].tolist()[0] == out["p_adjusted"].tolist()[0] == "< 1e-300" and np.isnan(out["p_value"][1])
  assert out["p_adjusted"].tolist()[1] == 0.9 and out["explore_p_value"].tolist() == ["< 1e-300", 4.1e-5]
  assert table["p_value"][0] == 0.0 and out["z"].tolist() == [12.9, 0.4]  # a copy; other columns as they were
  assert files.csv_table(table, [])["p_adjusted"].tolist() == ["< 1e-300", 0.9]


def test_z_text_shows_the_cap_and_four_digits_below_it():
  """A review: the report's z cells printed every float digit (2.6445930004119873) once z had its own text, and the
  console's 3 digits showed 39.97 as the cap's 40."""
  assert markup.z_text(2.6445930004119873) == "2.645" and markup.z_text(-12.9) == "-12.9"
  assert markup.z_text(40.0) == "≥ 40" and markup.z_text(-40.0, 3) == "≤ -40"
  assert markup.z_text(39.97, 3) == "39.97" and markup.z_text(3.14159, 3) == "3.14"
  assert markup.cell("explore_z", 3.667760133743286) == "3.668"


def test_the_reports_words_follow_the_run_and_its_markup_holds_any_text(capsys):
  """A report audit: the checks said to have run whatever the settings; the effect size of a measure with values
  below 0 was in no file; an adjusted rate's percentage could not be made from the numbers beside it; a control
  character made the report unparseable; a long word widened the page; the stories beyond the plots were said to be
  in findings.csv alone; "among all 1 candidates"; a long cohort cut the protected column off a plot's title."""
  info = {"candidates": 1, "z_screen": 4.0, "q": 0.05}
  on = markup._how_confirmed(info, adjusted=True, config=cube_env.DiscoveryConfig(method="greedy", budget=5))
  assert "and is not explained by a larger cohort holding it or by another group's opposite gap (" in on
  assert "did not check" not in on and "among the one candidate" in on
  off = markup._how_confirmed(
    info, adjusted=True, config=cube_env.DiscoveryConfig(method="greedy", budget=5, mirror_z=None)
  )
  assert (
    "is not explained by another group" not in off
    and (
      "and is not explained by a larger cohort holding it; the run did not check whether it is another group's "
      "opposite gap (the mirror check was off)"
    )
    in off
  )
  neither = markup._how_confirmed(
    info, adjusted=True, config=cube_env.DiscoveryConfig(method="greedy", budget=5, mirror_z=None, confirm_new_z=None)
  )
  assert "not explained" not in neither and "newness check was off) or another group's opposite gap" in neither
  # smd beside relative_diff in the files and the report's table.
  assert CSV_COLUMNS[CSV_COLUMNS.index("ratio") + 1] == "smd" and "smd" in markup.VIEW
  html = _render(_report_table(smd=[0.61, 0.01]))
  assert [row["smd"] for row in _cells(html, "Confirmed findings")] == ["0.61"]
  # An adjusted run says how a rate's relative difference is made.
  assert "divided by the rest's observed rate or mean" in _render(_report_table(), adjusted_by=["asa"])
  assert "divided by the rest's observed" not in html
  # Control characters are written as escapes: the report parses (`_render`) and the console prints no ESC.
  table = _report_table()
  table.loc[0, "group"] = "ctl\x1b[31mred\x07"
  assert "for race=ctl\\x1b[31mred\\x07 was 50% higher" in _render(table)
  print_summary(_console_run(table), source="er\x1b.csv", score=None, paths={"report.html": "r.html"}, show=10)
  out = capsys.readouterr().out
  assert "\x1b" not in out and "\x07" not in out and "ctl\\x1b[31mred\\x07" in out and "er\\x1b.csv" in out
  assert (
    markup.printable("a\tb\nc\x00\x7f\x9f\ud800\ufffe\uffff\u00e9")
    == "a\tb\nc\\x00\\x7f\\x9f\\ud800\\ufffe\\uffff\u00e9"
  )
  # Bidirectional controls too (a security audit: U+202E in a category turned the report's sentence around).
  table.loc[0, "group"] = "\u202eexe.txt\u2066x\u200f"
  assert "for race=\\u202eexe.txt\\u2066x\\u200f was 50% higher" in _render(table)
  assert markup.printable("\u061c\u200e\u202a\u2069\u05d0") == "\\u061c\\u200e\\u202a\\u2069\u05d0"
  assert "li,p{overflow-wrap:anywhere}" in markup.STYLE
  # A plot's title keeps the protected column.
  title = plots.plot_title({"cohort": "site=" + "x" * 200 + " & unit=B", "protected": "race"})
  assert len(title) <= 70 and title.endswith("& unit=B | race") and "..." in title
  assert plots.plot_title({"cohort": "site=A", "protected": "race"}) == "site=A | race"


def test_the_summary_says_whether_time_or_an_empty_frontier_stopped_the_search():
  """It said "at its time limit, or with no cohort left to visit" whenever the seconds reached the limit (an audit);
  the search's `stopped_by` now says which, and a result without one is read as before."""

  def ended(stopped_by, queries=30, seconds=9.0, time_limit=5.0):
    run = types.SimpleNamespace(
      config=types.SimpleNamespace(budget=100, time_limit=time_limit),
      search=types.SimpleNamespace(queries=queries, seconds=seconds, stopped_by=stopped_by),
    )
    return files.search_ended(run)

  assert ended(cube_env.STOPPED_TIME) == "before its budget: at its time limit (5 s)"
  assert ended(cube_env.STOPPED_DONE) == "before its budget: the method had no cohort left to visit"
  assert ended(cube_env.STOPPED_BUDGET, queries=100) == "at its budget"
  assert ended(cube_env.STOPPED_BUDGET, queries=60) == "at its budget (its next depth would not fit it)"
  assert ended("") == "before its budget: at its time limit (5 s), or with no cohort left to visit"
  assert ended("", seconds=1.0) == "before its budget: the method had no cohort left to visit"
  assert ended(cube_env.STOPPED_TIME, time_limit=None) == "before its budget: at its time limit"
