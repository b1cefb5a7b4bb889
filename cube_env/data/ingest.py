"""Ingest: a case table plus a schema becomes a `Cube` of cells.

Rows are coded (numeric dimensions binned, rare categories folded into
`OTHER`, missing values made an explicit `MISSING` category), then grouped by
every filter column into the base cuboid. Each cell carries, per measure, the
sufficient statistics `(n, sum(x - c), sum((x - c)^2))` of the measure on its
test scale (log for right-skewed positive measures) shifted by its centre `c`
(`measure_shift`); a row whose measure is missing is left out of that measure only.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import decimal
import difflib
import gzip
import io
import itertools
import json
import os
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from flax import struct

from cube_env.data.disclosure import MOST_FEW_VALUES, SMALL_CELL, redact_counts
from cube_env.data.schema import Schema

MISSING = "MISSING"
OTHER = "OTHER"


@dataclasses.dataclass(frozen=True)
class CubeMeta:
  """Static description of a cube (hashable, not traced)."""

  filter_names: tuple[str, ...]  # dimensions, then protected columns
  categories: tuple[tuple[str, ...], ...]  # per filter column, code -> label
  n_dimensions: int  # the first n_dimensions filter columns are dimensions
  measure_names: tuple[str, ...]
  is_binary: tuple[bool, ...]
  is_log: tuple[bool, ...]
  shift: tuple[float, ...]  # centre of each measure on its test scale (`measure_shift`: its mean, or its median)
  n_rows: int
  summary: tuple[str, ...]  # what was binned, folded, missing or dropped from a statistic
  # per measure, case-mix adjusted by ratio: the cube holds observed / expected (`cube_env.data.adjust`); () = none
  is_ratio: tuple[bool, ...] = ()
  # per measure, a count (whole numbers >= 0, not 0/1, tested on the linear scale): n x mean is a count of events,
  # which the small-cell rule covers as a binary measure's (`disclosure`); () = none
  is_count: tuple[bool, ...] = ()
  # per measure, its values on the test scale where it has at most `MOST_FEW_VALUES` of them and is not 0/1
  # (ascending; () for any other measure): a side's n, mean and variance then give its cases with each value
  # (`disclosure.value_counts`, up to three) or may pin them among whole counts (`disclosure.pinned_small`); () = none
  few_values: tuple[tuple[float, ...], ...] = ()
  # per measure, whether any value is below 0 (a change score): a ratio of its means is meaningless, so it has no
  # relative difference and confirmation's size rule reads its standardized difference (`confirm`); () = none
  is_signed: tuple[bool, ...] = ()

  @property
  def few_values_by_measure(self) -> dict[str, tuple[float, ...]]:
    """`{measure: values}` of the measures with few values (`few_values`; the small-cell rule's `few_values`)."""
    return {m: v for m, v in zip(self.measure_names, self.few_values) if v}

  @property
  def protected_names(self) -> tuple[str, ...]:
    return self.filter_names[self.n_dimensions :]

  def column_index(self, name: str) -> int:
    if name not in self.filter_names:
      raise ValueError(f"unknown filter column {shown_value(name)}; the cube has [{shown_names(self.filter_names)}]")
    return self.filter_names.index(name)

  def code(self, column: str, label: Any) -> int:
    """The code of `label` in `column`, read as ingest reads a value (`category_label`: NFC, no spaces around)."""
    f = self.column_index(column)
    cats = self.categories[f]
    text = category_label(label)
    if text not in cats:
      raise ValueError(
        f"column {shown_value(column)} has no category {shown_value(label)}; it has [{shown_names(cats)}]"
      )
    return cats.index(text)


@struct.dataclass
class Cube:
  """The base cuboid: one cell per distinct combination of filter codes."""

  codes: jnp.ndarray  # [N, F] int32 category code of every filter column
  rows: jnp.ndarray  # [N] float32 number of rows in the cell
  stats: jnp.ndarray  # [N, M, 3] float32 shifted (n, s1, s2) per measure
  meta: CubeMeta = struct.field(pytree_node=False)

  @property
  def num_cells(self) -> int:
    return int(self.codes.shape[0])

  def summary_text(self) -> str:
    return "\n".join(self.meta.summary)


def filters_to_codes(meta: CubeMeta, filters: Mapping[str, object]) -> np.ndarray:
  """`{column: label}` -> `[F]` int32 codes (-1 = all); unknown names raise ValueError."""
  codes = np.full((len(meta.filter_names),), -1, np.int32)
  for name, label in filters.items():
    codes[meta.column_index(name)] = meta.code(name, label)
  return codes


def codes_to_filters(meta: CubeMeta, codes) -> dict[str, str]:
  """`[F]` codes (-1 = all) -> `{column: label}` of the filtered columns, in column order."""
  return {meta.filter_names[f]: meta.categories[f][int(v)] for f, v in enumerate(codes) if int(v) >= 0}


def cohort_label(filters: Mapping[str, str]) -> str:
  """`{"proc": "A", "site": "s2"}` -> `"proc=A & site=s2"`; `{}` -> `"(all cases)"`.

  A label reads one way: split at " & ", then at each part's first "=". A category holding " & " (or starting with
  a double quote) is written in double quotes with JSON's escapes, as is a column name that also holds "=":
  `{"site": "North & South"}` -> `site="North & South"`, where `site=North & South` was also the label of a
  two-filter cohort (an audit). Other labels are unchanged.
  """
  parts = (f"{_quoted(k, '=')}={_quoted(v)}" for k, v in filters.items())
  return " & ".join(parts) if filters else "(all cases)"


def _quoted(text: object, *also: str) -> str:
  """`text` as a cohort label writes it (`cohort_label`): in double quotes where it holds " & " or one of `also`,
  or starts with a double quote."""
  text = str(text)
  if " & " in text or text.startswith('"') or any(a in text for a in also):
    return json.dumps(text, ensure_ascii=False)
  return text


SHOWN_CHARS = 60  # longest cell text or column name a message quotes whole (`shown_value`); a longer one is cut
SHOWN_TAIL = 20  # of a cut text's SHOWN_CHARS, how many are its last (long names that differ at their end print apart)
SHOWN_NAMES = 20  # most column names (or other items) a message lists (`shown_names`); the rest are counted


def shown_value(value: object, write=repr) -> str:
  """A user's cell value or column name as a message quotes it: `write(value)` (repr, or str or ascii), a text
  longer than `SHOWN_CHARS` cut to its first and last characters (`SHOWN_TAIL` of them last) with an ellipsis between
  and its length stated, as "'xxxx…yyyy' (15,000,000 characters)" (a service audit: a 15 MB upload whose measure held
  three 5 MB texts got a 15 MB error back, and a 2 MB header name came back whole; a later one: two long column names
  sharing their first 60 characters printed alike). A value that is not text is cut likewise where `write` gives a
  longer text."""
  text = value if isinstance(value, str) else write(value)
  if len(text) <= SHOWN_CHARS:
    return write(value)
  cut = text[: SHOWN_CHARS - SHOWN_TAIL] + "…" + text[-SHOWN_TAIL:]
  return f"{write(cut) if isinstance(value, str) else cut} ({len(text):,} characters)"


def shown_names(names, joiner: str = ", ", show=shown_value) -> str:
  """`names` (column names, or a message's items) joined by `joiner`, each written by `show` (`shown_value`: cut where
  long), the first `SHOWN_NAMES` of them and then how many more ("'a', 'b', and 80 more"); a list is written
  "[" + this + "]" (as `list(df.columns)` printed, for a few names)."""
  names = list(names)
  more = len(names) - SHOWN_NAMES
  return joiner.join(map(show, names[:SHOWN_NAMES])) + (f", and {more:,} more" if more > 0 else "")


SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}  # what a CSV header may use
READ_NOTES = "coding_notes"  # `df.attrs` key: how the file was read; `encode_table` puts these notes first
SEPARATOR = "separator"  # `df.attrs` key: the CSV's column separator (`read_csv`); ';' files write decimal commas
LEADING_ZEROS = "leading_zeros"  # `df.attrs` key: {column: a value} for codes kept as text (`_keep_leading_zeros`)
IF_READ = "warn_if_read"  # `df.attrs` key: ((columns, note, its warning), ...): warnings where a run reads a column
DECIMAL_COMMA = re.compile(r"[+-]?(\d+(,\d+)?|,\d+)")  # 139,2 or -0,5 or 140: a number in a ';' file's notation


class TableFileError(ValueError):
  """A table file cannot be read as given; `detail` is the message without the file's name (a service names its
  field instead)."""

  def __init__(self, source: str, detail: str):
    super().__init__(f"{source}: {detail}")
    self.detail = detail


def read_parquet(source, *, name: str) -> pd.DataFrame:
  """A Parquet table (a path, a dataset's folder or a binary file); TableFileError naming `name` for a file's column
  named twice (Arrow's own error dumps its whole schema), a file Arrow cannot read (an ingest audit: a truncated file
  or a CSV renamed .parquet said only "Parquet magic bytes not found in footer") and a table with no rows.

  Columns pandas saved as the frame's index (`df.set_index("site").to_parquet(...)`) are columns again: pandas reads
  them back as the index, which no schema can name (an ingest audit: `--dimensions site` said 'site' was not in the
  table). Only named levels: an unnamed index (the row numbers of a filtered frame) holds no column of the cases. An
  index named as a column (`set_index("site", drop=False)`) is that column's copy where its values are the same, and
  dropped; with other values the file is refused, naming the column (which one the run should read is unknowable).
  Text stored as Parquet BINARY without its UTF8 annotation, which pandas reads as bytes (printed b'Black' in every
  label), is decoded as UTF-8 (`_utf8_text`); a column whose bytes are not UTF-8 stays bytes, refused only where a run
  codes it (`_code_column`), so a column of binary data the run never reads does not refuse the table."""
  try:
    if not hasattr(source, "read") and os.path.isdir(source):  # a dataset's folder (Spark's part files)
      df = pd.read_parquet(source)
    else:
      names = pq.ParquetFile(source).schema_arrow.names
      counts = collections.Counter(names)
      twice = [f"column {shown_value(n)} appears {k} times" for n, k in counts.items() if k > 1]
      if twice:
        raise TableFileError(name, shown_names(twice, "; ", show=str))
      if hasattr(source, "seek"):
        source.seek(0)
      df = pd.read_parquet(source)
  except (pa.ArrowException, OSError) as err:
    raise TableFileError(name, f"not a readable Parquet table ({str(err).splitlines()[0][:200]})") from None
  if len(df) == 0:
    raise TableFileError(name, "has columns but no rows")
  df = _index_as_columns(df, name)
  for i, column in enumerate(df.columns):
    try:
      decoded = _utf8_text(df.iloc[:, i], column)
    except ColumnError:  # kept as it is: refused where a run codes it
      continue
    if decoded is not None:
      df.isetitem(i, decoded)
  return df


def _index_as_columns(df: pd.DataFrame, name: str) -> pd.DataFrame:
  """`df` with its named index levels as columns, first, as pandas wrote them (`read_parquet`); its row labels then
  0, 1, ...; an unnamed index is dropped. A level named as a column with the same values is dropped, with other
  values refused (TableFileError naming `name` and the column)."""
  levels = [level for level in df.index.names if level is not None]
  if not levels:
    return df if isinstance(df.index, pd.RangeIndex) else df.reset_index(drop=True)
  for level in levels:
    if level in df.columns and not pd.Index(df[level]).equals(df.index.get_level_values(level)):
      raise TableFileError(
        name,
        f"column {shown_value(level)} appears twice, as a column and as the table's (pandas) index, with other "
        "values: save the table without its index (to_parquet(index=False)) or rename one of them",
      )
  restored = [level for level in levels if level not in df.columns]
  return (df.reset_index(level=restored) if restored else df).reset_index(drop=True)


def _utf8_text(column: pd.Series, name) -> pd.Series | None:
  """A column of bytes (Parquet BINARY text, which pandas reads as bytes: labels printed b'Black'; text beside them
  kept) as text decoded from UTF-8; None where it holds no bytes. Each distinct value is decoded once.

  Raises:
    ColumnError naming the column where its bytes are not UTF-8 (`read_parquet` keeps such a column as it is, for a
    run that does not read it; `_code_column` refuses it).
  """
  if column.dtype != object:
    return None
  present = column.notna().to_numpy(bool)
  if not present.any() or not isinstance(column.iloc[int(np.argmax(present))], bytes):  # a Parquet column: one type
    return None
  codes, uniques = pd.factorize(column, use_na_sentinel=True)
  if not all(isinstance(v, bytes | str) for v in uniques):
    return None
  text = []
  for value in uniques:
    try:
      text.append(value.decode("utf-8") if isinstance(value, bytes) else value)
    except UnicodeDecodeError:
      raise ColumnError(
        name,
        f"column {shown_value(name)} holds bytes that are not UTF-8 text (such as {value[:20]!r}): store it as text "
        "(UTF-8), or leave it out of the run",
      ) from None
  values = np.asarray(text + [None], dtype=object)[codes]
  return pd.Series(values, index=column.index, dtype=object, name=column.name).astype(_TEXT_DTYPE)


