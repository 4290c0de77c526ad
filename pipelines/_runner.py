"""Run a :class:`Pipeline` as a Prefect flow, tracked in MLflow.

* One pipeline run = one Prefect flow run = one MLflow parent run.
* Each node = one Prefect task run = one nested MLflow run with its
  parameters, metrics, input/output URIs and fingerprints (lineage) and its
  reports as MLflow artifacts.
* Nodes whose inputs are ready run concurrently (Prefect's thread pool task
  runner); retries come from Prefect.
* Caching: the key is the component's code version, its parameters and its
  input *fingerprints* (never data, never paths). A hit is taken only if every
  recorded output still exists and verifies against its manifest; otherwise
  the node runs again. Prefect's own result caching is off: tasks pass small
  artifact references, never data, and nothing is pickled to disk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from jaxtx.components import (
    Artifact,
    ArtifactError,
    ArtifactStore,
    ExecutionResult,
    Node,
    Outcome,
    OutputRef,
    PipelineStopped,
    RunContext,
    load_artifact,
)
from jaxtx.core.progress import Board, node_scope, open_board, progress_mode
from jaxtx.core.settings import Settings

from . import _gc
from ._owner import reap_dead_runs
from ._pipeline import Pipeline
from ._server import prefect_api
from ._summary import format_summary, outcome_of
from ._tracking import Tracker

__all__ = ["NodeRun", "PipelineRun", "PipelineRunError", "run_pipeline"]

_log = logging.getLogger("jaxtx.runner")


class PipelineRunError(RuntimeError):
    """A node failed; the message names the node and the cause."""


@dataclass
class NodeRun:
    """The outcome of one node in one pipeline run."""

    node_id: str
    component: str
    outputs: dict[str, Artifact]
    metrics: dict[str, float]
    duration_s: float
    cached: bool
    mlflow_run_id: str | None
    #: What the node came to (status, one line, tags, headline metrics).
    outcome: Outcome | None = None


@dataclass
class PipelineRun:
    """The outcome of a pipeline run."""

    pipeline: str
    nodes: dict[str, NodeRun]
    mlflow_run_id: str | None
    flow_run_id: str | None
    tracking_uri: str | None
    artifact_root: str
    duration_s: float
    stopped: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: The run summary printed at the end (one line per node, then where to look).
    summary: str = ""

    def __getitem__(self, node_id: str) -> NodeRun:
        return self.nodes[node_id]

    def output(self, node_id: str, name: str | None = None) -> Artifact:
        """An output artifact of a node (its only one when ``name`` is omitted)."""
        outs = self.nodes[node_id].outputs
        if name is None:
            if len(outs) != 1:
                raise KeyError(f"node {node_id!r} has outputs {sorted(outs)}; name one")
            return next(iter(outs.values()))
        return outs[name]

    @property
    def cached_nodes(self) -> list[str]:
        return [k for k, v in self.nodes.items() if v.cached]

    @property
    def executed_nodes(self) -> list[str]:
        return [k for k, v in self.nodes.items() if not v.cached]


class _Progress:
    """One line per node start and finish, per-epoch lines for long steps, and
    the summary: with ``rich`` colours on a terminal, plain lines otherwise (CI logs)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self._lock = threading.Lock()
        self._console = _rich_console() if enabled else None

    def echo(self, line: str, style: str | None = None) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._console is not None:
                self._console.print(line, style=style, highlight=False, markup=False)
            else:
                print(line, file=sys.stderr, flush=True)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable (Prefect ships the flow, which holds this, to Dask workers); a
        # copy prints nothing and has its own lock.
        return {**self.__dict__, "enabled": False, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def start(self, node: Node) -> None:
        label = node.id if node.id == node.component.name else f"{node.id} ({node.component.name})"
        self.echo(f"[jaxtx] ▶ {label} …", "dim")

    def finish(self, node: Node, result: ExecutionResult, outcome: Outcome) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        how = "cached" if result.cached else f"{result.duration_s:.1f} s"
        ok = outcome.status in ("ok", "warn")
        note = f": {outcome.line}" if outcome.status != "ok" else ""
        self.echo(
            f"[jaxtx] {'✓' if ok else '✗'} {node.id} [{done}/{self.total}] ({how}){note}",
            "green" if outcome.status == "ok" else "yellow" if ok else "bold red",
        )

    def fail(self, node: Node, err: BaseException) -> None:
        self.echo(f"[jaxtx] ✗ {node.id}: {err}", "bold red")

    def board(self) -> Board | None:
        """Where long steps (Beam stages, bulk inference) show their progress:
        a bar on this console, plain lines in logs (``JAXTX_PROGRESS``; one line
        per step every ``JAXTX_PROGRESS_INTERVAL`` seconds, default 10)."""
        mode = progress_mode() if self.enabled else "off"
        if mode == "off":
            return None
        if mode == "rich":
            return Board("rich", console=self._console)
        interval = float(os.environ.get("JAXTX_PROGRESS_INTERVAL", "10"))
        return Board("plain", interval=interval)


def _rich_console() -> Any:
    """A ``rich`` console on stderr when it is a terminal (and rich is installed)."""
    if not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(stderr=True)


class _Records:
    """Node id -> (result, MLflow run id), filled by concurrent tasks.

    Deliberately not a Mapping: Prefect walks task parameters that are
    collections (looking for futures) while other tasks would be writing to
    them ("dictionary changed size during iteration").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, tuple[ExecutionResult, str | None, Outcome]] = {}
        self._errors: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:  # picklable, as _Progress
            return {"_data": dict(self._data), "_errors": dict(self._errors)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._data = state["_data"]
        self._errors = state.get("_errors", {})

    def put(self, node_id: str, value: tuple[ExecutionResult, str | None, Outcome]) -> None:
        with self._lock:
            self._data[node_id] = value

    def fail(self, node_id: str, error: str) -> None:
        with self._lock:
            self._errors[node_id] = error

    def get(self, node_id: str) -> tuple[ExecutionResult, str | None, Outcome]:
        with self._lock:
            return self._data[node_id]

    def find(self, node_id: str) -> tuple[ExecutionResult, str | None, Outcome] | None:
        with self._lock:
            return self._data.get(node_id)

    def error(self, node_id: str) -> str | None:
        with self._lock:
            return self._errors.get(node_id)

    def snapshot(self) -> list[tuple[ExecutionResult, str | None, Outcome]]:
        with self._lock:
            return list(self._data.values())


class _Cache:
    """Index ``<store>/.cache/<key>.json`` -> output URIs, verified on every hit."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.dir = store.base_path.rstrip("/") + "/.cache"
        store.fs.create_dir(self.dir, recursive=True)

    def get(self, key: str) -> dict[str, Any] | None:
        path = f"{self.dir}/{key}.json"
        if self.store.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.store.fs.open_input_stream(path) as f:
            entry = json.loads(f.read().decode())
        try:
            outputs = {n: load_artifact(u, verify=True) for n, u in entry["outputs"].items()}
        except ArtifactError as e:
            _log.warning("cache entry %s not trusted, re-running: %s", key[:12], e)
            return None
        return {"outputs": outputs, "metrics": entry.get("metrics", {})}

    def put(self, key: str, result: ExecutionResult, node: Node) -> None:
        entry = {
            "component": node.component.name,
            "node": node.id,
            "outputs": {n: a.uri for n, a in result.outputs.items()},
            "metrics": result.metrics,
            "created": time.time(),
        }
        path = f"{self.dir}/{key}.json"
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.store.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(entry, indent=2).encode())
        self.store.fs.move(tmp, path)


