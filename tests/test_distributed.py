"""Self-play fan-out on a local Ray runtime (real actors, CPU, loopback only), and the path without Ray."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import muzero_jax as mz
from muzero_jax import selfplay
from tests.tb_events import scalars
from tests.toy_envs import CoinGrid, CoinGridExpert, make_coin_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Smoke-sized: MLP on the flattened 3x4 coin grid; 2 actors x 2 slots; the first round
# (6 rows, K + n = 4) leaves 8 sampleable positions < min_replay_size, later rounds update.
CONFIG = mz.MuZeroConfig(
  seed=0,
  network="mlp",
  hidden_size=16,
  latent_size=16,
  mlp_layers=1,
  support_size=5,
  reward_support_size=3,
  max_reward=3.0,
  max_episode_steps=3,
  discount=1.0,
  num_simulations=4,
  max_num_considered_actions=4,
  num_envs=4,
  rollout_length=6,
  replay_capacity=512,
  min_replay_size=16,
  n_step=2,
  unroll_steps=2,
  batch_size=16,
  updates_per_iteration=2,
  reanalyse_fraction=0.25,
  warmup_steps=2,
  checkpoint_every=2,
)
T, B, U = CONFIG.rollout_length, CONFIG.num_envs, CONFIG.updates_per_iteration
ENV = CoinGrid(flat=True)
POOL = make_coin_pool(ENV, 4, seed=0)


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory):
  ray = pytest.importorskip("ray")
  from muzero_jax import distributed  # noqa: PLC0415 (needs Ray, checked just above)

  saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
  distributed.init_ray(num_cpus=2, log_to_driver=False)
  # Restarted and later actors load the compiled rollout instead of compiling it again.
  cache = str(tmp_path_factory.mktemp("jax_cache"))
  actor_env = {
    "PYTHONPATH": ROOT,
    "JAX_COMPILATION_CACHE_DIR": cache,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }
  yield distributed, actor_env
  ray.shutdown()
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


def _check_chains(counters, num_actors):
  """Every actor's rollouts arrived in chain order with no gap (nothing lost beyond what was replayed)."""
  assert sorted(counters.received_by_actor) == list(range(num_actors))
  for seqs in counters.received_by_actor.values():
    assert seqs == list(range(len(seqs)))


