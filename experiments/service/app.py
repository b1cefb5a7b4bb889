"""The HTTP API (FastAPI): submit, list, status with progress, results (JSON, CSV, HTML report), cancel.

    POST   /jobs                     multipart: settings (JSON), and file (CSV or Parquet) or path (under --data-root)
    GET    /jobs                     every job: id, status, method, progress
    GET    /jobs/{id}                status and progress (queries of budget, elapsed, estimated seconds left)
    GET    /jobs/{id}/findings.json  the findings files of a finished job (409 before; 410: another version's)
    GET    /jobs/{id}/findings.csv
    GET    /jobs/{id}/report.html
    DELETE /jobs/{id}                cancel a queued job, stop a running one
    DELETE /jobs/{id}?purge=true     remove an ended job: its record, its files, its table unless another job names it
    GET    /health

Safety: with a token configured every request needs `Authorization: Bearer TOKEN` (401 otherwise, from the headers
before the body is received; the CLI refuses a non-loopback address without one), and FastAPI's own pages (/docs, /redoc, /openapi.json) are off; a body over `max_upload_bytes` (plus the form's overhead) is refused with 413
by FastAPI's body limit before it is parsed, from its Content-Length or, chunked, while it streams in, and a file
part over the limit while it is read; a text part (settings, path) over 1 MiB is a 413 naming it; a bad setting is
a 422 naming the field, a bad table a 400 naming the field
or column. Every error answers one shape, `{"detail": {"field": NAME or null, "message": TEXT}}` (FastAPI's own
404 and 405 included; /health's 503 adds `"ok": false`). Responses carry only job records and the report files the existing writers made, which blank every
count under the small-cell limit and escape every data value in the HTML. Redis unreachable: 503 naming it (and
/health {"ok": false}); a job being stopped and submitted again: 409 (submit once it has stopped); a job's record
that RQ will not remove yet (`jobs.RecordBusy`), on a purge or a resubmission: 503 naming the job, nothing removed.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from rq.job import JobStatus
from starlette.exceptions import HTTPException as StarletteHTTPException

from experiments.service import jobs
from experiments.service.spec import JobSpec, ServiceConfig, SpecError, is_loopback, redacted_url
from experiments.service.tables import (
  TableError,
  check_upload,
  read_limited,
  read_server_path,
  store_table,
  stored_path,
)

MEDIA = {"findings.json": "application/json", "findings.csv": "text/csv", "report.html": "text/html; charset=utf-8"}
# A result is the users' data written out, served from the API's own origin: the report needs no script, frame,
# form, font or fetch (its style is inline and its plots data: images), so none is allowed, and no type is sniffed;
# the CSV downloads (a security audit: the results came with no such header, so one escaping miss would run script
# able to drive the API).
_LOCKED = {
  "Content-Security-Policy": (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
  ),
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
}
RESULT_HEADERS = {
  "findings.json": _LOCKED,
  "findings.csv": {**_LOCKED, "Content-Disposition": 'attachment; filename="findings.csv"'},
  "report.html": _LOCKED,
}
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the settings field, on top of the file's own limit
TEXT_PART_BYTES = 2**20  # the most a text part (settings, path) holds; over it, 413 naming the part
NO_TOKEN = "missing or wrong token: send Authorization: Bearer TOKEN"


def make_app(config: ServiceConfig) -> NamedLimit:
  """The API over `config`'s Redis and data directory (a FastAPI app, wrapped by `NamedLimit`)."""
  connection = jobs.connect(config)
  config.private_data_dir()
  # FastAPI's own body limit answers 413 from Content-Length or, for a chunked body, as soon as it has read past it.
  # With a token every route needs it, so FastAPI's own pages (/docs, /redoc, /openapi.json) are off: they would
  # answer without it (and /docs loads its JavaScript from a CDN).
  pages = {} if config.token is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
  # Starlette's own limit on a text part (1 MiB) answers 400 naming no part, so it is set past the body's and the
  # route checks each part's size itself (`_check_text_parts`): 413 naming the part.
  body_limit = config.max_upload_bytes + FORM_OVERHEAD
  app = FastAPI(
    title="cube-muzero discovery",
    version="1",
    max_body_size=body_limit,
    form_limits={"max_part_size": max(body_limit, TEXT_PART_BYTES)},
    **pages,
  )

  if config.token is not None:
    expected = f"Bearer {config.token}".encode()

    @app.middleware("http")
    async def token_before_body(request: Request, call_next):
      """The token check of every request, route or not: without it, 401 from the headers, before the body is
      received (a security audit: an upload up to the limit was received and parsed as a form before the routes'
      own check, since removed, refused it)."""
      if not secrets.compare_digest(request.headers.get("authorization", "").encode(), expected):
        return JSONResponse({"detail": {"field": "authorization", "message": NO_TOKEN}}, status_code=401)
      return await call_next(request)

  if is_loopback(config.host) and config.token is None:  # with a token, a page can send neither it nor a job

    @app.middleware("http")
    async def loopback_names_only(request: Request, call_next):
      """Bound to loopback, the API answers only requests that name a loopback host, from no page or a loopback
      one (a security audit: a web page could reach the token-less default through DNS rebinding, or post jobs
      cross-site): a foreign `Host` or `Origin` gets 403 before anything is read."""
      for what in ("Host", "Origin"):  # an Origin of 'null' (a sandboxed page, a file) names no loopback host
        value = request.headers.get(what.lower(), "")
        if value and not _loopback_name(value):
          return JSONResponse(
            {"detail": {"field": None, "message": f"{what} {value!r} is not this loopback address"}}, status_code=403
          )
      return await call_next(request)

  too_large = {"field": "file", "message": _too_large(config)}

  @app.exception_handler(StarletteHTTPException)
  async def one_shape(request: Request, err: StarletteHTTPException):
    """Every error in one shape (`_fail`). A body found too large while it streams in: FastAPI says only "Content
    Too Large"; name the limit. FastAPI's own errors (an unknown route, a method the route lacks) name no field."""
    if err.status_code == 413 and not isinstance(err.detail, dict):
      err = HTTPException(413, too_large, headers=err.headers)
    elif not isinstance(err.detail, dict):
      err = HTTPException(err.status_code, {"field": None, "message": str(err.detail)}, headers=err.headers)
    return await http_exception_handler(request, err)

  async def job_store_down(request: Request, err: Exception):
    """Redis unreachable: 503 saying so (the jobs and their state are there; nothing can be queued or read now)."""
    del request
    return JSONResponse({"detail": _store_down(config, err)}, status_code=503)

  for down in jobs.REDIS_DOWN:
    app.add_exception_handler(down, job_store_down)

  @app.exception_handler(RequestValidationError)
  async def name_the_form_field(request: Request, err: RequestValidationError):
    """A form that FastAPI could not bind (a missing field, settings sent as a file): 422 naming the field, in the
    shape of the other errors, without FastAPI's dump of what was sent (an upload's internals)."""
    del request
    first = (err.errors() or [{}])[0]
    field = str((first.get("loc") or ("body", "settings"))[-1])
    if first.get("type") == "missing":
      message = f"{field}: is required" + (" (a form field holding the JSON settings)" if field == "settings" else "")
    elif field == "settings":
      message = "settings: must be a text form field holding JSON (curl -F 'settings={...}'), not a file"
    elif field == "file":
      message = "file: must be a file upload (curl -F file=@cases.csv)"
    else:
      message = f"{field}: {first.get('msg', 'is not valid')}"
    return JSONResponse({"detail": {"field": field, "message": message}}, status_code=422)

  @app.get("/health")
  def health():
    try:
      ok = bool(connection.ping())
      workers = jobs.live_workers(config, connection)  # a dead one drops out within 3 lease periods and 10 s
      return {"ok": ok, "workers": workers}  # 0: queued jobs wait until a worker starts
    except jobs.REDIS_DOWN as err:
      return JSONResponse({"ok": False, "detail": _store_down(config, err)}, status_code=503)

  @app.post("/jobs", status_code=202)
  def create(
    settings: Annotated[str, Form()],
    file: Annotated[UploadFile | None, File()] = None,
    path: Annotated[str | None, Form()] = None,
  ):
    _check_text_parts(settings=settings, path=path)
    try:
      spec = JobSpec.from_json(settings)
    except SpecError as err:
      raise _fail(422, err.field, str(err)) from None
    if spec.budget > config.max_budget:  # a search's memory grows with its queries (README, Security)
      raise _fail(
        422,
        "budget",
        f"budget: must be at most {config.max_budget:,} on this server (serve --max-budget), got {spec.budget:,}",
      )
    if spec.time_limit is not None and spec.time_limit >= config.job_timeout:  # RQ would kill it first (an audit)
      raise _fail(
        422,
        "time_limit",
        f"time_limit: must be under the {config.job_timeout:,} s a job may run on this server (RQ's job timeout; "
        f"preparing and confirming take time too), got {spec.time_limit:g}",
      )
    if spec.method == "muzero" and config.agent is None:
      raise _fail(422, "method", "method: muzero needs a server started with --agent")
    if (file is None) == (path is None):
      raise _fail(422, "file", "file: send exactly one of file (an upload) or path")
    try:
      if file is not None:
        data, field, source = read_limited(file.file, config.max_upload_bytes), "file", file.filename or "upload"
      else:
        data, field, source = read_server_path(path, config), "path", os.path.basename(path)
      table_hash = check_upload(data, spec, config, field=field)
    except TableError as err:
      raise _fail(err.status, err.field, str(err)) from None
    try:
      with jobs.table_lock(connection, stored_path(data, config, table_hash)):  # no purge removes it meanwhile
        stored = store_table(data, config, table_hash)
        job_id, cached = jobs.submit(
          config, connection, spec, table_hash, stored, f"{source} ({len(data)} bytes, blake2b {table_hash})"
        )
    except jobs.JobStopping as err:
      raise _fail(409, None, str(err)) from None
    except (jobs.SubmitBusy, jobs.RecordBusy) as err:  # RecordBusy: the earlier run's record (a killed worker's)
      raise _fail(503, None, str(err)) from None
    return {"id": job_id, "cached": cached, **_links(job_id)}

  @app.get("/jobs")
  def list_jobs() -> dict:
    queue = jobs.job_queue(config, connection)
    ids = list(dict.fromkeys(_all_ids(queue)))
    records = [jobs.fetch(connection, i) for i in ids]
    return {"jobs": [jobs.job_status(j) for j in records if j is not None]}

  @app.get("/jobs/{job_id}")
  def status(job_id: str) -> dict:
    return {**jobs.job_status(_job(job_id)), **_links(job_id)}

  @app.get("/jobs/{job_id}/{name}")
  def result(job_id: str, name: str):
    if name not in MEDIA:
      raise _fail(404, "name", f"no such result {name!r}; results are {', '.join(MEDIA)}")
    job = _job(job_id)
    status = job.get_status()
    if status != JobStatus.FINISHED:
      raise _fail(409, "id", f"job {job_id} is {jobs.status_text(status)}, not finished")
    why = jobs.outdated(job)
    if why is not None:  # another version's report (an upgrade audit: an old one served its small counts)
      raise _fail(410, "id", why)
    path = os.path.join(jobs.job_dir(config, job_id), "report", name)
    if not os.path.isfile(path):  # removed from the data directory since: the record says finished, the file is gone
      raise _fail(404, "id", f"job {job_id}'s {name} is no longer on the server; submit the job again to rebuild it")
    return FileResponse(path, media_type=MEDIA[name], headers=RESULT_HEADERS[name])

  @app.delete("/jobs/{job_id}")
  def cancel(job_id: str, purge: bool = False) -> dict:
    if purge:  # also a directory whose record a purge that failed midway removed (`jobs.purge`)
      if not (job_id.isascii() and job_id.isalnum()):
        raise _fail(404, "id", f"no job {job_id!r}")
      try:
        return {**jobs.purge(config, connection, job_id), "status": "purged"}
      except KeyError:  # no record and no directory: never submitted, or purged
        raise _fail(404, "id", f"no job {job_id!r}") from None
      except jobs.JobActive as err:
        raise _fail(409, "purge", str(err)) from None
      except (jobs.SubmitBusy, jobs.RecordBusy) as err:  # RecordBusy: nothing removed, so it can be sent again
        raise _fail(503, None, str(err)) from None
      except OSError as err:  # the files: the record stays, so the purge can be sent again
        raise _fail(
          500, None, f"job {job_id}: its files could not be removed ({type(err).__name__}); try again"
        ) from None
    _job(job_id)
    was = jobs.cancel(connection, job_id)
    return {"id": job_id, "was": was, "status": jobs.job_status(_job(job_id))["status"]}

  def _job(job_id: str):
    job = jobs.fetch(connection, job_id) if job_id.isascii() and job_id.isalnum() else None  # RQ's ids: ASCII
    if job is None:
      raise _fail(404, "id", f"no job {job_id!r}")
    return job

  return NamedLimit(app, json.dumps({"detail": too_large}).encode())


