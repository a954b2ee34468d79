"""Where a run's model comes from: a local export, or a Hub repo id at a revision (read offline
from the cache under ``HF_HUB_OFFLINE=1``), and loading it with its image processor."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelSource", "load_pretrained"]


@dataclass
class ModelSource:
    """A model reference resolved once, so every record of the run names the same weights.

    Attributes:
        name_or_path: as given (folder or repo id).
        revision: as given (Hub only).
        local_dir: the export folder, or ``None`` for a Hub repo id.
        commit: the Hub commit actually loaded (``None`` for a local export).
    """

    name_or_path: str
    revision: str | None
    local_dir: Path | None
    commit: str | None

    @classmethod
    def resolve(cls, name_or_path: str, revision: str | None = None) -> ModelSource:
        local = Path(name_or_path)
        if local.is_dir():
            return cls(name_or_path, revision, local, None)
        from ..hub import resolve_model_source

        snapshot = resolve_model_source(name_or_path, revision)
        return cls(name_or_path, revision, None, snapshot.name)  # snapshots/<commit sha>

    @property
    def label(self) -> str:
        """``name@revision`` for logs (``@local`` for an export)."""
        return f"{self.name_or_path}@{self.revision or self.commit or 'local'}"

    def cache_identity(self) -> dict:
        """What names these weights in a feature-cache key: the resolved folder and the weights'
        modification time for an export (retraining into it invalidates the cache), the repo id
        and commit for the Hub."""
        if self.local_dir is None:
            return {"model": self.name_or_path, "revision": self.commit or self.revision,
                    "weights_mtime": None}  # fmt: skip
        weights = self.local_dir / "model.safetensors"
        return {"model": str(self.local_dir.resolve()), "revision": self.revision,
                "weights_mtime": weights.stat().st_mtime_ns if weights.is_file() else None}  # fmt: skip

    def card_dir(self, output_dir: str | Path, record):
        """The folder whose card takes the run's scores, and the run record to start it from.

        A local export's own card; for a Hub model, ``output_dir/model_card``, seeded with the
        snapshot's run record (and the figures it references) when the repo has one, else with
        ``record``.
        """
        if self.local_dir is not None:
            return self.local_dir, record
        from ..hub import resolve_model_source
        from ..model_card import RUN_RECORD_NAME, RunRecord

        card_dir = Path(output_dir) / "model_card"
        card_dir.mkdir(parents=True, exist_ok=True)
        snapshot = resolve_model_source(self.name_or_path, self.revision)
        remote = snapshot / RUN_RECORD_NAME
        if remote.is_file() and not (card_dir / RUN_RECORD_NAME).is_file():
            record = RunRecord.load(remote)
            # The card references the run's figures: bring them along from the snapshot.
            for figure in (record.loss_curve_png, record.reconstruction_png):
                if figure and (snapshot / figure).is_file():
                    shutil.copyfile(snapshot / figure, card_dir / figure)
        return card_dir, record


def load_pretrained(model_class, args, **from_pretrained_kwargs):
    """``(model, image processor)`` of ``args.model_name_or_path`` at ``args.revision``.

    ``model_class`` is a transformers class (``AutoModel``, ``GeoViTMAEForImageClassification``
    ...); ``from_pretrained_kwargs`` go to its ``from_pretrained`` (``num_labels``, ``config``).
    """
    # The Auto classes are registered: importing this module ran geofm_hf/__init__.py first.
    from transformers import AutoImageProcessor

    model = model_class.from_pretrained(
        args.model_name_or_path, revision=args.revision, **from_pretrained_kwargs
    )
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.revision)
    return model, processor