_TEXT_DTYPE = pd.Series(["a"]).dtype  # the dtype pandas reads text as (`str` from pandas 3, object before)


def _numbers_rows(column: pd.Series) -> bool:
  """Whether a column counts up from 0 or 1 down its rows (a row index written as a column; with gaps where rows
  were lost, an analyst's audit)."""
  if not pd.api.types.is_integer_dtype(column) or len(column) < 2:
    return False
  values = column.to_numpy()
  return bool(values[0] in (0, 1) and (np.diff(values) > 0).all())


def _rows_inside(record: list[str], sep: str, width: int) -> list[list[str]]:
  """The lines inside a quoted value of a record that spans lines that split into `width` fields: rows perhaps
  swallowed by a '"' opened by mistake (a CSV audit: their cases were lost, noted only as a meant line break);
  `_fits_columns` then asks whether they read as the table's rows. Tables of fewer than three columns are not
  judged."""
  if width < 3:
    return []
  parts = [part.rstrip("\r") for value in record if "\n" in value for part in value.split("\n")[1:]]
  return [fields for fields in (part.split(sep) for part in parts) if len(fields) == width]


def _fits_columns(fields: list[str], numeric: list[bool]) -> bool:
  """Whether a line's fields read as a row of a table whose columns are `numeric` or not: a number (or nothing)
  in every column of numbers, of which there is one at least (a review: a clinical comment's line with as many
  commas as the header, 'seen by Dr A, ward 3, bed 2, call back', is no row)."""
  if not any(numeric):
    return False
  for text, number in zip(fields, numeric):
    text = text.strip().strip('"')
    if number and text not in NA_TEXT:
      try:
        float(text)
      except ValueError:
        return False
  return True


def _holds_line_breaks(column: pd.Series) -> bool:
  """Whether a column read from a CSV holds text with a line break (numbers cannot)."""
  if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
    return False
  return bool(column.astype("string").str.contains("[\r\n]", regex=True).fillna(False).any())


def _line_breaks_note(spans: int, first: int, columns: Sequence[str]) -> tuple[str, str]:
  """The note of `read_csv` for rows whose quoted values hold line breaks, and the warning `encode_table` gives
  instead where a column the run reads holds them (a '"' opened by mistake joins lines into one row; a review: a
  comments column's meant line breaks warned on every run, and an analyst read the note as an alarm)."""
  where = shown_names(columns, " and ") or "a column"
  held = redact_counts(f"{spans} rows", SMALL_CELL) + f" hold a line break inside a quoted value of {where}"
  return (
    f"{held} (the first on line {first}), kept in the cells' text",
    f"warning: {held}, which this run reads (the first on line {first}): where a '\"' was opened by mistake, lines "
    "are joined into one row (check the file there)",
  )


def _outside_quotes(line: str) -> dict[str, int]:
  """How often each of `SEPARATORS` occurs in `line` outside double quotes."""
  counts = dict.fromkeys(SEPARATORS, 0)
  quoted = False
  for char in line:
    if char == '"':
      quoted = not quoted
    elif not quoted and char in counts:
      counts[char] += 1
  return counts


def _separator(line: str, following: str = "") -> str:
  """The separator of a CSV header record: whichever of `SEPARATORS` occurs most outside double quotes; between
  equals, the one the `following` line (the first data row) uses as often; else, and for a one-column header, the
  comma."""
  counts = _outside_quotes(line)
  most = max(counts.values())
  tied = [sep for sep in SEPARATORS if counts[sep] == most]
  if len(tied) > 1 and most > 0:
    data = _outside_quotes(following)
    tied = [sep for sep in tied if data[sep] == most] or [","]
  return tied[0]


@dataclasses.dataclass(frozen=True)
class _Layout:
  """A CSV's separator, its header's names as written, the data records with another number of fields than the
  header's names (the first `MAX_ODD_LINES` of them, each its first and last line in the file and its field count;
  empty where every record has as many) and how many there are in all, and the records whose quoted values hold line
  breaks (how many, the first one's line and the last one's; None if none; where a record has another number of
  fields, those before the first such record only)."""

  sep: str
  names: list[str]
  odd: tuple[tuple[int, int, int], ...]
  spanning: tuple[int, int, int] | None = None
  swallowed: tuple[tuple[int, int, tuple[list[str], ...]], ...] = ()  # (first, last line, lines that split as rows)
  header: int = 1  # the header's line
  n_odd: int = 0  # records with another number of fields than the header's names, all of them (`odd` the first)


def _text_lines(binary, name: str):
  """The lines of a binary stream decoded as UTF-8 (a byte-order mark dropped); an undecodable line is refused
  naming its line number, where pandas would say only a byte position in some block of the file."""
  for number, line in enumerate(binary, start=1):
    try:
      text = line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
      if number == 1 and line[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise TableFileError(
          name, "is UTF-16 text (as Excel's 'Unicode Text' saves): save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from None
      raise TableFileError(
        name,
        f"is not UTF-8 text (line {number} holds the byte {line[err.start : err.start + 1].hex(' ')!r}, as files "
        "saved in Latin-1 or Windows-1252 do): save it as UTF-8 (in Excel: CSV UTF-8)",
      ) from None
    yield from _BARE_CR.split(text) if "\r" in text[:-2] else (text,)  # old Mac files end lines with a lone CR


_BARE_CR = re.compile(r"(?<=\r)(?!\n)(?=.)", re.DOTALL)  # after a carriage return that ends a line alone


MAX_HEADER_LINES = 1000  # lines a header record (a quoted name with line breaks) may span before it is refused
MAX_SWALLOWED = 100  # records with lines inside quotes that split as rows, kept for `read_csv` to judge
# Records with another field count than the header's that `read_csv`'s error names, line and field count each (an
# audit: only the first was named, so a 200k-row export took one run per bad line); past these it says how many
# more. Twenty fit a console's screen and cover the few bad lines of a hand-edited export; a file with more is
# wrong throughout (a separator or a quote convention), which the first lines show.
MAX_ODD_LINES = 20


def _layout(lines) -> _Layout | None:
  """The `_Layout` of a CSV's text lines: the header is the first non-blank record (a quoted name may span lines);
  None when there is none. Every record is read, to count its fields (blank lines are skipped, as pandas does)."""
  skipped = 0
  for line in lines:
    if not line.strip():
      skipped += 1
      continue
    parts, odd = [line], line.count('"') % 2
    while odd:  # a quoted name holds a line break: the record goes on
      more = next(lines, None)
      if more is None:
        break
      parts.append(more)  # the quotes counted once a line (a security audit: the whole record again each line
      odd ^= more.count('"') % 2  # was quadratic; one unclosed quote in 800 KB cost 2 minutes)
      if len(parts) > MAX_HEADER_LINES:
        raise csv.Error(
          f"the header (line {skipped + 1}) holds an odd number of '\"': a quoted name never closes within "
          f"{MAX_HEADER_LINES} lines"
        )
    line = "".join(parts)
    following = next(lines, "")  # the first data row settles a tie
    sep = _separator(line, following)
    extra = line.count("\n") - (1 if line.endswith("\n") else 0)  # the header's own line breaks, read as one item
    records = csv.reader(itertools.chain([line, following], lines), delimiter=sep)
    limit = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # pandas reads fields of any length; so does this count
    spans, first, latest = 0, 0, 0  # records that run over more than one line; the first one's line, the last's
    swallowed = []  # (a record's line, the lines inside its quotes that split as rows), the first MAX_SWALLOWED
    bad: list[tuple[int, int, int]] = []  # records with another field count: (first, last line, fields), the first
    n_bad = 0  # MAX_ODD_LINES of them, and how many in all (the file is read on to its end, once, to count them)
    try:
      names = next(records)
      end = records.line_num
      for record in records:
        start, end = end + 1, records.line_num  # a record may span lines (a quoted line break)
        blank = len(record) == 1 and not record[0].strip()  # a line of spaces: pandas skips it, so does this
        if record and not blank and len(record) != len(names):
          if n_bad < MAX_ODD_LINES:
            bad.append((skipped + extra + start, skipped + extra + end, len(record)))
          n_bad += 1
          continue
        if n_bad:  # the file is refused: past its first bad record only the field counts are read
          continue
        if end > start:
          spans, first, latest = spans + 1, first or skipped + extra + start, skipped + extra + start
          rows = _rows_inside(record, sep, len(names)) if len(swallowed) < MAX_SWALLOWED else []
          if rows:
            swallowed.append((skipped + extra + start, skipped + extra + end, tuple(rows)))
    finally:
      csv.field_size_limit(limit)
    spanning = (spans, first, latest) if spans else None
    return _Layout(sep, names, tuple(bad), spanning, tuple(swallowed), skipped + 1, n_bad)
  return None


def _odd_lines_error(layout: _Layout) -> str:
  """`read_csv`'s error for a CSV whose `layout` has records with another number of fields than the header's
  names: the first one's problem asked about as before (a quote that runs on, a report's title above the header, a
  field more or fewer), then, where there are more, every one of them by line and field count, the first
  `MAX_ODD_LINES` named and the others counted (an audit: one run per bad line)."""
  names = layout.names
  line, last, fields = layout.odd[0]
  what = f"line {line} has {fields} fields where the header has {len(names)} names"
  earlier = ""  # a stray quote earlier that closed at a meant one shifts every quote after it (an analyst's audit)
  if layout.spanning is not None:
    earlier = (
      f" The last row before it that runs on inside quotes starts on line {layout.spanning[2]}: if a '\"' there "
      "was opened by mistake, every quote after it is shifted."
    )
  if last > line:  # a quote that opens a value and closes lines later, or never (a large-table audit)
    why = "a field too many, or" if fields > len(names) else "is"  # (a review: a meant line break, a field more)
    first = (
      f"the row that starts on line {line} runs on to line {last} inside a quoted value and has {fields} fields "
      f"where the header has {len(names)} names: {why} a '\"' on line {line} opened by mistake?"
    )
  elif fields > len(names) == 1:  # a CSV audit: a report's title above the column names read as the header
    first = (
      f"the header (line {layout.header}) has one name, {shown_value(names[0])}, and line {line} has {fields} "
      "fields: is that line a title above the column names (remove the lines above the header), or does a value hold "
      "an unquoted separator?"
    )
  elif fields > len(names):
    first = (
      f"rows have more fields than the header has names ({what}), so columns would shift: is a name missing from "
      "the header, does each row end with a separator, or does a value hold an unquoted separator?" + earlier
    )
  else:
    first = f"{what}: is the file cut short, or is a separator missing in that row? (rows are not padded)" + earlier
  if layout.n_odd == 1 or fields > len(names) == 1:  # a title above the header: every row would be listed
    return first
  listed = ", ".join(
    f"line{'s' * (end > start)} {start}{f' to {end}' * (end > start)} ({k} field{'s' * (k != 1)})"
    for start, end, k in layout.odd
  )
  more = layout.n_odd - len(layout.odd)  # records of the file, not cases of a group (the lines above name 20)
  if more:
    listed += f", and {more} more such line{'s' * (more != 1)} (only the first {MAX_ODD_LINES} are named)"
  stop = "" if first.endswith(("?", ".")) else "."
  header = f"the header's {len(names)} name" + "s" * (len(names) != 1)
  return f"{first}{stop} Every line with another number of fields than {header}: {listed}."


def read_csv(source: str | os.PathLike | bytes, *, name: str) -> pd.DataFrame:
  """Reads a CSV table (a path, `.gz` by extension, or the bytes of one) as written: every column kept.

  The separator is the one of `SEPARATORS` its header line uses most (a coding note in `df.attrs[READ_NOTES]` says
  so when it is not a comma); in a file separated by semicolons, a column of numbers written with decimal commas
  is read as numbers (noted). Refused, naming the file and the line: a header that names a column twice (pandas
  would rename the second `name.1`, which a run would silently leave out), no header line, text that is not
  UTF-8, and a row with more fields than the header (pandas would take the first row's extra field as the row
  index and shift every column by one) or fewer (a file cut short, or a separator missing: pandas would leave the
  row's last columns missing without a word); every such row is named in the one error, by line and field count
  (the first `MAX_ODD_LINES`, then how many more). A Parquet file under a CSV's name is read as Parquet, noted
  (`_is_parquet`).

  Raises:
    TableFileError: `name` (e.g. "data file 'x.csv'", or a service's field) and the problem.
  """
  if _is_parquet(source):
    df = read_parquet(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source), name=name)
    df.attrs[READ_NOTES] = (*df.attrs.get(READ_NOTES, ()), PARQUET_NOTE)
    return df
  if isinstance(source, bytes):
    raw = io.BytesIO(source)
    binary = io.BytesIO(source)
  else:
    raw = os.fspath(source)
    binary = (gzip.open if raw.lower().endswith(".gz") else open)(raw, "rb")
  try:
    with binary:
      layout = _layout(_text_lines(binary, name))
  except (OSError, EOFError, csv.Error) as err:
    raise TableFileError(name, f"not a readable CSV table ({type(err).__name__}: {err})") from None
  if layout is None:
    raise TableFileError(name, "is empty (no header line)")
  sep, names = layout.sep, layout.names
  counts = collections.Counter(n for n in names if n)  # blank names stay apart in pandas ('Unnamed: 3')
  twice = [f"column {shown_value(n)} appears {k} times in the header" for n, k in counts.items() if k > 1]
  if twice:
    raise TableFileError(name, shown_names(twice, "; ", show=str))
  if layout.odd:
    raise TableFileError(name, _odd_lines_error(layout))
  try:
    df = pd.read_csv(raw, sep=sep, low_memory=False)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]  # the header's columns, in order
  except (ValueError, OSError) as err:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
    if "EOF inside string" in str(err) and layout.spanning is not None:  # its row counted from 0 after the header
      raise TableFileError(
        name,
        f"a quoted value on line {layout.spanning[2]} is never closed: it runs on to the end of the file (a '\"' "
        "opened by mistake?)",
      ) from None
    raise TableFileError(name, f"not a readable CSV table ({type(err).__name__}: {err})") from None
  if not df.index.equals(pd.RangeIndex(len(df))):  # a row's extra field taken for its index: checked above too
    raise TableFileError(name, "rows have more fields than the header has names, so columns would shift")
  # A spreadsheet's trailing separators ('...,,'): columns without a name or a value. Kept, they changed the split
  # (which hashes every column) of the same data (an audit); they are left out with a note.
  unnamed = [c for c, n in zip(df.columns, names) if not n.strip() and df[c].isna().all()]
  # ... and a column without a name that numbers the rows: the index R's write.csv and pandas' to_csv write (a CSV
  # audit: kept as 'Unnamed: 0', it changed the split of the same cases).
  numbered = [c for c, n in zip(df.columns, names) if not n.strip() and c not in unnamed and _numbers_rows(df[c])]
  df = df.drop(columns=unnamed + numbered)
  blank = df.isna().all(axis=1).to_numpy()  # ',,,' lines (a spreadsheet's export leaves them at the end)
  if blank.all():
    raise TableFileError(
      name, "has a header line but no rows" if df.empty else "has a header line but every row is blank"
    )
  df.attrs[SEPARATOR] = sep
  notes = [] if sep == "," else [f"the table's columns are separated by {SEPARATORS[sep]} ({sep!r}), not commas"]
  if_read: list[tuple[tuple[str, ...], str, str]] = []  # `IF_READ`
  if unnamed:
    columns = f"{len(unnamed)} column" + "s" * (len(unnamed) != 1)
    notes.append(f"{columns} without a name or any value left out (a spreadsheet's trailing separators)")
  if numbered:
    notes.append(
      "a column without a name that numbers the rows left out (the row index R's write.csv and pandas' to_csv write)"
    )
  if blank.any():
    df = _without_blank_lines(source, raw, sep, df, blank, unnamed + numbered)
    df.attrs[SEPARATOR] = sep
    notes.append(redact_counts(f"{int(blank.sum())} rows with every field blank left out", SMALL_CELL))
  if layout.spanning is not None:  # joined lines whose fields happen to add up went unnoticed (a large-table audit)
    spans, first, _ = layout.spanning
    broken = tuple(c for c in df.columns if _holds_line_breaks(df[c]))
    note, warning = _line_breaks_note(spans, first, broken)
    notes.append(note)
    if_read.append((broken, note, warning))
    fitting = [(start, end, sum(_fits_columns(r, numeric) for r in rows)) for start, end, rows in layout.swallowed]
    start, end, lost = next(((s, e, k) for s, e, k in fitting if k), (0, 0, 0))
    if lost:
      notes.append(
        f"warning: the quoted value on lines {start} to {end} holds "
        + redact_counts(f"{lost} rows", SMALL_CELL)
        + f" of the file (as many fields as the header, numbers where it has numbers): a '\"' opened by mistake on "
        f"line {start} joins them into one row, and their cases are lost (check the file there)"
      )
  if sep == ";":
    notes += _read_decimal_commas(df)
    notes += _thousands_points(source, raw, df, blank)
  kept = _keep_leading_zeros(source, raw, sep, df, blank)
  if kept:
    df.attrs[LEADING_ZEROS] = kept
  notes += [_leading_zeros_note(column, example) for column, example in kept.items()]
  for columns, note in _words_read_as_missing(source, raw, sep, df, blank):
    notes.append(note)
    if_read.append((columns, note, "warning: " + note))
  if notes:
    df.attrs[READ_NOTES] = tuple(notes)
  if if_read:
    df.attrs[IF_READ] = tuple(if_read)
  return df


