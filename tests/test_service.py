"""The discovery service end to end: a real Redis server, real RQ worker processes, a real uvicorn API on 127.0.0.1
and a real HTTP client (httpx). Skipped without `redis-server` or the `service` extra."""

import asyncio
import contextlib
import dataclasses
import datetime
import io
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
redis = pytest.importorskip("redis")
pytest.importorskip("rq")
pytest.importorskip("fastapi")
if shutil.which("redis-server") is None:
  pytest.skip("redis-server is not installed (apt-get install redis-server)", allow_module_level=True)

from rq import Callback, Queue, Worker  # noqa: E402
from rq.executions import Execution  # noqa: E402
from rq.job import Job, JobStatus  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402
from rq.utils import utcformat  # noqa: E402

import cube_env  # noqa: E402
from cube_env.discovery import journal as search_journal  # noqa: E402
from experiments import report, serve  # noqa: E402
from experiments.service import (  # noqa: E402
  JobSpec,
  ServiceConfig,
  jobs,
  make_app,
  tables,
)
from experiments.service.jobs import LEASE_KEY, STOP_KEY  # noqa: E402
from tests.conftest import make_small_df  # noqa: E402

EVIL = "<b>x</b>"
BASE = {"dimensions": ["proc", "site", "urgency"], "protected": ["race", "sex"], "measures": ["minutes"]}
SETTINGS = {**BASE, "method": "uct", "budget": 40, "max_depth": 2, "z_screen": 3.0, "seed": 1}
LONG = {**BASE, "method": "random", "budget": 2500, "max_depth": 2, "z_screen": 3.0, "seed": 4}  # seconds of queries
LEASE = 2.0


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env() -> dict:
  return {**os.environ, "PYTHONPATH": os.getcwd(), "JAX_PLATFORMS": "cpu"}


def _wait(predicate, timeout: float, what: str, show=None):
  """Polls `predicate` until it is truthy; on time-out, fails naming `what` and, if given, what `show()` sees."""
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    value = predicate()
    if value:
      return value
    time.sleep(0.1)
  seen = f" (now: {show()!r})" if show is not None else ""
  raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}")


class Service:
  """Redis, two workers and the API, started as processes and stopped at the end."""

  def __init__(self, root):
    self.root, self.procs, self.workers, self.logs = root, [], [], []
    port = _free_port()
    self.redis_url = f"redis://127.0.0.1:{port}/0"
    redis_cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    self.redis = self._start(redis_cmd + ["--dir", str(root)])
    self.common = ["--redis-url", self.redis_url, "--data-dir", str(root / "data")]
    self.common += ["--lease-seconds", str(LEASE), "--save-every", "50"]
    # --port 0: the system picks a free port, which the API's log names (a CLI audit: it logged port 0).
    self.api = self._start(
      [sys.executable, "-m", "experiments.serve", *self.common, "--port", "0", "--max-upload-mb", "0.25"]
    )
    api_log = self.root / f"log-{len(self.procs) - 1}.txt"
    for _ in range(2):
      self.start_worker()
    said = _wait(
      lambda: re.search(r"API on http://127\.0\.0\.1:(\d+) ", api_log.read_text()),
      60,
      "the API's log",
      api_log.read_text,
    )
    self.api_port = int(said.group(1))
    assert self.api_port > 0
    self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)
    _wait(self._healthy, 60, "the API")
    # No token: the log says every local account can use it (a security audit: the README's default was silent).
    assert "no --token: every account on this machine can use the API" in api_log.read_text()

  def _healthy(self):
    try:
      return self.client.get("/health").status_code == 200
    except httpx.TransportError:
      return False

  def _start(self, cmd):
    log = open(self.root / f"log-{len(self.procs)}.txt", "w")  # noqa: SIM115 (closed by stop)
    self.logs.append(log)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    self.procs.append(proc)
    return proc

  def start_worker(self):
    self.workers.append(self._start([sys.executable, "-m", "experiments.serve", "--worker", *self.common]))

  def submit(self, settings, data: bytes, name="cases.csv"):
    return self.client.post("/jobs", data={"settings": json.dumps(settings)}, files={"file": (name, data)})

  def finish(self, job_id, timeout=150.0) -> dict:
    def done():
      s = self.client.get(f"/jobs/{job_id}").json()
      assert s["status"] not in ("failed", "canceled", "stopped"), s
      return s if s["status"] == "finished" else None

    return _wait(done, timeout, f"job {job_id}")

  def stop(self):
    self.client.close()
    for proc in reversed(self.procs):
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in self.procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for log in self.logs:
      log.close()


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> bytes:
  df = make_small_df(seed=9, n=2000)
  df["proc"] = df["proc"].replace({"A": EVIL})
  path = tmp_path_factory.mktemp("table") / "cases.csv"
  df.to_csv(path, index=False)
  return path.read_bytes()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
  svc = Service(tmp_path_factory.mktemp("service"))
  yield svc
  svc.stop()


def _reference(table: bytes, settings: dict, out) -> list:
  """The findings an uninterrupted library run writes (the same writer as the service's jobs)."""
  spec = JobSpec.from_dict(settings)
  config = spec.config()
  fields = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "method"}
  run = cube_env.run_discovery(pd.read_csv(io.BytesIO(table)), spec.schema(), method=config.method, **fields)
  report.write_report(run, str(out), source="reference")
  with open(out / "findings.json", encoding="utf-8") as handle:
    return json.load(handle)["findings"]


def test_submit_poll_fetch_then_cached(service, table, tmp_path):
  r = service.submit(SETTINGS, table)
  assert r.status_code == 202, r.text
  job = r.json()
  assert job["cached"] is False and job["status_url"] == f"/jobs/{job['id']}"
  status = service.finish(job["id"])
  assert 0 < status["progress"]["queries"] <= 40 and status["progress"]["budget"] == 40
  assert status["progress"]["elapsed_s"] > 0 and status["progress"]["eta_s"] == 0.0
  assert status["progress"]["stage"] == "done"
  found = service.client.get(f"/jobs/{job['id']}/findings.json").json()
  assert found["findings"] == _reference(table, SETTINGS, tmp_path)
  counts = [f[c] for f in found["findings"] for c in ("cohort_rows", "n_group", "n_rest") if f[c] is not None]
  assert counts and not any(1 <= c <= 10 for c in counts)  # the small-cell rule
  html = service.client.get(f"/jobs/{job['id']}/report.html")
  assert html.headers["content-type"].startswith("text/html") and EVIL not in html.text and "&lt;b&gt;x" in html.text
  # No script, frame or sniffing for the users' data served from the API's origin (a security audit: none was set).
  csp = html.headers["content-security-policy"]
  assert (
    csp.startswith("default-src 'none'; img-src data:; style-src 'unsafe-inline'") and "frame-ancestors 'none'" in csp
  )
  assert html.headers["x-content-type-options"] == "nosniff" and html.headers["x-frame-options"] == "DENY"
  assert "<script" not in html.text and 'src="http' not in html.text  # what the policy allows is all it uses
  csv_response = service.client.get(f"/jobs/{job['id']}/findings.csv")
  csv = csv_response.text
  assert csv.splitlines()[0].startswith("confirmed,")
  assert csv_response.headers["content-disposition"] == 'attachment; filename="findings.csv"'
  listed = service.client.get("/jobs").json()["jobs"]
  assert job["id"] in {j["id"] for j in listed}
  t0 = time.perf_counter()
  again = service.submit(SETTINGS, table)
  seconds = time.perf_counter() - t0
  assert again.status_code == 202 and again.json() == {**job, "cached": True}
  print(f"cached resubmission answered in {seconds * 1000:.0f} ms")  # a figure, not a test (no timed assertions)