def _node_params_for_log(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {f"param.{k}": v for k, v in node.params.items()}
    out.update(
        {
            "component": node.component.name,
            "node": node.id,
            "retries": node.retries,
            "cache": node.cache,
            "code_version": node.component.code_version[:16],
        }
    )
    return out


def _numeric_properties(outputs: Mapping[str, Artifact]) -> dict[str, float]:
    m: dict[str, float] = {}
    for name, art in outputs.items():
        for k, v in art.properties.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, int | float):
                m[f"{name}.{k}"] = float(v)
    return m


def _execute_node(
    node: Node,
    upstream: Mapping[str, dict[str, Artifact]],
    *,
    sources: Mapping[str, tuple[str, str]],
    settings: Settings,
    store: ArtifactStore,
    cache: _Cache | None,
    tracker: Tracker | None,
    parent_run_id: str | None,
    progress: _Progress,
    pipeline_name: str,
    run_tag: str,
    records: _Records,
) -> dict[str, Artifact]:
    """One node's Prefect task: reuse a cached result or run the component,
    logging it as a nested MLflow run of ``parent_run_id``.

    A node that runs gets its MLflow run first (the component logs metrics to
    it while it runs); a cached node's run is written once its result is known,
    in as few store transactions as can be (a cached re-run is mostly logging).
    """
    inputs: dict[str, Artifact | None] = {}
    for name, src in node.inputs.items():
        if isinstance(src, OutputRef):
            node_id, output = sources[name]
            inputs[name] = upstream[node_id][output]
        else:
            inputs[name] = src
    key = node.component.cache_key(inputs, node.params)
    progress.start(node)
    log = _NodeLog(tracker, node, parent_run_id, run_tag)
    try:
        result = _cached_result(cache, key, node)
        if result is None:
            log.start()
            ctx = RunContext(
                node_id=node.id,
                pipeline=pipeline_name,
                run_tag=run_tag,
                settings=settings,
                mlflow_run_id=log.run_id,
                metric_sinks=_metric_sinks(tracker, log.run_id),
            )
            producer = {
                "component": node.component.name,
                "node": node.id,
                "pipeline_run": run_tag,
                "mlflow_run_id": log.run_id,
                "host": socket.gethostname(),  # where it ran: a worker with a Dask task runner
                "pid": os.getpid(),
            }
            _gc.resume()  # paused for a short command's start-up
            with node_scope(node.id):  # labels its long steps' progress (Beam stages)
                result = node.component.execute(
                    inputs, node.params, store, context=ctx, producer=producer
                )
            if cache is not None:
                cache.put(key, result, node)
        outcome = outcome_of(node.component, result)
        log.result(inputs, result, key, outcome)
        progress.finish(node, result, outcome)
        records.put(node.id, (result, log.run_id, outcome))
        if result.verdict:
            raise PipelineStopped(f"{node.id}: {result.verdict}", result.outputs)
        log.end("FINISHED")
        return result.outputs
    except BaseException as e:
        progress.fail(node, e)
        if not isinstance(e, PipelineStopped):
            records.fail(node.id, f"{type(e).__name__}: {e}")
        log.failed(e)
        raise


