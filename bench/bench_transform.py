"""Transform analysis (fitting the analyzers) on the rows of ``bench_ingest_stats``.

    .venv/bin/python bench/bench_transform.py [--rows 1000000] [--repeat 3]

Writes the same ``--rows`` x 13 columns as ``bench_ingest_stats.py`` (10 numeric,
3 categorical, ~5% missing) to Parquet (131072-row row groups), then times
``jaxtx.trainer.transform.analyze`` of a preprocessing function using every
analyzer kind (mean/std through z-scores of mean-filled columns: two passes;
min/max, quantiles for bucketize, vocabularies) in Beam's in-process runner,
each repeat in a fresh subprocess. Prints the best wall time and rows/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def preprocess(inputs: dict[str, Any]) -> dict[str, Any]:
    import jaxtx.trainer.transform as tx

    out = {}
    for i in range(10):
        x = inputs[f"num_{i}"]
        if i % 2:
            out[f"z_{i}"] = tx.scale_to_z_score(tx.fill_missing(x, "mean"))
        else:
            out[f"s_{i}"] = tx.scale_to_0_1(x)
        if i < 4:
            out[f"b_{i}"] = tx.bucketize(x, num_buckets=10)
    for j in range(3):
        out[f"cat_{j}"] = tx.vocabulary(inputs[f"cat_{j}"], top_k=100, num_oov_buckets=1)
    return out


def write_parquet(path: Path, rows: int) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    spec = importlib.util.spec_from_file_location(
        "bench_ingest_stats", Path(__file__).with_name("bench_ingest_stats.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    csv = path.with_suffix(".csv")
    mod.generate_csv(csv, rows)
    pq.write_table(pacsv.read_csv(csv), path, row_group_size=131072)
    csv.unlink()


def run_once(path: str) -> dict[str, float]:
    import jaxtx.trainer.transform as tx

    start, cpu = time.perf_counter(), time.process_time()
    tx.analyze(preprocess, path)
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--once", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.once:
        print(json.dumps(run_once(args.once)))
        return
    with tempfile.TemporaryDirectory(prefix="jaxtx-bench-transform-") as tmp:
        path = Path(tmp) / "data.parquet"
        write_parquet(path, args.rows)
        times, cpus = [], []
        for _ in range(args.repeat):
            res = subprocess.run(
                [sys.executable, __file__, "--once", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            doc = json.loads(res.stdout.strip().splitlines()[-1])
            times.append(doc["seconds"])
            cpus.append(doc["cpu"])
        best = min(times)
        print(
            f"Transform analyze, {args.rows:,} rows x 13 columns: best {best:.2f} s "
            f"({args.rows / best:,.0f} rows/s); wall: {', '.join(f'{t:.2f}' for t in times)} s; "
            f"CPU of this process: {', '.join(f'{t:.2f}' for t in cpus)} s"
        )


if __name__ == "__main__":
    main()
