"""Classification metrics computed with numpy alone (the training container has no sklearn)."""

from __future__ import annotations

import numpy as np


def accuracy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Return the share of samples whose most probable class is the true one."""
    return float(np.mean(np.argmax(probabilities, axis=1) == targets))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Return the ROC-AUC of `scores` for boolean `positives` (Mann-Whitney U, ties count half).

    Returns nan when either class is absent, since the AUC is then undefined.
    """
    positive_count = int(np.count_nonzero(positives))
    negative_count = len(positives) - positive_count
    if positive_count == 0 or negative_count == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    rank_sum = float(ranks[positives].sum())
    return (rank_sum - positive_count * (positive_count + 1) / 2) / (positive_count * negative_count)


def classification_auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Return the ROC-AUC of class 1 for two classes, else the macro one-vs-rest ROC-AUC.

    Classes missing from `targets` are left out of the macro average; nan if none remain.
    """
    if probabilities.shape[1] == 2:
        return roc_auc(probabilities[:, 1], targets == 1)
    per_class = [roc_auc(probabilities[:, label], targets == label) for label in range(probabilities.shape[1])]
    defined = [value for value in per_class if not np.isnan(value)]
    return float(np.mean(defined)) if defined else float("nan")


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    # 1-based ranks where tied scores share the mean of the positions they occupy.
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group_starts = np.flatnonzero(starts_group)
    group_ends = np.concatenate((group_starts[1:], [len(scores)]))
    group_ranks = (group_starts + 1 + group_ends) / 2
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = group_ranks[np.cumsum(starts_group) - 1]
    return ranks
