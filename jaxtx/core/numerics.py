"""Numerics shared by the statistics and transform analyzers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["ExactMoments", "merge_moments"]


def merge_moments(
    n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float
) -> tuple[int, float, float]:
    """Merge two (count, mean, sum of squared deviations) triples (Chan et al.)."""
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * (n_a * n_b / n)


# Sums are Python ints in units of 2**-1126 (first moment) and 2**-2252 (second):
# every finite float64 is an integer multiple of 2**-1074.
_S1 = 1126
_S2 = 2 * _S1


def _scaled(value: float, shift: int) -> int:
    """``value * 2**shift`` as an exact int (``value`` finite, a multiple of ``2**-shift``)."""
    num, den = value.as_integer_ratio()
    return num << (shift - (den.bit_length() - 1))


class ExactMoments:
    """Count, mean and standard deviation with an order-independent, exact merge.

    Each added array (a record batch's column) contributes its count, sum and
    sum of squares as exact integers: integer columns exactly from their values,
    float columns from the array's corrected two-pass mean and squared
    deviations (the same float computation for the same array).  Merging adds
    integers, so the result depends only on the multiset of added arrays,
    never on their order, on how a runner distributes them, or on its merge
    tree; the final mean and standard deviation are correctly rounded from
    the exact sums.

    Args:
      n: count.
      s1: sum times ``2**1126``.
      s2: sum of squares times ``2**2252``; ``None`` once a square overflowed.
    """

    __slots__ = ("n", "s1", "s2")

    def __init__(self, n: int = 0, s1: int = 0, s2: int | None = 0) -> None:
        self.n = n
        self.s1 = s1
        self.s2 = s2

    def add(self, x: np.ndarray) -> None:
        """Add finite values (one array: a batch's column).

        Args:
          x: integer, boolean or float values, without NaN or infinities.
        """
        n = len(x)
        if n == 0:
            return
        if x.dtype.kind in "iub":
            xi = x.astype(np.int64, copy=False)
            amax = max(int(xi.max()), -int(xi.min()))
            if amax * amax * n < 1 << 62:  # int64 sums cannot overflow
                self._add_sums(n, int(xi.sum()) << _S1, int(np.dot(xi, xi)) << _S2)
                return
            x = xi.astype(np.float64)
        xf = x.astype(np.float64, copy=False)
        center = float(xf.mean())
        d = xf - center
        correction = float(d.sum()) / n
        m2 = max(float(np.dot(d, d)) - correction * correction * n, 0.0)
        mean = center + correction
        if not (math.isfinite(mean) and math.isfinite(m2)):
            self.n += n
            self.s2 = None
            if math.isfinite(mean):
                self.s1 += n * _scaled(mean, _S1)
            return
        s1 = n * _scaled(mean, _S1)
        num, den = mean.as_integer_ratio()
        k = den.bit_length() - 1
        self._add_sums(n, s1, _scaled(m2, _S2) + ((n * num * num) << (_S2 - 2 * k)))

    def _add_sums(self, n: int, s1: int, s2: int) -> None:
        self.n += n
        self.s1 += s1
        if self.s2 is not None:
            self.s2 += s2

    def merge(self, other: ExactMoments) -> None:
        """Add the values summarized by ``other``."""
        self.n += other.n
        self.s1 += other.s1
        self.s2 = None if self.s2 is None or other.s2 is None else self.s2 + other.s2

    def mean(self) -> float | None:
        """The mean, correctly rounded from the exact sum (``None`` without values)."""
        if not self.n:
            return None
        try:
            return self.s1 / (self.n << _S1)  # int / int rounds correctly
        except OverflowError:
            return math.copysign(math.inf, self.s1)

    def m2(self) -> float:
        """Sum of squared deviations from the mean (``inf`` after an overflow)."""
        if not self.n or self.s2 is None:
            return 0.0 if not self.n else math.inf
        try:
            return max(self.n * self.s2 - self.s1 * self.s1, 0) / (self.n << _S2)
        except OverflowError:
            return math.inf

    def std(self) -> float | None:
        """The population standard deviation (``None`` without values)."""
        if not self.n:
            return None
        return math.sqrt(self.m2() / self.n)

    def to_json(self) -> dict[str, Any]:
        """A JSON form (sums as hexadecimal strings) for :meth:`from_json`."""
        return {
            "n": self.n,
            "sum": hex(self.s1),
            "sum_sq": None if self.s2 is None else hex(self.s2),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ExactMoments:
        """Rebuild from :meth:`to_json`.

        Args:
          doc: the JSON form.

        Returns:
          The moments.
        """
        s2 = doc.get("sum_sq")
        return cls(int(doc["n"]), int(doc["sum"], 16), None if s2 is None else int(s2, 16))

    def __getstate__(self) -> tuple[int, int, int | None]:
        return self.n, self.s1, self.s2

    def __setstate__(self, state: tuple[int, int, int | None]) -> None:
        self.n, self.s1, self.s2 = state