class _NodeLog:
    """A node's nested MLflow run (nothing when not tracked)."""

    def __init__(
        self, tracker: Tracker | None, node: Node, parent_run_id: str | None, run_tag: str
    ) -> None:
        self.tracker, self.node, self.parent, self.run_tag = tracker, node, parent_run_id, run_tag
        self.run_id: str | None = None
        self._params_logged = False

    def start(self, tags: Mapping[str, str] | None = None) -> None:
        """Create the run, with ``tags`` besides the node's own; without them
        (a node about to run) its parameters are logged at once, in case it fails."""
        if self.tracker is None or self.run_id is not None:
            return
        self.run_id = self.tracker.start_run(
            self.node.id,
            parent_run_id=self.parent,
            tags={
                "jaxtx.node": self.node.id,
                "jaxtx.component": self.node.component.name,
                "jaxtx.pipeline_run": self.run_tag,
                **(tags or {}),
            },
        )
        if tags is None:
            self.tracker.log_params(self.run_id, _node_params_for_log(self.node))
            self._params_logged = True

    def result(
        self,
        inputs: Mapping[str, Artifact | None],
        result: ExecutionResult,
        key: str,
        outcome: Outcome,
    ) -> None:
        """Log a result: lineage, outcome, metrics and reports."""
        if self.tracker is None:
            return
        tags: dict[str, str] = {
            **_result_tags(inputs, result, key),
            **outcome.tags,
            "jaxtx.status": outcome.status,
            "mlflow.note.content": outcome.line,
        }
        if self.run_id is None:  # cached: the run is created with every tag
            self.start(tags)
            tags = {}
        assert self.run_id is not None
        metrics = {**_numeric_properties(result.outputs), **result.metrics}
        metrics["duration_s"] = result.duration_s
        metrics["cached"] = 1.0 if result.cached else 0.0
        params = {} if self._params_logged else _node_params_for_log(self.node)
        self.tracker.log_batch(self.run_id, params=params, metrics=metrics, tags=tags)
        self._params_logged = True
        _log_lineage(self.tracker, self.run_id, inputs, result)

    def end(self, status: str) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.end_run(self.run_id, status)

    def failed(self, e: BaseException) -> None:
        if self.tracker is None:
            return
        self.start()  # a failure before the run existed (reading the cache)
        assert self.run_id is not None
        self.tracker.set_tags(self.run_id, {"jaxtx.error": f"{type(e).__name__}: {e}"})
        self.end("FAILED")


