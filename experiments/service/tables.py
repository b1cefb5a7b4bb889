"""Tables a client sends (an upload) or names (a path under the server's data root): limits, parsing, checks.

The bytes are read with a hard size limit, parsed (CSV by `cube_env`'s reader, Parquet, known by its magic number,
by pandas), checked against the job's column roles (every named column present, measures readable as numbers), and
stored under the server's data directory by their content hash, so that a job reads only files the server wrote and
the cache key can name the table by content. Every error names the field (`file`, `path`) or the column.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import cube_env
from cube_env.data import holdout, ingest
from cube_env.discovery import journal
from cube_env.discovery.pipeline import check_favorable, min_halves
from experiments.service.spec import JobSpec, ServiceConfig


class TableError(ValueError):
  """A table cannot be used; `field` names the field or column, `status` is the HTTP status to answer."""

  def __init__(self, field: str, message: str, *, status: int = 400):
    # A column's name is the user's, and may be megabytes long (a review: a 2 MB name came back whole as `field`
    # and again in the message): both cut as ingest's messages cut it (`ingest.shown_value`).
    field = ingest.shown_value(field, str)
    super().__init__(f"{field}: {message}")
    self.field, self.status = field, status


PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"


def read_limited(stream, limit: int, *, field: str = "file") -> bytes:
  """At most `limit` bytes of a binary stream (TableError 413 when it holds more)."""
  data = stream.read(limit + 1)
  if len(data) > limit:
    raise TableError(
      field, f"larger than this server's upload limit of {limit / 2**20:.4g} MiB (serve --max-upload-mb)", status=413
    )
  if not data:
    raise TableError(field, "is empty")
  return data


def _unreadable(field: str, err: Exception) -> TableError:
  """The error of bytes that neither CSV nor Parquet reads, naming `field` and the reader's own error."""
  return TableError(field, f"not a readable CSV or Parquet table ({type(err).__name__}: {err})")


BYTES_PER_CELL = 2  # the least a CSV spends on a cell: one character and a separator
UNPACKED_PER_BYTE = 2  # a Parquet upload may hold this many bytes uncompressed per byte of the upload limit


def parse_table(data: bytes, *, field: str = "file", max_cells: int | None = None) -> pd.DataFrame:
  """A DataFrame from CSV or Parquet bytes (TableError naming `field` when neither parses).

  A Parquet file compresses its columns, so a small upload can hold millions of rows: with `max_cells` one whose
  footer counts more cells (rows x columns) is refused (413) before it is read.

  CSV is read by `cube_env`'s own reader (`ingest.read_csv`), as the command line reads a file: the same separator
  detection (and its coding note), and the same refusals (an empty file, a column named twice in the header, rows
  with another field count than the header, text that is not UTF-8). A gzip-compressed upload is refused by its
  first bytes (a compressed file can expand far past the upload limit).
  """
  if data[:2] == GZIP_MAGIC:
    raise TableError(field, "is gzip-compressed: send the CSV itself (or Parquet, which compresses its columns)")
  if data[:4] != PARQUET_MAGIC:
    try:
      df = ingest.read_csv(data, name=field)
    except ingest.TableFileError as err:
      raise TableError(field, err.detail) from None
  else:
    if max_cells is not None:
      try:
        footer = pq.ParquetFile(io.BytesIO(data)).metadata
      except (ValueError, OSError) as err:
        raise _unreadable(field, err) from None
      cells = footer.num_rows * footer.num_columns
      unpacked = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))
      if unpacked > max_cells * BYTES_PER_CELL * UNPACKED_PER_BYTE:  # a few cells of long text
        raise TableError(
          field,
          f"a Parquet table of {unpacked:,} bytes uncompressed: more than {UNPACKED_PER_BYTE}x this server's upload "
          "limit (serve --max-upload-mb)",
          status=413,
        )
      if cells > max_cells:
        raise TableError(
          field,
          f"a Parquet table of {footer.num_rows:,} rows x {footer.num_columns} columns ({cells:,} cells): more than "
          f"the {max_cells:,} a CSV within this server's upload limit could hold (serve --max-upload-mb)",
          status=413,
        )
      decoded = decoded_text_bytes(data, field=field)
      if decoded > max_cells * BYTES_PER_CELL * UNPACKED_PER_BYTE:
        raise TableError(
          field,
          f"a Parquet table whose text decodes to {decoded:,} bytes: more than {UNPACKED_PER_BYTE}x this server's "
          "upload limit (serve --max-upload-mb)",
          status=413,
        )
    try:
      df = ingest.read_parquet(io.BytesIO(data), name=field)
    except ingest.TableFileError as err:
      raise TableError(field, err.detail) from None
    except (ValueError, OSError) as err:
      raise _unreadable(field, err) from None
  if df.empty:
    raise TableError(field, "the table has no rows")
  return df


