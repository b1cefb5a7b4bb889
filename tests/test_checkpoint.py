"""Orbax checkpoints: exact resume, SIGKILL at random moments, damaged steps, clear errors, no pickle."""

import errno
import functools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import typing
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import muzero_jax as mz
from experiments.launch import errors
from muzero_jax import checkpoint, driver
from tests import checkpoint_worker as worker
from tests.tb_events import scalars
from tests.toy_envs import CoinGrid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = worker.CONFIG


def _assert_same_tree(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """Steps 2, 3 and 4 of a short run (synchronous saves) and the states saved."""
  directory = tmp_path_factory.mktemp("ckpt")
  env, pool = worker.make_setup()
  trainer = mz.make_train(CONFIG, env, pool)
  ckpt = mz.Checkpointer(directory, max_to_keep=3)
  state, states = trainer.init(), {}
  for _ in range(4):
    state, _ = trainer.iteration(state)
    step = int(state.iteration)
    if step >= 2:
      assert ckpt.save(step, state, config=CONFIG, env=env, extra={"pool_seed": 0}, pool=pool)
      states[step] = state
  ckpt.close()
  return dict(directory=directory, env=env, pool=pool, states=states, trainer=trainer)


@pytest.fixture
def copy(saved, tmp_path):
  """A private copy of the saved directory, to damage."""
  target = tmp_path / "ckpt"
  shutil.copytree(saved["directory"], target)
  return target


def _fused(trainer, env, **kwargs):
  """`driver.run_iterations` of single-process iterations, without a progress bar."""
  return driver.run_iterations(trainer, env, driver._FusedIterations(trainer), progress=False, **kwargs)


def test_restore_gives_back_every_leaf_and_the_meta(saved):
  restored = mz.restore(saved["directory"], saved["env"], saved["pool"])
  assert restored.step == 4 and restored.skipped == ()
  _assert_same_tree(restored.state, saved["states"][4])
  assert restored.config == CONFIG
  assert restored.meta["counters"]["iteration"] == 4
  assert restored.meta["counters"]["moves"] == 4 * CONFIG.num_envs * CONFIG.rollout_length
  assert restored.meta["env"] == mz.env_spec(saved["env"])
  assert restored.meta["extra"] == {"pool_seed": 0}


def test_resumed_run_continues_bit_exactly(saved):
  trainer = saved["trainer"]
  resumed = mz.restore(saved["directory"], saved["env"], saved["pool"]).state
  straight = saved["states"][4]
  for _ in range(2):
    resumed, _ = trainer.iteration(resumed)
    straight, _ = trainer.iteration(straight)
  assert int(resumed.updates) > 0
  _assert_same_tree(resumed, straight)


def test_load_params_reads_neither_replay_nor_optimizer(copy, saved):
  shutil.rmtree(copy / "4" / "state")  # inference must not need the training state
  params, config, meta = mz.load_params(copy)
  _assert_same_tree(params, saved["states"][4].params)
  assert config == CONFIG and meta["step"] == 4


def test_truncated_file_falls_back_with_a_warning(copy, saved):
  files = [os.path.join(d, f) for d, _, fs in os.walk(copy / "4" / "state") for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as fh:
    fh.truncate(os.path.getsize(largest) // 2)
  with pytest.warns(mz.CheckpointWarning, match=r"step 4 .* damaged") as record:
    restored = mz.restore(copy, saved["env"], saved["pool"], quarantine=True)
  assert restored.step == 3 and restored.skipped[0][0] == 4
  _assert_same_tree(restored.state, saved["states"][3])
  assert any("instead of newer damaged step(s) [4]" in str(w.message) for w in record)
  assert (copy / "4.damaged").is_dir() and not (copy / "4").exists()  # kept as evidence, out of the way
  assert mz.Checkpointer(copy).all_steps() == [2, 3]


def test_changed_data_fails_its_digest(copy, saved):
  # Same size, other bytes: only the digest written at save time can tell.
  files = [os.path.join(d, f) for d, _, fs in os.walk(copy / "4" / "state" / "ocdbt.process_0" / "d") for f in fs]
  for path in files:
    with open(path, "rb") as fh:
      data = bytearray(fh.read())
    data[len(data) // 2] ^= 0xFF
    with open(path, "wb") as fh:
      fh.write(bytes(data))
  with pytest.warns(mz.CheckpointWarning, match="step 4"):
    restored = mz.restore(copy, saved["env"], saved["pool"])
  assert restored.step == 3


def test_missing_item_falls_back(copy, saved):
  shutil.rmtree(copy / "4" / "params")
  with pytest.warns(mz.CheckpointWarning, match=r"item\(s\) \['params'\] missing"):
    assert mz.restore(copy, saved["env"], saved["pool"]).step == 3
  with pytest.warns(mz.CheckpointWarning, match="step 4"):
    params, _, meta = mz.load_params(copy)
  assert meta["step"] == 3
  _assert_same_tree(params, saved["states"][3].params)


def test_a_folder_no_save_wrote_is_refused_and_left_as_it_is(copy, saved):
  """A user's folder named by a number (`7/notes.txt`) was taken for a damaged step and renamed `7.damaged` by a
  resume (a library audit); left in place, Orbax would skip saving step 7 and delete the folder as an old step (a
  review). The directory is refused, naming the folder, which stays as it is."""
  (copy / "7").mkdir()
  (copy / "7" / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=r"holds folder\(s\) named as steps that no save wrote \(7: none of"):
    mz.Checkpointer(copy)
  with pytest.raises(FileExistsError, match="move them or choose another directory"):
    mz.train(
      CONFIG, saved["env"], saved["pool"], num_iterations=0, checkpoint_dir=str(copy), resume=True, progress=False
    )
  assert (copy / "7" / "notes.txt").read_text() == "mine" and sorted(p.name for p in copy.iterdir())[-1] == "7"


def test_resume_that_finds_nothing_to_resume_says_so(saved, tmp_path):
  """`train(resume=True)` into a misspelled or empty directory started afresh without a word (a library audit)."""
  run = functools.partial(mz.train, CONFIG, saved["env"], saved["pool"], num_iterations=0, resume=True, progress=False)
  with pytest.warns(mz.CheckpointWarning, match=r"resume=True: no checkpoint in .*nope: a fresh run starts"):
    state = run(checkpoint_dir=str(tmp_path / "nope"))
  assert int(state.iteration) == 0
  with pytest.warns(mz.CheckpointWarning, match="the state given is trained on; the checkpoint is not read"):
    run(checkpoint_dir=str(tmp_path / "other"), state=state)


def test_half_written_save_is_discarded(copy, saved):
  # What a process killed during an asynchronous save leaves: a temporary directory.
  tmp = copy / "5.orbax-checkpoint-tmp-1700000000000000"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "_METADATA").write_text('{"tree_metadata": ')
  with pytest.warns(mz.CheckpointWarning, match="discarding unfinished save"):
    ckpt = mz.Checkpointer(copy)
  assert ckpt.all_steps() == [2, 3, 4]
  ckpt.close()
  assert not tmp.exists()
  assert mz.restore(copy, saved["env"], saved["pool"]).step == 4


def test_every_step_damaged_is_a_clear_error(copy, saved):
  for step in (2, 3, 4):
    shutil.rmtree(copy / str(step) / "state")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", mz.CheckpointWarning)
    with pytest.raises(FileNotFoundError, match=r"no good checkpoint .*step 4: item\(s\) \['state'\] missing"):
      mz.restore(copy, saved["env"], saved["pool"])


def test_a_sound_step_of_other_shapes_is_refused_by_name_not_quarantined(copy, saved):
  """A state template of other sizes (here a replay twice as large; a CubeEnv of another horizon sizes its state so)
  is the caller's mistake: a ValueError naming the leaves, every step left in place. Orbax's refusal was read as
  damage, and with quarantine every sound step was renamed `.damaged` in turn (a cold audit). A step that does not
  exist is named as such (it was a raw rename error)."""
  bigger = mz.make_train(CONFIG.replace(replay_capacity=2 * CONFIG.replay_capacity), saved["env"], saved["pool"])
  with warnings.catch_warnings():
    warnings.simplefilter("error", mz.CheckpointWarning)  # no step reported damaged
    with pytest.raises(ValueError, match=r"other shapes than this run's \(replay\.\w+ \(\d+"):
      mz.Checkpointer(copy).restore(jax.eval_shape(bigger.init), quarantine=True)
  assert sorted(os.listdir(copy)) == ["2", "3", "4"]
  with pytest.raises(FileNotFoundError, match=r"no step 7 in .*\(its steps: \[2, 3, 4\]\)"):
    mz.Checkpointer(copy).restore(jax.eval_shape(saved["trainer"].init), step=7, quarantine=True)
  assert mz.restore(copy, saved["env"], saved["pool"]).step == 4


def test_saving_a_step_already_saved_is_an_error(saved, tmp_path):
  """`mz.save` skipped a step the directory held and returned as if it had saved it (fine-tuned parameters of the
  same iteration were lost; a library audit): now an error, and the checkpoint there is unchanged."""
  state = saved["states"][4]
  target = tmp_path / "again"
  assert mz.save(target, state, CONFIG, env=saved["env"], pool=saved["pool"]) == 4
  changed = state.replace(params=jax.tree.map(lambda x: x + 1, state.params))
  with pytest.raises(FileExistsError, match="already holds a checkpoint of step 4"):
    mz.save(target, changed, CONFIG, env=saved["env"], pool=saved["pool"])
  _assert_same_tree(mz.load_params(target)[0], state.params)


def test_wrong_directory_errors(tmp_path, saved):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    mz.restore(tmp_path / "nope", saved["env"], saved["pool"])
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    mz.restore(tmp_path / "empty", saved["env"], saved["pool"])
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    mz.load_params(tmp_path / "empty")


def test_other_environment_or_config_is_refused(saved, tmp_path):
  other = CoinGrid(width=5, flat=True)
  with pytest.raises(ValueError, match=r"observation shape \(36,\).*this run has .*\(45,\)"):
    mz.Checkpointer(saved["directory"]).restore(jax.eval_shape(saved["trainer"].init), env=other)
  with pytest.raises(ValueError, match=r"num_simulations=8 \(checkpoint has 4\)"):
    mz.restore(saved["directory"], saved["env"], saved["pool"], config=CONFIG.replace(num_simulations=8))
  # A class defined in a script run as __main__ is the class imported from it by name (an RL audit: a checkpoint
  # trained from `python train.py` could not be restored from another script); another name is another class.
  spec = mz.env_spec(saved["env"])
  script = {**spec, "env": "__main__.CoinGrid"}
  with pytest.warns(mz.CheckpointWarning, match=r"made for environment __main__\.CoinGrid; this run has tests\.toy"):
    checkpoint.check_compatible({"env": script}, CONFIG, directory="d", step=4, env=saved["env"])
  with pytest.raises(ValueError, match=r"made for environment __main__\.OtherGrid .* this run has tests\.toy_envs"):
    checkpoint.check_compatible(
      {"env": {**script, "env": "__main__.OtherGrid"}}, CONFIG, directory="d", step=4, env=saved["env"]
    )
  # The same class configured otherwise (a longer horizon: same observation shape and actions) restores with a
  # warning naming the setting; a checkpoint from before the settings were recorded restores without one.
  assert spec["settings"] == {"flat": True, "height": 3, "horizon": 3, "max_coin": 3.0, "width": 4}
  longer = CoinGrid(flat=True, horizon=5)
  with pytest.warns(
    mz.CheckpointWarning,
    match=r"tests\.toy_envs\.CoinGrid configured otherwise: horizon=5 \(checkpoint has 3\); it restores",
  ):
    assert mz.restore(saved["directory"], longer, saved["pool"]).step == 4
  older = {"env": {k: v for k, v in spec.items() if k != "settings"}}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    checkpoint.check_compatible(older, CONFIG, directory="d", step=4, env=longer)
  # Checkpoint bookkeeping may change on resume.
  ok = mz.restore(saved["directory"], saved["env"], saved["pool"], config=CONFIG.replace(checkpoint_every=7))
  assert ok.step == 4
  # The pool it trained on: another size is refused (saved slots index it), other contents warned.
  pool = saved["pool"]
  smaller = jax.tree.map(lambda x: x[:-1], pool)
  with pytest.raises(ValueError, match=r"trained on an env params pool of 4 instances; this run passes 3"):
    mz.restore(saved["directory"], saved["env"], smaller)
  shuffled = jax.tree.map(lambda x: x[::-1], pool)
  with pytest.warns(mz.CheckpointWarning, match="another env params pool of the same size"):
    assert mz.restore(saved["directory"], saved["env"], shuffled).step == 4
  # The library's save records the pool it is given, and its restore checks it the same way.
  mz.save(tmp_path / "lib", saved["states"][4], CONFIG, env=saved["env"], pool=pool)
  with pytest.raises(ValueError, match=r"trained on an env params pool of 4 instances; this run passes 3"):
    mz.restore(tmp_path / "lib", saved["env"], smaller)


def test_no_pickle_in_the_saved_files(saved):
  files = [os.path.join(d, f) for d, _, fs in os.walk(saved["directory"]) for f in fs]
  assert len(files) > 10
  for path in files:
    assert not path.endswith((".pkl", ".pickle")), path
    with open(path, "rb") as fh:
      data = fh.read()
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
      with pytest.raises(Exception):  # noqa: B017 (starts like a pickle: any failure to load as one will do)
        pickle.loads(data)


def _steps(directory):
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _worker(directory, total, env, every=1):
  return subprocess.Popen(
    [sys.executable, "-m", "tests.checkpoint_worker", str(directory), str(total), str(every)],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory):
  """Subprocess environment sharing the suite's persistent XLA cache (tests/conftest.py), or one of its own when
  run without it: the workers load what `saved` compiled in this process (the same programs) and what the first
  worker compiled, rather than compiling it again."""
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path_factory.mktemp("xla"))
  return dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=cache,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, saved, worker_env):
  total, rounds = 9, 3
  reference = _worker(tmp_path / "reference", total, worker_env)  # also fills the compilation cache
  out, _ = reference.communicate(timeout=400)
  assert reference.returncode == 0, out
  rng = np.random.default_rng(0)
  killed_dir, kills = tmp_path / "killed", 0
  for _ in range(rounds):
    before = max(_steps(killed_dir), default=0)
    proc = _worker(killed_dir, total, worker_env)
    deadline = time.monotonic() + 300
    while max(_steps(killed_dir), default=0) <= before and proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.0))  # a random moment: mid-iteration, mid-save or between
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
      kills += 1
    out, _ = proc.communicate(timeout=60)
    assert "Traceback" not in out, out
  assert kills == rounds, "the run finished before it could be killed: raise `total`"
  final = _worker(killed_dir, total, worker_env)
  out, _ = final.communicate(timeout=400)
  assert final.returncode == 0 and "finished" in out, out
  assert int(out.split("start at iteration ")[1].split()[0]) > 0  # it resumed
  ran_straight = mz.restore(tmp_path / "reference", saved["env"], saved["pool"])
  resumed = mz.restore(killed_dir, saved["env"], saved["pool"])
  assert resumed.step == ran_straight.step == total
  _assert_same_tree(resumed.state, ran_straight.state)


