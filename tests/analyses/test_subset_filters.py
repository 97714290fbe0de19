"""Subset filters (``subset_mask``) against NumPy: equality, any-case text, numeric ranges, combinations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from deepscope.analyses.aggregates import subset_mask

TEXTS = ["How are you", "how old", "Why not", "SHOW me", None, "no"]
BRIGHT = [0.05123, 0.2, float("nan"), 0.9, 0.5, None]


def table() -> pa.Table:
    return pa.table({"text": pa.array(TEXTS), "brightness": pa.array(BRIGHT, pa.float64()), "n": [1, 2, 3, 4, 5, 6]})


def test_text_filters_ignore_case():
    want = np.array([t is not None and "how" in t.lower() for t in TEXTS])
    np.testing.assert_array_equal(subset_mask(table(), {"text_contains": "HOW"}), want)
    np.testing.assert_array_equal(subset_mask(table(), {"contains": {"text": "how"}}), want)


def test_numeric_ranges_include_their_ends_and_skip_missing_values():
    b = np.array([np.nan if v is None else v for v in BRIGHT])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(subset_mask(table(), {"range": {"brightness": [0.05, 0.5]}}),
                                      (b >= 0.05) & (b <= 0.5))  # fmt: skip
        np.testing.assert_array_equal(subset_mask(table(), {"range": {"brightness": [None, 0.2]}}), b <= 0.2)
    np.testing.assert_array_equal(subset_mask(table(), {"range": {"n": [3, None]}, "text_contains": "o"}),
                                  [False, False, True, True, False, True])  # fmt: skip


def test_bad_ranges_say_why():
    with pytest.raises(ValueError, match="numeric, date or time column"):
        subset_mask(table(), {"range": {"text": [0, 1]}})
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        subset_mask(table(), {"range": {"n": 3}})


def test_an_equality_of_another_type_names_the_column_and_what_it_holds():
    with pytest.raises(ValueError, match=r"column 'text' holds text; it cannot equal 5"):
        subset_mask(table(), {"text": 5})
    with pytest.raises(ValueError, match=r"column 'n' holds int64; it cannot equal 'three'"):
        subset_mask(table(), {"n": "three"})
    flags = pa.table({"odd": [True, False, True]})
    with pytest.raises(ValueError, match="holds true or false"):
        subset_mask(flags, {"odd": "yes"})
    np.testing.assert_array_equal(subset_mask(table(), {"n": [2.0, 4]}), [False, True, False, True, False, False])


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"index": [10**20]}, r"'index' 100000000000000000000 is no row of the table: it has 6 rows"),
        ({"index": [-1]}, r"'index' -1 is no row"),  # once the last row
        ({"index": [1.5]}, r"'index' takes row numbers \(whole numbers from 0\), not 1.5"),  # once row 1
        ({"index": [True]}, r"'index' takes row numbers"),
        ({"n": 10**20}, r"column 'n' holds int64; it cannot equal 100000000000000000000"),
        ({"n": 1.5}, r"column 'n' holds int64; it cannot equal 1.5"),  # once n == 1
        ({"brightness": 10**400}, r"column 'brightness' holds double"),
        ({"range": {"n": [0, 10**400]}}, r"the range of 'n' takes numbers \(or null for an open end\)"),
        ({"range": {"n": ["low", None]}}, r"the range of 'n' takes numbers"),
        ({"range": {"n": [True, None]}}, r"the range of 'n' takes numbers"),
        ({"contains": {"n": "1"}}, r"'contains' reads a text, date or time column; 'n' holds int64"),
        ({"contains": "how"}, r"'contains' is \{column: …\}, not 'how'"),
        ({"range": [0, 1]}, r"'range' is \{column: …\}"),
    ],
)
def test_odd_filters_are_value_errors_that_name_the_filter(where, message):
    """What the server answers with a 400 (an OverflowError or an Arrow error was a 500; -1 and 1.5 chose rows)."""
    with pytest.raises(ValueError, match=message):
        subset_mask(table(), where)


def test_index_takes_row_numbers():
    np.testing.assert_array_equal(subset_mask(table(), {"index": [5, 0]}), [True, False, False, False, False, True])
    np.testing.assert_array_equal(subset_mask(table(), {"index": 3}), np.arange(6) == 3)
    np.testing.assert_array_equal(subset_mask(table(), {"index": np.array([2])}), np.arange(6) == 2)
    assert not subset_mask(table(), {"index": []}).any()


def test_categorical_metadata_filters_as_text(tmp_path):
    """A pandas Categorical column (Arrow dictionary) is stored and filtered like the strings it holds."""
    import pandas as pd
    import torch
    from tests.analyses.models import TinyCNN, image_data

    import deepscope

    rng = np.random.default_rng(0)
    levels = np.array(["bsc", "msc", "phd"])[rng.integers(0, 3, 120)]
    meta = pd.DataFrame({"education": pd.Categorical(levels), "age": rng.integers(20, 60, 120)})
    torch.manual_seed(0)
    r = deepscope.analyze(TinyCNN(), image_data(120), layers=["fc1"], metadata=meta, run=tmp_path, progress=False)
    table = r.instances()
    assert pa.types.is_string(table.schema.field("education").type) or pa.types.is_large_string(
        table.schema.field("education").type
    )
    np.testing.assert_array_equal(subset_mask(table, {"education": "phd"}), levels == "phd")
    np.testing.assert_array_equal(subset_mask(table, {"education": ["bsc", "msc"]}), levels != "phd")
    np.testing.assert_array_equal(subset_mask(table, {"contains": {"education": "SC"}}), levels != "phd")
    x = r.activations("fc1")[:]
    agg = r.aggregate("fc1", where={"education": "phd"})
    np.testing.assert_allclose(agg.mean[0], x[levels == "phd"].mean(0), rtol=1e-5, atol=1e-6)


def test_classes_filter_by_name_or_index_and_an_unknown_name_says_which_there_are(tmp_path):
    import torch
    from tests.analyses.models import TinyCNN, image_data

    import deepscope

    torch.manual_seed(0)
    r = deepscope.analyze(TinyCNN(), image_data(80), layers=["fc1"], class_names=["cat", "dog", "eel", "fox"],
                          run=tmp_path, progress=False)  # fmt: skip
    np.testing.assert_array_equal(r.mask({"label": "dog"}), r.mask({"label": 1}))
    np.testing.assert_array_equal(r.mask({"predicted": ["cat", 3]}), r.mask({"predicted": [0, 3]}))
    assert r.mask({"label": "dog"}).sum() > 0
    with pytest.raises(ValueError, match="no class named 'emu' \\(class names: 'cat', 'dog', 'eel', 'fox'\\)"):
        r.mask({"label": "emu"})
    np.testing.assert_array_equal(
        r.aggregate("fc1", where={"label": "dog"}).mean, r.aggregate("fc1", where={"label": 1}).mean
    )


def test_date_and_time_columns_filter_as_times_and_contain_their_iso_text():
    """A pandas-style timestamp column, a zoned one and a date column: ranges and equality compare times (ISO 8601
    ends, an offset converted to UTC), ``contains`` reads the ISO text; missing values never match. Oracle: Python's
    datetime comparisons."""
    import datetime as dt

    utc = dt.timezone.utc
    when = [dt.datetime(2024, 3, d, h, 30) for d, h in ((1, 9), (5, 14), (5, 23), (20, 0))] + [None, None]
    when[3] = when[3].replace(microsecond=250)
    t = pa.table({
        "taken": pa.array(when, pa.timestamp("us")),
        "zoned": pa.array([None if w is None else w.replace(tzinfo=utc) for w in when], pa.timestamp("ns", tz="UTC")),
        "day": pa.array([None if w is None else w.date() for w in when], pa.date32()),
    })  # fmt: skip
    low, high = dt.datetime(2024, 3, 5), dt.datetime(2024, 3, 5, 23, 59, 59)
    want = np.array([w is not None and low <= w <= high for w in when])
    np.testing.assert_array_equal(subset_mask(t, {"range": {"taken": ["2024-03-05", "2024-03-05T23:59:59"]}}), want)
    np.testing.assert_array_equal(subset_mask(t, {"range": {"zoned": ["2024-03-05T01:00+01:00", high]}}), want)
    np.testing.assert_array_equal(subset_mask(t, {"range": {"day": ["2024-03-05", "2024-03-05"]}}), want)
    np.testing.assert_array_equal(subset_mask(t, {"range": {"taken": [None, "2024-03-01T09:30"]}}),
                                  [True, False, False, False, False, False])  # fmt: skip
    np.testing.assert_array_equal(subset_mask(t, {"taken": "2024-03-05T14:30:00"}), [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(subset_mask(t, {"day": ["2024-03-01", "2024-03-20"]}), [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(subset_mask(t, {"contains": {"taken": "2024-03-05T"}}), want)
    np.testing.assert_array_equal(subset_mask(t, {"contains": {"taken": ".000250"}}), [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(subset_mask(t, {"contains": {"zoned": "T09:30:00+00:00"}}), [1, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="'taken' holds dates or times: give ISO 8601 text"):
        subset_mask(t, {"range": {"taken": ["last week", None]}})


def test_an_integer_column_groups_by_value_most_frequent_first_then_other_values_then_missing():
    import pyarrow as pa

    from deepscope.analyses.categories import categories

    col = pa.chunked_array([[3, 1, 1, None, 7], [3, 3, 9, None, 1]])  # 3 ×3, 1 ×3 (a tie: by text), 7, 9, 2 missing
    cats = categories(col, most=2)
    assert cats.names == ["1", "3", "2 other values", "missing"] and cats.named == 2
    assert cats.codes.tolist() == [1, 0, 0, 3, 2, 1, 1, 2, 3, 0]
    assert categories(pa.chunked_array([[True, False, True]])).names == ["true", "false"]


def test_times_all_at_midnight_are_stored_as_dates_and_others_as_times():
    import datetime as dt

    import pyarrow as pa

    from deepscope.analyses.metadata import metadata_table

    days = np.array(["2024-01-24", "2024-02-01", "NaT"], dtype="datetime64[us]")  # a pandas column of dates
    table = metadata_table({"signup": days, "seen": days + np.timedelta64(90, "m"), "none": days[2:].repeat(3)})
    assert table.schema.field("signup").type == pa.date32()
    assert table.column("signup").to_pylist()[:2] == [dt.date(2024, 1, 24), dt.date(2024, 2, 1)]
    assert pa.types.is_timestamp(table.schema.field("seen").type)  # 01:30: times
    assert pa.types.is_timestamp(table.schema.field("none").type)  # no value to tell