def decoded_text_bytes(data: bytes, *, field: str = "file") -> int:
  """Bytes a Parquet table's text (and binary) columns take once decoded, counted without decoding them.

  The footer's uncompressed size counts a dictionary-encoded column's dictionary once and its row indices, so one
  long value repeated on every row is a small file that decodes to rows x its length (a security audit: 211 kB of
  Parquet, 1,000,000 rows of one 2,000-character text, held 4 GB once read). Text and binary columns (views too)
  are read with their dictionaries kept (Arrow's `read_dictionary`), and each row's value length is summed from the
  dictionary's; a fixed-size binary column counts rows x its width, unread; numbers, booleans and times are of fixed
  width, within the footer's cell count. A column of any other type (lists, structs, maps, ...) is refused here,
  naming it, before it is decoded (a review: a type the count did not know passed it). A file naming a column twice
  counts 0 (`ingest.read_parquet` refuses it next).

  Raises:
    TableError naming the column of a type this server does not read (400), or `field` for a file Arrow cannot read.
  """
  try:
    file = pq.ParquetFile(io.BytesIO(data))
    fields, rows = list(file.schema_arrow), file.metadata.num_rows
  except (ValueError, OSError) as err:
    raise _unreadable(field, err) from None
  if len({f.name for f in fields}) < len(fields):
    return 0
  text, total = [], 0
  for f in fields:
    kind = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
    if any(check(kind) for check in _TEXT):
      text.append(f.name)
    elif pa.types.is_fixed_size_binary(kind):
      total += rows * kind.byte_width
    elif not any(check(kind) for check in _FIXED):
      raise TableError(
        f.name, f"column {ingest.shown_value(f.name)} is a Parquet column of type {f.type}: each cell must be one value"
      )
  if not text:
    return total
  try:
    table = pq.ParquetFile(io.BytesIO(data), read_dictionary=text).read(columns=text)
  except (ValueError, OSError) as err:
    raise _unreadable(field, err) from None
  for column in table.columns:
    for chunk in column.chunks:
      if isinstance(chunk, pa.DictionaryArray):
        total += pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0
      else:  # (read_dictionary makes every text chunk a dictionary; this counts whatever else Arrow gives)
        total += chunk.nbytes
  return total


_TEXT = tuple(  # Arrow's text and binary types of variable width (read as dictionaries to count them)
  getattr(pa.types, f"is_{name}")
  for name in ("string", "large_string", "string_view", "binary", "large_binary", "binary_view")
)
_FIXED = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_temporal, pa.types.is_decimal)
_FIXED += (pa.types.is_null,)


def check_columns(df: pd.DataFrame, spec: JobSpec) -> None:
  """The table fits the spec's column roles (`cube_env` ingest's own checks) and every measure reads as numbers
  (`ingest.table_measure_numbers`: numbers, a yes/no pair, or numbers with thousands separators, as a run reads them),
  and each half of the job's split holds the rows a run needs (`holdout.check_halves`, 422 naming the setting that
  can help, explore_fraction or min_group, or the file where only more rows can).

  Raises:
    TableError naming the column (or `settings` for a problem of the roles themselves).
  """
  try:
    schema = cube_env.Schema(
      dimensions=spec.dimensions, protected=spec.protected, measures=spec.measures, adjusters=spec.adjust
    )
    ingest.validate_table(df, schema)
  except ingest.ColumnError as err:
    raise TableError(err.column, str(err)) from None
  except ValueError as err:
    raise TableError("settings", str(err)) from None
  numbers = {}
  for name in spec.measures:
    try:
      numbers[name] = ingest.table_measure_numbers(df, name)[0]
    except ingest.ColumnError as err:
      raise TableError(err.column, str(err)) from None
  try:
    check_favorable(spec.favorable, spec.measures, df, numbers=numbers)
  except ValueError as err:
    raise TableError("favorable", str(err), status=422) from None
  explore = holdout.split_rows(df, seed=spec.seed, fraction=spec.explore_fraction)
  try:  # the run's own rule, before the job is queued (a fraction of 1e-300 was queued, then the job failed)
    holdout.check_halves(explore, fraction=spec.explore_fraction, min_rows=min_halves(spec.config()))
  except holdout.HalvesError as err:  # named by the setting that can help (the table itself where none can)
    raise TableError(err.setting or "file", str(err), status=422) from None


def content_hash(data: bytes) -> str:
  return hashlib.blake2b(data, digest_size=16).hexdigest()


def store_table(data: bytes, config: ServiceConfig, table_hash: str | None = None) -> str:
  """Writes the bytes to `stored_path` and returns the path (`table_hash`: their `content_hash`, if known).

  Durably (`journal.write_atomic`: fsynced, then renamed, and the directory fsynced), and again where a file is
  there that does not hold these bytes: a service audit cut a stored table short as a power loss after an unsynced
  rename could, and its job analysed half the rows under the full file's name, then was served from the cache.
  (`jobs.run_job` also refuses a table whose bytes are not the hash its job's spec.json recorded.)"""
  table_hash = table_hash or content_hash(data)
  path = stored_path(data, config, table_hash)
  os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)  # under the owner-only data_dir (`make_app`)
  if not holds_content(path, table_hash):
    journal.write_atomic(path, data)
    journal.fsync_dir(os.path.dirname(path))
  return path