def test_ctrl_c_saves_the_iteration_it_stopped_at(tmp_path, saved, worker_env):
  directory = tmp_path / "interrupted"
  proc = _worker(directory, 100_000, worker_env, every=1000)  # no periodic save would happen
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("iteration 3"):
      proc.send_signal(signal.SIGINT)
      break
  out = "".join(lines) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 130, out
  last = max(int(line.split()[1]) for line in out.splitlines() if line.startswith("iteration "))
  assert f"checkpoint of iteration {last} saved" in out
  assert _steps(directory) == [last]
  restored = mz.restore(directory, saved["env"], saved["pool"])
  assert int(restored.state.iteration) == last == restored.meta["counters"]["iteration"]


@pytest.mark.parametrize("older", [1, 2])
def test_a_checkpoint_of_another_format_is_refused_by_name_not_quarantined(copy, saved, older):
  """Formats 2 and 3 added the replay's truncations. A format-1 state does not fit the template: it was read as
  damaged and, on resume, quarantined (renamed *.damaged) with the run started over. It is refused by name and left
  as it is; its parameters still load."""
  (meta_file,) = [os.path.join(d, f) for d, _, fs in os.walk(copy / "4" / "meta") for f in fs if "metadata" in f]
  with open(meta_file) as fh:
    meta = json.load(fh)
  assert meta["format"] == checkpoint.FORMAT_VERSION == 3
  meta["format"] = older
  with open(meta_file, "w") as fh:
    json.dump(meta, fh)
  with pytest.raises(
    ValueError, match=rf"format {older}, written by another version of muzero_jax; this one resumes format 3"
  ):
    mz.restore(copy, saved["env"], saved["pool"], quarantine=True)
  assert (copy / "4").is_dir() and not (copy / "4.damaged").exists()
  params, _, loaded = mz.load_params(copy)
  assert loaded["step"] == 4
  _assert_same_tree(params, saved["states"][4].params)


