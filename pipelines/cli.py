"""The ``jaxtx`` command line.

    jaxtx run TARGET [-p KEY=VALUE ...] [--no-cache]   run a pipeline
    jaxtx demo [--rows N] [--no-serve]                 demo data -> demo pipeline -> serve the pushed model
    jaxtx validate DATA --schema FILE                  check a data file against a schema (exit 1 on failing anomalies)
    jaxtx ui [--port 5000]                             MLflow UI on the local store
    jaxtx serve BASE_DIR [--port 8501]                 serve pushed models over HTTP
    jaxtx rollback MODEL --serving-dir DIR             move the alias and served version back

TARGET is ``path/to/file.py[:attr]`` or ``package.module:attr``; ``attr`` is a
``Pipeline`` or a function returning one (default: ``pipeline``, then
``create_pipeline``). ``-p name=value`` sets a factory argument, or a node
parameter as ``-p node_id.param=value``. Values are parsed as JSON when they
can be (``-p rows=1000``, ``-p ratios=[3,1]``), else taken as strings.

Exit codes: 0 success, 1 the pipeline failed or anomalies were found,
2 bad usage or input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtx.core.settings import Settings, default_tracking_uri

from . import _gc
from ._targets import UsageError, build_pipeline, check_node_params, load_target, parse_params
from ._tracking import MLFLOW_UI_QUERY

__all__ = ["UsageError", "load_target", "main"]


def _cmd_run(args: argparse.Namespace) -> int:
    pipeline, node_params = build_pipeline(args.target, parse_params(args.param))
    settings = pipeline.resolve_settings(home=args.home)
    return _run_and_report(pipeline, node_params, cache=not args.no_cache, settings=settings)


def _run_and_report(
    pipeline: Any, node_params: dict[str, Any], *, cache: bool, settings: Settings
) -> int:
    from jaxtx.components import PipelineStopped
    from jaxtx.pipelines import PipelineRunError

    try:
        run = pipeline.run(params=node_params, cache=cache, settings=settings)
    except PipelineStopped as e:
        print(f"jaxtx: pipeline {pipeline.name!r} stopped: {e}", file=sys.stderr)
        return 1
    except PipelineRunError as e:
        print(f"jaxtx: {e}", file=sys.stderr)
        if settings.tracking_uri:
            print(f"  component runs and logs: MLflow {settings.tracking_uri}", file=sys.stderr)
        print("  the full traceback: run again with --verbose", file=sys.stderr)
        return 1
    print(
        f"pipeline {run.pipeline!r} finished in {run.duration_s:.1f} s: "
        f"{len(run.executed_nodes)} ran, {len(run.cached_nodes)} cached"
    )
    for node_id, nr in run.nodes.items():
        for name, art in nr.outputs.items():
            print(f"  {node_id}.{name}: {art.uri}")
    if run.tracking_uri:
        print(f"MLflow: parent run {run.mlflow_run_id} in {run.tracking_uri}  (browse: jaxtx ui)")
    return 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from ._env import use_working_folder_prefect_home

    use_working_folder_prefect_home(Settings.resolve(home=args.home).home)  # before Prefect loads
    from ._schedule import serve_schedule

    serve_schedule(
        args.target,
        parse_params(args.param),
        cron=args.cron,
        interval=args.interval,
        name=args.name,
        home=args.home,
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxtx.pipelines.demo import MODEL_NAME, create_pipeline, ensure_demo_data

    params = parse_params(args.param)
    for key in params:
        if "." not in key:
            option = f"--{key.replace('_', '-')}"
            hint = (
                f"write it as the option {option} {params[key]}"
                if option in _DEMO_OPTIONS
                else "write node parameters as NODE_ID.PARAM=VALUE (e.g. -p Trainer.seed=1)"
            )
            raise UsageError(f"-p {key}: the demo takes no factory arguments; {hint}")
    settings = Settings.resolve(home=args.home)
    home = settings.home
    serving_dir = home / "serving"
    data_root = home / "demo-data"
    pipeline = create_pipeline(
        data_root=str(data_root), home=str(home), serving_dir=str(serving_dir), epochs=args.epochs
    )
    check_node_params(pipeline, params)
    data = ensure_demo_data(data_root, rows=args.rows)
    print(f"demo data: {data}", file=sys.stderr)
    code = _run_and_report(pipeline, params, cache=not args.no_cache, settings=settings)
    if code != 0 or args.no_serve:
        return code
    if not (serving_dir / MODEL_NAME).is_dir():
        print("no model was pushed (not blessed); nothing to serve", file=sys.stderr)
        return 0
    _gc.resume()
    _serve_demo(serving_dir, MODEL_NAME, args.port)
    return 0


def _serve_demo(serving_dir: Path, model: str, port: int) -> None:
    from jaxtx.serving.server import serve

    row = {
        "age": 39,
        "workclass": "State-gov",
        "education": "Bachelors",
        "education_num": 13,
        "marital_status": "Never-married",
        "occupation": "Adm-clerical",
        "relationship": "Not-in-family",
        "race": "White",
        "sex": "Male",
        "capital_gain": 2174,
        "capital_loss": 0,
        "hours_per_week": 40,
        "native_region": "North-America",
    }
    body = json.dumps({"instances": [row]})
    print(
        f"\nServing {serving_dir}/{model} on http://127.0.0.1:{port} (Ctrl-C to stop). Try:\n\n"
        f"  curl -s http://127.0.0.1:{port}/v1/models/{model}:predict "
        f"-H 'Content-Type: application/json' -d '{body}'\n",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(str(serving_dir), host="127.0.0.1", port=port)


def _cmd_validate(args: argparse.Namespace) -> int:
    from jaxtx.data import csv_options_from_args
    from jaxtx.validation.validate_file import validate_file

    if not Path(args.schema).is_file():
        raise UsageError(f"--schema {args.schema}: no such schema file")
    anomalies, report = validate_file(
        args.data,
        args.schema,
        input_format=args.format,
        report_path=args.report,
        environment=args.environment,
        csv=csv_options_from_args(args),
        beam_options=list(Settings.resolve().beam_options) or None,  # jaxtx.toml's [beam]
    )
    fails = [a for a in anomalies if a.severity == "fail"]
    for a in anomalies:
        print(f"{a.severity.upper():4}  {a.feature}: {a.type}: {a.description}")
    if report:
        print(f"report: {report}", file=sys.stderr)
    if not anomalies:
        print(f"{args.data}: no anomalies against {args.schema}")
    bad = fails or (args.strict and anomalies)
    return 1 if bad else 0


def _cmd_ui(args: argparse.Namespace) -> int:
    home = Settings.resolve(home=args.home).home
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        default_tracking_uri(home),
        "--default-artifact-root",
        (home / "mlartifacts").as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    # One worker and no job runner: light on a small machine (jobs only when asked).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if args.jobs else "false"}
    print("running: " + " ".join(cmd), file=sys.stderr)
    if args.dry_run:
        return 0
    if (home / "mlflow.db").exists():
        _reap(default_tracking_uri(home))
    print(
        f"MLflow UI: http://{args.host}:{args.port}/#/experiments?{MLFLOW_UI_QUERY}  (Ctrl-C to stop)",
        file=sys.stderr,
    )
    return _run_quietly(cmd, env)


def _reap(tracking_uri: str) -> None:
    """Close the MLflow runs of killed jaxtx processes (see jaxtx.pipelines._owner)."""
    from jaxtx.core.tracking import mlflow_client

    from ._owner import reap_dead_runs

    for run_id in reap_dead_runs(mlflow_client(tracking_uri)):
        print(f"jaxtx: marked run {run_id} KILLED (its process is gone)", file=sys.stderr)


def _run_quietly(cmd: list[str], env: dict[str, str]) -> int:
    """Run a server in its own session; Ctrl-C (or SIGTERM) stops it without tracebacks."""
    import signal

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print("stopped", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)


def _cmd_server(args: argparse.Namespace) -> int:
    from ._server import ensure_server, server_status, stop_server

    home = Settings.resolve(home=args.home).home
    if args.action == "start":
        info = ensure_server(home)
        print(f"Prefect server running (pid {info.pid}): UI {info.url}, API {info.api_url}")
        return 0
    if args.action == "stop":
        stopped = stop_server(home)
        print("Prefect server stopped" if stopped else f"no Prefect server running for {home}")
        return 0
    info = server_status(home)
    if info is None:
        print(f"no Prefect server running for {home} (a pipeline run starts one)")
        return 1
    print(f"Prefect server running (pid {info.pid}): UI {info.url}, API {info.api_url}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from jaxtx.serving.cli import serve_from_args

    serve_from_args(args)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from jaxtx.components.pusher import RollbackError, rollback

    settings = Settings.resolve(home=args.home, tracking_uri=args.tracking_uri)
    store = settings.tracking_uri
    db = store.removeprefix("sqlite:///") if store.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():
        where = "" if args.home or args.tracking_uri else " (pass --home or --tracking-uri)"
        raise UsageError(f"no MLflow store at {db}{where}")
    _reap(settings.tracking_uri)
    try:
        old, new = rollback(
            args.model,
            serving_dir=args.serving_dir,
            alias=args.alias,
            tracking_uri=settings.tracking_uri,
        )
    except RollbackError as e:
        print(f"jaxtx: {e} (registry: {store})", file=sys.stderr)
        return 1
    print(
        f"{args.model}: alias {args.alias!r} moved from version {old} back to {new}; "
        f"version {old} no longer served from {args.serving_dir}"
    )
    return 0


_EPILOG = """exit codes:
  0  success
  1  the pipeline failed or stopped, or anomalies were found (validate)
  2  bad usage or input: unknown option, node or parameter, missing file

