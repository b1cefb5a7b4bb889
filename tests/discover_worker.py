"""A discovery process for the kill-and-resume tests: ``python -m tests.discover_worker SIGNAL AT -- DISCOVER_FLAGS``.

Runs ``python -m experiments.discover`` with the given flags (a fresh run, or ``--resume DIR``) and sends itself
``SIGNAL`` (KILL or TERM) right after its ``AT``-th live query is journaled (for ``exhaustive``, its ``AT``-th column
subset): a real signal at a chosen moment. SIGKILL runs no handler, so whatever was not saved yet is lost; SIGTERM
goes through the CLI's handler (save, exit status 130).
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from cube_env.discovery import journal
from experiments import discover


def _signal_after(sig: signal.Signals, at: int) -> None:
  live = {"n": 0}
  record, put_chunk = journal.Journal.record, journal.Journal.put_chunk

  def count() -> None:
    live["n"] += 1
    if live["n"] == at:
      os.kill(os.getpid(), sig)

  def counted_record(self, *args, **kwargs):
    record(self, *args, **kwargs)
    count()

  def counted_put_chunk(self, *args, **kwargs):
    out = put_chunk(self, *args, **kwargs)
    count()
    return out

  journal.Journal.record = counted_record
  journal.Journal.put_chunk = counted_put_chunk


def main(argv: list[str]) -> int:
  _signal_after(signal.Signals[f"SIG{argv[0]}"], int(argv[1]))
  return discover.main(argv[3:] if argv[2:3] == ["--"] else argv[2:])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
