"""Scheduled pipeline runs: a Prefect deployment served by ``jaxtx schedule``.

    prefect server start --host 127.0.0.1                 # in another terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    jaxtx schedule jaxtx.pipelines.demo:create_pipeline -p data_root=/data --cron "0 * * * *"

:func:`serve_schedule` registers :func:`scheduled_pipeline` as a deployment
(default name ``<pipeline name>-schedule``, tag ``jaxtx``) whose parameters
(``target``, ``params``, ``home``) are stored on the deployment, so they show in
the Prefect UI and can be changed per run there. It then serves it in the
foreground until Ctrl-C, which pauses the schedule.

Each scheduled run is a flow run of ``jaxtx-scheduled-pipeline`` that loads the
pipeline exactly as ``jaxtx run`` does and runs it with
:func:`~jaxtx.pipelines.run_pipeline`: the pipeline becomes a subflow named after
the pipeline (its component tasks live there) and one MLflow parent run with a
nested run per component. A failing pipeline fails the flow run with the
pipeline's error message. Runs of one deployment never overlap: a run that is
due while the previous one is still going waits for it.

Prefect refuses schedules on its temporary (ephemeral) server: without
``PREFECT_API_URL`` the working folder's local Prefect server is used (started
if needed, see :mod:`jaxtx.pipelines._server`), the same one pipeline runs use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow

from jaxtx.core.settings import Settings

from ._pipeline import PipelineError
from ._runner import run_pipeline
from ._server import prefect_api
from ._targets import UsageError, build_pipeline

__all__ = [
    "FLOW_NAME",
    "START_SERVER_HELP",
    "check_prefect_server",
    "scheduled_pipeline",
    "serve_schedule",
]

#: The Prefect flow every scheduled jaxtx pipeline run is a run of.
FLOW_NAME = "jaxtx-scheduled-pipeline"

#: How to get a Prefect server that accepts schedules.
START_SERVER_HELP = (
    "start a Prefect server in another terminal:\n"
    "    prefect server start --host 127.0.0.1\n"
    "then point jaxtx at it and run this command again:\n"
    "    export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


@flow(name=FLOW_NAME, persist_result=False, validate_parameters=True)
def scheduled_pipeline(
    target: str,
    params: dict[str, Any] | None = None,
    home: str | None = None,
) -> dict[str, Any]:
    """Load a jaxtx pipeline as ``jaxtx run`` does and run it as a subflow.

    Args:
      target: ``path/to/file.py[:attr]`` or ``package.module:attr``.
      params: ``-p`` values: factory arguments (``rows``) and node parameters
        (``node_id.param``).
      home: the jaxtx working folder for this run, used when the pipeline
        names none (default ``$JAXTX_HOME`` or ``./.jaxtx``).

    Returns:
      A summary: pipeline name, MLflow parent run id, nodes run and cached.

    Raises:
      PipelineRunError, PipelineStopped: the pipeline failed or a component's
        verdict stopped it; the flow run fails with that message.
    """
    from prefect.runtime import flow_run

    pipeline, node_params = build_pipeline(target, dict(params or {}))
    run = run_pipeline(
        pipeline,
        params=node_params,
        run_name=flow_run.name or None,
        settings=pipeline.resolve_settings(home=home),
    )
    return {
        "pipeline": run.pipeline,
        "mlflow_run_id": run.mlflow_run_id,
        "tracking_uri": run.tracking_uri,
        "executed": run.executed_nodes,
        "cached": run.cached_nodes,
    }


def check_prefect_server() -> str:
    """The Prefect API URL, after checking that a server answers there.

    Raises:
      UsageError: ``PREFECT_API_URL`` is not set (Prefect would use its
        temporary server, which cannot schedule flows) or the server does not
        answer; the message says how to start one.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url  # the environment or the active Prefect profile
    if not url:
        raise UsageError(
            "jaxtx schedule needs a running Prefect server (PREFECT_API_URL is not set, and "
            "Prefect cannot schedule flows on its temporary server); " + START_SERVER_HELP
        )
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        raise UsageError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({type(error).__name__}: "
            f"{error}); " + START_SERVER_HELP
        )
    return url


