"""README's examples run: its fenced ``python`` and ``bash`` blocks execute
against the demo's data (``data/``) and model (``serving/``).

A block preceded by ``<!-- no-test: why -->`` is illustrative (installs,
foreground servers, placeholders) and is only checked to be marked so. Python
blocks run in order in one namespace, as a reader would paste them; a shell
line ending in ``&`` is started in the background and waited for.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from _services import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    skip: str | None  # the no-test reason, or None when the block runs


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with its language, line and no-test mark."""
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        mark = (
            re.fullmatch(r"<!--\s*no-test:?\s*(.*?)\s*-->", before[-1].strip()) if before else None
        )
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(Block(m.group(1), m.group(2), line, mark.group(1) if mark else None))
    return blocks


BLOCKS = [b for b in readme_blocks(README.read_text()) if b.lang in ("python", "bash")]
RUNNABLE = [b for b in BLOCKS if b.skip is None]


def test_readme_blocks_are_found_and_marked() -> None:
    assert {b.lang for b in RUNNABLE} == {"python", "bash"}
    for b in BLOCKS:
        assert b.skip is None or b.skip, f"README.md:{b.line}: say why the block cannot run"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as after ``jaxtx demo``: ``./.jaxtx`` with a pushed model,
    ``data/`` the demo's spans and ``serving/`` its serving folder."""
    work = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if k not in ("JAXTX_HOME", "MLFLOW_TRACKING_URI")}
    r = subprocess.run(
        [str(BIN / "jaxtx"), "demo", "--rows", "3000", "--epochs", "3", "--no-serve"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (work / "data").symlink_to(work / ".jaxtx" / "demo-data")
    (work / "serving").symlink_to(work / ".jaxtx" / "serving")
    assert (work / "serving" / "census" / "1").is_dir(), "the demo pushed no model"
    return work


@pytest.mark.slow
def test_readme_python_blocks_run(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(demo_dir)
    for var in ("JAXTX_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    namespace: dict[str, object] = {"__name__": "readme"}
    for b in (b for b in RUNNABLE if b.lang == "python"):
        code = compile(b.code, f"README.md:{b.line}", "exec")
        exec(code, namespace)
    # What the blocks promise: the pipeline ran, then was cached.
    assert namespace["run"].output("StatisticsGen").uri  # type: ignore[attr-defined]


def _run_shell(block: Block, cwd: Path, port: int) -> str:
    """Run a README shell block; ``cmd &`` lines start in the background and
    must answer on ``port`` before the rest runs. Returns stdout."""
    text = block.code.replace("8501", str(port))
    background = []
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    rest = []
    for line in text.splitlines():
        cmd = line.split("#", 1)[0].strip()
        if cmd.endswith("&"):
            argv = shlex.split(cmd[:-1])
            if argv[:2] == ["jaxtx", "serve"] and "--port" not in argv:
                argv += ["--port", str(port)]
            argv[0] = str(BIN / argv[0]) if (BIN / argv[0]).exists() else argv[0]
            log = cwd / f"background-{len(background)}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            background.append(proc)
            wait_until(
                lambda: _serving(f"http://127.0.0.1:{port}/v1/models/census"),
                what=" ".join(argv),
                timeout=120,
                proc=proc,
                log=log,
            )
        else:
            rest.append(line)
    try:
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(rest)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    assert r.returncode == 0, f"README.md:{block.line}: {r.stderr[-2000:]}"
    return r.stdout


def _serving(url: str) -> bool:
    """The model status at ``url`` lists a version that is AVAILABLE."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and b"AVAILABLE" in resp.read()
    except OSError:
        return False


@pytest.mark.slow
def test_readme_shell_blocks_run(demo_dir: Path) -> None:
    for b in (b for b in RUNNABLE if b.lang == "bash"):
        out = _run_shell(b, demo_dir, free_port())
        assert '"error"' not in out, f"README.md:{b.line}: {out[:500]}"
        if "curl" in b.code:
            assert '"predictions"' in out, f"README.md:{b.line}: {out[:500]}"


def test_readme_own_files_block_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "Your own files" block, run as written on files shaped as it expects:
    fixed splits from two train files and a test file of span 1, and a
    headerless latin-1 ``.data`` file with ``?`` nulls and padded values."""
    (block,) = [b for b in BLOCKS if "split_patterns=" in b.code]
    span = tmp_path / "data" / "span-1"
    span.mkdir(parents=True)
    header = "age,workclass,fnlwgt\n"
    (span / "train-1.csv").write_text(
        header + "".join(f"{20 + i},Private,{i}\n" for i in range(30))
    )
    (span / "train-2.csv").write_text(
        header + "".join(f"{50 + i},State-gov,{i}\n" for i in range(20))
    )
    (span / "test.csv").write_text(header + "".join(f"{30 + i},Private,{i}\n" for i in range(10)))
    adult = [f"{100 + i}, Private, {1000 + i}\n" for i in range(40)]
    adult[3] = "39, ?, 77516\n"
    adult[7] = "41, Fédéral, 1234\n"
    (tmp_path / "adult.data").write_bytes("".join(adult).encode("latin-1"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXTX_HOME", str(tmp_path / ".jaxtx"))
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)

    examples, adult_ex = namespace["examples"], namespace["adult"]
    assert examples.properties["split_counts"] == {"train": 50, "eval": 10}  # type: ignore[attr-defined]
    counts = adult_ex.properties["split_counts"]  # type: ignore[attr-defined]
    assert sum(counts.values()) == 40  # the first line is a row, not a header
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(Path(adult_ex.uri).glob("data/*/*.parquet")))  # type: ignore[attr-defined]
    rows = table.to_pylist()
    assert {r["age"] for r in rows} == {100 + i for i in range(40) if i not in (3, 7)} | {39, 41}
    assert [r["workclass"] for r in rows if r["age"] == 39] == [None]  # "?" is null
    assert [r["workclass"] for r in rows if r["age"] == 41] == ["Fédéral"]  # latin-1, trimmed
    assert table.schema.field("age").type == "int64"
    assert str(counts) in capsys.readouterr().out
