"""Self-play fan-out over Ray: actors play, the learner in the driver learns.

The single-process path (:func:`muzero_jax.train`) fuses one self-play rollout
and the learner updates into one jitted iteration. Here the two halves run in
different processes, possibly on different hosts:

* ``N`` Ray actors (:class:`SelfPlayActor`) each own ``config.num_envs / N``
  of the environment slots and run the same jitted self-play function
  (:func:`muzero_jax.selfplay.rollout`) on their own device(s). An actor fetches
  parameters from the object store only when the version it is sent is newer
  than the one it holds.
* The driver assembles one *round* from one rollout of every actor (the
  trajectories concatenated along the slot axis are exactly the ``[T, B]``
  rollout of the single-process path) and applies
  :func:`muzero_jax.trainer.learn_from_rollout`: replay insertion, then
  ``config.updates_per_iteration`` updates. The replay ratio (updates x
  batch_size / moves) is therefore the configured one, and the learner's
  :class:`~muzero_jax.TrainState` has the same structure as a
  single-process run's: checkpoints are interchangeable.
* Backpressure: each actor has at most ``max_in_flight`` rollouts requested or
  received and not yet learned from, so at most ``N * max_in_flight``
  trajectory batches exist at any time (no unbounded object-store growth, the
  failure of muzero-general issue #157). Parameters reach an actor at most
  ``max_in_flight`` versions late (``fanout/param_lag_mean`` logs the lag).
* Crash recovery: actors are created with Ray's ``max_restarts``. Every rollout
  request carries the position in the actor's chain of rollouts it must start
  from. When the actor dies the request being played fails with
  ``RayActorError`` (an actor that restarted between requests answers with
  :class:`NeedsState` instead). The driver then sends the restarted actor
  (a fresh process, no state) the environment state that
  ended its last *received* rollout, so the slot's trajectory continues without
  a gap; only the rollout being played at the crash is lost (and played again,
  with the same PRNG key, from the same state). A restart is counted when an
  actor answers from a new process id.

A local Ray runtime (:func:`init_ray` without an address) listens on 127.0.0.1
only (design card, CVE-2023-48022). This module is the only one of
``muzero_jax`` that imports Ray (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import ipaddress
import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

try:
  import psutil
  import ray
  from ray._private import ray_constants
except ImportError as err:  # pragma: no cover (tested in a subprocess without Ray)
  raise ImportError(
    "muzero_jax.distributed needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]>=2.9'); "
    "single-process training (muzero_jax.train) does not"
  ) from err

from muzero_jax import selfplay
from muzero_jax.config import MuZeroConfig
from muzero_jax.driver import IterationAbandoned, run_iterations
from muzero_jax.networks import make_network
from muzero_jax.trainer import TrainState, learn_from_rollout, make_train

__all__ = [
  "Counters",
  "FanOutResult",
  "NeedsState",
  "Rollout",
  "SelfPlayActor",
  "init_ray",
  "local_listeners",
  "missing_resources",
  "train_distributed",
]

LOOPBACK = "127.0.0.1"
# Forwarded from the driver's environment to every actor (remote hosts do not inherit it).
FORWARDED_ENV = (
  "JAX_PLATFORMS",
  "XLA_PYTHON_CLIENT_MEM_FRACTION",
  "XLA_PYTHON_CLIENT_PREALLOCATE",
  "XLA_PYTHON_CLIENT_ALLOCATOR",
  "XLA_FLAGS",
  "PYTHONPATH",
  "JAX_COMPILATION_CACHE_DIR",
  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
  "JAX_COMPILATION_CACHE_MAX_SIZE",
)


def init_ray(
  address: str | None = None, *, num_cpus: int | None = None, connect_timeout: float = 10.0, **kwargs
) -> None:
  """Starts a local Ray runtime on loopback, or joins the cluster at ``address``.

  Local (``address=None``): every Ray listener binds 127.0.0.1, no dashboard,
  no token (nothing off this host can reach it); checked after start-up
  (``RuntimeError`` and shutdown if a listener is elsewhere). Joining a
  cluster uses the cluster's own network and authentication settings
  (``RAY_AUTH_MODE=token`` and the token in the environment when the cluster
  has them). Does nothing when Ray is already initialised.

  An address ``host:port`` (or ``ray://host:port``) is first tried with a TCP connection of at most
  ``connect_timeout`` seconds: nothing listening raises ``ConnectionError`` naming it (``ray.init`` itself retries
  such an address for minutes, printing only warnings; a cold audit).
  """
  if address is not None:
    _check_reachable(address, connect_timeout)
  if ray.is_initialized():
    return
  if address is None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when imported (maybe before this call); unset, it binds
    # some services to 0.0.0.0 and the host's address despite _node_ip_address. Child processes read the env.
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=num_cpus, _node_ip_address=LOOPBACK, include_dashboard=False, **kwargs)
    exposed = [x for x in local_listeners() if not _is_loopback(x[1])]
    if exposed:
      ray.shutdown()
      raise RuntimeError(f"the local Ray runtime listens off loopback (pid, address, port): {exposed}")
  else:
    ray.init(address=address, **kwargs)


def _check_reachable(address: str, timeout: float) -> None:
  """Raises ``ConnectionError`` when nothing accepts a TCP connection at ``address``'s host and port (an address
  without a port, such as ``auto``, is left to Ray)."""
  host, sep, port = address.split("://", 1)[-1].rpartition(":")
  if not sep or not host or not port.isdigit():
    return
  host = host.strip("[]")  # [::1]:6379
  try:
    with socket.create_connection((host, int(port)), timeout=timeout):
      pass
  except OSError as err:
    raise ConnectionError(
      f"no Ray cluster answers at {address} ({err.strerror or err}): give the head node's address as host:port "
      "(its GCS port, 6379 unless `ray start --port` said otherwise), or leave the address out for a local runtime"
    ) from err


def local_listeners() -> list[tuple[int, str, int]]:
  """``(pid, address, port)`` of every TCP listener of this process and its descendants (a local Ray runtime)."""
  me = psutil.Process()
  pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
  return sorted(
    (c.pid, c.laddr.ip, c.laddr.port)
    for c in psutil.net_connections(kind="tcp")
    if c.status == psutil.CONN_LISTEN and c.pid in pids
  )


def _is_loopback(address: str) -> bool:
  ip = ipaddress.ip_address(address)
  mapped = getattr(ip, "ipv4_mapped", None)
  return ip.is_loopback or (mapped is not None and mapped.is_loopback)


# ------------------------------------------------------------------ the actor
@dataclasses.dataclass(frozen=True)
class Rollout:
  """One actor's rollout of ``T`` steps on its ``b`` slots (host arrays)."""

  actor: int  # actor index
  epoch: int  # restore epoch of the actor the request was made in
  seq: int  # position in the actor's chain of rollouts (0 = first of this run)
  pid: int  # process that played it
  params_version: int  # learner version of the parameters used
  traj: Any  # Trajectory, fields [T, b, ...]
  end: selfplay.ActorState  # actor state after the rollout, leaves [b, ...]
  stats: selfplay.RolloutStats  # totals of the rollout
  seconds: float  # wall time of the rollout in the actor


