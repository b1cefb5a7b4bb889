"""Discovery jobs on a real queue: RQ on Redis, one directory per job, results cached by content and settings.

* Cache: a job's id is its cache key, a digest of the table's content hash, the job's settings and the server's
  agent (`cache_key`). Submitting what was submitted before returns that job: finished, its results at once;
  queued or running, the same job; failed, stopped or canceled, a fresh run (which resumes its journal).
* No pickle of client data: the queue uses RQ's `JSONSerializer`, and the job's only argument is the path of the
  directory the server made for it (`jobs/<id>/`: `spec.json` written by the server from the checked settings, the
  table stored by content hash under `tables/`). The job writes `state/` (the search journal,
  `cube_env.discovery.journal`) and `report/` (findings.json, findings.csv, report.html by `experiments.report`,
  which blank every count under the small-cell limit and escape every value in the HTML; then `finished.json`, the
  run's outcome: a job run again with it there keeps its report).
* Progress: the job keeps `queries`, `budget`, `started` in RQ's job meta (saved at most every 0.5 s).
* Abandoned jobs: while a job runs it holds a lease in Redis (`cube:lease:<id>`, `lease_seconds` long, refreshed
  by a thread three times per lease; taken by the worker before it forks the job's work horse, for three lease
  periods, so that a slow start-up is not taken for a death). A worker that dies (SIGKILL, a lost machine) stops refreshing it; every
  `DiscoveryWorker`, on start-up and then every `lease_seconds` while idle, requeues (at the front) each started job
  whose lease lapsed (`requeue_abandoned`), and the worker that takes it resumes the search from its journal, to
  the findings of an uninterrupted run. RQ's own abandoned-job handling would do the same but only after its
  heartbeat lapses (a minute or more), and it fails the job instead unless retries were asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker, get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

import cube_env
from cube_env.discovery import journal
from experiments import (
  agent,  # noqa: F401 (importing it registers the muzero method with cube_env)
  report,
)
from experiments.service.spec import JobSpec, ServiceConfig
from experiments.service.tables import content_hash, parse_table

LEASE_KEY = "cube:lease:{}"
STOP_KEY = "cube:stop:{}"  # set by `cancel` for any active job; its lease thread re-sends the stop, and the job
# itself ends at its next progress or stage while it is set (`_honour_stop`)
STOP_KEY_SECONDS = 3600
STARTUP_LEASES = 3  # the lease a worker takes for a job it starts lasts this many lease periods (the horse's start-up)
ACTIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
REPORT_FILES = ("findings.json", "findings.csv", "report.html")
FINISHED_FILE = "finished.json"  # in a job's report folder, written last: the run's outcome (`_finished`); not served
LOST_STAGE = "waiting for a worker (the one running it stopped; the next resumes it from its journal)"
OUTDATED_STAGE = "done by another version of the service: its report is not served (submit the job again)"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)  # what redis-py raises when the server cannot be reached
MAX_REQUEUES = 3  # times a job whose worker died is put back (`requeue_abandoned`)
RQ_ABANDONED = "Moved to FailedJobRegistry, due to AbandonedJobError"  # how RQ 2-3's clean-up fails a dead worker's job


def connect(config: ServiceConfig) -> Redis:
  return Redis.from_url(config.redis_url)


def job_queue(config: ServiceConfig, connection: Redis) -> Queue:
  return Queue(config.queue, connection=connection, serializer=JSONSerializer)


# Raised whenever what a finished job's files show changes (2: a rare outcome's small event counts hidden; 3: small
# counts that came back by one subtraction, within a cohort's tests or from its shown children, hidden; 4: one group's
# count under two measures too, the relative difference's interval, why a row is blank, the reports' new text; 5:
# formula-like CSV cells after an apostrophe, every setting and why the search ended in the summary), so a result
# cached before is not served again: its job id no longer matches and the analysis runs anew.
# 6: a group's sub-cohort against its parent's test of the group, an adjusted run's exploration-half events, a
# rate's relative interval at -100%.
# 7: sums about a robust centre, no mean or ratio where none means one, quoted labels, codes with leading zeros,
# unnamed empty columns left out (other splits), the split's own rule.
# 8: each job's format recorded where the server asks for it (spec.json) and where the worker wrote it (the job's
# meta, `written_format`), so the API serves no report that a worker of another version wrote (an upgrade audit: an
# old worker beside a new API wrote old reports under new ids, served as cached); measures and binned columns
# written with leading zeros read as numbers.
# 9: p-values below 1e-300 written "< 1e-300" in findings.json and findings.csv (they wrote 0.0), a z at the cap
# shown "≥ 40", the exploration's newness threshold in the summary, a mean's side interval by Student's t; and the
# settings every `DiscoveryConfig` field (a job's spec.json records the table's content hash, checked by the worker).
# 10: findings.csv/json gain `smd`; the report's words follow the run's confirmation checks and say how an adjusted
# rate's relative difference is made; control characters written as escapes; a table's own 'OTHER' and 'MISSING'
# kept or joined (refused before), categories read in Unicode NFC, a two-valued measure never on the log scale, and
# the fold note without OTHER's share.
REPORT_FORMAT = 10
FORMAT_KEY = "report_format"  # spec.json: the format the server asked for; the job's meta: the one its worker wrote


def written_format(job: Job, meta: dict | None = None) -> int | None:
  """The report format a finished job's worker wrote its files in (None: a version before 8, which recorded none);
  from `meta` where the caller read it already."""
  value = (job.get_meta() if meta is None else meta).get(FORMAT_KEY)
  return value if isinstance(value, int) and not isinstance(value, bool) else None


def outdated(job: Job, meta: dict | None = None) -> str | None:
  """Why a finished job's report is not served (its worker wrote another `REPORT_FORMAT`: another version's rules
  on small counts and statistics), or None where it is current."""
  written = written_format(job, meta)
  if written == REPORT_FORMAT:
    return None
  shown = written if written is not None else "unrecorded"
  if written is not None and written > REPORT_FORMAT:  # a worker ahead of this API: resubmitting would not help
    return (
      f"job {job.id}'s report was written by a later version of the service (report format {shown}; this server "
      f"serves {REPORT_FORMAT}), so it is not served: upgrade the API to its workers' version"
    )
  return (
    f"job {job.id}'s report was written by an earlier version of the service (report format {shown}; this server "
    f"serves {REPORT_FORMAT}), whose rules on small counts and statistics differ, so it is not served: submit the "
    "table and settings again for a report under this version's rules, and purge this job"
  )


def cache_key(table_hash: str, spec: JobSpec, agent_dir: str | None) -> str:
  """The job id of a (table content, settings, agent, `REPORT_FORMAT`) tuple: equal inputs, equal id (a cached result)."""
  text = "\n".join((table_hash, spec.to_json(), agent_dir or "", f"report format {REPORT_FORMAT}"))
  return "d" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def job_dir(config: ServiceConfig, job_id: str) -> str:
  return os.path.join(config.data_dir, "jobs", job_id)


def fetch(connection: Redis, job_id: str) -> Job | None:
  try:
    return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
  except NoSuchJobError:
    return None


class JobStopping(RuntimeError):
  """A submission of a job that is being stopped (`cancel`): it would end stopped, not run again."""

  def __init__(self, job_id: str):
    super().__init__(f"job {job_id} is being stopped; submit it again once its status is stopped")
    self.job_id = job_id


def submit(
  config: ServiceConfig, connection: Redis, spec: JobSpec, table_hash: str, table_path: str, source: str
) -> tuple[str, bool]:
  """Queues the job (or finds it); returns (job id, whether its results were already there).

  Under a Redis lock per job id (`SUBMIT_LOCK`), so that identical submissions at the same moment, from one API
  process or several, find one job: checked and queued apart, each would queue it (RQ then runs it twice, on one
  journal) and race on its `spec.json`.
  """
  job_id = cache_key(table_hash, spec, config.agent)
  with held(connection, SUBMIT_LOCK.format(job_id), f"job {job_id}"):  # held past its time-out: queued all the same
    return _submit(config, connection, spec, job_id, table_hash, table_path, source)


class SubmitBusy(RuntimeError):
  """Another request on the same job (a submission, a purge) or table held its lock past `SUBMIT_LOCK_SECONDS` (a
  stalled server); `what` names it ("job ID", "table HASH")."""

  def __init__(self, what: str):
    super().__init__(f"{what}: another request on it is still under way; try again in a minute")
    self.what = what


SUBMIT_LOCK = "cube:submit:{}"  # held while a submission checks and queues its job
SUBMIT_LOCK_SECONDS = 30  # a submission takes milliseconds; a holder that died frees the lock after this


def _submit(
  config: ServiceConfig, connection: Redis, spec: JobSpec, job_id: str, table_hash: str, table_path: str, source: str
) -> tuple[str, bool]:
  old = fetch(connection, job_id)
  directory = job_dir(config, job_id)
  if old is not None:
    status = old.get_status()
    stale = status == JobStatus.FINISHED and outdated(old) is not None
    if (
      status == JobStatus.FINISHED
      and not stale
      and all(os.path.exists(os.path.join(directory, "report", f)) for f in REPORT_FILES)
    ):
      return job_id, True
    if status in ACTIVE:
      if connection.exists(STOP_KEY.format(job_id)):  # stopping: it would end stopped, and this submission be lost
        raise JobStopping(job_id)
      return job_id, False
    with record_deletion(connection, old) as deletion:  # RecordBusy where RQ cannot remove it now: nothing removed
      if stale:  # a worker of another version wrote them: run afresh, not from its journal
        for part in ("state", "report"):
          shutil.rmtree(os.path.join(directory, part), ignore_errors=True)
      deletion.execute()
  connection.delete(STOP_KEY.format(job_id))  # a fresh run: an earlier run's stop request is not for it
  os.makedirs(directory, exist_ok=True)
  record = {
    "spec": json.loads(spec.to_json()),
    "table": os.path.abspath(table_path),
    "table_hash": table_hash,  # `tables.content_hash` of its bytes: the worker checks them (`run_job`)
    "source": source,
    "agent": config.agent,
    "save_every": config.save_every,
    "lease_seconds": config.lease_seconds,
    "submitted": time.time(),
    FORMAT_KEY: REPORT_FORMAT,
  }
  # Whole and durable before the job is queued: a spec.json a crash left unreadable made the next purge's sweep take
  # its job's stored table for an orphan (an audit).
  journal.write_atomic(os.path.join(directory, "spec.json"), json.dumps(record, indent=1).encode())
  journal.fsync_dir(directory)
  job_queue(config, connection).enqueue(
    run_job,
    os.path.abspath(directory),
    job_id=job_id,
    job_timeout=config.job_timeout,
    result_ttl=-1,  # results are the cache: kept until the job is deleted
    meta={
      "budget": spec.budget,
      "time_limit": spec.time_limit,  # the search's seconds at most: `eta_s` never runs past them
      "method": spec.method,
      "queries": 0,
      "submitted": record["submitted"],
      "stage": "queued",
    },
  )
  return job_id, False


class JobActive(RuntimeError):
  """A purge of a job that is queued or running (`purge`): it must be stopped first."""

  def __init__(self, job_id: str, status: str):
    super().__init__(
      f"job {job_id} is {status}: stop it first (DELETE /jobs/{job_id}), then purge it once its status is stopped"
    )
    self.job_id = job_id


TABLE_LOCK = "cube:table:{}"  # held while a stored table is named by a new job (the API) or removed (`sweep_tables`)


@contextlib.contextmanager
def held(connection: Redis, key: str, what: str):
  """Holds the Redis lock `key` (SubmitBusy naming `what` when another holder keeps it past its time-out)."""
  lock = connection.lock(key, timeout=SUBMIT_LOCK_SECONDS, blocking_timeout=SUBMIT_LOCK_SECONDS)
  if not lock.acquire():
    raise SubmitBusy(what)
  try:
    yield
  finally:
    with contextlib.suppress(LockError):  # held past its timeout (a stalled disk)
      lock.release()


def table_lock(connection: Redis, table_path: str):
  """The lock under which a stored table is named by a job or removed (`TABLE_LOCK`): the API stores an upload and
  queues its job under it, `purge` checks that no job names a table and removes it under it, so a table is never
  removed between its upload and its job's `spec.json`."""
  name = os.path.basename(table_path)
  return held(connection, TABLE_LOCK.format(name), f"table {name.split('.')[0]}")


