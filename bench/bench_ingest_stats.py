"""ExampleGen + StatisticsGen against a bare single pass, side by side in one run.

    .venv/bin/python bench/bench_ingest_stats.py [--rows 1000000] [--repeat 3]

Generates a CSV of ``--rows`` rows x 13 columns (10 numeric, 3 categorical,
~5% missing), then measures, each in a fresh subprocess (so peak memory is that
step's own):

* ``bare``: pyarrow CSV parsing + the same statistics computed directly with
  pyarrow/numpy (count, missing, mean, std, min, max, zeros, NaN/inf, quantiles,
  equi-width histogram; string unique, top-k, average length): the near-limit
  baseline for StatisticsGen;
* ``bare write``: a streaming pyarrow CSV -> Parquet (snappy) pass, batch by
  batch: the near-limit baseline for ExampleGen;
* ``ExampleGen``: the component, eagerly (Beam, splits, Parquet, artifact hashing);
* ``StatisticsGen``: the component on ExampleGen's output (Beam, sketches,
  HTML and PNG reports).

Runs are interleaved (every step once, ``--repeat`` times) so that load
from other processes on a shared machine falls on all steps alike. Prints
wall time (median of ``--repeat``), CPU time (user + system, all threads; the
figure least moved by other processes' load), rows/s, peak RSS, the ratio to
the bare statistics pass, and the two target ratios: ExampleGen / bare write
and StatisticsGen / bare statistics, each as the median and min-max over the
runs (run ``i`` of one step against run ``i`` of the other), by wall and by CPU
time. A component's time excludes importing its modules (Beam, jaxtx: a fixed
cost per process), shown apart as ``+ imports``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    for i in range(10):
        if i % 2:
            vals = rng.normal(100 * i, 10 + i, rows)
        else:
            vals = rng.integers(0, 1000 * (i + 1), rows).astype(float)
        mask = rng.random(rows) < 0.05
        arr = pa.array(vals, mask=mask)
        cols[f"num_{i}"] = arr.cast(pa.int64()) if i % 2 == 0 else arr
    for j, card in enumerate((5, 40, 300)):
        cats = np.array([f"cat{j}_{k}" for k in range(card)])
        vals = cats[rng.zipf(1.5, rows) % card]
        cols[f"cat_{j}"] = pa.array(vals, mask=rng.random(rows) < 0.05)
    pacsv.write_csv(pa.table(cols), path)


def bare_pass(csv: Path) -> dict[str, float]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(csv)
    out = {}
    for name in table.column_names:
        col = table[name].combine_chunks()
        out[f"{name}.missing"] = col.null_count
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            x = col.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
            finite = x[np.isfinite(x)]
            out[f"{name}.mean"] = float(finite.mean())
            out[f"{name}.std"] = float(finite.std())
            out[f"{name}.min"], out[f"{name}.max"] = float(finite.min()), float(finite.max())
            out[f"{name}.zeros"] = int((x == 0).sum())
            out[f"{name}.nan"] = int(np.isnan(x).sum())
            out[f"{name}.inf"] = int(np.isinf(x).sum())
            np.quantile(finite, np.linspace(0, 1, 11))
            np.histogram(finite, bins=10)
        else:
            vc = pc.value_counts(col.drop_null())
            counts = vc.field("counts").to_numpy()
            top = np.argsort(-counts)[:20]
            out[f"{name}.unique"] = len(vc)
            out[f"{name}.top"] = int(counts[top[0]])
            out[f"{name}.avg_len"] = float(pc.mean(pc.utf8_length(col.drop_null())).as_py())
    return out


def bare_write(csv: Path, out: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    reader = pacsv.open_csv(csv)
    with pq.ParquetWriter(out, reader.schema, compression="snappy") as writer:
        for batch in reader:
            writer.write_batch(batch)


def run_step(step: str, csv: Path, work: Path, run: int = 0) -> dict[str, float]:
    """Time one step; a component's module imports are reported apart (``import_seconds``).

    Each run writes to its own artifact store, so no repeat is a cache hit.
    """
    store = str(work / f"store-{step}-{run}")
    os.environ.setdefault("JAXTX_HOME", str(work / "home"))
    start = time.perf_counter()
    cpu_start = time.process_time()
    import_seconds = 0.0
    if step == "bare":
        bare_pass(csv)
    elif step == "bare_write":
        bare_write(csv, work / "bare.parquet")
    elif step == "examplegen":
        from jaxtx.components.example_gen import ExampleGen

        imported, cpu_start = time.perf_counter(), time.process_time()
        ex = ExampleGen(input_pattern=str(csv), store=store)
        (work / "examples_uri").write_text(ex.uri)
        import_seconds, start = imported - start, imported  # as for StatisticsGen below
    elif step == "statisticsgen":
        from jaxtx.components import load_artifact
        from jaxtx.components.statistics_gen import StatisticsGen

        ex = load_artifact((work / "examples_uri").read_text())
        t0, cpu_start = time.perf_counter(), time.process_time()
        StatisticsGen(examples=ex, store=store)
        import_seconds, start = t0 - start, t0  # imports and the artifact load are not its work
    else:
        raise SystemExit(f"unknown step {step}")
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mb": peak_mb,
        "import_seconds": import_seconds,
    }


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def _ratios(
    runs: dict[str, list[dict[str, float]]], step: str, base: str, key: str
) -> tuple[float, float, float]:
    """Median, min and max over runs of ``step``'s ``key`` / ``base``'s (run i against run i)."""
    ratios = sorted(a[key] / b[key] for a, b in zip(runs[step], runs[base], strict=True))
    return ratios[(len(ratios) - 1) // 2], ratios[0], ratios[-1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, Path(args.csv), Path(args.work), args.run)))
        return

    with tempfile.TemporaryDirectory(prefix="jaxtx-bench-") as tmp:
        work = Path(tmp)
        csv = work / "data.csv"
        t = time.perf_counter()
        generate_csv(csv, args.rows)
        size_mb = csv.stat().st_size / 2**20
        print(
            f"generated {args.rows:,} rows x 13 columns ({size_mb:.0f} MiB CSV) "
            f"in {time.perf_counter() - t:.1f} s; median of {args.repeat} interleaved runs, "
            "each step in a fresh process"
        )
        steps = ("bare", "bare_write", "examplegen", "statisticsgen")
        runs: dict[str, list[dict[str, float]]] = {step: [] for step in steps}
        for run in range(args.repeat):  # interleaved: load on a shared machine hits all steps
            for step in steps:
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--step",
                        step,
                        "--csv",
                        str(csv),
                        "--work",
                        str(work),
                        "--run",
                        str(run),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[step].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results = {step: _median_run(r) for step, r in runs.items()}
        base = results["bare"]["seconds"]
        names = {
            "bare": "bare pyarrow CSV + stats",
            "bare_write": "bare pyarrow CSV -> Parquet",
            "examplegen": "ExampleGen",
            "statisticsgen": "StatisticsGen",
        }
        print(
            f"{'step':28} {'seconds':>8} {'CPU s':>7} {'rows/s':>12} {'peak MiB':>9} "
            f"{'x bare':>7} {'+ imports s':>11}"
        )
        for step, r in results.items():
            cpu = sorted(x["cpu_seconds"] for x in runs[step])[(len(runs[step]) - 1) // 2]
            print(
                f"{names[step]:28} {r['seconds']:8.2f} {cpu:7.2f} "
                f"{args.rows / r['seconds']:12,.0f} {r['peak_mb']:9.0f} "
                f"{r['seconds'] / base:7.2f} {r['import_seconds']:11.2f}"
            )
        both = results["examplegen"]["seconds"] + results["statisticsgen"]["seconds"]
        print(
            f"{'ExampleGen + StatisticsGen':28} {both:8.2f} {'':7} {args.rows / both:12,.0f} "
            f"{'':9} {both / base:7.2f}"
        )
        targets = (
            ("ExampleGen / bare write", "examplegen", "bare_write"),
            ("StatisticsGen / bare stats", "statisticsgen", "bare"),
        )
        for label, step, against in targets:
            mid, low, high = _ratios(runs, step, against, "seconds")
            cpu_mid, cpu_low, cpu_high = _ratios(runs, step, against, "cpu_seconds")
            print(
                f"{label:28} = {mid:.2f}x wall (runs {low:.2f}-{high:.2f}), "
                f"{cpu_mid:.2f}x CPU (runs {cpu_low:.2f}-{cpu_high:.2f}); target <= 1.5x: "
                f"{'met' if mid <= 1.5 else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