def _absolute_target(target: str) -> str:
    """``file.py[:attr]`` with the file made absolute, so runs load it from any folder."""
    path_part, sep, attr = target.partition(":")
    if path_part.endswith(".py") or os.sep in path_part:
        return str(Path(path_part).resolve()) + sep + attr
    return target


def _describe_schedule(cron: str | None, interval: float | None) -> str:
    if cron:
        return f"cron {cron!r}"
    return f"every {interval:g} s"


def _pause(full_name: str) -> None:
    """Pause a deployment's schedule (after Ctrl-C or SIGTERM), so no runs pile up unserved."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.pause_deployment(client.read_deployment_by_name(full_name).id)
    except Exception as e:  # the server may be gone already
        print(
            f"jaxtx: stopped serving {full_name}, but could not pause its schedule "
            f"({type(e).__name__}: {e}); pause it in the Prefect UI (Deployments)",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        f"jaxtx: stopped serving {full_name}; its schedule is paused until it is served again",
        file=sys.stderr,
        flush=True,
    )


def serve_schedule(
    target: str,
    params: Mapping[str, Any] | None = None,
    *,
    cron: str | None = None,
    interval: float | None = None,
    name: str | None = None,
    home: str | None = None,
) -> str:
    """Register a pipeline as a scheduled Prefect deployment and serve it until Ctrl-C.

    Args:
      target: ``path/to/file.py[:attr]`` or ``package.module:attr`` (as for ``jaxtx run``).
      params: ``-p`` values (factory arguments and ``node_id.param`` overrides);
        JSON-serializable, stored on the deployment.
      cron: a cron expression (``"*/5 * * * *"``); exactly one of ``cron``/``interval``.
      interval: seconds between runs.
      name: deployment name; default ``<pipeline name>-schedule``.
      home: jaxtx working folder for the runs; default ``$JAXTX_HOME`` or
        ``./.jaxtx``, made absolute now.

    Returns:
      The deployment's full name (``jaxtx-scheduled-pipeline/<name>``), once
      serving stops.

    Raises:
      UsageError: no Prefect server, a bad target or parameters, or not exactly
        one of ``cron`` and ``interval``.
    """
    if (cron is None) == (interval is None):
        raise UsageError("give exactly one schedule: --cron 'EXPR' or --interval SECONDS")
    if interval is not None and interval <= 0:
        raise UsageError(f"--interval {interval:g}: give a positive number of seconds")
    target = _absolute_target(target)
    params = dict(params or {})
    home_dir = str(Settings.resolve(home=home).home)
    # Load and check once now, so a bad target fails here rather than at every run.
    pipeline, node_params = build_pipeline(target, dict(params))
    try:
        pipeline.with_params(node_params).validate()
    except PipelineError as e:
        raise UsageError(str(e)) from e
    with prefect_api(Settings.resolve(home=home_dir)):
        return _serve(pipeline, target, params, home_dir, cron, interval, name)


def _serve(
    pipeline: Any,
    target: str,
    params: dict[str, Any],
    home_dir: str,
    cron: str | None,
    interval: float | None,
    name: str | None,
) -> str:
    """Register and serve the deployment (Prefect's API chosen by the caller)."""
    from prefect.deployments.runner import EntrypointType

    api_url = check_prefect_server()
    deployment = name or f"{pipeline.name}-schedule"
    when = _describe_schedule(cron, interval)
    tracking = pipeline.resolve_settings(home=home_dir).tracking_uri
    description = (
        f"jaxtx pipeline {pipeline.name!r} from {target}, {when}. Each run is a subflow "
        f"{pipeline.name!r} with one task per component, tracked in MLflow ({tracking}) as "
        f"a parent run with a nested run per component.\n\n{pipeline.describe()}"
    )
    print(
        f"jaxtx: serving {FLOW_NAME}/{deployment} ({when}) on {api_url}; "
        "Ctrl-C stops serving and pauses the schedule",
        file=sys.stderr,
        flush=True,
    )
    try:
        scheduled_pipeline.serve(
            name=deployment,
            cron=cron,
            interval=interval,
            parameters={"target": target, "params": params, "home": home_dir},
            description=description,
            tags=["jaxtx", pipeline.name],
            limit=1,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    finally:
        _pause(f"{FLOW_NAME}/{deployment}")
    return f"{FLOW_NAME}/{deployment}"