PARQUET_MAGIC = b"PAR1"  # the first and last bytes of every Parquet file
PARQUET_NOTE = (
  "the file is a Parquet table, not CSV text (it starts and ends with Parquet's 'PAR1'): read as Parquet (name it "
  ".parquet)"
)


def _is_parquet(source: str | os.PathLike | bytes) -> bool:
  """Whether a file `read_csv` is given (not gzip-compressed) starts and ends with `PARQUET_MAGIC`: a Parquet table
  under a CSV's name (an ingest audit: a Parquet file named .csv was refused as "not UTF-8 text (... Latin-1 ...)",
  which sent the analyst to re-save a file that was never text). It is read as Parquet, with `PARQUET_NOTE`, rather
  than refused: its bytes say what it is beyond doubt (both ends; a CSV whose header starts with 'PAR1' does not also
  end so), and the table is the one the analyst meant. A file that starts so but does not end so (a CSV with such a
  header, or a Parquet file cut short) is read as CSV, as before."""
  if isinstance(source, bytes):
    head, tail = source[:4], source[-4:]
    size = len(source)
  else:
    path = os.fspath(source)
    if path.lower().endswith(".gz"):
      return False
    try:
      with open(path, "rb") as handle:
        head = handle.read(4)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    except OSError:
      return False  # `read_csv` names the problem
  return size >= 12 and head == PARQUET_MAGIC and tail == PARQUET_MAGIC


LEADING_ZERO = re.compile(r"0\d+")  # '02139', '007': a code, not a number
CODE_WIDTH = 3  # `_keep_leading_zeros`: fewest digits of a code whose every value has the same width


VALUE_WORDS = frozenset(("None", "NULL", "null", "N/A", "n/a"))  # of `NA_TEXT`, the words a category may mean


def _as_written(source, raw, sep: str, columns: list, blank: np.ndarray, **options) -> pd.DataFrame | None:
  """`columns` of the CSV read again as text (pandas' `read_csv` with `options`), its rows `read_csv`'s own less
  the `blank` ones, so they align by position; None where the file does not read so again (then nothing is noted)."""
  data = io.BytesIO(source) if isinstance(source, bytes) else raw
  try:
    text = pd.read_csv(data, sep=sep, dtype=str, usecols=columns, low_memory=False, **options)
  except (ValueError, OSError):
    return None
  return text.loc[~blank] if len(text) == len(blank) else None


def _words_read_as_missing(
  source, raw, sep: str, df: pd.DataFrame, blank: np.ndarray
) -> list[tuple[tuple[str, ...], str]]:
  """Notes naming the words pandas reads as missing that may be a category's value (`VALUE_WORDS`: 'None', 'NULL',
  'N/A') in text columns, with their rows (a CSV audit: a payer 'None', the uninsured, became MISSING, and the note
  said the values were missing). R's 'NA' and pandas' 'nan' are not noted (a review: every text column of an R
  export was). Only the text columns with missing cells are read again, as written; numbers' columns are left
  alone (a word there is a missing number). Returns (the columns, the note) a word; `encode_table` makes a note a
  warning where the run reads one of its columns."""
  columns = [c for c in df.columns if df[c].isna().any() and not pd.api.types.is_numeric_dtype(df[c])]
  if not columns:
    return []
  text = _as_written(source, raw, sep, columns, blank, keep_default_na=False)
  if text is None:
    return []
  found: dict[str, list[tuple[str, str]]] = {}  # word -> [(column, "'column' (N rows)")], one note a word
  for column in columns:
    words = text[column]  # as written: pandas reads ' None' as text, not as missing (a review)
    for word, n in words[words.isin(VALUE_WORDS)].value_counts().items():
      found.setdefault(word, []).append((column, redact_counts(f"{shown_value(column)} ({n} rows)", SMALL_CELL)))
  return [
    (
      tuple(c for c, _ in where),
      f"cells written {shown_value(word)} in {shown_names((w for _, w in where), show=str)} are read as empty (the "
      f"table reader's rule), so coded {MISSING!r}: where {shown_value(word)} is a value of its own (a payer 'None': "
      "no insurance), replace it by a word such as 'Uninsured'",
    )
    for word, where in sorted(found.items())
  ]


def _keep_leading_zeros(source, raw, sep: str, df: pd.DataFrame, blank: np.ndarray) -> dict[str, str]:
  """In place: each column of whole numbers that pandas read from text of one width of at least `CODE_WIDTH`
  digits, some with a leading zero ('02139' beside '10001': ZIP codes), becomes that text, so its categories keep
  their zeros (an audit: cohorts read 'zip=2140'); one note a column. Numbers of other widths ('07' among ages 37
  and 63) stay numbers, so their bins hold. Only the whole-number columns are read again, as text, and their rows
  are `read_csv`'s own less its `blank` ones (the same reader's rows, so they align by position). Returns each such
  column's name and a value with a leading zero: `encode_table` notes a measure or a column given bin edges read
  as numbers (as they are) in place of `_leading_zeros_note`."""
  whole = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c]) or _whole_floats(df[c])]
  if not whole:
    return {}
  text = _as_written(source, raw, sep, whole, blank)
  if text is None:
    return {}
  notes = {}
  for column in whole:
    present = text[column].dropna().str.strip()
    if len(present) != int(df[column].notna().sum()):
      continue
    example = _zero_padded(present)
    if example is None:
      continue
    kept = text[column].str.strip().astype(object).where(text[column].notna().to_numpy(), None).to_numpy()
    df[column] = pd.Series(kept, index=df.index, dtype=object)
    notes[column] = example
  return notes


def _zero_padded(present: pd.Series) -> str | None:
  """A value with a leading zero where every text of `present` (stripped, none missing) is a whole number of one
  width of at least `CODE_WIDTH` digits and some have a leading zero ('02139' beside '10001': codes, not numbers),
  else None. `_keep_leading_zeros` keeps such a CSV column as text; `_numbers_in_text` leaves such text as codes."""
  if not len(present):
    return None
  widths = present.str.len()
  if not (present.str.fullmatch(r"\d+").all() and widths.nunique() == 1 and widths.iloc[0] >= CODE_WIDTH):
    return None
  zeros = present.str.fullmatch(LEADING_ZERO).to_numpy(bool)
  return present[zeros].iloc[0] if zeros.any() else None


def _leading_zeros_note(column: str, example: str) -> str:
  return f"column {shown_value(column)} read as text: values such as {shown_value(example)} keep their leading zeros"


def _whole_floats(column: pd.Series) -> bool:
  """A float column whose values are whole numbers (pandas reads whole numbers with blanks as floats)."""
  if not pd.api.types.is_float_dtype(column):
    return False
  present = column.dropna().to_numpy()
  return len(present) > 0 and bool(np.all(present == np.round(present)))


def _without_blank_lines(
  source, raw, sep: str, df: pd.DataFrame, blank: np.ndarray, unnamed: Sequence[str] = ()
) -> pd.DataFrame:
  """`df` less its `blank` rows, read again from the file without their lines, so each column gets the type it
  has without them (a blank line makes pandas read a column of whole numbers as floats: site 1 would read '1.0'),
  and without the `unnamed` columns `df` no longer has; a blank line inside a quoted field is that field's text,
  kept. Falls back to dropping the rows where the lines cannot be told apart."""
  if isinstance(source, bytes):
    data = source
  else:
    with (gzip.open if raw.lower().endswith(".gz") else open)(raw, "rb") as handle:
      data = handle.read()
  lines = data.splitlines(keepends=True)
  empty = [i > 0 and _blank_line(line, sep) for i, line in enumerate(lines)]  # the header is never left out
  kept, quoted = [], False
  for line, blank_line in zip(lines, empty, strict=True):
    if quoted or not blank_line:  # a line inside a quoted field is its text (a review)
      kept.append(line)
    quoted = _ends_quoted(line, sep.encode(), quoted)
  # The lines as told apart by quotes, else every blank line (a quote the quoting rules did not foresee)
  for chosen in (kept, [line for line, blank_line in zip(lines, empty, strict=True) if not blank_line]):
    try:
      again = pd.read_csv(io.BytesIO(b"".join(chosen)), sep=sep, low_memory=False).drop(columns=list(unnamed))
    except (ValueError, OSError, KeyError):
      continue
    if len(again) == int((~blank).sum()) and list(again.columns) == list(df.columns):
      return again
  return df.loc[~blank].reset_index(drop=True)


def _ends_quoted(line: bytes, sep: bytes, quoted: bool) -> bool:
  """Whether a CSV line that starts inside a quoted field (`quoted`) or not ends inside one, by pandas' rules: a quote
  opens a quoted field only at the field's start (`5'10"` is text), and inside one a doubled quote is a quote and a
  single one closes it."""
  if b'"' not in line:  # most lines: nothing opens or closes
    return quoted
  at_start, i = not quoted, 0
  while i < len(line):
    c = line[i : i + 1]
    if quoted:
      if c == b'"':
        if line[i + 1 : i + 2] == b'"':
          i += 1
        else:
          quoted = False
    elif c == b'"' and at_start:
      quoted = True
    at_start = not quoted and c == sep
    i += 1
  return quoted


