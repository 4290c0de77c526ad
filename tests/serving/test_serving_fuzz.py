"""Schemathesis against the live server: both REST protocols, no 5xx, only strict JSON.

The server publishes its OpenAPI document at ``/openapi.json``; every operation
in it is fuzzed with schema-conforming and schema-violating requests (a fixed
seed, a bounded number of cases, well under a minute).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving_server import RunningServer

from jaxtx.serving.batching import BatchingConfig
from jaxtx.serving.server import ServerConfig

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

EXAMPLES_PER_MODE = 25
BUDGET_S = 50.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[RunningServer]:
    base = tmp_path_factory.mktemp("fuzz-models")
    shutil.copytree(model_cache / "logistic" / "1", base / "logistic" / "1")
    shutil.copytree(model_cache / "vector" / "1", base / "vector" / "1")
    srv = RunningServer(
        ServerConfig(base_dir=base, batching=BatchingConfig(max_batch_size=8), max_body_bytes=65536)
    )
    srv.wait_ready()
    yield srv
    srv.stop()


def _strict(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


def test_openapi_document_describes_both_protocols(live: RunningServer) -> None:
    doc = live.client.get("/openapi.json").json()
    paths = set(doc["paths"])
    assert "/v1/models/{model}:predict" in paths and "/v2/models/{model}/infer" in paths
    model = doc["paths"]["/v2/models/{model}"]["get"]["parameters"][0]["schema"]
    assert model["enum"] == ["logistic", "vector"]


def test_fuzz_finds_no_5xx_and_no_invalid_json(live: RunningServer) -> None:
    import requests
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    deadline = time.monotonic() + BUDGET_S
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    skipped = 0
    session = requests.Session()

    def check(case) -> None:  # type: ignore[no-untyped-def]
        if time.monotonic() > deadline:
            return
        response = case.call(base_url=live.url, session=session, timeout=30)
        statuses[response.status_code] += 1
        where = f"{case.method} {case.formatted_path} body={str(case.body)[:200]!r}"
        if response.status_code >= 500:
            problems.append(f"{response.status_code} for {where}: {response.text[:300]}")
        if case.path != "/metrics":
            try:
                json.loads(response.content, parse_constant=_strict)
            except ValueError as exc:
                problems.append(f"invalid JSON for {where}: {exc}: {response.content[:200]!r}")

    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in modes:
            run = settings(
                max_examples=EXAMPLES_PER_MODE,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=operation.as_strategy(generation_mode=mode))(check))
            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # nothing to violate (no parameters)
                skipped += 1
    cases = sum(statuses.values())
    print(
        f"fuzz: {len(operations)} operations ({skipped} modes had nothing to generate), "
        f"{cases} cases, by status {dict(sorted(statuses.items()))}"
    )
    assert not problems, "\n".join(problems[:20])
    assert cases >= 10 * len(operations)
