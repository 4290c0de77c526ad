"""Input pipeline: ParquetDataset / ArrayDataset batching, shuffling and clear errors."""

from __future__ import annotations

import numpy as np
import optax
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtx import trainer as jt


def _rows(ds, epoch):
    """All (x0, label) pairs of an epoch, in order."""
    out = []
    for feats, labels in ds.iter_epoch(epoch):
        assert feats["x0"].dtype == np.float32 and feats["cat"].dtype == np.int32
        out += list(zip(feats["x0"].tolist(), labels.tolist(), strict=True))
    return out


@pytest.mark.parametrize("in_memory", [True, False])
def test_parquet_epochs_cover_all_rows_in_a_seeded_order(binary_data, write_parquet, in_memory):
    feats, labels = binary_data(1000)
    files = write_parquet(feats, labels, shards=3, row_group_size=100)
    names = ["x0", "x1", "x2", "x3", "x4", "cat"]
    kw = dict(batch_size=64, shuffle_seed=7, in_memory=in_memory, read_batch_size=50)
    ds = jt.ParquetDataset(files, names, "label", shuffle_buffer_size=300, **kw)
    assert ds.num_rows == 1000 and len(ds) == 16 and ds.in_memory is in_memory
    e0, e1 = _rows(ds, 0), _rows(ds, 1)
    expected = sorted(zip(feats["x0"].tolist(), labels.tolist(), strict=True))
    assert sorted(e0) == expected and sorted(e1) == expected
    assert e0 != e1  # a new order every epoch
    again = jt.ParquetDataset(files, names, "label", shuffle_buffer_size=300, **kw)
    assert _rows(again, 0) == e0  # deterministic per (seed, epoch)
    sizes = [len(lab) for _, lab in ds.iter_epoch(0)]
    assert sizes == [64] * 15 + [1000 - 15 * 64]


def test_parquet_unshuffled_keeps_file_order_and_drops_remainder(binary_data, write_parquet):
    feats, labels = binary_data(250)
    files = write_parquet(feats, labels, shards=2)
    ds = jt.ParquetDataset(files, ["x0", "cat"], "label", batch_size=100, drop_remainder=True)
    batches = list(ds)
    assert len(batches) == len(ds) == 2
    np.testing.assert_array_equal(batches[0][0]["x0"], feats["x0"][:100])
    np.testing.assert_array_equal(batches[1][1], labels[100:200])


def test_parquet_directory_and_dtype_overrides(binary_data, write_parquet, tmp_path):
    feats, labels = binary_data(40)
    write_parquet(feats, labels.astype(np.int64))
    ds = jt.ParquetDataset(tmp_path, {"x0": None, "cat": "float32"}, "label", batch_size=40)
    (f, y) = next(iter(ds))
    assert f["cat"].dtype == np.float32 and y.dtype == np.int32


def test_missing_feature_names_feature_and_file(binary_data, write_parquet):
    feats, labels = binary_data(20)
    good = write_parquet(feats, labels, name="good")
    del feats["x3"]
    bad = write_parquet(feats, labels, name="bad")
    with pytest.raises(jt.DataError, match=r"feature 'x3' is missing from .*bad-00000-of-00001"):
        jt.ParquetDataset(good + bad, ["x0", "x3"], "label", batch_size=8)


def test_missing_label_is_reported(binary_data, write_parquet):
    feats, labels = binary_data(20)
    files = write_parquet(feats, labels, label_name="target")
    with pytest.raises(jt.DataError, match=r"label 'label' is missing from"):
        jt.ParquetDataset(files, ["x0"], "label", batch_size=8)


def test_string_feature_is_a_clear_dtype_error(tmp_path):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"city": ["a", "b"], "label": [0.0, 1.0]}), path)
    with pytest.raises(jt.DataError, match=r"feature 'city' in .*s.parquet has type string; map"):
        jt.ParquetDataset(path, ["city"], "label", batch_size=2)


def test_float_column_requested_as_ids_is_rejected(binary_data, write_parquet):
    feats, labels = binary_data(20)
    files = write_parquet(feats, labels)
    with pytest.raises(jt.DataError, match=r"feature 'x0' .* is float but int32 is expected"):
        jt.ParquetDataset(files, {"x0": "int32"}, "label", batch_size=8)


