"""Beam pipeline options shared by every Beam-backed component.

Beam >= 2.68 routes ``DirectRunner`` pipelines to Prism, whose binary is
downloaded at run time; offline that costs a failed attempt before a fallback.
jaxtx therefore names the in-process runner (``FnApiRunner``) explicitly unless
the caller chooses another runner through standard Beam options, e.g.
``["--runner=FlinkRunner", "--flink_master=host:8081"]`` or
``["--runner=DataflowRunner", "--project=...", ...]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

__all__ = ["DEFAULT_RUNNER", "BeamOptions", "pipeline_options"]

DEFAULT_RUNNER = "FnApiRunner"

BeamOptions = Sequence[str] | Mapping[str, object] | None


def pipeline_options(beam_options: BeamOptions = None) -> PipelineOptions:
    """Build ``PipelineOptions`` from a flag list or a mapping.

    Args:
      beam_options: standard Beam flags (``["--runner=SparkRunner", ...]``) or a
        mapping (``{"runner": "SparkRunner", "direct_num_workers": 2}``).
        Without ``runner`` the in-process ``FnApiRunner`` is used, so nothing
        tries to download a runner binary.

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
    return opts
