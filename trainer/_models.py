"""Models as pairs of pure functions, and two tabular models.

A model is anything with

* ``init(key, example_features) -> params`` and
* ``apply(params, features, *, train: bool, key) -> outputs``,

both pure. :class:`ModelDef` bundles two such functions; :class:`MLP` and
:class:`WideAndDeep` are ready-made tabular models; :func:`from_nnx` adapts a
Flax NNX module.

How features are combined (``MLP`` and ``WideAndDeep``):

* Feature names are taken from ``features=`` or, when it is ``None``, from the
  keys of the batch, sorted by name.
* An integer feature listed in ``vocab_sizes`` is an id: it is looked up in its
  own embedding table of shape ``[vocab_size, embedding_dim]`` (ids outside
  ``[0, vocab_size)`` are clipped into range).
* Every other feature is numeric: cast to the compute dtype, reshaped to
  ``[b, -1]`` and concatenated, in name order, with the embeddings appended
  after them. The result is the ``[b, n]`` input of the first dense layer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from ._types import Array, Features, PyTree

__all__ = [
    "MLP",
    "ApplyFn",
    "InitFn",
    "ModelDef",
    "ModelLike",
    "WideAndDeep",
    "as_model",
    "from_nnx",
]

InitFn = Callable[[jax.Array, Features], PyTree]
"""``init(key, example_features) -> params``."""

ApplyFn = Callable[..., Any]
"""``apply(params, features, *, train: bool, key: jax.Array | None) -> outputs``."""


@runtime_checkable
class ModelLike(Protocol):
    """Anything with pure ``init`` and ``apply`` functions."""

    def init(self, key: jax.Array, features: Features) -> PyTree: ...

    def apply(
        self,
        params: PyTree,
        features: Features,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> Any: ...


class ModelDef(NamedTuple):
    """A model given as two pure functions.

    Attributes:
      init: ``init(key, example_features) -> params``.
      apply: ``apply(params, features, *, train, key) -> outputs``.

    Example:
      >>> def init(key, feats):
      ...     return {"w": jax.random.normal(key, (len(feats),)), "b": jnp.zeros(())}
      >>> def apply(params, feats, *, train=False, key=None):
      ...     x = jnp.stack([feats[k] for k in sorted(feats)], axis=1)
      ...     return x @ params["w"] + params["b"]
      >>> model = ModelDef(init, apply)
    """

    init: InitFn
    apply: ApplyFn


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "linear": lambda x: x,
}


def _activation(act: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    if callable(act):
        return act
    try:
        return _ACTIVATIONS[act]
    except KeyError:
        raise ValueError(
            f"unknown activation {act!r}; use one of {sorted(_ACTIVATIONS)} or pass a function"
        ) from None


def _is_int(x: Any) -> bool:
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.integer))


def _feature_names(features: Features, names: Sequence[str] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(sorted(features))
    missing = [n for n in names if n not in features]
    if missing:
        raise KeyError(
            f"model features {missing} are not in the batch (batch has {sorted(features)}); "
            "feed them or change features=[...]"
        )
    return tuple(names)


def _split(
    features: Features, names: Sequence[str], vocab_sizes: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    numeric, ids = [], []
    for n in names:
        if n in vocab_sizes:
            if not _is_int(features[n]):
                raise TypeError(
                    f"feature {n!r} has a vocabulary size but dtype {features[n].dtype}; "
                    "id features must be integers (int32)"
                )
            ids.append(n)
        else:
            numeric.append(n)
    return numeric, ids


def _numeric_block(features: Features, names: Sequence[str], dtype: Any) -> jax.Array | None:
    if not names:
        return None
    cols = []
    for n in names:
        x = jnp.asarray(features[n])
        cols.append(x.reshape(x.shape[0], -1).astype(dtype))
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=1)


def _lookup(table: jax.Array, ids: Array) -> jax.Array:
    ids = jnp.asarray(ids).astype(jnp.int32)
    return jnp.take(table, ids.reshape(ids.shape[0]), axis=0, mode="clip")


def _dense_init(key: jax.Array, n_in: int, n_out: int) -> dict[str, jax.Array]:
    w = jax.nn.initializers.glorot_uniform()(key, (n_in, n_out), jnp.float32)
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def _embed_init(key: jax.Array, vocab: int, dim: int) -> jax.Array:
    return jax.random.uniform(key, (vocab, dim), jnp.float32, -0.05, 0.05)


def _numeric_width(features: Features, names: Sequence[str]) -> int:
    width = 0
    for n in names:
        shape = jnp.shape(features[n])
        width += math.prod(shape[1:])
    return width


def _mlp_tower(
    layers: Sequence[Mapping[str, jax.Array]],
    x: jax.Array,
    act: Callable[[jax.Array], jax.Array],
    dropout: float,
    train: bool,
    key: jax.Array | None,
) -> jax.Array:
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            x = act(x)
            if train and dropout > 0.0:
                if key is None:
                    raise ValueError(
                        "dropout needs a PRNG key: call apply(..., train=True, key=key)"
                    )
                keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - dropout, x.shape)
                x = jnp.where(keep, x / (1.0 - dropout), 0).astype(x.dtype)
    return x


def _check_width(
    name: str, x: jax.Array, w: jax.Array, numeric: Sequence[str], ids: Sequence[str] = ()
) -> None:
    if x.shape[1] != w.shape[0]:
        raise ValueError(
            f"{name} was initialised for an input width of {w.shape[0]} but this batch gives "
            f"{x.shape[1]} (numeric features: {list(numeric)}, id features: {list(ids)}); feed "
            "the same features as at init, or fix them with features=[...]"
        )


@dataclasses.dataclass(frozen=True)
class MLP:
    """A multi-layer perceptron over tabular features.

    Args:
      hidden: widths of the hidden layers.
      out: width of the output layer; outputs are ``[b, out]`` (the built-in
        losses accept ``[b, 1]`` outputs with ``[b]`` labels).
      activation: name (``"relu"``, ``"gelu"``, ``"tanh"``, ...) or function.
      dropout: dropout rate after each hidden layer while training.
      features: feature names to use (default: every key of the batch).
      vocab_sizes: ``{name: vocabulary size}`` for integer id features, which
        are embedded; other features are numeric (see the module docstring).
      embedding_dim: width of each embedding.

    Example:
      >>> model = MLP(hidden=(64, 64), out=1, vocab_sizes={"workclass": 10})
      >>> feats = {"age": jnp.ones(8), "workclass": jnp.zeros(8, jnp.int32)}
      >>> params = model.init(jax.random.key(0), feats)
      >>> model.apply(params, feats, train=False, key=None).shape
      (8, 1)
    """

    hidden: Sequence[int] = (64, 64)
    out: int = 1
    activation: str | Callable[[jax.Array], jax.Array] = "relu"
    dropout: float = 0.0
    features: Sequence[str] | None = None
    vocab_sizes: Mapping[str, int] | None = None
    embedding_dim: int = 8

    def init(self, key: jax.Array, features: Features) -> PyTree:
        """Create parameters for the features in ``features`` (only shapes and dtypes are used)."""
        vocab = dict(self.vocab_sizes or {})
        numeric, ids = _split(features, _feature_names(features, self.features), vocab)
        k_emb, k_dense = jax.random.split(key)
        embed = {
            n: _embed_init(jax.random.fold_in(k_emb, i), vocab[n], self.embedding_dim)
            for i, n in enumerate(ids)
        }
        width = _numeric_width(features, numeric) + len(ids) * self.embedding_dim
        if width == 0:
            raise ValueError("MLP has no input features; the batch is empty")
        dims = [width, *self.hidden, self.out]
        layers = [
            _dense_init(jax.random.fold_in(k_dense, i), dims[i], dims[i + 1])
            for i in range(len(dims) - 1)
        ]
        return {"embed": embed, "layers": layers}

    def apply(
        self,
        params: PyTree,
        features: Features,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Return ``[b, out]`` outputs (logits for classification)."""
        vocab = dict(self.vocab_sizes or {})
        numeric, ids = _split(features, _feature_names(features, self.features), vocab)
        dtype = params["layers"][0]["w"].dtype
        parts = []
        x_num = _numeric_block(features, numeric, dtype)
        if x_num is not None:
            parts.append(x_num)
        parts += [_lookup(params["embed"][n], features[n]).astype(dtype) for n in ids]
        x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        _check_width("MLP", x, params["layers"][0]["w"], numeric, ids)
        return _mlp_tower(
            params["layers"], x, _activation(self.activation), self.dropout, train, key
        )


