"""Resumable discovery: the journal (cube_env.discovery.journal) and `experiments.discover --resume`.

Every method is killed with a real SIGKILL at a seeded random query count (exhaustive: column subset) in a
subprocess, resumed with `--resume`, and must end with the findings of an uninterrupted run, byte for byte in
findings.csv and value for value in findings.json.
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from unittest import mock

import numpy as np
import pandas as pd
import pytest

import cube_env
from cube_env.discovery import journal
from cube_env.discovery import space as space_lib
from experiments import discover
from tests.conftest import make_small_df, override_flags
from tests.test_discover_report import save_tiny_agent

SCHEMA = cube_env.Schema(
  dimensions=["proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "complication"]
)
BUDGET, EVERY = 40, 5
FLAGS = [
  "--dimensions",
  *SCHEMA.dimensions,
  "--protected",
  *SCHEMA.protected,
  "--measures",
  *SCHEMA.measures,
  "--max-depth",
  "2",
  "--z-screen",
  "3",
  "--no-progress",
  "--budget",
  str(BUDGET),
  "--save-every",
  str(EVERY),
]
SEEDS = {"random": 5}  # seed 3 (the others') leaves the random walk with no candidate to compare
METHODS = ("exhaustive", "random", "greedy", "beam", "uct", "muzero", "auto")  # auto: 103 cohorts > 40, so it searches


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  df = make_small_df(seed=5, n=2000)
  csv = str(root / "cases.csv")
  df.to_csv(csv, index=False)
  ckpt = str(root / "agent")
  save_tiny_agent(ckpt, df, SCHEMA)
  return {"csv": csv, "agent": ckpt, "root": root}


def _flags(setup, method: str, out: str) -> list[str]:
  extra = {"muzero": ["--checkpoint", setup["agent"]], "exhaustive": ["--budget", "200"]}.get(method, [])  # depth 2
  seed = ["--seed", str(SEEDS.get(method, 3))]
  return override_flags(["--data", setup["csv"], *FLAGS, *seed, "--method", method, "--out", out], extra)


def _worker(sig: str, at: int, argv: list[str]) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "tests.discover_worker", sig, str(at), "--", *argv]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": os.getcwd()})


SAME = ("method", "budget", "queries", "cohorts_visited", "candidates", "confirmed", "stories", "method_note")


def _findings(out: str) -> tuple[list, str, dict]:
  """The findings (JSON and CSV) and the summary's search facts (no times or paths) of a report."""
  with open(os.path.join(out, "findings.json"), encoding="utf-8") as handle:
    found = json.load(handle)
  with open(os.path.join(out, "findings.csv"), encoding="utf-8") as handle:
    return found["findings"], handle.read(), {k: found["summary"][k] for k in SAME}


def _manifest(out: str) -> dict:
  with open(os.path.join(out, "state", journal.MANIFEST), encoding="utf-8") as handle:
    return json.load(handle)


@pytest.mark.parametrize(
  "method",
  [
    pytest.param(m, marks=pytest.mark.skipif(m not in cube_env.method_names(), reason=f"no {m} method here"))
    for m in METHODS
  ],
)
def test_killed_run_resumes_to_the_uninterrupted_findings(setup, method, tmp_path):
  ref = str(tmp_path / "ref")
  assert discover.main(_flags(setup, method, ref) + ["--no-save-state"]) == 0
  expected = _findings(ref)
  assert expected[0], "the uninterrupted run must find something for the comparison to mean anything"
  # Exhaustive saves by column subsets: 1 + 5 + 10 of them to depth 2 on these 5 filter columns.
  units = 16 if method == "exhaustive" else BUDGET
  kill_at = int(np.random.default_rng(METHODS.index(method)).integers(1, units))
  out = str(tmp_path / "run")
  killed = _worker("KILL", kill_at, _flags(setup, method, out))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert not os.path.exists(os.path.join(out, "findings.json"))
  saved = _manifest(out)
  if method == "exhaustive":
    assert 0 <= saved["chunks"] <= kill_at  # saved every 5 cohorts: at most the subsets done before the kill
  else:
    assert saved["queries"] == kill_at // EVERY * EVERY  # what the last save before the kill held
  assert discover.main(["--resume", out]) == 0
  assert _findings(out) == expected
  assert not os.path.exists(os.path.join(out, "state"))  # a finished run removes its raw state (--keep-state keeps it)
  print(
    f"{method}: killed after {kill_at} {'subsets' if method == 'exhaustive' else 'queries'}, resumed from "
    f"{saved['queries']} queries / {saved['chunks']} subsets; {len(expected[0])} findings equal"
  )


