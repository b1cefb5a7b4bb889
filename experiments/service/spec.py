"""The service's settings and a job's settings, each a typed frozen dataclass checked on construction.

A job's settings arrive as JSON from a client: `JobSpec.from_json` refuses unknown fields and wrong types, naming
the field, and builds the `cube_env.DiscoveryConfig` it implies, whose own checks name the field too. Nothing a
client sends is ever unpickled: the spec is JSON on the way in and JSON on disk.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import stat
import warnings
from typing import Any

import cube_env
from cube_env.data import ingest
from cube_env.discovery.pipeline import check_favorable

LOOPBACK = "127.0.0.1"


class SpecError(ValueError):
  """A job's settings are wrong; `field` names the offending field (the API answers 422 with it)."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field


MIN_TOKEN_CHARS = 16  # a token's fewest characters (besides spaces)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
  """Settings of one service (API and workers share them)."""

  redis_url: str = "redis://127.0.0.1:6379/0"  # the Redis server of the queue and the job records
  data_dir: str = "runs/serve"  # tables the server wrote, and one directory per job (state, report)
  queue: str = "discovery"  # RQ queue name
  host: str = LOOPBACK  # the API's address; anything but loopback needs a token
  port: int = 8000
  token: str | None = None  # required as "Authorization: Bearer TOKEN" on every request when set
  max_upload_bytes: int = 50 * 1024 * 1024  # larger uploads (and server files) are refused with 413
  data_root: str | None = None  # server directory whose files a job may name by path (None: uploads only)
  agent: str | None = None  # a trained agent's directory: enables method "muzero"
  lease_seconds: float = 10.0  # a running job's lease; a job whose lease lapsed is abandoned and requeued
  save_every: int = 100  # queries between saves of a job's search state
  job_timeout: int = 24 * 3600  # seconds a job may run (RQ's timeout)
  max_budget: int = 1_000_000  # queries a job may ask for here (a search holds about 7 KB a query; MAX_BUDGET at most)

  def __post_init__(self):
    if self.max_upload_bytes < 1:
      raise ValueError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
    if not 0.5 <= self.lease_seconds <= 3600:
      raise ValueError(f"lease_seconds must lie in [0.5, 3600], got {self.lease_seconds}")
    if self.save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {self.save_every}")
    if not 1 <= self.max_budget <= MAX_BUDGET:
      raise ValueError(f"max_budget must lie in [1, {MAX_BUDGET:,}], got {self.max_budget:,}")
    if isinstance(self.port, bool) or not 0 <= self.port <= 65535:  # 0: any free port
      raise ValueError(f"port must lie in [0, 65535], got {self.port}")
    if not self.redis_url.lower().startswith(("redis://", "rediss://", "unix://")):
      raise ValueError(
        f"redis_url must start with redis://, rediss:// or unix://, got {redacted_url(self.redis_url)!r}"
      )
    if not is_loopback(self.host) and not self.token:
      raise ValueError(f"binding {self.host} (not loopback) needs a token (--token or CUBE_SERVE_TOKEN)")
    if self.token is not None and len(self.token.strip()) < MIN_TOKEN_CHARS:  # a security audit: ' ' and 'a' passed
      raise ValueError(
        f"token must hold at least {MIN_TOKEN_CHARS} characters besides spaces (python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')"
      )

  def private_data_dir(self) -> str:
    """Makes `data_dir` (stored tables, and jobs' search state without the small-cell rule) and returns it, readable by
    its owner only (0700) whatever the umask, so nothing under it is (a service audit: 0755 and 0644 by default). An
    existing directory open to others is closed with a warning naming its old mode; ValueError naming it where that
    is not ours to do."""
    os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
    mode = stat.S_IMODE(os.stat(self.data_dir).st_mode)
    if mode & 0o077:
      try:
        os.chmod(self.data_dir, 0o700)
      except PermissionError:
        raise ValueError(
          f"data_dir {self.data_dir!r} is open to others (mode {mode:04o}) and not ours to close: it will hold health "
          "data; give one this user owns"
        ) from None
      warnings.warn(
        f"data_dir {self.data_dir!r} was open to others (mode {mode:04o}): made owner-only (0700)", stacklevel=2
      )
    return self.data_dir