NA_TEXT = frozenset(  # what pandas reads as missing by default (`read_csv`'s na_values), stripped
  ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA")
  + ("NULL", "NaN", "None", "n/a", "nan", "null")
)


def _blank_line(line: bytes, sep: str) -> bool:
  """A line whose every field is empty or a text pandas reads as missing (',,,'; R's 'NA,NA,NA', a review)."""
  text = line.decode("utf-8", errors="replace")
  return all(f.strip().strip('"').strip() in NA_TEXT for f in text.split(sep))


def _read_decimal_commas(df: pd.DataFrame) -> list[str]:
  """In place: each text column of a ';'-separated table whose every value is a number written with a decimal comma
  (`DECIMAL_COMMA`, at least one with a comma; the way such files write numbers), or also with thousands points
  (`POINTS_AND_COMMA`: '3.835,50', '1.204.000,00', '3.835'; German exports), becomes numbers; one note a column,
  saying how its points were read where it has any. A column with any other text (a point that groups no three
  digits, '3.8' beside '3.835,50', is read by no convention), or whose distinct values would not stay distinct as
  numbers ('1,1' and '1,10': section codes), stays as it is (a measure's is then refused naming it,
  `measure_numbers`)."""
  notes = []
  for column in df.columns:
    if pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_bool_dtype(df[column]):
      continue
    present = df[column].notna()
    text = df.loc[present, column].astype(str).str.strip()
    commas = text.str.contains(",", regex=False)
    if not len(text) or not commas.any() or not _decimal_comma_numbers(text).all():
      continue
    numbers = pd.to_numeric(text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False))
    if text.nunique() != numbers.nunique():  # '1,1' and '1,10' both 1.1: codes, not numbers; they stay text
      continue
    values = np.full(len(df), np.nan)
    values[present.to_numpy()] = numbers.to_numpy(np.float64)
    df[column] = values
    points = text.str.contains(".", regex=False)
    if points.any():  # the column's commas mark decimals, so its points (each before three digits) group thousands
      both = points & commas
      example = text[both if both.any() else points].iloc[0]
      # Points only beside another value's comma ('1.250' and '0,75'): thousands here, but a neighbouring column of
      # points alone is read as decimals ('2.493'), so that reading asks the analyst to look (a review).
      warn = "" if both.any() else "warning: "
      notes.append(
        f"{warn}column {shown_value(column)}: points between groups of three digits read as thousands separators and "
        f"decimal commas as decimal points (e.g. {shown_value(example)} as "
        f"{shown_value(example.replace('.', '').replace(',', '.'), str)})"
      )
      continue
    example = text[commas].iloc[0]
    notes.append(
      f"column {shown_value(column)}: decimal commas read as decimal points (e.g. {shown_value(example)} as "
      f"{shown_value(example.replace(',', '.'), str)})"
    )
  return notes


def _decimal_comma_numbers(text: pd.Series) -> pd.Series:
  """[values] bool: text that is a number as a ';' file writes one, with a decimal comma (`DECIMAL_COMMA`) and
  perhaps thousands points (`POINTS_AND_COMMA`)."""
  return text.str.fullmatch(DECIMAL_COMMA_NUMBER.pattern)


THOUSANDS_POINT = re.compile(r"[+-]?[1-9]\d{0,2}(\.\d{3})+")  # 2.493 or 1.234.567: a ';' file's thousands points
# 3.835,50 or 1.204.000 or -2.493,5: thousands points and a decimal comma, as German exports write numbers; a ';'
# file's column reads so where every value is written so or with a decimal comma alone, one comma at least
POINTS_AND_COMMA = re.compile(THOUSANDS_POINT.pattern + r"(,\d+)?")
DECIMAL_COMMA_NUMBER = re.compile(f"(?:{DECIMAL_COMMA.pattern})|(?:{POINTS_AND_COMMA.pattern})")  # either, one match


def _thousands_points(source, raw, df: pd.DataFrame, blank: np.ndarray) -> list[str]:
  """Warnings for the number columns of a ';'-separated table whose every value with a '.' groups three digits
  after it ('2.493', '10.817'; the others whole numbers of at most three digits): German Excel's thousands points,
  which pandas reads as decimals (a CSV audit: 2,493 euros read as 2.493, and the few right values warned of as
  extreme). Read as they are; the warning says how to check. Only the columns of fractions are read again, as text."""
  columns = [c for c in df.columns if pd.api.types.is_float_dtype(df[c]) and not _whole_floats(df[c])]
  if not columns:
    return []
  text = _as_written(source, raw, ";", columns, blank)
  if text is None:
    return []
  notes = []
  for column in columns:
    present = text[column].dropna().str.strip()
    dotted = present.str.contains(".", regex=False)
    if not dotted.any() or not present[dotted].str.fullmatch(THOUSANDS_POINT.pattern).all():
      continue
    if not (~dotted).any() or not present[~dotted].str.fullmatch(r"[+-]?\d{1,3}").all():
      continue  # (a review: '70.000' and '70.137' alone are as likely three decimals)
    example = present[dotted].iloc[0]
    notes.append(
      f"warning: column {shown_value(column)}: every value with a '.' has groups of three digits after it (such as "
      f"{shown_value(example)}),"
      f" read as a decimal point; in a ';' file such points may group thousands ({shown_value(example, str)} for "
      f"{shown_value(example.replace('.', ''), str)}): if so, remove them"
    )
  return notes


def read_table(path: str | os.PathLike) -> pd.DataFrame:
  """Reads a CSV (see `read_csv`) or Parquet case table (by extension; a Parquet file named as a CSV is read as
  Parquet, by its bytes).

  Raises:
    ValueError naming the file: missing, empty, unknown format, unreadable, or a column named twice.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"data file {path!r} does not exist")
  lower = path.lower()
  if lower.endswith((".parquet", ".pq")):
    if os.path.getsize(path) == 0:
      raise TableFileError(f"data file {path!r}", "is empty (0 bytes)")
    return read_parquet(path, name=f"data file {path!r}")
  if lower.endswith(TEXT_TABLES) or lower.endswith(tuple(t + ".gz" for t in TEXT_TABLES)):
    return read_csv(path, name=f"data file {path!r}")
  raise ValueError(
    f"data file {path!r}: unknown format (use .csv, .tsv, .tab or .txt, each also gzip-compressed as .gz, or .parquet)"
  )


TEXT_TABLES = (".csv", ".tsv", ".tab", ".txt")  # read by `read_csv`, which finds the separator (an audit: .tsv refused)


REST_LABEL = "rest"  # a finding's reference when its group is tested against every other group of the column


class ColumnError(ValueError):
  """A problem with one column of the table; `column` names it (a service answers with the name)."""

  def __init__(self, column: str, message: str):
    super().__init__(message)
    self.column = column


def validate_table(df: pd.DataFrame, schema: Schema) -> None:
  """Checks `df` against `schema` before any coding: rows, roles, every named column present.

  Raises:
    ColumnError naming the column for a missing one; TypeError for a schema that is not a `Schema`; ValueError for
    the other problems.
  """
  if not isinstance(df, pd.DataFrame):
    hint = " (read a file with cube_env.read_table(path) first)" if isinstance(df, str | os.PathLike) else ""
    raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}{hint}")
  if not isinstance(schema, Schema):  # a library audit: a dict failed as "'dict' object has no attribute 'measures'"
    raise TypeError(
      f"schema must be a cube_env.Schema(dimensions=..., protected=..., measures=...), got {type(schema).__name__}"
    )
  if len(df) == 0:
    raise ValueError("the table is empty (0 rows)")
  dup_cols = df.columns[df.columns.duplicated()].tolist()
  if dup_cols:
    raise ValueError(f"the table has duplicated column(s) [{shown_names(dup_cols)}]")
  check_roles(schema)
  for role in ROLES:
    for c in getattr(schema, role):
      if c not in df.columns:
        raise ColumnError(
          c,
          f"column {shown_value(c)} (schema.{role}) is not in the table{near_names(c, df.columns)}; columns are "
          f"[{shown_names(df.columns)}]",
        )
      check_scalars(df[c], c)


_NESTED = (list, tuple, dict, set, np.ndarray)


def check_scalars(column: pd.Series, name) -> None:
  """ColumnError naming the column when its cells hold lists, arrays or mappings (a Parquet list column, JSON read
  as objects): one value a cell is what a cube codes."""
  if column.dtype != object:
    return
  nested = column.map(lambda v: isinstance(v, _NESTED)).to_numpy(bool)
  if nested.any():
    first = int(np.argmax(nested))
    raise ColumnError(
      name,
      f"column {shown_value(name)} holds {'mappings' if isinstance(column.iloc[first], dict) else 'lists'} (the "
      f"first at row {first + 1}): each cell must be one value",
    )


def near_names(name: str, columns) -> str:
  """A hint for a column `name` not in `columns`, as " (did you mean 'Site '?)": the names it matches but for spaces
  around either and capitals (a header's 'Site ' for 'Site'), else the closest spellings (`difflib`); "" if none."""
  key = str(name).strip().casefold()
  same = [c for c in columns if str(c).strip().casefold() == key]
  near = same or difflib.get_close_matches(str(name), [str(c) for c in columns], n=2, cutoff=0.8)
  return f" (did you mean {' or '.join(map(shown_value, near))}?)" if near else ""


ROLES = ("dimensions", "protected", "measures", "adjusters")  # the Schema fields that name columns


class RoleError(ValueError):
  """The schema's column roles contradict each other or are missing; `role` names the Schema field to change."""

  def __init__(self, role: str, message: str):
    super().__init__(message)
    self.role = role


def check_roles(schema: Schema) -> None:
  """The roles alone, before any table is read: a protected column, a measure and a dimension are named; no
  column is named twice in a role or in two of dimensions, protected and measures; an adjuster is no measure and
  not protected; `bins` and `log_scale` name columns of the right roles.

  Raises:
    RoleError naming the role.
  """
  for role, what in (("protected", "protected column (e.g. race, sex, payer)"), ("measures", "measure column")):
    if not getattr(schema, role):
      raise RoleError(role, f"the schema names no {what}")
  if not schema.dimensions:
    raise RoleError("dimensions", "the schema names no dimension column")
  for role in ROLES:
    seen = set()
    for c in getattr(schema, role):
      if c in seen:
        raise RoleError(role, f"column {shown_value(c)} is listed twice in schema.{role}")
      seen.add(c)
  owner: dict[str, str] = {}
  for role in ("dimensions", "protected", "measures"):
    for c in getattr(schema, role):
      if c in owner:
        raise RoleError(role, f"column {shown_value(c)} is in two roles: {owner[c]} and {role}")
      owner[c] = role
  for c in schema.adjusters:
    if owner.get(c) == "measures":
      raise RoleError("adjusters", f"column {shown_value(c)} is a measure and cannot be an adjuster")
    if owner.get(c) == "protected":
      raise RoleError("adjusters", f"column {shown_value(c)} is protected and cannot be an adjuster")
  for c in schema.bins:
    if c not in schema.dimensions and c not in schema.protected:
      raise RoleError("bins", f"schema.bins names {shown_value(c)}, which is not a dimension or protected column")
  for c in schema.log_scale:
    if c not in schema.measures:
      raise RoleError("log_scale", f"schema.log_scale names {shown_value(c)}, which is not a measure")


def _number_label(v: float) -> str:
  """A numeric bin edge as labels write it."""
  return f"{v:.4g}"


def _edge_labeller(edges: np.ndarray):
  """How a column's numeric bin edges are written: `_number_label` (4 significant digits) where that writes each
  edge apart and without an exponent, else whole numbers in full and others with the fewest digits that write
  them apart (a library audit: dates stored as 20220315 gave '[2.022e+07, 2.022e+07)' twice, two bins became one
  category under one label, and '< 2.022e+05' stood for < 202207)."""
  finite = np.unique(np.asarray(edges, np.float64)[np.isfinite(edges)])
  plain = [_number_label(v) for v in finite]
  if len(set(plain)) == len(finite) and not any("e" in s for s in plain):
    return _number_label
  for decimals in range(1, 10):  # fixed point, never an exponent (a review: '< 2.022e+07' beside '>= 20260324')

    def label(v: float, decimals=decimals) -> str:
      return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.{decimals}f}"

    if len({label(v) for v in finite}) == len(finite):
      return label
  return label


def _bin_labels(edges: np.ndarray, *, open_ends: bool = False, fmt=_number_label) -> list[str]:
  """`[lo, hi)` per bin (the last closed), each edge written by `fmt`. `open_ends`: the outer bins are `< hi` and
  `>= lo`, for quantile bins, whose outer edges are the column's smallest and largest values, each one person's (an
  age of 104; HIPAA's safe harbor aggregates ages over 89 for that reason)."""

  labels = []
  for i in range(len(edges) - 1):
    close = "]" if i == len(edges) - 2 else ")"
    labels.append(f"[{fmt(edges[i])}, {fmt(edges[i + 1])}{close}")
  if open_ends:
    labels[0], labels[-1] = f"< {fmt(edges[1])}", f">= {fmt(edges[-2])}"
    if len(labels) == 1:
      labels = ["all values"]
  return labels