@dataclasses.dataclass(frozen=True)
class NeedsState:
  """Answer of an actor that does not hold the state a request starts from (e.g. just restarted)."""

  actor: int
  epoch: int
  seq: int
  pid: int


class SelfPlayActor:
  """Plays self-play rollouts on its own device (a Ray actor; see :func:`train_distributed`).

  Holds the jitted :func:`muzero_jax.selfplay.rollout`, the env params pool,
  the newest parameters it was sent and the state of its ``b`` slots.
  """

  def __init__(self, index: int, config: MuZeroConfig, env, base_key, start: int = 0) -> None:
    network = make_network(config, env.num_actions, env.observation_shape)
    self._rollout = jax.jit(functools.partial(selfplay.rollout, env=env, network=network, config=config))
    # Rollout `seq` is learned in round `start + seq` (`start`: the iteration the run starts from), so it imitates
    # while that is below `imitation_iterations`, as the single-process iteration does: the actors counted this
    # run's rounds from 0, and a resumed fan-out imitated the expert again (an audit of the training loops).
    self._imitation = config.imitation_iterations - int(start)
    self._pool = None
    self._key = jax.random.fold_in(jax.device_put(np.asarray(base_key, np.uint32)), index)
    self._index = index
    self._state = None
    self._epoch = self._pos = -1
    self._params, self._version = None, -1

  def restore(self, epoch: int, pos: int, actor_state, pool_box: list) -> dict:
    """Takes the slots' state that starts chain position ``pos`` (leaves ``[b, ...]``).

    ``pool_box[0]``: ObjectRef of the env params pool, fetched once per process.
    """
    if self._pool is None:
      self._pool = jax.device_put(ray.get(pool_box[0]))
    self._state = jax.device_put(actor_state)
    self._epoch, self._pos = epoch, pos
    return {"actor": self._index, "pid": os.getpid(), "device": str(jax.devices()[0])}

  def rollout(self, epoch: int, seq: int, version: int, params_box: list) -> Rollout | NeedsState:
    """One rollout from chain position ``seq`` with parameters ``version`` (``params_box[0]``: an ObjectRef)."""
    if self._state is None or epoch != self._epoch or seq != self._pos:
      return NeedsState(actor=self._index, epoch=epoch, seq=seq, pid=os.getpid())
    if version != self._version:  # pull only newer parameters
      self._params, self._version = jax.device_put(ray.get(params_box[0])), version
    t0 = time.perf_counter()
    imitate = np.bool_(seq < self._imitation)
    end, traj, stats = self._rollout(
      self._params, self._state, self._pool, jax.random.fold_in(self._key, seq), imitate=imitate
    )
    host = jax.device_get((end, traj, stats))
    self._state, self._pos = end, self._pos + 1
    return Rollout(
      actor=self._index,
      epoch=epoch,
      seq=seq,
      pid=os.getpid(),
      params_version=version,
      traj=host[1],
      end=host[0],
      stats=host[2],
      seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------- the driver
@dataclasses.dataclass
class Counters:
  """What the fan-out received, used, dropped and lost (logged as ``fanout/*``, printed at the end)."""

  rounds: int = 0  # rounds learned from (one rollout of every actor each)
  batches_received: int = 0  # rollouts that arrived at the driver
  moves_received: int = 0  # environment steps in them
  batches_learned: int = 0  # rollouts put into the replay
  moves_learned: int = 0
  batches_dropped: int = 0  # received but not learned from (left over at the end, or off their chain)
  moves_dropped: int = 0
  lost_in_flight: int = 0  # rollouts being played when their actor died (played again after the restart)
  failed_requests: int = 0  # requests queued behind them that failed unplayed
  restarts: int = 0  # actors that answered from a new process
  max_buffered: int = 0  # most rollouts requested or held by the driver for one actor
  param_lag_sum: int = 0  # sum over learned rollouts of (learner version - version played with)
  param_lag_max: int = 0
  rollout_seconds: float = 0.0  # actor-side wall time of the received rollouts
  received_by_actor: dict = dataclasses.field(default_factory=dict)  # actor -> [seq, ...] in arrival order
  pids: dict = dataclasses.field(default_factory=dict)  # actor -> [pid, ...] distinct, in order seen

  def scalars(self) -> dict[str, float]:
    """The counters as TensorBoard scalars."""
    learned = max(self.batches_learned, 1)
    return {
      "fanout/rounds": self.rounds,
      "fanout/batches_received": self.batches_received,
      "fanout/moves_received": self.moves_received,
      "fanout/batches_dropped": self.batches_dropped,
      "fanout/moves_dropped": self.moves_dropped,
      "fanout/lost_in_flight": self.lost_in_flight,
      "fanout/failed_requests": self.failed_requests,
      "fanout/restarts": self.restarts,
      "fanout/max_buffered": self.max_buffered,
      "fanout/param_lag_mean": self.param_lag_sum / learned,
      "fanout/param_lag_max": self.param_lag_max,
    }

  def summary(self) -> str:
    """One line for the terminal."""
    actors = ", ".join(
      f"actor {a}: {len(s)} rollouts, pids {self.pids.get(a, [])}" for a, s in sorted(self.received_by_actor.items())
    )
    return (
      f"fan-out: {self.rounds} rounds; received {self.batches_received} rollouts ({self.moves_received} "
      f"moves), learned from {self.batches_learned} ({self.moves_learned} moves), dropped "
      f"{self.batches_dropped} ({self.moves_dropped} moves); {self.restarts} actor restart(s), "
      f"{self.lost_in_flight} rollout(s) lost in flight, {self.failed_requests} queued request(s) failed; "
      f"parameter lag mean {self.param_lag_sum / max(self.batches_learned, 1):.2f} max "
      f"{self.param_lag_max} versions; [{actors}]"
    )


@dataclasses.dataclass(frozen=True)
class FanOutResult:
  """What :func:`train_distributed` returns."""

  state: TrainState
  counters: Counters


@dataclasses.dataclass
class _Slot:
  """The driver's view of one actor."""

  handle: Any
  tip_state: Any  # host ActorState that ends the newest received rollout (or the start)
  tip_pos: int  # chain position that starts from tip_state
  epoch: int = 0
  outstanding: collections.deque = dataclasses.field(default_factory=collections.deque)  # (ref, kind, seq)
  pending: collections.deque = dataclasses.field(default_factory=collections.deque)  # received Rollouts
  failures: int = 0  # consecutive deaths without a rollout in between
  restore_at: float | None = None  # monotonic time to (re)send the state; None: not needed

  def rollouts_requested(self) -> int:
    return sum(kind == "rollout" for _, kind, _ in self.outstanding)


def _short(err: BaseException, limit: int = 1500) -> str:
  text = f"{type(err).__name__}: {err}"
  return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def _slice_actor(actor: selfplay.ActorState, index: int, per_actor: int):
  return jax.tree.map(lambda x: np.asarray(x[index * per_actor : (index + 1) * per_actor]), actor)


def _join_round(rollouts: list[Rollout]):
  """Concatenates the actors' rollouts along the slot axis: ``(end, traj, stats)`` of the whole batch."""
  end = jax.tree.map(lambda *x: np.concatenate(x, axis=0), *[r.end for r in rollouts])
  traj = jax.tree.map(lambda *x: np.concatenate(x, axis=1), *[r.traj for r in rollouts])
  s = [r.stats for r in rollouts]
  stats = selfplay.RolloutStats(
    episodes=np.sum([x.episodes for x in s]).astype(np.int32),
    return_sum=np.sum([x.return_sum for x in s]).astype(np.float32),
    return_max=np.max([x.return_max for x in s]).astype(np.float32),
    length_sum=np.sum([x.length_sum for x in s]).astype(np.int32),
    reward_sum=np.sum([x.reward_sum for x in s]).astype(np.float32),
    root_value_sum=np.sum([x.root_value_sum for x in s]).astype(np.float32),
    reward_abs_max=np.max([x.reward_abs_max for x in s]).astype(np.float32),
    length_max=np.max([x.length_max for x in s]).astype(np.int32),
    truncations=np.sum([x.truncations for x in s]).astype(np.int32),
  )
  return end, traj, stats


def _learn_round(state, actor, traj, stats, *, network, optimizer, config):
  key, key_learn = jax.random.split(state.key)
  return learn_from_rollout(
    state.replace(key=key), actor, traj, stats, key_learn, network=network, optimizer=optimizer, config=config
  )


@functools.lru_cache(maxsize=8)
def _learn_fn(network, optimizer, config: MuZeroConfig):
  """Jitted ``learn(state, end, traj, stats)``, shared by runs of one setup (compiled once)."""
  donate = (0,) if jax.default_backend() != "cpu" else ()
  return jax.jit(
    functools.partial(_learn_round, network=network, optimizer=optimizer, config=config), donate_argnums=donate
  )


class _FanOut:
  """The driver's bookkeeping: requests, answers, restores, rounds."""

  def __init__(
    self, config, env, pool, state, *, num_actors, max_in_flight, max_restarts, actor_options, stall_timeout
  ):
    self.config, self.num_actors, self.max_in_flight = config, num_actors, max_in_flight
    self.max_restarts, self.stall_timeout = max_restarts, stall_timeout
    self.per_actor = config.num_envs // num_actors
    self.counters = Counters()
    self.version = 0
    self.params_ref = ray.put(jax.device_get(state.params))
    base_key = np.asarray(jax.random.fold_in(state.key, 0x5E1F), np.uint32)  # fresh stream per (re)start
    # Sent with every restore (not as a constructor argument: Ray rebuilds a restarted actor from those).
    self.pool_ref = ray.put(jax.device_get(pool))
    remote = ray.remote(SelfPlayActor).options(max_restarts=max_restarts, max_task_retries=0, **actor_options)
    self.slots = [
      _Slot(
        handle=remote.remote(i, config, env, base_key, int(state.iteration)),
        tip_state=_slice_actor(jax.device_get(state.actor), i, self.per_actor),
        tip_pos=0,
      )
      for i in range(num_actors)
    ]
    self.zombies: list = []  # requests of an earlier epoch: answers ignored, errors consumed
    for i in range(num_actors):
      self._restore(i)

  # ------------------------------------------------------------- requests
  def _restore(self, i: int) -> None:
    slot = self.slots[i]
    ref = slot.handle.restore.remote(slot.epoch, slot.tip_pos, slot.tip_state, [self.pool_ref])
    slot.outstanding.append((ref, "restore", slot.tip_pos))

  def _fill(self) -> None:
    for i, slot in enumerate(self.slots):
      if slot.restore_at is not None:
        if time.monotonic() < slot.restore_at:
          continue
        slot.restore_at = None
        self._restore(i)
      if any(kind == "restore" for _, kind, _ in slot.outstanding):
        continue  # requests wait until the actor holds the state (a restore may meet a restarting actor)
      while len(slot.pending) + slot.rollouts_requested() < self.max_in_flight:
        seq = slot.tip_pos + slot.rollouts_requested()
        ref = slot.handle.rollout.remote(slot.epoch, seq, self.version, [self.params_ref])
        slot.outstanding.append((ref, "rollout", seq))
      self.counters.max_buffered = max(self.counters.max_buffered, len(slot.pending) + slot.rollouts_requested())

  def publish(self, params) -> None:
    """A new parameter version for the next requests."""
    self.version += 1
    self.params_ref = ray.put(jax.device_get(params))

  # -------------------------------------------------------------- answers
  def _see_pid(self, i: int, pid: int) -> None:
    pids = self.counters.pids.setdefault(i, [])
    if pid not in pids:
      if pids:
        self.counters.restarts += 1
      pids.append(pid)

  def _recover(self, i: int, reason: str, *, died: bool = True, delay: float = 0.0) -> None:
    """The actor lost its state (died, or restarted between requests): new epoch, resend the tip.

    ``died=False`` (Ray reports the actor as restarting) is not counted
    against ``max_restarts``; the state is resent after ``delay`` seconds.
    """
    slot = self.slots[i]
    slot.failures += died
    limit = self.max_restarts + 1 if self.max_restarts >= 0 else 10  # deaths without a rollout in between
    if slot.failures > limit:
      raise RuntimeError(f"self-play actor {i} keeps failing ({reason}); max_restarts={self.max_restarts} exhausted")
    self.zombies.extend(ref for ref, _, _ in slot.outstanding)
    slot.outstanding.clear()
    slot.epoch += 1
    slot.restore_at = time.monotonic() + delay

  def _answer(self, i: int) -> None:
    slot = self.slots[i]
    ref, kind, seq = slot.outstanding.popleft()
    try:
      out = ray.get(ref)
    except ray.exceptions.RayActorError as err:
      if kind == "rollout":
        self.counters.lost_in_flight += 1
      restarting = isinstance(err, getattr(ray.exceptions, "ActorUnavailableError", ()))
      self._recover(i, _short(err), died=not restarting, delay=0.5 if restarting else 0.0)
      return
    if kind == "restore":
      self._see_pid(i, out["pid"])
      return
    self._see_pid(i, out.pid)
    if isinstance(out, NeedsState):
      self._recover(i, "restarted between requests")
      return
    slot.failures = 0
    self.counters.received_by_actor.setdefault(i, []).append(out.seq)
    self.counters.batches_received += 1
    self.counters.moves_received += out.traj.action.size
    self.counters.rollout_seconds += out.seconds
    if out.seq != slot.tip_pos:  # cannot happen with in-order actors; never learn across a gap
      self._drop(out)
      return
    slot.pending.append(out)
    slot.tip_state, slot.tip_pos = out.end, out.seq + 1

  def _drop(self, out: Rollout) -> None:
    self.counters.batches_dropped += 1
    self.counters.moves_dropped += out.traj.action.size

  def _reap_zombies(self) -> None:
    if not self.zombies:
      return
    ready, self.zombies = ray.wait(self.zombies, num_returns=len(self.zombies), timeout=0)
    for ref in ready:
      try:
        ray.get(ref)
      except ray.exceptions.RayActorError:
        self.counters.failed_requests += 1

  def next_round(self, stop_requested: Callable[[], bool] = lambda: False) -> list[Rollout]:
    """Blocks until every actor has a rollout waiting; returns one per actor (chain order).

    Raises :class:`~muzero_jax.driver.IterationAbandoned` within about a second of ``stop_requested()`` turning
    True while it waits (the rollouts that arrived stay buffered; none is learned from).
    """
    last = time.monotonic()
    while True:
      self._fill()
      if all(slot.pending for slot in self.slots):
        break
      if stop_requested():
        waiting = [i for i, slot in enumerate(self.slots) if not slot.pending]
        raise IterationAbandoned(f"stop requested while waiting for the rollouts of actor(s) {waiting}")
      heads = {slot.outstanding[0][0]: i for i, slot in enumerate(self.slots) if slot.outstanding}
      if heads:
        ready, _ = ray.wait(list(heads), num_returns=1, timeout=1.0)
      else:  # every actor waits to be sent its state again
        ready = []
        time.sleep(0.1)
      received = self.counters.batches_received
      for ref in ready:
        self._answer(heads[ref])
      self._reap_zombies()
      if self.counters.batches_received > received:
        last = time.monotonic()
      elif time.monotonic() - last > self.stall_timeout:
        raise RuntimeError(
          f"no self-play rollout arrived for {self.stall_timeout:.0f} s (are the actors' "
          f"resources available in the cluster? restarts so far: {self.counters.restarts})"
        )
    batch = [slot.pending.popleft() for slot in self.slots]
    for r in batch:
      lag = self.version - r.params_version
      self.counters.param_lag_sum += lag
      self.counters.param_lag_max = max(self.counters.param_lag_max, lag)
      self.counters.batches_learned += 1
      self.counters.moves_learned += r.traj.action.size
    self.counters.rounds += 1
    return batch

  def close(self) -> None:
    """Counts rollouts left unused and stops the actors (no restart)."""
    for slot in self.slots:
      while slot.pending:
        self._drop(slot.pending.popleft())
    for slot in self.slots:
      with contextlib.suppress(Exception):  # already gone, or Ray was shut down
        ray.kill(slot.handle, no_restart=True)


class _FanOutIterations:
  """The driver's :class:`~muzero_jax.driver.IterationSource`: one round of the actors, then learning here."""

  def __init__(self, trainer, env, pool, *, num_actors: int, fan_out_options: dict) -> None:
    self.description = f"muzero x{num_actors} actors"
    self._trainer, self._env, self._pool = trainer, env, pool
    self._num_actors, self._options = num_actors, fan_out_options
    # The rounds are learned in `learn_updates`'s scan whatever `learner_loop` says: its gradient (`patch` on a CPU).
    network = make_network(trainer.config, env.num_actions, env.observation_shape, learner_loop="scan")
    self.learner_network = network
    self._learn = _learn_fn(network, trainer.optimizer, trainer.config)
    self.fan: _FanOut | None = None
    self.counters = Counters()
    self._stop_requested: Callable[[], bool] = lambda: False

  def start(self, state: TrainState, stop_requested: Callable[[], bool]) -> None:
    self.fan = _FanOut(self._trainer.config, self._env, self._pool, state, num_actors=self._num_actors, **self._options)
    self.counters = self.fan.counters
    self._stop_requested = stop_requested

  def iteration(self, state: TrainState) -> tuple[TrainState, dict]:
    end, traj, stats = _join_round(self.fan.next_round(self._stop_requested))
    state, metrics = self._learn(state, end, traj, stats)
    self.fan.publish(state.params)
    return state, {**metrics, **self.counters.scalars()}

  def close(self) -> dict[str, float]:
    self.fan.close()
    return self.counters.scalars()


def missing_resources(actor_cpus: float, actor_gpus: float) -> list[str]:
  """What one actor asks for that no node of the Ray cluster has now, e.g. ``["1 GPU (the most a node has: 0)"]``;
  [] where some node can place it. Ray must be initialised."""
  nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
  short = []
  for name, need in (("CPU", actor_cpus), ("GPU", actor_gpus)):
    most = max((r.get(name, 0.0) for r in nodes), default=0.0)
    if need > most:
      short.append(f"{need:g} {name} (the most a node has: {most:g})")
  return short


def train_distributed(
  config: MuZeroConfig,
  env,
  env_params_pool,
  *,
  num_actors: int,
  logdir: str | None = None,
  checkpoint_dir: str | None = None,
  num_iterations: int = 100,
  callback: Callable[[TrainState, dict, Counters], bool | None] | None = None,
  state: TrainState | None = None,
  resume: bool = False,
  progress: bool = True,
  checkpoint_extra: dict | None = None,
  max_in_flight: int = 2,
  max_restarts: int = 3,
  actor_cpus: float = 1.0,
  actor_gpus: float = 0.0,
  actor_env: dict | None = None,
  stall_timeout: float = 600.0,
) -> FanOutResult:
  """Like :func:`muzero_jax.train`, with self-play on ``num_actors`` Ray actors.

  Ray must be initialised (:func:`init_ray`). One iteration is one round: one
  rollout of ``config.rollout_length`` steps from every actor (each plays
  ``config.num_envs / num_actors`` slots), then ``config.updates_per_iteration``
  learner updates in this process, so the counters, replay ratio, metrics,
  TensorBoard scalars and checkpoints are those of :func:`muzero_jax.train`
  (the same driver, :func:`muzero_jax.driver.run_iterations`); ``fanout/*``
  scalars are added.

  Args:
    config, env, env_params_pool, logdir, checkpoint_dir, num_iterations,
      state, resume, progress, checkpoint_extra: as in :func:`muzero_jax.train`
      (a checkpoint of either path resumes in either path).
    num_actors: self-play actors; must divide ``config.num_envs``.
    callback: ``callback(state, metrics, counters)`` after every round;
      returning True stops training early.
    max_in_flight: rollouts per actor requested or waiting to be learned from
      (bounds memory; parameters reach actors at most this many versions late).
    max_restarts: Ray restarts of a dead actor over the run (its state is resent
      each time); -1 for no limit.
    actor_cpus, actor_gpus: Ray resources of each actor (a GPU actor gets its
      own device; fractions share one).
    actor_env: extra environment variables for the actors (added to the
      driver's ``JAX_PLATFORMS``, ``XLA_PYTHON_CLIENT_*``, ``XLA_FLAGS``).
    stall_timeout: seconds without any answer before giving up.

  Returns:
    :class:`FanOutResult` with the final state and the :class:`Counters`.
  """
  if num_actors < 1 or config.num_envs % num_actors:
    raise ValueError(f"num_actors={num_actors} must be >= 1 and divide config.num_envs={config.num_envs}")
  if max_in_flight < 1:
    raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
  if not ray.is_initialized():
    raise RuntimeError("Ray is not initialised: call muzero_jax.distributed.init_ray() first")
  short = missing_resources(actor_cpus, actor_gpus)
  if short:  # a cluster may yet grow: said, not refused (Ctrl-C stops the wait: `_FanOut.next_round`)
    warnings.warn(
      f"no node of the Ray cluster can place an actor now: each asks for {', '.join(short)}; the actors wait "
      f"until such a node joins (up to stall_timeout, {stall_timeout:g} s)",
      RuntimeWarning,
      stacklevel=2,
    )
  trainer = make_train(config, env, env_params_pool)
  env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
  env_vars.update(actor_env or {})
  options = dict(
    max_in_flight=max_in_flight,
    max_restarts=max_restarts,
    actor_options=dict(num_cpus=actor_cpus, num_gpus=actor_gpus, runtime_env={"env_vars": env_vars}),
    stall_timeout=stall_timeout,
  )
  source = _FanOutIterations(trainer, env, env_params_pool, num_actors=num_actors, fan_out_options=options)
  state = run_iterations(
    trainer,
    env,
    source,
    logdir=logdir,
    checkpoint_dir=checkpoint_dir,
    num_iterations=num_iterations,
    callback=None if callback is None else lambda s, m: callback(s, m, source.counters),
    state=state,
    resume=resume,
    progress=progress,
    checkpoint_extra=checkpoint_extra,
  )
  return FanOutResult(state=state, counters=source.counters)
