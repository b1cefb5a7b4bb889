"""Discovery as a service: `python -m experiments.serve` (the HTTP API) or `python -m experiments.serve --worker`.

The API (FastAPI on uvicorn) takes discovery jobs and queues them on Redis; workers (RQ) run them, resumably, and
write their reports; results are cached by the table's content and the settings. The API binds 127.0.0.1 unless
`--host` says otherwise, and then needs `--token` (or CUBE_SERVE_TOKEN). This module parses flags and calls
`experiments.service`; see README, *Discovery as a service*.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import socket
import subprocess
import sys
from typing import Annotated

import tyro

from experiments.launch import compile_cache
from experiments.launch.errors import UsageError
from experiments.launch.resume import refuse_repeated_flags

try:  # the service extra (a packaging audit: its absence was a bare "No module named 'uvicorn'")
  import uvicorn

  from experiments.service import ServiceConfig, make_app
  from experiments.service.jobs import RECONNECT_SECONDS, REDIS_DOWN, connect, serve_worker
  from experiments.service.spec import redacted_url
except ModuleNotFoundError as err:
  if (err.name or "").split(".")[0] in ("experiments", "cube_env", "muzero_jax"):  # the project's own: not the extra
    raise
  raise ModuleNotFoundError(
    f"{err}: python -m experiments.serve needs the service extra (pip install 'cube-muzero[service]')", name=err.name
  ) from None

_DEFAULTS = ServiceConfig()


@dataclasses.dataclass(frozen=True)
class Args:
  """Run the discovery API, or a worker that runs its jobs."""

  worker: bool = False
  """Run a worker (RQ) instead of the API."""
  burst: bool = False
  """--worker: stop when the queue is empty."""
  redis_url: str = _DEFAULTS.redis_url
  """The Redis server of the queue and the job records."""
  data_dir: str = _DEFAULTS.data_dir
  """Tables the server stored and one directory per job (search state, report); API and workers must share it."""
  host: str = _DEFAULTS.host
  """Address the API binds; anything but loopback needs --token."""
  port: int = _DEFAULTS.port
  """Port of the API."""
  token: Annotated[str | None, tyro.conf.arg(help_behavior_hint="(default: $CUBE_SERVE_TOKEN, if set)")] = None
  """Required as 'Authorization: Bearer TOKEN' on every request."""
  max_upload_mb: float = _DEFAULTS.max_upload_bytes / 2**20
  """Largest table accepted (upload or server file), in MiB."""
  data_root: str | None = None
  """A server directory whose files jobs may name by path instead of uploading them."""
  agent: str | None = None
  """A trained agent's directory (experiments.train --checkpoint-dir): enables method muzero."""
  lease_seconds: float = _DEFAULTS.lease_seconds
  """A running job's lease; workers requeue a started job whose lease lapsed (its worker died)."""
  save_every: int = _DEFAULTS.save_every
  """Queries between saves of a job's search state."""
  max_budget: int = _DEFAULTS.max_budget
  """Most queries a job may ask for (a search holds about 7 KB a query, more on wide tables)."""
  reconnect_seconds: float = RECONNECT_SECONDS
  """--worker: how long a worker that lost Redis while running a job waits for it to answer again (then exits with
  status 2); a new worker then resumes the job. An idle worker that loses Redis retries until it answers."""


def config_of(args: Args) -> ServiceConfig:
  """The `ServiceConfig` of the flags (ValueError naming the bad flag); `--agent` is loaded once to check it (in a
  child process, `_check_agent`), so a wrong path stops the server at start-up, not each muzero job in a worker."""
  if not (args.max_upload_mb * 2**20 >= 1 and math.isfinite(args.max_upload_mb)):
    raise ValueError(f"--max-upload-mb must be a positive number of MiB, got {args.max_upload_mb}")
  if not (args.reconnect_seconds >= 0 and math.isfinite(args.reconnect_seconds)):
    raise ValueError(f"--reconnect-seconds must be a number of seconds >= 0, got {args.reconnect_seconds}")
  if args.agent is not None:
    _check_agent(args.agent)
  try:
    return _service_config(args)
  except ValueError as err:  # ServiceConfig names its field: say the flag
    message = str(err)
    field = next((f.name for f in dataclasses.fields(ServiceConfig) if message.startswith(f.name + " ")), None)
    if field is None:
      raise
    raise ValueError("--" + field.replace("_", "-") + message[len(field) :]) from None


_LOAD_AGENT = """
import sys
from experiments.agent.loading import load_agent
try:
  load_agent(sys.argv[1])
except ValueError as err:
  print(err, file=sys.stderr)
  sys.exit(2)
"""


