"""Resumable searches: a journal of a search's queries, saved atomically as it goes (docs/design.md, Analyses that
survive).

Why a journal and not a snapshot of each method's state: every method but `exhaustive` is deterministic given
(space, budget, seed, options) and learns about the cube only through `Ledger` queries. So the answers it read are
its whole state: re-run from the start with the same answers, it makes the same choices (random draws included,
since its generator is seeded from the recorded seed) and arrives where it stopped. The journal records each query
(the input state's filters and step count, the action, and the answer the method reads: the observation, the next
`EnvState` and n_new); a resumed search runs its method from the start and the ledger answers from the journal while
the queries match (a query that differs is a `JournalMismatch` naming it), then goes on live. No method had to be
rewritten as a state machine, and a plug-in method (the `muzero` agent) is resumable without knowing it. What a
replay costs is the method's own thinking between queries (for the agent, one MCTS per step), not the group-bys.
`exhaustive` has no ledger; it records each column subset's findings as a chunk (`chunk`, `put_chunk`) and
a resumed run skips the subsets already done.

On disk (`directory`): `seg-NNNNNN.npz`, one per save, holding the queries and chunks recorded since the save before
(NumPy arrays only, read with `allow_pickle=False`; chunks as JSON text); and `journal.json`, the manifest: the run's
fingerprint, and every segment with its counts and BLAKE2b digest. A save writes the segment, then the manifest,
each to a temporary file that is fsynced and renamed over the target (`os.replace`); before the manifest, the state
the save extends is written as `journal.prev.json` (so some manifest is on disk at every moment, and a damaged one is
never copied forward). On load, an unreadable or missing manifest falls back to the previous one, and a segment that is
missing or fails its digest ends the journal there (later segments are dropped): either way with a
`JournalWarning`, and the run resumes from the last state that reads back whole. Saves happen every `every`
queries (or cohorts of `exhaustive`), at the end of the search, when a signal caught by `stop_on_signals`
asks the run to stop (it then raises `Interrupted`), and when the progress callback raises (the service's stop).

Cost (measured on this 2-core machine under other load, every 100 queries saved, compressed npz): on the 20,000-row
`mixed` demo (15 filter columns, observation 10 x 15 x 13) 480-600 bytes per query on disk and +0.45-0.5 ms per
query (about 10% of the 4.3-4.4 ms a query costs there); on a 6-column test table (observation 10 x 6 x 6, before small tables were padded to 8 columns) 170 bytes
and +0.25-0.33 ms per query. A resumed run replays its journal at 0.8-0.9 ms per query on the demo (the method's
own work between queries plus the digest and decode), a fifth of running the queries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from cube_env.environment.env import EnvState

FORMAT = 1
MANIFEST = "journal.json"
PREVIOUS = "journal.prev.json"
_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(EnvState))
_STOP = threading.Event()  # set by the handler of `stop_on_signals`


class JournalWarning(UserWarning):
  """A damaged or missing part of a journal was skipped; the run resumes from an earlier state."""


class JournalMismatch(RuntimeError):
  """A resumed search asked for a query other than the one the journal recorded at that position."""


class Interrupted(KeyboardInterrupt):
  """A signal asked the run to stop; the journal was saved first (the message says where)."""


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` whole or not at all, durably: a temporary file fsynced, then renamed over it (the
  directory's entry is fsynced by `fsync_dir`). The service stores uploaded tables with it too."""
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as handle:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
  os.replace(tmp, path)