def purge(config: ServiceConfig, connection: Redis, job_id: str) -> dict[str, Any]:
  """Removes a job that has ended (finished, failed, stopped or canceled): its directory (settings, search journal
  with the raw statistics, report), its record in Redis, and its stored table unless another job's settings name
  it. Returns {"id", "was" (its status, "gone" for a directory whose record is gone), "table_removed"}. Health data
  is kept no longer than the analyst wants: nothing else removes a job's files.

  Under the job's submission lock, which `requeue_abandoned` takes too, so that neither an identical submission
  nor a worker's requeue of a job a dead worker left (`failed` by RQ's clean-up, removed rather than resumed)
  interleaves with it. The record's removal is made first (`record_deletion`: where RQ refuses it, RecordBusy, and
  nothing is removed), then the files go, `spec.json` last, then the record, in one transaction: a purge that fails
  on the files (a disk error) leaves the record, and the next purge finishes; a directory without a record (a Redis
  that lost it) is purged too. The table goes by `sweep_tables` (every stored table no job names), so one whose
  removal failed goes with the next purge of any job. A recorded stop (`STOP_KEY`) is left to expire: it is what
  stops a run a worker started just before a cancel.

  Raises:
    KeyError: no such job or directory. JobActive: it is queued or running. SubmitBusy: a lock held past its
    time-out. RecordBusy: RQ cannot remove the record now (nothing is removed). OSError: the files could not be
    removed (the record stays).
  """
  directory = job_dir(config, job_id)
  with held(connection, SUBMIT_LOCK.format(job_id), f"job {job_id}"):
    job = fetch(connection, job_id)
    if job is None and not os.path.isdir(directory):
      raise KeyError(job_id)
    status = job.get_status() if job is not None else None
    if status in ACTIVE:
      raise JobActive(job_id, status_text(status))
    table = _named_table(directory)
    # RQ's refusal to remove the record comes before the files go (an audit: a killed worker's job, its files removed
    # and its record kept, stayed "finished" with no findings).
    deletion = record_deletion(connection, job) if job is not None else connection.pipeline()
    with deletion:  # a removal of the files that fails drops the transaction (the record stays)
      _remove_job_dir(directory)
      deletion.delete(LEASE_KEY.format(job_id))
      deletion.execute()
  swept = sweep_tables(config, connection)
  removed = table is not None and os.path.basename(table) in swept
  return {"id": job_id, "was": status_text(status) if status is not None else "gone", "table_removed": removed}