def test_two_actors_feed_the_learner_and_resume(ray_runtime, tmp_path):
  distributed, actor_env = ray_runtime
  start = mz.make_train(CONFIG, ENV, POOL).init()
  result = distributed.train_distributed(
    CONFIG,
    ENV,
    POOL,
    num_actors=2,
    num_iterations=4,
    logdir=str(tmp_path / "tb"),
    checkpoint_dir=str(tmp_path / "ckpt"),
    progress=False,
    actor_env=actor_env,
  )
  state, c = result.state, result.counters

  # Both actors fed every round, in order; the replay ratio is the configured one.
  _check_chains(c, 2)
  assert c.rounds == 4 and c.batches_learned == 8 and c.moves_learned == 4 * T * B
  assert int(state.iteration) == 4 and int(state.moves) == 4 * T * B
  assert int(state.updates) == 3 * U and int(state.skipped_updates) == 0
  ratio = int(state.updates) * CONFIG.batch_size / int(state.moves)
  assert ratio == pytest.approx(U * CONFIG.batch_size / (T * B) * 3 / 4)
  assert c.batches_received == c.batches_learned + c.batches_dropped
  assert c.moves_received == c.batches_received * T * (B // 2)
  assert c.restarts == 0 and c.lost_in_flight == 0 and c.failed_requests == 0
  assert 1 <= c.max_buffered <= 2  # backpressure: max_in_flight rollouts per actor
  assert len(c.pids[0]) == len(c.pids[1]) == 1 and c.pids[0] != c.pids[1] and os.getpid() not in c.pids[0]

  assert 0 <= c.param_lag_max <= 2  # parameters reach actors at most max_in_flight versions late

  # The replay holds exactly what the same self-play function plays from the initial state
  # with the initial parameters (version 0): actor i's slots are columns [2i, 2i + 2); the
  # actor's next rollout starts where that one ended.
  base = jax.random.fold_in(start.key, 0x5E1F)
  network = mz.make_network(CONFIG, ENV.num_actions, ENV.observation_shape)
  rollout = jax.jit(functools.partial(selfplay.rollout, env=ENV, network=network, config=CONFIG))
  for i in range(2):
    part = jax.tree.map(lambda x, i=i: x[2 * i : 2 * i + 2], start.actor)
    end, traj, _ = rollout(start.params, part, POOL, jax.random.fold_in(jax.random.fold_in(base, i), 0))
    cols = slice(2 * i, 2 * i + 2)
    np.testing.assert_array_equal(state.replay.action[:T, cols], traj.action)
    np.testing.assert_array_equal(state.replay.reward[:T, cols], traj.reward)
    np.testing.assert_allclose(state.replay.obs[:T, cols], traj.obs)
    np.testing.assert_allclose(state.replay.policy[:T, cols], traj.policy, atol=1e-6)
    np.testing.assert_allclose(state.replay.obs[T, cols], end.obs)

  tb = scalars(str(tmp_path / "tb"))
  assert tb["total/moves"] == {k: k * T * B for k in range(1, 5)}
  assert tb["fanout/batches_received"][4] == c.batches_received
  assert tb["fanout/restarts"][4] == 0 and tb["fanout/batches_dropped"][4] == c.batches_dropped

  # --resume for a Ray run: the learner's checkpoint is the only state; new actors pick it up.
  ckpt = mz.Checkpointer(tmp_path / "ckpt")
  assert ckpt.all_steps()[-1] == 4
  ckpt.close()
  resumed = distributed.train_distributed(
    CONFIG,
    ENV,
    POOL,
    num_actors=2,
    num_iterations=2,
    checkpoint_dir=str(tmp_path / "ckpt"),
    resume=True,
    progress=False,
    actor_env=actor_env,
  )
  s2, c2 = resumed.state, resumed.counters
  _check_chains(c2, 2)
  assert int(s2.iteration) == 6 and int(s2.moves) == 6 * T * B and int(s2.updates) == 5 * U
  assert c2.batches_learned == 4 and c2.restarts == 0
  np.testing.assert_array_equal(s2.replay.action[: 4 * T], state.replay.action[: 4 * T])  # replay restored


def test_killed_actor_is_restarted_and_the_run_finishes(ray_runtime):
  distributed, actor_env = ray_runtime
  killed = []

  def kill_actor_one(state, _metrics, counters):
    if int(state.iteration) == 2 and not killed:
      killed.append(counters.pids[1][-1])
      os.kill(killed[0], signal.SIGKILL)

  result = distributed.train_distributed(
    CONFIG,
    ENV,
    POOL,
    num_actors=2,
    num_iterations=6,
    callback=kill_actor_one,
    progress=False,
    max_restarts=2,
    actor_env=actor_env,
  )
  state, c = result.state, result.counters
  print(c.summary())
  assert killed
  assert c.restarts == 1 and c.pids[1][0] == killed[0] and len(c.pids[1]) == 2 and len(c.pids[0]) == 1
  assert c.lost_in_flight <= 1  # the rollout being played when it died, nothing else
  assert c.failed_requests <= 1  # at most the request queued behind it (max_in_flight = 2), never played
  _check_chains(c, 2)  # the restarted actor continued its slots from its last delivered rollout
  assert c.rounds == 6 and c.batches_learned == 12
  assert int(state.iteration) == 6 and int(state.moves) == 6 * T * B == c.moves_learned
  assert int(state.updates) == 5 * U
  assert c.batches_received == 12 + c.batches_dropped and c.batches_dropped <= 4


def test_ctrl_c_while_actors_cannot_be_scheduled_stops_within_seconds_and_saves(ray_runtime, tmp_path, capsys):
  """A cold audit: actors asking for a GPU the runtime lacks are never scheduled, and a Ctrl-C went unseen until the
  stall timeout (600 s). Now the wait gives the round up, the start state is saved and KeyboardInterrupt says so."""
  distributed, actor_env = ray_runtime
  import threading  # noqa: PLC0415 (only this test)

  def interrupt_once_the_driver_handles_it():
    for _ in range(1200):  # the driver installs its handler after starting the actors; pytest's would end the run
      handler = signal.getsignal(signal.SIGINT)
      if isinstance(getattr(handler, "__self__", None), mz.driver.StopOnSignal):
        os.kill(os.getpid(), signal.SIGINT)
        return
      threading.Event().wait(0.05)

  assert distributed.missing_resources(1.0, 1.0) == ["1 GPU (the most a node has: 0)"]
  assert distributed.missing_resources(1.0, 0.0) == []
  thread = threading.Thread(target=interrupt_once_the_driver_handles_it, daemon=True)
  thread.start()
  with (
    pytest.warns(RuntimeWarning, match=r"each asks for 1 GPU \(the most a node has: 0\); the actors wait"),
    pytest.raises(KeyboardInterrupt, match="checkpoint of iteration 0 saved"),
  ):
    distributed.train_distributed(
      CONFIG,
      ENV,
      POOL,
      num_actors=2,
      num_iterations=2,
      checkpoint_dir=str(tmp_path / "ckpt"),
      progress=False,
      actor_gpus=1.0,  # none in this runtime: the actors stay pending
      actor_env=actor_env,
      stall_timeout=120.0,  # without the fix: RuntimeError (no rollout) after 120 s, not KeyboardInterrupt
    )
  thread.join(timeout=5)
  ckpt = mz.Checkpointer(tmp_path / "ckpt")
  assert ckpt.all_steps() == [0]
  ckpt.close()
  # The command line on this machine's own runtime, which cannot grow: refused before any actor starts.
  from experiments import train as cli  # noqa: PLC0415 (the CLI, only here)

  argv = ["--preset", "smoke", "--ray-actors", "2", "--ray-actor-gpus", "1", "--iterations", "1"]
  assert cli.main([*argv, "--logdir", str(tmp_path / "tb")]) == 2
  assert "error: --ray-actor-gpus 1: the local Ray runtime cannot place an actor, which asks for 1 GPU" in (
    capsys.readouterr().err
  )


@pytest.mark.usefixtures("ray_runtime")
def test_ray_listens_on_loopback_only():
  import psutil  # noqa: PLC0415 (Ray's extra, optional: the fixture skips without Ray)
  import ray  # noqa: PLC0415 (optional, as above)

  @ray.remote(num_cpus=0)
  def worker_pid():
    return os.getpid()

  assert ray.get(worker_pid.remote()) != os.getpid()  # at least one worker process is up
  pids = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
  listening = [
    (conn.pid, conn.laddr.ip, conn.laddr.port)
    for conn in psutil.net_connections(kind="inet")
    if conn.status == psutil.CONN_LISTEN and conn.pid in pids
  ]
  assert len(listening) >= 3, listening  # GCS, raylet, workers
  loopback = {"127.0.0.1", "::ffff:127.0.0.1"}
  assert {ip for _, ip, _ in listening} <= loopback, listening
  try:
    ss = subprocess.run(["ss", "-tlnp"], capture_output=True, text=True, check=True).stdout
  except (FileNotFoundError, subprocess.CalledProcessError):
    return
  ours = [line for line in ss.splitlines() if any(f"pid={p}," in line for p in pids)]
  assert ours and all(line.split()[3].rsplit(":", 1)[0] in {"127.0.0.1", "[::ffff:127.0.0.1]"} for line in ours), ours


def test_single_process_path_runs_without_ray(tmp_path):
  """With ``import ray`` failing, the library and the CLI import, train, and name the missing extra."""
  code = textwrap.dedent(f"""
        import json, os, sys
        sys.modules["ray"] = None  # import ray -> ImportError, as when Ray is not installed
        os.environ["JAX_PLATFORMS"] = "cpu"
        import muzero_jax as mz
        from experiments import train as cli
        from tests.test_distributed import CONFIG, ENV, POOL
        try:
            import muzero_jax.distributed
            raise SystemExit("muzero_jax.distributed imported without Ray")
        except ImportError as err:
            hint = "pip install" in str(err)
        state = mz.train(CONFIG, ENV, POOL, num_iterations=2, progress=False)
        code = cli.main(["--preset", "smoke", "--ray-actors", "2", "--logdir", "{tmp_path}/tb", "--iterations", "1"])
        print(json.dumps(dict(hint=hint, iteration=int(state.iteration), moves=int(state.moves),
                              updates=int(state.updates), cli=code,
                              ray_loaded=sys.modules["ray"] is not None or any(m.startswith("ray.") for m in sys.modules))))
    """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == dict(hint=True, iteration=2, moves=2 * T * B, updates=U, cli=2, ray_loaded=False)
  assert "--ray-actors/--ray-address need Ray: pip install -e '.[ray]'" in out.stderr


def test_an_address_where_no_cluster_listens_is_refused_at_once(tmp_path, capsys):
  """A cold audit: `--ray-address 127.0.0.1:1` hung in ray.init's retries (minutes of warnings, no error)."""
  distributed = pytest.importorskip("muzero_jax.distributed")  # needs Ray
  from experiments import train as cli  # noqa: PLC0415 (after the skip)

  with socket.socket() as sock:  # a loopback port nothing listens on once closed
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  address = f"127.0.0.1:{port}"
  with pytest.raises(ConnectionError, match=f"no Ray cluster answers at ray://{address}"):
    distributed.init_ray(f"ray://{address}", connect_timeout=5.0)
  distributed._check_reachable("auto", 5.0)  # no port: left to Ray
  code = cli.main(
    ["--preset", "smoke", "--ray-address", address, "--logdir", str(tmp_path / "tb"), "--iterations", "1"]
  )
  assert code == 2
  assert f"--ray-address {address}: no Ray cluster answers at {address}" in capsys.readouterr().err


def test_a_resumed_fan_out_imitates_only_where_the_single_process_run_would():
  """An actor's rollout `seq` belongs to round `start + seq`: it imitates the expert while that is below
  `imitation_iterations`, as `trainer.iteration` does at `state.iteration`. The actors counted this run's rounds from
  0, so a fan-out resumed past the warm start imitated again (an audit of the training loops)."""
  distributed = pytest.importorskip("muzero_jax.distributed")  # needs Ray (the actor runs here, without it)

  env = CoinGridExpert(flat=True)
  config = CONFIG.replace(imitation_iterations=2, reanalyse_fraction=0.0)
  state = mz.make_train(config, env, POOL).init()
  network = mz.make_network(config, env.num_actions, env.observation_shape)
  played = jax.jit(functools.partial(selfplay.rollout, env=env, network=network, config=config))
  base_key = np.asarray(jax.random.fold_in(state.key, 0x5E1F), np.uint32)
  for start, expected in ((0, [True, True, False]), (1, [True, False, False]), (3, [False, False, False])):
    actor = distributed.SelfPlayActor(0, config, env, base_key, start)
    actor._pool, actor._state, actor._epoch, actor._pos = jax.device_put(POOL), state.actor, 0, 0
    actor._params, actor._version = state.params, 0
    for seq, imitates in enumerate(expected):
      begin = actor._state
      out = actor.rollout(0, seq, 0, [None])
      key = jax.random.fold_in(actor._key, seq)
      want = played(state.params, begin, POOL, key, imitate=np.bool_(imitates))[1]
      np.testing.assert_array_equal(np.asarray(out.traj.policy), np.asarray(want.policy), err_msg=f"{start} {seq}")


def test_fan_out_learner_differentiates_its_scan_as_a_scan_does():
  """The fan-out learns its rounds in `learn_updates`'s scan: on a CPU the im2col gradient, whatever the loop."""
  distributed = pytest.importorskip("muzero_jax.distributed")  # needs Ray

  env = CoinGrid()
  pool = make_coin_pool(env, 2, seed=0)
  for loop in ("auto", "host", "overlap", "scan"):
    config = CONFIG.replace(network="resnet", channels=4, num_blocks=1, head_channels=4, learner_loop=loop)
    trainer = mz.make_train(config, env, pool)
    source = distributed._FanOutIterations(trainer, env, pool, num_actors=1, fan_out_options={})
    assert source.learner_network.config.conv_gradient == "patch"
    assert trainer.network.config.conv_gradient == ("patch" if loop == "scan" else "lax")