def _cached_result(cache: _Cache | None, key: str, node: Node) -> ExecutionResult | None:
    """A verified cached result for ``key``, with the verdict given again; else ``None``."""
    hit = cache.get(key) if (cache is not None and node.cache) else None
    if hit is None:
        return None
    verdict = node.component.verdict
    return ExecutionResult(
        outputs=hit["outputs"],
        metrics=hit["metrics"],
        cached=True,
        verdict=verdict(hit["outputs"]) if verdict else None,
    )


def _metric_sinks(tracker: Tracker | None, run_id: str | None) -> list[Any]:
    """Where ``RunContext.log_metrics`` sends metrics besides its own log: the
    node's MLflow run. (The console shows a Trainer's epochs through the
    training library's own progress lines, once.)"""
    sinks: list[Any] = []
    if tracker is not None and run_id is not None:
        sinks.append(lambda m, step: tracker.log_metrics(run_id, m, step=step))
    return sinks


def _result_tags(
    inputs: Mapping[str, Artifact | None], result: ExecutionResult, key: str
) -> dict[str, str]:
    """Lineage tags: the cache key and every input's and output's URI, fingerprint, type."""
    tags = {"jaxtx.cached": str(result.cached).lower(), "jaxtx.cache_key": key}
    arts = [("input", n, a) for n, a in inputs.items() if a is not None]
    arts += [("output", n, a) for n, a in result.outputs.items()]
    for side, name, art in arts:
        tags[f"jaxtx.{side}.{name}.uri"] = art.uri
        tags[f"jaxtx.{side}.{name}.fingerprint"] = art.fingerprint
        tags[f"jaxtx.{side}.{name}.type"] = art.TYPE_NAME
    return tags


def _log_lineage(
    tracker: Tracker, run_id: str, inputs: Mapping[str, Artifact | None], result: ExecutionResult
) -> None:
    """Input examples as MLflow datasets; outputs' manifests and reports as artifacts."""
    for name, art in inputs.items():
        if art is not None and art.TYPE_NAME == "Examples":
            tracker.log_dataset(
                run_id,
                name=f"{name}",
                digest=art.fingerprint,
                source=art.uri,
                context=name,
                profile=json.dumps(
                    {k: art.properties.get(k) for k in ("split_counts", "span", "version")}
                ),
            )
    for name, art in result.outputs.items():
        try:
            local = art.path
        except ArtifactError:
            continue
        reports = local / "reports"
        if reports.is_dir():
            tracker.log_artifacts(run_id, reports, f"reports/{name}")
        tracker.log_artifact(run_id, local / "artifact.json", f"outputs/{name}")


