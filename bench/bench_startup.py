"""Wall time of short runs, measured from process start to exit.

Two figures, each the median of ``--repeat`` runs, each a fresh ``python``
process (what a user waits for: imports, the Prefect flow run, MLflow logging):

* a one-component pipeline (``jaxtx run`` of a file with one tiny component),
  run with ``--no-cache`` so the component executes every time;
* a fully cached demo re-run (``jaxtx demo --no-serve`` after one run that
  filled the cache).

CPU time (user + system of the measured process) is printed too: on a
loaded machine it is the better hint of what the run costs. Both use the
working folder's local Prefect server (started by the first,
unmeasured run, then reused: see README "The local Prefect server"), with
``PREFECT_API_URL`` unset. Targets on a 2-core machine: one component <= 3 s,
cached demo <= 5 s. The server is stopped at the end.

Usage::

    .venv/bin/python bench/bench_startup.py [--repeat 3] [--rows 2000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_COMPONENT = """
import json
from jaxtx import Artifact, Output, Pipeline, component


class Numbers(Artifact):
    \"\"\"A JSON list of numbers.\"\"\"


@component
def Make(nums: Output[Numbers], *, n: int = 3) -> None:
    (nums.path / "nums.json").write_text(json.dumps(list(range(n))))


with Pipeline("one-component") as pipeline:
    Make()
"""

TARGETS = {"one component": 3.0, "cached demo": 5.0}


def _jaxtx() -> str:
    return str(Path(sys.executable).parent / "jaxtx")


#: CPU seconds (user + system) of each measured process, by figure.
CPU: dict[str, list[float]] = {}


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmd: list[str], env: dict[str, str], figure: str = "") -> float:
    cpu0 = _cpu_children()
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    CPU.setdefault(figure, []).append(_cpu_children() - cpu0)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2000, help="demo rows per span")
    ap.add_argument("--epochs", type=int, default=2, help="demo training epochs")
    args = ap.parse_args()

    from jaxtx.pipelines._server import stop_server

    home = Path(tempfile.mkdtemp(prefix="jaxtx-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(JAXTX_HOME=str(home), PYTHONWARNINGS="ignore")
    pipeline_file = home / "one_component.py"
    pipeline_file.write_text(ONE_COMPONENT)
    one = [_jaxtx(), "run", str(pipeline_file), "--no-cache"]
    demo = [_jaxtx(), "demo", "--no-serve", "--rows", str(args.rows)]
    demo += ["--epochs", str(args.epochs)]
    figures: dict[str, list[float]] = {}
    try:
        print(f"warm-up (starts the local Prefect server in {home}/prefect) ...", flush=True)
        cold = _timed(one, env)
        print(f"  first one-component run, server start included: {cold:.1f} s", flush=True)
        figures["one component"] = [_timed(one, env, "one component") for _ in range(args.repeat)]
        print("filling the demo's cache (one full demo run) ...", flush=True)
        full = _timed(demo, env)
        print(f"  full demo run: {full:.1f} s", flush=True)
        figures["cached demo"] = [_timed(demo, env, "cached demo") for _ in range(args.repeat)]
    finally:
        stop_server(home)
    print(
        f"\n{'':16}{'median':>9}{'min':>8}{'max':>8}{'target':>9}{'':7}cpu (user+sys): median (min-max)"
    )
    ok = True
    for name, xs in figures.items():
        med = statistics.median(xs)
        target = TARGETS[name]
        ok &= med <= target
        cpu = CPU[name]
        print(
            f"{name:16}{med:8.2f}s{min(xs):7.2f}s{max(xs):7.2f}s{target:8.1f}s "
            f"{'ok' if med <= target else 'MISSED':6} {statistics.median(cpu):6.2f}s "
            f"({min(cpu):.2f}-{max(cpu):.2f})"
        )
    print(f"load average: {os.getloadavg()}  (cpus: {os.cpu_count()})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
