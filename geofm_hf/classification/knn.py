"""The weighted k-nearest-neighbour probe of DINO (Caron et al. 2021, ``eval_knn.py``).

Features are L2-normalised; each test sample takes its ``k`` most cosine-similar training samples
and each of them votes for its class with weight ``exp(similarity / T)``. No training, no seed:
the same cached features give the same answer in seconds, which makes it a cheap second opinion
beside the linear probe (it measures the feature space's neighbourhoods, the linear probe its
linear separability).
"""

from __future__ import annotations

import torch

__all__ = ["KNN_K", "KNN_TEMPERATURE", "knn_scores"]

KNN_K = 20
KNN_TEMPERATURE = 0.07


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    *,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    batch_size: int = 1024,
) -> torch.Tensor:
    """``(N_test, num_classes)`` vote totals (argmax = the prediction; rows sum to 1).

    ``k`` is capped at the number of training samples. Ties between classes go to the lower
    class index (``argmax``), deterministically.
    """
    if len(train_features) != len(train_labels) or len(train_features) == 0:
        raise ValueError(
            f"Expected as many training labels as features (and at least one): found "
            f"{len(train_features)} features and {len(train_labels)} labels."
        )
    if train_features.shape[1:] != test_features.shape[1:]:
        raise ValueError(
            f"Train and test features must have the same width: found "
            f"{tuple(train_features.shape)} and {tuple(test_features.shape)}."
        )
    if k < 1 or temperature <= 0:
        raise ValueError(f"Expected k >= 1 and temperature > 0: found k={k}, T={temperature}.")
    k = min(k, len(train_features))
    train = torch.nn.functional.normalize(train_features.double(), dim=1)
    labels = train_labels.long()
    out = []
    for start in range(0, len(test_features), batch_size):
        test = torch.nn.functional.normalize(
            test_features[start : start + batch_size].double(), dim=1
        )
        similarity, index = (test @ train.T).topk(k, dim=1)  # (B, k)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(test), num_classes, dtype=torch.float64)
        votes.scatter_add_(1, labels[index], weights)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out) if out else torch.empty(0, num_classes, dtype=torch.float64)
