"""Bad input files and output paths of the ranker, tuning and agent-export CLIs: refused by flag, exit status 2, no
traceback, before any long work (a CLI audit: numpy's KeyError or `allow_pickle` hint, a traceback from the worker
pool after the collection started, a FileNotFoundError at the save after the whole run)."""

import dataclasses
import os

import numpy as np
import pytest
import tyro

from cube_env.discovery import ranking
from experiments import agent, train_ranker, tune
from experiments.agent import export, loading
from experiments.quality import ranker_training, tuning


def _files(tmp_path) -> dict[str, str]:
  """Input files that are not what the flags take: a CSV, a text file named .npz, an .npz of other arrays, an .npz
  holding a pickled (object) array, rows of the wrong shapes."""
  paths = {name: str(tmp_path / name) for name in ("b.csv", "csv.npz", "fake.npz", "wrongkeys.npz", "object.npz")}
  for name in ("b.csv", "csv.npz"):
    with open(paths[name], "w") as handle:
      handle.write("a,b\n1,2\n")
  with open(paths["fake.npz"], "w") as handle:
    handle.write("not an archive\n")
  np.savez(paths["wrongkeys.npz"], a=np.zeros(3))
  names = ("x", "y", "w", "world", "__agent__", "names", *(f.name for f in dataclasses.fields(ranking.RankerWeights)))
  np.savez(paths["object.npz"], **{k: np.array([{"a": 1}], dtype=object) for k in names})
  paths["shapes.npz"] = str(tmp_path / "shapes.npz")
  np.savez(paths["shapes.npz"], x=np.zeros((4, 3)), y=np.zeros(4), w=np.ones(4), world=np.zeros(4))
  return paths


def _rows(path: str, n: int = 40) -> str:
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, ranking.NUM_FEATURES)).astype(np.float32)
  ranker_training.save_rows(path, x, x[:, 0] > 0, np.ones(n), np.arange(n) % 4)
  return path


def _refused(capsys, run, *needles: str, absent: tuple[str, ...] = ("Traceback", "pickle")) -> str:
  """`run()` exits with status 2 (`exit_usage`'s `SystemExit`, or a returned 2) and stderr names `needles`."""
  try:
    code = run()
  except SystemExit as exit_:
    code = exit_.code
  err = capsys.readouterr().err
  assert code == 2, err
  for needle in needles:
    assert needle in err, (needle, err)
  for word in absent:
    assert word not in err, (word, err)
  return err


def _no_work(*_args, **_kwargs):
  raise AssertionError("the long work started before the check")


def test_tune_refuses_rows_files_that_are_not_rows_before_the_work(tmp_path, capsys, monkeypatch):
  files = _files(tmp_path)
  monkeypatch.setattr(tuning, "ranker_objective", _no_work)
  workdir = str(tmp_path / "tw")
  for name, why in (
    ("b.csv", "not an .npz archive"),
    ("fake.npz", "not an .npz archive"),
    ("wrongkeys.npz", "no x, y, w, world"),
    ("object.npz", "object"),
    ("shapes.npz", f"{ranking.NUM_FEATURES} columns"),
  ):
    argv = ["--rows-file", files[name], "--workdir", workdir, "--budget", "1"]
    _refused(capsys, lambda argv=argv: tune.main(tyro.cli(tune.Args, args=argv)), "--rows-file", name, why)


