"""``--where`` filters on archive columns, pushed down to Parquet row-group statistics.

A filter is ``COLUMN OP VALUE`` joined by ``and``: ``bpp < 0.3 and status == 'ok'``. Row groups
whose min/max statistics rule the filter out are not read at all; rows of the others are tested
one by one. Only plain columns can be filtered (no bitstreams, no members), and values are
numbers or quoted strings: nothing is evaluated as code.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.archive_format import SCHEMA, STATUS_OK, STATUS_PASSTHROUGH
from pipeline.errors import Refused

FILTERABLE = {"shard", "key", "index", "status", "reason", "image_name", "format", "mode",
              "height", "width", "codec", "bytes", "bpp", "psnr", "orig_size", "lpips"}
# Which of them hold text (else numbers), from the archive's schema. A value of the other kind
# is refused: compared, it would match no row, and the restore would succeed with nothing
# (e.g. ``key == 000002`` for the key "000002").
TEXT_COLUMNS = {c for c in FILTERABLE if pa.types.is_string(SCHEMA.field(c).type)}
STATUSES = (STATUS_OK, STATUS_PASSTHROUGH)
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
       "==": operator.eq, "!=": operator.ne}
_COND = re.compile(r"""^\s*([a-z_]+)\s*(<=|>=|==|!=|<|>)\s*('([^']*)'|"([^"]*)"|[-+0-9.eE]+)\s*$""")


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any

    def test(self, value: Any) -> bool:
        """A missing value (null) matches nothing, and neither does NaN: Parquet statistics
        leave NaN out, so a NaN row matching ``!=`` could sit in a row group the pushdown skips."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return OPS[self.op](value, self.value)

    def may_match(self, lo: Any, hi: Any) -> bool:
        """Whether some value in [lo, hi] can satisfy the condition."""
        v = self.value
        return {
            "<": lo < v, "<=": lo <= v, ">": hi > v, ">=": hi >= v,
            "==": lo <= v <= hi, "!=": not (lo == hi == v),
        }[self.op]


_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def _split_and(text: str) -> list[str]:
    """Split on ``and`` outside quotes: a key may hold the word (``key == 'cat and dog'``)."""
    parts, start, quote, i = [], 0, None, 0
    while i < len(text):
        char = text[i]
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif match := _AND.match(text, i):
            parts.append(text[start:i])
            start = i = match.end()
            continue
        i += 1
    parts.append(text[start:])
    return parts


def parse_where(text: str) -> list[Condition]:
    conditions = []
    for part in _split_and(text.strip()):
        match = _COND.match(part)
        if not match:
            raise Refused(f"--where: cannot parse {part!r}; use COLUMN OP VALUE [and ...], "
                          "e.g. \"bpp < 0.3 and status == 'ok'\"")
        column, op, raw, single, double = match.groups()
        if column not in FILTERABLE:
            raise Refused(f"--where: column {column!r} cannot be filtered; use one of "
                          f"{', '.join(sorted(FILTERABLE))}")
        quoted = single is not None or double is not None
        if quoted != (column in TEXT_COLUMNS):
            kind = "text" if column in TEXT_COLUMNS else "a number"
            hint = f"'{raw}'" if column in TEXT_COLUMNS else (single if single is not None else double)
            raise Refused(f"--where: column {column!r} holds {kind}; write {column} {op} {hint}")
        if quoted:
            value: Any = single if single is not None else double
            if column == "status" and op in ("==", "!=") and value not in STATUSES:
                # it would match every row or none, and the restore "succeed"
                raise Refused(f"--where: status is {' or '.join(map(repr, STATUSES))}, "
                              f"not {value!r}")
        else:
            try:
                value = float(raw)
            except ValueError:
                raise Refused(f"--where: {raw!r} is not a number") from None
        conditions.append(Condition(column, op, value))
    return conditions


def row_group_may_match(conditions: list[Condition], row_group) -> bool:
    """Statistics pushdown: False only when a row group provably has no matching row."""
    names = {row_group.column(i).path_in_schema: i for i in range(row_group.num_columns)}
    for cond in conditions:
        i = names.get(cond.column)
        stats = row_group.column(i).statistics if i is not None else None
        if stats is None or not stats.has_min_max:
            continue
        try:
            if not cond.may_match(stats.min, stats.max):
                return False
        except TypeError:  # a string compared with a number: leave it to the row test
            continue
    return True


def row_matches(conditions: list[Condition], row: dict[str, Any]) -> bool:
    try:
        # .get: archives written before a column was added (lpips) simply have no value.
        return all(cond.test(row.get(cond.column)) for cond in conditions)
    except TypeError:
        return False