def test_an_iteration_that_raises_saves_the_last_completed_one(tmp_path):
  """A fanned-out run whose self-play actor is past its restarts raised from its iteration with up to
  `checkpoint_every` - 1 iterations unsaved and no word of a checkpoint (an audit). The last completed iteration is
  saved first, and the error's notes say where; a run that fails before completing one saves nothing."""
  env, pool = worker.make_setup()
  trainer = mz.make_train(CONFIG.replace(checkpoint_every=50), env, pool)

  class Failing(driver._FusedIterations):
    def __init__(self, trainer, at):
      super().__init__(trainer)
      self.at = at

    def iteration(self, state):
      if int(state.iteration) == self.at:
        if self.at == 2:  # as a step that donated its input and then failed leaves it (a review)
          jax.tree.leaves(state)[0].delete()
        raise RuntimeError("self-play actor 0 keeps failing")
      return super().iteration(state)

  directory = tmp_path / "ckpt"
  with pytest.raises(RuntimeError, match="keeps failing") as info:
    driver.run_iterations(
      trainer, env, Failing(trainer, 3), checkpoint_dir=str(directory), num_iterations=10, progress=False
    )
  assert f"the last completed iteration, 3, is saved in {directory}" in "\n".join(info.value.__notes__)
  restored = mz.restore(directory, env, pool)
  assert restored.step == 3 and int(restored.state.iteration) == 3
  with pytest.raises(RuntimeError, match="keeps failing") as info:
    driver.run_iterations(
      trainer, env, Failing(trainer, 0), checkpoint_dir=str(tmp_path / "none"), num_iterations=2, progress=False
    )
  assert not getattr(info.value, "__notes__", None) and not mz.Checkpointer(tmp_path / "none").all_steps()
  # The last completed state's buffers taken by the failed step: its own error, said so, nothing saved.
  with pytest.raises(RuntimeError, match="keeps failing") as info:
    driver.run_iterations(
      trainer, env, Failing(trainer, 2), checkpoint_dir=str(tmp_path / "taken"), num_iterations=5, progress=False
    )
  assert "iteration 2 was not saved: the failed step had taken its state" in "\n".join(info.value.__notes__)
  assert not mz.Checkpointer(tmp_path / "taken").all_steps()