def _loopback_name(value: str) -> bool:
  """A Host header or an Origin ('127.0.0.1:8000', 'http://localhost:8000', '[::1]') naming a loopback host."""
  if "@" in value:  # 'evil@127.0.0.1': no browser sends it
    return False
  try:
    host = urllib.parse.urlsplit(value if "://" in value else "//" + value).hostname
  except ValueError:  # '[::1' (a review: it answered 500)
    return False
  return host is not None and is_loopback(host)


def _fail(status: int, field: str | None, message: str) -> HTTPException:
  """An error in the API's one shape: `{"detail": {"field": field, "message": message}}` (field None where no one
  field or form part is at fault)."""
  return HTTPException(status, {"field": field, "message": message})


def _check_text_parts(**parts: str | None) -> None:
  """A 413 naming the first text form part over `TEXT_PART_BYTES` (its UTF-8 bytes; a job's settings are a few
  hundred bytes of JSON)."""
  for field, value in parts.items():
    size = len(value.encode("utf-8", "surrogatepass")) if value is not None else 0
    if size > TEXT_PART_BYTES:
      raise _fail(
        413,
        field,
        f"{field}: the form part holds {size:,} bytes, over the {TEXT_PART_BYTES:,} "
        f"({TEXT_PART_BYTES / 2**20:g} MiB) a text part may hold",
      )