def test_a_report_another_version_wrote_is_not_served_and_a_resubmission_runs_anew(
  service, table, tmp_path, monkeypatch
):
  """An upgrade audit: old reports were served after an upgrade (small counts the current rule hides), and an old
  worker beside a new API wrote old reports under new ids, served as cached for good. A report is served only where
  its worker recorded this version's format; a resubmission of such a job runs afresh; a worker refuses a job that a
  server of a later version queued."""
  settings = {**SETTINGS, "seed": 31}
  job_id = service.submit(settings, table).json()["id"]
  service.finish(job_id)
  conn = redis.Redis.from_url(service.redis_url)
  record = jobs.fetch(conn, job_id)
  assert jobs.written_format(record) == jobs.REPORT_FORMAT
  for older in (jobs.REPORT_FORMAT - 1, None):  # a worker of format 7, or of a version that recorded none
    if older is None:
      del record.meta[jobs.FORMAT_KEY]
    else:
      record.meta[jobs.FORMAT_KEY] = older
    record.save_meta()
    got = service.client.get(f"/jobs/{job_id}/findings.json")
    shown = "unrecorded" if older is None else older
    assert got.status_code == 410 and got.json()["detail"] == {
      "field": "id",
      "message": f"job {job_id}'s report was written by an earlier version of the service (report format {shown}; "
      f"this server serves {jobs.REPORT_FORMAT}), whose rules on small counts and statistics differ, so it is not "
      "served: submit the table and settings again for a report under this version's rules, and purge this job",
    }
    assert service.client.get(f"/jobs/{job_id}").json()["progress"]["stage"] == jobs.OUTDATED_STAGE
  directory = jobs.job_dir(ServiceConfig(data_dir=str(service.root / "data")), job_id)
  # A resubmission whose old record RQ cannot remove now is refused before the old run's files go (a cold audit:
  # they were removed first, leaving a finished record with no report).
  kept = sorted(os.listdir(os.path.join(directory, "report")))
  assert kept and os.path.isdir(os.path.join(directory, "state"))

  def failing(self, pipeline=None):
    del pipeline
    raise ValueError(f"Execution e0 of {self.id} not found in Redis")

  with monkeypatch.context() as patch:
    patch.setattr(Job, "delete", failing)
    config = ServiceConfig(redis_url=service.redis_url, data_dir=str(service.root / "data"))
    with pytest.raises(jobs.RecordBusy, match=f"job {job_id}: "):
      with open(os.path.join(directory, "spec.json"), encoding="utf-8") as handle:
        stored = json.load(handle)
      jobs.submit(config, conn, JobSpec.from_dict(settings), stored["table_hash"], stored["table"], stored["source"])
  assert sorted(os.listdir(os.path.join(directory, "report"))) == kept
  assert os.path.isdir(os.path.join(directory, "state")) and jobs.fetch(conn, job_id) is not None
  again = service.submit(settings, table).json()
  assert again["id"] == job_id and again["cached"] is False  # not "cached": run again, from no journal
  service.finish(job_id)
  rerun = jobs.fetch(conn, job_id).get_meta()
  assert jobs.written_format(jobs.fetch(conn, job_id)) == jobs.REPORT_FORMAT and rerun["resumed_queries"] == 0
  # A report a later version's worker wrote: this API is the one to upgrade.
  record = jobs.fetch(conn, job_id)
  record.meta[jobs.FORMAT_KEY] = jobs.REPORT_FORMAT + 1
  record.save_meta()
  assert service.client.get(f"/jobs/{job_id}/report.html").json()["detail"]["message"] == (
    f"job {job_id}'s report was written by a later version of the service (report format {jobs.REPORT_FORMAT + 1}; "
    f"this server serves {jobs.REPORT_FORMAT}), so it is not served: upgrade the API to its workers' version"
  )
  record.meta[jobs.FORMAT_KEY] = jobs.REPORT_FORMAT
  record.save_meta()
  found = service.client.get(f"/jobs/{job_id}/findings.json").json()
  assert found["findings"] == _reference(table, settings, tmp_path)
  # A worker of this version given a job that an API of a later version queued (an earlier one's job runs).
  with open(os.path.join(directory, "spec.json"), encoding="utf-8") as handle:
    spec = json.load(handle)
  later = tmp_path / "later_job"
  later.mkdir()
  (later / "spec.json").write_text(json.dumps({**spec, jobs.FORMAT_KEY: jobs.REPORT_FORMAT + 1}))
  with pytest.raises(RuntimeError) as err:
    jobs.run_job(str(later))
  assert str(err.value) == (
    f"this worker writes report format {jobs.REPORT_FORMAT} but the job was submitted for format "
    f"{jobs.REPORT_FORMAT + 1} by a later version of the service: upgrade the workers to the API's version (stop "
    "every worker before an upgrade), then submit the job again"
  )


def test_a_finished_job_run_again_keeps_its_report(service, table):
  """A service audit: a time-limited job whose record Redis lost (or one requeued in the moment between its end and
  RQ's record of it) ran again and rewrote its report, another one (1 query, then 4,201). The run's outcome, written
  beside its whole report (`finished.json`), keeps the report: the job's record is rebuilt from it."""
  settings = {**SETTINGS, "seed": 37, "time_limit": 600}
  job_id = service.submit(settings, table).json()["id"]
  before = service.finish(job_id)["progress"]
  report = os.path.join(jobs.job_dir(ServiceConfig(data_dir=str(service.root / "data")), job_id), "report")
  with open(os.path.join(report, jobs.FINISHED_FILE), encoding="utf-8") as handle:
    assert json.load(handle)["queries"] == before["queries"]
  stamps = {name: os.stat(os.path.join(report, name)).st_mtime_ns for name in jobs.REPORT_FILES}
  jobs.fetch(redis.Redis.from_url(service.redis_url), job_id).delete()  # a Redis restarted without persistence
  again = service.submit(settings, table).json()
  assert again["id"] == job_id and again["cached"] is False
  after = service.finish(job_id)["progress"]
  assert (after["queries"], after["stage"]) == (before["queries"], "done")
  assert {name: os.stat(os.path.join(report, name)).st_mtime_ns for name in jobs.REPORT_FILES} == stamps
  assert service.client.get(f"/jobs/{job_id}/findings.json").status_code == 200


TOKEN = "s3cret-token-for-tests"


def test_a_loopback_api_answers_only_loopback_names(service, table):
  """A security audit: a web page could read every job of the token-less loopback default through DNS rebinding
  (a foreign Host) and queue jobs cross-site (a foreign Origin). Both get 403; loopback names pass."""
  port = service.api_port
  for headers, what in (
    ({"Host": f"rebind.attacker.example:{port}"}, f"Host 'rebind.attacker.example:{port}'"),
    ({"Origin": "https://evil.example"}, "Origin 'https://evil.example'"),
  ):
    got = service.client.get("/jobs", headers=headers)
    assert got.status_code == 403 and got.json()["detail"]["message"] == f"{what} is not this loopback address"
  posted = service.client.post(
    "/jobs", data={"settings": json.dumps(SETTINGS)}, files={"file": ("c.csv", table)}, headers={"Origin": "null"}
  )
  assert posted.status_code == 403
  for bad in ("[::1", "evil.example@127.0.0.1"):  # a malformed name is refused, not a 500 (a review)
    assert service.client.get("/jobs", headers={"Host": bad}).status_code == 403
  for headers in ({"Host": f"localhost:{port}"}, {"Origin": f"http://127.0.0.1:{port}"}, {"Host": f"[::1]:{port}"}):
    assert service.client.get("/health", headers=headers).status_code == 200, headers


def test_a_worker_runs_no_function_but_the_discovery_job(service, tmp_path):
  """A security audit: RQ imports and calls whatever function a job names, so anyone who could write to Redis ran
  code as the worker (`os.system`). The worker fails such a job before calling it."""
  conn = redis.Redis.from_url(service.redis_url)
  queue = Queue(ServiceConfig().queue, connection=conn, serializer=JSONSerializer)
  marker = tmp_path / "ran"
  job = queue.enqueue("os.system", f"touch {marker}", job_id="dnot0a0discovery0job")

  def ended():
    status = job.get_status(refresh=True)
    return status if status in (JobStatus.FAILED, JobStatus.FINISHED) else None

  assert _wait(ended, 60, "the foreign job") == JobStatus.FAILED and not marker.exists()
  assert service.client.get(f"/jobs/{job.id}").json()["error"] == (
    f"RuntimeError: job {job.id} names 'os.system': this worker runs discovery jobs only, with no callbacks"
  )
  job.delete()
  # A failure callback would be imported and called on the way out (a review: builtins.print ran in the worker).
  forged = queue.enqueue(
    "os.system", f"touch {marker}", job_id="dforged0callback", on_failure=Callback("builtins.print")
  )
  assert _wait(lambda: forged.get_status(refresh=True) == JobStatus.FAILED, 60, "the forged job")
  assert (
    service.client.get(f"/jobs/{forged.id}")
    .json()["error"]
    .endswith("names 'os.system', 'builtins.print': this worker runs discovery jobs only, with no callbacks")
  )
  assert not marker.exists() and not any(
    f"<Job {forged.id}" in log.read_text() for log in service.root.glob("log-*.txt")
  )
  forged.delete()


def test_two_jobs_at_once(service, table):
  ids = []
  for seed in (11, 12):  # jobs of seconds each: an idle worker busy with its upkeep (every lease period, on loaded
    # cores) left the other to take both jobs of a short beam search in a fresh-clone CI
    r = service.submit({**SETTINGS, "method": "random", "budget": 800, "seed": seed}, table)
    assert r.status_code == 202 and r.json()["cached"] is False
    ids.append(r.json()["id"])
  assert ids[0] != ids[1]
  for job_id in ids:
    assert service.finish(job_id)["progress"]["queries"] > 0
  # Each worker took one. (That they also ran side by side, each started before the other ended, failed once in a
  # fresh-clone CI by 60 ms: the idle worker's job started 5 s after the other's on 2 loaded cores.)
  conn = redis.Redis.from_url(service.redis_url)
  records = [Job.fetch(i, connection=conn, serializer=JSONSerializer) for i in ids]
  assert len({r.worker_name for r in records}) == 2 and None not in {r.worker_name for r in records}, records


