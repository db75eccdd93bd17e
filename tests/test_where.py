"""--where: parsing, refusals, and that the statistics pushdown never skips a matching row."""

import io
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import Refused
from pipeline.where import parse_where, row_group_may_match, row_matches


def test_conditions_parse_and_bad_ones_are_refused():
    assert [(c.column, c.op, c.value) for c in parse_where("bpp < 0.3 and status == 'ok'")] == [
        ("bpp", "<", 0.3), ("status", "==", "ok")]
    for bad in ("bpp <", "bitstream < 3", "key == 000002", "psnr > '30'", "bpp < 1; import os"):
        with pytest.raises(Refused, match="--where"):
            parse_where(bad)


VALUES = st.one_of(st.none(), st.just(math.nan), st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 1)))


@settings(max_examples=150, deadline=None)
@given(groups=st.lists(st.lists(VALUES, min_size=1, max_size=5), min_size=1, max_size=4),
       op=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
       value=st.floats(-5, 5, allow_nan=False).map(lambda v: round(v, 1)))
def test_pushdown_never_skips_a_row_that_matches(groups, op, value):
    """Each list is one row group of a float column; a group the statistics rule out must hold
    no row the row test accepts (nulls and NaN included, which statistics leave out)."""
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, pa.schema([("psnr", pa.float32())])) as writer:
        for group in groups:
            writer.write_table(pa.table({"psnr": pa.array(group, pa.float32())}))
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    conditions = parse_where(f"psnr {op} {value}")
    for i, group in enumerate(groups):
        rows = [{"psnr": None if v is None else float(pa.scalar(v, pa.float32()).as_py())}
                for v in group]
        if not row_group_may_match(conditions, meta.row_group(i)):
            assert not any(row_matches(conditions, r) for r in rows), (group, op, value)


def test_nan_and_null_match_nothing():
    (cond,) = parse_where("psnr != 30")
    assert not cond.test(math.nan) and not cond.test(None) and cond.test(31.0)


def test_and_inside_quotes_is_part_of_the_value():
    conditions = parse_where("key == 'cat and dog' AND reason != \"a and b\" and bpp < 1")
    assert [(c.column, c.value) for c in conditions] == [
        ("key", "cat and dog"), ("reason", "a and b"), ("bpp", 1.0)]
    with pytest.raises(Refused, match="cannot parse"):
        parse_where("key == 'open and bpp < 1")


def test_a_status_that_no_row_can_have_is_refused():
    """status == 'okay' matched no row: a restore of nothing, exit 0."""
    with pytest.raises(Refused, match="status is 'ok' or 'passthrough', not 'okay'"):
        parse_where("status == 'okay'")
    assert parse_where("status != 'passthrough'")[0].value == "passthrough"
