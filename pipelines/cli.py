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
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtx.core.settings import Settings, default_tracking_uri

from ._targets import UsageError, build_pipeline, load_target, parse_params

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

    settings = Settings.resolve(home=args.home)
    home = settings.home
    data = ensure_demo_data(home / "demo-data", rows=args.rows)
    print(f"demo data: {data}", file=sys.stderr)
    serving_dir = home / "serving"
    pipeline = create_pipeline(
        data_root=str(data), home=str(home), serving_dir=str(serving_dir), epochs=args.epochs
    )
    code = _run_and_report(
        pipeline, parse_params(args.param), cache=not args.no_cache, settings=settings
    )
    if code != 0 or args.no_serve:
        return code
    if not (serving_dir / MODEL_NAME).is_dir():
        print("no model was pushed (not blessed); nothing to serve", file=sys.stderr)
        return 0
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
    from jaxtx.validation.validate_file import validate_file

    anomalies, report = validate_file(
        args.data,
        args.schema,
        input_format=args.format,
        report_path=args.report,
        environment=args.environment,
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
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    cmd = [
        mlflow,
        "ui",
        "--backend-store-uri",
        default_tracking_uri(home),
        "--default-artifact-root",
        (home / "mlartifacts").as_uri(),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print("running: " + " ".join(cmd), file=sys.stderr)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


def _cmd_serve(args: argparse.Namespace) -> int:
    from jaxtx.serving.cli import serve_from_args

    serve_from_args(args)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from jaxtx.components.pusher import RollbackError, rollback

    settings = Settings.resolve(home=args.home, tracking_uri=args.tracking_uri)
    try:
        old, new = rollback(
            args.model,
            serving_dir=args.serving_dir,
            alias=args.alias,
            tracking_uri=settings.tracking_uri,
        )
    except RollbackError as e:
        print(f"jaxtx: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.model}: alias {args.alias!r} moved from version {old} back to {new}; "
        f"version {old} no longer served from {args.serving_dir}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxtx", description="ML pipelines for JAX.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline from a file or module:attr")
    r.add_argument("target", help="file.py[:attr] or package.module:attr")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--no-cache", action="store_true", help="run every component")
    r.add_argument("--home", help="working folder (default $JAXTX_HOME or ./.jaxtx)")
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
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--name", help="deployment name (default: <pipeline name>-schedule)")
    s.add_argument("--home", help="working folder (default $JAXTX_HOME or ./.jaxtx)")
    s.set_defaults(fn=_cmd_schedule)

    d = sub.add_parser("demo", help="generate demo data and run the demo pipeline")
    d.add_argument("--rows", type=int, default=20_000, help="rows per span")
    d.add_argument("-p", "--param", action="append", default=[], metavar="NODE.PARAM=VALUE")
    d.add_argument("--no-cache", action="store_true")
    d.add_argument("--home")
    d.add_argument("--epochs", type=int, default=8, help="training epochs")
    d.add_argument("--no-serve", action="store_true", help="do not serve the pushed model")
    d.add_argument("--port", type=int, default=8501, help="serving port (127.0.0.1)")
    d.set_defaults(fn=_cmd_demo)

    v = sub.add_parser("validate", help="check a data file against a schema")
    v.add_argument("data", help="a CSV, Parquet or JSON Lines file, a glob or a directory")
    v.add_argument("--schema", required=True, help="schema YAML/JSON (from SchemaGen)")
    v.add_argument("--format", default="auto", choices=["auto", "csv", "parquet", "jsonl"])
    v.add_argument("--report", help="also write an HTML report here")
    v.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    v.add_argument(
        "--environment",
        help="check only the schema's features in this environment (e.g. SERVING, no label)",
    )
    v.set_defaults(fn=_cmd_validate)

    from jaxtx.serving.cli import add_serve_arguments

    s = sub.add_parser("serve", help="serve exported models (TF Serving REST + Open Inference v2)")
    add_serve_arguments(s)
    s.set_defaults(fn=_cmd_serve)

    rb = sub.add_parser("rollback", help="move a model's alias and served version back")
    rb.add_argument("model", help="registered model name")
    rb.add_argument("--serving-dir", required=True, help="the base directory Pusher copies to")
    rb.add_argument("--alias", default="champion")
    rb.add_argument("--home", help="working folder (MLflow store), default $JAXTX_HOME or ./.jaxtx")
    rb.add_argument(
        "--tracking-uri",
        help="MLflow tracking/registry URI, e.g. http://mlflow:5000 "
        "(default $MLFLOW_TRACKING_URI, else the SQLite store in the working folder)",
    )
    rb.set_defaults(fn=_cmd_rollback)

    u = sub.add_parser("ui", help="open the MLflow UI on the local store")
    u.add_argument("--home")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--dry-run", action="store_true", help="print the command only")
    u.set_defaults(fn=_cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as e:
        print(f"jaxtx: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"jaxtx: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