def test_the_same_job_submitted_at_once_is_queued_once(service, table, tmp_path):
  """Identical submissions at the same moment (an audit: four curls at once ran one job twice on one journal) get
  one job: `submit` checks and queues under a lock per job id. On a queue no worker serves, so it stays queued."""
  config = ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path / "data"), queue="same-moment")
  path = tmp_path / "cases.csv"
  path.write_bytes(table)
  spec, start, got = JobSpec.from_dict(SETTINGS), threading.Barrier(8), []

  def one():
    conn = redis.Redis.from_url(service.redis_url)
    start.wait()
    got.append(jobs.submit(config, conn, spec, "same-table", str(path), "cases.csv"))

  threads = [threading.Thread(target=one) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(got) == 8 and len(set(got)) == 1 and got[0][1] is False
  conn = redis.Redis.from_url(service.redis_url)
  assert [i.decode() for i in conn.lrange("rq:queue:same-moment", 0, -1)] == [got[0][0]]
  jobs.fetch(conn, got[0][0]).cancel()


def test_a_purge_that_fails_midway_can_be_sent_again(service, table, tmp_path, monkeypatch):
  """A purge removes the files before the record, so one that fails on them (a disk error) leaves the record and
  the next one finishes; a directory whose record is gone is purged too (a review: the record went first, and the
  files could then never be purged). On a queue no worker serves, so the job stays queued until canceled."""
  config = ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path / "data"), queue="purge-midway")
  conn = redis.Redis.from_url(service.redis_url)
  stored = tables.store_table(table, config)
  job_id, _ = jobs.submit(config, conn, JobSpec.from_dict(SETTINGS), "purge-table", stored, "cases.csv")
  with pytest.raises(jobs.JobActive, match="is queued: stop it first"):
    jobs.purge(config, conn, job_id)
  jobs.fetch(conn, job_id).cancel()

  def failing(path):
    raise PermissionError(path)

  os.makedirs(os.path.join(jobs.job_dir(config, job_id), "state"))  # as a run leaves it
  monkeypatch.setattr(jobs.shutil, "rmtree", failing)
  with pytest.raises(PermissionError):
    jobs.purge(config, conn, job_id)
  # spec.json goes last, so the next purge still knows the table (a review: it was left for good)
  assert jobs.fetch(conn, job_id) is not None and os.path.isfile(
    os.path.join(jobs.job_dir(config, job_id), "spec.json")
  )
  monkeypatch.undo()
  orphan = os.path.join(os.path.dirname(stored), "0" * 32 + ".csv")  # a table an earlier purge failed to remove
  with open(orphan, "wb") as handle:
    handle.write(table)
  assert jobs.purge(config, conn, job_id) == {"id": job_id, "was": "canceled", "table_removed": True}
  assert jobs.fetch(conn, job_id) is None and not os.path.exists(jobs.job_dir(config, job_id))
  assert not os.path.exists(stored) and not os.path.exists(orphan)  # the sweep: no job names either
  stored = tables.store_table(table, config)  # a directory left without its record: purged all the same
  job_id, _ = jobs.submit(config, conn, JobSpec.from_dict(SETTINGS), "purge-table", stored, "cases.csv")
  jobs.fetch(conn, job_id).delete()
  assert jobs.purge(config, conn, job_id) == {"id": job_id, "was": "gone", "table_removed": True}
  with pytest.raises(KeyError):
    jobs.purge(config, conn, job_id)
  conn.close()


def test_bad_input_is_a_clear_4xx(service, table):
  r = service.submit(SETTINGS, b"PAR1 this is no parquet file")
  assert r.status_code == 400 and r.json()["detail"]["field"] == "file" and "not a readable" in r.text
  r = service.submit({**SETTINGS, "measures": ["minutes", "cost"]}, table)
  assert r.status_code == 400 and r.json()["detail"]["field"] == "cost" and "not in the table" in r.text
  r = service.submit(SETTINGS, table * 80)  # about 0.4 MiB, over the 0.25 MiB limit
  assert r.status_code == 413 and r.json()["detail"] == {
    "field": "file",
    "message": "file: the request is larger than this server's upload limit of 0.25 MiB (serve --max-upload-mb)",
  }

  def chunks():  # no Content-Length: refused while it streams in, long before its 64 MiB are sent
    yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
    for _ in range(1024):
      yield b"0" * 65536

  r = service.client.post("/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
  assert r.status_code == 413 and "upload limit of 0.25 MiB" in r.json()["detail"]["message"]
  r = service.submit({**SETTINGS, "budgett": 5}, table)
  assert r.status_code == 422 and r.json()["detail"]["field"] == "budgett"
  r = service.submit({**SETTINGS, "budget": 0}, table)
  assert r.status_code == 422 and r.json()["detail"]["field"] == "budget"
  r = service.submit({**SETTINGS, "time_limit": "soon"}, table)
  assert r.status_code == 422 and r.json()["detail"]["field"] == "time_limit"
  # Settings whose range the table does not decide are refused at once, not when the worker reads the table.
  for field, value in (
    ("z_screen", -1.0),
    ("seed", -1),
    ("seed", 2**70),
    ("explore_fraction", 1.0),
    ("max_categories", 1),
    ("beam_width", 0),
    ("favorable", ["nope"]),
    ("dimensions", []),  # the column roles too: named, not a 400 for "settings" after the table is read
    ("protected", ["proc"]),
    ("adjust", ["race"]),
  ):
    r = service.submit({**SETTINGS, field: value}, table)
    assert r.status_code == 422 and r.json()["detail"]["field"] == field, (field, value, r.text)
  r = service.submit({**SETTINGS, "favorable": ["minutes"]}, table)  # known only with the table: not binary
  assert r.status_code == 422 and r.json()["detail"]["field"] == "favorable" and "is not binary" in r.text
  for tiny in (1e-300, 1 - 1e-9):  # known only with the table: a half without the rows a run needs (an audit)
    r = service.submit({**SETTINGS, "explore_fraction": tiny}, table)
    assert r.status_code == 422 and r.json()["detail"]["field"] == "explore_fraction", r.text
    assert "half holds 0 rows at explore_fraction = " in r.text and "each half needs at least 22 rows" in r.text
  r = service.client.post("/jobs", files={"settings": ("s.json", json.dumps(SETTINGS)), "file": ("a.csv", table)})
  assert r.status_code == 422 and r.json()["detail"] == {
    "field": "settings",
    "message": "settings: must be a text form field holding JSON (curl -F 'settings={...}'), not a file",
  }
  r = service.client.post("/jobs", files={"file": ("a.csv", table)})
  assert r.status_code == 422 and r.json()["detail"]["message"].startswith("settings: is required")
  r = service.client.post("/jobs", data={"settings": "{not json"}, files={"file": ("a.csv", table)})
  assert r.status_code == 422 and r.json()["detail"]["field"] == "settings"
  r = service.client.post("/jobs", data={"settings": json.dumps(SETTINGS), "path": "/etc/passwd"})
  assert r.status_code == 403 and r.json()["detail"]["field"] == "path"
  # Inputs that were a 500 (an audit): settings nested too deeply, a column name no response could print, and
  # budgets that would hold a worker for days.
  r = service.client.post("/jobs", data={"settings": "[" * 5000 + "]" * 5000}, files={"file": ("a.csv", table)})
  assert r.status_code == 422 and r.json()["detail"] == {
    "field": "settings",
    "message": "settings: not valid settings (nested too deeply)",
  }
  r = service.submit({**SETTINGS, "dimensions": ["proc", "\ud800"]}, table)
  assert r.status_code == 422 and r.json()["detail"]["field"] == "dimensions" and "Unicode" in r.text
  for field in ("budget", "beam_width"):
    r = service.submit({**SETTINGS, field: 10**12}, table)
    assert (
      r.status_code == 422
      and r.json()["detail"]["message"] == f"{field}: must be at most 10,000,000, got 1,000,000,000,000"
    )
  r = service.submit({**SETTINGS, "budget": 1_000_001}, table)  # this server's cap (serve --max-budget)
  assert r.status_code == 422 and r.json()["detail"] == {
    "field": "budget",
    "message": "budget: must be at most 1,000,000 on this server (serve --max-budget), got 1,000,001",
  }
  r = service.submit({**SETTINGS, "time_limit": 86_400}, table)  # RQ's job timeout would end it first (an audit)
  assert r.status_code == 422 and r.json()["detail"] == {
    "field": "time_limit",
    "message": "time_limit: must be under the 86,400 s a job may run on this server (RQ's job timeout; preparing "
    "and confirming take time too), got 86400",
  }
  r = service.submit({**SETTINGS, "max_depth": 10**11}, table)  # was a worker's OverflowError (an audit)
  assert r.status_code == 422 and r.json()["detail"]["message"] == "max_depth: must be at most 64, got 100000000000"
  # Numbers past float's or int64's range were a 500 (a service audit): 422 naming the field, the number by its size.
  for field in ("q", "time_limit", "z_screen", "min_relative_diff", "explore_fraction"):
    r = service.client.post(
      "/jobs",
      data={
        "settings": json.dumps({**SETTINGS, field: 0})[:-1].rsplit(f'"{field}": 0', 1)[0] + f'"{field}": 1{"0" * 400}}}'
      },
      files={"file": ("a.csv", table)},
    )
    assert r.status_code == 422 and r.json()["detail"] == {
      "field": field,
      "message": f"{field}: must be a finite number, got a number of 401 digits",
    }, r.text
  for huge in (10**23, 2**63 - 1):
    r = service.submit({**SETTINGS, "min_group": huge}, table)
    assert r.status_code == 422 and r.json()["detail"]["field"] == "min_group", r.text
    assert "must be a whole number of at most 9,007,199,254,740,992 in size" in r.text
  # Tables that were a worker's TypeError or an Arrow dump, and UTF-16 text read as Latin-1 (the same audit).
  df = pd.read_csv(io.BytesIO(table))
  listed = io.BytesIO()
  df.assign(proc=[[p] for p in df["proc"]]).to_parquet(listed)
  r = service.submit(SETTINGS, listed.getvalue(), name="cases.parquet")
  assert (
    r.status_code == 400
    and r.json()["detail"]["field"] == "proc"
    and "column 'proc' is a Parquet column of type list<element: string>" in r.text  # named before it is decoded
  ), r.text
  twice = io.BytesIO()
  pa = pytest.importorskip("pyarrow")
  pa.parquet.write_table(pa.table([df["proc"], df["proc"], df["race"]], names=["proc", "proc", "race"]), twice)
  r = service.submit(SETTINGS, twice.getvalue(), name="cases.parquet")
  assert r.status_code == 400 and r.json()["detail"]["message"] == "file: column 'proc' appears 2 times", r.text
  r = service.submit(SETTINGS, df.head(300).to_csv(index=False).encode("utf-16"))
  assert r.status_code == 400 and "is UTF-16 text" in r.json()["detail"]["message"], r.text
  r = service.client.get("/jobs/nope")
  assert r.status_code == 404 and r.json() == {"detail": {"field": "id", "message": "no job 'nope'"}}
  # Every error in one shape, FastAPI's own included: an unknown route, a method the route lacks, an unknown result.
  r = service.client.get("/nowhere")
  assert r.status_code == 404 and r.json() == {"detail": {"field": None, "message": "Not Found"}}
  r = service.client.put("/jobs")
  assert r.status_code == 405 and r.json()["detail"]["field"] is None and "allow" in r.headers
  r = service.client.get("/jobs/nope/findings.xml")
  assert r.status_code == 404 and r.json()["detail"]["field"] == "name" and "findings.csv" in r.text
  for odd in ("%E2%91%A0", "%C3%A9"):  # letters or digits, not ASCII: unknown, not a server error (an audit)
    assert service.client.get(f"/jobs/{odd}").status_code == 404
    assert service.client.delete(f"/jobs/{odd}").status_code == 404


def test_a_text_part_over_its_limit_is_a_413_naming_it(service, table, tmp_path):
  """A service audit: a settings part over 1 MiB (under the upload limit) was Starlette's 400 naming no part. A text
  part (settings, path) holds up to 1 MiB; one over it is refused 413 naming it, as a file over its limit is."""
  app = make_app(ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path)))  # the default 50 MiB uploads
  limit = 2**20
  at_limit = json.dumps({**SETTINGS, "pad": ""})
  at_limit = at_limit[:-2] + "x" * (limit - len(at_limit)) + at_limit[-2:]
  over = at_limit[:-2] + "x" + at_limit[-2:]

  async def posts():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
      return [
        await client.post("/jobs", data={"settings": at_limit}, files={"file": ("a.csv", table)}),
        await client.post("/jobs", data={"settings": over}, files={"file": ("a.csv", table)}),
        await client.post("/jobs", data={"settings": json.dumps(SETTINGS), "path": "x" * (limit + 1)}),
      ]

  at, settings, path = asyncio.run(posts())
  assert len(at_limit.encode()) == limit and len(over.encode()) == limit + 1
  assert at.status_code == 422 and at.json()["detail"]["field"] == "pad", at.text  # read: an unknown setting
  for r, field in ((settings, "settings"), (path, "path")):
    assert r.status_code == 413 and r.json()["detail"] == {
      "field": field,
      "message": f"{field}: the form part holds 1,048,577 bytes, over the 1,048,576 (1 MiB) a text part may hold",
    }, r.text


