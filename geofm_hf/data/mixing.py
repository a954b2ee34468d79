"""Pretraining on several datasets (several sensors) at once, one band set per batch.

Each dataset keeps its own single-dataset loader (:class:`geofm_hf.data.loader.PretrainLoader`,
with its own normalisation and exact resume). At step ``k`` every rank draws the same dataset,
chosen by a generator seeded with ``(seed, k)``: the choice is a pure function of the step, so a
run resumed from :meth:`MixedPretrainLoader.state_dict` draws exactly the datasets and batches an
uninterrupted run would have. Batches are dicts with ``pixel_values`` and the dataset's
``wavelengths`` (what a ``patch_embedding="wavelength"`` model needs), its ``bandwidths`` when
asked for, and whatever else the loader returns (``pixel_mask``, dates and places).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["MixedPretrainLoader"]

_STATE_VERSION = 1


def _per_dataset(values: Mapping[str, list[float] | None], names: list[str], what: str,
                 hint: str) -> dict[str, torch.Tensor]:  # fmt: skip
    """One float32 tensor per dataset from ``values``; a clear error naming those without."""
    lacking = [n for n in names if values.get(n) is None]
    if lacking:
        raise ValueError(f"Datasets {lacking} have no {what}{hint}")
    return {n: torch.tensor(values[n], dtype=torch.float32) for n in names}


class MixedPretrainLoader:
    """Draws each batch from one of several loaders, weighted by size or by explicit weights.

    Args:
        loaders: ``{name: loader}``; each loader yields tensors ``(B, C, H, W)`` or dicts with
            ``pixel_values``, and has ``state_dict`` / ``load_state_dict`` and ``stats``
            (``num_samples``), as :class:`~geofm_hf.data.loader.PretrainLoader` does.
        wavelengths: ``{name: [um, ...]}``, one centre wavelength per band of that dataset.
        bandwidths: ``{name: [um, ...]}``, one full width per band, for a model that reads
            them (``wavelength_bandwidths``); every dataset must then have them.
        weights: ``{name: weight}``; default: each dataset's number of samples, so every sample
            is seen about equally often. Weights need not sum to 1.
        seed: fixes the sequence of datasets (the same on every rank).
    """

    def __init__(
        self,
        loaders: Mapping[str, Any],
        wavelengths: Mapping[str, list[float]],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        bandwidths: Mapping[str, list[float] | None] | None = None,
    ) -> None:
        if not loaders:
            raise ValueError("MixedPretrainLoader needs at least one loader: found none.")
        self.names = list(loaders)
        self.loaders = dict(loaders)
        self.wavelengths = _per_dataset(
            wavelengths, self.names, "wavelengths", ": a mixed-sensor model needs each band's "
            "centre wavelength. Write the dataset with its sensor (wavelengths_um in "
            "geofm_dataset.json) or pass them.",
        )  # fmt: skip
        self.bandwidths = None if bandwidths is None else _per_dataset(
            bandwidths, self.names, "bandwidths", ", which this model reads: write them with "
            "their sensor (bandwidths_um in geofm_dataset.json), or train without bandwidths "
            "(--wavelength_bandwidths false).",
        )  # fmt: skip
        if weights is None:
            weights = {n: float(self.loaders[n].stats["num_samples"]) for n in self.names}
        unknown = sorted(set(weights) - set(self.names))
        if unknown or len(weights) != len(self.names):
            raise ValueError(
                f"weights must name each dataset once: expected {self.names}, found "
                f"{sorted(weights)}."
            )
        values = np.array([float(weights[n]) for n in self.names])
        if (values < 0).any() or not np.isfinite(values).all() or values.sum() <= 0:
            raise ValueError(
                f"weights must be non-negative with a positive sum: found {dict(weights)}."
            )
        self.weights = values / values.sum()
        self.seed = int(seed)
        self._step = 0

    @property
    def stats(self) -> dict[str, Any]:
        """Each loader's accounting, and the mixture's weights and position."""
        return {
            "datasets": {n: self.loaders[n].stats for n in self.names},
            "weights": dict(zip(self.names, self.weights.tolist())),
            "batches_consumed": self._step,
        }

    def dataset_at(self, step: int) -> str:
        """The dataset batch ``step`` comes from (the same on every rank)."""
        rng = np.random.default_rng([self.seed, int(step)])
        return self.names[int(rng.choice(len(self.names), p=self.weights))]

    def __iter__(self):
        iterators: dict[str, Any] = {}
        while True:
            name = self.dataset_at(self._step)
            if name not in iterators:
                # Each loader resumes from its own consumed count when first iterated.
                iterators[name] = iter(self.loaders[name])
            batch = next(iterators[name])
            self._step += 1
            out = dict(batch) if isinstance(batch, Mapping) else {"pixel_values": batch}
            out["wavelengths"] = self.wavelengths[name]
            if self.bandwidths is not None:
                out["bandwidths"] = self.bandwidths[name]
            out["dataset"] = name
            yield out

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: the step, what fixes the draw, and every loader's own state."""
        return {
            "version": _STATE_VERSION,
            "step": self._step,
            "seed": self.seed,
            "names": list(self.names),
            "weights": [float(w) for w in self.weights],
            "loaders": {n: self.loaders[n].state_dict() for n in self.names},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``; datasets, weights and seed must be those the state was saved with."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported mixed stream state version {state.get('version')!r}")
        saved = (state.get("names"), state.get("seed"))
        weights = np.array(state.get("weights") or [])
        if (
            saved != (self.names, self.seed)
            or weights.shape != self.weights.shape
            or not (np.allclose(weights, self.weights))
        ):
            raise ValueError(
                "cannot resume: the saved mixture differs from this one (saved datasets "
                f"{state.get('names')}, weights {state.get('weights')}, seed {state.get('seed')}; "
                f"now {self.names}, {self.weights.tolist()}, {self.seed}); rebuild it with the "
                "saved datasets and weights"
            )
        for name in self.names:
            self.loaders[name].load_state_dict(state["loaders"][name])
        self._step = int(state["step"])