def test_tune_makes_the_out_folder_before_the_work_or_refuses_it(tmp_path, capsys, monkeypatch):
  rows = _rows(str(tmp_path / "rows.npz"))
  (tmp_path / "afile").write_text("")
  monkeypatch.setattr(tuning, "ranker_objective", _no_work)
  base = ["--rows-file", rows, "--workdir", str(tmp_path / "tw"), "--budget", "1"]
  for out, why in (("afile/t.jsonl", "cannot make its folder"), ("tw", "is a directory")):
    argv = [*base, "--out", str(tmp_path / out)]
    _refused(capsys, lambda argv=argv: tune.main(tyro.cli(tune.Args, args=argv)), "--out", why)
  argv = ["--rows-file", rows, "--workdir", str(tmp_path / "afile"), "--budget", "1"]
  _refused(capsys, lambda: tune.main(tyro.cli(tune.Args, args=argv)), "--workdir", "afile")
  made = []  # a missing folder is made before the work, so the lines are written after it
  monkeypatch.setattr(
    tuning,
    "ranker_objective",
    lambda *_a, **_k: made.append(os.path.isdir(tmp_path / "nodir")) or (lambda _settings: 0.5),
  )
  out = str(tmp_path / "nodir" / "deeper" / "t.jsonl")
  result = tune.main(tyro.cli(tune.Args, args=[*base, "--out", out]))
  assert made == [True] and result["kind"] == "tune_result"
  with open(out) as handle:
    assert [line.count('"kind"') for line in handle] == [1, 1]


def test_train_ranker_refuses_bad_rows_and_behaviour_files_before_the_collection(tmp_path, capsys, monkeypatch):
  files = _files(tmp_path)
  rows = _rows(str(tmp_path / "rows.npz"))
  monkeypatch.setattr(ranker_training, "training_rows", _no_work)
  monkeypatch.setattr(ranking, "fit", _no_work)
  args = train_ranker.Args(rows_file=rows, out=str(tmp_path / "r.npz"))
  for name, why in (
    ("csv.npz", "not an .npz archive"),
    ("fake.npz", "not an .npz archive"),
    ("wrongkeys.npz", "no x, y, w, world"),
    ("object.npz", "object"),
    ("shapes.npz", f"{ranking.NUM_FEATURES} columns"),
  ):
    for bad in (dict(rows_file=files[name]), dict(rows_file=None, add_rows=(files[name],))):
      flag = "--rows-file" if bad.get("rows_file") else "--add-rows"
      _refused(capsys, lambda bad=bad: train_ranker.main(dataclasses.replace(args, **bad)), flag, name, why)
  # --behaviour: ranker weights, read before the collection (an audit: the worker pool's traceback, after it began).
  for name, why in (
    ("b.csv", "not an .npz archive"),
    ("fake.npz", "not an .npz archive"),
    ("wrongkeys.npz", "not a ranker's weights"),
    ("object.npz", "object"),
  ):
    bad = dataclasses.replace(args, rows_file=None, behaviour=files[name])
    _refused(capsys, lambda bad=bad: train_ranker.main(bad), "--behaviour", name, why)


def test_train_ranker_makes_output_folders_before_the_work_or_refuses_them(tmp_path, capsys, monkeypatch):
  rows = _rows(str(tmp_path / "rows.npz"))
  (tmp_path / "afile").write_text("")
  fitted = ranking.RankerWeights(
    mean=np.zeros(ranking.NUM_FEATURES),
    scale=np.ones(ranking.NUM_FEATURES),
    w1=np.zeros((ranking.NUM_FEATURES, 2)),
    b1=np.zeros(2),
    w2=np.zeros((2, 2)),
    b2=np.zeros(2),
    w3=np.ones(2),
    b3=0.0,
  )
  monkeypatch.setattr(ranking, "fit", _no_work)
  monkeypatch.setattr(ranker_training, "training_rows", _no_work)
  args = train_ranker.Args(rows_file=rows, out=str(tmp_path / "r.npz"))
  for bad, flag, why in (
    (dict(out=str(tmp_path / "afile" / "r.npz")), "--out", "cannot make its folder"),
    (dict(out=str(tmp_path)), "--out", "is a directory"),
    (dict(rows_file=str(tmp_path / "afile" / "rows.npz")), "--rows-file", "cannot make its folder"),
  ):
    _refused(capsys, lambda bad=bad: train_ranker.main(dataclasses.replace(args, **bad)), flag, why)
  monkeypatch.setattr(ranking, "fit", lambda *_a, **_k: fitted)
  out = str(tmp_path / "nodir" / "x" / "r.npz")
  row = train_ranker.main(dataclasses.replace(args, out=out))
  assert row["rows_from_cache"] and ranking.load(out).w1.shape == (ranking.NUM_FEATURES, 2)
  # Rows still to collect go to --rows-file, whose folder is made before the collection.
  x, y, w, world = ranker_training.read_rows(rows)
  monkeypatch.setattr(ranker_training, "training_rows", lambda *_a, **_k: (x, y, w, world))
  written = str(tmp_path / "nodir2" / "rows.npz")
  row = train_ranker.main(dataclasses.replace(args, rows_file=written, out=out))
  assert not row["rows_from_cache"] and np.array_equal(ranker_training.load_worlds(written), world)