def test_a_failing_job_reports_its_error(service, table):
  r = service.submit({**SETTINGS, "min_group": 5000}, table)  # halves too small for it: refused at submission
  assert r.status_code == 422 and r.json()["detail"]["field"] == "min_group" and "min_group must be lower" in r.text
  job_id = service.submit({**SETTINGS, "min_group": 400}, table).json()["id"]  # halves of ~1,000 rows, no cohort of 800

  def failed():
    s = service.client.get(f"/jobs/{job_id}").json()
    return s if s["status"] == "failed" else None

  status = _wait(failed, 120, "the job to fail")
  assert "empty cohort space" in status["error"] and "min_group" in status["error"]
  assert status["progress"]["stage"] == "preparing" and status["progress"]["eta_s"] is None  # where it stopped
  r = service.client.get(f"/jobs/{job_id}/report.html")
  assert r.status_code == 409 and r.json()["detail"] == {
    "field": "id",
    "message": f"job {job_id} is failed, not finished",
  }
  time.sleep(0.3)  # a failed job's elapsed time stopped when it failed
  assert service.client.get(f"/jobs/{job_id}").json()["progress"]["elapsed_s"] == status["progress"]["elapsed_s"]


def test_burst_of_status_requests(service, table):
  job_id = service.submit(SETTINGS, table).json()["id"]
  latencies, errors = [], []
  lock = threading.Lock()

  def client():
    with httpx.Client(base_url=service.client.base_url, timeout=30) as c:
      for _ in range(10):
        t0 = time.perf_counter()
        try:
          r = c.get(f"/jobs/{job_id}")
          ok = r.status_code == 200 and r.json()["id"] == job_id
        except httpx.HTTPError as err:
          ok = repr(err)
        with lock:
          latencies.append(time.perf_counter() - t0)
          if ok is not True:
            errors.append(ok)

  threads = [threading.Thread(target=client) for _ in range(20)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and len(latencies) == 200
  p50, p90, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 90, 99))
  print(f"200 status requests from 20 clients: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms")
  assert p99 < 5000


def test_parquet_upload_and_cancel(service, table):
  parquet = io.BytesIO()
  pd.read_csv(io.BytesIO(table)).to_parquet(parquet)
  r = service.submit(SETTINGS, parquet.getvalue(), name="cases.parquet")
  assert r.status_code == 202 and r.json()["cached"] is False
  csv_job = service.submit(SETTINGS, table).json()
  assert csv_job["cached"] is True  # the first test's job
  parquet_found_id = service.finish(r.json()["id"])["id"]
  parquet_found = service.client.get(f"/jobs/{parquet_found_id}/findings.json").json()
  csv_found = service.client.get(f"/jobs/{csv_job['id']}/findings.json").json()
  assert parquet_found["findings"] == csv_found["findings"]
  # Three long jobs on two workers: two run, one waits; cancel all three.
  ids = [service.submit({**LONG, "seed": seed}, table).json()["id"] for seed in (21, 22, 23)]

  def statuses():
    return [service.client.get(f"/jobs/{i}").json()["status"] for i in ids]

  _wait(lambda: sorted(statuses()) == ["queued", "started", "started"], 60, "two started, one queued", statuses)
  # The queued job first: were a started job stopped first, its worker could take the queued one before its cancel.
  queued = next(i for i in ids if service.client.get(f"/jobs/{i}").json()["status"] == "queued")
  r = service.client.delete(f"/jobs/{queued}", params={"purge": "true"})  # an active job is stopped before a purge
  assert r.status_code == 409 and r.json()["detail"]["field"] == "purge" and "stop it first" in r.text, r.text
  for job_id in [queued] + [i for i in ids if i != queued]:
    assert service.client.delete(f"/jobs/{job_id}").status_code == 200
  # 90 s: on 2 loaded cores (the whole suite beside it) a started job took over 30 s to see its stop once
  _wait(lambda: sorted(statuses()) == ["canceled", "stopped", "stopped"], 90, "canceled and stopped jobs", statuses)
  assert service.client.get(f"/jobs/{ids[0]}/findings.json").status_code == 409
  # A worker that took a job off the queue a moment before its cancel starts it regardless (RQ marks it canceled,
  # then the worker marks it started): put the canceled job back where such a worker found it. Its recorded stop
  # must end that run (before this was recorded, such a run went on to its whole budget).
  connection = redis.Redis.from_url(service.redis_url)
  assert connection.exists(STOP_KEY.format(queued))
  connection.rpush(Queue(ServiceConfig().queue, connection=connection).key, queued)
  _wait(lambda: statuses() == ["stopped"] * 3, 90, "the canceled job, started regardless, stopped", statuses)
  assert service.client.get(f"/jobs/{queued}").json()["progress"]["queries"] < LONG["budget"]
  connection.close()
  # Purge (an ops audit: nothing removed a finished job's table and raw search state): an ended job's record and
  # files go, its table too once no other job names it.
  data = service.root / "data"
  parquet_table = data / "tables" / f"{tables.content_hash(parquet.getvalue())}.parquet"
  csv_table = data / "tables" / f"{tables.content_hash(table)}.csv"
  assert parquet_table.exists() and csv_table.exists() and (data / "jobs" / queued / "spec.json").is_file()
  r = service.client.delete(f"/jobs/{queued}", params={"purge": "true"})
  assert r.status_code == 200 and r.json() == {
    "id": queued,
    "was": "stopped",
    "table_removed": False,
    "status": "purged",
  }, r.text
  assert not (data / "jobs" / queued).exists() and csv_table.exists()  # other jobs name the CSV
  assert service.client.get(f"/jobs/{queued}").status_code == 404
  assert queued not in {j["id"] for j in service.client.get("/jobs").json()["jobs"]}
  r = service.client.delete(f"/jobs/{parquet_found_id}", params={"purge": "true"})
  assert r.status_code == 200 and r.json()["was"] == "finished" and r.json()["table_removed"] is True, r.text
  assert not parquet_table.exists() and not (data / "jobs" / parquet_found_id).exists()
  assert service.client.delete(f"/jobs/{parquet_found_id}", params={"purge": "true"}).status_code == 404
  again = service.submit(SETTINGS, parquet.getvalue(), name="cases.parquet")  # a purged job runs afresh
  assert again.status_code == 202 and again.json()["id"] == parquet_found_id and again.json()["cached"] is False
  assert parquet_table.exists() and service.finish(parquet_found_id)["status"] == "finished"


