"""The OpenAPI 3 document of the server's REST protocols, served at ``/openapi.json``.

It describes TF Serving's REST API (``/v1``), the Open Inference Protocol v2
over HTTP (``/v2``) and ``/metrics``, generically: one document whatever the
models (their signatures are at each model's metadata endpoint). The
``model`` parameter lists the models served when the document is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["openapi_document"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: str, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {_JSON: {"schema": _ref(ok)}}}}
    for status in errors:
        out[str(status)] = {
            "description": "error",
            "content": {_JSON: {"schema": _ref("Error")}},
        }
    return out


_ERRORS = (400, 404, 405, 413, 415, 503)


def _schemas() -> dict[str, Any]:
    value: dict[str, Any] = {
        "oneOf": [
            {"type": "number"},
            {"type": "string"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": {}},
            {
                "type": "object",
                "properties": {"b64": {"type": "string"}},
                "required": ["b64"],
                "additionalProperties": False,
            },
        ]
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {
                "type": "string",
                "enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"]
                + ["UINT32", "UINT64", "FP16", "FP32", "FP64", "BF16", "BYTES"],
            },
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Any": {},
        "Value": value,
        "PredictRequest": {
            "type": "object",
            "properties": {
                "signature_name": {"type": "string"},
                "instances": {
                    "type": "array",
                    "items": {"oneOf": [{"type": "object", "additionalProperties": value}, value]},
                },
                "inputs": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": {"type": "array", "items": {}}},
                        {"type": "array", "items": {}},
                    ]
                },
            },
        },
        "InferTensor": tensor,
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": _ref("InferTensor")},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
    }


def _param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _v1_paths(model: dict[str, Any]) -> dict[str, Any]:
    version = _param("version", {"type": "integer", "minimum": 1})
    label = _param("label", {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"})
    paths: dict[str, Any] = {}
    for prefix, extra in (
        ("/v1/models/{model}", []),
        ("/v1/models/{model}/versions/{version}", [version]),
        ("/v1/models/{model}/labels/{label}", [label]),
    ):
        params = [_param("model", model), *extra]
        paths[prefix] = {
            "get": {
                "summary": "Model status (TF Serving GetModelStatus)",
                "parameters": params,
                "responses": _responses("Any", 404),
            }
        }
        paths[prefix + "/metadata"] = {
            "get": {
                "summary": "Model metadata (signature_def)",
                "parameters": params,
                "responses": _responses("Any", *_ERRORS),
            }
        }
        paths[prefix + ":predict"] = {
            "post": {
                "summary": "Predict (rows as instances or columns as inputs)",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("PredictRequest")}},
                },
                "responses": _responses("Any", *_ERRORS),
            }
        }
    return paths


def _v2_paths(model: dict[str, Any]) -> dict[str, Any]:
    version = _param("version", {"type": "integer", "minimum": 1})
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "Server metadata", "responses": _responses("Any")}},
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": _responses("Any")}},
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness (400 when not ready)",
                "responses": _responses("Any", 400),
            }
        },
    }
    for prefix, extra in (
        ("/v2/models/{model}", []),
        ("/v2/models/{model}/versions/{version}", [version]),
    ):
        params = [_param("model", model), *extra]
        paths[prefix] = {
            "get": {
                "summary": "Model metadata",
                "parameters": params,
                "responses": _responses("Any", *_ERRORS),
            }
        }
        paths[prefix + "/ready"] = {
            "get": {
                "summary": "Model readiness",
                "parameters": params,
                "responses": _responses("Any", 400, 404),
            }
        }
        paths[prefix + "/infer"] = {
            "post": {
                "summary": "Inference (JSON tensors; binary extension also accepted)",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("InferRequest")}},
                },
                "responses": _responses("Any", *_ERRORS),
            }
        }
    return paths


def openapi_document(version: str, models: Sequence[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.0 document of both REST protocols.

    Args:
        version: The server's version.
        models: Models served now (listed as examples of the ``model`` parameter).

    Returns:
        The document.
    """
    model: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
    if models:
        model["example"] = models[0]
        model["enum"] = list(models)
    paths = {**_v1_paths(model), **_v2_paths(model)}
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "OK", "content": {"text/plain": {}}}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "jaxtx model server",
            "version": version,
            "description": "TF Serving REST API and Open Inference Protocol v2. Errors are "
            '{"error": "..."}; JSON bodies need Content-Type: application/json.',
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