def fsync_dir(directory: str) -> None:
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _digest(data: bytes) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint_arrays(*arrays) -> str:
  """BLAKE2b of the arrays' dtypes, shapes and bytes (e.g. a search space's params: its table and thresholds)."""
  h = hashlib.blake2b(digest_size=16)
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
  """Within the block, SIGINT and SIGTERM make every journal save and raise `Interrupted` at its next query.

  A second signal raises `KeyboardInterrupt` at once. Installed only in the main thread (a no-op elsewhere).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del frame
    if _STOP.is_set():
      raise KeyboardInterrupt(f"second signal {signal.Signals(signum).name}: stopped without saving")
    _STOP.set()

  old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  _STOP.clear()
  try:
    yield
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    _STOP.clear()


def check_stop(message: str) -> None:
  """Raises `Interrupted(message)` when a signal asked the run to stop (`stop_on_signals`): for the steps after a
  search, which asks at each query (a CLI audit: a Ctrl-C or SIGTERM during confirmation or the report was ignored,
  the run finishing with status 0)."""
  if _STOP.is_set():
    raise Interrupted(message)


def _signature(record: Mapping[str, np.ndarray]) -> tuple:
  return tuple((k, v.shape, v.dtype.str) for k, v in record.items())


class Journal:
  """The journal of one search in `directory` (see the module docstring); pass it as the method's `progress`.

  Args:
    directory: created if missing; an existing journal there is loaded (and must match `fingerprint`).
    fingerprint: JSON-able facts that fix the search (method, budget, seed, options, a digest of the space);
      a resumed run with other facts is refused, naming each field that differs.
    every: save after this many new queries (or exhaustive's cohorts).
    progress: called with the queries spent so far, like any method's progress. Where it raises (the service's
      recorded stop, a caller's own stop), what was recorded is saved before its exception goes on, so such a stop
      loses no query or chunk, as a signal's loses none (a save that fails then warns and does not mask it).

  Raises:
    ValueError: `every` < 1, or a journal in `directory` written for another run.
  """

  def __init__(self, directory: str, *, fingerprint: Mapping[str, Any], every: int = 100, progress=None):
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      raise ValueError(f"save_every must be a whole number of queries >= 1, got {every!r}")
    self.directory, self.every, self.progress = str(directory), every, progress
    self.fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
    os.makedirs(self.directory, exist_ok=True)
    self._segments: list[dict] = []
    self._replay: list[dict[str, np.ndarray]] = []
    self._chunks: dict[str, Any] = {}  # key -> {"cost": queries it took, "value": its JSON value}
    self._load()
    self.resumed_queries = len(self._replay)  # queries a resumed search replays instead of running
    self.resumed_chunks = len(self._chunks)
    self._chunk_cost = sum(c["cost"] for c in self._chunks.values())  # queries of the chunks recorded
    self._pos = 0
    self._pending: list[dict[str, np.ndarray]] = []
    self._pending_chunks: dict[str, Any] = {}
    self._pending_cost = 0
    self._next = 1 + max([_segment_number(n) for n in os.listdir(self.directory)] + [0])

  # -- loading -------------------------------------------------------------------------------------------------

  def _read_manifest(self) -> dict | None:  # the newest readable one of MANIFEST and PREVIOUS
    for name in (MANIFEST, PREVIOUS):
      path = os.path.join(self.directory, name)
      if not os.path.exists(path):
        if name == MANIFEST and os.path.exists(os.path.join(self.directory, PREVIOUS)):
          warnings.warn(f"journal {path} is missing; using {PREVIOUS}", JournalWarning, stacklevel=3)
        continue
      try:
        with open(path, encoding="utf-8") as handle:
          manifest = json.load(handle)
        if not _is_manifest(manifest):
          raise ValueError(f"not a format-{FORMAT} journal manifest")
      except (OSError, ValueError) as err:
        warnings.warn(
          f"journal {path} is unreadable ({err}); falling back to the previous manifest {PREVIOUS} if any",
          JournalWarning,
          stacklevel=3,
        )
        continue
      return manifest
    return None

  def _load(self) -> None:
    manifest = self._read_manifest()
    if manifest is None:
      return
    diff = [
      f"{k}={manifest['fingerprint'].get(k)!r} (this run: {self.fingerprint.get(k)!r})"
      for k in sorted(set(manifest["fingerprint"]) | set(self.fingerprint))
      if manifest["fingerprint"].get(k) != self.fingerprint.get(k)
    ]
    if diff:
      why = f"the search state in {self.directory} was saved by another run: {'; '.join(diff)}"
      if manifest["fingerprint"].get("space") != self.fingerprint.get("space"):  # `pipeline.search_fingerprint`
        why += (
          " (the table searched differs: its data file, columns or coding changed since the run was saved, or the"
          " run was saved by a version of cube_env that padded the table to other sizes)"
        )
      raise ValueError(why)
    for seg in manifest["segments"]:
      path = os.path.join(self.directory, seg["file"])
      try:
        with open(path, "rb") as handle:
          data = handle.read()
        if _digest(data) != seg["blake2b"]:
          raise ValueError("its digest does not match the manifest")
        records, chunks = _decode(data)
      except (OSError, ValueError, KeyError) as err:
        warnings.warn(
          f"journal segment {path} is damaged ({err}); resuming from the state saved before it "
          f"({_done(len(self._replay), len(self._chunks))})",
          JournalWarning,
          stacklevel=3,
        )
        if os.path.exists(path):
          os.replace(path, f"{path}.damaged")
        break
      self._replay.extend(records)
      self._chunks.update(chunks)
      self._segments.append(seg)

  # -- the search side -------------------------------------------------------------------------------------------

  def __call__(self, used: int) -> None:
    """`progress(used)`; where it raises, the recorded queries and chunks are saved before the exception goes on (a
    service stop raised here had dropped up to `every` queries, or an enumeration's chunk of any cost)."""
    if self.progress is None:
      return
    try:
      self.progress(used)
    except BaseException:
      try:
        self.save()
      except Exception as err:  # noqa: BLE001 (the caller's exception, JobStopped say, must go on as it was)
        message = f"the journal in {self.directory} could not be saved as the run stopped: {err}"
        warnings.warn(message, JournalWarning, stacklevel=2)
      raise

  @property
  def queries(self) -> int:
    """Queries recorded so far (replayed and new)."""
    return len(self._replay) + len(self._pending)

  def replay(self, state: EnvState, action: int):
    """The recorded answer (obs, next state, n_new) to this query, or None once the journal is used up.

    Raises:
      JournalMismatch: the search asks something else than what was recorded at this position.
    """
    if self._pos >= len(self._replay):
      return None
    rec = self._replay[self._pos]
    filters, t = np.asarray(state.filters), int(state.t)
    if not (np.array_equal(rec["in_filters"], filters) and int(rec["in_t"]) == t and int(rec["action"]) == action):
      raise JournalMismatch(
        f"query {self._pos + 1} of the journal in {self.directory} was action {int(rec['action'])} from filters "
        f"{rec['in_filters'].tolist()} at step {int(rec['in_t'])}; the resumed search asks action {action} from "
        f"{filters.tolist()} at step {t} (the method is not deterministic, or its code changed)"
      )
    self._pos += 1
    state = EnvState(**{f: jnp.asarray(rec[f"s_{f}"]) for f in _STATE_FIELDS})
    return rec["obs"], state, int(rec["n_new"])

  def record(self, state: EnvState, action: int, obs: np.ndarray, next_state: EnvState, n_new: int) -> None:
    """Appends one live query; saves every `every` of them and when a signal asked to stop."""
    rec = {
      "in_filters": np.asarray(state.filters),
      "in_t": np.asarray(state.t),
      "action": np.asarray(action, np.int32),
      "obs": np.asarray(obs),
      "n_new": np.asarray(n_new, np.int32),
    }
    rec.update({f"s_{f}": np.asarray(getattr(next_state, f)) for f in _STATE_FIELDS})
    self._pending.append(rec)
    self._pending_cost += 1
    self._maybe_save()

  def chunk(self, key: str) -> Any | None:
    """The value recorded for `key` (a JSON-able chunk of exhaustive's work), or None."""
    entry = self._chunks.get(key, self._pending_chunks.get(key))
    return None if entry is None else entry["value"]

  def put_chunk(self, key: str, value: Any, *, cost: int = 1) -> Any:
    """Records a finished chunk (JSON-able) that cost `cost` queries; returns it as stored (read back from JSON).

    `progress` hears the queries of every chunk recorded so far (resumed ones included).
    """
    stored = json.loads(json.dumps(value))
    self._pending_chunks[key] = {"cost": int(cost), "value": stored}
    self._pending_cost += int(cost)
    self._chunk_cost += int(cost)
    self(self._chunk_cost)
    self._maybe_save()
    return stored

  def _maybe_save(self) -> None:
    if self._pending_cost >= self.every:
      self.save()
    if _STOP.is_set():
      self.save()
      raise Interrupted(
        f"stopped by a signal after {_done(self.queries, len(self._chunks))}; the search state is saved in "
        f"{self.directory}"
      )

  # -- saving ------------------------------------------------------------------------------------------------------

  def _manifest(self, segments: list[dict], queries: int, chunks: int, chunk_queries: int) -> bytes:
    manifest = {"format": FORMAT, "fingerprint": self.fingerprint, "queries": queries, "chunks": chunks}
    manifest["chunk_queries"] = chunk_queries  # the queries the chunks cost (`saved_queries`)
    return json.dumps({**manifest, "segments": segments}, indent=1).encode()

  def save(self) -> None:
    """Writes what was recorded since the last save as a new segment, then the manifest (both atomic)."""
    if not self._pending and not self._pending_chunks and self._segments:
      return
    name = f"seg-{self._next:06d}.npz"
    data = _encode(self._pending, self._pending_chunks)
    write_atomic(os.path.join(self.directory, name), data)
    seg = {"file": name, "queries": len(self._pending), "chunks": len(self._pending_chunks), "blake2b": _digest(data)}
    self._next += 1
    path, previous = os.path.join(self.directory, MANIFEST), os.path.join(self.directory, PREVIOUS)
    saved_cost = self._chunk_cost - sum(c["cost"] for c in self._pending_chunks.values())  # before this save
    if self._segments:  # the state this save extends (what loaded or was saved whole), so a manifest is always there
      write_atomic(previous, self._manifest(self._segments, len(self._replay), len(self._chunks), saved_cost))
    chunks = len(self._chunks) + len(self._pending_chunks)
    new = self._manifest(self._segments + [seg], self.queries, chunks, self._chunk_cost)
    write_atomic(path, new)
    fsync_dir(self.directory)
    self._segments.append(seg)
    self._replay.extend(self._pending)
    self._pos += len(self._pending)
    self._chunks.update(self._pending_chunks)
    self._pending, self._pending_chunks, self._pending_cost = [], {}, 0


def saved_queries(directory: str) -> int:
  """Queries the newest readable manifest in `directory` says are saved, a walk's or an enumeration's chunks' (an
  audit: a resumed enumeration's progress fell from 598 to 0); 0 without one; digests not checked."""
  for name in (MANIFEST, PREVIOUS):
    try:
      with open(os.path.join(directory, name), encoding="utf-8") as handle:
        manifest = json.load(handle)
      return int(manifest.get("queries", 0)) + int(manifest.get("chunk_queries", 0))
    except (OSError, ValueError, AttributeError):
      continue
  return 0


def in_chain(progress, kind: type):
  """The first `kind` in a chain of progress wrappers (each holds the next as `.progress`), or None."""
  for _ in range(16):
    if progress is None or isinstance(progress, kind):
      return progress
    progress = getattr(progress, "progress", None)
  return None


def journal_of(progress) -> Journal | None:
  """The first `Journal` in a chain of progress wrappers (`in_chain`), or None.

  So a method that wraps its progress (a time limit, `Anytime`, a plug-in's own) still journals its queries.
  """
  return in_chain(progress, Journal)


def clear(directory: str) -> int:
  """Removes the journal files in `directory` (a fresh run there starts over); returns how many were removed."""
  if not os.path.isdir(directory):
    return 0
  owned = (MANIFEST, PREVIOUS, f"{MANIFEST}.tmp", f"{PREVIOUS}.tmp")
  names = [n for n in os.listdir(directory) if n in owned or _segment_number(n)]
  for name in names:
    os.remove(os.path.join(directory, name))
  return len(names)


def _done(queries: int, chunks: int) -> str:
  """What a journal holds, in words: its queries, and the column subsets `exhaustive` finished, where there are any
  (a large-table audit: "(0 chunks)" meant nothing to a reader)."""
  return f"{queries} queries" + (f" and {chunks} column subsets of the exhaustive search" if chunks else "")


def _segment_number(name: str) -> int:
  if name.startswith("seg-") and name[4:10].isdigit():
    return int(name[4:10])
  return 0


def _encode(records: list[dict[str, np.ndarray]], chunks: Mapping[str, Any]) -> bytes:
  """One segment: runs of records with equal shapes stacked as `b{j}.{field}` arrays; chunks as JSON bytes."""
  arrays: dict[str, np.ndarray] = {}
  runs: list[list[dict]] = []
  for rec in records:
    if runs and _signature(runs[-1][0]) == _signature(rec):
      runs[-1].append(rec)
    else:
      runs.append([rec])
  for j, run in enumerate(runs):
    for field in run[0]:
      arrays[f"b{j:04d}.{field}"] = np.stack([r[field] for r in run])
  arrays["chunks"] = np.frombuffer(json.dumps(dict(chunks)).encode(), np.uint8)
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  return buf.getvalue()


def _decode(data: bytes) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
  with np.load(io.BytesIO(data), allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  chunks = json.loads(arrays.pop("chunks").tobytes().decode())
  blocks: dict[str, dict[str, np.ndarray]] = {}
  for key, value in arrays.items():
    block, field = key.split(".", 1)
    blocks.setdefault(block, {})[field] = value
  records = []
  for block in sorted(blocks):
    fields = blocks[block]
    n = len(next(iter(fields.values())))
    records.extend({f: v[i] for f, v in fields.items()} for i in range(n))
  return records, chunks


def _is_manifest(manifest) -> bool:
  """`manifest` (parsed JSON) has the shape `Journal` writes: the format, a fingerprint mapping, and segments that
  each name their file and digest (a valid JSON file of another shape is damage too, so the previous one is read)."""
  return (
    isinstance(manifest, dict)
    and manifest.get("format") == FORMAT
    and isinstance(manifest.get("fingerprint"), dict)
    and isinstance(manifest.get("segments"), list)
    and all(
      isinstance(seg, dict) and isinstance(seg.get("file"), str) and isinstance(seg.get("blake2b"), str)
      for seg in manifest["segments"]
    )
  )