def test_killed_twice_then_resumed(setup, tmp_path):
  ref = str(tmp_path / "ref")
  assert discover.main(_flags(setup, "uct", ref) + ["--no-save-state"]) == 0
  out = str(tmp_path / "run")
  assert _worker("KILL", 12, _flags(setup, "uct", out)).returncode == -signal.SIGKILL
  assert _manifest(out)["queries"] == 10
  killed = _worker("KILL", 13, ["--resume", out])  # 10 replayed, then 13 live: killed at query 23
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert _manifest(out)["queries"] == 20
  assert discover.main(["--resume", out]) == 0
  assert _findings(out) == _findings(ref)


def test_sigterm_saves_and_exits_130_then_resume_matches(setup, tmp_path):
  ref = str(tmp_path / "ref")
  assert discover.main(_flags(setup, "greedy", ref) + ["--no-save-state"]) == 0
  out = str(tmp_path / "run")
  stopped = _worker("TERM", 12, _flags(setup, "greedy", out))
  assert stopped.returncode == 130, stopped.stderr[-2000:]
  assert "--resume" in stopped.stderr and os.path.join(out, "state") in stopped.stderr
  assert _manifest(out)["queries"] == 13  # the query after the signal is journaled, then the run stops
  assert discover.main(["--resume", out]) == 0
  assert _findings(out) == _findings(ref)


def _run(df, state_dir, **kw):
  return cube_env.run_discovery(
    df, SCHEMA, method="uct", budget=30, max_depth=2, z_screen=3.0, seed=2, state_dir=state_dir, save_every=4, **kw
  )


class _Stop(Exception):
  pass


def _stop_at(n):
  def progress(used):
    if used == n:
      raise _Stop()

  return progress


def test_damaged_newest_state_falls_back_with_a_warning(tmp_path):
  df = make_small_df(seed=5, n=2000)
  ref = _run(df, None)
  state = str(tmp_path / "state")
  with pytest.raises(_Stop):
    _run(df, state, progress=_stop_at(19))  # 18 queries done: 4 saves of 4, and the 2 since saved as the stop raised
  segs = sorted(n for n in os.listdir(state) if n.startswith("seg-"))
  assert len(segs) == 5 and journal.saved_queries(state) == 18
  with open(os.path.join(state, segs[-1]), "r+b") as handle:  # flip a byte of the newest segment
    handle.seek(40)
    byte = handle.read(1)
    handle.seek(40)
    handle.write(bytes([byte[0] ^ 0xFF]))
  with pytest.warns(journal.JournalWarning, match=r"damaged.*\(16 queries\)"):
    again = _run(df, state)
  pd.testing.assert_frame_equal(again.findings, ref.findings)
  assert os.path.exists(os.path.join(state, segs[-1] + ".damaged"))
  # An unreadable manifest: the previous one is used, with a warning.
  with open(os.path.join(state, journal.MANIFEST), "w", encoding="utf-8") as handle:
    handle.write("{truncated")
  with pytest.warns(journal.JournalWarning, match="unreadable"):
    pd.testing.assert_frame_equal(_run(df, state).findings, ref.findings)
  for shape in ("[]", json.dumps({"format": journal.FORMAT, "segments": []})):  # valid JSON, not a manifest (an audit)
    with open(os.path.join(state, journal.MANIFEST), "w", encoding="utf-8") as handle:
      handle.write(shape)
    with pytest.warns(journal.JournalWarning, match="unreadable"):
      pd.testing.assert_frame_equal(_run(df, state).findings, ref.findings)
  os.remove(os.path.join(state, journal.MANIFEST))  # a missing manifest: the previous one, with a warning
  with pytest.warns(journal.JournalWarning, match="missing"):
    pd.testing.assert_frame_equal(_run(df, state).findings, ref.findings)
  assert journal.saved_queries(state) == 30