def run_pipeline(
    pipeline: Pipeline,
    *,
    cache: bool = True,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    track: bool = True,
    max_workers: int | None = None,
    progress: bool = True,
    settings: Settings | None = None,
    resume: str | None = None,
) -> PipelineRun:
    """Run a pipeline as one Prefect flow run.

    Args:
      pipeline: the pipeline (never changed: overrides apply to a copy).
      cache: ``False`` runs every node even when a valid cached result exists
        (per node: ``p.with_node(p[id].with_options(cache=False))``).
      params: overrides ``{"node_id.param": value}`` for this run only.
      run_name: the Prefect flow run and MLflow parent run name.
      track: log to MLflow (the settings' tracking URI).
      max_workers: threads for concurrent nodes (default: 4).
      progress: print one line per node start/finish to stderr.
      settings: home, tracking URI and artifact root; default
        ``pipeline.settings`` (its fields, then the environment, then defaults).
      resume: the run tag (MLflow tag ``jaxtx.pipeline_run``) of an
        interrupted run whose checkpoints this run continues from. Without it
        a run never resumes another run's checkpoints (retries of a node within
        this run do).

    Returns:
      A :class:`PipelineRun` with every node's outputs, metrics and run ids.

    Raises:
      PipelineStopped: a component's verdict stopped the run (e.g. failing
        anomalies); its message names the node and the report.
      PipelineRunError: a node failed; the message names it and the cause.
    """
    if params:
        pipeline = pipeline.with_params(params)
    pipeline.validate()
    plan = _plan(pipeline, settings or pipeline.settings, cache=cache, track=track, resume=resume)
    plan.overrides = dict(params or {})
    prog = _Progress(len(plan.order), progress)
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        with prefect_api(plan.settings) as prefect_ui, open_board(prog.board()):
            plan.state["prefect_ui"] = prefect_ui
            _flow(plan, run_name, max_workers, prog)()
    except BaseException as e:
        error = e
    duration = time.perf_counter() - start
    plan.summary = _summary(plan, duration)
    prog.echo(plan.summary)
    _finish_parent_run(plan, duration, error)
    if error is not None:
        if isinstance(error, PipelineStopped | KeyboardInterrupt):
            raise error
        raise PipelineRunError(
            f"pipeline {pipeline.name!r} failed: {type(error).__name__}: {error}"
        ) from error
    return _collect(plan, duration)


@dataclass
class _Plan:
    """Everything one run of a pipeline needs, made before the flow starts."""

    pipeline: Pipeline
    order: list[Node]
    settings: Settings
    store: ArtifactStore
    cache: _Cache | None
    tracker: Tracker | None
    run_tag: str
    records: _Records = field(default_factory=_Records)
    #: Filled by the flow: ``flow_run_id`` and the MLflow ``parent`` run id.
    state: dict[str, Any] = field(default_factory=dict)
    #: The ``params`` overrides of this run (logged on the parent run).
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


def _plan(
    pipeline: Pipeline, settings: Settings, *, cache: bool, track: bool, resume: str | None
) -> _Plan:
    """Resolve settings into a store, a cache index and a tracker; close what
    killed runs left behind (their MLflow runs, their staging folders)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    order = pipeline.topological_order()
    for node in order:  # hash code here, once, not in concurrent component threads
        _ = node.component.code_version
    store = ArtifactStore(settings.artifact_root)
    tracker = None
    if track:
        location = settings.mlflow_artifact_location
        if location is not None:
            location = (settings.home / "mlartifacts" / pipeline.name).resolve().as_uri()
        tracker = Tracker(settings.tracking_uri, pipeline.name, location)
        reap_dead_runs(tracker.client)
    if store.is_local:
        store.clean_staging()
    return _Plan(
        pipeline=pipeline,
        order=order,
        settings=settings,
        store=store,
        cache=_Cache(store) if cache else None,
        tracker=tracker,
        run_tag=resume or uuid.uuid4().hex[:12],
    )


def _start_parent_run(plan: _Plan, run_name: str | None) -> str | None:
    """The MLflow parent run of this pipeline run (``None`` when not tracked)."""
    from prefect.runtime import flow_run

    p = plan.pipeline
    plan.state["flow_run_id"] = str(flow_run.id) if flow_run.id else None
    if plan.tracker is None:
        return None
    number = plan.tracker.next_run_number(p.name)
    parent = plan.tracker.start_run(
        run_name or f"{p.name} #{number}",
        tags={
            "jaxtx.pipeline": p.name,
            "jaxtx.pipeline_run": plan.run_tag,
            "jaxtx.run_number": str(number),
            "prefect.flow_run_id": plan.state["flow_run_id"] or "",
            "mlflow.note.content": f"Running {p.name} ({len(plan.order)} components)",
        },
    )
    plan.tracker.log_params(
        parent,
        {
            "pipeline": p.name,
            "nodes": len(plan.order),
            "cache": plan.cache is not None,
            "artifact_root": plan.store.root,
            **{f"override.{k}": v for k, v in plan.overrides.items()},
        },
    )
    return parent


def _submit_nodes(plan: _Plan, parent: str | None, progress: _Progress) -> dict[str, Any]:
    """Submit one Prefect task per node, each waiting on its upstream futures."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    futures: dict[str, Any] = {}
    remote = plan.settings.dask_address is not None
    for node in plan.order:
        t = task(
            _execute_on_worker if remote else _execute_node,
            name=node.id,
            task_run_name=node.id,
            retries=node.retries,
            retry_delay_seconds=node.retry_delay_seconds,
            cache_policy=NO_CACHE,
            persist_result=False,
        )
        sources = {
            name: (plan.pipeline.source(ref).id, ref.name)
            for name, ref in node.inputs.items()
            if isinstance(ref, OutputRef)
        }
        ups = {n.id: futures[n.id] for n in plan.pipeline.upstream(node)}
        futures[node.id] = t.submit(
            node,
            ups,
            sources=sources,
            settings=plan.settings,
            store=plan.store,
            cache=plan.cache,
            tracker=plan.tracker,
            parent_run_id=parent,
            pipeline_name=plan.pipeline.name,
            run_tag=plan.run_tag,
            # The progress printer and the records stay in this process (locks).
            **({} if remote else {"progress": progress, "records": plan.records}),
        )
    return futures