def redacted_url(url: str) -> str:
  """A Redis URL without its password, in the user part or the query (redis://:secret@host, ?password=secret)."""
  url = re.sub(r"(//[^/?#]*?:)[^/?#]*@", r"\1***@", url)  # to the authority's last '@' (a password may hold one)
  return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def is_loopback(host: str) -> bool:
  """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


METHODS = (
  "auto",
  "exhaustive",
  "learned",
  "frontier",
  "uct",
  "beam",
  "greedy",
  "random",
  "muzero",
)  # what a job may ask for


MAX_BUDGET = 10_000_000  # queries a job may ask for (hours of a worker at a thousand queries a second)


AGENT_MODES = ("frontier", "episodes")  # how method "muzero" plays (`--agent-mode`)
_DEFAULTS = cube_env.DiscoveryConfig()


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSpec:
  """A discovery job's settings (the table comes apart): column roles, method, budget and `DiscoveryConfig` fields.

  Every `DiscoveryConfig` setting but `method_options` is a field here, with the library's default (a test checks
  it), so a job can ask for what `discover` can, and its id (`jobs.cache_key`, which hashes `to_json`) changes with
  any default. `beam_width` and `agent_mode` are the method's options (`beam`'s, `muzero`'s; refused with another
  method unless left at their defaults). The defaults of `method` and `budget` are the library's, `uct` and 1,000
  queries, not the command line's `auto` and 100,000: a server's job should not hold a worker for hours unasked.
  """

  dimensions: tuple[str, ...]
  protected: tuple[str, ...]
  measures: tuple[str, ...]
  method: str = _DEFAULTS.method
  budget: int = _DEFAULTS.budget
  max_depth: int = _DEFAULTS.max_depth
  min_group: int = _DEFAULTS.min_group
  z_screen: float | str = _DEFAULTS.z_screen
  explore_new_z: float | None = _DEFAULTS.explore_new_z
  q: float = _DEFAULTS.q
  correction: str = _DEFAULTS.correction
  tilt: float = _DEFAULTS.tilt
  confirm_new_z: float | None = _DEFAULTS.confirm_new_z
  pooled_check: bool = _DEFAULTS.pooled_check
  mirror_z: float | None = _DEFAULTS.mirror_z
  min_relative_diff: float = _DEFAULTS.min_relative_diff
  adjust: tuple[str, ...] = ()
  favorable: tuple[str, ...] = ()
  seed: int = _DEFAULTS.seed
  explore_fraction: float = _DEFAULTS.explore_fraction
  max_categories: int = _DEFAULTS.max_categories
  beam_width: int = 8
  agent_mode: str = AGENT_MODES[0]
  time_limit: float | None = _DEFAULTS.time_limit  # seconds the search may spend (auto plans with it); None: no limit

  @classmethod
  def from_json(cls, text: str | bytes) -> JobSpec:
    """Parses and checks a client's JSON object (SpecError naming the field)."""
    try:
      raw = json.loads(text, parse_constant=_not_json, object_pairs_hook=_no_repeated_keys)
    except SpecError:
      raise
    except ValueError as err:
      raise SpecError("settings", f"not valid JSON ({err})") from None
    except RecursionError:
      raise SpecError("settings", "not valid settings (nested too deeply)") from None
    if not isinstance(raw, dict):
      raise SpecError("settings", "must be a JSON object")
    return cls.from_dict(raw)

  @classmethod
  def from_dict(cls, raw: dict[str, Any]) -> JobSpec:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
      if name not in fields:
        raise SpecError(name, f"unknown field; fields are {', '.join(fields)}")
    for name in ("dimensions", "protected", "measures"):
      if name not in raw:
        raise SpecError(name, "is required (a list of column names)")
    values = {}
    for name, value in raw.items():
      values[name] = _typed(name, value, getattr(cls(dimensions=(), protected=(), measures=()), name))
    spec = cls(**values)
    spec.config()  # DiscoveryConfig's checks
    try:  # the column roles, before any table is read
      ingest.check_roles(dataclasses.replace(spec.schema(), adjusters=spec.adjust))
    except ingest.RoleError as err:
      raise SpecError("adjust" if err.role == "adjusters" else err.role, str(err)) from None
    return spec

  def config(self, *, agent: str | None = None) -> cube_env.DiscoveryConfig:
    """The `DiscoveryConfig` of this job (SpecError naming the field when a value is out of range)."""
    if self.method not in METHODS:
      raise SpecError("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
    if self.beam_width < 1:
      raise SpecError("beam_width", f"must be at least 1, got {self.beam_width}")
    for name in ("budget", "beam_width"):
      if getattr(self, name) > MAX_BUDGET:  # one request must not hold a worker for days
        raise SpecError(name, f"must be at most {MAX_BUDGET:,}, got {getattr(self, name):,}")
    if self.agent_mode not in AGENT_MODES:
      raise SpecError("agent_mode", f"must be one of {', '.join(AGENT_MODES)}, got {self.agent_mode!r}")
    for name, only in (("beam_width", "beam"), ("agent_mode", "muzero")):  # an option the method would not read
      if self.method != only and getattr(self, name) != getattr(JobSpec, name):
        raise SpecError(name, f"is only used by method {only!r} (got method {self.method!r})")
    if self.correction != "weighted" and self.tilt != JobSpec.tilt:  # as `discover --tilt` (a review)
      raise SpecError("tilt", f"is only used by correction 'weighted' (got correction {self.correction!r})")
    try:
      check_favorable(self.favorable, self.measures)
    except ValueError as err:
      raise SpecError("favorable", str(err)) from None
    options: tuple = ()
    if self.method == "beam":
      options = (("width", self.beam_width),)
    elif self.method == "muzero":
      # The mode only where it is not the default: a job queued before the field resumes under its journal's options.
      mode = (("mode", self.agent_mode),) if self.agent_mode != AGENT_MODES[0] else ()
      options = ((("checkpoint", agent),) if agent is not None else ()) + mode
    settings = {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(self)
      if f.name not in ("dimensions", "protected", "measures", "beam_width", "agent_mode")
    }
    try:
      return cube_env.DiscoveryConfig(**settings, method_options=options)
    except (ValueError, TypeError) as err:
      field = next((n for n in settings if str(err).startswith(n)), "settings")
      message = str(err)[len(field) + 1 :] if str(err).startswith(field + " ") else str(err)  # SpecError names it
      raise SpecError(field, message) from None

  def schema(self) -> cube_env.Schema:
    return cube_env.Schema(dimensions=self.dimensions, protected=self.protected, measures=self.measures)

  def to_json(self) -> str:
    """Canonical JSON (sorted keys): what the cache key hashes and what the job reads back."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  """`json.loads`' object hook refusing a key given twice in one object, which JSON parsers settle by keeping the
  last value without a word (a CLI audit: `"budget": 10, "budget": 20` ran with 20)."""
  seen = set()
  for key, _ in pairs:
    if key in seen:
      raise SpecError(key, "given twice in the settings: give each setting once")
    seen.add(key)
  return dict(pairs)


def _not_json(word: str) -> None:
  """`json.loads`' hook for NaN, Infinity and -Infinity, which Python reads but JSON does not have (an audit: a
  `time_limit` of Infinity was taken and written back into the job's spec.json)."""
  raise SpecError("settings", f"not valid JSON ({word} is not a JSON number)")


OPTIONAL_NUMBERS = frozenset({"time_limit", "explore_new_z", "confirm_new_z", "mirror_z"})  # a number or null


MAX_WHOLE = 2**53  # the largest whole number a setting may hold (every one of them is far smaller in use)


def _digits(value: int) -> str:
  """A huge whole number described by its size, not printed in full."""
  return f"a number of {len(str(abs(value))):,} digits"


def _float(name: str, value: int | float) -> float:
  """`float(value)`, or a SpecError naming the field for a whole number past float's range (a JSON integer of 400
  digits raised OverflowError: a 500, a service audit)."""
  try:
    return float(value)
  except OverflowError:
    raise SpecError(name, f"must be a finite number, got {_digits(int(value))}") from None


def _typed(name: str, value: Any, default: Any) -> Any:
  """`value` checked against the type of the field's `default` (lists of strings for the tuple fields)."""
  if isinstance(default, tuple):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
      raise SpecError(name, f"must be a list of column names, got {value!r}")
    for v in value:
      try:
        v.encode("utf-8")
      except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no table's column, and no response could print it
        raise SpecError(name, f"column names must be Unicode text, got {v!r}") from None
    return tuple(value)
  if name in OPTIONAL_NUMBERS:
    if value is None:
      return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise SpecError(name, f"must be a number or null, got {value!r}")
    return _float(name, value)
  if name == "z_screen":
    if value == "bonferroni" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
      return value if isinstance(value, str) else _float(name, value)
    raise SpecError(name, f"must be a number or 'bonferroni', got {value!r}")
  if isinstance(default, bool):
    if not isinstance(value, bool):
      raise SpecError(name, f"must be true or false, got {value!r}")
    return value
  if isinstance(value, bool):
    raise SpecError(name, f"must be a {type(default).__name__}, got {value!r}")
  if isinstance(default, int):
    if not isinstance(value, int):
      raise SpecError(name, f"must be a whole number, got {value!r}")
    if abs(value) > MAX_WHOLE:  # past int64 it wrapped or raised a TypeError (a 500) in the numeric checks
      raise SpecError(name, f"must be a whole number of at most {MAX_WHOLE:,} in size, got {_digits(value)}")
    return value
  if isinstance(default, float):
    if not isinstance(value, (int, float)):
      raise SpecError(name, f"must be a number, got {value!r}")
    return _float(name, value)
  if not isinstance(value, str):
    raise SpecError(name, f"must be a string, got {value!r}")
  return value