def test_a_stop_whose_message_was_lost_still_stops_the_job(service, table):
  """RQ's stop command is a message its worker ignores if it comes at the wrong moment; the recorded stop
  (`cancel` sets it) makes the job re-send it: here only the record is written, no message sent."""
  job_id = service.submit({**LONG, "seed": 31}, table).json()["id"]
  _wait(lambda: service.client.get(f"/jobs/{job_id}").json()["progress"]["queries"] > 0, 120, "a started job")
  connection = redis.Redis.from_url(service.redis_url)
  connection.set(STOP_KEY.format(job_id), 1)
  final = _wait(lambda: (s := service.client.get(f"/jobs/{job_id}").json())["status"] == "stopped" and s, 60, "stop")
  assert final["progress"]["queries"] < LONG["budget"]
  again = service.submit({**LONG, "seed": 31}, table).json()  # a fresh run: the old stop is not for it
  assert again["id"] == job_id and not connection.exists(STOP_KEY.format(job_id))
  assert service.client.delete(f"/jobs/{job_id}").status_code == 200

  def status():
    return service.client.get(f"/jobs/{job_id}").json()["status"]

  _wait(lambda: status() in ("canceled", "stopped"), 90, "the rerun ended", status)


def _parent(pid: int) -> int:
  """The parent process of `pid` (from /proc)."""
  with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
    return int(handle.read().rsplit(")", 1)[1].split()[1])


