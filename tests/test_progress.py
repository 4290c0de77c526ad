"""Progress of long steps: plain lines in logs, nothing unless a board is open."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _toy_model import toy_table, write_toy_model

from jaxtx.core import progress


def test_off_under_pytest_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAXTX_PROGRESS", raising=False)
    assert progress.progress_mode() == "off"
    monkeypatch.setenv("JAXTX_PROGRESS", "plain")
    assert progress.progress_mode() == "plain"
    monkeypatch.setenv("JAXTX_PROGRESS", "loud")
    with pytest.raises(ValueError, match="JAXTX_PROGRESS='loud'"):
        progress.progress_mode()


def test_bulk_inference_counts_rows_scored_of_the_total(tmp_path: Path) -> None:
    from jaxtx.serving.bulk import bulk_predict

    write_toy_model(tmp_path / "model", "binary")
    for i, n in enumerate((30, 20)):
        pq.write_table(toy_table(n, seed=i), tmp_path / f"part-{i}.parquet")
    files = [tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"]
    out = io.StringIO()
    board = progress.Board("plain", stream=out, interval=0.0)
    with progress.open_board(board), progress.node_scope("BulkInferrer"):
        assert bulk_predict(tmp_path / "model", files, tmp_path / "out", batch_rows=8) == 50
    lines = out.getvalue().splitlines()
    assert lines, "no progress lines"
    assert all(line.startswith("[jaxtx]   BulkInferrer scoring: ") for line in lines)
    counts = [int(re.search(r": ([\d,]+)/50 rows", line)[1].replace(",", "")) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 50  # rising, up to the total
    assert re.fullmatch(r"\[jaxtx\]   BulkInferrer scoring: 50/50 rows, \d+\.\d s", lines[-1])


def test_without_a_board_nothing_is_counted(tmp_path: Path) -> None:
    from jaxtx.serving.bulk import bulk_predict

    write_toy_model(tmp_path / "model", "binary")
    pq.write_table(toy_table(10), tmp_path / "part-0.parquet")
    assert progress.task("anything") is None
    assert bulk_predict(tmp_path / "model", [tmp_path / "part-0.parquet"], tmp_path / "out") == 10


def test_a_pipeline_run_prints_plain_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from jaxtx import Pipeline
    from jaxtx.components import ExampleGen, StatisticsGen

    rows = ["age,workclass"] + [f"{20 + i % 50},{'ab'[i % 2]}" for i in range(300)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("JAXTX_PROGRESS", "plain")
    monkeypatch.setenv("JAXTX_PROGRESS_INTERVAL", "0")
    with Pipeline("progress", home=str(tmp_path / "home")) as p:
        StatisticsGen(examples=ExampleGen(input_pattern=str(tmp_path / "data.csv")))
    run = p.run()
    err = capfd.readouterr().err
    read = re.findall(r"^\[jaxtx\]   ExampleGen reading: ([\d,]+) rows, [\d.]+ s$", err, re.M)
    assert read == ["300"], err[-3000:]
    for split in ("train", "eval"):
        assert re.search(rf"^\[jaxtx\]   StatisticsGen {split}: [\d,]+ rows, [\d.]+ s$", err, re.M)
    # Report titles name the pipeline, then the component and what it described.
    report = run.output("StatisticsGen").path / "reports" / "statistics.html"
    assert "<title>progress · StatisticsGen: statistics of ExampleGen examples" in report.read_text()