IDENTIFIER_SHARE = 0.5  # a category column with more distinct values than this share of its rows is an identifier


def _fold_note(name: str, n_folded: int, n_folded_rows: int, n_rows: int, *, own_other: bool = False) -> str:
  """The note of `n_folded` values of `name` folded into `OTHER` with `n_folded_rows` of the column's `n_rows` rows
  (`own_other`: the table's own value 'OTHER' among them, its rows counted, not its value).

  The rows are shown only when they are at least `SMALL_CELL` and at least twice the values: with fewer than two
  rows per value, some value provably has exactly one (e.g. 12 values in 12 rows). Where OTHER holds more than half
  of the rows, the note says so, without the share: the share and the table's rows (which the summary shows) gave
  back OTHER's rows exactly, and so the rows of the values kept, which may be few (a disclosure audit: 86 rows, "93%"
  in OTHER, 6 rows in the two surgeons kept).
  """
  shown = n_folded_rows >= SMALL_CELL and n_folded_rows >= 2 * n_folded
  into = f"{OTHER!r}" + (f" (with the table's own {OTHER!r})" if own_other else "")
  if shown:
    note = f"folded {n_folded} rare values of {shown_value(name)} ({n_folded_rows} rows) into {into}"
  else:
    note = f"folded {n_folded} rare values of {shown_value(name)} into {into} (rows not shown: small-cell rule)"
  if n_folded_rows > n_rows / 2:
    note += f"; more than half of its rows are in {OTHER!r}: raise max_categories (--max-categories) or drop the column"
  return note


def category_label(value: Any) -> str:
  """A category's label as the cube codes it: the value printed, in Unicode's composed form (NFC: an 'e' followed by
  a combining accent is the one character 'é', as most software writes it; an ingest audit found the two spellings
  of 'José' made two groups that print alike), without spaces around it (' Black ' is 'Black'); '' (a value of
  spaces alone) is a missing value. Case-mix strata read text the same way (`adjust`)."""
  return unicodedata.normalize("NFC", str(value)).strip()


def _read_numbers(series: pd.Series, *, decimal_comma: bool = False):
  """Each distinct value of a column of text (or of numbers held as Python objects, as Parquet's DECIMAL reads) as a
  number, the way a measure's text is read (`measure_numbers`): a value of spaces alone is blank (missing), and a
  number with thousands separators ('12,345', `THOUSANDS`) is read without them, except in a ';' file
  (`decimal_comma`), whose commas are decimal commas. Shared by `_numbers_for_edges` and `_numbers_in_text`, so a
  column's text reads one way whether it is given bin edges or binned at its quantiles. Each distinct value is read
  once (a 1,000,000-row table's columns hold few).

  Returns:
    (codes [rows] of the distinct values, -1 where missing; the distinct values [distinct] object; as numbers
    [distinct] float64, NaN where not one; blank [distinct]; grouped [distinct], read without thousands separators;
    text [distinct], written as text, not held as a number).
  """
  codes, uniques = pd.factorize(series, use_na_sentinel=True)
  values = np.asarray(uniques, dtype=object)
  numbers = np.full(len(values), np.nan)
  blank, grouped, text = (np.zeros(len(values), bool) for _ in range(3))
  at, written = [], []
  for i, value in enumerate(values):
    if isinstance(value, str):
      text[i], stripped = True, value.strip()
      if not stripped:
        blank[i] = True
        continue
      grouped[i] = not decimal_comma and THOUSANDS.fullmatch(stripped) is not None
      at.append(i)
      written.append(stripped.replace(",", "") if grouped[i] else stripped)
    elif isinstance(value, Real | decimal.Decimal) and not isinstance(value, bool | np.bool_):
      numbers[i] = float(value)
  if at:
    numbers[at] = pd.to_numeric(pd.Series(written, dtype=object), errors="coerce").to_numpy(np.float64)
  return codes, values, numbers, blank, grouped, text


def _per_row(codes: np.ndarray, per_value: np.ndarray, missing) -> np.ndarray:
  """[rows] `per_value` of each row's distinct value (`_read_numbers`' codes), `missing` where the row has none."""
  return np.append(per_value, np.asarray([missing], per_value.dtype))[codes]


def _numbers_for_edges(
  series: pd.Series, name: str, role: str, summary: list[str], *, decimal_comma: bool = False
) -> pd.Series:
  """A text column given bin edges, as numbers: each value must be one (an audit: the edges of a column read as
  text, '045' or 'unknown' among ages, were left unused without a word and its values coded as categories). As a
  measure's text is read (`_read_numbers`): a value of spaces alone is missing, and numbers with thousands
  separators ('1,200') are read without them, except in a ';' file (`decimal_comma`); each noted.

  Raises:
    ColumnError naming the column and its values that are not numbers.
  """
  codes, _, per_value, blank, grouped, _ = _read_numbers(series, decimal_comma=decimal_comma)
  numbers = _per_row(codes, per_value, np.nan)
  spaces, grouped = _per_row(codes, blank, False), _per_row(codes, grouped, False)
  bad = (codes >= 0) & ~spaces & np.isnan(numbers)
  if spaces.any():
    summary.append(
      redact_counts(
        f"{role} {shown_value(name)}: {int(spaces.sum())} rows blank but for spaces read as missing", SMALL_CELL
      )
    )
  if grouped.any():
    summary.append(
      f"{role} {shown_value(name)}: numbers with thousands separators read without them (e.g. "
      f"{shown_value(series[grouped].iloc[0].strip())})"
    )
  if bad.any():
    shown = ", ".join(map(shown_value, pd.unique(series[bad].astype(str))[:3]))
    raise ColumnError(
      name,
      f"{role} {shown_value(name)} is given bin edges but holds text that is not a number ({shown}); recode it as "
      "missing (an empty cell) or as numbers, or leave its bin edges out to code its values as categories",
    )
  return pd.Series(numbers, index=series.index)


MOSTLY_NUMBERS = 0.5  # `_numbers_in_text`: least share of a text column's rows with a value that are numbers


def _numbers_in_text(
  series: pd.Series,
  name: str,
  role: str,
  *,
  nunique: int,
  n_bins: int,
  max_categories: int,
  summary: list[str],
  decimal_comma: bool = False,
) -> tuple[pd.Series, np.ndarray | None] | None:
  """A filter column of numbers that pandas does not hold as numbers, as numbers, and the rows kept apart as
  categories of their own (or None); None for any other column. Without it such a column was coded one category per
  value, its 11 most frequent values and OTHER (an ingest audit: ages with HIPAA's top code '90+', or a few
  'unknown', folded most of their rows into OTHER; so were charges written '12,345', a Parquet duration and a Parquet
  DECIMAL), where the same numbers stored as numbers are cut into quantile bins.

  - Durations (timedelta) are read in minutes, as a measure's are (`measure_numbers`), noted; whole minutes print
    without a decimal point where the column has few values (not binned).
  - Numbers held as Python objects (Parquet's DECIMAL reads as `decimal.Decimal`) with more distinct values than
    `max_categories` are numbers, binned as a float column's (fewer are categories, as a float column's are).
  - Text is read as numbers (`_read_numbers`: thousands separators, spaces alone missing) where the column has more
    distinct values than `max_categories` (else its values are categories, as a number column's few values are),
    numbers in at least `MOSTLY_NUMBERS` of the rows with a value, and at most `max_categories - n_bins` distinct
    values that are not numbers (infinities included), so that its bins and those values fit as categories. Its
    numbers are then cut into quantile bins as the column without those values would be, and each such value ('90+',
    'unknown') is a category of its own: the note names them, as they are no bin. A text column of numbers only is
    so binned where some are written with thousands separators (a CSV's '12,345', which pandas reads as text), as
    the same numbers read from a CSV are; without, they were stored as text on purpose (a Parquet text column of
    procedure or DRG codes) and stay categories. Text that reads as codes stays categories too: whole numbers of one width of at least `CODE_WIDTH` digits,
    some with a leading zero ('02139' beside '10001', '045'; `_zero_padded`, the rule `read_csv` keeps ZIP codes as
    text by, so '07' among ages is a number here as there), or two texts of one number ('1.1' and '1.10': section
    codes; as `_read_decimal_commas` reads them). Where only the values that are not numbers are too many, a note
    says the column is kept as categories and why.
  """
  if series.dtype.kind == "m":  # NumPy's or Arrow's durations
    minutes = pd.to_timedelta(series).dt.total_seconds() / 60.0
    summary.append(f"{role} {shown_value(name)}: durations read in minutes")
    present = minutes.dropna()
    if nunique <= max_categories and (present == present.round()).all():
      minutes = minutes.round().astype("Int64")  # 60, not 60.0, as a category's label
    return minutes, None
  if nunique <= max_categories or not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
    return None  # few values are categories, as a number column's few values are (and nothing is read for them)
  codes, values, numbers, blank, grouped, text = _read_numbers(series, decimal_comma=decimal_comma)
  finite = np.isfinite(numbers)
  if finite.all() and not text.any():  # numbers held as objects (Parquet's DECIMAL)
    return pd.Series(_per_row(codes, numbers, np.nan), index=series.index), None
  if not text.any():
    return None
  rows = np.bincount(codes[codes >= 0], minlength=len(values))
  filled = int(rows[~blank].sum())
  if not filled or rows[finite].sum() < MOSTLY_NUMBERS * filled:
    return None
  if (finite | blank).all() and not grouped.any():  # numbers only, stored as text on purpose: codes (see above)
    return None
  written = pd.Series([values[i].strip() for i in np.flatnonzero(finite & text)], dtype=object)
  if _zero_padded(written) is not None or written.nunique() != len(np.unique(numbers[finite & text])):
    return None  # codes, not numbers
  others: dict[str, int] = {}  # the values that are not numbers, as labels, and their rows
  for i in np.flatnonzero(~finite & ~blank):
    label = category_label(values[i])
    others[label] = others.get(label, 0) + int(rows[i])
  shown = sorted(others, key=lambda k: (-others[k], k))
  listed = ", ".join(map(shown_value, shown[:5])) + (", ..." if len(shown) > 5 else "")
  if len(others) > max_categories - n_bins:
    summary.append(
      f"{role} {shown_value(name)}: mostly numbers written as text, but more of its values are not numbers "
      f"({listed}) than fit as categories beside its {n_bins} bins: kept as categories; recode those values as "
      "missing (an empty cell) to bin its numbers"
    )
    return None
  if grouped[finite].any():
    example = values[np.flatnonzero(grouped & finite)[0]].strip()
    summary.append(
      f"{role} {shown_value(name)}: numbers with thousands separators read without them (e.g. {shown_value(example)})"
    )
  summary.append(
    f"{role} {shown_value(name)}: numbers written as text, binned"
    + (f"; its values that are not numbers ({listed}) kept as categories of their own" if others else "")
  )
  apart = (codes >= 0) & ~_per_row(codes, finite, True)  # those values, and blanks (coded MISSING below)
  return pd.Series(_per_row(codes, np.where(finite, numbers, np.nan), np.nan), index=series.index), apart