@dataclasses.dataclass(frozen=True)
class WideAndDeep:
    """Wide & Deep: a linear model plus an MLP over embeddings, summed.

    The wide part is linear in the numeric features and has one learned weight
    vector per id (a linear model over one-hot ids); the deep part is an
    :class:`MLP` over numeric features and embeddings.

    Args:
      hidden: hidden widths of the deep part.
      out: output width; outputs are ``[b, out]``.
      activation: activation of the deep part.
      dropout: dropout rate of the deep part while training.
      features: features of the deep part (default: all).
      wide_features: features of the wide part (default: all).
      vocab_sizes: ``{name: vocabulary size}`` for integer id features.
      embedding_dim: embedding width in the deep part.

    Example:
      >>> model = WideAndDeep(hidden=(32, 16), vocab_sizes={"city": 100})
    """

    hidden: Sequence[int] = (64, 32)
    out: int = 1
    activation: str | Callable[[jax.Array], jax.Array] = "relu"
    dropout: float = 0.0
    features: Sequence[str] | None = None
    wide_features: Sequence[str] | None = None
    vocab_sizes: Mapping[str, int] | None = None
    embedding_dim: int = 8

    def _deep(self) -> MLP:
        return MLP(
            hidden=self.hidden,
            out=self.out,
            activation=self.activation,
            dropout=self.dropout,
            features=self.features,
            vocab_sizes=self.vocab_sizes,
            embedding_dim=self.embedding_dim,
        )

    def init(self, key: jax.Array, features: Features) -> PyTree:
        """Create parameters for both parts."""
        vocab = dict(self.vocab_sizes or {})
        k_wide, k_deep = jax.random.split(key)
        numeric, ids = _split(features, _feature_names(features, self.wide_features), vocab)
        wide = {
            "linear": _dense_init(k_wide, max(_numeric_width(features, numeric), 1), self.out),
            "ids": {n: jnp.zeros((vocab[n], self.out), jnp.float32) for n in ids},
        }
        return {"wide": wide, "deep": self._deep().init(k_deep, features)}

    def apply(
        self,
        params: PyTree,
        features: Features,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Return ``[b, out]`` outputs: wide logits plus deep logits."""
        vocab = dict(self.vocab_sizes or {})
        numeric, ids = _split(features, _feature_names(features, self.wide_features), vocab)
        lin = params["wide"]["linear"]
        dtype = lin["w"].dtype
        x = _numeric_block(features, numeric, dtype)
        b = jnp.shape(next(iter(features.values())))[0]
        if x is None:
            wide = jnp.broadcast_to(lin["b"], (b, self.out))
        else:
            _check_width("WideAndDeep (wide part)", x, lin["w"], numeric)
            wide = x @ lin["w"] + lin["b"]
        for n in ids:
            wide = wide + _lookup(params["wide"]["ids"][n], features[n]).astype(dtype)
        deep = self._deep().apply(params["deep"], features, train=train, key=key)
        return wide + deep


def from_nnx(module: Any) -> ModelDef:
    """Adapt a Flax NNX module to a :class:`ModelDef`.

    The module is called as ``module(features)`` with the feature dict. Its
    ``nnx.Param`` variables become the trainable params (a plain nested dict);
    everything else (RNG streams, BatchNorm statistics) is kept as it was when
    the module was built. ``train`` switches ``deterministic`` /
    ``use_running_average`` on the module's layers, and while training the
    ``dropout`` RNG stream is reseeded from the step's key, so dropout is
    reproducible. Parameters come from the module's own construction, so
    ``init`` ignores its key: seed the module with ``nnx.Rngs(seed)``.

    Args:
      module: an ``nnx.Module``.

    Returns:
      A :class:`ModelDef`.

    Example:
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.lin = nnx.Linear(2, 1, rngs=rngs)
      ...     def __call__(self, f):
      ...         return self.lin(jnp.stack([f["a"], f["b"]], axis=1))
      >>> model = from_nnx(Net(nnx.Rngs(0)))
    """
    from flax import nnx

    graphdef, param_state, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
    pure = nnx.to_pure_dict(param_state)
    has_dropout_stream = any(
        isinstance(v, nnx.RngKey) and getattr(v, "tag", None) == "dropout"
        for _, v in nnx.iter_graph(module)
    )

    def init(key: jax.Array, features: Features) -> PyTree:
        del key, features
        return jax.tree.map(jnp.asarray, pure)

    def apply(
        params: PyTree, features: Features, *, train: bool = False, key: jax.Array | None = None
    ) -> Any:
        # fresh Variable objects inside this trace (the module's own ones may not be mutated here)
        state = jax.tree.map(lambda x: x, param_state)
        nnx.replace_by_pure_dict(state, params)
        m = nnx.merge(graphdef, state, jax.tree.map(lambda x: x, rest))
        m = nnx.view(
            m, deterministic=not train, use_running_average=not train, raise_if_not_found=False
        )
        if train and key is not None and has_dropout_stream:
            nnx.reseed(m, dropout=key)
        return m(dict(features))

    return ModelDef(init, apply)


def as_model(model: Any) -> ModelDef:
    """Coerce a model given in any supported form into a :class:`ModelDef`.

    Args:
      model: a :class:`ModelDef`, an object with ``init``/``apply`` methods
        (:class:`MLP`, :class:`WideAndDeep`, your own), a tuple
        ``(init, apply)``, or a Flax ``nnx.Module``.

    Returns:
      A :class:`ModelDef`.
    """
    if isinstance(model, ModelDef):
        return model
    try:
        from flax import nnx

        if isinstance(model, nnx.Module):
            return from_nnx(model)
    except ImportError:  # pragma: no cover - flax is a dependency
        pass
    if isinstance(model, tuple) and len(model) == 2 and all(callable(f) for f in model):
        return ModelDef(*model)
    if callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None)):
        return ModelDef(model.init, model.apply)
    raise TypeError(
        f"cannot use {type(model).__name__} as a model: pass an object with init(key, features) "
        "and apply(params, features, *, train, key), a tuple (init, apply), or an nnx.Module"
    )