def test_a_checkpoints_step_is_on_the_tensorboard_curve_before_the_checkpoint_is_saved(tmp_path, monkeypatch):
  """A checkpoint audit: the step's scalars were written after its save and not flushed, so a run SIGKILLed just after
  the save resumed past that step and its point was lost for good (steps 1-5, then 7-20). They reach the disk first;
  the save's time follows at the same step."""
  env, pool = worker.make_setup()
  trainer = mz.make_train(CONFIG.replace(checkpoint_every=2), env, pool)
  logdir, on_disk = tmp_path / "tb", {}
  save = driver._save

  def seen_then_save(ckpt, state, *args, **kwargs):
    on_disk[int(state.iteration)] = sorted(scalars(logdir).get("loss/total", {}))
    return save(ckpt, state, *args, **kwargs)

  monkeypatch.setattr(driver, "_save", seen_then_save)
  _fused(trainer, env, logdir=str(logdir), checkpoint_dir=str(tmp_path / "c"), num_iterations=4)
  assert on_disk == {2: [1, 2], 4: [1, 2, 3, 4]}
  assert sorted(scalars(logdir)["checkpoint/save_s"]) == [2, 4]


def test_the_resume_hint_names_only_a_directory_that_holds_a_checkpoint(saved, tmp_path, capsys):
  """A run interrupted before its first save printed `continue with: ... --resume DIR` of an empty directory (an
  audit); only a directory that holds a checkpoint is named."""

  def interrupted():
    raise KeyboardInterrupt("training interrupted by signal 2")

  empty = tmp_path / "empty"
  empty.mkdir()
  assert errors.run_command(interrupted, program="experiments.train", checkpoint_dir=str(empty)) == 130
  assert "continue with" not in capsys.readouterr().err
  assert errors.run_command(interrupted, program="experiments.train", checkpoint_dir=str(saved["directory"])) == 130
  assert f"continue with: python -m experiments.train --resume {saved['directory']}" in capsys.readouterr().err

  def again():  # a second Ctrl-C: the driver's message is not reached (a checkpoint audit: "nothing saved")
    raise KeyboardInterrupt

  assert errors.run_command(again, program="experiments.train", checkpoint_dir=str(saved["directory"])) == 130
  err = capsys.readouterr().err
  assert f"interrupted: stopped at once; the checkpoints saved before are kept in {saved['directory']}" in err
  assert "nothing saved" not in err
  assert errors.run_command(again, program="experiments.train", checkpoint_dir=str(empty)) == 130
  assert "interrupted: nothing saved" in capsys.readouterr().err