def _code_column(
  series: pd.Series,
  name: str,
  *,
  edges: Sequence[float] | None,
  n_bins: int,
  max_categories: int,
  summary: list[str],
  role: str = "dimension",
  decimal_comma: bool = False,
) -> tuple[np.ndarray, tuple[str, ...]]:
  """Codes one filter column (a `role`, as notes name it); returns (codes [rows] int32, labels).

  Numbers are cut into `n_bins` quantile bins where they have more than `max_categories` distinct values (or at
  `edges`), as are dates (`_as_days`); numbers pandas does not hold as numbers are read as numbers first
  (`_numbers_in_text`: durations in minutes, Parquet's DECIMAL, and text that is mostly numbers, such as ages with
  '90+' or 'unknown' among them, whose values that are not numbers are kept as categories of their own). Any other
  column's values are categories, the `max_categories - 1` most frequent kept and the rest folded into `OTHER`; a
  column of few dates (not binned) is labelled and ordered as dates (`_date_labels`). Bytes (Parquet text without
  its UTF8 annotation) are read as UTF-8 text (`_utf8_text`), or refused naming the column."""
  decoded = _utf8_text(series, name)
  if decoded is not None:
    series = decoded
  missing = series.isna()
  n_missing = int(missing.sum())
  numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
  nunique = series.nunique(dropna=True)
  days = _as_days(series, name, role, nunique, max_categories, summary)
  if days is not None and edges is not None:
    raise ValueError(
      f"column {shown_value(name)}: bin edges are for numbers; a date {role} is cut at quantiles of its dates "
      "(or give a column of periods, such as the year, as categories)"
    )
  original, apart = series, None  # `apart`: the rows of a column of numbers as text whose values are kept as they are
  if days is None and not numeric and (edges is None or series.dtype.kind == "m"):
    read = _numbers_in_text(
      series,
      name,
      role,
      nunique=nunique,
      n_bins=n_bins,
      max_categories=max_categories,
      summary=summary,
      decimal_comma=decimal_comma,
    )
    if read is not None:
      (series, apart), numeric = read, True
  if edges is not None and days is None and not numeric:
    series = _numbers_for_edges(series, name, role, summary, decimal_comma=decimal_comma)
    missing, numeric = series.isna(), True
    n_missing = int(missing.sum())
  if numeric and days is None and np.isinf(series.to_numpy(dtype=float, na_value=np.nan)).any():
    # Binned, quantile edges through inf are NaN and every row fell in one bin; a few values made 'inf' a category
    # (an ingest audit).
    raise ValueError(
      f"column {shown_value(name)}: infinite values in a numeric {role}; recode them as missing or as a finite value"
    )
  binned = days is not None or (numeric and (edges is not None or nunique > max_categories))
  if not binned and nunique > max(max_categories, IDENTIFIER_SHARE * len(series)):
    # A number with that many values is binned (bmi), so only a category column can be an identifier (visit_id).
    summary.append(
      f"warning: {role} {shown_value(name)} looks like an identifier (more distinct values than half its rows); as "
      f"a {role} it adds nothing: drop it"
    )
  if binned:
    values = series.astype(float) if days is None else days
    if edges is None:
      # Dates: edges are dates of the column (the lower one at each quantile), so each label's days are exact.
      method = "linear" if days is None else "lower"
      qs = np.unique(np.nanquantile(values.to_numpy(), np.linspace(0, 1, n_bins + 1), method=method))
      edges_arr = qs
      how = f"{n_bins} quantile bins" + ("" if days is None else " of its dates")
      if len(qs) - 1 < n_bins:  # tied values put several quantiles at one value (an audit: 60% zeros, "4" bins: 2)
        how = f"{max(len(qs) - 1, 1)} bins, not {n_bins}: quantile edges coincide where values tie" + (
          "" if days is None else "; of its dates"
        )
    else:
      edges_arr = np.asarray(sorted(edges), float)
      lo, hi = np.nanmin(values), np.nanmax(values)
      if lo < edges_arr[0] or hi > edges_arr[-1]:
        raise ValueError(
          f"column {shown_value(name)}: values [{lo}, {hi}] fall outside the given bin edges [{edges_arr[0]}, "
          f"{edges_arr[-1]}]"
        )
      how = "given bin edges"
    if len(edges_arr) < 2:
      edges_arr = np.array([edges_arr[0], edges_arr[0]])
    fmt = _edge_labeller(edges_arr) if days is None else _day_label(values.to_numpy())
    labels = (
      _bin_labels(edges_arr, open_ends=edges is None, fmt=fmt) if edges_arr[0] < edges_arr[-1] else [fmt(edges_arr[0])]
    )
    idx = np.searchsorted(edges_arr, values.to_numpy(), side="right") - 1
    idx = np.clip(idx, 0, len(labels) - 1)
    labelled = pd.Series(np.asarray(labels, dtype=object)[idx], index=series.index)
    labelled[missing] = np.nan
    if apart is not None:  # '90+' or 'unknown' among numbers: a category of its own, beside the bins
      labelled[apart] = original[apart].to_numpy(object)
    series = labelled
    summary.append(f"binned {shown_value(name)} ({how}): {labels}")
  chronology = None  # a few dates: {label: its day}, to order them by
  if days is None and pd.api.types.is_datetime64_any_dtype(series):
    series, chronology = _date_labels(series)
  # Labels are str(value), counted per label (distinct raw values may print alike); the string work is done
  # once per distinct value, not per row (a 1,000,000-row, 40-column table spent most of its ingest there).
  raw_codes, uniques = pd.factorize(series, use_na_sentinel=True)
  printed = [str(v) for v in uniques]
  unique_labels = [category_label(v) for v in uniques]
  raw_counts = np.bincount(raw_codes[raw_codes >= 0], minlength=len(unique_labels))
  blank = [i for i, lab in enumerate(unique_labels) if not lab]
  if blank:
    raw_codes = np.where(np.isin(raw_codes, blank), -1, raw_codes)
    n_blank = int(raw_counts[blank].sum())
    raw_counts[blank] = 0
    n_missing += n_blank
    summary.append(
      redact_counts(f"{shown_value(name)}: {n_blank} rows blank but for spaces coded as {MISSING!r}", SMALL_CELL)
    )
  composed = [unicodedata.normalize("NFC", raw) for raw in printed]
  recomposed = [i for i, (raw, nfc) in enumerate(zip(printed, composed)) if raw != nfc]
  if recomposed:
    example = printed[recomposed[0]]
    summary.append(
      redact_counts(
        f"{shown_value(name)}: {int(raw_counts[recomposed].sum())} rows with letters written as a letter and a "
        f"combining mark read in the composed form (e.g. {shown_value(example, ascii)} as "
        f"{shown_value(composed[recomposed[0]], ascii)})",
        SMALL_CELL,
      )
    )
  spaced = [i for i, (lab, nfc) in enumerate(zip(unique_labels, composed)) if lab and lab != nfc]
  if spaced:
    n_spaced = int(raw_counts[spaced].sum())
    example = composed[spaced[0]]
    summary.append(
      redact_counts(
        f"{shown_value(name)}: {n_spaced} rows with spaces around the value read without them (e.g. "
        f"{shown_value(example)} as {shown_value(example.strip())})",
        SMALL_CELL,
      )
    )
  by_case: dict[str, set[str]] = {}
  for lab, c in zip(unique_labels, raw_counts):
    if c:
      by_case.setdefault(lab.casefold(), set()).add(lab)
  alike = [sorted(v) for v in by_case.values() if len(v) > 1]
  if alike:
    summary.append(
      f"warning: {role} {shown_value(name)} has values that differ only in capitals "
      f"({shown_names((shown_names(v, ' and ') for v in alike), '; ', str)}), "
      "kept apart: recode them if they mean the same"
    )
  short = _abbreviations(by_case)
  if short:
    pairs = "; ".join(f"{shown_value(a)} and {shown_value(b)}" for a, b in short[:3]) + (
      "; ..." if len(short) > 3 else ""
    )
    summary.append(
      f"warning: {role} {shown_value(name)} has values that may abbreviate others ({pairs}), kept apart: recode "
      "them if they mean the same"
    )
  counts: dict[str, int] = {}
  for lab, c in zip(unique_labels, raw_counts):
    if lab:  # a value of spaces alone went to MISSING above: no '' category
      counts[lab] = counts.get(lab, 0) + int(c)
  # The cube's own labels as values of the table (an ingest audit: a race column's 'OTHER', common in health
  # records, was refused): kept as a category, except that the table's 'MISSING' joins the missing cells (both
  # are then 'MISSING') and its 'OTHER' joins the rare values folded there, each said in a note.
  own_missing = counts.pop(MISSING, 0)
  if own_missing:
    if n_missing:
      summary.append(
        redact_counts(
          f"{shown_value(name)}: {own_missing} rows hold the value {MISSING!r}, coded with its {n_missing} missing "
          f"values as {MISSING!r}",
          SMALL_CELL,
        )
      )
      n_missing += own_missing  # its rows take MISSING's code through `lookup` below
    else:
      counts[MISSING] = own_missing
  if "." in counts:  # a CSV audit: SAS's missing value, tested as a group with no word
    summary.append(
      "warning: "
      + redact_counts(f"{role} {shown_value(name)} has the value '.' in {counts['.']} rows", SMALL_CELL)
      + f", which SAS writes for a missing value: it is a group of its own; blank those cells to code them {MISSING!r}"
    )
  # Most frequent first, ties by label, so codes are stable across runs; a few dates in their order (a date's
  # categories read as a timeline, as its bins do).
  labels = sorted(counts, key=lambda k: (-counts[k], k)) if chronology is None else sorted(counts, key=chronology.get)
  if len(labels) > max_categories:
    folded = labels[max_categories - 1 :]
    if OTHER in labels[: max_categories - 1]:  # the table's own 'OTHER' takes the folded values in
      folded = [lab for lab in labels if lab == OTHER or lab not in labels[:max_categories]]
    note = _fold_note(
      name, len(folded) - (OTHER in folded), sum(counts[k] for k in folded), len(series), own_other=OTHER in folded
    )
    if role == "protected column":  # a large-table audit: 39 insurance plans tested as one group, unremarked
      note += f"; as a protected column, its {OTHER!r} mixes those values and is tested as if it were one group"
    summary.append(note)
    labels = [lab for lab in labels if lab not in folded] + [OTHER]
  if n_missing:
    labels = labels + [MISSING]
    summary.append(redact_counts(f"{shown_value(name)}: {n_missing} missing values coded as {MISSING!r}", SMALL_CELL))
  reserved = {lab.casefold(): lab for lab in (OTHER, MISSING) if lab in labels}
  near = sorted(
    (lab, reserved[lab.casefold()]) for lab in labels if lab.casefold() in reserved and lab not in reserved.values()
  )
  if near:  # an ingest audit: 'Missing' beside the cube's 'MISSING' made two groups, unremarked
    summary.append(
      f"warning: {role} {shown_value(name)} has values that differ only in capitals from the cube's own labels "
      f"({'; '.join(f'{shown_value(a)} and {shown_value(b)}' for a, b in near)}), kept apart: recode them if they "
      "mean the same"
    )
  if len(labels) < 2:
    raise ValueError(
      f"column {shown_value(name)} is constant (only [{shown_names(labels)}]); it cannot split cohorts or groups"
    )
  lookup = {lab: i for i, lab in enumerate(labels)}
  per_unique = np.asarray([lookup.get(lab, lookup.get(OTHER, -1)) for lab in unique_labels] + [-1], np.int32)
  codes = np.where(raw_codes >= 0, per_unique[raw_codes], lookup.get(MISSING, -1)).astype(np.int32)
  return codes, tuple(labels)


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")  # 2023-01-15, 2023-01-15 08:30
OTHER_DATE = re.compile(r"\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}")  # 01/15/2023 or 15.01.2023: day and month ambiguous
DAY_S = 86_400


def _as_days(series: pd.Series, name: str, role: str, nunique: int, max_categories: int, summary: list[str]):
  """A date column's values as days since 1970 (float, NaN where missing), else None.

  A date filter column with more distinct dates than `max_categories` is binned like a number (quantile bins of
  time, labelled by dates) rather than folded to its most frequent dates: a column of datetimes (as Parquet and
  pandas give them), or text whose every value is an ISO date (`2023-01-15`, with an optional time). Text dates
  in another layout (`01/15/2023`) stay categories, with a warning, since their day and month can be read two
  ways."""
  if nunique <= max_categories:
    return None
  if pd.api.types.is_datetime64_any_dtype(series):
    when = series
  elif pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
    distinct = pd.Series(series.dropna().unique())
    text = distinct.astype(str).str.strip()
    if not len(text) or not text.str.fullmatch(ISO_DATE).all():
      iso, other = text.str.fullmatch(ISO_DATE), text.str.fullmatch(OTHER_DATE)
      if len(text) and other.all():
        summary.append(
          f"warning: {role} {shown_value(name)} looks like dates not written as YYYY-MM-DD (e.g. "
          f"{shown_value(text.iloc[0])}): kept as categories; write them as YYYY-MM-DD to cut them into periods of time"
        )
      elif len(text) and (iso | other).mean() >= MOSTLY_DATES:  # a few stray values (an audit: no word said)
        summary.append(
          f"warning: {role} {shown_value(name)} looks like dates but for values such as "
          f"{shown_value(text[~(iso | other)].iloc[0])}: kept "
          "as categories; fix or blank those, with every date as YYYY-MM-DD, to cut it into periods of time"
        )
      return None
    written = series.astype("string").str.strip()
    try:
      when = pd.to_datetime(written, format="ISO8601")
    except (ValueError, OverflowError) as err:  # pandas' error quotes the value whole: it is named, cut (`shown_value`)
      bad = written[pd.to_datetime(written, format="ISO8601", errors="coerce").isna() & written.notna()]
      what = shown_value(bad.iloc[0]) if len(bad) else shown_value(str(err), str)
      raise ValueError(
        f"column {shown_value(name)}: reads as dates (YYYY-MM-DD) but one is not a valid date: {what}"
      ) from None
  else:
    return None
  return _datetime_days(when)


def _datetime_days(when: pd.Series) -> pd.Series:
  """Datetimes as days since 1970 (float, NaN where missing), of the local wall time the table shows (a zone is
  dropped: a UTC day would shift its hours)."""
  if getattr(when.dt, "tz", None) is not None:
    when = when.dt.tz_localize(None)
  # Seconds, not nanoseconds: datetime64[ns] holds only 1677-2262, and a sentinel such as 9999-12-31 wrapped around.
  seconds = when.to_numpy().astype("datetime64[s]").astype(np.int64).astype(float)
  return pd.Series(np.where(when.isna().to_numpy(), np.nan, seconds / DAY_S), index=when.index)


