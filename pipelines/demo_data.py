"""A census-income-like tabular dataset, generated deterministically (no download).

Columns follow the UCI Adult data set: age, workclass, education, education_num,
marital_status, occupation, relationship, race, sex, capital_gain,
capital_loss, hours_per_week, native_region, and the label ``income_over_50k``
(0/1), which depends on the features through a fixed logistic model, so a
model can learn it.

:func:`write_demo_data` writes two daily spans (the second slightly drifted,
with a handful of malformed rows to show the quarantine) and a serving log::

    <root>/span-1/census.csv
    <root>/span-2/census.csv
    <root>/serving/requests.jsonl
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CATEGORIES", "FEATURES", "LABEL", "generate_census", "write_demo_data"]

LABEL = "income_over_50k"
CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": (
        "Private",
        "Self-emp-not-inc",
        "Self-emp-inc",
        "Federal-gov",
        "Local-gov",
        "State-gov",
        "Without-pay",
    ),
    "education": (
        "HS-grad",
        "Some-college",
        "Bachelors",
        "Masters",
        "Assoc-voc",
        "11th",
        "Assoc-acdm",
        "Doctorate",
    ),
    "marital_status": ("Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"),
    "occupation": (
        "Prof-specialty",
        "Craft-repair",
        "Exec-managerial",
        "Adm-clerical",
        "Sales",
        "Other-service",
        "Machine-op-inspct",
        "Transport-moving",
        "Tech-support",
    ),
    "relationship": ("Husband", "Not-in-family", "Own-child", "Unmarried", "Wife"),
    "race": ("White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"),
    "sex": ("Male", "Female"),
    "native_region": ("North-America", "Latin-America", "Europe", "Asia", "Other"),
}
_EDU_NUM = {
    "11th": 7,
    "HS-grad": 9,
    "Some-college": 10,
    "Assoc-voc": 11,
    "Assoc-acdm": 12,
    "Bachelors": 13,
    "Masters": 14,
    "Doctorate": 16,
}
_P = {
    "workclass": (0.70, 0.08, 0.04, 0.03, 0.06, 0.08, 0.01),
    "education": (0.32, 0.22, 0.17, 0.06, 0.05, 0.09, 0.07, 0.02),
    "marital_status": (0.46, 0.33, 0.14, 0.03, 0.04),
    "occupation": (0.14, 0.14, 0.13, 0.13, 0.12, 0.11, 0.07, 0.06, 0.10),
    "relationship": (0.40, 0.26, 0.15, 0.11, 0.08),
    "race": (0.85, 0.09, 0.03, 0.01, 0.02),
    "sex": (0.67, 0.33),
    "native_region": (0.91, 0.04, 0.02, 0.02, 0.01),
}
FEATURES = (
    "age",
    "workclass",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_region",
)


def generate_census(
    n: int, *, seed: int = 0, drift: float = 0.0, missing: float = 0.02
) -> pd.DataFrame:
    """Generate ``n`` rows.

    Args:
      n: rows.
      seed: the same seed gives the same rows.
      drift: 0 for the reference distribution; > 0 shifts ages and hours up and
        tilts occupations (what a later span might look like).
      missing: fraction of missing values in workclass, occupation and native_region.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame()
    df["age"] = np.clip(rng.gamma(7.0, 5.5, n) + 10 + 12 * drift, 17, 90).astype(np.int64)
    for col in (
        "workclass",
        "education",
        "marital_status",
        "occupation",
        "relationship",
        "race",
        "sex",
        "native_region",
    ):
        p = np.array(_P[col], dtype=float)
        if col == "occupation" and drift:
            p = p * np.linspace(1 - drift, 1 + drift, len(p))
        df[col] = rng.choice(CATEGORIES[col], size=n, p=p / p.sum())
    df.loc[(df["sex"] == "Female") & (df["relationship"] == "Husband"), "relationship"] = "Wife"
    df.loc[(df["sex"] == "Male") & (df["relationship"] == "Wife"), "relationship"] = "Husband"
    df["education_num"] = df["education"].map(_EDU_NUM).astype(np.int64)
    has_gain = rng.random(n) < 0.08
    df["capital_gain"] = (
        np.where(has_gain, np.round(rng.lognormal(8.5, 1.0, n)), 0).clip(0, 99999).astype(np.int64)
    )
    has_loss = rng.random(n) < 0.05
    df["capital_loss"] = (
        np.where(has_loss, np.round(rng.normal(1900, 350, n)), 0).clip(0, 4356).astype(np.int64)
    )
    df["hours_per_week"] = np.clip(np.round(rng.normal(40 + 6 * drift, 11, n)), 1, 99).astype(
        np.int64
    )
    logit = (
        -9.2
        + 0.045 * df["age"]
        + 0.36 * df["education_num"]
        + 0.9 * (df["marital_status"] == "Married-civ-spouse")
        + 0.55 * (df["sex"] == "Male")
        + 0.6 * df["occupation"].isin(["Exec-managerial", "Prof-specialty"])
        + 0.028 * df["hours_per_week"]
        + 0.00025 * df["capital_gain"]
        + 0.0006 * df["capital_loss"]
    )
    prob = 1 / (1 + np.exp(-logit))
    df[LABEL] = (rng.random(n) < prob).astype(np.int64)
    for col in ("workclass", "occupation", "native_region"):
        df.loc[rng.random(n) < missing, col] = None
    return df[[*FEATURES, LABEL]]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_demo_data(root: str | Path, *, rows: int = 20_000, seed: int = 0) -> Path:
    """Write the demo spans and serving log below ``root``; returns ``root``.

    Span 2 is drifted and carries 3 malformed lines (a non-number age, a short
    row, a row with an extra field) that ExampleGen quarantines.
    """
    root = Path(root)
    for span, drift in ((1, 0.0), (2, 0.5)):
        d = root / f"span-{span}"
        d.mkdir(parents=True, exist_ok=True)
        text = generate_census(rows, seed=seed + span, drift=drift).to_csv(index=False)
        if span == 2:
            lines = text.splitlines()
            bad = [
                "forty," + lines[5].split(",", 1)[1],  # age is not a number
                ",".join(lines[6].split(",")[:5]),  # too few fields
                lines[7] + ",unexpected",  # too many fields
            ]
            for offset, line in zip((100, 200, 300), bad, strict=True):
                lines.insert(min(offset, len(lines)), line)
            text = "\n".join(lines) + "\n"
        _atomic_write(d / "census.csv", text)
    serving = root / "serving"
    serving.mkdir(parents=True, exist_ok=True)
    req = generate_census(max(rows // 10, 100), seed=seed + 99, drift=0.1).drop(columns=[LABEL])
    lines = [
        json.dumps({k: (None if pd.isna(v) else v) for k, v in row.items()}, default=int)
        for row in req.to_dict(orient="records")
    ]
    _atomic_write(serving / "requests.jsonl", "\n".join(lines) + "\n")
    return root