def _store_down(config: ServiceConfig, err: Exception) -> dict:
  """The 503 detail when Redis is unreachable (the routes' and /health's): names the store, its address without
  a password, and the error's kind."""
  message = f"the job store (Redis at {redacted_url(config.redis_url)}) is unreachable: {type(err).__name__}"
  return {"field": None, "message": message}


def _too_large(config: ServiceConfig) -> str:
  mib = config.max_upload_bytes / 2**20
  return f"file: the request is larger than this server's upload limit of {mib:.4g} MiB (serve --max-upload-mb)"


class NamedLimit:
  """The API as served: FastAPI's app, whose body limit answers a request whose Content-Length is over it with a
  plain "Content Too Large" before any handler runs; this ASGI wrapper sends `body` (JSON naming the limit and the
  flag, as every other error of the API) instead. Attributes are the FastAPI app's."""

  def __init__(self, app: FastAPI, body: bytes):
    self.app, self.body = app, body

  def __getattr__(self, name: str):
    return getattr(self.app, name)

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    state = {"swap": False, "sent": False}

    async def named(message):
      if message["type"] == "http.response.start" and message["status"] == 413:
        state["swap"] = dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"text/plain")
        if state["swap"]:
          length = str(len(self.body)).encode()
          message = {**message, "headers": [(b"content-type", b"application/json"), (b"content-length", length)]}
      elif message["type"] == "http.response.body" and state["swap"]:
        if state["sent"]:
          return  # the plain text's later parts, if any
        state["sent"] = True
        message = {"type": "http.response.body", "body": self.body, "more_body": False}
      await send(message)

    await self.app(scope, receive, named)


def _links(job_id: str) -> dict:
  return {"status_url": f"/jobs/{job_id}", "results": {name: f"/jobs/{job_id}/{name}" for name in MEDIA}}


def _all_ids(queue) -> list[str]:
  registries = (
    queue.started_job_registry,
    queue.finished_job_registry,
    queue.failed_job_registry,
    queue.canceled_job_registry,
  )
  out = list(queue.get_job_ids())
  for registry in registries:
    out.extend(registry.get_job_ids(cleanup=False))  # listing never moves a job (the workers do maintenance)
  return out