def _date_labels(when: pd.Series) -> tuple[pd.Series, dict[str, float]]:
  """A datetime column with few distinct dates (categories, not binned: `_as_days`) as labels written as its bins'
  edges are (`_day_label`: '2022-03-01', with the time of day where any value has one; an ingest audit: str() wrote
  '2022-03-01 00:00:00'), missing where missing; and each label's day, by which `_code_column` orders them."""
  days = _datetime_days(when)
  fmt = _day_label(days.to_numpy())
  codes, uniques = pd.factorize(days, use_na_sentinel=True)
  written = [fmt(v) for v in uniques]
  labels = np.asarray(written + [None], dtype=object)[codes]
  return pd.Series(labels, index=when.index, dtype=object), dict(zip(written, uniques))


def _day_label(days: np.ndarray):
  """The label writer of a date column's bin edges: YYYY-MM-DD, with the time of day where any value has one (and
  its seconds where any has them)."""
  seconds = np.round(np.nan_to_num(days) * DAY_S)
  layout = "%Y-%m-%d %H:%M:%S" if np.any(seconds % 60) else "%Y-%m-%d %H:%M" if np.any(seconds % DAY_S) else "%Y-%m-%d"
  return lambda v: pd.Timestamp(np.datetime64(int(round(v * DAY_S)), "s")).strftime(layout)


MOSTLY_DATES = 0.9  # share of a column's distinct values written as dates past which the others are called strays

YES_NO = (("y", "n"), ("yes", "no"), ("true", "false"), ("t", "f"))  # (1, 0) text pairs read as a binary measure
THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?")  # 99,999 or -1,234,567.5: read without the commas
SEPARATED = re.compile(r"[+-]?\d[\d.,' ]*\d")  # a number written with separators of some kind (12,5; 1.234.567)


def _yes_no(col: pd.Series, name: str) -> tuple[pd.Series, str] | None:
  """`col` as 1/0 with its note when its values (stripped, any case) are all one pair of `YES_NO`; else None."""
  uniques = pd.unique(col.dropna())
  words = {str(v).strip().lower() for v in uniques}
  if not words:
    return None
  for yes, no in YES_NO:
    if words <= {yes, no}:
      coded = {v: float(str(v).strip().lower() == yes) for v in uniques}
      pair = "/".join(w.capitalize() if len(w) > 1 else w.upper() for w in (yes, no))
      return col.map(coded).astype(float), f"measure {shown_value(name)}: {pair} read as 1/0"
  return None


ABBREVIATION = 3  # `_abbreviations`: longest value taken for a possible abbreviation of another ('M', 'Fem')


def _abbreviations(by_case: dict[str, set[str]]) -> list[tuple[str, str]]:
  """Pairs (short, long) of a column's values where the short one, at most `ABBREVIATION` letters, opens the long
  one whatever the capitals ('M' and 'Male', 'f' and 'Female'): an export mixing codes and words keeps them apart
  as two groups, so one's rows sit in the other's rest (an audit: 'Female' rows in the rest of sex F)."""
  keys = sorted(by_case)
  pairs = []
  for a in keys:
    if not 0 < len(a) <= ABBREVIATION or not a.isalpha():
      continue
    for b in keys:
      if len(b) > len(a) and b.startswith(a) and b[len(a)].isalpha():
        pairs.append((min(by_case[a]), min(by_case[b])))
  return pairs


def _spaces_only(col: pd.Series) -> np.ndarray:
  """[rows] bool: cells blank but for spaces (an Excel export's empty cells), read as missing by `measure_numbers`
  and `_numbers_for_edges`."""
  return col.notna().to_numpy(bool) & col.astype(str).str.strip().eq("").to_numpy(bool)


def measure_numbers(col: pd.Series, name: str, *, decimal_comma: bool = False) -> tuple[np.ndarray, list[str]]:
  """A measure column as numbers: `[rows]` float64 with NaN where missing, and the coding notes.

  Numbers are taken as they are; durations (timedelta) in minutes; True/False (bool) and text that is one of the
  `YES_NO` pairs become 1/0; text
  whose every non-number is a number with thousands separators (`THOUSANDS`: no leading 0, groups of 3) is read
  without the commas, unless `decimal_comma` (a file separated by semicolons, where "1,025" is one and a
  fortieth): then it is refused. Each is noted; the count of rows read with separators follows the small-cell
  rule.

  Raises:
    ColumnError naming the column when other text remains (with a hint where it looks like a number with
    separators).
  """
  if pd.api.types.is_bool_dtype(col):
    return col.to_numpy(dtype=np.float64), [f"measure {shown_value(name)}: True/False read as 1/0"]
  if col.dtype.kind == "m":  # durations, NumPy's or Arrow's (an audit: read as microseconds, unnoted)
    minutes = pd.to_timedelta(col).dt.total_seconds().to_numpy(np.float64) / 60.0
    return minutes, [f"measure {shown_value(name)}: durations read in minutes"]
  if col.dtype.kind == "M" or pd.api.types.is_datetime64_any_dtype(col):
    raise ColumnError(
      name,
      f"measure column {shown_value(name)} holds dates and times, not numbers: for a duration, give the difference "
      "of two times (a timedelta, read in minutes) or a number in the unit you want",
    )
  if pd.api.types.is_numeric_dtype(col):
    return col.to_numpy(dtype=np.float64), []
  notes = []
  spaces = _spaces_only(col)
  if spaces.any():  # blank but for spaces (an Excel export's empty cells): missing, as such a category is
    col = col.mask(spaces)
    notes.append(
      redact_counts(
        f"measure {shown_value(name)}: {int(spaces.sum())} rows blank but for spaces read as missing", SMALL_CELL
      )
    )
  yes_no = _yes_no(col, name)
  if yes_no is not None:
    coded, note = yes_no
    return coded.to_numpy(dtype=np.float64), notes + [note]
  coerced = pd.to_numeric(col, errors="coerce")
  bad = coerced.isna() & col.notna()
  if bad.any():
    raw = col[bad]
    text = raw.astype(str).str.strip()
    grouped = text.str.fullmatch(THOUSANDS.pattern).to_numpy(bool) & (not decimal_comma)
    if not grouped.all():
      unread = text[~grouped]
      # Each text by its own count (an audit: "'?' in 40 rows" counted the 25 rows of '-' as well), most common
      # first; no total, which less the counts shown would give a redacted one back (a review).
      common = unread.value_counts(sort=True).head(3)
      shown = ", ".join(f"{shown_value(v)} in {redact_counts(f'{c} rows', SMALL_CELL)}" for v, c in common.items())
      more = ", ..." if len(common) < unread.nunique() else ""
      message = (
        f"measure column {shown_value(name)} is not numeric: it holds text that is not a number ({shown}{more}); "
        "recode it as missing (an empty cell) or as numbers"
      )
      for yes, no in YES_NO:  # nine in ten or more one yes/no pair: name a value outside it, not one of the pair
        inside = unread.str.lower().isin([yes, no]).to_numpy(bool)
        if inside.mean() >= 0.9 and not inside.all():
          stray = redact_counts(f"{int((~inside).sum())} rows", SMALL_CELL)
          message = (
            f"measure column {shown_value(name)} reads as {yes}/{no} but for value "
            f"{shown_value(unread[~inside].iloc[0])} in "
            f"{stray}: recode those as missing, {yes!r} or {no!r}"
          )
          break
      separated = unread[unread.str.fullmatch(SEPARATED.pattern).to_numpy(bool)]
      german = separated[separated.str.fullmatch(POINTS_AND_COMMA.pattern).to_numpy(bool) & decimal_comma]
      if len(german):  # read where the whole column is so written (`_read_decimal_commas`): name a value that is not
        written = col.dropna().astype(str).str.strip()
        numeric = written.str.fullmatch(SEPARATED.pattern).to_numpy(bool)  # numbers, not words read as missing
        stray = written[numeric & ~_decimal_comma_numbers(written).to_numpy(bool)]
        if len(stray):
          why = f", but {shown_value(stray.iloc[0])} is not: write the column's numbers one way"
        elif _decimal_comma_numbers(written[written.ne("")]).all():  # each written so: two of them one number
          why = (
            ", as this one is, but two of its values are one number written two ways (such as '1,5' and '1,50'), "
            "so it is read as codes: write each number one way"
          )
        else:
          why = ""
        message += (
          f"; values like {shown_value(german.iloc[0])} are written with thousands points and a decimal comma, "
          "which a ';' file's column is read with only where each of its numbers is written so (or with a decimal "
          "comma alone)" + why
        )
      elif len(separated):
        message += (
          f"; values like {shown_value(separated.iloc[0])} look like numbers written with separators: write them "
          "with '.' as the decimal point and no other separator "
          + (
            "(in a file separated by semicolons a comma is a decimal comma, so commas cannot group thousands; points "
            "group thousands only in a column written as '3.835,50' throughout)"
            if decimal_comma
            else "(commas between groups of 3 digits, as in '99,999', are read)"
          )
        )
      raise ColumnError(name, message)
    coerced = coerced.astype(float)
    coerced[bad.to_numpy()] = pd.to_numeric(text.str.replace(",", "", regex=False)).to_numpy(np.float64)
    notes.append(
      redact_counts(
        f"measure {shown_value(name)}: {len(text)} rows written with thousands separators (e.g. "
        f"{shown_value(text.iloc[0])}) read as numbers without the commas",
        SMALL_CELL,
      )
    )
  return coerced.to_numpy(dtype=np.float64), notes


SENTINEL_FACTOR = 100.0  # a value this many times the measure's median magnitude (or more) is noted as suspect


def _suspect_values(observed: np.ndarray, name: str) -> list[str]:
  """Warnings about values that look like codes rather than measurements: at least `SENTINEL_FACTOR` times the
  median magnitude and repeated exactly or all nines (99999 for "unknown" among minutes), and negative values in a
  measure that is otherwise positive (at least 95% of its values). Counts follow the small-cell rule. The values
  stay as they are: only the analyst knows whether they are codes (then recode them as missing) or real."""
  notes = []
  scale = float(np.median(np.abs(observed)))
  if scale > 0:
    huge = pd.Series(observed[np.abs(observed) >= SENTINEL_FACTOR * scale]).value_counts()
    # A code repeats exactly or is all nines (999, 99999); a long tail of real measurements does neither.
    nines = [v == np.round(v) and set(str(int(abs(v)))) == {"9"} for v in huge.index]
    huge = huge[(huge.to_numpy() >= 2) | np.asarray(nines, bool)]
    if len(huge):
      common = huge.index[0]
      rows = redact_counts(f"{int(huge.sum())} rows", SMALL_CELL)
      notes.append(
        f"warning: measure {shown_value(name)}: {rows} hold values of at least {SENTINEL_FACTOR:g} times its median "
        f"magnitude ({scale:.4g}), e.g. {common:.6g}: if they are codes for unknown, recode them as missing"
      )
  negative = observed < 0
  if negative.any() and np.mean(observed > 0) >= 0.95:
    rows = redact_counts(f"{int(negative.sum())} rows", SMALL_CELL)
    notes.append(
      f"warning: measure {shown_value(name)}: {rows} hold negative values though nearly all are positive: if they are "
      "errors or codes, recode them as missing"
    )
  return notes


def table_measure_numbers(df: pd.DataFrame, name: str) -> tuple[np.ndarray, list[str]]:
  """`measure_numbers` of `df`'s column `name`; where `read_csv` found semicolons (and read any column of decimal
  commas as numbers), commas between digits are not taken for thousands separators."""
  return measure_numbers(df[name], name, decimal_comma=df.attrs.get(SEPARATOR) == ";")