def _running(pid: int) -> bool:
  """Whether `pid` is a process that has not exited (a zombie has)."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
      return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_a_work_horse_whose_worker_was_killed_honours_its_stop(service, table):
  """A service audit: a worker SIGKILLed alone (the OOM killer, an operator) leaves its work horse running, in a
  process group of its own and holding the job's lease; RQ's stop command reaches only the dead worker, so the job
  ran on to finished against its stop. The horse honours the recorded stop itself: the job ends stopped where it
  was, its journal kept, and submitting it again resumes from that journal."""
  settings = {**LONG, "budget": 6000, "seed": 41}
  job_id = service.submit(settings, table).json()["id"]
  conn = redis.Redis.from_url(service.redis_url)

  def status():
    return service.client.get(f"/jobs/{job_id}").json()

  _wait(lambda: status()["progress"]["queries"] >= 100, 150, "100 queries", status)
  horse = int(conn.get(LEASE_KEY.format(job_id)))
  worker = next(p for p in service.workers if p.pid == _parent(horse))
  worker.kill()  # SIGKILL, the worker alone
  worker.wait()
  assert _running(horse) and status()["status"] == "started"  # the horse runs on, holding the lease
  service.start_worker()  # the next tests' second worker
  r = service.client.delete(f"/jobs/{job_id}")
  assert r.status_code == 200 and r.json() == {"id": job_id, "was": "started", "status": "started"}, r.text
  final = _wait(lambda: (s := status())["status"] != "started" and s, 150, "the job's end", status)
  assert final["status"] == "stopped" and 100 <= final["progress"]["queries"] < settings["budget"], final
  assert final["progress"]["stage"] == "searching" and final["progress"]["eta_s"] is None
  _wait(lambda: not _running(horse), 30, "the work horse's exit")
  queue = Queue(ServiceConfig().queue, connection=conn, serializer=JSONSerializer)
  assert job_id in queue.failed_job_registry.get_job_ids(cleanup=False)
  assert job_id not in queue.started_job_registry.get_job_ids(cleanup=False)
  assert not conn.exists(LEASE_KEY.format(job_id))
  saved = search_journal.saved_queries(str(service.root / "data" / "jobs" / job_id / "state"))
  # Every query run before the stop is saved (the journal saves as the progress call raises JobStopped; it had kept
  # only its last save, a multiple of 50): the query whose progress call raised never ran.
  assert saved == final["progress"]["queries"] - 1 >= 99, (saved, final)
  again = service.submit(settings, table)  # resumes from the journal the stopped run saved
  assert again.status_code == 202 and again.json() == {**again.json(), "id": job_id, "cached": False}, again.text

  def meta():
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer).get_meta()

  assert (
    _wait(lambda: "resumed_queries" in meta() and meta(), 120, "the rerun's start", meta)["resumed_queries"] == saved
  )
  assert service.client.delete(f"/jobs/{job_id}").status_code == 200
  _wait(lambda: status()["status"] in ("canceled", "stopped"), 90, "the rerun's stop", status)
  conn.close()


def test_worker_killed_mid_job_resumes_to_the_same_findings(service, table, tmp_path):
  job_id = service.submit(LONG, table).json()["id"]
  conn_key = LEASE_KEY.format(job_id)
  _wait(lambda: service.client.get(f"/jobs/{job_id}").json()["progress"]["queries"] >= 300, 150, "300 queries")
  status = service.client.get(f"/jobs/{job_id}").json()
  assert status["status"] == "started" and status["progress"]["queries"] < LONG["budget"]
  assert status["progress"]["stage"] == "searching" and status["progress"]["eta_s"] > 0
  horse = int(redis.Redis.from_url(service.redis_url).get(conn_key))
  with open(f"/proc/{horse}/stat", encoding="ascii") as handle:
    worker = int(handle.read().rsplit(")", 1)[1].split()[1])  # the horse's parent: the worker
  for pid in (worker, horse):  # the worker and its work horse (its own process group), as if the machine died
    os.killpg(os.getpgid(pid), signal.SIGKILL)
  killed_at = status["progress"]["queries"]
  service.start_worker()  # a replacement; the surviving worker requeues the job once its lease lapses
  final = service.finish(job_id, timeout=200)
  assert final["progress"]["queries"] == LONG["budget"]
  found = service.client.get(f"/jobs/{job_id}/findings.json").json()["findings"]
  assert found == _reference(table, LONG, tmp_path)
  journal = json.loads((service.root / "data" / "jobs" / job_id / "state" / "journal.json").read_text())
  meta = Job.fetch(job_id, connection=redis.Redis.from_url(service.redis_url), serializer=JSONSerializer).get_meta()
  assert meta["resumed_queries"] >= 50 and meta["resumed_queries"] % 50 == 0, meta  # resumed from a save, not rerun
  print(f"worker killed at >= {killed_at} queries; the job resumed and ended with {len(found)} identical findings")
  assert journal["queries"] == LONG["budget"]


def test_a_job_rq_failed_as_abandoned_is_requeued_and_a_lost_one_says_so(service):
  """A worker restarted a minute or more after another died: RQ's clean-up, past the dead worker's heartbeat, fails
  its started job as abandoned; `requeue_abandoned` puts it back at the front (it resumes from its journal) rather
  than leave it failed. Before that, the job's status says its worker is lost, with no time left to run.
  (A queue of its own on the suite's Redis: no worker of the service listens to it.)"""
  conn = redis.Redis.from_url(service.redis_url)
  queue = Queue("abandoned-test", connection=conn, serializer=JSONSerializer)
  job = queue.enqueue("builtins.print", "never run", job_id="dabandoned0test")  # an id as the API's (alphanumeric)
  queue.remove(job)
  job.meta.update(started=time.time() - 30, seen=time.time() - 20, queries=300, budget=1000, stage="searching")
  job.meta["paced_from"] = [1, time.time() - 25]
  job.save_meta()
  job.set_status(JobStatus.STARTED)
  progress = jobs.job_status(job)["progress"]
  assert progress["stage"] == jobs.LOST_STAGE and progress["eta_s"] is None  # no lease: its worker is gone
  assert progress["elapsed_s"] == pytest.approx(10, abs=0.5)  # to its last progress
  conn.set(LEASE_KEY.format(job.id), 1, ex=30)
  assert jobs.job_status(job)["progress"]["stage"] == "searching"
  conn.delete(LEASE_KEY.format(job.id))
  job.meta["ended"] = time.time()  # a job that ended and let its lease go an instant before RQ records it: not lost
  job.save_meta()
  assert jobs.job_status(job)["progress"]["stage"] == "searching"
  conn.zadd(queue.started_job_registry.key, {f"{job.id}:gone": 1})  # an audit: requeued then, it ran twice
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == [] and job.get_status(refresh=True) == JobStatus.STARTED
  conn.zrem(queue.started_job_registry.key, f"{job.id}:gone")
  job.meta["ended"] = None
  job.save_meta()
  conn.zadd(queue.started_job_registry.key, {f"{job.id}:gone": 1})  # a heartbeat that lapsed long ago
  queue.started_job_registry.cleanup()
  assert job.get_status(refresh=True) == JobStatus.FAILED
  assert job.latest_result().exc_string.startswith(jobs.RQ_ABANDONED)
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == [job.id]
  assert job.get_status(refresh=True) == JobStatus.QUEUED and queue.get_job_ids()[0] == job.id
  assert job.get_meta()["stage"] == "queued" and job.get_meta()["requeued"] == 1
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == []  # once
  # A job that takes its worker down each time is put back MAX_REQUEUES times, then left failed.
  queue.remove(job)
  job.meta["requeued"] = jobs.MAX_REQUEUES
  job.save_meta()
  job.set_status(JobStatus.STARTED)
  conn.zadd(queue.started_job_registry.key, {f"{job.id}:gone": 1})
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == []
  queue.started_job_registry.cleanup()
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == [] and job.get_status(refresh=True) == JobStatus.FAILED
  queue.empty()


def test_a_job_no_worker_holds_is_stopped_at_once_and_can_be_purged(service):
  """An upgrade audit: with its worker dead and none alive, a job's stop answered "started" and its purge 409, and
  no worker would act on the stop until one took the job back. It is marked stopped at once, its time at its last
  progress, and a purge then removes it. (A queue no worker listens to.)"""
  conn = redis.Redis.from_url(service.redis_url)
  queue = Queue("lost-stop-test", connection=conn, serializer=JSONSerializer)
  job = queue.enqueue("builtins.print", "never run", job_id="dlost0stop0test")
  queue.remove(job)
  job.meta.update(started=time.time() - 30, seen=time.time() - 20, queries=30, budget=100, stage="searching")
  job.save_meta()
  job.set_status(JobStatus.STARTED)
  conn.zadd(queue.started_job_registry.key, {f"{job.id}:gone": time.time() + 60})
  assert jobs.job_status(job)["progress"]["stage"] == jobs.LOST_STAGE
  stopped = service.client.delete(f"/jobs/{job.id}").json()
  assert stopped == {"id": job.id, "was": "started", "status": "stopped"}
  status = service.client.get(f"/jobs/{job.id}").json()
  assert status["progress"]["stage"] == "searching" and status["progress"]["elapsed_s"] == pytest.approx(10, abs=0.5)
  assert queue.started_job_registry.get_job_ids(cleanup=False) == [] and queue.failed_job_registry.get_job_ids() == [
    job.id
  ]
  assert jobs.requeue_abandoned(queue, lease_seconds=LEASE) == []  # a stopped job is not taken back
  purged = service.client.delete(f"/jobs/{job.id}", params={"purge": "true"})
  assert purged.status_code == 200 and purged.json()["was"] == "stopped" and jobs.fetch(conn, job.id) is None
  # A job whose worker holds its lease is left to that worker's stop.
  live = queue.enqueue("builtins.print", "never run", job_id="dlive0stop0test")
  queue.remove(live)
  live.meta.update(started=time.time(), queries=1, budget=100, stage="searching")
  live.save_meta()
  live.set_status(JobStatus.STARTED)
  conn.set(LEASE_KEY.format(live.id), 1, ex=30)
  assert service.client.delete(f"/jobs/{live.id}").json()["status"] == "started"
  conn.delete(LEASE_KEY.format(live.id), STOP_KEY.format(live.id), STOP_KEY.format(job.id))
  live.delete()


def _killed_and_stopped(service, conn, queue: Queue, job_id: str) -> Job:
  """A job as a worker SIGKILLed mid-run leaves it once stopped (`jobs._stop_lost`) and its execution's hash has
  expired: RQ 3 keeps the execution's entry in the job's execution registry 60 s past the hash's TTL, and in that
  window its `Job.delete` raises ValueError (a cold audit, 70-130 s after the kill)."""
  job = queue.enqueue("builtins.print", "never run", job_id=job_id)
  queue.remove(job)
  job.meta.update(started=time.time() - 30, seen=time.time() - 20, queries=30, budget=100, stage="searching")
  job.save_meta()
  job.set_status(JobStatus.STARTED)
  with conn.pipeline() as pipe:  # what the worker wrote as it started the job
    execution = Execution.create(job, ttl=60, pipeline=pipe, worker_name="killed-worker")
    pipe.execute()
  assert service.client.delete(f"/jobs/{job_id}").json()["status"] == "stopped"
  conn.delete(execution.key)  # its TTL ran out; its entry in the job's execution registry is still there
  assert conn.zscore(job.execution_registry.key, execution.id) is not None
  with pytest.raises(ValueError, match="not found in Redis"):
    job.get_executions()
  return job


def test_a_job_a_killed_worker_left_can_be_purged_and_submitted_again_at_once(service, table, monkeypatch):
  """A cold audit: for a minute or two after a worker was SIGKILLed, purging its job or submitting it again
  answered a bare 500 (RQ's `Job.delete` raised on the dead execution), and the purge had removed the job's files
  first, leaving a finished record whose findings were gone. The dead execution's entry is cleared and both work at
  once; a record that still cannot be removed answers 503 naming the job and keeps the files."""
  conn = redis.Redis.from_url(service.redis_url)
  queue = Queue("killed-worker-test", connection=conn, serializer=JSONSerializer)
  data = service.root / "data"
  job = _killed_and_stopped(service, conn, queue, "dkilled0purge0test")
  (data / "jobs" / job.id / "report").mkdir(parents=True)
  (data / "jobs" / job.id / "report" / "findings.json").write_text("{}")
  r = service.client.delete(f"/jobs/{job.id}", params={"purge": "true"})
  assert r.status_code == 200 and r.json() == {
    "id": job.id,
    "was": "stopped",
    "table_removed": False,
    "status": "purged",
  }, r.text
  assert jobs.fetch(conn, job.id) is None and not (data / "jobs" / job.id).exists()
  assert not conn.exists(job.execution_registry.key) and queue.failed_job_registry.get_job_ids() == []
  # Submitting the same table and settings again replaces such a job and runs it.
  settings = {**SETTINGS, "seed": 57}
  job_id = jobs.cache_key(tables.content_hash(table), JobSpec.from_dict(settings), None)
  _killed_and_stopped(service, conn, queue, job_id)
  r = service.submit(settings, table)
  assert r.status_code == 202 and r.json()["id"] == job_id and r.json()["cached"] is False, r.text
  assert service.finish(job_id)["progress"]["queries"] > 0
  assert service.client.get(f"/jobs/{job_id}/findings.json").status_code == 200
  # A record that cannot be removed even so: 503 naming the job, and nothing removed (its files are kept).
  stuck = _killed_and_stopped(service, conn, queue, "dkilled0stuck0test")
  (data / "jobs" / stuck.id).mkdir()
  (data / "jobs" / stuck.id / "spec.json").write_text("{}")

  def failing(self, pipeline=None):
    del pipeline
    raise ValueError(f"Execution e0 of {self.id} not found in Redis")

  monkeypatch.setattr(Job, "delete", failing)
  with pytest.raises(jobs.RecordBusy, match=f"job {stuck.id}: "):
    jobs.purge(ServiceConfig(redis_url=service.redis_url, data_dir=str(data)), conn, stuck.id)
  app = make_app(ServiceConfig(redis_url=service.redis_url, data_dir=str(data)))

  async def purge():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
      return await client.delete(f"/jobs/{stuck.id}", params={"purge": "true"})

  r = asyncio.run(purge())
  assert r.status_code == 503 and r.json()["detail"]["field"] is None, r.text
  assert r.json()["detail"]["message"].startswith(f"job {stuck.id}: its record could not be removed"), r.text
  assert "try again" in r.json()["detail"]["message"] and "nothing was removed" in r.json()["detail"]["message"]
  assert jobs.fetch(conn, stuck.id) is not None and (data / "jobs" / stuck.id / "spec.json").is_file()
  monkeypatch.undo()
  assert service.client.delete(f"/jobs/{stuck.id}", params={"purge": "true"}).json()["was"] == "stopped"
  assert jobs.fetch(conn, stuck.id) is None and not (data / "jobs" / stuck.id).exists()
  conn.close()


def test_ctrl_c_stops_the_api_without_a_traceback(tmp_path):
  """A review: once the API bound its own socket (to log the port --port 0 got), Ctrl-C ended it in uvicorn's
  re-raised KeyboardInterrupt, a traceback and status -2; as uvicorn.run, it stops cleanly with status 0."""
  log = tmp_path / "api.txt"
  with open(log, "w") as out:
    cmd = [sys.executable, "-m", "experiments.serve", "--port", "0", "--data-dir", str(tmp_path / "data")]
    cmd += ["--redis-url", f"redis://127.0.0.1:{_free_port()}/0"]  # none: the API starts all the same
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
      port = int(
        _wait(lambda: re.search(r"API on http://127\.0\.0\.1:(\d+) ", log.read_text()), 60, "the API").group(1)
      )

      def answers():
        try:
          return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 503  # no Redis: 503
        except httpx.TransportError:  # logged just before uvicorn serves
          return False

      _wait(answers, 30, "an answer")
      proc.send_signal(signal.SIGINT)
      assert proc.wait(30) == 0
    finally:
      proc.kill()
  assert "Traceback" not in log.read_text()


def test_a_path_naming_a_folder_is_refused_naming_path(service, tmp_path):
  """A cold audit: `path` naming a folder under --data-root (`sub`, `.`, `sub/`) answered a bare 500 (the folder
  opened, then read as a file). It is refused as no file, naming `path`; a Parquet dataset's folder of part files,
  which the command line reads, is named as such."""
  root = tmp_path / "root"
  (root / "sub").mkdir(parents=True)
  (root / "cases.parquet").mkdir()
  pd.DataFrame({"a": [1, 2]}).to_parquet(root / "cases.parquet" / "part-0.parquet")
  config = ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path / "data"), data_root=str(root))
  for path in ("sub", ".", "sub/", "cases.parquet"):
    with pytest.raises(tables.TableError) as err:
      tables.read_server_path(path, config)
    assert (err.value.field, err.value.status) == ("path", 404), path
    assert str(err.value).startswith("path: is a folder, not a file"), str(err.value)
    assert ("Parquet dataset" in str(err.value)) == (path == "cases.parquet"), str(err.value)
  app = make_app(config)

  async def posts():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
      return [
        await client.post("/jobs", data={"settings": json.dumps(SETTINGS), "path": path})
        for path in ("sub", ".", "sub/", "cases.parquet")
      ]

  for r in asyncio.run(posts()):
    assert r.status_code == 404 and r.json()["detail"]["field"] == "path", r.text
    assert r.json()["detail"]["message"].startswith("path: is a folder, not a file"), r.text


