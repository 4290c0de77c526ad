"""Beam pipeline options shared by every Beam-backed component.

Beam >= 2.68 routes ``DirectRunner`` pipelines to Prism, whose binary is
downloaded at run time; offline that costs a failed attempt before a fallback.
jaxtx therefore names the in-process runner (``FnApiRunner``) explicitly unless
the caller chooses another runner through standard Beam options, e.g.
``["--runner=FlinkRunner", "--flink_master=host:8081"]`` or
``["--runner=DataflowRunner", "--project=...", ...]``.

Short runner names (``--runner=dask`` or ``{"runner": "dask"}``), case-insensitive:

============  ===========================================  ==================================
short name    Beam runner                                  options it needs
============  ===========================================  ==================================
``direct``    ``FnApiRunner`` (in process, the default)    none (``--direct_num_workers=N``)
``dask``      ``jaxtx.core.dask_runner.DaskRunner``        ``--dask_client_address=tcp://H:8786``
``flink``     ``FlinkRunner`` (portable, job server)       ``--flink_master=H:8081``
                                                           ``--environment_type=PROCESS|DOCKER``
``spark``     ``SparkRunner`` (portable, job server)       ``--spark_master_url=spark://H:7077``
                                                           ``--environment_type=PROCESS|DOCKER``
``dataflow``  ``DataflowRunner``                           ``--project --region --temp_location=gs://``
                                                           ``--sdk_container_image`` or
                                                           ``--requirements_file``
============  ===========================================  ==================================

``dask`` is Beam's Dask runner with two fixes (``jaxtx.core.dask_runner``);
Beam's own class (``apache_beam.runners.dask.dask_runner.DaskRunner``) loses
the outputs of multi-sink pipelines. Flink, Spark and Dataflow are mapped and
documented (docs/laptop-to-cluster.md) but not tested here: they need a
cluster or a cloud project. Any other value is passed to Beam unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

__all__ = [
    "DEFAULT_RUNNER",
    "RUNNER_NAMES",
    "BatchCombineFn",
    "BeamOptions",
    "WriteJson",
    "pipeline_options",
    "run_and_read_json",
]

DEFAULT_RUNNER = "FnApiRunner"

RUNNER_NAMES: Mapping[str, str] = {
    "direct": DEFAULT_RUNNER,
    "dask": "jaxtx.core.dask_runner.DaskRunner",
    "flink": "FlinkRunner",
    "spark": "SparkRunner",
    "dataflow": "DataflowRunner",
}

BeamOptions = Sequence[str] | Mapping[str, object] | None


def pipeline_options(beam_options: BeamOptions = None) -> PipelineOptions:
    """Build ``PipelineOptions`` from a flag list or a mapping.

    Args:
      beam_options: standard Beam flags (``["--runner=SparkRunner", ...]``) or a
        mapping (``{"runner": "SparkRunner", "direct_num_workers": 2}``).
        Without ``runner`` the in-process ``FnApiRunner`` is used, so nothing
        tries to download a runner binary; short names (``dask``, ``direct``,
        ``flink``, ``spark``, ``dataflow``) map through ``RUNNER_NAMES``.

    Returns:
      The options, with ``save_main_session`` off (components pickle no state
      from ``__main__``).
    """
    if beam_options is None:
        opts = PipelineOptions([])
    elif isinstance(beam_options, Mapping):
        opts = PipelineOptions([], **dict(beam_options))
    else:
        opts = PipelineOptions(list(beam_options))
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = DEFAULT_RUNNER
    elif isinstance(std.runner, str):
        std.runner = RUNNER_NAMES.get(std.runner.lower(), std.runner)
    return opts


class WriteJson(beam.DoFn):
    """Write each element as strict JSON to ``path`` (any Beam filesystem).

    How a combined result (statistics, fitted constants) leaves a pipeline on
    any runner: the driver reads the file back after the run.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def process(self, doc: dict[str, Any]) -> Iterator[str]:
        with FileSystems.create(self._path) as f:
            f.write(json.dumps(doc, allow_nan=False).encode("utf-8"))
        yield self._path


class BatchCombineFn(beam.CombineFn):
    """A ``CombineFn`` over record batches whose accumulator has
    ``add_batch(batch) -> self`` and ``merge(other)``.

    Subclasses give ``create_accumulator`` and ``extract_output``.
    """

    def add_input(self, accumulator: Any, element: Any) -> Any:
        return accumulator.add_batch(element)

    def merge_accumulators(self, accumulators: Any) -> Any:
        it = iter(accumulators)
        first = next(it, None)
        if first is None:
            return self.create_accumulator()
        for acc in it:
            first.merge(acc)
        return first


def run_and_read_json(
    build: Callable[[beam.Pipeline], Mapping[str, beam.PCollection]],
    *,
    beam_options: BeamOptions = None,
    temp_dir: str | None = None,
    prefix: str = "jaxtx",
) -> dict[str, Any]:
    """Run a pipeline whose results are single JSON documents and return them.

    ``build(p)`` adds the transforms to the pipeline ``p`` and returns
    ``{key: PCollection}``, each holding exactly one JSON-serializable dict
    (typically the output of a ``CombineGlobally``). Each is written with
    :class:`WriteJson` to a file under ``temp_dir``, read back here after the
    run and deleted (also when the run fails).

    Args:
        build: Adds the transforms; returns the result collections by key.
        beam_options: Beam flags or mapping (see :func:`pipeline_options`).
        temp_dir: Where the results are written; must be reachable by the
            workers and this process (a local temporary directory by default,
            removed afterwards).
        prefix: Start of the temporary file and directory names.

    Returns:
        ``{key: document}``.
    """
    own_tmp = temp_dir is None
    tmp = tempfile.mkdtemp(prefix=f"{prefix}-") if own_tmp else temp_dir
    assert tmp is not None
    run_id = uuid.uuid4().hex
    outputs: dict[str, str] = {}
    try:
        with beam.Pipeline(options=pipeline_options(beam_options)) as p:
            for i, (key, pcoll) in enumerate(build(p).items()):
                out = FileSystems.join(tmp, f"{prefix}-{run_id}-{i}.json")
                outputs[key] = out
                _ = pcoll | f"WriteJson[{key}]" >> beam.ParDo(WriteJson(out))
        result: dict[str, Any] = {}
        for key, out in outputs.items():
            with FileSystems.open(out) as f:
                result[key] = json.loads(f.read().decode("utf-8"))
        return result
    finally:
        for out in outputs.values():
            if FileSystems.exists(out):
                FileSystems.delete([out])
        if own_tmp:
            with contextlib.suppress(OSError):
                os.rmdir(tmp)
