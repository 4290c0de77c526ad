"""Float32 kernels shared by the NumPy and the JAX evaluation of a transform graph.

Both paths must give the same bits for the same inputs. Plain IEEE operations
(``+ - * /``, comparisons, selects) round the same way in NumPy and XLA, but
XLA may rewrite a program before running it:

* ``x / c`` with a constant ``c`` becomes ``x * (1 / c)``; the graph therefore
  *defines* division by a scalar as multiplication by its float32 reciprocal,
  and emits that multiplication itself in both paths;
* a multiplication feeding an addition may be contracted into one fused
  multiply-add (one rounding instead of two). The JAX path passes every
  product through :meth:`Backend.guard`, a select on ``isnan`` that is an
  identity on values but keeps the compiler from fusing across it;
* XLA may also simplify ``(x + c) - c`` to ``x``; the guard after every
  arithmetic result rules that out as well;
* XLA flushes subnormal operands and results of arithmetic to (signed) zero;
  the NumPy path does the same (:func:`flush`);
* transcendental functions differ between libm and XLA by a few ulp, so
  :func:`log1p` is computed from basic operations only (the algorithm of
  musl's ``log1pf``), identically in both paths.

So every float operation of a graph goes through :meth:`Backend.add`,
:meth:`Backend.sub`, :meth:`Backend.mul` or :meth:`Backend.div`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["JAX", "NUMPY", "Backend", "flush", "log1p"]

_F32 = np.float32


def _from_bits(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


# Coefficients and split of ln(2) from musl/fdlibm logf/log1pf.
_LG1 = _F32(0xAAAAAA / 2.0**24)
_LG2 = _F32(0xCCCE13 / 2.0**25)
_LG3 = _F32(0x91E9EE / 2.0**25)
_LG4 = _F32(0xF89E26 / 2.0**26)
_LN2_HI = _from_bits(0x3F317180)
_LN2_LO = _from_bits(0x3717F7D1)
_SMALL_HI = _from_bits(0x3ED413D0)  # 1 + x < sqrt(2) (rounded up)
_SMALL_LO = _from_bits(0x3E95F619)  # 1 + x >= sqrt(2) / 2
_TINY = _F32(2.0**-24)
_MIN_NORMAL = _F32(2.0**-126)


def flush(x: Any) -> Any:
    """Flush float32 subnormals to zero, keeping the sign (as XLA arithmetic does).

    Args:
        x: float32 array or scalar.

    Returns:
        ``x`` with every subnormal value replaced by ``+0.0`` or ``-0.0``.
    """
    return np.where(np.abs(x) < _MIN_NORMAL, x * _F32(0), x)


class Backend:
    """Array namespace plus the few operations whose spelling differs.

    Attributes:
        name: ``"numpy"`` or ``"jax"``.
    """

    name = "numpy"

    @property
    def xp(self) -> Any:
        """The array module (``numpy`` or ``jax.numpy``)."""
        return np

    def guard(self, x: Any) -> Any:
        """Keep the compiler from fusing ``x`` into the next operation (identity)."""
        return x

    def add(self, x: Any, y: Any) -> Any:
        """``x + y``, rounded to float32 on its own."""
        return flush(flush(x) + flush(y))

    def sub(self, x: Any, y: Any) -> Any:
        """``x - y``, rounded to float32 on its own."""
        return flush(flush(x) - flush(y))

    def mul(self, x: Any, y: Any) -> Any:
        """``x * y``, rounded to float32 on its own (never fused with an addition)."""
        return flush(flush(x) * flush(y))

    def div(self, x: Any, y: Any) -> Any:
        """``x / y``, correctly rounded float32 division."""
        return flush(flush(x) / flush(y))

    def bits(self, x: Any) -> Any:
        """Reinterpret float32 values as int32."""
        return np.asarray(x, dtype=np.float32).view(np.int32)

    def from_bits(self, i: Any) -> Any:
        """Reinterpret int32 values as float32."""
        return np.asarray(i, dtype=np.int32).view(np.float32)

    def searchsorted(self, edges: np.ndarray, x: Any) -> Any:
        """Number of ``edges`` ``<= x`` for each value, as int32."""
        return np.searchsorted(edges, x, side="right").astype(np.int32)


class _JaxBackend(Backend):
    name = "jax"

    @property
    def xp(self) -> Any:
        import jax.numpy as jnp

        return jnp

    def guard(self, x: Any) -> Any:
        import jax.numpy as jnp

        return jnp.where(jnp.isnan(x), _F32(np.nan), x)

    def add(self, x: Any, y: Any) -> Any:
        return self.guard(x + y)

    def sub(self, x: Any, y: Any) -> Any:
        return self.guard(x - y)

    def mul(self, x: Any, y: Any) -> Any:
        return self.guard(x * y)

    def div(self, x: Any, y: Any) -> Any:
        return self.guard(x / y)

    def bits(self, x: Any) -> Any:
        import jax.numpy as jnp
        from jax import lax

        return lax.bitcast_convert_type(x, jnp.int32)

    def from_bits(self, i: Any) -> Any:
        import jax.numpy as jnp
        from jax import lax

        return lax.bitcast_convert_type(i, jnp.float32)

    def searchsorted(self, edges: np.ndarray, x: Any) -> Any:
        import jax.numpy as jnp

        if len(edges) == 0:
            return jnp.zeros(jnp.shape(x), jnp.int32)
        return jnp.searchsorted(jnp.asarray(edges), x, side="right").astype(jnp.int32)


NUMPY = Backend()
JAX = _JaxBackend()


def log1p(x: Any, b: Backend) -> Any:
    """``log(1 + x)`` in float32 from basic operations only (same bits on every backend).

    Within 1 ulp of the correctly rounded result (musl's ``log1pf``).

    Args:
        x: float32 array.
        b: The backend evaluating it.

    Returns:
        float32 array: NaN below -1 and for NaN, ``-inf`` at -1, ``+inf`` at ``+inf``.

    Example:
        >>> float(log1p(np.array([1.0], np.float32), NUMPY)[0])  # doctest: +ELLIPSIS
        0.693147...
    """
    xp, add, sub, mul, div = b.xp, b.add, b.sub, b.mul, b.div
    one = _F32(1)
    finite = xp.isfinite(x)
    small = (x >= -_SMALL_LO) & (x < _SMALL_HI)
    general = finite & (x > _F32(-1)) & ~small
    # General case: 1 + x = 2**k * m with m in [sqrt(2)/2, sqrt(2)), plus a
    # correction c for the rounding of 1 + x.
    xg = xp.where(general, x, one)
    u = add(xg, one)
    iu = b.bits(u) + (0x3F800000 - 0x3F3504F3)
    k = (iu >> 23) - 0x7F
    c = xp.where(k >= 2, sub(one, sub(u, xg)), sub(xg, sub(u, one)))
    c = xp.where(k < 25, div(c, u), _F32(0))
    m = b.from_bits((iu & 0x007FFFFF) + 0x3F3504F3)
    f = xp.where(general, sub(m, one), xp.where(small, x, _F32(0)))
    c = xp.where(general, c, _F32(0))
    dk = xp.where(general, k, 0).astype(xp.float32)
    s = div(f, add(_F32(2), f))
    z = mul(s, s)
    w = mul(z, z)
    t1 = mul(w, add(_LG2, mul(w, _LG4)))
    t2 = mul(z, add(_LG1, mul(w, _LG3)))
    hfsq = mul(mul(_F32(0.5), f), f)
    out = mul(s, add(hfsq, add(t2, t1)))
    out = add(out, add(mul(dk, _LN2_LO), c))
    out = add(sub(out, hfsq), f)
    out = add(out, mul(dk, _LN2_HI))
    out = xp.where(xp.abs(x) < _TINY, x, out)
    out = xp.where(x == _F32(-1), _F32(-np.inf), out)
    out = xp.where(x < _F32(-1), _F32(np.nan), out)
    return xp.where(finite, out, xp.where(x > 0, x, _F32(np.nan)))