def test_a_journal_of_another_run_is_refused_naming_the_field(tmp_path):
  df = make_small_df(seed=5, n=2000)
  state = str(tmp_path / "state")
  _run(df, state)
  with pytest.raises(ValueError, match=r"seed=2 \(this run: 7\)"):
    cube_env.run_discovery(df, SCHEMA, method="uct", budget=30, max_depth=2, z_screen=3.0, seed=7, state_dir=state)
  with pytest.raises(ValueError, match=r"space=.*the table searched differs"):
    _run(df.iloc[5:], state)  # another table
  # The table's padding is part of the space: a run saved by a version that padded it otherwise is refused too.
  own_sizes = functools.partial(cube_env.bucketed_shape, small_floor=False)
  padded = r"space=.*or the run was saved by a version of cube_env that padded"
  with pytest.raises(ValueError, match=padded), mock.patch.object(space_lib, "bucketed_shape", own_sizes):
    _run(df, state)


def test_replayed_answers_equal_live_ones_and_a_different_query_is_refused(tmp_path):
  df = make_small_df(seed=5, n=2000)
  space = cube_env.prepare(df, SCHEMA, cube_env.DiscoveryConfig(max_depth=2, z_screen=3.0)).space
  state = str(tmp_path / "state")
  live = cube_env.Ledger(space, 5, journal.Journal(state, fingerprint={"run": 1}, every=2))
  obs0, root, _ = live.root()
  legal = [int(a) for a in np.nonzero(np.asarray(root.mask))[0]]
  obs1, after, n1 = live.step(root, legal[0])
  live.step(root, legal[1])
  live.result("test")
  replay = cube_env.Ledger(space, 5, journal.Journal(state, fingerprint={"run": 1}))
  r_obs0, r_root, _ = replay.root()
  r_obs1, r_after, r_n1 = replay.step(r_root, legal[0])
  assert np.array_equal(r_obs0, obs0) and np.array_equal(r_obs1, obs1) and r_n1 == n1
  for field in ("filters", "t", "visited", "mask", "rows", "found"):
    a, b = np.asarray(getattr(after, field)), np.asarray(getattr(r_after, field))
    assert a.dtype == b.dtype and np.array_equal(a, b), field
  with pytest.raises(journal.JournalMismatch, match=f"query 3 .* was action {legal[1]} .* asks action {legal[2]}"):
    replay.step(r_root, legal[2])


def test_resume_flags(setup, tmp_path, capsys):
  assert discover.main(["--resume", str(tmp_path)]) == 2
  assert "no saved discovery run" in capsys.readouterr().err
  out = str(tmp_path / "run")
  assert discover.main(_flags(setup, "beam", out) + ["--keep-state"]) == 0
  assert discover.main(["--resume", out, "--budget", "41"]) == 2
  assert "--budget 41 (saved: 40) contradicts the run saved" in capsys.readouterr().err
  # A flag given at its default contradicts a saved value too (`--method auto` is the default); so do the state's.
  assert discover.main(["--resume", out, "--method", "auto", "--no-save-state"]) == 2
  err = capsys.readouterr().err
  assert "--method auto (saved: beam); --save-state False (saved: True) contradict the run saved" in err
  settings = os.path.join(out, "state", discover.SETTINGS)
  with open(settings, encoding="utf-8") as handle:
    saved = handle.read()
  for damaged in ("[]", *(saved.replace('"budget": 40', f'"budget": {v}') for v in ('"40"', "Infinity", "40.5"))):
    with open(settings, "w", encoding="utf-8") as handle:
      handle.write(damaged)
    assert discover.main(["--resume", out]) == 2
    assert settings in capsys.readouterr().err
  with open(settings, "w", encoding="utf-8") as handle:
    handle.write(saved)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a complete journal resumes silently
    assert discover.main(["--resume", out, "--show", "3", "--out", str(tmp_path / "elsewhere")]) == 0
  assert _findings(str(tmp_path / "elsewhere")) == _findings(out)
  # The saved --keep-state may change: resumed without it, the finished run removes its state (raw statistics).
  assert discover.main(["--resume", out, "--no-keep-state", "--out", str(tmp_path / "again")]) == 0
  assert _findings(str(tmp_path / "again")) == _findings(out) and not os.path.exists(os.path.join(out, "state"))
  assert discover.main(["--resume", out]) == 2
  assert "a finished run removes its state unless --keep-state" in capsys.readouterr().err