class RecordBusy(RuntimeError):
  """A job's record that RQ could not remove (`record_deletion`), even with its dead runs' entries cleared; nothing
  was removed, and the request can be sent again."""

  def __init__(self, job_id: str, err: Exception):
    super().__init__(
      f"job {job_id}: its record could not be removed now (RQ: {err}); nothing was removed: try again in a minute"
    )
    self.job_id = job_id


RECORD_TRIES = 3  # `record_deletion`'s tries: a dead run's execution may expire between one and the next


def record_deletion(connection: Redis, job: Job) -> Pipeline:
  """A Redis transaction (not yet executed: `execute()` it, or `reset()` it to drop it) that removes the job's record
  as RQ's `Job.delete` does, made once the job's dead runs are cleared from its execution registry
  (`_clear_dead_executions`).

  RQ 3 keeps a run's entry in the job's execution registry 60 s past the TTL of the run's own hash; its `Job.delete`
  reads every entry's hash and raises ValueError ("Execution ... not found in Redis") for one that expired, so for a
  minute or two after a worker was SIGKILLed its job could be neither purged nor submitted again (a cold audit: a
  bare 500, after the purge had removed the job's files). RQ reads those hashes while the transaction is made, so a
  record it cannot remove is refused (RecordBusy) before anything is written or the caller removes anything else.

  Raises:
    RecordBusy: RQ still refused after `RECORD_TRIES` tries.
  """
  for _ in range(RECORD_TRIES):
    _clear_dead_executions(connection, job)
    deletion = connection.pipeline()
    try:
      job.delete(pipeline=deletion)
      return deletion
    except ValueError as err:  # an execution's hash expired after it was checked: cleared at the next try
      deletion.reset()
      refused = err
  raise RecordBusy(job.id, refused)


def _clear_dead_executions(connection: Redis, job: Job) -> list[str]:
  """Removes from the job's execution registry (and its queue's started registry) every run whose execution hash is
  gone, as RQ removes a run that ended (`Execution.delete`); returns their ids. Such a run's worker died (its hash
  expired with the worker's heartbeat); RQ would drop the entry itself 60 s later. The dead worker's own index of its
  runs is not touched (its name is in the expired hash; RQ lets that index expire with the worker)."""
  registry = job.execution_registry
  dead = []
  for entry in connection.zrange(registry.key, 0, -1):
    execution = Execution(entry.decode() if isinstance(entry, bytes) else entry, job.id, connection)
    if not connection.exists(execution.key):
      dead.append(execution)
  if dead:
    with connection.pipeline() as pipe:
      for execution in dead:
        execution.delete(job=job, pipeline=pipe)
      pipe.execute()
  return [execution.id for execution in dead]


def _remove_job_dir(directory: str) -> None:
  """Removes a job's directory with its `spec.json` last, so that a removal that fails midway (a disk error)
  leaves the file that names the job's table, and the next purge finds it (a review: the table was left for good)."""
  if not os.path.isdir(directory):
    return
  for entry in os.scandir(directory):
    if entry.name != "spec.json":
      shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.remove(entry.path)
  spec = os.path.join(directory, "spec.json")
  if os.path.exists(spec):
    os.remove(spec)
  os.rmdir(directory)