def _gather(plan: _Plan, futures: Mapping[str, Any]) -> dict[str, dict[str, Artifact]]:
    """Wait for every node; raise the first failed node's own exception."""
    results: dict[str, dict[str, Artifact]] = {}
    first_error: BaseException | None = None
    for node in plan.order:
        fut = futures[node.id]
        fut.wait()
        st = fut.state
        if st.is_completed():
            results[node.id] = _unwrap_remote(fut.result(), plan.records, node.id)
        elif first_error is None:  # failed, crashed, or never ran (e.g. not serializable)
            try:
                fut.result()
                first_error = RuntimeError(f"node {node.id!r} did not complete: {st!r}")
            except BaseException as e:  # the node's own exception
                first_error = e
    if first_error is not None:
        raise first_error
    return results


def _flow(plan: _Plan, run_name: str | None, max_workers: int | None, progress: _Progress) -> Any:
    """The Prefect flow of this run (a callable)."""
    from prefect import flow

    def body() -> dict[str, dict[str, Artifact]]:
        parent = _start_parent_run(plan, run_name)
        plan.state["parent"] = parent
        return _gather(plan, _submit_nodes(plan, parent, progress))

    prefect_flow = flow(
        body,
        name=plan.pipeline.name,
        flow_run_name=run_name,
        task_runner=_task_runner(plan.settings, max_workers),
        persist_result=False,
        validate_parameters=False,
    )

    def with_settings() -> Any:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        api = plan.settings.prefect_api_url
        # No flow-run heartbeats unless asked for (PREFECT_FLOWS_HEARTBEAT_FREQUENCY):
        # Prefect joins the heartbeat thread at flow end, which sleeps in 1 s slices,
        # so every run waited up to 1 s for nothing.
        with temporary_settings(
            updates={PREFECT_API_URL: api} if api is not None else None,
            set_defaults={"flows.heartbeat_frequency": None},
        ):
            return prefect_flow()

    return with_settings


def _task_runner(settings: Settings, max_workers: int | None) -> Any:
    """The settings' task runner: Prefect's thread pool, or the workers of a Dask
    scheduler (``task_runner = "dask://host:8786"``, through ``prefect-dask``)."""
    address = settings.dask_address
    if address is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_workers or 4)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:
        raise ImportError(
            f"task_runner {settings.task_runner!r} needs prefect-dask: "
            "pip install 'jaxtx[dask]' (or set task_runner = \"threads\")."
        ) from e
    return DaskTaskRunner(address=address)


