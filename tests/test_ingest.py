"""Tests for jaxtx.data ingestion: real Beam pipelines over real files."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxtx.data import (
    MAX_RECORD_BYTES,
    CsvOptions,
    IngestError,
    IngestResult,
    SplitConfig,
    detect_format,
    infer_schema,
    ingest,
    row_hashes,
    split_indices,
)


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def _numbered_rows(n: int, start: int = 0) -> list[str]:
    cats = ["red", "green", "blue"]
    return [
        f"{i},{i * 0.5},{cats[i % 3]},{'true' if i % 2 else 'false'}"
        for i in range(start, start + n)
    ]


def _read_split(result: IngestResult, split: str) -> pa.Table:
    tables = [pq.read_table(p) for p in result.split_files[split]]
    return pa.concat_tables(tables)


def _all_rows(result: IngestResult) -> list[dict]:
    rows = []
    for split in result.split_counts:
        rows.extend(_read_split(result, split).to_pylist())
    return rows


def _quarantine(result: IngestResult) -> list[dict]:
    records = []
    for path in result.quarantine_files:
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return sorted(records, key=lambda r: r["line"])


def _assert_consistent(result: IngestResult) -> None:
    assert result.num_read == result.num_written + result.num_rejected
    assert result.num_written == sum(result.split_counts.values())
    assert len(_quarantine(result)) == result.num_rejected
    for split, files in result.split_files.items():
        assert files, f"split {split} has no shard"
        for path in files:
            assert pq.read_schema(path).remove_metadata().equals(result.schema)
        assert sum(pq.read_metadata(p).num_rows for p in files) == result.split_counts[split]


# ---------------------------------------------------------------------------- formats


def test_csv_types_counts_and_layout(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "id,score,color,flag", _numbered_rows(300))
    out = tmp_path / "out"

    result = ingest([str(src)], str(out))

    assert result.schema == pa.schema(
        [("id", pa.int64()), ("score", pa.float64()), ("color", pa.string()), ("flag", pa.bool_())]
    )
    assert result.num_read == 300 and result.num_rejected == 0
    assert result.input_files == (str(src),)
    _assert_consistent(result)
    for split in ("train", "eval"):
        for path in result.split_files[split]:
            assert Path(path).parent == out / "data" / split
            assert Path(path).name.startswith("part-") and "-of-" in Path(path).name
    rows = sorted(_all_rows(result), key=lambda r: r["id"])
    assert rows[7] == {"id": 7, "score": 3.5, "color": "green", "flag": True}
    assert [r["id"] for r in rows] == list(range(300))


def test_csv_missing_values_and_quoted_empty_string(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "n,s", ["1,a", ',""', "3,", ' 4 ,"x,y"'])

    result = ingest([str(src)], str(tmp_path / "out"), splits=SplitConfig(("all",), (1,)))

    rows = sorted(_all_rows(result), key=lambda r: (r["n"] is None, r["n"] or 0))
    assert rows == [
        {"n": 1, "s": "a"},
        {"n": 3, "s": None},
        {"n": 4, "s": "x,y"},
        {"n": None, "s": ""},
    ]


def test_parquet_input_keeps_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "x": pa.array(range(500), pa.int32()),
            "name": [f"n{i}" for i in range(500)],
            "w": pa.array([i / 7 if i % 10 else None for i in range(500)], pa.float64()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")

    result = ingest([str(tmp_path / "in.parquet")], str(tmp_path / "out"))

    assert result.schema == table.schema
    _assert_consistent(result)
    rows = sorted(_all_rows(result), key=lambda r: r["x"])
    assert rows == table.to_pylist()


def test_jsonl_input_and_quarantine(tmp_path: Path) -> None:
    lines = [json.dumps({"a": i, "b": f"s{i}", "tags": ["t", str(i)]}) for i in range(40)]
    lines[5] = '{"a": 5, "b": '  # not JSON
    lines[9] = "[1, 2]"  # not an object
    lines[12] = '{"a": "twelve", "b": "s12", "tags": []}'  # wrong type
    lines.insert(20, "")  # blank line: skipped, still counted for line numbers
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")

    schema = pa.schema([("a", pa.int64()), ("b", pa.string()), ("tags", pa.list_(pa.string()))])

    result = ingest([str(src)], str(tmp_path / "out"), schema=schema)

    assert result.schema == schema
    assert (result.num_read, result.num_written, result.num_rejected) == (40, 37, 3)
    _assert_consistent(result)
    bad = _quarantine(result)
    assert [r["line"] for r in bad] == [6, 10, 13]
    assert "not valid JSON" in bad[0]["reason"]
    assert "expected a JSON object" in bad[1]["reason"]
    assert (
        "'a'" in bad[2]["reason"] and "int64" in bad[2]["reason"] and "'twelve'" in bad[2]["reason"]
    )
    assert bad[0]["raw"] == '{"a": 5, "b": '
    assert all(r["source"] == str(src) for r in bad)
    rows = {r["a"]: r for r in _all_rows(result)}
    assert rows[39] == {"a": 39, "b": "s39", "tags": ["t", "39"]}


def test_jsonl_inferred_schema(tmp_path: Path) -> None:
    lines = [
        json.dumps({"a": i, "x": i / 2, "b": f"s{i}", "tags": ["t"], "ok": True})
        for i in range(10_003)
    ]
    lines[10_001] = json.dumps({"a": 1, "late": "new key"})
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines))

    result = ingest([str(src)], str(tmp_path / "out"))

    assert result.schema == pa.schema(
        [
            ("a", pa.int64()),
            ("x", pa.float64()),
            ("b", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("ok", pa.bool_()),
            ("late", pa.string()),
        ]
    )
    assert (result.num_written, result.num_rejected) == (10_003, 0)
    late = [r for r in _all_rows(result) if r["late"] is not None]
    assert late == [{"a": 1, "x": None, "b": None, "tags": None, "ok": None, "late": "new key"}]


def test_jsonl_keys_first_seen_after_the_sample_become_typed_columns(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i}) for i in range(10_050)]
    for i in range(10_010, 10_050):
        lines[i] = json.dumps(
            {
                "id": i,
                "count": i,  # int64
                "ratio": i if i % 2 else i + 0.5,  # ints and floats: float64
                "name": f"n{i}",  # string
                "day": "2024-01-02",  # a date-like JSON string stays a string
                "tags": [i, i + 1],  # list<int64>
                "point": {"x": i, "y": 1.5},  # struct
                "empty": None,  # never a value: string
            }
        )
    lines[10_049] = json.dumps({"id": 10_049, "count": "many"})  # not an int: quarantined
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")

    result = ingest([str(src)], str(tmp_path / "out"))

    _assert_consistent(result)
    assert result.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("count", pa.int64()),
            ("day", pa.string()),
            ("empty", pa.string()),
            ("name", pa.string()),
            ("point", pa.struct([("x", pa.int64()), ("y", pa.float64())])),
            ("ratio", pa.float64()),
            ("tags", pa.list_(pa.int64())),
        ]
    )
    assert (result.num_written, result.num_rejected) == (10_049, 1)
    [bad] = _quarantine(result)
    assert bad["line"] == 10_050 and "'count'" in bad["reason"]
    rows = {r["id"]: r for r in _all_rows(result)}
    assert rows[5]["count"] is None and rows[5]["tags"] is None  # null before the key appears
    assert rows[10_020]["count"] == 10_020 and rows[10_020]["ratio"] == 10_020.5
    assert rows[10_021]["tags"] == [10_021, 10_022] and rows[10_021]["point"] == {
        "x": 10_021,
        "y": 1.5,
    }
    assert rows[10_021]["day"] == "2024-01-02" and rows[10_021]["name"] == "n10021"


def test_jsonl_mixed_types_in_sample_need_a_schema(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n{"a": "two"}\n')
    with pytest.raises(IngestError, match=r"in\.jsonl: field 'a' holds int and str.*schema="):
        ingest([str(src)], str(tmp_path / "out"))


def test_directory_and_glob_inputs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    _write_csv(data / "a.csv", "id,score,color,flag", _numbered_rows(50))
    _write_csv(data / "sub" / "b.csv", "id,score,color,flag", _numbered_rows(50, start=50))
    (data / "_SUCCESS").write_text("")
    (data / ".a.csv.crc").write_text("junk")

    from_dir = ingest([str(data)], str(tmp_path / "out1"))
    from_glob = ingest([str(data / "**" / "*.csv")], str(tmp_path / "out2"))

    expected_files = (str(data / "a.csv"), str(data / "sub" / "b.csv"))
    assert from_dir.input_files == expected_files
    assert from_glob.input_files == expected_files
    assert sorted(r["id"] for r in _all_rows(from_dir)) == list(range(100))
    assert from_glob.split_counts == from_dir.split_counts


def test_compressed_and_tab_separated_inputs(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write("id,name\n1,x\n2,y\n")
    (tmp_path / "b.tsv").write_text("id\tname\n3\tz,w\n")

    result = ingest([str(tmp_path)], str(tmp_path / "out"))

    assert sorted(_all_rows(result), key=lambda r: r["id"]) == [
        {"id": 1, "name": "x"},
        {"id": 2, "name": "y"},
        {"id": 3, "name": "z,w"},
    ]


def test_multi_process_runner_gives_the_same_result(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,v\n" + "".join(f"{i},{i % 7}\n" for i in range(300)) + "oops,1\n")
    schema = pa.schema([("id", pa.int64()), ("v", pa.int64())])
    options = {"direct_num_workers": 2, "direct_running_mode": "multi_processing"}

    local = ingest([str(src)], str(tmp_path / "out1"), schema=schema)
    multi = ingest([str(src)], str(tmp_path / "out2"), schema=schema, beam_options=options)

    assert (multi.num_read, multi.num_rejected) == (301, 1)
    assert multi.split_counts == local.split_counts
    assert sorted(_read_split(multi, "eval").column("id").to_pylist()) == sorted(
        _read_split(local, "eval").column("id").to_pylist()
    )
    assert _quarantine(multi)[0]["line"] == 302


def test_format_detection() -> None:
    assert detect_format("x/a.csv.gz") == "csv"
    assert detect_format("a.PARQUET") == "parquet"
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.txt", "csv") == "csv"
    with pytest.raises(IngestError, match="input_format"):
        detect_format("a.txt")


# ----------------------------------------------------------------------------- splits


def test_split_ratio_reproducibility_and_rerun(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "id,score,color,flag", _numbered_rows(3000))
    out = tmp_path / "out"

    first = ingest([str(src)], str(out), num_shards=3)
    first_ids = {
        s: sorted(_read_split(first, s).column("id").to_pylist()) for s in ("train", "eval")
    }
    second = ingest([str(src)], str(out))  # same directory: previous shards are replaced

    assert 1850 <= first.split_counts["train"] <= 2150
    assert [len(first.split_files[s]) for s in ("train", "eval")] == [3, 3]
    assert second.split_counts == first.split_counts
    for split in ("train", "eval"):
        assert sorted(_read_split(second, split).column("id").to_pylist()) == first_ids[split]
        on_disk = sorted(str(p) for p in (out / "data" / split).iterdir())
        assert on_disk == list(second.split_files[split])
    _assert_consistent(second)


def test_split_independent_of_file_layout_and_seeded(tmp_path: Path) -> None:
    rows = _numbered_rows(600)
    one = _write_csv(tmp_path / "one.csv", "id,score,color,flag", rows)
    (tmp_path / "parts").mkdir()
    _write_csv(tmp_path / "parts" / "p1.csv", "id,score,color,flag", rows[400:])
    _write_csv(tmp_path / "parts" / "p2.csv", "id,score,color,flag", rows[:400])

    whole = ingest([str(one)], str(tmp_path / "out1"))
    parts = ingest([str(tmp_path / "parts")], str(tmp_path / "out2"))
    seeded = ingest([str(one)], str(tmp_path / "out3"), seed="other")

    def eval_ids(result: IngestResult) -> list[int]:
        return sorted(_read_split(result, "eval").column("id").to_pylist())

    assert eval_ids(whole) == eval_ids(parts)
    assert eval_ids(whole) != eval_ids(seeded)


def test_small_files_share_a_part_and_large_ones_have_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jaxtx.data import _inputs

    (tmp_path / "in").mkdir()
    for i in range(6):
        rows = _numbered_rows(100, start=100 * i)
        _write_csv(tmp_path / "in" / f"p{i}.csv", "id,score,color,flag", rows)
    size = (tmp_path / "in" / "p0.csv").stat().st_size

    together = ingest([str(tmp_path / "in")], str(tmp_path / "one"))
    monkeypatch.setattr(_inputs, "GROUP_BYTES", 2 * size)  # two files a group
    apart = ingest([str(tmp_path / "in")], str(tmp_path / "three"))

    for result in (together, apart):
        _assert_consistent(result)
        assert sorted(r["id"] for r in _all_rows(result)) == list(range(600))
    assert [Path(p).name for p in together.split_files["train"]] == ["part-00000-of-00001.parquet"]
    assert [Path(p).name for p in apart.split_files["train"]] == [
        f"part-{i:05d}-of-00003.parquet" for i in range(3)
    ]
    assert apart.split_counts == together.split_counts


def test_mostly_distinct_columns_are_not_dictionary_encoded(tmp_path: Path) -> None:
    from jaxtx.data._outputs import dictionary_columns

    n = 5000
    rows = [f"{i},{i * 0.37},c{i % 4}" for i in range(n)]
    src = _write_csv(tmp_path / "in.csv", "id,x,cat", rows)

    result = ingest([str(src)], str(tmp_path / "out"), splits=SplitConfig(("all",), (1,)))

    [path] = result.split_files["all"]
    group = pq.read_metadata(path).row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(3)}
    assert "RLE_DICTIONARY" not in encodings["id"] and "RLE_DICTIONARY" not in encodings["x"]
    assert "RLE_DICTIONARY" in encodings["cat"]
    small = pa.record_batch({"a": [1.5, 2.5], "b": ["x", "y"]})
    assert dictionary_columns(small) == ["a", "b"]  # too few values to judge: the default
    assert dictionary_columns(pa.record_batch({"l": [[1]] * 2000})) is True
    assert dictionary_columns(None) is True


def test_partition_feature_keeps_each_key_in_one_split(tmp_path: Path) -> None:
    rows = [f"user{i % 60},{i}" for i in range(1200)]
    src = _write_csv(tmp_path / "in.csv", "user,value", rows)
    splits = SplitConfig(("train", "eval", "test"), (3, 1, 1), partition_feature="user")

    result = ingest([str(src)], str(tmp_path / "out"), splits=splits)

    users = {s: set(_read_split(result, s).column("user").to_pylist()) for s in splits.names}
    assert all(users.values()), users
    assert not (users["train"] & users["eval"]) and not (users["train"] & users["test"])
    assert not (users["eval"] & users["test"])
    assert set().union(*users.values()) == {f"user{i}" for i in range(60)}
    assert sum(result.split_counts.values()) == 1200


def test_empty_split_still_has_a_readable_shard(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "k,v", ["a,1", "a,2", "a,3"])
    splits = SplitConfig(("s1", "s2", "s3"), (1, 1, 1), partition_feature="k")

    result = ingest([str(src)], str(tmp_path / "out"), splits=splits)

    assert sorted(result.split_counts.values()) == [0, 0, 3]
    _assert_consistent(result)
    for split in splits.names:
        assert os.path.isdir(tmp_path / "out" / "data" / split)


def test_row_hashes_ignore_batch_boundaries() -> None:
    batch = pa.record_batch(
        {
            "i": pa.array([1, None, 3, 4] * 50, pa.int64()),
            "f": pa.array([0.5, -0.0, None, float("nan")] * 50),
            "s": pa.array(["a", None, "", "b"] * 50),
            "l": pa.array([[1], [], None, [2, 3]] * 50, pa.list_(pa.int64())),
        }
    )
    whole = row_hashes(batch)
    pieces = np.concatenate([row_hashes(batch.slice(o, 37)) for o in range(0, 200, 37)])
    np.testing.assert_array_equal(whole, pieces)
    assert len(set(whole[:4].tolist())) == 4
    config = SplitConfig(("a", "b"), (1, 1), partition_feature="s")
    index = split_indices(batch, config)
    assert set(index[batch.column("s").to_numpy(zero_copy_only=False) == "a"].tolist()) == {
        index[0]
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ("train", "train"), "buckets": (1, 1)}, "unique"),
        ({"names": ("train", "eval"), "buckets": (1,)}, "one bucket count per split"),
        ({"names": ("train", "eval"), "buckets": (2, 0)}, "positive integers"),
        ({"names": ("train", "eval"), "buckets": (2.5, 1)}, "positive integers"),
        ({"names": ("a/b",), "buckets": (1,)}, "Invalid split name"),
        ({"names": (), "buckets": ()}, "at least one split"),
    ],
)
def test_split_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(IngestError, match=message):
        SplitConfig(**kwargs)


# ------------------------------------------------------------------------- quarantine


def test_csv_quarantine_line_numbers_and_reasons(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(
        b"id,name,score\n"  # line 1
        b"1,ann,0.5\n"  # 2
        b"2,bob\n"  # 3: too few fields
        b'3,"multi\nline",1.5\n'  # 4-5: one record on two lines
        b"abc,cid,2.5\n"  # 6: not an int
        b"\n"  # 7: blank, skipped
        b"5,d\xff\xfeve,3.5\n"  # 8: invalid UTF-8
        b"6,eve,4.5,extra\n"  # 9: too many fields
        b"7,fay,\n"  # 10: missing score is fine
    )
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])

    result = ingest([str(src)], str(tmp_path / "out"), schema=schema)

    _assert_consistent(result)
    assert (result.num_read, result.num_written, result.num_rejected) == (7, 3, 4)
    bad = _quarantine(result)
    assert [r["line"] for r in bad] == [3, 6, 8, 9]
    assert all(r["source"] == str(src) for r in bad)
    assert bad[0]["reason"] == "expected 3 fields (as in the header), found 2"
    assert bad[0]["raw"] == "2,bob"
    assert bad[1]["reason"] == "column 'id': expected int64, found 'abc'"
    assert bad[1]["raw"] == "abc,cid,2.5"
    assert (
        "'name'" in bad[2]["reason"] and "UTF-8" in bad[2]["reason"] and "\\xff" in bad[2]["reason"]
    )
    assert bad[3]["reason"] == "expected 3 fields (as in the header), found 4"
    rows = sorted(_all_rows(result), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "name": "ann", "score": 0.5},
        {"id": 3, "name": "multi\nline", "score": 1.5},
        {"id": 7, "name": "fay", "score": None},
    ]


def test_malformed_rows_late_in_a_many_block_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks are parsed on several threads, which cannot number malformed rows:
    # the file is read again on one thread, every row produced once, lines exact.
    from jaxtx.data import _csv

    monkeypatch.setattr(_csv, "_CSV_BLOCK_BYTES", 4096)
    rows = [f"{i},name{i},{i / 4}" for i in range(3000)]
    rows[2400] = "2400,short"  # line 2402
    rows[2900] = "2900,x,1.0,extra"  # line 2902
    src = _write_csv(tmp_path / "in.csv", "id,name,score", rows)

    runs = [ingest([str(src)], str(tmp_path / f"out{i}")) for i in range(2)]

    for result in runs:
        _assert_consistent(result)
        assert (result.num_read, result.num_rejected) == (3000, 2)
        assert [r["line"] for r in _quarantine(result)] == [2402, 2902]
        ids = sorted(r["id"] for r in _all_rows(result))
        assert ids == [i for i in range(3000) if i not in (2400, 2900)]
    for split in ("train", "eval"):
        first, second = (r.split_files[split] for r in runs)
        assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in second]


def test_numbers_parsed_straight_to_their_type_equal_the_text_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # int64/float64 columns are parsed to their type; a value that does not
    # parse (text, padded numbers, a quoted empty value) sends the rest of the
    # file through the text path. Both give the same files, byte for byte.
    from jaxtx.data import _csv

    monkeypatch.setattr(_csv, "_CSV_BLOCK_BYTES", 4096)
    rows = [f"{i},{i / 8},c{i % 5}" for i in range(3000)]
    rows[1500] = "1500, 187.5 ,c0"  # padded: a number all the same
    rows[2000] = 'x2000,250.0,"c0"'  # not an int: quarantined
    rows[2500] = '2500,"",c0'  # a quoted empty value: missing
    src = _write_csv(tmp_path / "in.csv", "id,v,cat", rows)
    schema = pa.schema([("id", pa.int64()), ("v", pa.float64()), ("cat", pa.string())])

    typed = ingest([str(src)], str(tmp_path / "typed"), schema=schema)
    monkeypatch.setattr(_csv, "_typed_columns", lambda *args: ())
    text = ingest([str(src)], str(tmp_path / "text"), schema=schema)

    for result in (typed, text):
        _assert_consistent(result)
        [bad] = _quarantine(result)
        assert (bad["line"], bad["raw"]) == (2002, "x2000,250.0,c0")
    rows_by_id = {r["id"]: r for r in _all_rows(typed)}
    assert rows_by_id[1500]["v"] == 187.5 and rows_by_id[2500]["v"] is None
    for split in ("train", "eval"):
        pairs = zip(typed.split_files[split], text.split_files[split], strict=True)
        assert all(Path(a).read_bytes() == Path(b).read_bytes() for a, b in pairs)


def test_malformed_row_with_invalid_utf8_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"a,b\n1,x\n2,\xe9t\xe9,extra\n3,caf\xc3\xa9\n")

    result = ingest([str(src)], str(tmp_path / "out"))

    bad = _quarantine(result)
    assert [r["line"] for r in bad] == [3]
    assert bad[0]["reason"] == "expected 2 fields (as in the header), found 3"
    assert bad[0]["raw"] == "2,\\xe9t\\xe9,extra"
    assert sorted(r["b"] for r in _all_rows(result)) == ["café", "x"]


def test_given_schema_is_honoured(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "zip,amount,ignored", ["02139,10,x", "00501,2,y"])
    schema = pa.schema([("zip", pa.string()), ("amount", pa.float64()), ("absent", pa.int64())])

    result = ingest([str(src)], str(tmp_path / "out"), schema=schema)

    assert result.schema == schema
    _assert_consistent(result)
    assert sorted(_all_rows(result), key=lambda r: r["zip"]) == [
        {"zip": "00501", "amount": 2.0, "absent": None},
        {"zip": "02139", "amount": 10.0, "absent": None},
    ]


def test_infer_schema_from_sample(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "i,f,b,s,e", ["1,1,TRUE,x,", "2,2.5,false,3,"])
    assert infer_schema([str(src)]) == pa.schema(
        [
            ("i", pa.int64()),
            ("f", pa.float64()),
            ("b", pa.bool_()),
            ("s", pa.string()),
            ("e", pa.string()),
        ]
    )


# ----------------------------------------------------------------------------- errors


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "data.csv"
    with pytest.raises(IngestError, match="nope/data.csv"):
        ingest([str(missing)], str(tmp_path / "out"))


@pytest.mark.parametrize("content", [b"", b"a,b,c\n"], ids=["zero-bytes", "header-only"])
def test_empty_input_names_the_path(tmp_path: Path, content: bytes) -> None:
    src = tmp_path / "empty.csv"
    src.write_bytes(content)
    with pytest.raises(IngestError, match=r"empty\.csv.*empty"):
        ingest([str(src)], str(tmp_path / "out"))
    assert not (tmp_path / "out" / "data").exists()


def test_files_with_different_columns_are_rejected(tmp_path: Path) -> None:
    _write_csv(tmp_path / "a.csv", "x,y", ["1,2"])
    _write_csv(tmp_path / "b.csv", "x,z", ["1,2"])
    with pytest.raises(IngestError, match=r"b\.csv: columns differ.*missing \['y'\].*schema="):
        ingest([str(tmp_path)], str(tmp_path / "out"))


def test_unknown_partition_feature(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "x", ["1"])
    with pytest.raises(IngestError, match="partition_feature 'user'"):
        ingest([str(src)], str(tmp_path / "out"), splits=SplitConfig(partition_feature="user"))


# ------------------------------------------------------------ users' own files (dialects)


def test_headerless_csv_with_names_counts_every_row(tmp_path: Path) -> None:
    src = tmp_path / "adult.data"
    src.write_text("39,State-gov,77516\n50,Self-emp,83311\n38,Private\n53,Private,234721\n")

    result = ingest(
        [str(src)],
        str(tmp_path / "out"),
        input_format="csv",
        csv=CsvOptions(header=False, column_names=("age", "workclass", "fnlwgt")),
    )

    _assert_consistent(result)
    assert result.schema.names == ["age", "workclass", "fnlwgt"]
    assert result.num_read == 4 and result.num_written == 3 and result.num_rejected == 1
    assert sorted(r["age"] for r in _all_rows(result)) == [39, 50, 53]
    [bad] = _quarantine(result)
    assert bad["line"] == 3 and "expected 3 fields (as in column_names), found 2" in bad["reason"]


def test_headerless_csv_without_names_gets_positional_names(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "1,a", ["2,b", "3,c"])
    result = ingest([str(src)], str(tmp_path / "out"), csv=CsvOptions(header=False))
    assert result.schema.names == ["f0", "f1"]
    assert result.num_read == 3 and result.num_written == 3


def test_header_names_can_be_replaced(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "A B,C-D", ["1,2"])
    result = ingest([str(src)], str(tmp_path / "out"), csv=CsvOptions(column_names=("ab", "cd")))
    assert _all_rows(result) == [{"ab": 1, "cd": 2}]


def test_csv_dialect_options(tmp_path: Path) -> None:
    src = tmp_path / "census.txt"
    text = (
        "exported 2026-01-01\n"  # junk line, skipped
        "\n"
        "age;workclass;note;hours\n"
        "# a comment line\n"
        "39; State-gov ;'it''s;ok';40\n"
        "50;?;NA;NULL\n"
        "#another comment\n"
        "38; Private;'line\\'s end'\n"
        "41;Private ;plain;35\n"
    )
    src.write_bytes(text.encode("latin-1"))
    options = CsvOptions(
        delimiter=";",
        quote_char="'",
        escape_char="\\",
        null_values=("?", "NA", "NULL"),
        trim_whitespace=True,
        skip_rows=1,
        comment_prefix="#",
    )

    result = ingest([str(src)], str(tmp_path / "out"), input_format="csv", csv=options)

    _assert_consistent(result)
    assert result.schema == pa.schema(
        [
            ("age", pa.int64()),
            ("workclass", pa.string()),
            ("note", pa.string()),
            ("hours", pa.int64()),
        ]
    )
    rows = sorted(_all_rows(result), key=lambda r: r["age"])
    assert rows == [
        {"age": 39, "workclass": "State-gov", "note": "it's;ok", "hours": 40},
        {"age": 41, "workclass": "Private", "note": "plain", "hours": 35},
        {"age": 50, "workclass": None, "note": None, "hours": None},
    ]
    [bad] = _quarantine(result)
    assert bad["line"] == 8 and "expected 4 fields (as in the header), found 3" in bad["reason"]
    assert result.num_read == 4


def test_declared_encoding_reads_latin1(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes("name,city\nJosé,Zürich\nAnaïs,Orléans\n".encode("latin-1"))

    default = ingest([str(src)], str(tmp_path / "a"))
    assert default.num_rejected == 2  # not UTF-8: quarantined, as documented

    result = ingest([str(src)], str(tmp_path / "b"), csv=CsvOptions(encoding="latin-1"))
    assert result.num_rejected == 0
    assert sorted(r["city"] for r in _all_rows(result)) == ["Orléans", "Zürich"]


def test_invalid_csv_options_are_refused() -> None:
    with pytest.raises(IngestError, match="encoding"):
        CsvOptions(encoding="no-such-codec")
    with pytest.raises(IngestError, match="column_names"):
        CsvOptions(column_names=("a", "a"))
    with pytest.raises(IngestError, match="skip_rows"):
        CsvOptions(skip_rows=-1)


# --------------------------------------------------------------------- fixed splits


def test_fixed_splits_from_file_patterns(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    _write_csv(tmp_path / "train" / "a.csv", "x,y", [f"{i},{i % 2}" for i in range(50)])
    _write_csv(tmp_path / "train" / "b.csv", "x,y", [f"{i},{i % 2}" for i in range(50, 70)])
    _write_csv(tmp_path / "holdout.csv", "x,y", [f"{i},1" for i in range(100, 130)])

    result = ingest(
        {"training": str(tmp_path / "train" / "*.csv"), "test": str(tmp_path / "holdout.csv")},
        str(tmp_path / "out"),
    )

    _assert_consistent(result)
    assert result.split_counts == {"training": 70, "test": 30}
    assert sorted(_read_split(result, "test").column("x").to_pylist()) == list(range(100, 130))
    assert max(_read_split(result, "training").column("x").to_pylist()) == 69


def test_fixed_splits_refuse_a_file_in_two_splits(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "a.csv", "x", ["1"])
    with pytest.raises(IngestError, match="both split 'train' and split 'eval'"):
        ingest({"train": str(src), "eval": str(tmp_path / "*.csv")}, str(tmp_path / "out"))


# ------------------------------------------------------------ types from the whole input


def test_integer_column_with_some_decimals_is_float(tmp_path: Path) -> None:
    rows = [f"{i},{i}.5" if i % 300 == 7 else f"{i},{i}" for i in range(12_000)]
    src = _write_csv(tmp_path / "in.csv", "id,amount", rows)

    result = ingest([str(src)], str(tmp_path / "out"))

    assert result.schema.field("amount").type == pa.float64()
    assert result.num_rejected == 0 and result.num_written == 12_000


def test_decimals_after_the_sample_widen_the_column(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(10_500)] + ["10500,300.5", "10501,7"]
    src = _write_csv(tmp_path / "in.csv", "id,amount", rows)

    result = ingest([str(src)], str(tmp_path / "out"))

    _assert_consistent(result)
    assert result.schema.field("amount").type == pa.float64()
    assert result.num_rejected == 0
    assert (
        300.5
        in _read_split(result, "train").column("amount").to_pylist()
        + _read_split(result, "eval").column("amount").to_pylist()
    )


def test_column_first_filled_after_the_sample_is_typed_by_its_values(tmp_path: Path) -> None:
    rows = [f"{i}," for i in range(10_200)] + [f"{i},{i % 7}" for i in range(10_200, 10_300)]
    src = _write_csv(tmp_path / "in.csv", "id,late", rows)

    result = ingest([str(src)], str(tmp_path / "out"))

    assert result.schema.field("late").type == pa.int64()
    assert result.num_rejected == 0
    assert sum(v is not None for v in (r["late"] for r in _all_rows(result))) == 100


def test_always_empty_column_is_string(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", "id,empty", [f"{i}," for i in range(20)])
    result = ingest([str(src)], str(tmp_path / "out"))
    assert result.schema.field("empty").type == pa.string()
    assert infer_schema([str(src)]).field("empty").type == pa.string()


def test_stray_text_in_a_numeric_column_is_still_quarantined(tmp_path: Path) -> None:
    rows = [f"{i},{20 + i % 50}" for i in range(12_000)] + ["12000,forty"]
    src = _write_csv(tmp_path / "in.csv", "id,age", rows)

    result = ingest([str(src)], str(tmp_path / "out"))

    assert result.schema.field("age").type == pa.int64()
    [bad] = _quarantine(result)
    assert bad["line"] == 12_002 and "forty" in bad["reason"]


def test_mostly_text_after_the_sample_makes_the_column_string(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(10_000)] + [f"{i},code-{i}" for i in range(10_000, 10_500)]
    src = _write_csv(tmp_path / "in.csv", "id,code", rows)

    result = ingest([str(src)], str(tmp_path / "out"))

    assert result.schema.field("code").type == pa.string()
    assert result.num_rejected == 0 and result.num_written == 10_500


def test_a_given_schema_is_never_widened(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(100)] + ["100,300.5"]
    src = _write_csv(tmp_path / "in.csv", "id,amount", rows)
    schema = pa.schema([("id", pa.int64()), ("amount", pa.int64())])

    result = ingest([str(src)], str(tmp_path / "out"), schema=schema)

    assert result.schema == schema
    [bad] = _quarantine(result)
    assert bad["line"] == 102 and "expected int64, found '300.5'" in bad["reason"]


# ---------------------------------------------------------------------- record sizes


def test_first_record_larger_than_a_block_is_read(tmp_path: Path) -> None:
    big = "x" * (7 << 20)
    src = tmp_path / "in.csv"
    src.write_text(f'id,text\n1,{big}\n2,short\n3,"{big}"\n')

    result = ingest([str(src)], str(tmp_path / "out"))

    _assert_consistent(result)
    assert result.num_written == 3 and result.num_rejected == 0
    lengths = sorted(len(r["text"]) for r in _all_rows(result))
    assert lengths == [5, 7 << 20, 7 << 20]


def test_records_over_the_limit_are_quarantined_with_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jaxtx.data import _csv

    assert MAX_RECORD_BYTES >= 64 << 20
    monkeypatch.setattr(_csv, "_CSV_BLOCK_BYTES", 1 << 20)
    monkeypatch.setattr(_csv, "MAX_RECORD_BYTES", 2 << 20)
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,a\n2," + "y" * (3 << 20) + "\n3,c\n")

    result = ingest([str(src)], str(tmp_path / "out"))

    _assert_consistent(result)
    assert sorted(r["id"] for r in _all_rows(result)) == [1, 3]
    [bad] = _quarantine(result)
    assert bad["line"] == 3 and "more than the limit" in bad["reason"]
    assert result.num_read == 3


def test_jsonl_large_records_and_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jaxtx.data import _jsonl

    src = tmp_path / "in.jsonl"
    big = "z" * (3 << 20)
    src.write_text(
        json.dumps({"id": 1, "text": big}) + "\n" + json.dumps({"id": 2, "text": "s"}) + "\n"
    )
    result = ingest([str(src)], str(tmp_path / "a"))
    assert result.num_written == 2 and result.num_rejected == 0

    monkeypatch.setattr(_jsonl, "MAX_RECORD_BYTES", 1 << 20)
    result = ingest([str(src)], str(tmp_path / "b"))
    _assert_consistent(result)
    [bad] = _quarantine(result)
    assert bad["line"] == 1 and "more than the limit" in bad["reason"]


# ------------------------------------------------------------------ ExampleGen component


def test_examplegen_fixed_splits_with_spans_and_headerless_files(tmp_path: Path, store) -> None:
    from jaxtx.components.example_gen import ExampleGen

    for span in (1, 2):
        d = tmp_path / f"span-{span}"
        d.mkdir()
        (d / "train.data").write_text("".join(f"{i}, a{i % 3}\n" for i in range(40 * span)))
        (d / "test.data").write_text("".join(f"{i}, b\n" for i in range(10 * span)))
    root = str(tmp_path / "span-{SPAN}")

    ex = ExampleGen(
        split_patterns={"train": root + "/train.data", "test": root + "/test.data"},
        input_format="csv",
        csv_header=False,
        column_names=["n", "tag"],
        trim_whitespace=True,
        store=store,
    )

    assert ex.properties["span"] == 2
    assert ex.properties["split_names"] == ["train", "test"]
    assert ex.properties["split_counts"] == {"train": 80, "test": 20}
    assert ex.properties["num_read"] == 100 and ex.properties["num_rejected"] == 0
    assert set(ex.read("test").column("tag").to_pylist()) == {"b"}

    older = ExampleGen(
        split_patterns={"train": root + "/train.data", "test": root + "/test.data"},
        span=1,
        input_format="csv",
        csv_header=False,
        column_names=["n", "tag"],
        store=store,
    )
    assert older.properties["split_counts"] == {"train": 40, "test": 10}
    assert older.properties["span"] == 1


def test_examplegen_needs_one_kind_of_input(tmp_path: Path, store) -> None:
    from jaxtx.components.example_gen import ExampleGen

    src = _write_csv(tmp_path / "a.csv", "x", ["1"])
    with pytest.raises(ValueError, match="either input_pattern"):
        ExampleGen(input_pattern=str(src), split_patterns={"train": str(src)}, store=store)


def test_headerless_csv_with_leading_blank_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("\n\n1,a,x\n2,b,y\n")
    result = ingest([str(src)], str(tmp_path / "out"), csv=CsvOptions(header=False))
    assert result.schema.names == ["f0", "f1", "f2"]
    assert result.num_read == 2 and result.num_rejected == 0


def test_many_failing_values_are_found_by_pattern(tmp_path: Path) -> None:
    from jaxtx.data._convert import _failing_rows

    values = pa.array(["1", " 2", "x", None, "9" * 30, *[f"t{i}" for i in range(100)], "3"])
    failing = _failing_rows(values, pa.int64())
    assert failing == [1, 2, 4, *range(5, 105)]  # " 2" untrimmed, "x", overflow, the texts
    assert _failing_rows(pa.array(["1", "x", "2"]), pa.int64()) == [1]  # few: bisection


def test_jsonl_types_from_the_whole_input(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "amount": i, "late": None}) for i in range(10_100)]
    lines += [json.dumps({"id": 10_100, "amount": 300.5, "late": 7})]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")

    result = ingest([str(src)], str(tmp_path / "out"))

    _assert_consistent(result)
    assert result.schema.field("amount").type == pa.float64()
    assert result.schema.field("late").type == pa.int64()
    assert result.num_rejected == 0 and result.num_written == 10_101
