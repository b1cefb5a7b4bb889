"""Counts that follow from shown counts by chains of subtraction and addition (the small-cell rule's last check).

A shown count is the number of rows in a set of the table's rows described by one condition per column: a value
(`("=", v)`), every value but some (`("!", (v, ...))`), or any value (the column left out), and by a kind: the
rows themselves, those with a measure (`("tested", m)`), without it, its events. Two counts of one kind whose
sets differ in one column give a third where that is again such a set: a set less a subset (`site = b` less
`site = b & race = W` is `site = b & race != W`) or two disjoint sets together (`race = W` and `race != W` are
every race). Kinds relate on one set (`relations`: rows = with the measure + without it). `closure` repeats this
until nothing new follows and lists each derived count from 1 to `limit - 1` with the shown counts it came from.

Every derivation it lists is true of the data (each step subtracts a subset or adds disjoint sets); what it misses
is any derivation through a set no single condition per column describes (`race in (A, B)`), and solving several
tests' statistics together. `disclosure.derived_remainders` builds the shown counts of a findings table.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

ANY = None  # a column without a condition
MAX_KNOWN = 200_000  # counts `closure` derives at most (a bound on its time; `Closure.complete` says if it stopped)


def within(a, b) -> bool:
  """Whether condition `a`'s values all meet condition `b` (`ANY`, `("=", v)`, `("!", values)`)."""
  if b is ANY:
    return True
  if a is ANY:
    return False
  if b[0] == "=":
    return a == b
  if a[0] == "=":
    return a[1] not in b[1]
  return set(b[1]) <= set(a[1])


def _less(b, a):
  """Condition `b` less `a` (`a` within `b`, not equal) as one condition, or False where none describes it."""
  if b is ANY:
    if a[0] == "=":
      return ("!", (a[1],))
    return ("=", a[1][0]) if len(a[1]) == 1 else False
  if b[0] == "=":
    return False
  if a[0] == "=":
    return ("!", tuple(sorted(set(b[1]) | {a[1]})))
  left = set(a[1]) - set(b[1])
  return ("=", left.pop()) if len(left) == 1 else False


def _together(a, b):
  """Disjoint conditions `a` and `b` as one (`ANY` for every value), or False where none describes them."""
  if a is ANY or b is ANY or a[0] == b[0]:
    return False
  value, others = (a[1], b[1]) if a[0] == "=" else (b[1], a[1])
  if value not in others:
    return False  # not disjoint
  left = tuple(v for v in others if v != value)
  return ("!", left) if left else ANY


class _Domain:
  """A column's values (`values`, in order), so that a condition is the set of values it admits: `race != W` with
  races W and B is `race = B`, and two values together are every value but the others (a review: with sex M/F
  known, `sex != M` and `sex = F` were two sets, and a chain through them was missed)."""

  def __init__(self, values: Iterable[str]):
    self.values = tuple(dict.fromkeys(values))

  def admits(self, condition) -> frozenset:
    if condition is ANY:
      return frozenset(self.values)
    if condition[0] == "=":
      return frozenset([condition[1]])
    return frozenset(v for v in self.values if v not in condition[1])

  def condition(self, admitted: frozenset):
    """The condition admitting exactly `admitted` (`ANY` for every value; False for none)."""
    if not admitted:
      return False
    if len(admitted) == len(self.values):
      return ANY
    if len(admitted) == 1:
      return ("=", next(iter(admitted)))
    return ("!", tuple(v for v in self.values if v not in admitted))


def rows_set(conditions: Mapping[str, object]) -> tuple:
  """`{column: condition}` as the sorted tuple that keys a set (columns with `ANY` left out)."""
  return tuple(sorted((c, k) for c, k in conditions.items() if k is not ANY))


def set_within(a: tuple, b: tuple) -> bool:
  """Whether set `a` (`rows_set`) lies within set `b`."""
  conditions = dict(a)
  return all(within(conditions.get(column, ANY), condition) for column, condition in b)


class Closure:
  """`closure`'s result: `known` `{(kind, set): (count, sources)}`, `small` the derived keys whose count is a small
  cell, `complete` False where it stopped at `MAX_KNOWN`."""

  def __init__(self, known: dict, small: list, complete: bool):
    self.known, self.small, self.complete = known, small, complete


