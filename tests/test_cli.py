"""The discover and benchmark entry points on tiny inputs."""

import json
import os
import subprocess
import sys

import pytest

import cube_env
from experiments import benchmark, discover, launch
from tests.conftest import make_small_df, override_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_discover_on_a_csv(tmp_path, capsys):
  path = tmp_path / "cases.csv"
  make_small_df(n=3000).to_csv(path, index=False)
  code = discover.main(
    [
      "--data",
      str(path),
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
      "--out",  # not the default runs/discover of the checkout the tests run in
      str(tmp_path / "out"),
    ]
  )
  out = capsys.readouterr().out
  assert code == 0
  assert "group-by queries" in out and "new findings" in out
  assert "proc=A" in out  # the planted gap (race B, minutes) is new at proc=A


def test_discover_errors_name_the_problem(tmp_path, capsys):
  path = tmp_path / "cases.csv"
  make_small_df(n=200).to_csv(path, index=False)
  assert (
    discover.main(["--data", str(path), "--dimensions", "proc", "nope", "--protected", "race", "--measures", "minutes"])
    == 2
  )
  assert "'nope'" in capsys.readouterr().err
  assert discover.main(["--demo", "mixed", "--min-group", "5"]) == 2
  assert "--min-group" in capsys.readouterr().err
  assert discover.main(["--demo", "unknown"]) == 2
  assert "--demo" in capsys.readouterr().err
  # Column flags without --data: an error, not the demo table searched instead.
  assert discover.main(["--dimensions", "site", "--measures", "los", "--no-progress"]) == 2
  assert capsys.readouterr().err == (
    "error: --dimensions and --measures name columns of --data, which is not given (without it the run uses --demo data)\n"
  )
  # The library's settings are named by this command's flags.
  assert discover.main(["--demo", "mixed", "--n-rows", "2000", "--no-progress", "--max-depth", "0"]) == 2
  assert capsys.readouterr().err == "error: --max-depth must be at least 1, got 0\n"
  assert discover.main(["--demo", "mixed", "--n-rows", "2000", "--no-progress", "--explore-fraction", "1.5"]) == 2
  assert capsys.readouterr().err == "error: --explore-fraction must lie in (0, 1), got 1.5\n"