--debug shows the traceback behind an error; --verbose shows Prefect's task logs."""

#: ``jaxtx demo`` options a user may try to pass as ``-p name=value``.
_DEMO_OPTIONS = ("--rows", "--epochs", "--port", "--home")


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions, keeps multi-line text (the exit-code
    epilog) as written, and appends ``(default: X)`` to an option's help when
    it has a real default the help does not mention."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2) and the shared help format; subcommand
    parsers are made by this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("epilog", _EPILOG)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's hook; never returns
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` and ``--verbose``, accepted before or after the command."""
    kw: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--debug", action="store_true", help="show the traceback behind an error", **kw)
    p.add_argument("--verbose", action="store_true", help="show Prefect's flow and task logs", **kw)


def _parser() -> argparse.ArgumentParser:
    from jaxtx import __version__

    p = _Parser(
        prog="jaxtx",
        description="ML pipelines for JAX: run, schedule, validate, serve and review.",
    )
    p.add_argument("--version", action="version", version=f"jaxtx {__version__}")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    param_help = (
        "a factory argument NAME=VALUE or a node parameter NODE_ID.PARAM=VALUE; "
        "values are JSON when they parse, else strings (repeatable)"
    )
    home_help = "working folder: artifacts, MLflow store (default: $JAXTX_HOME or ./.jaxtx)"

    r = sub.add_parser(
        "run",
        help="run a pipeline from a file or module:attr",
        description="Run a pipeline once as a Prefect flow run with an MLflow parent run. "
        "TARGET is path/to/file.py[:attr] or package.module:attr; attr is a Pipeline or a "
        "function returning one (default: 'pipeline', then 'create_pipeline'). A file inside "
        "a package (with __init__.py) is imported as that package's module.",
    )
    r.add_argument("target", help="file.py[:attr] or package.module:attr")
    r.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help=param_help
    )
    r.add_argument(
        "--no-cache", action="store_true", help="run every component, ignoring cached results"
    )
    r.add_argument("--home", help=home_help)
    _common(r, top=False)
    r.set_defaults(fn=_cmd_run)

    s = sub.add_parser(
        "schedule",
        help="run a pipeline on a schedule: a Prefect deployment, served until Ctrl-C",
        description="Register the pipeline with a Prefect server as a scheduled deployment "
        "and serve it in the foreground until Ctrl-C. Needs PREFECT_API_URL: start a server "
        "with 'prefect server start --host 127.0.0.1', then "
        "'export PREFECT_API_URL=http://127.0.0.1:4200/api'.",
    )
    s.add_argument("target", help="file.py[:attr] or package.module:attr")
    when = s.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='cron expression, e.g. "*/5 * * * *"')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="seconds between runs")
    s.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help=param_help
    )
    s.add_argument("--name", help="deployment name (default: <pipeline name>-schedule)")
    s.add_argument("--home", help=home_help)
    _common(s, top=False)
    s.set_defaults(fn=_cmd_schedule)

    d = sub.add_parser(
        "demo",
        help="generate demo data, run the demo pipeline and serve the model",
        description="Generate a census-like data set in <home>/demo-data, run the demo "
        "pipeline (ingest, statistics, validation, transform, training, evaluation, "
        "infra validation, push) and serve the pushed model until Ctrl-C. A second run "
        "is cached; -p Trainer.seed=1 trains a new candidate.",
    )
    d.add_argument("--rows", type=int, default=20_000, help="rows per generated span")
    d.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NODE_ID.PARAM=VALUE",
        help="a node parameter, e.g. Trainer.seed=1 (repeatable)",
    )
    d.add_argument(
        "--no-cache", action="store_true", help="run every component, ignoring cached results"
    )
    d.add_argument("--home", help=home_help)
    d.add_argument("--epochs", type=int, default=8, help="training epochs")
    d.add_argument("--no-serve", action="store_true", help="do not serve the pushed model")
    d.add_argument("--port", type=int, default=8501, help="serving port on 127.0.0.1")
    _common(d, top=False)
    d.set_defaults(fn=_cmd_demo)

    v = sub.add_parser(
        "validate",
        help="check a data file against a schema",
        description="Compute statistics of DATA and check them against a schema: one line "
        "per anomaly; exit 1 on failing anomalies (on warnings too with --strict).",
    )
    v.add_argument("data", help="a CSV, Parquet or JSON Lines file, a glob or a directory")
    v.add_argument("--schema", required=True, help="schema YAML/JSON (from SchemaGen)")
    v.add_argument(
        "--format",
        default="auto",
        choices=["auto", "csv", "parquet", "jsonl"],
        help="input format; auto guesses from the file name",
    )
    v.add_argument("--report", help="also write an HTML report to this file")
    v.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    v.add_argument(
        "--environment",
        help="check only the schema's features in this environment (e.g. SERVING, no label)",
    )
    from jaxtx.data import add_csv_arguments

    add_csv_arguments(v)
    _common(v, top=False)
    v.set_defaults(fn=_cmd_validate)

    from jaxtx.serving.cli import add_serve_arguments

    s = sub.add_parser(
        "serve",
        help="serve exported models (TF Serving REST + Open Inference v2)",
        description="Serve every <base>/<model>/<version>/ export over HTTP (and gRPC with "
        "--grpc-port); new versions are picked up while serving.",
    )
    add_serve_arguments(s)
    _common(s, top=False)
    s.set_defaults(fn=_cmd_serve)

    rb = sub.add_parser(
        "rollback",
        help="move a model's alias and served version back",
        description="Move the registry alias back to the previous version and stop serving "
        "the current one from the serving folder.",
    )
    rb.add_argument("model", help="registered model name")
    rb.add_argument("--serving-dir", required=True, help="the base directory Pusher copies to")
    rb.add_argument("--alias", default="champion", help="registry alias to move")
    rb.add_argument("--home", help=home_help)
    rb.add_argument(
        "--tracking-uri",
        help="MLflow tracking/registry URI, e.g. http://mlflow:5000 "
        "(default: $MLFLOW_TRACKING_URI, else the SQLite store in the working folder)",
    )
    _common(rb, top=False)
    rb.set_defaults(fn=_cmd_rollback)

    u = sub.add_parser(
        "ui",
        help="open the MLflow UI on the local store",
        description="Start the MLflow UI on the working folder's MLflow store.",
    )
    u.add_argument("--home", help=home_help)
    u.add_argument("--host", default="127.0.0.1", help="address to bind")
    u.add_argument("--port", type=int, default=5000, help="port to listen on")
    u.add_argument("--dry-run", action="store_true", help="print the command only")
    u.add_argument("--jobs", action="store_true", help="also run MLflow's job runner")
    _common(u, top=False)
    u.set_defaults(fn=_cmd_ui)

    sv = sub.add_parser(
        "server",
        help="the working folder's local Prefect server: status, start or stop",
        description="Pipeline runs without PREFECT_API_URL use a Prefect server kept for "
        "the working folder (state in <home>/prefect/), started on first use and left "
        "running for later runs; this command shows its UI address or stops it.",
    )
    sv.add_argument("action", choices=["status", "start", "stop"], help="what to do")
    sv.add_argument("--home", help="working folder (default $JAXTX_HOME or ./.jaxtx)")
    _common(sv, top=False)
    sv.set_defaults(fn=_cmd_server)
    return p


def _quiet_prefect_task_logs() -> None:
    """Keep Prefect's flow/task run logs (tracebacks of a failed component)
    off the console: jaxtx prints the failing component and the cause. They
    still reach Prefect's API handler, so the Prefect UI shows them."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).propagate = False
    # A new MLflow store announces its schema migrations at INFO; nothing to act on.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxtx`` command line.

    Args:
      argv: the arguments (default ``sys.argv[1:]``: then this *is* the program,
        and the process exits here without the interpreter's teardown; see
        :func:`_exit_now`).

    Returns:
      The exit code: 0 success, 1 failure, 2 bad usage or input.
    """
    if argv is None:
        _gc.pause()  # until a component executes (or the command is not a short run)
    code = _main(argv)
    if argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Exit like the interpreter does, less its teardown.

    A normal exit joins non-daemon threads, runs ``atexit`` handlers (Prefect's
    log and event flushes, ``logging.shutdown``), then frees every module one
    object at a time: 0.7-1.3 s of CPU after a pipeline run (MLflow, Prefect,
    pandas and jax loaded), which is a third of a short run. The first two are
    done here, the last is skipped. Python's own steps are private names;
    without them this returns and the exit is the normal one.
    """
    import atexit

    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None:
        return
    shutdown()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in ("run", "demo"):
        _gc.resume()
    if not args.verbose:
        _quiet_prefect_task_logs()
    try:
        return int(args.fn(args))
    except (UsageError, FileNotFoundError, ValueError) as e:
        if args.debug:
            raise
        cmd = f"jaxtx {args.command}"
        print(f"{cmd}: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxtx: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            f"jaxtx {args.command}: {type(e).__name__}: {_one_line(e)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