def test_a_stopping_worker_does_not_wait_a_minute_for_its_listener(service):
  """RQ's stop unsubscribes from the worker's channel, then waits for its listening thread. A thread that read the
  unsubscribe reply before the stop flag was set waits for a new subscription as long as it wakes: 60 s in RQ (a
  fresh-clone CI's teardown gave up on a worker after 20 s). Forced here: ours wakes every second."""
  conn = redis.Redis.from_url(service.redis_url)
  worker = jobs.DiscoveryWorker([Queue("listener-test", connection=conn, serializer=JSONSerializer)], connection=conn)
  worker.subscribe()
  _wait(lambda: worker.pubsub.subscribed, 10, "the subscription")
  worker.pubsub.unsubscribe()
  _wait(lambda: not worker.pubsub.subscribed, 10, "the listener to read the reply")  # before the stop flag: the race
  start = time.monotonic()
  worker.unsubscribe()
  assert not worker.pubsub_thread.is_alive() and time.monotonic() - start < 3 * jobs.PUBSUB_WAKE_SECONDS + 2


def test_safe_defaults(service, tmp_path, capsys, monkeypatch):
  with pytest.raises(ValueError, match="needs a token"):
    ServiceConfig(host="0.0.0.0")
  assert serve.main(["--host", "0.0.0.0"]) == 2
  assert "needs a token" in capsys.readouterr().err
  for flags, message in (
    (["--max-upload-mb", "0"], "--max-upload-mb must be a positive"),
    (["--lease-seconds", "0.1"], "--lease-seconds must lie in"),
    (["--agent", str(tmp_path / "nope")], f"--agent {str(tmp_path / 'nope')!r}: no such directory"),
  ):
    assert serve.main(flags) == 2
    assert message in capsys.readouterr().err
  assert ServiceConfig().host == "127.0.0.1"
  # --agent relative to where the server starts (a packaging audit: it was looked up beside the installed package).
  shutil.copy(os.path.join(os.path.dirname(serve.__file__), "agent", "pretrained.npz"), tmp_path / "mine.npz")
  monkeypatch.chdir(tmp_path)
  assert serve.config_of(serve.Args(agent="mine.npz")).agent == str(tmp_path / "mine.npz")
  monkeypatch.undo()
  guarded = make_app(ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path), token=TOKEN))

  async def calls():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://127.0.0.1") as client:
      return [
        await client.get("/jobs"),
        await client.get("/jobs", headers={"Authorization": "Bearer wrong"}),
        await client.get("/health", headers={"Authorization": f"Bearer {TOKEN}"}),
        # With a token, a reverse proxy's public Host and Origin pass (a review: 403 behind nginx).
        await client.get(
          "/health", headers={"Authorization": f"Bearer {TOKEN}", "Host": "cube.example.org", "Origin": "https://x.org"}
        ),
      ]

  none, wrong, right, proxied = asyncio.run(calls())
  # Without the token, an upload is refused from its headers: its body is never received (a security audit).
  received = []

  async def body():
    received.append(True)
    yield b"x" * 1000

  async def upload():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://127.0.0.1") as client:
      return await client.post("/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})

  refused = asyncio.run(upload())
  assert refused.status_code == 401 and refused.json()["detail"]["field"] == "authorization" and received == []
  assert proxied.status_code == 200
  assert none.status_code == 401 and wrong.status_code == 401 and "Bearer" in none.json()["detail"]["message"]
  assert none.json()["detail"]["field"] == wrong.json()["detail"]["field"] == "authorization"
  assert right.status_code == 200 and right.json()["ok"] is True and right.json()["workers"] >= 1
  for flags, message in (
    (["--port", "70000"], "--port must lie in [0, 65535], got 70000"),
    (["--redis-url", "bogus://x"], "--redis-url must start with redis://"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be a positive number of MiB, got inf"),
    (["--worker", "--reconnect-seconds", "-1"], "--reconnect-seconds must be a number of seconds >= 0, got -1"),
    (["--token", "a"], "token must hold at least 16 characters besides spaces"),  # a security audit: 'a' passed
    (["--max-budget", "0"], "--max-budget must lie in [1, 10,000,000], got 0"),
  ):
    assert serve.main(flags) == 2
    assert message in capsys.readouterr().err
  # FastAPI's own pages would answer without the token: off with one (401 without it), on without.
  for app, code in (
    (guarded, 401),
    (make_app(ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path))), 200),
  ):

    async def pages(app=app):
      async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return [await client.get(p) for p in ("/docs", "/openapi.json")]

    assert [r.status_code for r in asyncio.run(pages())] == [code, code]
  # Redis unreachable: 503 naming it, /health {"ok": false}; the worker exits naming --redis-url.
  down = make_app(ServiceConfig(redis_url=f"redis://127.0.0.1:{_free_port()}/0", data_dir=str(tmp_path)))

  async def unreachable():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=down), base_url="http://127.0.0.1") as client:
      return [await client.get("/health"), await client.get("/jobs"), await client.get("/jobs/abc")]

  health, listing, one = asyncio.run(unreachable())
  assert health.status_code == 503 and health.json()["ok"] is False
  for r in (health, listing, one):  # one message, in the API's one error shape
    detail = r.json()["detail"]
    assert r.status_code == 503 and detail["field"] is None and "Redis at redis://127.0.0.1" in detail["message"]
    assert detail == health.json()["detail"] and "is unreachable: ConnectionError" in detail["message"]
  # serve.main sets the root logger up on this test's captured stderr, closed after it: a later test's log line was
  # "--- Logging error ---" in its own stderr (the fresh-clone CI, 2026-12-07). Not here.
  monkeypatch.setattr(logging, "basicConfig", lambda **_kwargs: None)
  assert serve.main(["--worker", "--burst", "--redis-url", f"redis://127.0.0.1:{_free_port()}/0"]) == 2
  assert "Redis is unreachable" in capsys.readouterr().err
  with socket.socket() as busy:  # a port another process listens on: refused before the API starts, naming it
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    assert serve.main(["--port", str(port), "--data-dir", str(tmp_path / "busy")]) == 2
  assert capsys.readouterr().err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there (")
  with pytest.raises(tables.TableError, match="NUL") as err:
    tables.read_server_path("cases\x00.csv", ServiceConfig(data_root=str(tmp_path), data_dir=str(tmp_path)))
  assert err.value.status == 400


def test_a_worker_that_loses_redis_mid_job_is_replaced_and_the_job_finishes(table, tmp_path):
  """Redis restarted (its append-only file kept) while a job runs: RQ's worker ends with the lost connection (an
  audit: the job then stayed started for ever, no worker left); `serve_worker` starts a new one once Redis answers,
  which requeues the job when its lease lapses, and the job finishes from its journal. /health counts the workers."""
  port = _free_port()
  url = f"redis://127.0.0.1:{port}/0"
  cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
  cmd += ["--appendfsync", "always", "--dir", str(tmp_path)]
  log = open(tmp_path / "log.txt", "w")  # noqa: SIM115 (closed below)
  procs = [subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)]
  conn = redis.Redis.from_url(url)
  try:
    _wait(lambda: _pings(conn), 20, "Redis")
    config = ServiceConfig(redis_url=url, data_dir=str(tmp_path / "data"), lease_seconds=LEASE)
    app = make_app(config)

    async def health():
      async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        return (await client.get("/health")).json()

    assert asyncio.run(health()) == {"ok": True, "workers": 0}
    worker = [sys.executable, "-m", "experiments.serve", "--worker", "--redis-url", url, "--data-dir", config.data_dir]
    worker += ["--lease-seconds", str(LEASE), "--save-every", "50"]
    procs.append(subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True))
    path = tmp_path / "cases.csv"
    path.write_bytes(table)
    job_id, _ = jobs.submit(config, conn, JobSpec.from_dict(LONG), tables.content_hash(table), str(path), "cases.csv")
    _wait(lambda: (jobs.fetch(conn, job_id).get_meta(refresh=True).get("queries") or 0) > 50, 120, "the job's queries")
    assert asyncio.run(health())["workers"] == 1
    with contextlib.suppress(redis.exceptions.ConnectionError):
      conn.shutdown()  # what the append-only file holds survives
    procs[0].wait(timeout=20)
    time.sleep(1.0)
    procs[0] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _wait(lambda: _pings(conn), 20, "Redis again")
    _wait(lambda: jobs.fetch(conn, job_id).get_status(refresh=True) == JobStatus.FINISHED, 150, "the job to finish")
    assert procs[1].poll() is None  # the worker process carried on
    assert jobs.fetch(conn, job_id).get_meta(refresh=True)["resumed_queries"] > 0  # from its journal
  finally:
    for proc in reversed(procs):
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    log.close()


def _pings(conn) -> bool:
  try:
    return bool(conn.ping())
  except redis.exceptions.ConnectionError:
    return False