# What a node run on a Dask worker sends back: ``{_REMOTE: (outputs, record)}``. A
# plain dict, not a class: Prefect hands Dask a wrapper of the task function, which
# Dask then pickles by value, classes of this module included (isinstance fails).
_REMOTE = "jaxtx.remote"


def _execute_on_worker(node: Node, upstream: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """:func:`_execute_node` in a worker process: the driver's progress printer and
    records are not shared with it, so the record travels back with the outputs."""
    local = _Records()
    ups = {k: v[_REMOTE][0] if _REMOTE in v else v for k, v in upstream.items()}
    outputs = _execute_node(node, ups, progress=_Progress(0, False), records=local, **kwargs)
    return {_REMOTE: (outputs, local.get(node.id))}


def _unwrap_remote(value: Any, records: _Records, node_id: str) -> dict[str, Artifact]:
    """A node's outputs; a worker's record is filed in the driver's records."""
    if isinstance(value, dict) and _REMOTE in value:
        outputs, record = value[_REMOTE]
        records.put(node_id, record)
        return outputs
    return value


def _finish_parent_run(plan: _Plan, duration: float, error: BaseException | None) -> None:
    """Log the run's totals to the parent run and close it."""
    parent = plan.state.get("parent")
    if plan.tracker is None or parent is None:
        return
    done = plan.records.snapshot()
    n_cached = sum(1 for r, _, _ in done if r.cached)
    tags: dict[str, str] = {"mlflow.note.content": plan.summary}
    headline: dict[str, float] = {}
    for _, _, outcome in done:
        tags.update(outcome.tags)
        headline.update(outcome.headline)
    if error is not None:
        tags["jaxtx.error"] = f"{type(error).__name__}: {error}"[:5000]
    plan.tracker.log_batch(
        parent,
        tags=tags,
        metrics={
            **headline,
            "duration_s": duration,
            "nodes_cached": n_cached,
            "nodes_run": len(done) - n_cached,
        },
    )
    plan.tracker.end_run(parent, "FINISHED" if error is None else "FAILED")


def _summary(plan: _Plan, duration: float) -> str:
    """The run summary: one line per node, then the UIs and reports to look at."""
    rows = []
    reports: list[str] = []
    for node in plan.order:
        rec = plan.records.find(node.id)
        rows.append(
            (
                node.id,
                bool(rec and rec[0].cached),
                rec[2] if rec else None,
                plan.records.error(node.id),
            )
        )
        for art in rec[0].outputs.values() if rec else ():
            reports += _html_reports(art)
    where = []
    parent = plan.state.get("parent")
    if plan.tracker is not None and parent is not None:
        where.append(f"MLflow: {plan.tracker.ui_url(parent)}")
    prefect_ui = plan.state.get("prefect_ui")
    if prefect_ui and plan.state.get("flow_run_id"):
        where.append(f"Prefect: {prefect_ui}/runs/flow-run/{plan.state['flow_run_id']}")
    where += [f"report: {r}" for r in reports]
    return format_summary(plan.pipeline.name, rows, duration_s=duration, where=where)


def _html_reports(art: Artifact) -> list[str]:
    """The HTML reports of a local artifact."""
    try:
        reports = art.path / "reports"
    except ArtifactError:
        return []
    return sorted(str(p) for p in reports.glob("*.html")) if reports.is_dir() else []


def _collect(plan: _Plan, duration: float) -> PipelineRun:
    """The :class:`PipelineRun` of a finished run."""
    nodes = {}
    for node in plan.order:
        res, node_run_id, outcome = plan.records.get(node.id)
        nodes[node.id] = NodeRun(
            node_id=node.id,
            component=node.component.name,
            outputs=res.outputs,
            metrics=res.metrics,
            duration_s=res.duration_s,
            cached=res.cached,
            mlflow_run_id=node_run_id,
            outcome=outcome,
        )
    return PipelineRun(
        pipeline=plan.pipeline.name,
        nodes=nodes,
        mlflow_run_id=plan.state.get("parent"),
        flow_run_id=plan.state.get("flow_run_id"),
        tracking_uri=plan.tracker.tracking_uri if plan.tracker else None,
        artifact_root=plan.store.root,
        duration_s=duration,
        summary=plan.summary,
    )