@pytest.mark.parametrize("in_memory", [True, False])
def test_nan_label_names_file_and_row(binary_data, write_parquet, in_memory):
    feats, labels = binary_data(300)
    labels[123] = np.nan
    files = write_parquet(feats, labels, row_group_size=100)
    ds = jt.ParquetDataset(files, ["x0"], "label", batch_size=32, in_memory=in_memory)
    with pytest.raises(jt.DataError, match=r"label 'label' is NaN at row 123 of .*part-00000"):
        list(ds)


def test_nulls_are_reported(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(pa.table({"x": pa.array([1.0, None, 3.0]), "label": [0.0, 1.0, 0.0]}), path)
    ds = jt.ParquetDataset(path, ["x"], "label", batch_size=2)
    with pytest.raises(jt.DataError, match=r"feature 'x' has 1 null value\(s\) in .*n.parquet"):
        list(ds)


def test_empty_dataset_errors(binary_data, write_parquet, tmp_path):
    feats, labels = binary_data(10)
    empty = write_parquet({k: v[:0] for k, v in feats.items()}, labels[:0], name="empty")
    with pytest.raises(jt.DataError, match="the dataset is empty: .* 0 rows"):
        jt.ParquetDataset(empty, ["x0"], "label", batch_size=4)
    small = write_parquet(feats, labels, name="small")
    with pytest.raises(jt.DataError, match="yields no batches: 10 rows < batch_size 16"):
        jt.ParquetDataset(small, ["x0"], "label", batch_size=16, drop_remainder=True)
    with pytest.raises(jt.DataError, match="does not exist"):
        jt.ParquetDataset(tmp_path / "nope.parquet", ["x0"], "label", batch_size=4)
    with pytest.raises(jt.DataError, match="no \\*.parquet files under directory"):
        (tmp_path / "emptydir").mkdir()
        jt.ParquetDataset(tmp_path / "emptydir", ["x0"], "label", batch_size=4)
    with pytest.raises(jt.DataError, match="dataset is empty"):
        jt.ArrayDataset({"x": np.zeros(0, np.float32)}, np.zeros(0, np.float32), batch_size=4)


def test_array_dataset_checks_and_shuffles():
    x = np.arange(10, dtype=np.float64)
    with pytest.raises(jt.DataError, match="feature 'x' has 10 rows but labels have 9"):
        jt.ArrayDataset({"x": x}, np.zeros(9), batch_size=4)
    y = np.zeros(10)
    y[4] = np.nan
    with pytest.raises(jt.DataError, match="NaN at row 4"):
        jt.ArrayDataset({"x": x}, y, batch_size=4)
    ds = jt.ArrayDataset({"x": x, "v": np.ones((10, 3))}, x, batch_size=4, shuffle_seed=1)
    feats, labels = next(ds.iter_epoch(0))
    assert feats["x"].dtype == np.float32 and feats["v"].shape == (4, 3)
    np.testing.assert_array_equal(feats["x"], labels)
    seen = np.concatenate([lab for _, lab in ds.iter_epoch(3)])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))


def test_prefetch_reraises_producer_errors():
    def gen():
        yield 1
        raise RuntimeError("boom")

    it = jt.prefetch(gen, size=2)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="boom"):
        next(it)


def test_trainer_reports_bad_batches_before_jax(binary_data):
    feats, labels = binary_data(64)
    t = jt.TrainLoop(jt.MLP(hidden=(4,)), optax.sgd(0.1), loss="bce")
    bad = labels.copy()
    bad[3] = np.nan
    with pytest.raises(jt.DataError, match="NaN labels"):
        t.fit([(feats, bad)], epochs=1)
    short = {**feats, "x1": feats["x1"][:10]}
    with pytest.raises(jt.DataError, match=r"feature 'x1' has shape \(10,\) but labels"):
        t.fit([(short, labels)], epochs=1)
    with pytest.raises(jt.DataError, match="yielded no batches"):
        t.fit([], epochs=1)
    with pytest.raises(TypeError, match="wrap it as ArrayDataset"):
        t.fit((feats, labels), epochs=1)