def test_a_saved_state_is_never_cleared_by_a_fresh_run_and_a_moved_copy_resumes_into_itself(setup, tmp_path, capsys):
  """A CLI audit: a fresh run into an --out that held a saved search (a stopped run's, or one kept) deleted it, even
  when the run was then refused (a bad --q, a misspelt column); --resume of a copied directory wrote its report to
  the original --out; a rerun replaced an earlier report without a word."""
  out = str(tmp_path / "kept")
  assert discover.main(_flags(setup, "greedy", out) + ["--keep-state"]) == 0
  saved = journal.saved_queries(os.path.join(out, "state"))
  assert saved > 0
  before = _findings(out)
  capsys.readouterr()
  for extra in ([], ["--q", "2"], ["--dimensions", "proc", "sitee"]):
    assert discover.main(_flags(setup, "greedy", out) + extra) == 2
    err = capsys.readouterr().err
    refused = f"holds a stopped run's saved search ({saved:,} queries): continue it with --resume {out}"
    assert refused in err if not extra else err.startswith("error: --"), err  # a bad flag: its own error first
    assert journal.saved_queries(os.path.join(out, "state")) == saved
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  os.remove(os.path.join(copy, "findings.json"))
  assert discover.main(["--resume", copy, "--keep-state"]) == 0
  assert os.path.isfile(os.path.join(copy, "findings.json")) and _findings(copy) == before
  assert f"report: {os.path.join(copy, 'report.html')}" in capsys.readouterr().out  # not the original --out
  assert discover.main(["--resume", out, "--no-keep-state"]) == 0  # into the same --out: said
  assert "held an earlier analysis: its findings and report are replaced" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(out, "state"))  # finished without --keep-state: removed as before
  assert discover.main(["--resume", setup["csv"]]) == 2
  assert "--resume " + setup["csv"] + ": not a directory" in capsys.readouterr().err
  # A run saved by an earlier version with a combination fresh runs now refuse (a review) still resumes.
  older = str(tmp_path / "older")
  shutil.copytree(copy, older)
  settings = os.path.join(older, "state", discover.SETTINGS)
  with open(settings, encoding="utf-8") as handle:
    saved_settings = json.load(handle)
  with open(settings, "w", encoding="utf-8") as handle:
    json.dump({**saved_settings, "beam_width": 4}, handle)  # with --method greedy
  assert discover.main(_flags(setup, "greedy", str(tmp_path / "x")) + ["--beam-width", "4"]) == 2  # fresh: refused
  assert discover.main(["--resume", older]) == 0 and _findings(older)[0] == before[0]