def holds_content(path: str, table_hash: str) -> bool:
  """True where the file at `path` exists and its bytes have `content_hash` `table_hash`."""
  try:
    with open(path, "rb") as handle:
      return content_hash(handle.read()) == table_hash
  except FileNotFoundError:
    return False


def read_server_path(path: str, config: ServiceConfig) -> bytes:
  """The bytes of a file under `config.data_root` (TableError 403 outside it or without one, 404 when missing or
  not a regular file: a folder, a FIFO)."""
  if config.data_root is None:
    raise TableError("path", "this server reads no paths (start it with --data-root DIR); upload the file", status=403)
  if "\x00" in path:
    raise TableError("path", "must not hold a NUL character", status=400)
  root = os.path.realpath(config.data_root)
  real = os.path.realpath(os.path.join(root, path))
  outside = TableError("path", "is outside the server's data root", status=403)
  missing = TableError("path", "no such file under the server's data root", status=404)
  if os.path.commonpath([root, real]) != root:
    raise outside
  try:  # not blocking on a FIFO; whether it is a file is asked of what was opened
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
  except (FileNotFoundError, NotADirectoryError):
    raise missing from None
  except OSError as err:
    raise TableError("path", f"the server cannot open it ({err.strerror})", status=403) from None
  try:  # asked of the descriptor before it is read as a file: a folder opens too (an audit: a bare 500)
    if os.path.commonpath([root, _opened(fd, real)]) != root:  # a link swapped in after the check (a security audit)
      raise outside
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
      raise TableError("path", _folder(fd, real), status=404)
    if not stat.S_ISREG(mode):
      raise missing
  except BaseException:
    os.close(fd)
    raise
  with os.fdopen(fd, "rb") as handle:
    return read_limited(handle, config.max_upload_bytes, field="path")


def _folder(fd: int, real: str) -> str:
  """Why a `path` naming a folder (open as `fd`) is refused: the service reads one file, not a Parquet dataset's
  folder of part files as the command line does (`ingest.read_parquet`), said where the folder looks like one (named
  `.parquet`, or holding `.parquet` files)."""
  message = "is a folder, not a file under the server's data root: name a CSV or Parquet file"
  try:
    with os.scandir(fd) as entries:
      parts = any(e.name.endswith(".parquet") and e.is_file(follow_symlinks=False) for e in entries)
  except OSError:
    parts = False
  if real.endswith(".parquet") or parts:
    message += (
      " (a Parquet dataset's folder of part files, which the command line reads, is not read by the service: "
      "write it as one file, pandas.read_parquet(FOLDER).to_parquet(FILE), or upload that)"
    )
  return message


PROC_FD = "/proc/self/fd"  # Linux's links to a process's open files


def _opened(fd: int, real: str) -> str:
  """The path of the file open as `fd`: its /proc/self/fd link, resolved; elsewhere `real` resolved again if that
  is the same file (device and inode), else a path outside any root (a review: comparing `real` alone followed the
  swapped link to the same outside file and passed)."""
  link = os.path.join(PROC_FD, str(fd))
  if os.path.islink(link):
    return os.path.realpath(link)
  again = os.path.realpath(real)
  try:
    now, opened = os.stat(again), os.fstat(fd)
  except OSError:
    return os.sep
  return again if (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino) else os.sep


def check_upload(data: bytes, spec: JobSpec, config: ServiceConfig, *, field: str = "file") -> str:
  """Checks a table's bytes against `spec` (TableError naming the field or column); returns their content hash."""
  df = parse_table(data, field=field, max_cells=config.max_upload_bytes // BYTES_PER_CELL)
  check_columns(df, spec)
  return content_hash(data)


def read_upload(data: bytes, spec: JobSpec, config: ServiceConfig, *, field: str = "file") -> tuple[str, str]:
  """Checks a table's bytes against `spec` and stores them; returns (content hash, stored path). (The API stores
  an upload under the table's lock with its job's submission, `jobs.table_lock`.)"""
  return check_upload(data, spec, config, field=field), store_table(data, config)


def stored_path(data: bytes, config: ServiceConfig, table_hash: str | None = None) -> str:
  """Where `store_table` keeps these bytes: DATA_DIR/tables/<hash>.<csv|parquet> (`table_hash`: their
  `content_hash`, if known, so an upload of 50 MB is hashed once)."""
  ext = "parquet" if data[:4] == PARQUET_MAGIC else "csv"
  return os.path.join(config.data_dir, "tables", f"{table_hash or content_hash(data)}.{ext}")
