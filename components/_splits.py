"""Split names across components: checking them, and the split an Evaluator scores by default.

The Trainer records the splits it used in its Model's properties
(``train_split``, ``eval_split``, ``early_stopping_split``); the Evaluator
reads them to pick a split the model was not selected on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check_splits", "default_evaluation_split", "split_list"]


def split_list(splits: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """One split name or several as a list; ``default`` when None.

    Args:
      splits: ``"train"``, ``["train", "eval"]`` or None.
      default: the names used when ``splits`` is None.

    Returns:
      The names, in the order given, without repeats.
    """
    if splits is None:
        names = list(default)
    elif isinstance(splits, str):
        names = [splits]
    else:
        names = [str(s) for s in splits]
    return list(dict.fromkeys(names))


def check_splits(examples: Any, splits: Sequence[str], *, component: str, parameter: str) -> None:
    """Raise when a named split is not a split of ``examples``.

    Args:
      examples: an ``Examples`` artifact.
      splits: the names asked for.
      component: the component's name, for the message.
      parameter: the parameter that named them, for the message.

    Raises:
      ValueError: naming the missing split(s), the artifact and its splits.
    """
    if not splits:
        raise ValueError(
            f"{component}: {parameter} names no split; "
            f"name one or more of {examples.split_names} ({examples.uri})"
        )
    missing = [s for s in splits if s not in examples.split_names]
    if missing:
        which = ", ".join(repr(s) for s in missing)
        raise ValueError(
            f"{component}: {parameter} names split {which}, which {examples.uri} does not have; "
            f"its splits are {examples.split_names}. Name one of those (or give ExampleGen "
            "split_names / split_patterns that produce it)."
        )


def default_evaluation_split(
    split_names: Sequence[str], model_properties: Mapping[str, Any]
) -> tuple[str, str]:
    """The split to evaluate a model on when none is named, and why.

    Preference: a split the Trainer never read (``test`` first, then the
    examples' order); then the Trainer's validation split when it did not
    early-stop on it; then the early-stopping split (its metrics are
    optimistic, and the reason says so). A model without recorded splits
    is taken to have trained on ``train`` and early-stopped on ``eval``
    (the Trainer's defaults).

    Args:
      split_names: the splits of the examples to evaluate.
      model_properties: the Model artifact's properties.

    Returns:
      ``(split, reason)``.

    Raises:
      ValueError: no split besides the training split.
    """
    train = model_properties.get("train_split", "train")
    validation = model_properties.get("eval_split", "eval")
    stopped_on = model_properties.get("early_stopping_split", validation)
    unseen = [s for s in split_names if s not in (train, validation)]
    if unseen:
        split = "test" if "test" in unseen else unseen[0]
        return (
            split,
            f"the Trainer did not read it (it trained on {train!r}, validated on {validation!r})",
        )
    if validation in split_names and validation != stopped_on:
        return validation, (
            f"the Trainer's validation split, not used for early stopping (trained on {train!r})"
        )
    if stopped_on in split_names and stopped_on != train:
        return stopped_on, (
            f"the only split besides the training split {train!r}; the Trainer early-stopped "
            "on it, so its metrics are optimistic (add a test split to evaluate on held-out data)"
        )
    raise ValueError(
        f"Evaluator: the examples have no split besides the training split {train!r} "
        f"(splits: {list(split_names)}); give a held-out split (ExampleGen split_names or "
        "split_patterns) or name one with split="
    )
