"""``jaxtx serve`` and ``python -m jaxtx.serving`` parse the same arguments into the same settings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jaxtx.pipelines.cli import _parser as jaxtx_parser
from jaxtx.serving.__main__ import parser as module_parser
from jaxtx.serving.cli import config_from_args
from jaxtx.serving.repository import VersionPolicy


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _serve_subparser() -> argparse.ArgumentParser:
    p = jaxtx_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_both_entry_points_accept_the_same_flags() -> None:
    # ``jaxtx`` adds its own --debug/--verbose to every sub-command.
    assert _options(_serve_subparser()) - {"--debug", "--verbose"} == _options(module_parser())
    assert "--grpc-port" in _options(module_parser()) or "--port" in _options(module_parser())


@pytest.mark.parametrize("path_as_option", [False, True])
def test_both_entry_points_build_the_same_config(tmp_path: Path, path_as_option: bool) -> None:
    where = ["--model-base-path", str(tmp_path)] if path_as_option else [str(tmp_path)]
    flags = [
        "--port",
        "9000",
        "--version-policy",
        "latest:2",
        "--no-batching",
        "--max-body-bytes",
        "1024",
        "--poll-interval",
        "0.5",
    ]
    via_jaxtx = jaxtx_parser().parse_args(["serve", *where, *flags])
    via_module = module_parser().parse_args([*where, *flags])
    a, b = config_from_args(via_jaxtx), config_from_args(via_module)
    assert a == b
    assert a.version_policy == VersionPolicy.parse("latest:2")
    assert a.batching.enabled is False and a.max_body_bytes == 1024
    assert (
        (via_jaxtx.port, via_jaxtx.host)
        == (via_module.port, via_module.host)
        == (9000, "127.0.0.1")
    )


def test_missing_base_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no model base path"):
        config_from_args(module_parser().parse_args([]))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        config_from_args(module_parser().parse_args([str(tmp_path / "nope")]))


@pytest.mark.parametrize("entry", ["jaxtx", "module"])
def test_command_line_serves_with_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entry: str
) -> None:
    import jaxtx.serving.cli as cli
    import jaxtx.serving.server as server

    seen: dict = {}
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kw: seen.update(logging=kw))
    monkeypatch.setattr(
        server,
        "serve",
        lambda base, host, port, **kw: seen.update(kw, base=base, host=host, port=port),
    )
    flags = ["--port", "9000", "--version-policy", "specific:1,3", "--log-level", "warning"]
    if entry == "jaxtx":
        from jaxtx.pipelines.cli import main

        assert main(["serve", str(tmp_path), *flags]) == 0
    else:
        from jaxtx.serving.__main__ import main as module_main

        module_main(["--model-base-path", str(tmp_path), *flags])
    assert (seen["base"], seen["host"], seen["port"]) == (tmp_path, "127.0.0.1", 9000)
    assert seen["config"].version_policy == VersionPolicy.specific(1, 3)
    assert seen["logging"]["level"] == "WARNING"
    assert seen["log_level"] == "warning"