def _check_agent(path: str) -> None:
  """Loads the agent once, in a child process on the CPU: neither the API nor a worker's parent (which forks a work
  horse for each job) may start JAX, which is not fork-safe and on a GPU would hold its memory for the server's life.

  Raises:
    ValueError naming --agent.
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
    [sys.executable, "-c", _LOAD_AGENT, os.path.abspath(path)],  # the child runs beside the package (a packaging audit)
    cwd=root,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    check=False,
  )
  if proc.returncode != 0:
    lines = proc.stderr.strip().splitlines() or ["no message"]
    message = lines[-1] if proc.returncode == 2 else f"--checkpoint {path!r}: cannot load an agent ({lines[-1]})"
    raise ValueError(message.replace("--checkpoint", "--agent", 1))  # the loader names the discover flag


def _service_config(args: Args) -> ServiceConfig:
  return ServiceConfig(
    redis_url=args.redis_url,
    data_dir=args.data_dir,
    host=args.host,
    port=args.port,
    token=args.token or os.environ.get("CUBE_SERVE_TOKEN") or None,
    max_upload_bytes=int(args.max_upload_mb * 2**20),
    data_root=args.data_root,
    agent=None if args.agent is None else os.path.abspath(args.agent),  # workers may start elsewhere
    lease_seconds=args.lease_seconds,
    save_every=args.save_every,
    max_budget=args.max_budget,
  )


ROUTINE = re.compile(r"cleaning (group )?registries", re.IGNORECASE)  # RQ 3's maintenance lines, every lease period


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    refuse_repeated_flags(argv)
  except UsageError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  args = tyro.cli(Args, args=argv)
  try:
    config = config_of(args)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  # Timestamped lines (an upgrade audit: RQ's lines had none), and no line for RQ's routine registry clean-up.
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
  logging.getLogger("rq.worker").addFilter(lambda record: not ROUTINE.search(record.getMessage()))
  if args.worker:
    try:
      serve_worker(config, burst=args.burst, reconnect_seconds=args.reconnect_seconds)
    except REDIS_DOWN as err:
      print(f"error: --redis-url {redacted_url(config.redis_url)}: Redis is unreachable ({err})", file=sys.stderr)
      return 2
    return 0
  try:  # bound here, so that the log names the port the system gave for --port 0 (a CLI audit: it said 0)
    socks = _bind(config.host, config.port)
  except OSError as err:
    print(
      f"error: --host {config.host} --port {config.port}: cannot listen there ({err.strerror or err})", file=sys.stderr
    )
    return 2
  app = make_app(config)
  log = logging.getLogger("experiments.serve")
  log.info(
    "API on http://%s:%d (Redis %s, data %s)",
    config.host,
    socks[0].getsockname()[1],
    redacted_url(config.redis_url),
    os.path.abspath(config.data_dir),
  )
  if config.token is None:  # loopback only, but every local account reaches it (a security audit)
    log.warning(
      "no --token: every account on this machine can use the API as this user (read, purge and submit jobs, "
      "including files under --data-root it could not read itself); set --token on a machine shared with others"
    )
  try:
    connect(config).ping()
  except REDIS_DOWN as err:  # the API starts regardless and answers 503 until Redis does (an upgrade audit: silent)
    log.warning(
      "Redis at --redis-url %s does not answer (%s): requests get 503 until it does",
      redacted_url(config.redis_url),
      err,
    )
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
  # As uvicorn.run: Ctrl-C is the way to stop it (a review: it ended in a traceback); a failed start is status 3.
  with contextlib.suppress(KeyboardInterrupt):
    server.run(sockets=socks)
  return 0 if server.started else 3


def _bind(host: str, port: int) -> list[socket.socket]:
  """Sockets on every address `host` names (a name such as `localhost` may name ::1 and 127.0.0.1: a review found
  only the first bound) and `port` (0: one the system picks, then the same one for the others), set up as asyncio
  sets up its own (address reuse; IPv6 sockets IPv6 only; the listen backlog is uvicorn's to set)."""
  socks: list[socket.socket] = []
  seen = set()
  try:
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
      if (family, address[:2]) in seen:
        continue
      seen.add((family, address[:2]))
      sock = socket.socket(family, kind, proto)
      socks.append(sock)
      sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
      if socks[1:]:  # the port the first one got
        address = (address[0], socks[0].getsockname()[1], *address[2:])
      sock.bind(address)
      sock.set_inheritable(True)
  except OSError:
    for sock in socks:
      sock.close()
    raise
  return socks


if __name__ == "__main__":
  compile_cache.enable()
  sys.exit(main())
