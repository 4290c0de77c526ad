"""The ``@component`` decorator: a typed function becomes a pipeline component.

A component is a plain function whose parameters are of three kinds, told
apart by their annotations:

* **inputs**: annotated with an artifact type (``examples: Examples``);
  optional when annotated ``Examples | None = None``;
* **outputs**: annotated ``Output[Statistics]``; the function writes files
  below ``statistics.path`` and may set ``statistics.properties``;
* **parameters**: anything else, JSON-serializable, preferably keyword-only
  with a default.

The function may return ``None`` or a mapping of metric names to numbers.

Called on artifacts, a component runs at once and returns its output artifact
(or a named tuple of them when it has several)::

    stats = StatisticsGen(examples=examples)            # eager

Called inside ``with Pipeline(...)`` (or on a node's outputs) it returns a
:class:`Node` and runs later, when the pipeline runs::

    with Pipeline("demo") as p:
        gen = ExampleGen(input_pattern="data/*.csv")
        stats = StatisticsGen(examples=gen.outputs.examples)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import shutil
import sys
import threading
import time
import types
import typing
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtx.core.settings import Settings

from ._artifacts import Artifact, ArtifactStore, _OutputAlias

__all__ = [
    "Component",
    "ComponentError",
    "ExecutionResult",
    "begin_building",
    "end_building",
    "Node",
    "Outcome",
    "OutputRef",
    "PipelineStopped",
    "RunContext",
    "WiringError",
    "component",
]


class ComponentError(Exception):
    """A component was defined or called wrongly."""


class WiringError(ComponentError, TypeError):
    """An input was wired to an artifact of the wrong type, or is missing."""


class PipelineStopped(Exception):
    """A component's verdict stopped the pipeline (e.g. failing anomalies).

    The component's outputs were written and can be inspected.
    """

    def __init__(self, message: str, outputs: Mapping[str, Artifact] | None = None) -> None:
        super().__init__(message)
        self.outputs = dict(outputs or {})


class RunContext:
    """What a component may ask of the run it is part of.

    Annotate a parameter ``ctx: RunContext`` to receive it. Eagerly (outside a
    pipeline) metrics are kept in :attr:`metrics_log` only; inside a pipeline
    the runner sends them to the component's MLflow run as well.

    Args:
      node_id: the node's id (the component's name when run eagerly).
      pipeline: the pipeline's name, ``None`` when run eagerly.
      run_tag: the pipeline run's tag (MLflow tag ``jaxtx.pipeline_run``),
        ``None`` when run eagerly.
      settings: home, tracking URI and artifact root of the run (default:
        :meth:`Settings.resolve` with nothing given).
      mlflow_run_id: the node's MLflow run, when the run is tracked.
      metric_sinks: called with ``(metrics, step)`` for every
        :meth:`log_metrics` call (the runner's MLflow logging).
      work_dir: see :attr:`work_dir`.
    """

    def __init__(
        self,
        *,
        node_id: str,
        pipeline: str | None = None,
        run_tag: str | None = None,
        settings: Settings | None = None,
        mlflow_run_id: str | None = None,
        metric_sinks: Sequence[Callable[[Mapping[str, float], int], None]] = (),
        work_dir: Path | None = None,
    ) -> None:
        self.node_id = node_id
        self.pipeline = pipeline
        self.run_tag = run_tag
        self.settings = settings if settings is not None else Settings.resolve()
        self.metrics_log: list[tuple[int, dict[str, float]]] = []
        self.mlflow_run_id = mlflow_run_id
        #: A folder for checkpoints that survives a crash: the same for a retry
        #: of the same execution (same pipeline run, or ``resume=`` that run),
        #: never shared with a later independent execution; removed when the
        #: component succeeds. ``None`` if unavailable (remote store).
        self.work_dir = work_dir
        self._sinks = tuple(metric_sinks)

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI when this run is tracked (has an MLflow run), else ``None``."""
        return self.settings.tracking_uri if self.mlflow_run_id else None

    def title(self, text: str) -> str:
        """A report title: ``"<pipeline> · <text>"`` in a pipeline, ``text`` eagerly."""
        return f"{self.pipeline} · {text}" if self.pipeline else text

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at a step (e.g. per epoch); MLflow charts them over steps."""
        clean = {str(k): float(v) for k, v in metrics.items()}
        self.metrics_log.append((step, clean))
        for sink in self._sinks:
            sink(clean, step)


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: type[Artifact]
    optional: bool


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: type[Artifact]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    annotation: Any
    default: Any
    required: bool


# Set while a ``with Pipeline(...)`` block is open.
_BUILDING: contextvars.ContextVar[Any] = contextvars.ContextVar("jaxtx_building", default=None)


def begin_building(pipeline: Any) -> contextvars.Token[Any]:
    """Make component calls in this context add nodes to ``pipeline`` (what
    ``with Pipeline(...)`` does); returns a token for :func:`end_building`.

    ``pipeline`` needs ``add(node) -> node``, ``has_key(key) -> bool`` and
    ``put(node) -> node`` (see :class:`jaxtx.pipelines.Pipeline`).
    """
    return _BUILDING.set(pipeline)


def end_building(token: contextvars.Token[Any]) -> None:
    """Close the block opened by :func:`begin_building`."""
    _BUILDING.reset(token)


@dataclass(frozen=True)
class OutputRef:
    """One output of a node, to wire into another node's input."""

    node: Node
    name: str
    type: type[Artifact]

    def __repr__(self) -> str:
        return f"<{self.node.id}.outputs.{self.name}: {self.type.TYPE_NAME}>"


class _Outputs:
    def __init__(self, refs: Mapping[str, OutputRef]) -> None:
        self._refs = dict(refs)

    def __getattr__(self, name: str) -> OutputRef:
        if name.startswith("__") or name == "_refs":  # unpickling (nodes on Dask workers)
            raise AttributeError(name)
        try:
            return self._refs[name]
        except KeyError:
            raise AttributeError(f"no output {name!r}; outputs are {sorted(self._refs)}") from None

    def __getitem__(self, name: str) -> OutputRef:
        return self.__getattr__(name)

    def __iter__(self) -> Any:
        return iter(self._refs.values())

    def __dir__(self) -> list[str]:
        return sorted(self._refs)


class Node:
    """A component call placed in a pipeline, to be run later.

    A node is a value: :meth:`with_id`, :meth:`with_options`, :meth:`connect`
    and :meth:`after` return a changed copy and leave the node alone. A copy
    keeps the node's :attr:`key`, so nodes wired to the original read from the
    copy once it takes the original's place in a pipeline. Inside an open
    ``with Pipeline(...)`` block the copy takes that place at once; for a
    built pipeline use :meth:`Pipeline.with_node` (which returns a new pipeline).
    """

    def __init__(
        self,
        component: Component,
        inputs: Mapping[str, OutputRef | Artifact | None],
        params: Mapping[str, Any],
        *,
        id: str | None = None,
        retries: int | None = None,
        retry_delay_seconds: float | None = None,
        cache: bool | None = None,
        after: tuple[Node, ...] = (),
        key: str | None = None,
    ) -> None:
        self.component = component
        self.inputs: dict[str, OutputRef | Artifact | None] = dict(inputs)
        self.params: dict[str, Any] = dict(params)
        self.id = id or component.name
        self.retries = component.retries if retries is None else retries
        self.retry_delay_seconds = (
            component.retry_delay_seconds if retry_delay_seconds is None else retry_delay_seconds
        )
        self.cache = component.cache if cache is None else cache
        #: Identity of the logical node: kept by copies, so wiring follows them.
        self.key = key or uuid.uuid4().hex
        self.run_after: tuple[Node, ...] = tuple(after)
        self.outputs = _Outputs(
            {o.name: OutputRef(self, o.name, o.type) for o in component.outputs}
        )

    def __repr__(self) -> str:
        return f"<Node {self.id} ({self.component.name})>"

    def replace(self, **changes: Any) -> Node:
        """A copy with some of ``id, inputs, params, retries, retry_delay_seconds,
        cache, after`` changed; it keeps :attr:`key`. Inside an open
        ``with Pipeline`` block the copy takes this node's place there."""
        fields = {
            "inputs": self.inputs,
            "params": self.params,
            "id": self.id,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "cache": self.cache,
            "after": self.run_after,
        }
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise ComponentError(f"{self.id}: cannot change {unknown[0]!r} of a node")
        fields.update(changes)
        new = Node(self.component, key=self.key, **fields)
        return _place(new)

    def copy(self, **changes: Any) -> Node:
        """Like :meth:`replace`, but the copy never takes a place in an open
        ``with Pipeline`` block (what a pipeline uses to derive its own nodes)."""
        builder = _BUILDING.set(None)
        try:
            return self.replace(**changes)
        finally:
            _BUILDING.reset(builder)

    def after(self, *nodes: Node) -> Node:
        """A copy that runs only after ``nodes`` succeeded, without reading their
        outputs (e.g. train only once the data passed validation)."""
        for n in nodes:
            if not isinstance(n, Node):
                raise ComponentError(f"{self.id}.after() takes nodes, got {type(n).__name__}")
        keys = {n.key for n in self.run_after}
        extra = tuple(n for n in nodes if n.key not in keys)
        builder = _BUILDING.get()
        if builder is not None:
            for n in extra:
                builder.add(n)
        return self.replace(after=self.run_after + extra)

    def with_id(self, id: str) -> Node:
        """A copy with another id (needed when one component appears twice)."""
        return self.replace(id=id)

    def with_options(
        self,
        *,
        retries: int | None = None,
        retry_delay_seconds: float | None = None,
        cache: bool | None = None,
    ) -> Node:
        """A copy with per-node retries and caching."""
        changes: dict[str, Any] = {}
        if retries is not None:
            changes["retries"] = retries
        if retry_delay_seconds is not None:
            changes["retry_delay_seconds"] = retry_delay_seconds
        if cache is not None:
            changes["cache"] = cache
        return self.replace(**changes)

    def connect(self, input_name: str, source: OutputRef | Node | Artifact) -> Node:
        """A copy with one input wired (or re-wired)."""
        spec = self.component._input(input_name)
        value = self.component._check_input(spec, source, self.id)
        return self.replace(inputs={**self.inputs, input_name: value})

    @property
    def output(self) -> OutputRef:
        """The only output of a single-output component."""
        refs = list(self.outputs)
        if len(refs) != 1:
            raise AttributeError(
                f"{self.id} has {len(refs)} outputs {[r.name for r in refs]}; "
                "pick one with node.outputs.<name>"
            )
        return refs[0]

    def upstream(self) -> list[Node]:
        """Nodes this one reads from or must run after, as they were wired
        (a pipeline resolves them by :attr:`key` to its current copies)."""
        ups = [r.node for r in self.inputs.values() if isinstance(r, OutputRef)]
        keys = {n.key for n in ups}
        return ups + [n for n in self.run_after if n.key not in keys]


def _place(node: Node) -> Node:
    """Inside an open ``with Pipeline`` block, let ``node`` take the place of its
    earlier copy (same key) there; otherwise return it as it is."""
    builder = _BUILDING.get()
    if builder is not None and builder.has_key(node.key):
        return builder.put(node)
    return node


def _work_dir(store: ArtifactStore, ctx: RunContext, key: str) -> Path:
    """``<root>/.work/<execution>/<component>-<key>``: the checkpoint folder of one
    execution. ``<execution>`` is the pipeline run's tag (a retry of the same run,
    or a run started with ``resume=<tag>``, finds it again) or, eagerly, a fresh
    id: a later independent execution never resumes another one's checkpoints."""
    execution = ctx.run_tag or f"eager-{uuid.uuid4().hex[:12]}"
    path = Path(store.root) / ".work" / execution / f"{ctx.node_id}-{key[:20]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Outcome:
    """What a node came to, for the run summary and MLflow tags.

    Attributes:
      status: ``ok``, ``warn``, ``stopped``, ``not blessed`` or ``not pushed``.
      line: one line for the console (rows, anomalies, metrics, the reason).
      tags: MLflow tags for the node's run and the parent run
        (e.g. ``jaxtx.blessed``, ``jaxtx.pushed_version``, ``jaxtx.stop_reason``).
      headline: headline metrics for the parent run (e.g. ``auc``).
    """

    status: str
    line: str
    tags: dict[str, str] = field(default_factory=dict)
    headline: dict[str, float] = field(default_factory=dict)


#: ``(committed outputs, returned metrics) -> Outcome`` (``None``: the default one).
SummaryFn = Callable[[Mapping[str, Artifact], Mapping[str, float]], "Outcome | None"]


@dataclass
class ExecutionResult:
    """What one execution of a component produced."""

    outputs: dict[str, Artifact]
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    cached: bool = False
    verdict: str | None = None


class Component:
    """A typed function usable eagerly and as a pipeline node. Made by :func:`component`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_delay_seconds: float = 1.0,
        cache: bool = True,
        version: str | None = None,
        verdict: Callable[[Mapping[str, Artifact]], str | None] | None = None,
        external_fingerprint: Callable[[Mapping[str, Any]], str] | None = None,
        library: Sequence[str] = (),
        summary: SummaryFn | None = None,
    ) -> None:
        self.fn = fn
        self.summary = summary
        self.library = tuple(library)
        self.external_fingerprint = external_fingerprint
        self.name = name or fn.__name__
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.cache = cache
        self.version = version
        self.verdict = verdict
        self.inputs, self.outputs, self.params, self.context_param = _parse_signature(fn, self.name)
        functools.update_wrapper(self, fn)
        self.__signature__ = _public_signature(fn, {o.name for o in self.outputs})
        self._code_version: str | None = None

    def __repr__(self) -> str:
        ins = ", ".join(f"{i.name}: {i.type.TYPE_NAME}" for i in self.inputs)
        outs = ", ".join(f"{o.name}: {o.type.TYPE_NAME}" for o in self.outputs)
        return f"<component {self.name}({ins}) -> ({outs})>"

    # -- calling ---------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise ComponentError(
                f"{self.name}: pass inputs and parameters by keyword, e.g. "
                f"{self.name}({', '.join(f'{i.name}=...' for i in self.inputs[:2])})"
            )
        store = kwargs.pop("store", None)
        builder = _BUILDING.get()
        symbolic = any(isinstance(v, OutputRef | Node) for v in kwargs.values())
        if builder is not None or symbolic:
            node_id = kwargs.pop("id", None)
            node = self.node(id=node_id, **kwargs)
            return builder.add(node) if builder is not None else node
        return self.run(store=store, **kwargs)

    def node(self, *, id: str | None = None, **kwargs: Any) -> Node:
        """Make a pipeline node (what a call inside ``with Pipeline`` does)."""
        inputs, params = self._bind(kwargs, node_id=id or self.name, symbolic=True)
        return Node(self, inputs, params, id=id)

    def run(self, *, store: ArtifactStore | str | None = None, **kwargs: Any) -> Any:
        """Run eagerly on artifacts; returns the output artifact(s).

        Args:
          store: where outputs go (default: the embedded local store).
          **kwargs: input artifacts and parameters.
        """
        inputs, params = self._bind(kwargs, node_id=self.name, symbolic=False)
        st = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
        result = self.execute(inputs, params, st, producer={"component": self.name})
        if result.verdict:
            raise PipelineStopped(result.verdict, result.outputs)
        return self._pack(result.outputs)

    def _pack(self, outputs: Mapping[str, Artifact]) -> Any:
        if len(self.outputs) == 1:
            return outputs[self.outputs[0].name]
        if not self.outputs:
            return None
        tup = namedtuple(f"{self.name}Outputs", [o.name for o in self.outputs])  # type: ignore[misc]
        return tup(**{o.name: outputs[o.name] for o in self.outputs})

    def execute(
        self,
        inputs: Mapping[str, Artifact | None],
        params: Mapping[str, Any],
        store: ArtifactStore,
        *,
        producer: Mapping[str, Any],
        context: RunContext | None = None,
    ) -> ExecutionResult:
        """Run the function once: stage outputs, call, commit atomically."""
        staged = {o.name: store.new_output(o.type, self.name, o.name) for o in self.outputs}
        extra: dict[str, Any] = {}
        work_dir: Path | None = None
        if self.context_param:
            ctx = context or RunContext(node_id=self.name)
            if ctx.work_dir is None and store.is_local:
                ctx.work_dir = _work_dir(store, ctx, self.cache_key(inputs, params))
                work_dir = ctx.work_dir
            extra[self.context_param] = ctx
        params = self._with_beam_defaults(params, context)
        start = time.perf_counter()
        try:
            returned = self.fn(**inputs, **staged, **params, **extra)
            metrics = _metrics(returned, self.name)
            committed = {
                name: store.commit(out, producer={**producer, "output": name})
                for name, out in staged.items()
            }
        except BaseException:
            for out in staged.values():
                store.discard(out)
            raise
        duration = time.perf_counter() - start
        if work_dir is not None:  # done: nothing left to resume
            shutil.rmtree(work_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                work_dir.parent.rmdir()  # the execution's folder, once empty
        return ExecutionResult(
            outputs=committed,
            metrics=metrics,
            duration_s=duration,
            verdict=self.verdict(committed) if self.verdict else None,
        )

    def _with_beam_defaults(
        self, params: Mapping[str, Any], context: RunContext | None
    ) -> Mapping[str, Any]:
        """``beam_options`` left unset takes the settings' (``jaxtx.toml``'s ``[beam]``).

        The runner is not part of the cache key: it does not change the outputs.
        """
        if "beam_options" not in params or params["beam_options"] is not None:
            return params
        settings = context.settings if context is not None else Settings.resolve()
        if not settings.beam_options:
            return params
        return {**params, "beam_options": list(settings.beam_options)}

    # -- binding and checking --------------------------------------------------------------
    def _bind(
        self, kwargs: Mapping[str, Any], *, node_id: str, symbolic: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        known = {i.name for i in self.inputs} | {p.name for p in self.params}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            import difflib

            hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            raise ComponentError(
                f"{self.name}: unknown argument {unknown[0]!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" It takes inputs {[i.name for i in self.inputs]} and parameters "
                f"{[p.name for p in self.params]}."
            )
        inputs: dict[str, Any] = {}
        for spec in self.inputs:
            value = kwargs.get(spec.name)
            if value is None:
                if not spec.optional and not symbolic:
                    raise WiringError(
                        f"{self.name}: missing input {spec.name!r} "
                        f"(expects a {spec.type.TYPE_NAME} artifact)"
                    )
                inputs[spec.name] = None
                continue
            inputs[spec.name] = self._check_input(spec, value, node_id)
        params: dict[str, Any] = {}
        for p in self.params:
            if p.name in kwargs:
                params[p.name] = kwargs[p.name]
            elif p.required:
                raise ComponentError(f"{self.name}: missing parameter {p.name!r}")
            else:
                params[p.name] = p.default
        return inputs, params

    def _input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ComponentError(
            f"{self.name} has no input {name!r}; inputs are {[i.name for i in self.inputs]}"
        )

    def _check_input(self, spec: InputSpec, value: Any, node_id: str) -> Any:
        if isinstance(value, Node):
            outs = [o for o in value.outputs if issubclass(o.type, spec.type)]
            if len(list(value.outputs)) == 1:
                value = value.output
            elif len(outs) == 1:
                value = outs[0]
            else:
                raise WiringError(
                    f"{self.name} (node {node_id!r}), input {spec.name!r}: node {value.id!r} has "
                    f"outputs {[o.name for o in value.outputs]}; pass one as "
                    f"{value.id}.outputs.<name>"
                )
        if isinstance(value, OutputRef):
            found = value.type
            source = f"output {value.name!r} of node {value.node.id!r}"
        elif isinstance(value, Artifact):
            found = type(value)
            source = f"artifact {value.uri}"
        else:
            raise WiringError(
                f"{self.name} (node {node_id!r}), input {spec.name!r}: expects a "
                f"{spec.type.TYPE_NAME} artifact or a node output, got {type(value).__name__}"
            )
        if not issubclass(found, spec.type):
            raise WiringError(
                f"{self.name} (node {node_id!r}), input {spec.name!r}: expects "
                f"{spec.type.TYPE_NAME}, but {source} is {found.TYPE_NAME}"
            )
        return value

    # -- caching ---------------------------------------------------------------------------
    @property
    def code_version(self) -> str:
        """A hash of what the component's result depends on besides its inputs
        and parameters: see :meth:`code_inputs` and :func:`component`."""
        with _CODE_LOCK:
            if self._code_version is None:
                self._code_version = self._hash_code()
        return self._code_version

    def _hash_code(self) -> str:
        import jaxtx

        h = hashlib.sha256()
        h.update(f"jaxtx {jaxtx.__version__}\0version {self.version or ''}\0".encode())
        for qualname, src in _own_code(self.fn):
            h.update(f"def {qualname}\0{src}\0".encode())
        for module in _library_closure(self.fn, self.library):
            h.update(f"module {module}\0".encode())
            h.update(_module_text(module).encode())
        return h.hexdigest()

    def code_inputs(self) -> dict[str, list[str]]:
        """What :attr:`code_version` hashes, by name: ``functions`` (the
        component's function and the module-level functions and classes of its
        module it uses) and ``modules`` (the jaxtx library modules it uses,
        with the jaxtx modules those import)."""
        with _CODE_LOCK:
            return {
                "functions": [q for q, _ in _own_code(self.fn)],
                "modules": _library_closure(self.fn, self.library),
            }

    def cache_key(self, inputs: Mapping[str, Artifact | None], params: Mapping[str, Any]) -> str:
        """Key on code, parameters and input fingerprints (never on data or paths)."""
        doc = {
            "external": self.external_fingerprint(params) if self.external_fingerprint else None,
            "component": self.name,
            "code": self.code_version,
            "params": params,
            "inputs": {k: (v.fingerprint if v is not None else None) for k, v in inputs.items()},
        }
        blob = json.dumps(doc, sort_keys=True, default=stable_repr)
        return hashlib.sha256(blob.encode()).hexdigest()


def component(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float = 1.0,
    cache: bool = True,
    version: str | None = None,
    verdict: Callable[[Mapping[str, Artifact]], str | None] | None = None,
    external_fingerprint: Callable[[Mapping[str, Any]], str] | None = None,
    library: Sequence[str] = (),
    summary: SummaryFn | None = None,
) -> Any:
    """Turn a typed function into a :class:`Component`.

    Args:
      fn: the function (when used as ``@component`` without arguments).
      name: the component's name (default: the function's).
      retries: how often a failed run is retried inside a pipeline.
      retry_delay_seconds: the pause before each retry.
      cache: whether pipeline runs may skip it when its cache key (below) is
        unchanged.
      version: a string added to the cache key; bump it to invalidate caches
        (e.g. after changing code the key cannot see, listed below).
      verdict: called with the committed outputs; a returned message stops
        the pipeline (e.g. failing anomalies) after the outputs were written.
      external_fingerprint: called with the parameters; returns a fingerprint
        of what the component reads from outside the store (input files), so
        the cache misses when those change.
      library: names of further jaxtx modules whose source the result depends
        on (added to those found from the function's references).
      summary: called with the committed outputs and returned metrics (also
        for a cached result); returns the node's :class:`Outcome` for the run
        summary, or ``None`` for the default made from its output types.

    The cache key. A pipeline reuses a node's earlier outputs only when all of
    these are unchanged (and every output still verifies against its manifest):

    * the component's name, its parameters and its input artifacts'
      *fingerprints* (content hashes: never paths, never data read again);
    * ``external_fingerprint(params)``, when given;
    * its declared ``version`` and ``jaxtx.__version__``;
    * its own code: the source of the function and, found through the names
      it uses, of the module-level functions and classes of the same module
      it calls (transitively): an edit elsewhere in that module, a docstring
      of an unrelated function included, does not invalidate;
    * the jaxtx library modules it uses (modules, functions or classes of
      ``jaxtx.*`` it names, or imports inside the function, plus ``library``)
      and, transitively, the jaxtx modules those import: the whole source
      files. The component machinery (``jaxtx.components`` itself, its
      ``_component`` and ``_artifacts`` modules, and ``jaxtx.pipelines``) is
      not part of it; ``jaxtx.__version__`` covers releases.

    Not part of the key, so bump ``version`` when they change what the
    component computes: code in *other* user modules the function calls,
    third-party libraries, and files the component reads outside the artifact
    store (or give ``external_fingerprint``). :meth:`Component.code_inputs`
    lists what is hashed.

    Example::

        @component
        def RowCount(examples: Examples, report: Output[Report], *, split: str = "train"):
            n = examples.read(split).num_rows
            (report.path / "count.txt").write_text(str(n))
            return {"rows": n}
    """

    def wrap(f: Callable[..., Any]) -> Component:
        return Component(
            f,
            name=name,
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            cache=cache,
            version=version,
            verdict=verdict,
            external_fingerprint=external_fingerprint,
            library=library,
            summary=summary,
        )

    return wrap(fn) if fn is not None else wrap


def _parse_signature(
    fn: Callable[..., Any], name: str
) -> tuple[list[InputSpec], list[OutputSpec], list[ParamSpec], str | None]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # an annotation that does not resolve
        raise ComponentError(
            f"{name}: cannot resolve the annotations of {fn.__qualname__}: {e}"
        ) from e
    inputs: list[InputSpec] = []
    outputs: list[OutputSpec] = []
    params: list[ParamSpec] = []
    context_param: str | None = None
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ComponentError(f"{name}: *args/**kwargs are not allowed in a component")
        ann = hints.get(p.name, Any)
        if ann is RunContext:
            context_param = p.name
            continue
        if isinstance(ann, _OutputAlias):
            outputs.append(OutputSpec(p.name, ann.artifact_cls))
            continue
        art, optional = _artifact_annotation(ann)
        if art is not None:
            if optional and p.default is not None:
                raise ComponentError(f"{name}: optional input {p.name!r} must default to None")
            inputs.append(InputSpec(p.name, art, optional))
            continue
        params.append(
            ParamSpec(
                p.name, ann, None if p.default is p.empty else p.default, p.default is p.empty
            )
        )
    return inputs, outputs, params, context_param


def _artifact_annotation(ann: Any) -> tuple[type[Artifact] | None, bool]:
    if isinstance(ann, type) and issubclass(ann, Artifact):
        return ann, False
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if (
            len(args) == 1
            and type(None) in typing.get_args(ann)
            and isinstance(args[0], type)
            and issubclass(args[0], Artifact)
        ):
            return args[0], True
    return None, False


def _public_signature(fn: Callable[..., Any], outputs: set[str]) -> inspect.Signature:
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = [
        p
        for p in sig.parameters.values()
        if p.name not in outputs and hints.get(p.name) is not RunContext
    ]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    return sig.replace(parameters=params)


def _metrics(returned: Any, name: str) -> dict[str, float]:
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        raise ComponentError(
            f"{name} returned {type(returned).__name__}; a component returns None or a "
            "mapping of metric names to numbers (outputs are written through Output[...] parameters)"
        )
    out: dict[str, float] = {}
    for k, v in returned.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ComponentError(f"{name}: metric {k!r} is not a number: {v!r}") from None
    return out


def stable_repr(value: Any, _depth: int = 0) -> str:
    """A repr that is the same in every process: functions and classes by
    qualified name + a hash of their source, dataclass instances by fields,
    other objects by type + ``repr`` when it has no memory address in it.
    """
    import dataclasses
    import re

    if _depth > 6:
        return "..."
    d = _depth + 1
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.ismethod(value):
        try:
            src = inspect.getsource(value)
        except (OSError, TypeError):
            src = ""
        digest = hashlib.sha256(src.encode()).hexdigest()[:16]
        out = f"{value.__module__}.{value.__qualname__}#{digest}"
        # Closures and defaults carry settings (optax.adam(1e-3) vs adam(1e-2)).
        cells = getattr(value, "__closure__", None) or ()
        captured = []
        for c in cells:
            try:
                captured.append(stable_repr(c.cell_contents, d))
            except ValueError:  # an empty cell
                captured.append("<empty>")
        defaults = getattr(value, "__defaults__", None) or ()
        if captured or defaults:
            out += f"[{', '.join(captured)}|{stable_repr(list(defaults), d)}]"
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: stable_repr(getattr(value, f.name), d) for f in dataclasses.fields(value)}
        return f"{stable_repr(type(value), d)}({json.dumps(fields, sort_keys=True)})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(stable_repr(v, d) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "{" + ", ".join(f"{k!r}: {stable_repr(v, d)}" for k, v in items) + "}"
    text = repr(value)
    if re.search(r" at 0x[0-9a-f]+", text):
        cls = stable_repr(type(value), d)
        state = getattr(value, "__dict__", None)
        return f"{cls}<{stable_repr(state, d) if isinstance(state, dict) else 'opaque'}>"
    return text


# Held while hashing code: CPython 3.11's ast.parse is not safe to call from
# several threads at once ("AST constructor recursion depth mismatch"), and
# component threads compute cache keys concurrently.
_CODE_LOCK = threading.RLock()

#: Machinery, not part of any component's result (covered by ``jaxtx.__version__``).
_MACHINERY = (
    "jaxtx",
    "jaxtx.components",
    "jaxtx.components._component",
    "jaxtx.components._artifacts",
)


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))


def _code_objects(obj: Any) -> list[types.CodeType]:
    """The code objects of a function, or of every method of a class."""
    if inspect.isfunction(obj):
        codes = [obj.__code__]
    elif inspect.isclass(obj):
        codes = [
            v.__code__
            for v in vars(obj).values()
            if inspect.isfunction(v)
            or (isinstance(v, staticmethod | classmethod) and inspect.isfunction(v.__func__))
            for v in [v.__func__ if isinstance(v, staticmethod | classmethod) else v]
        ]
    else:
        return []
    out: list[types.CodeType] = []
    while codes:
        code = codes.pop()
        out.append(code)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return out


def _referenced(obj: Any) -> list[Any]:
    """Module-level objects of ``obj``'s module that its code names."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    namespace = vars(module) if module is not None else getattr(obj, "__globals__", {})
    names = {n for code in _code_objects(obj) for n in code.co_names}
    return [namespace[n] for n in sorted(names) if n in namespace]


def _own_code(fn: Callable[..., Any]) -> list[tuple[str, str]]:
    """``(qualname, source)`` of ``fn`` and of the functions and classes of its
    module that it uses, transitively; sorted by qualname."""
    home = fn.__module__
    seen: dict[str, str] = {}
    todo: list[Any] = [fn]
    while todo:
        obj = todo.pop()
        key = obj.__qualname__
        if key in seen:
            continue
        seen[key] = _source(obj)
        for ref in _referenced(obj):
            if (inspect.isfunction(ref) or inspect.isclass(ref)) and ref.__module__ == home:
                todo.append(ref)
    return sorted(seen.items())


def _library_closure(fn: Callable[..., Any], extra: Sequence[str]) -> list[str]:
    """The jaxtx modules ``fn`` (with its own helpers) uses, plus ``extra``,
    and the jaxtx modules those import, transitively; sorted."""
    home = fn.__module__
    roots: set[str] = set(extra)
    package = home.rpartition(".")[0] if home else ""
    for qualname, _ in _own_code(fn):
        obj = _resolve_qualname(fn, qualname)
        for ref in _referenced(obj) if obj is not None else []:
            name = ref.__name__ if inspect.ismodule(ref) else getattr(ref, "__module__", None)
            if isinstance(name, str):
                roots.add(name)
        src = _source(obj) if obj is not None else ""
        roots.update(_imports_in(_dedent(src), package))
    todo = sorted(r for r in roots if _is_library(r, home))
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        mod_pkg = name if _is_package(name) else name.rpartition(".")[0]
        todo.extend(
            m
            for m in _imports_in(_module_text(name), mod_pkg)
            if _is_library(m, home) and m not in found
        )
    return sorted(found)


def _resolve_qualname(fn: Callable[..., Any], qualname: str) -> Any:
    if qualname == fn.__qualname__:
        return fn
    module = sys.modules.get(fn.__module__)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_library(name: str, home: str) -> bool:
    return (
        name.startswith("jaxtx.")
        and name != home
        and name not in _MACHINERY
        and not (name == "jaxtx.pipelines" or name.startswith("jaxtx.pipelines."))
    )


def _dedent(src: str) -> str:
    import textwrap

    return textwrap.dedent(src)


@functools.cache
def _is_package(name: str) -> bool:
    spec = _find_spec(name)
    return bool(spec is not None and spec.submodule_search_locations)


def _find_spec(name: str) -> Any:
    """The module's spec, found without importing it or its parent packages
    (``importlib.util.find_spec`` imports the parents: jax, Beam, pandas, for a
    cached run that needs none of them)."""
    import importlib.util

    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__spec__", None) is not None:
        return loaded.__spec__
    parent = name.rpartition(".")[0]
    try:
        if not parent:
            return importlib.util.find_spec(name)
        locations = getattr(_find_spec(parent), "submodule_search_locations", None)
        if not locations:
            return None
        for finder in sys.meta_path:  # as the import system does, with the parent's path
            find = getattr(finder, "find_spec", None)
            spec = find(name, list(locations)) if find is not None else None
            if spec is not None:
                return spec
    except (ImportError, ValueError, AttributeError):
        return None
    return None


@functools.cache
def _module_text(name: str) -> str:
    """The source file of module ``name`` ('' when it has none)."""
    spec = _find_spec(name)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return ""
    try:
        return Path(origin).read_text(encoding="utf-8")
    except OSError:
        return ""


@functools.cache
def _imports_in(source: str, package: str) -> frozenset[str]:
    """Absolute names of the modules ``source`` imports (anywhere in it);
    relative imports are resolved against ``package``. Cached: components of
    one pipeline share most of their library modules."""
    import ast
    import importlib.util

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    out: set[str] = set()
    for node in _import_statements(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = (
                    importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                    if node.level
                    else node.module or ""
                )
            except (ImportError, ValueError):
                continue
            out.add(base)
            if base.startswith("jaxtx") and _is_package(base):
                for a in node.names:
                    if _find_spec(f"{base}.{a.name}") is not None:
                        out.add(f"{base}.{a.name}")
    return frozenset(m for m in out if m)


def _import_statements(tree: Any) -> Iterator[Any]:
    """The import statements of a module at any depth (in functions, classes,
    ``if``/``try`` blocks): statements only, never expressions (where no
    import can be), which is a fraction of ``ast.walk``'s nodes."""
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(node, name, None)
            if isinstance(block, list):
                todo.extend(block)