def test_a_save_that_fails_mid_run_names_the_step_the_cause_and_the_steps_kept(tmp_path, monkeypatch, capsys):
  """A checkpoint audit: a disk that filled during training ended in Orbax's traceback (the steps kept unsaid, the
  CLI's status that of a crash). The failed write is a `CheckpointSaveError` naming the step, the operating
  system's reason and the complete steps kept, which restore; the command line prints it and how to resume."""
  env, pool = worker.make_setup()
  trainer = mz.make_train(CONFIG, env, pool)
  real_save = ocp.CheckpointManager.save

  def disk_full_at_3(self, step, *args, **kwargs):
    if step == 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{self.directory}/3.orbax-checkpoint-tmp")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_at_3)
  directory = tmp_path / "ckpt"

  def run():
    _fused(trainer, env, checkpoint_dir=str(directory), num_iterations=5)

  with pytest.raises(mz.CheckpointSaveError) as info:
    run()
  message = str(info.value)
  assert f"writing checkpoint step 3 in {directory} failed: No space left on device" in message
  assert "the steps saved before (1, 2) are complete and kept" in message
  assert isinstance(info.value.__cause__, OSError) and not getattr(info.value, "__notes__", None)
  assert mz.restore(directory, env, pool).step == 2
  capsys.readouterr()
  assert errors.run_command(run, program="experiments.train", checkpoint_dir=str(directory)) == 1
  err = capsys.readouterr().err
  assert f"error: writing checkpoint step 3 in {directory} failed: No space left on device" in err
  assert f"continue with: python -m experiments.train --resume {directory}" in err