def _measure_values(df: pd.DataFrame, name: str, schema: Schema, summary: list[str]):
  values, notes = table_measure_numbers(df, name)
  summary.extend(notes)
  if np.isinf(values).any():
    raise ValueError(f"measure column {shown_value(name)} holds infinite values")
  present = ~np.isnan(values)
  if not present.any():  # a library audit: "almost no values" for none
    raise ValueError(f"measure column {shown_value(name)} has no values (missing in every row)")
  if present.sum() < SMALL_CELL:  # no side of a test could show a statistic (an ingest audit: 5 values were taken)
    raise ValueError(
      f"measure column {shown_value(name)} has almost no values (fewer than {SMALL_CELL} non-missing), too few for any "
      "statistic to be shown"
    )
  if (~present).any():
    summary.append(
      redact_counts(
        f"measure {shown_value(name)}: {int((~present).sum())} rows missing, left out of its statistics only",
        SMALL_CELL,
      )
    )
  observed = values[present]
  uniq = np.unique(observed)
  is_binary = bool(np.all(np.isin(uniq, [0.0, 1.0])))
  if len(uniq) < 2:
    raise ValueError(f"measure column {shown_value(name)} is constant ({uniq[0]})")
  if not is_binary:
    summary.extend(_suspect_values(observed, name))
    flag = np.isin(observed, [0.0, 1.0])
    if flag.mean() >= 0.99:  # a 0/1 flag with a few strays is tested as a count or a mean, not a rate (an audit)
      stray = redact_counts(f"{int((~flag).sum())} rows", SMALL_CELL)
      summary.append(
        f"warning: measure {shown_value(name)} reads as 0/1 but for {stray} (e.g. {observed[~flag][0]:g}), so it is "
        "not tested as a rate: if it is a yes/no flag, recode those values as missing, 0 or 1"
      )
  two_valued = len(uniq) == 2 and not is_binary
  if two_valued:  # an ingest audit: yes/no coded 1/2 was tested on the log scale, its doubled risk read as 5%
    summary.append(
      f"warning: measure {shown_value(name)} takes two values only ({uniq[0]:g} and {uniq[1]:g}), so it is tested "
      "as a mean on its own scale, not as a rate: if it is a yes/no outcome, recode it as 0/1 (1 the event) or yes/no"
    )
  forced = schema.log_scale.get(name)
  positive = bool(np.all(observed > 0))
  with np.errstate(over="ignore", invalid="ignore"):  # a value near 1e300 overflows the cubes (`_check_range`)
    skew = float(pd.Series(observed).skew())
  if forced is None:
    is_log = (not is_binary) and (not two_valued) and positive and skew > 1.0
  else:
    is_log = bool(forced)
    if is_log and (is_binary or not positive):
      raise ValueError(f"measure {shown_value(name)}: log scale requested but it has values <= 0 or is binary")
  if is_log:
    values = np.log(values)
    summary.append(
      f"measure {shown_value(name)}: tested on the log scale (skewness {skew:.2f}); effects are ratios of geometric "
      "means"
    )
  elif forced is None and not is_binary and not positive and skew > 1.0:
    nonpositive = redact_counts(f"{int((observed <= 0).sum())} rows", SMALL_CELL)
    summary.append(
      f"measure {shown_value(name)}: right-skewed (skewness {skew:.2f}) but {nonpositive} hold values <= 0, so it "
      "is tested on the linear scale (differences of means), not the log scale"
    )
  _check_range(values, name)
  _check_spread(values, name)
  # A count (whole numbers >= 0 other than 0/1, on the linear scale): its n x mean are events (`CubeMeta.is_count`).
  is_count = not is_binary and not is_log and bool(np.all(uniq >= 0) and np.all(uniq == np.round(uniq)))
  # Few values (on the test scale): a side's n, mean and variance give its cases with each (`CubeMeta.few_values`).
  few = (
    tuple(float(u) for u in (np.log(uniq) if is_log else uniq))
    if not is_binary and len(uniq) <= MOST_FEW_VALUES
    else ()
  )
  return values, is_binary, is_log, is_count, few, bool((observed < 0).any())


MIN_SPREAD = 1e-15  # smallest standard deviation (test scale) whose variance float32 sums hold (`_check_spread`)


def _check_spread(values: np.ndarray, name: str) -> None:
  """ColumnError naming the measure when its standard deviation on the test scale is under `MIN_SPREAD`: the
  squared deviations underflow float32 (smallest normal 1.2e-38), a side's variance reads 0 and every gap has
  |z| 40 (an ingest audit: a null measure in units of 1e-20 gave 60 findings at |z| 40 where scipy gives p 0.93).
  Such units are a coding choice, which a change of unit mends."""
  sd = float(np.nanstd(values))
  if 0 < sd < MIN_SPREAD:
    raise ColumnError(
      name,
      f"measure column {shown_value(name)} varies by about {sd:.2g} (its standard deviation on its test scale), under "
      f"{MIN_SPREAD:.0e}, too little for the cube's float32 statistics: express it in a smaller unit (multiply it)",
    )


MAX_DEVIATION = 1e15  # largest distance from a measure's median (test scale) whose square float32 sums can hold


def _check_range(values: np.ndarray, name: str) -> None:
  """ValueError naming the measure when a value lies more than `MAX_DEVIATION` from its median on the test scale:
  its square overflows float32's sums (3.4e38 over 1e8 rows), and the statistics of every cohort holding it are
  not numbers (an audit: two values of 1e20 confirmed a false finding at |z| 40 with a rest mean of 4.3e9 where
  scipy gives -1.2 and p 0.32). No measurement of care is that far from its median: such a value is an error or a
  code, which only the analyst can fix (or recode as missing)."""
  observed = values[~np.isnan(values)]
  far = np.abs(observed - np.median(observed)) > MAX_DEVIATION
  if far.any():
    rows = redact_counts(f"{int(far.sum())} rows", SMALL_CELL)
    example = observed[far][np.argmax(np.abs(observed[far]))]
    raise ColumnError(
      name,
      f"measure column {shown_value(name)}: {rows} hold values such as {example:.3g}, more than {MAX_DEVIATION:.0e} "
      "from its median on its test scale, whose squares overflow the cube's float32 sums: fix them or recode them as "
      "missing",
    )


MISSING_WHERE = 0.95  # a category whose rows lack a measure at least this often, where the rest mostly hold it
MISSING_ELSEWHERE = 0.5  # ... the most the other rows may lack it


def _missing_where(missing: np.ndarray, codes: np.ndarray, filter_names, categories, name: str) -> list[str]:
  """Notes naming the categories where a measure's missing values concentrate: a category of a filter column
  with at least `SMALL_CELL` rows, at least `MISSING_WHERE` of them missing the measure, where at most
  `MISSING_ELSEWHERE` of the other rows miss it (a site that never records it, beside rows missing it here and
  there: a large-table audit found the note gone at 20% missing elsewhere, when it asked that the category hold most
  of the missing rows). No counts (the share and the table's rows would give them)."""
  total = int(missing.sum())
  if total == 0 or total >= MISSING_WHERE * len(missing):
    return []
  notes = []
  for f, column in enumerate(filter_names):
    rows = np.bincount(codes[:, f], minlength=len(categories[f]))
    lacking = np.bincount(codes[:, f], weights=missing, minlength=len(categories[f]))
    elsewhere = (total - lacking) <= MISSING_ELSEWHERE * (len(missing) - rows)
    for c in np.flatnonzero((rows >= SMALL_CELL) & (lacking >= MISSING_WHERE * rows) & elsewhere):
      notes.append(
        f"measure {shown_value(name)}: missing in all or nearly all rows of "
        f"{shown_value(column, str)}={shown_value(categories[f][c])}, where the other "
        "rows mostly have it: its findings say nothing there"
      )
  return notes


def encode_table(df: pd.DataFrame, schema: Schema, *, max_categories: int = 12, n_bins: int = 4):
  """Codes a table for the cube.

  Returns:
    (codes [rows, F] int32, values [rows, M] float64 on the test scale with NaN
    for missing, CubeMeta without shift). Exposed so that reports and
    confirmation can code other rows (e.g. a holdout half) identically.
  """
  validate_table(df, schema)
  if max_categories < 2:
    raise ValueError(f"max_categories must be >= 2, got {max_categories}")
  if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:  # an ingest audit: 0 and -3
    raise ValueError(f"n_bins must be a whole number >= 2 (quantile bins of a numeric column), got {n_bins!r}")
  summary: list[str] = list(df.attrs.get(READ_NOTES, ()))  # how the file was read (`read_csv`)
  for column, example in dict(df.attrs.get(LEADING_ZEROS, {})).items():  # an audit: '045' minutes "read as text"
    if column in schema.measures or column in schema.bins:
      summary = [n for n in summary if n != _leading_zeros_note(column, example)]
      role = "measure" if column in schema.measures else "column given bin edges"
      summary.append(
        f"{role} {shown_value(column)}: numbers written with leading zeros (such as {shown_value(example)}) read as "
        "numbers"
      )
  read = set(schema.filter_columns + tuple(schema.measures) + tuple(schema.adjusters))
  for columns, note, warning in df.attrs.get(IF_READ, ()):  # `read_csv`'s notes that matter where a run reads them
    if read & set(columns):
      summary = [warning if n == note else n for n in summary]
  filter_names = schema.filter_columns
  codes = np.zeros((len(df), len(filter_names)), np.int32)
  categories = []
  for f, name in enumerate(filter_names):
    c, labels = _code_column(
      df[name],
      name,
      edges=schema.bins.get(name),
      n_bins=n_bins,
      max_categories=max_categories,
      summary=summary,
      role="dimension" if f < len(schema.dimensions) else "protected column",
      decimal_comma=df.attrs.get(SEPARATOR) == ";",
    )
    if f >= len(schema.dimensions) and REST_LABEL in labels:
      raise ColumnError(
        name,
        f"protected column {shown_value(name)} has a group named {REST_LABEL!r}, which reads as the rest of a "
        "cohort in every finding's reference and report; rename that value",
      )
    codes[:, f] = c
    categories.append(labels)
  values = np.zeros((len(df), len(schema.measures)), np.float64)
  is_binary, is_log, is_count, few_values, is_signed = [], [], [], [], []
  for m, name in enumerate(schema.measures):
    v, b, lg, c, few, signed = _measure_values(df, name, schema, summary)
    is_signed.append(signed)
    values[:, m] = v
    is_binary.append(b)
    is_log.append(lg)
    is_count.append(c)
    few_values.append(few)
    summary.extend(_missing_where(np.isnan(v), codes, filter_names, categories, name))
  meta = CubeMeta(
    filter_names=tuple(filter_names),
    categories=tuple(categories),
    n_dimensions=len(schema.dimensions),
    measure_names=tuple(schema.measures),
    is_binary=tuple(is_binary),
    is_log=tuple(is_log),
    is_count=tuple(is_count),
    few_values=tuple(few_values),
    is_signed=tuple(is_signed),
    shift=(),
    n_rows=len(df),
    summary=tuple(summary),
  )
  return codes, values, meta


EXTREME_PULL = 10.0  # `measure_shift`: a mean this many bulk standard deviations from the median is not a centre


def measure_shift(values: np.ndarray) -> np.ndarray:
  """`[M]` float64: the centre `c` each measure's sums are taken about (`cells_from_codes`; 0 for a measure with no
  values). Its mean, or its median where the mean lies more than `EXTREME_PULL` standard deviations of the bulk of
  its values (those between the 1st and 99th percentiles) from the median, as a few extreme values make it.

  float32 sums about a centre far from most rows lose the spread of every cohort of those rows (docs/design.md,
  Base cuboid): in an audit one 99999999 among values near -1 moved the mean to about 25,000, and a real gap in a
  cohort that did not hold that row was no longer found (one 999999 moved its z from -6.43 to -6.13). A measure
  without such values keeps its mean, to the bit (the mean is taken as before; no benchmark world's measure is
  moved: their means lie within a bulk standard deviation of their medians)."""
  empty = np.isnan(values).all(axis=0, keepdims=True)
  shift = np.nan_to_num(np.nanmean(np.where(empty, 0.0, values), axis=0))
  for m in range(values.shape[1]):
    v = values[:, m][~np.isnan(values[:, m])]
    if len(v) == 0:
      continue
    median = float(np.median(v))
    low, high = np.percentile(v, [1.0, 99.0])
    bulk = float(np.std(v[(v >= low) & (v <= high)]))
    if bulk > 0 and abs(shift[m] - median) > EXTREME_PULL * bulk:
      shift[m] = median
  return shift


def cells_from_codes(codes: np.ndarray, values: np.ndarray, shift: np.ndarray):
  """Groups coded rows into cells with shifted sufficient statistics (float64).

  Returns:
    (cell_codes [N, F] int32, rows [N], stats [N, M, 3]).
  """
  present = ~np.isnan(values)
  centered = np.where(present, values - shift[None, :], 0.0)
  data = np.concatenate([np.ones((len(codes), 1)), present.astype(float), centered, centered**2], axis=1)
  frame = pd.DataFrame(data)
  keys = [pd.Series(codes[:, f]) for f in range(codes.shape[1])]
  grouped = frame.groupby(keys, sort=True).sum()
  cell_codes = np.asarray(grouped.index.to_frame(index=False).to_numpy(), np.int32)
  if cell_codes.ndim == 1:
    cell_codes = cell_codes[:, None]
  g = grouped.to_numpy()
  m = values.shape[1]
  rows = g[:, 0]
  stats = np.stack([g[:, 1 : 1 + m], g[:, 1 + m : 1 + 2 * m], g[:, 1 + 2 * m : 1 + 3 * m]], axis=-1)
  return cell_codes, rows, stats


def build_cube(df: pd.DataFrame, schema: Schema, *, max_categories: int = 12, n_bins: int = 4) -> Cube:
  """Builds the base cuboid of a case table.

  Args:
    df: one row per case.
    schema: the roles of the columns.
    max_categories: a filter column with more distinct values keeps the
      `max_categories - 1` most frequent and folds the rest into `OTHER`
      (`MISSING` comes on top).
    n_bins: quantile bins for numeric columns with more than `max_categories`
      values and no edges in `schema.bins`.

  Raises:
    ValueError naming the column for bad input (see `Schema`).
  """
  codes, values, meta = encode_table(df, schema, max_categories=max_categories, n_bins=n_bins)
  shift = measure_shift(values)
  cell_codes, rows, stats = cells_from_codes(codes, values, shift)
  meta = dataclasses.replace(meta, shift=tuple(float(s) for s in shift))
  return Cube(
    codes=jnp.asarray(cell_codes, jnp.int32),
    rows=jnp.asarray(rows, jnp.float32),
    stats=jnp.asarray(stats, jnp.float32),
    meta=meta,
  )