def test_a_flag_given_twice_is_refused_by_every_command(capsys):
  """A CLI audit: tyro and argparse keep a repeated flag's last value, so `--measures case_minutes --measures
  pacu_minutes` analysed pacu_minutes alone, without a word. Every command names the flag instead."""
  from experiments import serve, train  # noqa: PLC0415 (only this test)
  from experiments.agent import export, frontier_tune  # noqa: PLC0415

  want = "--measures is given twice: give each flag once (a flag of several values takes them all after it: "
  argv = ["--demo", "mixed", "--measures", "case_minutes", "--measures=pacu_minutes", "--no-progress"]
  assert discover.main(argv) == 2
  assert capsys.readouterr().err == f"error: {want}--measures A B)\n"
  assert discover.main(["--demo", "mixed", "--method", "random", "--method", "greedy"]) == 2
  assert "--method is given twice" in capsys.readouterr().err
  assert train.main(["--preset", "smoke", "--iterations", "1", "--iterations", "2"]) == 2
  assert "error: --iterations is given twice" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_:
    benchmark.main(["quality", "--seeds", "1", "--seeds=2"])
  assert exit_.value.code == 2 and "error: --seeds is given twice" in capsys.readouterr().err
  assert serve.main(["--port", "8000", "--port", "8001"]) == 2
  assert "error: --port is given twice" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_:
    frontier_tune.main(["--out", "a.npz", "--steps", "1", "--steps", "2"])
  assert exit_.value.code == 2 and "--steps is given twice" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_:
    export.main(["ckpt", "--out", "a.npz", "--out", "b.npz"])
  assert exit_.value.code == 2 and "--out is given twice" in capsys.readouterr().err
  for module in ("experiments.tune", "experiments.train_ranker"):  # their flags are parsed when run as a program
    out = subprocess.run(
      [sys.executable, "-m", module, "--workers", "1", "--workers", "2"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2 and out.stderr.startswith("error: --workers is given twice"), (module, out.stderr)
  # Flags after a bare `--` are not flags, and `--flag` and `--other-flag` differ.
  refuse = launch.refuse_repeated_flags
  refuse(["--out", "a", "--", "--out"])
  refuse(["--out", "a", "--out-dir", "b", "--max_depth", "2"])
  with pytest.raises(ValueError, match="--max-depth is given twice"):
    refuse(["--max-depth", "1", "--max_depth", "2"])
  with pytest.raises(ValueError, match="--evaluate and --no-evaluate are both given: give one of them"):
    refuse(["--evaluate", "--no-evaluate"])  # a review: tyro kept the last


def test_an_error_at_a_path_names_the_flag_that_gave_it(tmp_path, capsys):
  """A CLI audit: `train --logdir afile` said only "Not a directory: 'afile/events...'", `discover --out /proc/x`
  only "No such file or directory: '/proc/x'", and `--n-rows -1` named the setting `n_rows`, not the flag."""
  from experiments import train  # noqa: PLC0415 (only this test)

  a_file = tmp_path / "afile"
  a_file.write_text("x")
  assert train.main(["--preset", "smoke", "--iterations", "1", "--logdir", str(a_file)]) == 2
  assert capsys.readouterr().err == f"error: --logdir {a_file}: {a_file} is a file, not a directory\n"

  # A folder that cannot be written (root writes anywhere: the check's own folder is refused here instead), before
  # any work (a checkpoint audit: Orbax waited five minutes, then 13 tracebacks).
  def refuse(*_args, **_kwargs):
    raise PermissionError(1, "Operation not permitted")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(launch.resume.tempfile, "mkdtemp", refuse)
    argv = ["--preset", "smoke", "--iterations", "1", "--checkpoint-dir", str(tmp_path / "ck" / "a")]
    assert train.main(argv) == 2
  assert capsys.readouterr().err == (
    f"error: --checkpoint-dir {tmp_path / 'ck' / 'a'}: cannot write in {tmp_path} (Operation not permitted)\n"
  )
  assert not (tmp_path / "ck").exists()
  with pytest.MonkeyPatch.context() as patch:  # --eval-only saves no checkpoint: a read-only one is evaluated
    patch.setattr(launch.resume.tempfile, "mkdtemp", refuse)
    args, _ = train.parse(["--preset", "smoke", "--eval-only", "--checkpoint-dir", str(tmp_path), "--logdir", "None"])
  assert args.eval_only and args.checkpoint_dir == str(tmp_path)
  err = FileNotFoundError(2, "No such file or directory", str(tmp_path / "out" / "sub" / "x.json"))
  paths = {"data": str(tmp_path / "cases.csv"), "out": str(tmp_path / "out"), "state_dir": None}
  assert launch.errors.path_flag(err, paths) == f"--out {tmp_path / 'out'}: "
  assert launch.errors.path_flag(err, {"out": str(tmp_path / "ou")}) == ""  # a prefix of the name is not a parent
  assert launch.errors.path_flag(OSError("no file"), paths) == ""
  nested = {"checkpoint_dir": str(tmp_path / "a"), "logdir": str(tmp_path / "a" / "tb")}  # the closest is named
  deep = FileNotFoundError(2, "No such file or directory", str(tmp_path / "a" / "tb" / "events"))
  assert launch.errors.path_flag(deep, nested) == f"--logdir {tmp_path / 'a' / 'tb'}: "
  assert discover.main(["--demo", "mixed", "--n-rows", "-1"]) == 2
  assert capsys.readouterr().err == "error: --n-rows must be a positive integer, got -1\n"


def test_benchmark_env_emits_json(tmp_path):
  out = tmp_path / "env.jsonl"
  assert (
    benchmark.main(
      [
        "env",
        "--cells",
        "500",
        "--batches",
        "1",
        "2000",
        "--max-work",
        "1e5",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  measured = [r for r in rows if r.get("bench") == "env" and "steps_per_s" in r]
  skipped = [r for r in rows if "skipped" in r]
  assert len(measured) == 1 and measured[0]["steps_per_s"] > 0 and measured[0]["method"] == "index"
  # Beside today's dense step, the bare reduction and the memory bound, in the same run.
  assert measured[0]["speedup"] > 0 and measured[0]["ratio_to_reduction"] > 0 and measured[0]["ratio_to_numpy"] > 0
  assert 0 < measured[0]["peak_bytes"] <= measured[0]["bound_bytes"]
  assert len(skipped) == 1 and skipped[0]["batch"] == 2000


def test_benchmark_help_lists_the_commands(capsys):
  assert benchmark.main(["--help"]) == 0  # was the usage line and status 2 (a packaging audit)
  text = capsys.readouterr().out
  assert text.startswith("usage: python -m experiments.benchmark {env,") and "  quality   discovery recall" in text
  assert benchmark.main([]) == 2 and capsys.readouterr().err.startswith("usage: python -m experiments.benchmark")


def test_serve_without_the_service_extra_says_which_extra():
  code = "import sys; sys.modules['uvicorn'] = None; import experiments.serve"  # as if uvicorn were not installed
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
  assert proc.returncode == 1
  assert "python -m experiments.serve needs the service extra (pip install 'cube-muzero[service]')" in proc.stderr


def test_discover_help_names_the_module_and_no_project_history(capsys):
  with pytest.raises(SystemExit) as exit_:
    discover.main(["--help"])
  text = capsys.readouterr().out
  assert exit_.value.code == 0
  assert text.startswith("usage: python -m experiments.discover ")
  assert "issue" not in text and "as before" not in text and "default before" not in text
  assert "--correction" in text and "--confirm-new-z" in text and "--pooled-check" in text  # the flags stay


def test_discover_reads_a_semicolon_csv_with_a_yes_no_measure_and_notes_both(tmp_path, capsys):
  df = make_small_df(n=3000)
  df["complication"] = df["complication"].map({1.0: "Y", 0.0: "N"})
  path = tmp_path / "cases.csv"
  df.to_csv(path, index=False, sep=";")
  argv = ["--data", str(path), "--dimensions", "proc", "site", "--protected", "race", "--measures", "minutes"]
  argv += ["complication", "--max-depth", "1", "--out", str(tmp_path / "out"), "--no-progress"]
  assert discover.main(argv) == 0
  out = capsys.readouterr().out
  assert "  the table's columns are separated by semicolons (';'), not commas\n" in out
  assert "  measure 'complication': Y/N read as 1/0\n" in out
  coding = json.loads((tmp_path / "out" / "findings.json").read_text())["summary"]["coding"]
  assert coding[0] == "the table's columns are separated by semicolons (';'), not commas"
  assert "measure 'complication': Y/N read as 1/0" in coding


def test_discover_names_the_file_with_a_doubled_header_column_or_no_header(tmp_path, capsys):
  path = tmp_path / "cases.csv"
  path.write_text("proc,site,race,minutes,site\nA,s1,W,10,s2\n")
  argv = ["--data", str(path), "--dimensions", "proc", "site", "--protected", "race", "--measures", "minutes"]
  argv += ["--out", str(tmp_path / "out")]  # not runs/discover, where a stopped run's state would be named first
  assert discover.main(argv) == 2
  assert capsys.readouterr().err == f"error: data file {str(path)!r}: column 'site' appears 2 times in the header\n"
  path.write_text("")
  assert discover.main(argv) == 2
  assert capsys.readouterr().err == f"error: data file {str(path)!r}: is empty (no header line)\n"


def test_discover_names_the_flag_of_a_path_or_combination_it_could_not_use(tmp_path, capsys):
  """A CLI audit: a directory as --data, a file as --out or --state-dir and an unwritable --out were tracebacks (the
  last after the whole search, which then saved nothing); --beam-width with another method, --tilt with another
  correction, --demo or --n-rows with --data and a negative --show were taken and ignored; --adjust and --favorable
  took a name twice; exhaustive ran 20 s under --time-limit 1."""
  data = tmp_path / "cases.csv"
  make_small_df(n=400).to_csv(data, index=False)
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  locked = tmp_path / "locked"
  locked.mkdir()
  locked.chmod(0o500)
  base = ["--data", str(data), "--dimensions", "proc", "site", "--protected", "race", "--measures", "minutes"]
  base += ["complication", "--budget", "10", "--max-depth", "1", "--no-progress", "--out", str(tmp_path / "out")]
  cases = [
    (["--data", str(tmp_path)], f"--data {tmp_path} is a directory, not a table file"),
    (["--out", str(a_file)], f"--out {a_file} is a file, not a directory"),
    (["--out", str(a_file / "sub")], f"--out {a_file / 'sub'}: {a_file} is a file, not a directory"),
    (["--state-dir", str(a_file)], f"--state-dir {a_file} is a file, not a directory"),
    (["--method", "uct", "--beam-width", "3"], "--beam-width is only used by --method beam (got --method uct)"),
    (["--correction", "holm", "--tilt", "3"], "--tilt is only used by --correction weighted (got --correction holm)"),
    (["--demo", "null"], "--demo is not used with --data"),
    (["--show", "-3"], "--show must be at least 0 rows, got -3"),
    (["--adjust", "urgency", "urgency"], "--adjust names 'urgency' twice"),
    (["--favorable", "complication", "complication"], "--favorable names 'complication' twice"),
    (["--method", "exhaustive", "--time-limit", "1"], "--time-limit is not applied by method 'exhaustive'"),
    (["--method", "muzero", "--checkpoint", str(a_file)], f"--checkpoint {str(a_file)!r} is a file, not a checkpoint"),
  ]
  if os.geteuid() != 0:  # root writes anywhere
    cases.append((["--out", str(locked / "out")], f"--out {locked / 'out'}: {locked} is not writable by this user"))
  for extra, message in cases:
    assert discover.main(override_flags(base, extra)) == 2, extra
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err, (extra, err)
  assert not os.path.exists(tmp_path / "out")  # each refused before anything was made
  locked.chmod(0o700)
  dataset = tmp_path / "cases.parquet"  # a Parquet dataset folder (part files), which the library reads: taken
  dataset.mkdir()
  make_small_df(n=400).to_parquet(dataset / "part-0.parquet", index=False)
  discover._check_paths(discover.Args(data=str(dataset), out=str(tmp_path / "out")))
  assert cube_env.read_table(dataset).shape == (400, 9)