def sweep_tables(config: ServiceConfig, connection: Redis) -> set[str]:
  """Removes every stored table that no job's `spec.json` names, each checked and removed under its table lock
  (`table_lock`, which an upload holds until its job's settings name the table); returns their file names. A purge
  calls it, so a table that an earlier purge failed to remove, or an upload whose submission was refused, goes
  too. Names are compared by file name: a data directory given by another path names a table alike."""
  stored = os.path.join(config.data_dir, "tables")
  named = _named_tables(config)  # once; a table it names is kept, one it does not is checked again under its lock
  removed = set()
  for name in sorted(os.listdir(stored)) if os.path.isdir(stored) else []:
    if name.endswith(".tmp"):  # an upload being written (`tables.store_table`), or one a crash left
      _sweep_stale_copy(connection, os.path.join(stored, name))
      continue
    if name in named:
      continue
    with table_lock(connection, name):
      path = os.path.join(stored, name)
      if name not in _named_tables(config) and os.path.exists(path):
        os.remove(path)
        removed.add(name)
  return removed


STALE_COPY_SECONDS = 3600  # a half-written upload older than this was left by a crash (writing one takes seconds)


def _sweep_stale_copy(connection: Redis, path: str) -> None:
  """Removes a table's temporary copy (`<table>.tmp`) that is `STALE_COPY_SECONDS` old, under its table's lock (an
  upload writes it holding the lock): a crash while a table was stored left a copy of health data that no purge
  removed (a service audit)."""

  def stale() -> bool:
    with contextlib.suppress(FileNotFoundError):
      return time.time() - os.stat(path).st_mtime > STALE_COPY_SECONDS
    return False

  if not stale():  # an upload being written: its lock is not waited for (a review: a purge then waited 30 s)
    return
  with table_lock(connection, path[: -len(".tmp")]), contextlib.suppress(FileNotFoundError):
    if stale():
      os.remove(path)


def _named_tables(config: ServiceConfig) -> set[str]:
  """The file names of the stored tables that jobs' `spec.json` name."""
  jobs_dir = os.path.join(config.data_dir, "jobs")
  others = os.listdir(jobs_dir) if os.path.isdir(jobs_dir) else []
  return {os.path.basename(t) for t in (_named_table(os.path.join(jobs_dir, o)) for o in others) if t}


