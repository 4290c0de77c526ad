"""Beam's Dask runner, with the fixes jaxtx pipelines need.

Select it with ``--runner=dask`` (see :func:`jaxtx.core.beam.pipeline_options`)
plus ``--dask_client_address=tcp://scheduler:8786``. Beam 2.77's
``apache_beam.runners.dask.dask_runner.DaskRunner`` runs simple pipelines but
silently loses work in ours:

* it computes only the *last* transform's Dask bag, so a pipeline with several
  sinks (ExampleGen writes every split, the quarantine and the type
  observation) runs one of them and reports success;
* it hands every output of a multi-output ``ParDo`` (``with_outputs``) to each
  consumer, main and tagged outputs mixed;
* it drops what a ``DoFn`` emits from ``finish_bundle`` (Beam's file sinks
  report their written files there);
* it puts up to 128 ``Create`` elements in one Dask partition (and logs a
  warning each time), so a pipeline that starts from a list of input files
  reads them all in one task on one worker.

:class:`DaskRunner` keeps Beam's translation of Create, GroupByKey and Flatten
and runs each ``ParDo`` bundle itself: outputs (``finish_bundle``'s included)
keep their tag, a consumer of a tagged output reads only that tag's elements,
every leaf (a transform whose output nothing consumes) is computed, and unless
``--dask_npartitions`` or ``--dask_partition_size`` say otherwise, ``Create``
gives each element its own partition up to :data:`CREATE_PARTITIONS` (the
elements are input files or shards: one task each). The client is
closed when the run finishes. Runner metrics are not reported (Beam's result
raises ``NotImplementedError``): jaxtx counts what was written instead.

Requires ``dask[distributed]`` (see pyproject's ``dask`` extra).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
import dask.distributed as ddist
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import (
    DoFnContext,
    DoFnInvoker,
    DoFnSignature,
    Receiver,
    _OutputHandler,
)
from apache_beam.runners.dask import dask_runner as _beam
from apache_beam.runners.dask.overrides import _Create, dask_overrides
from apache_beam.runners.dask.transform_evaluator import (
    TRANSLATIONS,
    Create,
    DaskBagOp,
    DaskBagWindowedIterator,
    Flatten,
    NoOp,
    get_windowed_value,
)
from apache_beam.transforms.sideinputs import SideInputMap

__all__ = ["CREATE_PARTITIONS", "DaskRunner", "DaskRunnerResult"]

#: Most partitions a ``Create`` is split into when the options set no size.
CREATE_PARTITIONS = 256


class _SpreadCreate(Create):
    """Beam's ``Create`` op, one element per partition (at most ``CREATE_PARTITIONS``)."""

    def apply(self, input_bag: Any, side_inputs: Any = None) -> Any:
        if self.bag_kwargs.get("npartitions") or self.bag_kwargs.get("partition_size"):
            return super().apply(input_bag, side_inputs)
        items = self.transform.values
        return db.from_sequence(items, npartitions=max(1, min(len(items), CREATE_PARTITIONS)))


class _QuietImports(ddist.WorkerPlugin):
    """Installs jaxtx's import silencers on each worker before any task imports Beam.

    Unpickling this plugin on a worker imports ``jaxtx`` (whose ``__init__``
    installs :mod:`jaxtx.core.quiet`), so Beam's ``apitools not found`` root
    warning is not logged by every worker.
    """

    name = "jaxtx-quiet-imports"

    def setup(self, worker: Any) -> None:
        from jaxtx.core import quiet

        quiet.install()


@dataclasses.dataclass(frozen=True)
class _Tagged:
    """An element of a ParDo's tagged output, as it travels in the ParDo's bag."""

    tag: str
    value: Any


class _Receiver(Receiver):
    """Collect one output's elements (values only, as Beam's Dask runner does)."""

    def __init__(self, tag: str | None, values: list[Any]) -> None:
        self._tag = tag
        self._values = values

    def receive(self, windowed_value: Any) -> None:
        value = windowed_value.value
        self._values.append(value if self._tag is None else _Tagged(self._tag, value))


class _Receivers(dict):  # type: ignore[type-arg]
    """A receiver per tag, created on first use, all feeding one list."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def __missing__(self, tag: str | None) -> _Receiver:
        receiver = self[tag] = _Receiver(tag, self.values)
        return receiver


def _run_bundle(items: Any, spec: dict[str, Any], side_inputs: Any) -> list[Any]:
    """Run one DoFn over one Dask partition; every output, finish_bundle's included."""
    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=spec["window_fn"],
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(spec["fn"]),
        handler,
        context=DoFnContext(spec["label"], state=None),
        side_inputs=side_inputs,
        input_args=spec["args"],
        input_kwargs=spec["kwargs"],
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(item)
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return receivers.values


class _ParDo(DaskBagOp):
    """A ParDo over each partition of the input bag (see :func:`_run_bundle`)."""

    def apply(self, input_bag: Any, side_inputs: Any = None) -> Any:
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = getattr(getattr(main_input, "windowing", None), "windowfn", None)
        spec = {
            "fn": transform.fn,
            "window_fn": window_fn,
            "label": transform.label,
            "args": list(args),
            "kwargs": kwargs,
        }
        return input_bag.map(get_windowed_value, window_fn).map_partitions(
            _run_bundle, spec, side_inputs
        )