def test_a_progress_that_raises_saves_what_was_recorded_first(tmp_path):
  """A review of the service's stop: `_Progress` raises `JobStopped` inside the journal's progress call, which had
  dropped the queries since the last save (up to `every`) and a chunk recorded just before it (any cost)."""
  df = make_small_df(seed=5, n=2000)
  space = cube_env.prepare(df, SCHEMA, cube_env.DiscoveryConfig(max_depth=2, z_screen=3.0)).space
  walk = str(tmp_path / "walk")
  ledger = cube_env.Ledger(space, 10, journal.Journal(walk, fingerprint={"run": 1}, progress=_stop_at(4)))
  _, root, _ = ledger.root()
  legal = [int(a) for a in np.nonzero(np.asarray(root.mask))[0]]
  with pytest.raises(_Stop):
    for action in legal:
      ledger.step(root, action)
  assert journal.saved_queries(walk) == 3  # the root and two steps, every=100 notwithstanding
  chunks = str(tmp_path / "chunks")
  book = journal.Journal(chunks, fingerprint={"run": 1}, progress=_stop_at(9))
  book.put_chunk("subset:", {"n": 1}, cost=1)
  with pytest.raises(_Stop):
    book.put_chunk("subset:0", {"n": 2}, cost=8)
  assert journal.saved_queries(chunks) == 9
  assert journal.Journal(chunks, fingerprint={"run": 1}).chunk("subset:0") == {"n": 2}
  # A save that fails there (a full disk) warns and lets the caller's exception go on, not the disk's (a review: the
  # service tells a stopped job from a failed one by its exception).
  full = journal.Journal(str(tmp_path / "full"), fingerprint={"run": 1}, progress=_stop_at(3))
  with (
    mock.patch.object(journal, "write_atomic", side_effect=OSError(28, "No space left on device")),
    pytest.warns(journal.JournalWarning, match="could not be saved as the run stopped: .*No space left"),
    pytest.raises(_Stop),
  ):
    full.put_chunk("subset:", {"n": 1}, cost=3)


def test_saved_queries_count_an_enumerations_chunks(tmp_path):
  """A service audit: a resumed enumeration's progress fell from 598 queries to 0, its manifest counting the
  queries of a walk only. The chunks' costs count too, in the manifest and in the one before it."""
  state = str(tmp_path / "state")
  book = journal.Journal(state, fingerprint={"run": 1}, every=5)
  book.put_chunk("subset:", {"n": 1}, cost=1)
  book.put_chunk("subset:0", {"n": 2}, cost=6)  # a save: 7 queries
  book.put_chunk("subset:1", {"n": 3}, cost=8)
  book.save()
  assert journal.saved_queries(state) == 15
  os.remove(os.path.join(state, journal.MANIFEST))
  assert journal.saved_queries(state) == 7  # the previous manifest's


@pytest.mark.parametrize("step", ["confirming", "writing the report"])
def test_a_signal_after_the_search_stops_the_run_and_resume_finishes_it(setup, tmp_path, monkeypatch, capsys, step):
  """A CLI audit: a Ctrl-C or SIGTERM after the search (confirming, hiding small cells, writing the report) was
  ignored and the run ended with status 0. It stops at the next step with status 130, the search state saved."""
  out = str(tmp_path / "out")
  if step == "confirming":  # as the search ends

    def confirm(*_, **__):
      raise AssertionError("confirmation ran after the signal")

    def search(*args, **kwargs):
      result = real_search(*args, **kwargs)
      journal._STOP.set()
      return result

    real_search = cube_env.discovery.pipeline.search
    monkeypatch.setattr(cube_env.discovery.pipeline, "search", search)
    monkeypatch.setattr(cube_env.discovery.pipeline, "confirm", confirm)
  else:  # as the confirmation ends
    real_confirm = cube_env.discovery.pipeline.confirm

    def confirm(*args, **kwargs):
      found = real_confirm(*args, **kwargs)
      journal._STOP.set()
      return found

    monkeypatch.setattr(cube_env.discovery.pipeline, "confirm", confirm)
  assert discover.main(_flags(setup, "greedy", out)) == 130
  err = capsys.readouterr().err
  assert f"stopped by a signal before {step}; the search state is saved in {os.path.join(out, 'state')}" in err
  assert "continue with: python -m experiments.discover --resume" in err
  assert not os.path.exists(os.path.join(out, "findings.json")) and journal.saved_queries(os.path.join(out, "state"))
  monkeypatch.undo()
  assert discover.main(["--resume", out]) == 0 and os.path.isfile(os.path.join(out, "findings.json"))