def closure(
  shown: Mapping[tuple, tuple[float, frozenset]],
  limit: int,
  relations: Iterable[tuple] = (),
  *,
  domains: Mapping[str, Sequence[str]] | None = None,
  cap: int = MAX_KNOWN,
) -> Closure:
  """Every count that follows from `shown` (`{(kind, set): (count, sources)}`; sources: a frozenset of ids).

  Steps: two counts of one kind whose sets differ in one column's condition, one within the other, give the
  larger less the smaller; disjoint there, their sum (each where one condition describes the result); on one
  set, `relations` `(total, part, other)` of kinds give the third of total = part + other from any two. A
  derived count's sources are the union of its two inputs'. `domains`: `{column: its values}` where known, so that
  a condition is the set of values it admits (any set of values is then one condition). The search runs until
  nothing new follows (or `cap` counts are known).
  """
  domain = {column: _Domain(values) for column, values in (domains or {}).items()}

  def canonical(column, condition):
    return domain[column].condition(domain[column].admits(condition)) if column in domain else condition

  def combine(column, mine, theirs):
    """(the condition of mine less theirs, or of theirs less mine, or of both; the sign of my count in it), or None."""
    if column in domain:
      a, b = domain[column].admits(mine), domain[column].admits(theirs)
      if a < b:
        return domain[column].condition(b - a), -1
      if b < a:
        return domain[column].condition(a - b), 1
      if not a & b:
        return domain[column].condition(a | b), 0
      return None
    if mine != theirs and within(mine, theirs):
      return _less(theirs, mine), -1
    if mine != theirs and within(theirs, mine):
      return _less(mine, theirs), 1
    return _together(mine, theirs), 0

  shown = {
    (kind, tuple(sorted((c, canonical(c, k)) for c, k in rows if canonical(c, k) is not ANY))): item
    for (kind, rows), item in shown.items()
  }
  known: dict[tuple, tuple[float, frozenset]] = {}
  by_rest: dict[tuple, list[tuple[str, tuple]]] = {}  # (kind, set less one column) -> [(that column, key)]
  of_kind: dict[tuple, list[tuple]] = {}
  for relation in relations:
    for kind in relation:
      of_kind.setdefault(kind, []).append(relation)
  work: collections.deque = collections.deque()  # breadth first: a count's first derivation is among its shortest
  small: list[tuple] = []

  def add(kind, rows, count, sources, derived=True):
    key = (kind, rows)
    if key in known or len(known) >= cap:
      return
    known[key] = (count, sources)
    for i, (column, _) in enumerate(rows):
      by_rest.setdefault((kind, rows[:i] + rows[i + 1 :]), []).append((column, key))
    work.append(key)
    if derived and 1 <= round(count) < limit:
      small.append(key)

  def put(rest, column, condition):
    return rest if condition is ANY else tuple(sorted(rest + ((column, condition),)))

  for (kind, rows), (count, sources) in shown.items():
    add(kind, rows, count, sources, derived=False)
  while work:
    key = work.popleft()
    kind, rows = key
    count, sources = known[key]
    partners = []  # (column, my condition, the other columns' conditions, partner)
    for i, (column, condition) in enumerate(rows):
      rest = rows[:i] + rows[i + 1 :]
      partners += [(column, condition, rest, k) for c, k in by_rest.get((kind, rest), ()) if c == column and k != key]
      if (kind, rest) in known:
        partners.append((column, condition, rest, (kind, rest)))
    partners += [(column, ANY, rows, k) for column, k in by_rest.get((kind, rows), ())]
    for column, mine, rest, other in partners:
      their_count, their_sources = known[other]
      step = combine(column, mine, dict(other[1]).get(column, ANY))
      if step is None or step[0] is False:
        continue
      condition, sign = step
      value = {-1: their_count - count, 1: count - their_count, 0: count + their_count}[sign]
      add(kind, put(rest, column, condition), value, sources | their_sources)
    for total, part, other in of_kind.get(kind, ()):
      have = {k: known.get((k, rows)) for k in (total, part, other)}
      for missing, plus, minus in ((other, total, part), (part, total, other), (total, part, other)):
        a, b = have[plus], have[minus]
        if have[missing] is None and a is not None and b is not None:
          value = a[0] + b[0] if missing == total else a[0] - b[0]
          add(missing, rows, value, a[1] | b[1])
  return Closure(known, small, len(known) < cap)