def _tag_of(value: pvalue.PValue) -> Any:
    """The output tag under which ``value``'s producer emits it (None: main)."""
    producer = value.producer
    for tag, out in producer.outputs.items():
        if out is value:
            return tag
    return None


def _is_tagged(producer: AppliedPTransform) -> bool:
    return len(producer.outputs) > 1 or any(t is not None for t in producer.outputs)


def _main(x: Any) -> bool:
    return not isinstance(x, _Tagged)


def _has_tag(tag: str) -> Any:
    def keep(x: Any) -> bool:
        return isinstance(x, _Tagged) and x.tag == tag

    return keep


def _untag(x: Any) -> Any:
    return x.value


@dataclasses.dataclass
class _Visitor(PipelineVisitor):
    """Translate each primitive transform to a Dask bag (Beam's ops), routing tags."""

    bag_kwargs: dict[str, Any]
    client: Any
    side_producers: set[AppliedPTransform]
    bags: dict[AppliedPTransform, Any] = dataclasses.field(default_factory=collections.OrderedDict)
    consumed: set[AppliedPTransform] = dataclasses.field(default_factory=set)

    def _bag_of(self, value: pvalue.PValue) -> Any:
        producer = value.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        if bag is None or not _is_tagged(producer):
            return bag
        tag = _tag_of(value)
        if tag is None or tag == "None":
            return bag.filter(_main)
        return bag.filter(_has_tag(str(tag))).map(_untag)

    def visit_transform(self, transform_node: AppliedPTransform) -> None:
        cls = transform_node.transform.__class__
        if cls is beam.ParDo:
            op_class: Any = _ParDo
        elif cls is _Create:
            op_class = _SpreadCreate
        else:
            op_class = TRANSLATIONS.get(cls, NoOp)
        op = op_class(transform_node, bag_kwargs=self.bag_kwargs)
        kws: dict[str, Any] = {"input_bag": None, "side_inputs": None}
        inputs = list(transform_node.inputs)
        if inputs:
            bags = [
                self._bag_of(v)
                for v in inputs
                if not isinstance(v, pvalue.PBegin) and v.producer in self.bags
            ]
            if any(isinstance(v, pvalue.PBegin) for v in inputs):
                bags.insert(0, None)
            if len(bags) == 1 and not isinstance(op, Flatten):
                kws["input_bag"] = bags[0]
            else:
                kws["input_bag"] = bags
        side = list(transform_node.side_inputs)
        if side:
            kws["side_inputs"] = [
                SideInputMap(
                    type(si),
                    si._view_options(),
                    DaskBagWindowedIterator(self._bag_of(si.pvalue), si._window_mapping_fn),
                )
                for si in side
            ]
        bag = op.apply(**kws)
        if bag is not None and transform_node in self.side_producers:
            # Computed once, shared by its side-input readers and main consumers
            # (a side input is otherwise recomputed by each reader, re-running sinks).
            bag = self.client.persist(bag)
        self.bags[transform_node] = bag

    def leaves(self) -> list[Any]:
        """Bags no transform consumes: computing them runs the whole pipeline."""
        return [b for node, b in self.bags.items() if node not in self.consumed and b is not None]


class _SideProducers(PipelineVisitor):
    """The transforms whose outputs are read as side inputs."""

    def __init__(self) -> None:
        self.found: set[AppliedPTransform] = set()

    def visit_transform(self, transform_node: AppliedPTransform) -> None:
        self.found.update(si.pvalue.producer for si in transform_node.side_inputs)


@dataclasses.dataclass
class DaskRunnerResult(_beam.DaskRunnerResult):
    """Beam's result; closes the client once the run has finished or failed.

    ``held`` keeps the persisted side-input bags alive until then.
    """

    held: list[Any] = dataclasses.field(default_factory=list)

    def wait_until_finish(self, duration: Any = None) -> str:
        """Wait for every leaf, raise the first worker error, close the client."""
        try:
            return super().wait_until_finish(duration)
        finally:
            self.held.clear()
            self.client.close()


class DaskRunner(_beam.DaskRunner):
    """Run a Beam pipeline on a ``dask.distributed`` cluster (see the module doc)."""

    def run_pipeline(self, pipeline: Any, options: Any) -> DaskRunnerResult:
        """Translate the pipeline to Dask bags and submit every leaf.

        Args:
          pipeline: the Beam pipeline.
          options: its options; ``DaskOptions`` (``--dask_client_address`` ...)
            configure the client.

        Returns:
          The running result; ``wait_until_finish`` raises worker errors.
        """
        dask_options = options.view_as(_beam.DaskOptions).get_all_options(
            drop_default=True, current_only=True
        )
        bag_kwargs = _beam.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        client.register_plugin(_QuietImports())
        pipeline.replace_all(dask_overrides())
        side = _SideProducers()
        pipeline.visit(side)
        visitor = _Visitor(bag_kwargs, client, side.found)
        pipeline.visit(visitor)
        graph = dask.optimize(*visitor.leaves())
        futures = client.compute(list(graph))
        held = [b for node, b in visitor.bags.items() if node in side.found]
        return DaskRunnerResult(client, futures, held)
