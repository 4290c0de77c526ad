"""``Pipeline``: a checked graph of component nodes.

Build one with a ``with`` block (calls of components inside it become nodes),
or pass nodes explicitly. Wiring is checked when the pipeline is built: a type
mismatch, a missing required input or a cycle raises :class:`PipelineError`
naming the node, the input and both types, before any data moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jaxtx.components._component import _BUILDING, Node, OutputRef, WiringError

if TYPE_CHECKING:
    from ._runner import PipelineRun

__all__ = ["Pipeline", "PipelineError"]


class PipelineError(WiringError):
    """The pipeline's graph is invalid (cycle, missing input, type mismatch, duplicate id)."""


@dataclass
class Pipeline:
    """A named graph of component nodes.

    Args:
      name: the pipeline's name (Prefect flow name and MLflow experiment).
      nodes: nodes to include; upstream nodes they use are added too.
      home: working folder for the embedded defaults (artifacts, MLflow
        SQLite store); default ``$JAXTX_HOME`` or ``./.jaxtx``.
      artifact_root: where artifacts go (a path or ``pyarrow.fs`` URI);
        default ``<home>/artifacts``.
      tracking_uri: MLflow tracking URI; default ``sqlite:///<home>/mlflow.db``.

    Example::

        with Pipeline("demo") as p:
            gen = ExampleGen(input_pattern="data/*.csv")
            StatisticsGen(examples=gen)
        run = p.run()
    """

    name: str
    nodes: list[Node] = field(default_factory=list)
    home: str | None = None
    artifact_root: str | None = None
    tracking_uri: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        initial = list(self.nodes)
        self.nodes = []
        self._token: Any = None
        for n in initial:
            self.add(n)
        if initial:
            self.validate()

    # -- building --------------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self._token = _BUILDING.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _BUILDING.reset(self._token)
        self._token = None
        if exc_type is None:
            self.validate()

    def add(self, node: Node) -> Node:
        """Add a node and, recursively, the nodes it reads from."""
        if any(n is node for n in self.nodes):
            return node
        for up in node.upstream():
            self.add(up)
        if node.pipeline is not None and node.pipeline is not self:
            raise PipelineError(
                f"node {node.id!r} already belongs to pipeline {node.pipeline.name!r}"
            )
        node.id = self._unique_id(node.id)
        node.pipeline = self
        self.nodes.append(node)
        return node

    def _unique_id(self, wanted: str) -> str:
        taken = {n.id for n in self.nodes}
        if wanted not in taken:
            return wanted
        i = 2
        while f"{wanted}_{i}" in taken:
            i += 1
        return f"{wanted}_{i}"

    def _rename(self, node: Node, new_id: str) -> None:
        if any(n.id == new_id and n is not node for n in self.nodes):
            raise PipelineError(f"pipeline {self.name!r} already has a node {new_id!r}")

    def __getitem__(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(
            f"pipeline {self.name!r} has no node {node_id!r}; nodes: {[n.id for n in self.nodes]}"
        )

    def __iter__(self) -> Iterator[Node]:
        return iter(self.topological_order())

    # -- checking --------------------------------------------------------------------------
    def validate(self) -> None:
        """Check ids, wiring, types and acyclicity. Raises :class:`PipelineError`."""
        ids = [n.id for n in self.nodes]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise PipelineError(
                f"pipeline {self.name!r}: duplicate node id {dup[0]!r}; use .with_id()"
            )
        members = {id(n) for n in self.nodes}
        for n in self.nodes:
            comp = n.component
            for spec in comp.inputs:
                value = n.inputs.get(spec.name)
                if value is None:
                    if not spec.optional:
                        raise PipelineError(
                            f"pipeline {self.name!r}: node {n.id!r} ({comp.name}) is missing its "
                            f"required input {spec.name!r} ({spec.type.TYPE_NAME}); wire it with "
                            f"{comp.name}({spec.name}=<node>.outputs.<name>) or node.connect()"
                        )
                    continue
                if isinstance(value, OutputRef):
                    if id(value.node) not in members:  # pragma: no cover - add() includes upstream
                        raise PipelineError(
                            f"pipeline {self.name!r}: node {n.id!r} input {spec.name!r} reads from "
                            f"node {value.node.id!r}, which is not in the pipeline"
                        )
                    if not issubclass(value.type, spec.type):
                        raise PipelineError(
                            f"pipeline {self.name!r}: node {n.id!r} ({comp.name}), input "
                            f"{spec.name!r}: expects {spec.type.TYPE_NAME}, but output "
                            f"{value.name!r} of node {value.node.id!r} is {value.type.TYPE_NAME}"
                        )
            missing = [p.name for p in comp.params if p.required and p.name not in n.params]
            if missing:
                raise PipelineError(
                    f"pipeline {self.name!r}: node {n.id!r} ({comp.name}) is missing parameter {missing[0]!r}"
                )
        self.topological_order()

    def topological_order(self) -> list[Node]:
        """Nodes so that every node comes after the nodes it reads from."""
        order: list[Node] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done

        def visit(n: Node, path: list[Node]) -> None:
            s = state.get(id(n))
            if s == 2:
                return
            if s == 1:
                cyc = [*path[path.index(n) :], n]
                raise PipelineError(
                    f"pipeline {self.name!r} has a cycle: {' -> '.join(x.id for x in cyc)}"
                )
            state[id(n)] = 1
            for up in n.upstream():
                visit(up, [*path, n])
            state[id(n)] = 2
            order.append(n)

        for n in self.nodes:
            visit(n, [])
        return order

    # -- changing --------------------------------------------------------------------------
    def with_params(self, overrides: Mapping[str, Any]) -> Pipeline:
        """Set node parameters from ``{"node_id.param": value}`` (in place; returns self)."""
        for key, value in overrides.items():
            node_id, _, param = key.rpartition(".")
            if not node_id:
                raise PipelineError(f"override {key!r}: write it as <node_id>.<parameter>")
            node = self[node_id]
            names = [p.name for p in node.component.params]
            if param not in names:
                raise PipelineError(
                    f"override {key!r}: node {node_id!r} ({node.component.name}) has no parameter "
                    f"{param!r}; its parameters are {names}"
                )
            node.params[param] = value
        return self

    def subset(self, node_ids: Iterable[str]) -> Pipeline:
        """The nodes named and everything they depend on, as a new pipeline (shares nodes)."""
        keep: dict[int, Node] = {}

        def take(n: Node) -> None:
            if id(n) in keep:
                return
            keep[id(n)] = n
            for up in n.upstream():
                take(up)

        for nid in node_ids:
            take(self[nid])
        p = Pipeline.__new__(Pipeline)
        p.name, p.home, p.artifact_root, p.tracking_uri = (
            self.name,
            self.home,
            self.artifact_root,
            self.tracking_uri,
        )
        p.description = self.description
        p.nodes = [n for n in self.nodes if id(n) in keep]
        p._token = None
        return p

    # -- running ---------------------------------------------------------------------------
    def run(self, **kwargs: Any) -> PipelineRun:
        """Run as a Prefect flow; see :func:`jaxtx.pipelines.run_pipeline`."""
        from ._runner import run_pipeline

        return run_pipeline(self, **kwargs)

    def describe(self) -> str:
        """A short text drawing of the graph."""
        lines = [f"Pipeline {self.name!r}"]
        for n in self.topological_order():
            ins = ", ".join(
                f"{k}<-{v.node.id}.{v.name}"
                for k, v in n.inputs.items()
                if isinstance(v, OutputRef)
            )
            lines.append(f"  {n.id} ({n.component.name}){': ' + ins if ins else ''}")
        return "\n".join(lines)
