"""The discover CLI and its report: files, escaping, small cells, stories, determinism, errors, the muzero method."""

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

import cube_env
import muzero_jax
from cube_env.discovery import pipeline
from experiments import discover
from experiments.agent import play as agent_play
from experiments.report import findings_table
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
  assert "7 missing values" not in html and "&#x27;urgency&#x27;: fewer than 15 missing values" in html
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
  assert "complication" in printed and "None" in printed
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
    (["--data", csv_path, *FLAGS, "--min-group", "3000"], "empty cohort space"),
    (["--data", csv_path, *FLAGS, "--budget", "0"], "--budget"),
    (["--data", csv_path, *FLAGS, "--method", "muzero", "--checkpoint", str(tmp_path / "a.npz")], "no such file"),
    (["--data", csv_path, *FLAGS, "--agent-mode", "episodes"], "--agent-mode is only used by --method muzero"),
    (["--data", csv_path, *FLAGS, "--method", "muzero", "--checkpoint", str(tmp_path / "none")], "no such directory"),
    (["--data", csv_path, *FLAGS, "--q", "1.5"], "q must"),
  ]
  for argv, message in cases:
    assert discover.main(argv + out) == 2, argv
    assert message in capsys.readouterr().err, message


def test_library_face_returns_a_dataframe(small_df):
  schema = cube_env.Schema(
    dimensions=["proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "complication"]
  )
  found = cube_env.discover(small_df, schema, method="uct", budget=25, max_depth=2, z_screen=4.0, seed=1)
  assert isinstance(found, pd.DataFrame) and found.attrs["queries"] <= 25 and found.attrs["method"] == "uct"
  assert {"confirmed", "p_adjusted", "relative_diff", "explore_z", "path", "smd", "explore_smd"} <= set(found.columns)
  assert not found["smd"].equals(found["explore_smd"])  # each half's own effect size (the small-cell rule reads both)


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