def test_eta_is_timed_from_the_first_query_run_not_from_the_start():
  """A job 40 s in whose first live query ended at 20 s (its compilation) and which has run 100 more since: the 899
  queries left take 899 x 0.2 s; outside the search, or before a second query, there is no estimate."""
  now = time.time()
  meta = {"queries": 101, "budget": 1000, "started": now - 40, "paced_from": [1, now - 20], "stage": "searching"}

  class Fake:
    id = "fake"
    connection = types.SimpleNamespace(exists=lambda _key: True)  # its lease is held

    def __init__(self, meta):
      self.meta = meta

    def get_status(self):
      return JobStatus.STARTED

    def get_meta(self):
      return self.meta

  progress = jobs.job_status(Fake(meta))["progress"]
  assert progress["eta_s"] == pytest.approx(899 * 0.2, abs=1.0) and progress["elapsed_s"] == pytest.approx(40, abs=1)
  assert progress["stage"] == "searching"
  for changed in ({"stage": "confirming"}, {"paced_from": [101, now - 1]}, {"paced_from": None, "queries": 1}):
    assert jobs.job_status(Fake(meta | changed))["progress"]["eta_s"] is None, changed
  # Under a time limit the search stops at it whatever its pace (an audit: 72 s left said of a job 0.4 s from it).
  timed = meta | {"time_limit": 30.0, "searching_since": now - 25}
  assert jobs.job_status(Fake(timed))["progress"]["eta_s"] == pytest.approx(5, abs=1.0)
  assert jobs.job_status(Fake(timed | {"time_limit": 600.0}))["progress"]["eta_s"] == pytest.approx(899 * 0.2, abs=1)
  # A method reports each query as it starts it: the pace starts at the second live query's report (the first
  # one's end, past its compilation), after any replayed from a journal.
  job = Fake({"resumed_queries": 3})
  job.save_meta = lambda: None
  job.connection = types.SimpleNamespace(exists=lambda _key: False)
  progress = jobs._Progress(job)
  for used in (1, 2, 3, 4):  # the replayed ones, then the first live query starts
    progress(used)
    assert job.meta.get("paced_from") is None, used
    assert job.meta["queries"] == max(used, 3)  # the count shown never goes back below the resumed queries
  progress(5)
  assert job.meta["paced_from"][0] == 5
  # A job stopped while it prepared (no progress yet): its seconds run to when RQ ended it, not 0.
  stopped = Fake({"queries": 0, "budget": 1000, "started": now - 40, "stage": "preparing"})
  stopped.get_status = lambda: JobStatus.STOPPED
  stopped.ended_at = datetime.datetime.fromtimestamp(now - 32, datetime.UTC)
  assert jobs.job_status(stopped)["progress"]["elapsed_s"] == pytest.approx(8, abs=0.01)


def test_health_counts_the_workers_that_heartbeat_and_the_data_dir_is_its_owners_only(service):
  """A service audit: /health counted a worker killed mid-job for 80 s (RQ keeps a busy worker's key 90 s after its
  last heartbeat), and the stored tables and search state were world-readable (0755 and 0644 by default)."""
  conn = redis.Redis.from_url(service.redis_url)
  config = ServiceConfig(redis_url=service.redis_url, data_dir=str(service.root / "data"), lease_seconds=LEASE)
  _wait(lambda: jobs.live_workers(config, conn) == 2, 60, "two workers")
  ghost = Worker([jobs.job_queue(config, conn)], connection=conn, name="ghost", serializer=JSONSerializer)
  ghost.register_birth()
  try:
    assert jobs.live_workers(config, conn) == 3  # born an instant ago
    lapsed = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=3 * jobs.heartbeat_seconds(LEASE) + 11)
    conn.hset(ghost.key, "last_heartbeat", utcformat(lapsed))  # its key stays, as a dead busy worker's does
    assert jobs.live_workers(config, conn) == 2 and service.client.get("/health").json()["workers"] == 2
  finally:
    ghost.register_death()
  assert stat.S_IMODE(os.stat(service.root / "data").st_mode) == 0o700
  private = service.root / "elsewhere"
  private.mkdir()
  os.chmod(private, 0o755)
  with pytest.warns(UserWarning, match=r"was open to others \(mode 0755\): made owner-only \(0700\)"):
    assert ServiceConfig(data_dir=str(private)).private_data_dir() == str(private)
  assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
  assert ServiceConfig(data_dir=str(private / "new")).private_data_dir() == str(private / "new")  # no warning
  assert stat.S_IMODE(os.stat(private / "new").st_mode) == 0o700


def test_a_job_asks_for_every_setting_discover_has_and_is_refused_what_no_run_would_read():
  """A service audit: a job could not turn off the newness checks, the pooled check or the mirror rule, nor set the
  weights' tilt or muzero's mode (each refused as an unknown field), a `beam_width` with another method was taken
  and ignored (yet it changed the job's id), a measure named twice in `favorable` was taken (twice in `adjust` is
  refused), and NaN or Infinity, which JSON does not have, were read as numbers."""
  defaults = cube_env.DiscoveryConfig()
  names = {f.name for f in dataclasses.fields(JobSpec)}
  for f in dataclasses.fields(defaults):  # so a job's id (`to_json`) changes with any of the library's defaults
    if f.name != "method_options":
      assert f.name in names and getattr(JobSpec, f.name) == getattr(defaults, f.name), f.name
  off = {"explore_new_z": None, "confirm_new_z": None, "pooled_check": False, "mirror_z": None, "tilt": 0.0}
  spec = JobSpec.from_json(json.dumps({**SETTINGS, **off}))
  config = spec.config()
  assert {k: getattr(config, k) for k in off} == off and config.z_screen == 3.0 and config.method_options == ()
  assert jobs.cache_key("t", spec, None) != jobs.cache_key("t", JobSpec.from_dict(SETTINGS), None)
  muzero = {**SETTINGS, "method": "muzero"}
  assert JobSpec.from_dict({**muzero, "agent_mode": "episodes"}).config(agent="/a").method_options == (
    ("checkpoint", "/a"),
    ("mode", "episodes"),
  )
  assert JobSpec.from_dict(muzero).config(agent="/a").method_options == (("checkpoint", "/a"),)  # as before it
  assert JobSpec.from_dict({**SETTINGS, "method": "beam", "beam_width": 3}).config().method_options == (("width", 3),)
  assert JobSpec.from_dict({**SETTINGS, "beam_width": 8}).config().method_options == ()  # the default: harmless
  for text, field, message in (
    (json.dumps({**SETTINGS, "beam_width": 3}), "beam_width", "is only used by method 'beam' (got method 'uct')"),
    (json.dumps({**SETTINGS, "agent_mode": "episodes"}), "agent_mode", "is only used by method 'muzero'"),
    (json.dumps({**muzero, "agent_mode": "walk"}), "agent_mode", "must be one of frontier, episodes, got 'walk'"),
    (json.dumps({**SETTINGS, "favorable": ["minutes", "minutes"]}), "favorable", "favorable: names 'minutes' twice"),
    (json.dumps({**SETTINGS, "correction": "holm", "tilt": 2.0}), "tilt", "is only used by correction 'weighted'"),
    (json.dumps({**SETTINGS, "pooled_check": 1}), "pooled_check", "must be true or false, got 1"),
    (json.dumps({**SETTINGS, "mirror_z": "no"}), "mirror_z", "must be a number or null, got 'no'"),
    (json.dumps({**SETTINGS, "explore_new_z": 0.0}), "explore_new_z", "must lie in (0, 40] or be None"),
    (json.dumps(SETTINGS)[:-1] + ', "time_limit": Infinity}', "settings", "Infinity is not a JSON number"),
    (json.dumps(SETTINGS)[:-1] + ', "q": NaN}', "settings", "NaN is not a JSON number"),
    # A key given twice: JSON parsers keep the last, silently (a CLI audit: the job ran with the second budget).
    (json.dumps(SETTINGS)[:-1] + ', "budget": 10, "budget": 20}', "budget", "given twice"),
    ('{"a": {"b": 1, "b": 2}}', "b", "given twice"),
  ):
    with pytest.raises(ValueError) as err:
      JobSpec.from_json(text)
    assert err.value.field == field and message in str(err.value), (field, str(err.value))


def test_a_stored_table_a_crash_damaged_is_stored_again_and_never_analysed(service, table, tmp_path):
  """A service audit cut a stored table short, as a power loss after an unsynced rename could: its job analysed
  half the rows under the full file's name, and a resubmission was served that result from the cache; and a crash
  while a table was being written left its temporary copy of health data, which no purge removed."""
  config = ServiceConfig(redis_url=service.redis_url, data_dir=str(tmp_path / "data"), queue="damaged-table")
  conn = redis.Redis.from_url(service.redis_url)
  stored = tables.store_table(table, config)
  job_id, _ = jobs.submit(config, conn, JobSpec.from_dict(SETTINGS), tables.content_hash(table), stored, "cases.csv")
  jobs.fetch(conn, job_id).cancel()  # on a queue no worker serves: run below, in this process
  with open(stored, "r+b") as handle:
    handle.truncate(len(table) // 2)
  with pytest.raises(RuntimeError, match=r"no longer holds the bytes it was stored with .* submit the table again"):
    jobs.run_job(jobs.job_dir(config, job_id))
  assert tables.store_table(table, config) == stored and pathlib.Path(stored).read_bytes() == table  # stored again
  stale, fresh = stored + ".tmp", os.path.join(os.path.dirname(stored), "1" * 32 + ".csv.tmp")
  for path in (stale, fresh):
    with open(path, "wb") as handle:
      handle.write(table[:100])
  os.utime(stale, (time.time() - jobs.STALE_COPY_SECONDS - 60,) * 2)
  other = redis.Redis.from_url(service.redis_url)
  with jobs.table_lock(other, fresh[: -len(".tmp")]):  # an upload writing it: the sweep does not wait for its lock
    t0 = time.perf_counter()
    jobs.sweep_tables(config, conn)
    assert time.perf_counter() - t0 < jobs.SUBMIT_LOCK_SECONDS / 3  # (a review: a purge waited 30 s, then failed)
  other.close()
  assert not os.path.exists(stale) and os.path.exists(fresh) and os.path.exists(stored)  # an upload being written
  conn.close()


def test_a_table_errors_field_names_a_huge_column_cut_short():
  """A review: the table check's error carried a 2 MB column name whole, as `field` and again in the message, and a
  Parquet column of lists named its whole name; both are cut as ingest's messages cut a name."""
  name = "c" * 2_000_000
  err = tables.TableError(name, "is not in the table")
  assert len(err.field) < 100 and err.field.endswith("(2,000,000 characters)") and len(str(err)) < 200
  assert tables.TableError("minutes", "x").field == "minutes"  # a name of a usual length stays whole