def _named_table(directory: str) -> str | None:
  """The stored table a job directory's `spec.json` names (None without one)."""
  try:
    with open(os.path.join(directory, "spec.json"), encoding="utf-8") as handle:
      return os.path.abspath(json.load(handle)["table"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def cancel(connection: Redis, job_id: str) -> str:
  """Cancels a queued job or stops a running one (RQ's stop command); returns the status it had.

  RQ's stop command is a message to the job's worker that the worker ignores unless it is running that job at
  that moment (a job just dequeued, or just started, can miss it), and that no one acts on once the worker died
  alone (its work horse runs on). So a running job's stop is also recorded (`STOP_KEY`): the job re-sends the
  command from its lease thread, and ends itself, stopped, at its next progress or stage (`_honour_stop`). A
  queued job's stop is recorded too: a worker may have taken it off the queue a moment before
  RQ's cancel marks it canceled (or mark it started just before RQ's cancel, which goes ahead), and then runs it
  regardless; the record makes that run stop itself. Not closed: a resubmission in the instant between RQ's cancel
  and such a worker starting the job clears the record (`submit`), and the job runs twice on one journal."""
  job = fetch(connection, job_id)
  if job is None:
    raise KeyError(job_id)
  status = job.get_status()
  if status in ACTIVE:
    connection.set(STOP_KEY.format(job_id), 1, ex=STOP_KEY_SECONDS)
    if _lost(job, status, job.get_meta()):
      _stop_lost(connection, job_id)
    with contextlib.suppress(InvalidJobOperation):  # not yet stoppable, or canceled meanwhile by another request
      if status == JobStatus.STARTED:
        send_stop_job_command(connection, job_id, serializer=JSONSerializer)
      else:
        job.cancel()
  return status_text(status)


def _stop_lost(connection: Redis, job_id: str) -> bool:
  """Marks stopped a started job that no worker holds (its lease lapsed: its worker died), as RQ marks a job its
  worker stopped, under the job's submission lock (which a worker's requeue takes too). No worker would act on the
  stop until one took the job back, an hour at most while the stop is recorded (an upgrade audit: the stop of such
  a job answered "started", and its purge 409, with no worker alive). Returns whether it did."""
  with held(connection, SUBMIT_LOCK.format(job_id), f"job {job_id}"):
    job = fetch(connection, job_id)
    if job is None or job.get_status() != JobStatus.STARTED or connection.exists(LEASE_KEY.format(job_id)):
      return False
    queue = Queue(job.origin, connection=connection, serializer=JSONSerializer)
    members = [m for m in connection.zrange(queue.started_job_registry.key, 0, -1) if _entry_id(m) == job_id]
    if members:
      connection.zrem(queue.started_job_registry.key, *members)
    job.meta["ended"] = job.meta.get("seen") or time.time()  # its time stops at its last progress
    job.save_meta()
    job.set_status(JobStatus.STOPPED)
    queue.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string="stopped while no worker held it")
    return True


def _entry_id(entry: bytes | str) -> str:
  """The job id of a started registry's entry (RQ 2-3 write "ID:EXECUTION")."""
  entry = entry.decode() if isinstance(entry, bytes) else entry
  return entry.split(":", 1)[0]


def status_text(status: JobStatus | str) -> str:
  """A job status as the API writes it ("failed", not "JobStatus.FAILED")."""
  return str(getattr(status, "value", status))


def job_status(job: Job) -> dict[str, Any]:
  """What the API shows of a job: status, progress, error.

  Progress: the part of the run under way (`stage`: "queued", then `run_discovery`'s "preparing", "searching" and
  "confirming", then "writing the report" and "done"; a failed or stopped job keeps the part it stopped in), the
  queries of the budget spent (a resumed search's count starts at its journal's, never lower), seconds elapsed in
  this attempt (to its last progress once it failed or stopped, or to when RQ ended it if it had none; a job a dead
  worker left counts again from its resumption), and `eta_s`, the seconds the search's queries left should take at its pace since its first query
  (whose time is mostly compilation; null before a second query and outside the search: preparing and
  confirming take seconds to a minute on large tables). A started job whose worker died (its lease lapsed) shows
  `LOST_STAGE` until a worker takes it back, its seconds stopped at its last progress and no `eta_s`."""
  status = job.get_status()
  meta = job.get_meta()
  queries, budget = int(meta.get("queries", 0)), int(meta.get("budget", 0))
  out: dict[str, Any] = {
    "id": job.id,
    "status": status_text(status),
    "method": meta.get("method"),
    "progress": {"stage": meta.get("stage"), "queries": queries, "budget": budget, "elapsed_s": None, "eta_s": None},
  }
  started = meta.get("started")
  lost = _lost(job, status, meta)
  if lost:
    out["progress"]["stage"] = LOST_STAGE
  if started is not None:
    end = meta.get("ended")
    if end is None:  # still running; a job that failed, stopped or waits again counts to its last progress
      end = time.time() if status == JobStatus.STARTED and not lost else meta.get("seen", _ended(job, started))
    elapsed = max(0.0, end - started)
    out["progress"]["elapsed_s"] = round(elapsed, 3)
    first_queries, first_at = meta.get("paced_from") or (queries, end)
    done = queries - int(first_queries)
    if status == JobStatus.STARTED and not lost and meta.get("stage") == "searching" and done > 0 and budget > queries:
      eta = max(0.0, end - first_at) / done * (budget - queries)
      limit, since = meta.get("time_limit"), meta.get("searching_since")
      if limit is not None and since is not None:  # the search stops at its time limit whatever its pace (an audit)
        eta = min(eta, max(0.0, float(limit) - (end - since)))
      out["progress"]["eta_s"] = round(eta, 1)
    elif status == JobStatus.FINISHED:
      out["progress"]["eta_s"] = 0.0
  if status == JobStatus.FINISHED and outdated(job, meta) is not None:
    out["progress"]["stage"] = OUTDATED_STAGE
  if status == JobStatus.FAILED:
    result = job.latest_result()
    # The error's last line, with any small count ("3 rows") hidden: the small-cell rule holds in errors too.
    out["error"] = cube_env.redact_counts(_last_line(result.exc_string if result else ""), cube_env.SMALL_CELL)
  return out


def _lost(job: Job, status: JobStatus, meta: dict) -> bool:
  """A started job whose lease lapsed has lost its worker: it waits for one to take it back (`requeue_abandoned`)."""
  return (
    status == JobStatus.STARTED
    and meta.get("started") is not None
    and meta.get("ended") is None  # not one that ended and released its lease a moment before RQ records it
    and not job.connection.exists(LEASE_KEY.format(job.id))
  )


def _ended(job: Job, started: float) -> float:
  """When RQ ended the job (stopped or failed before any progress: while preparing), else `started`."""
  ended_at = getattr(job, "ended_at", None)
  if ended_at is None:
    return started
  return max(started, (ended_at if ended_at.tzinfo else ended_at.replace(tzinfo=dt.UTC)).timestamp())


def _last_line(text: str) -> str:
  lines = [line for line in (text or "").strip().splitlines() if line.strip()]
  return lines[-1] if lines else "failed"


@contextlib.contextmanager
def lease(connection: Redis, job_id: str, seconds: float):
  """Holds `cube:lease:<job_id>` (refreshed every seconds / 3 by a daemon thread) for the block.

  The same thread re-sends a recorded stop (`cancel`), so a job stopped while it prepares or compiles, before
  its first progress callback, ends within seconds / 3 too."""
  key, ms = LEASE_KEY.format(job_id), int(seconds * 1000)
  stop = threading.Event()
  connection.set(key, os.getpid(), px=ms)

  def refresh():  # survives a lost Redis: the lease is held again as soon as it answers (a review)
    while not stop.wait(seconds / 3):
      with contextlib.suppress(*REDIS_DOWN):
        connection.set(key, os.getpid(), px=ms)
        _resend_stop(connection, job_id)

  thread = threading.Thread(target=refresh, name=f"lease-{job_id}", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    connection.delete(key)


class _Progress:
  """Writes the queries spent into the job's meta, at most every `interval` seconds (and the last one); at the same
  pace, ends the job where a stop of it is recorded (`_honour_stop`), so no stop is lost."""

  def __init__(self, job: Job, interval: float = 0.5):
    self.job, self.interval, self.last = job, interval, 0.0

  def __call__(self, used: int) -> None:
    # A resumed search replays its journal's queries from 1: the count shown never goes back below them.
    self.job.meta["queries"] = max(int(used), int(self.job.meta.get("resumed_queries", 0)))
    self.job.meta["seen"] = time.time()
    # The pace is timed from the end of the first query run (not replayed from a journal), past its compilation: a
    # method reports each query as it starts it, so the call for the second live query marks the first one's end.
    if self.job.meta.get("paced_from") is None and used > int(self.job.meta.get("resumed_queries", 0)) + 1:
      self.job.meta["paced_from"] = [int(used), self.job.meta["seen"]]
    now = time.monotonic()
    if now - self.last >= self.interval:
      self.last = now
      self.job.save_meta()
      _honour_stop(self.job)


class JobStopped(RuntimeError):
  """Raised by a job whose stop is recorded (`_honour_stop`); its worker marks it stopped, not failed."""

  def __init__(self, job_id: str):
    super().__init__(f"job {job_id} stopped on request")
    self.job_id = job_id


def _honour_stop(job: Job) -> None:
  """Ends the job (raises `JobStopped`, which `DiscoveryWorker` records as RQ records a stopped job: status stopped,
  the job in the failed registry, its journal as last saved) while a stop of it is recorded (`cancel`). RQ's stop
  command is acted on by the job's worker alone, which kills its work horse: a worker killed alone (SIGKILL: the OOM
  killer, an operator) leaves the horse running, in a process group of its own and holding the job's lease, and the
  job ran on to finished against its stop (a service audit)."""
  if job.connection.exists(STOP_KEY.format(job.id)):
    raise JobStopped(job.id)


def _resend_stop(connection: Redis, job_id: str) -> None:
  """Re-sends RQ's stop command while a stop of this job is recorded (`cancel`)."""
  if connection.exists(STOP_KEY.format(job_id)):
    with contextlib.suppress(InvalidJobOperation):
      send_stop_job_command(connection, job_id, serializer=JSONSerializer)


def run_job(directory: str) -> dict[str, Any]:
  """The job function (RQ calls it in a worker): discovery on the job's table with its settings, resumable.

  Reads `directory/spec.json`, searches with the journal in `directory/state` (a job that a dead worker left is
  resumed from it), confirms, and writes the report into `directory/report`. Returns a small JSON summary.
  """
  with open(os.path.join(directory, "spec.json"), encoding="utf-8") as handle:
    record = json.load(handle)
  asked = record.get(FORMAT_KEY)
  if isinstance(asked, int) and asked > REPORT_FORMAT:  # a later API queued it; an earlier one's job runs to today's
    raise RuntimeError(  # rules, and that API serves it only if it writes this format too (`outdated`)
      f"this worker writes report format {REPORT_FORMAT} but the job was submitted for format {asked} by a later "
      "version of the service: upgrade the workers to the API's version (stop every worker before an upgrade), "
      "then submit the job again"
    )
  spec = JobSpec.from_dict(record["spec"])
  config = spec.config(agent=record.get("agent"))
  job = get_current_job()
  finished = _finished(directory)
  if finished is not None:  # run again with its report whole (its record lost, or requeued as it ended): kept
    if job is not None:
      now = time.time()
      job.meta.update(started=now, ended=now, seen=now, stage="done", queries=finished["queries"])
      job.meta[FORMAT_KEY] = REPORT_FORMAT
      job.save_meta()
    return finished
  state_dir = os.path.join(directory, "state")
  settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "method"}
  progress = _Progress(job) if job is not None else None
  if job is not None:
    resumed = journal.saved_queries(state_dir)
    job.meta.pop("seen", None)  # an earlier attempt's last progress is not this one's
    job.meta.update(
      started=time.time(),
      queries=resumed,  # where the journal's search resumes (a fresh run: 0)
      ended=None,
      resumed_queries=resumed,
      stage="preparing",
      paced_from=None,
    )
    job.save_meta()

  def stage(name: str) -> None:
    if job is not None:
      _honour_stop(job)  # between parts too (a stopped job keeps the part it stopped in): some take minutes
      job.meta["stage"] = name
      if name == "searching":  # where the search's time limit starts counting (`job_status`'s `eta_s`)
        job.meta["searching_since"] = time.time()
      job.save_meta()

  holder = lease(job.connection, job.id, record["lease_seconds"]) if job is not None else contextlib.nullcontext()
  # The job's end is written while it still holds its lease: `job_status` reads a started job without a lease and
  # without an end as one whose worker died, which the moment between the lease's release and RQ's record of the
  # outcome would otherwise look like.
  with holder:
    try:
      with open(record["table"], "rb") as handle:
        data = handle.read()
      # Cut short or changed since it was stored (a crash): not analysed. (A record from before the field: unchecked.)
      if record.get("table_hash") not in (None, content_hash(data)):
        raise RuntimeError(
          f"the stored table {os.path.basename(record['table'])} no longer holds the bytes it was stored with "
          "(damaged since, by a crash or a disk error): submit the table again, which stores it afresh"
        )
      df = parse_table(data)
      run = cube_env.run_discovery(
        df,
        spec.schema(),
        method=config.method,
        progress=progress,
        state_dir=state_dir,
        save_every=int(record["save_every"]),
        stage=stage,
        **settings,
      )
      stage("writing the report")
      report.write_report(run, os.path.join(directory, "report"), source=record["source"])
      outcome = {"queries": run.search.queries, "candidates": len(run.findings), "confirmed": len(run.confirmed)}
      done = json.dumps({**outcome, FORMAT_KEY: REPORT_FORMAT}).encode()
      journal.write_atomic(os.path.join(directory, "report", FINISHED_FILE), done)
      journal.fsync_dir(os.path.join(directory, "report"))
    except Exception:
      if job is not None:  # a failed job's elapsed time stops here
        now = time.time()
        job.meta.update(seen=now, ended=now)
        job.save_meta()
      raise
    if job is not None:
      job.meta.update(queries=run.search.queries, ended=time.time(), stage="done", **{FORMAT_KEY: REPORT_FORMAT})
      job.save_meta()
  return outcome


def _finished(directory: str) -> dict[str, int] | None:
  """The outcome a run of the job wrote beside its whole report (`FINISHED_FILE`, in this report format, every
  report file present), or None. A job run again after that keeps its report: its record lost with Redis, or
  requeued in the moment between its end and RQ's record of it, it ran again and rewrote its report, which a time
  limit made another (an audit: 1 query, then 4,201)."""
  report = os.path.join(directory, "report")
  try:
    with open(os.path.join(report, FINISHED_FILE), encoding="utf-8") as handle:
      done = json.load(handle)
    outcome = {key: int(done[key]) for key in ("queries", "candidates", "confirmed")}
  except (OSError, ValueError, KeyError, TypeError):
    return None
  whole = all(os.path.isfile(os.path.join(report, name)) for name in REPORT_FILES)
  return outcome if whole and done.get(FORMAT_KEY) == REPORT_FORMAT else None


def requeue_abandoned(queue: Queue, *, lease_seconds: float) -> list[str]:
  """Puts back at the front of `queue` every started job whose lease lapsed (its worker died); returns their ids.

  A job started less than `lease_seconds` ago is left alone (its worker may not have taken the lease yet).
  """
  connection = queue.connection
  registry = queue.started_job_registry
  now = dt.datetime.now(dt.UTC)

  def lapsed(job: Job) -> bool:  # still started, and not so lately that its worker may not have taken the lease
    started = job.started_at
    if started is not None:
      started = started if started.tzinfo else started.replace(tzinfo=dt.UTC)
    # A job whose end is written finished its work: the lease is released just before RQ records the outcome (an
    # audit requeued one in that moment, and it ran twice).
    return (
      job.get_status() == JobStatus.STARTED
      and not job.get_meta().get("ended")
      and (started is None or (now - started).total_seconds() >= lease_seconds)
    )

  out = []
  for entry in connection.zrange(registry.key, 0, -1):
    entry = entry.decode() if isinstance(entry, bytes) else entry
    job_id = _entry_id(entry)
    if connection.exists(LEASE_KEY.format(job_id)) or not _requeue_locked(queue, job_id, registry.key, entry, lapsed):
      continue
    out.append(job_id)
  # RQ's own clean-up (a worker's maintenance, once the dead worker's heartbeat lapsed) fails such a job instead;
  # it resumes from its journal as well, so it is put back too.
  failed = queue.failed_job_registry
  for job_id in failed.get_job_ids(cleanup=False):
    # the cheap check first, outside the lock: most failed jobs are kept, not requeued
    if _abandoned(fetch(connection, job_id)) and _requeue_locked(queue, job_id, failed.key, job_id, _abandoned):
      out.append(job_id)
  return out


def _requeue_locked(queue: Queue, job_id: str, registry_key: str, member: str, ready: Callable[[Job], bool]) -> bool:
  """Requeues the job (`_requeue`) if, under its submission lock (which a purge holds: a requeue re-created a
  purged job, a review), it still exists, `ready(job)` holds, it may be put back (`_may_requeue`) and this worker
  takes it off `registry_key` (else another requeued it meanwhile). The lock is waited for a second; held by
  another request, the job is left for the next round. Returns whether it was requeued."""
  lock = queue.connection.lock(SUBMIT_LOCK.format(job_id), timeout=SUBMIT_LOCK_SECONDS, blocking_timeout=1.0)
  if not lock.acquire():
    return False
  try:
    job = fetch(queue.connection, job_id)
    if job is None or not ready(job) or not _may_requeue(job) or not queue.connection.zrem(registry_key, member):
      return False
    _requeue(queue, job)
    return True
  finally:
    with contextlib.suppress(LockError):
      lock.release()


def _abandoned(job: Job | None) -> bool:
  """Whether RQ's clean-up failed `job` because its worker died (`RQ_ABANDONED`)."""
  result = job.latest_result() if job is not None else None
  return result is not None and str(result.exc_string or "").startswith(RQ_ABANDONED)


def _may_requeue(job: Job) -> bool:
  """False once the job was requeued `MAX_REQUEUES` times: one that takes its worker down with it (memory, a crash)
  would otherwise be put back at the front for ever; it is left failed (or for RQ to fail) instead."""
  return int(job.meta.get("requeued", 0)) < MAX_REQUEUES


def _requeue(queue: Queue, job: Job) -> None:
  """Back at the front of `queue` (the caller took it out of its registry), counted in its meta."""
  job.meta["stage"] = "queued"
  job.meta["requeued"] = int(job.meta.get("requeued", 0)) + 1
  job.save_meta()
  queue.enqueue_job(job, at_front=True)


def heartbeat_seconds(lease_seconds: float) -> int:
  """How often a `DiscoveryWorker` heartbeats, idle or busy: every lease period (whole seconds, at least 1)."""
  return max(1, int(round(lease_seconds)))


def live_workers(config: ServiceConfig, connection: Redis) -> int:
  """Workers of the config's queue that heartbeat within 3 lease periods and 10 s. RQ keeps a dead worker's key for
  its TTL, 90 s after its last heartbeat while busy (a service audit: /health counted a worker killed mid-job for
  80 s), so its key alone does not say it lives; a live one heartbeats every `heartbeat_seconds`."""
  ago = dt.timedelta(seconds=3 * heartbeat_seconds(config.lease_seconds) + 10)
  now = dt.datetime.now(dt.UTC)
  alive = 0
  for worker in Worker.all(connection=connection, queue=job_queue(config, connection)):
    beat = worker.last_heartbeat
    beat = beat if beat is None or beat.tzinfo else beat.replace(tzinfo=dt.UTC)
    alive += beat is None or now - beat <= ago  # None: registered an instant ago
  return alive


PUBSUB_WAKE_SECONDS = 1.0  # how often a worker's stop-command listener wakes (and so how long a stop waits for it)


class DiscoveryWorker(Worker):
  """An RQ worker that requeues abandoned discovery jobs on start-up and every `lease_seconds` while idle.

  Jobs run in a forked work horse (RQ's default), which RQ's stop command can end (`cancel`), as can the job itself
  on its recorded stop (`JobStopped`).
  """

  def __init__(self, queues, *, lease_seconds: float = 10.0, **kwargs):
    interval = heartbeat_seconds(lease_seconds)
    kwargs.setdefault("serializer", JSONSerializer)
    # Maintenance (and so the requeue) runs between dequeues, which wait worker_ttl - 15 seconds at most; a busy
    # worker heartbeats every job_monitoring_interval (RQ's 30 s), so every worker does at least every `interval`.
    super().__init__(
      queues, maintenance_interval=interval, worker_ttl=interval + 15, job_monitoring_interval=interval, **kwargs
    )
    self.lease_seconds = float(lease_seconds)

  def subscribe(self):
    """RQ's subscription to this worker's channel (the stop command), its listening thread waking every
    `PUBSUB_WAKE_SECONDS` rather than RQ's 60. RQ's stop unsubscribes, then waits for that thread; a thread that read
    the unsubscribe reply before the stop flag was set waits its full wake time for a new subscription, so a SIGTERM
    could take a minute to end an idle worker (a fresh-clone CI's teardown gave up after 20 s)."""
    self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
    self.pubsub = self.connection.pubsub()
    self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
    self.pubsub_thread = self.pubsub.run_in_thread(
      sleep_time=PUBSUB_WAKE_SECONDS, daemon=True, exception_handler=self._pubsub_exception_handler
    )

  def prepare_job_execution(self, job: Job, *args, **kwargs):
    """In the work horse, before the job's function is called: a job that names any function but `run_job` fails
    (a security audit: RQ imports and calls what a job names, so anyone who could write to Redis ran code as the
    worker; Redis itself should have a password, README)."""
    super().prepare_job_execution(job, *args, **kwargs)
    callbacks = []
    for kind in ("success", "failure", "stopped"):  # RQ would import and call them on the way out (a review)
      if name := getattr(job, f"_{kind}_callback_name", None):
        callbacks.append(name)
      setattr(job, f"_{kind}_callback_name", None)
      setattr(job, f"_{kind}_callback", None)
    callbacks += [getattr(hook, "url", "a webhook") for hook in getattr(job, "webhooks", None) or []]
    job.webhooks = []  # and post the job's outcome to them
    if job.func_name != f"{run_job.__module__}.{run_job.__name__}" or callbacks:
      named = ", ".join(repr(n) for n in [job.func_name, *callbacks])
      raise RuntimeError(f"job {job.id} names {named}: this worker runs discovery jobs only, with no callbacks")

  def handle_exception(self, job: Job, *exc_info):
    """In the work horse, a job that ended on its recorded stop (`JobStopped`) is marked for RQ's stop path, which
    `handle_job_failure` takes next: status stopped, not failed, as when this worker kills the horse on RQ's stop
    command; any other exception goes to RQ's handlers."""
    if isinstance(exc_info[1], JobStopped):
      self.log.warning("Worker %s: job %s stopped on request (its recorded stop)", self.name, job.id)
      self._stopped_job_id = job.id
      return
    super().handle_exception(job, *exc_info)

  def execute_job(self, job: Job, queue: Queue):
    """RQ's, forgetting afterwards a stop command that came as the work horse ended the job itself (`JobStopped`):
    RQ clears it only when it kills the horse, and a later run of the same job that failed would be marked stopped."""
    try:
      super().execute_job(job, queue)
    finally:
      self._stopped_job_id = None

  def prepare_execution(self, job: Job):
    """Takes the job's lease before forking its work horse (which then refreshes it), with time to start up."""
    self.connection.set(LEASE_KEY.format(job.id), os.getpid(), px=int(STARTUP_LEASES * self.lease_seconds * 1000))
    return super().prepare_execution(job)

  def run_maintenance_tasks(self):
    # Ours first: RQ's clean-up would fail a started job whose worker's heartbeat lapsed (a worker restarted a
    # minute or more after the death); `requeue_abandoned` also takes back any it failed so before.
    for queue in self.queues:
      for job_id in requeue_abandoned(queue, lease_seconds=self.lease_seconds):
        self.log.warning(
          "requeued abandoned job %s (its lease lapsed: its worker died or lost Redis; it resumes from its journal)",
          job_id,
        )
    super().run_maintenance_tasks()


def run_worker(config: ServiceConfig, *, burst: bool = False, name: str | None = None) -> bool:
  """Runs a `DiscoveryWorker` on the config's queue until stopped (or, `burst`, until the queue is empty)."""
  connection = connect(config)
  config.private_data_dir()
  worker = DiscoveryWorker(
    [job_queue(config, connection)], connection=connection, lease_seconds=config.lease_seconds, name=name
  )
  try:
    ended = worker.work(burst=burst, with_scheduler=False)
  finally:
    # RQ's worker ends on a lost Redis (raising, or returning when Redis is back by its teardown), but its work horse
    # (a process group of its own) may go on computing without Redis (preparing, compiling, confirming) and finish
    # after a new worker has requeued and started the job again, on one journal: end it first. (A stopped worker
    # has waited for its horse already.) Its pubsub thread would go on reconnecting for ever.
    if worker.horse_pid:
      worker.kill_horse()
      worker.wait_for_horse()
      worker._horse_pid = 0  # RQ keeps the reaped pid; a later stop command would signal it
    if worker.pubsub_thread is not None:
      with contextlib.suppress(Exception):
        worker.pubsub_thread.stop()
  if not burst and worker._shutdown_requested_date is None:  # no SIGTERM/SIGINT: RQ's loop caught an error and ended
    raise RedisConnectionError(f"worker {worker.name} ended without a stop request (its log says why)")
  return ended


RECONNECT_SECONDS = 300.0  # how long `serve_worker` waits for a lost Redis to answer again


def serve_worker(
  config: ServiceConfig, *, burst: bool = False, reconnect_seconds: float = RECONNECT_SECONDS, poll: float = 1.0
) -> bool:
  """`run_worker`, replaced by a new worker whenever one loses Redis (a restart, a network blip): RQ's worker ends
  with the connection error when it loses Redis while running a job (an audit: a 3-second restart left a job started
  for ever, with no worker). Once Redis answers again (within `reconnect_seconds`, polled every `poll` seconds) a new
  worker starts; it requeues the job the old one was running when that job's lease lapses (`requeue_abandoned`),
  and the job resumes from its journal. Redis unreachable at the start, or for longer than `reconnect_seconds`,
  raises (`REDIS_DOWN`)."""
  connect(config).ping()
  while True:
    try:
      return run_worker(config, burst=burst)
    except REDIS_DOWN as err:
      logging.getLogger(__name__).warning("lost Redis (%s); a new worker starts once it answers again", err)
      signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the lost worker's handlers would write to Redis: stop plainly
      signal.signal(signal.SIGINT, signal.default_int_handler)
      deadline = time.monotonic() + reconnect_seconds
      while True:
        time.sleep(poll)
        try:
          connect(config).ping()
          break
        except REDIS_DOWN:
          if time.monotonic() > deadline:
            raise