def test_a_save_that_fails_for_another_reason_than_the_disk_raises_its_own_error(tmp_path):
  """A review: every error of Orbax's save became a `CheckpointSaveError` telling the user to free space, also a
  state Orbax cannot write (a text leaf). Only the system's or the storage's failures are; others raise as they are."""

  class State(typing.NamedTuple):
    params: dict
    tag: str

  ckpt = mz.Checkpointer(tmp_path / "c")
  with pytest.raises(Exception) as info:  # Orbax's own type: whatever it raises comes through
    ckpt.save(1, State({"w": np.zeros(3, np.float32)}, "abc"), config=CONFIG)
    ckpt.wait()
  assert not isinstance(info.value, mz.CheckpointSaveError) and "free space" not in str(info.value)
  ckpt.close()


def test_a_background_write_that_failed_is_named_as_its_own_step(saved, tmp_path, monkeypatch):
  """Orbax reports an asynchronous write's failure at the next save (or the close): it is named as the step that
  was being written, with the reason TensorStore quotes as an error code, not as the step being saved."""
  real_wait, failed = ocp.CheckpointManager.wait_until_finished, []

  def fails_once(self):
    real_wait(self)
    if not failed:
      failed.append(True)
      raise ValueError("RESOURCE_EXHAUSTED: Error writing local file \"x\": Failed to write [os_error_code='28']")

  ckpt = mz.Checkpointer(tmp_path / "c")
  states = saved["states"]
  assert ckpt.save(2, states[2], config=CONFIG)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", fails_once)
  with pytest.raises(mz.CheckpointSaveError, match=r"checkpoint step 2 in .* failed: No space left on device \("):
    ckpt.save(3, states[3], config=CONFIG)
  ckpt.close()  # the failure was reported once; the close finishes cleanly


def test_a_failure_at_the_last_close_still_closes_the_logger(tmp_path, monkeypatch):
  """A review: when finishing the last save failed (a disk full at the end), the driver's `finally` raised before
  the TensorBoard logger and the progress bar were closed, so the run's last scalars were never flushed."""
  env, pool = worker.make_setup()
  trainer = mz.make_train(CONFIG, env, pool)
  closed = []
  real_close = driver.MetricsLogger.close

  def spy(self):
    closed.append(True)
    real_close(self)

  def full(self):
    self._manager.close()
    raise mz.CheckpointSaveError(f"writing checkpoint step 2 in {self.directory} failed: No space left on device")

  monkeypatch.setattr(driver.MetricsLogger, "close", spy)
  monkeypatch.setattr(mz.Checkpointer, "close", full)
  logdir = tmp_path / "tb"
  with pytest.raises(mz.CheckpointSaveError, match="No space left"):
    _fused(trainer, env, logdir=str(logdir), checkpoint_dir=str(tmp_path / "c"), num_iterations=2)
  assert closed == [True] and sorted(scalars(logdir)["loss/total"]) == [1, 2]