def test_ranker_weights_that_are_not_weights_are_refused_by_file(tmp_path):
  files = _files(tmp_path)
  for name, why in (
    ("b.csv", "not an .npz archive"),
    ("wrongkeys.npz", "not a ranker's weights"),
    ("object.npz", "object"),
  ):
    with pytest.raises(ValueError, match=f"ranker weights '.*{name}'.*{why}") as err:
      ranking.load(files[name])
    assert "allow_pickle" not in str(err.value)
  weights = ranking.load()
  broken = str(tmp_path / "broken.npz")
  ranking.save(dataclasses.replace(weights, w2=weights.w2[:-1]), broken)
  with pytest.raises(ValueError, match="broken.npz.*w2"):
    ranking.load(broken)


def test_agent_inputs_that_are_not_agents_say_what_is_expected(tmp_path):
  files = _files(tmp_path)
  for name, why in (
    ("b.csv", "is a file, not a checkpoint directory .* or an exported agent"),
    ("fake.npz", "not an exported agent"),
    ("wrongkeys.npz", "not an exported agent"),
    ("object.npz", "object"),
  ):
    with pytest.raises(ValueError, match=f"--checkpoint '.*{name}'.*{why}") as err:
      loading.load_agent(files[name])
    assert "allow_pickle" not in str(err.value)
  with pytest.raises(ValueError, match="no such directory"):
    loading.load_agent(str(tmp_path / "nowhere"))


def test_export_names_its_argument_and_makes_the_out_folder(tmp_path, capsys):
  files = _files(tmp_path)
  for name, why in (("b.csv", "is a file"), ("fake.npz", "not an exported agent"), ("nowhere", "no such directory")):
    path = files.get(name, str(tmp_path / name))
    run = lambda path=path: export.main([path, "--out", str(tmp_path / "a.npz")])  # noqa: E731
    _refused(capsys, run, "CHECKPOINT", why, absent=("Traceback", "pickle", "--checkpoint '"))
    assert not os.path.exists(tmp_path / "a.npz")
  for out, why in (("b.csv/a.npz", "cannot make its folder"), ("dir.npz", "is a directory")):
    os.makedirs(tmp_path / "dir.npz", exist_ok=True)
    _refused(capsys, lambda out=out: export.main([agent.PACKAGED, "--out", str(tmp_path / out)]), "--out", why)
  out = str(tmp_path / "nodir" / "a.npz")
  assert export.main([agent.PACKAGED, "--out", out]) == 0
  assert loading.load_agent(out).config == loading.load_agent(None).config

  # A write that fails (a full disk: a checkpoint audit) leaves no partial file and names --out, with no traceback.
  def full(path, **_arrays):
    with open(path, "wb") as handle:
      handle.write(b"PK")
    raise OSError(28, "No space left on device")

  full_out = str(tmp_path / "full.npz")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loading.np, "savez_compressed", full)
    _refused(capsys, lambda: export.main([agent.PACKAGED, "--out", full_out]), "--out", "No space left on device")
  assert os.listdir(tmp_path).count("full.npz.tmp.npz") == 0 and not os.path.exists(full_out)
