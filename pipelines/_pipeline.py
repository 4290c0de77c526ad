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

from jaxtx.components import Node, OutputRef, WiringError, begin_building, end_building
from jaxtx.core.settings import Settings

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
        self._given = {n.key: n for n in initial}
        for n in initial:
            self.add(n)
        self._given = {}
        if initial:
            self.validate()

    @property
    def settings(self) -> Settings:
        """Home, tracking URI and artifact root: this pipeline's fields, then the
        environment, then the embedded defaults (:meth:`Settings.resolve`)."""
        return self.resolve_settings()

    def resolve_settings(self, *, home: str | None = None) -> Settings:
        """Like :attr:`settings`, with ``home`` used when the pipeline names none
        (``jaxtx run --home``).

        Args:
          home: the working folder to use unless ``self.home`` is set.

        Returns:
          The resolved :class:`~jaxtx.core.settings.Settings`.
        """
        return Settings.resolve(
            home=self.home or home,
            tracking_uri=self.tracking_uri,
            artifact_root=self.artifact_root,
        )

    # -- building --------------------------------------------------------------------------
    def __enter__(self) -> Pipeline:
        self._token = begin_building(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        end_building(self._token)
        self._token = None
        if exc_type is None:
            self.validate()

    def add(self, node: Node) -> Node:
        """Add a node and, recursively, the nodes it reads from; returns the
        pipeline's copy (its id made unique)."""
        existing = self._member(node.key)
        if existing is not None:
            return existing
        for up in node.upstream():
            self.add(getattr(self, "_given", {}).get(up.key, up))
        unique = self._unique_id(node.id)
        if unique != node.id:
            node = node.copy(id=unique)
        self.nodes.append(node)
        return node

    def has_key(self, key: str) -> bool:
        """Whether a copy of the node with this :attr:`Node.key` is a member."""
        return self._member(key) is not None

    def put(self, node: Node) -> Node:
        """While building: let ``node`` take the place of the member with its key."""
        for i, n in enumerate(self.nodes):
            if n.key == node.key:
                if node.id != n.id and any(m.id == node.id for m in self.nodes):
                    raise PipelineError(f"pipeline {self.name!r} already has a node {node.id!r}")
                self.nodes[i] = node
                for up in node.upstream():
                    self.add(up)
                return node
        raise PipelineError(f"node {node.id!r} is not in pipeline {self.name!r}")

    def _member(self, key: str) -> Node | None:
        for n in self.nodes:
            if n.key == key:
                return n
        return None

    def resolve(self, node: Node) -> Node:
        """This pipeline's copy of ``node`` (matched by :attr:`Node.key`)."""
        found = self._member(node.key)
        if found is None:
            raise PipelineError(
                f"pipeline {self.name!r}: node {node.id!r} is used but not in the pipeline"
            )
        return found

    def upstream(self, node: Node) -> list[Node]:
        """The members ``node`` reads from or must run after."""
        return [self.resolve(n) for n in node.upstream()]

    def source(self, ref: OutputRef) -> Node:
        """The member that produces ``ref``."""
        return self.resolve(ref.node)

    def _unique_id(self, wanted: str) -> str:
        taken = {n.id for n in self.nodes}
        if wanted not in taken:
            return wanted
        i = 2
        while f"{wanted}_{i}" in taken:
            i += 1
        return f"{wanted}_{i}"

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
                    src = self.source(value)
                    if not issubclass(value.type, spec.type):
                        raise PipelineError(
                            f"pipeline {self.name!r}: node {n.id!r} ({comp.name}), input "
                            f"{spec.name!r}: expects {spec.type.TYPE_NAME}, but output "
                            f"{value.name!r} of node {src.id!r} is {value.type.TYPE_NAME}"
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
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(n: Node, path: list[Node]) -> None:
            s = state.get(n.key)
            if s == 2:
                return
            if s == 1:
                keys = [x.key for x in path]
                cyc = [*path[keys.index(n.key) :], n]
                raise PipelineError(
                    f"pipeline {self.name!r} has a cycle: {' -> '.join(x.id for x in cyc)}"
                )
            state[n.key] = 1
            for up in self.upstream(n):
                visit(up, [*path, n])
            state[n.key] = 2
            order.append(n)

        for n in self.nodes:
            visit(n, [])
        return order

    # -- changing (each returns a new pipeline) --------------------------------------------
    def _derive(self, nodes: Iterable[Node]) -> Pipeline:
        return Pipeline(
            self.name,
            nodes=list(nodes),
            home=self.home,
            artifact_root=self.artifact_root,
            tracking_uri=self.tracking_uri,
            description=self.description,
        )

    def with_params(self, overrides: Mapping[str, Any]) -> Pipeline:
        """A copy with node parameters set from ``{"node_id.param": value}``."""
        changed: dict[str, dict[str, Any]] = {}
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
            changed.setdefault(node.key, dict(node.params))[param] = value
        return self._derive(
            n.copy(params=changed[n.key]) if n.key in changed else n for n in self.nodes
        )

    def with_node(self, node: Node) -> Pipeline:
        """A copy in which ``node`` replaces the member it was copied from
        (e.g. ``p.with_node(p["train"].with_options(retries=3))``)."""
        self.resolve(node)
        return self._derive(node if n.key == node.key else n for n in self.nodes)

    def subset(self, node_ids: Iterable[str]) -> Pipeline:
        """The nodes named and everything they depend on, as a new pipeline."""
        keep: set[str] = set()

        def take(n: Node) -> None:
            if n.key in keep:
                return
            keep.add(n.key)
            for up in self.upstream(n):
                take(up)

        for nid in node_ids:
            take(self[nid])
        return self._derive(n for n in self.nodes if n.key in keep)

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
                f"{k}<-{self.source(v).id}.{v.name}"
                for k, v in n.inputs.items()
                if isinstance(v, OutputRef)
            )
            lines.append(f"  {n.id} ({n.component.name}){': ' + ins if ins else ''}")
        return "\n".join(lines)
