"""Model cards rendered from a run's own record, never written by hand.

The pretraining recipe writes ``OUTPUT_DIR/final/run_record.json`` (a :class:`RunRecord`);
:func:`write_model_card` turns it into the export's ``README.md`` with ``huggingface_hub``'s
``ModelCard``/``ModelCardData`` (YAML metadata incl. ``model-index``) and the jinja2 template
``geofm_hf/templates/model_card.md``. Every field the record lacks is rendered as an explicit
"not recorded" rather than guessed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._atomic import atomic_write_text

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
RUN_RECORD_NAME = "run_record.json"
NOT_RECORDED = "not recorded"

BIBTEX = """@inproceedings{tsaris2024pretraining,
  title     = {Pretraining Billion-scale Geospatial Foundational Models on Frontier},
  author    = {Tsaris, Aristeidis and Dias, Philipe Ambrozio and Potnis, Abhishek and
               Yin, Junqi and Wang, Feiyi and Lunga, Dalton},
  booktitle = {2024 IEEE International Parallel and Distributed Processing Symposium
               Workshops (IPDPSW)},
  pages     = {1036--1046},
  year      = {2024},
  eprint    = {2404.11706},
  archivePrefix = {arXiv}
}"""

_BASE_TAGS = ["geospatial", "remote-sensing", "mae", "vit"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EVAL_KEYS = ("task", "dataset_name", "dataset_id", "split", "metric_type", "metric_name", "value")
_BAND_KEYS = ("name", "wavelength_um", "gsd_m", "mean", "std")


@dataclass
class RunRecord:
    """Everything a model card says about one run; JSON-serialisable (``to_dict``/``save``/``load``).

    Attributes:
        preset: size preset name (``"vit-base"``) or None for a custom shape.
        architecture: model class saved (``"GeoViTMAEForPreTraining"``); a class ending in
            ``ForImageClassification`` makes the card's pipeline tag ``image-classification``.
        num_parameters_encoder: parameters of the ViT encoder alone.
        num_parameters_total: parameters of everything saved (encoder + MAE decoder or head).
        image_size, patch_size: pixels; mask_ratio: fraction of patches masked in pretraining.
        bands: rows ``{name, wavelength_um, gsd_m, mean, std}`` in the order the weights expect.
        sensor: sensor id (``"sentinel2-l1c"``), used as a tag; None when unknown.
        datasets: ``[{repo_id_or_path, revision}]``: Hub dataset ids with the revision streamed,
            or local paths (revision None).
        base_model: Hub id (or path) the run continued from; None for random initialisation.
        base_model_revision: commit of ``base_model`` that was loaded.
        run_config: the recipe configuration as run (after command-line overrides).
        accelerate_config: the accelerate/FSDP configuration as run.
        hardware: e.g. ``"8x AMD MI250X GCD (Frontier)"``; world_size: number of processes.
        global_batch: images per optimizer step; steps: optimizer steps taken.
        peak_learning_rate, learning_rate_rule: the peak lr and the rule that chose it.
        wall_time_s, images_per_s, mfu (0..1), final_loss: measured by the recipe.
        loss_curve_png, reconstruction_png: paths relative to the export dir.
        eval_results: ``[{task, dataset_name, dataset_id, split, metric_type, metric_name,
            value}]``, e.g. linear-probe top-1 accuracy.
        license: SPDX-like Hub license id (``"apache-2.0"``); None when not decided.
        repo_id, revision: where the weights are published; revision a commit sha when known.
        package_version, code_revision: geofm_hf version and git commit of the code that ran.
        limitations: run-specific caveats the recipe adds (e.g. "demo run: 300 CPU steps").
        skipped: what the run did not train on (unreadable shards, chips, skipped steps).
        argument_changes: ``[{step, changes: {name: [before, after]}}]``, one per resume that
            changed arguments (learning rate, schedule, ...); ``run_config`` holds the last ones.
    """

    preset: str | None = None
    architecture: str | None = None
    num_parameters_encoder: int | None = None
    num_parameters_total: int | None = None
    image_size: int | None = None
    patch_size: int | None = None
    mask_ratio: float | None = None
    bands: list[dict[str, Any]] = field(default_factory=list)
    sensor: str | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    base_model: str | None = None
    base_model_revision: str | None = None
    run_config: dict[str, Any] = field(default_factory=dict)
    accelerate_config: dict[str, Any] = field(default_factory=dict)
    hardware: str | None = None
    world_size: int | None = None
    global_batch: int | None = None
    peak_learning_rate: float | None = None
    learning_rate_rule: str | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    images_per_s: float | None = None
    mfu: float | None = None
    final_loss: float | None = None
    loss_curve_png: str | None = None
    reconstruction_png: str | None = None
    eval_results: list[dict[str, Any]] = field(default_factory=list)
    license: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    package_version: str | None = None
    code_revision: str | None = None
    limitations: list[str] = field(default_factory=list)
    skipped: dict[str, Any] = field(default_factory=dict)
    argument_changes: list[dict[str, Any]] = field(default_factory=list)

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Build from a dict; unknown keys and malformed rows raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"a run record must be a JSON object, found {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown run record keys {unknown}; expected a subset of {sorted(known)}"
            )
        record = cls(**data)
        record._check()
        return record

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (temp file in the same folder, then rename)."""
        self._check()
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunRecord:
        """Read a record written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_model(cls, model, image_processor=None, **fields: Any) -> RunRecord:
        """Fill the model-derived fields (preset, sizes, parameters, band table) from a model.

        ``image_processor`` (optional) overrides the config's per-band mean/std with the ones the
        data were actually normalised with. ``fields`` set or override the rest.
        """
        config = model.config
        total = sum(p.numel() for p in model.parameters())
        encoder_module = getattr(model, "vit", None)
        encoder = sum(p.numel() for p in encoder_module.parameters()) if encoder_module else None
        names = list(getattr(config, "band_names", None) or [])
        mean = getattr(image_processor, "image_mean", None)
        mean = list(mean) if mean is not None else getattr(config, "image_mean", None)
        std = getattr(image_processor, "image_std", None)
        std = list(std) if std is not None else getattr(config, "image_std", None)
        wl = getattr(config, "wavelengths_um", None)
        gsd = getattr(config, "gsd_m", None)

        def at(values, i):
            return values[i] if values is not None and i < len(values) else None

        bands = [
            {
                "name": n,
                "wavelength_um": at(wl, i),
                "gsd_m": at(gsd, i),
                "mean": at(mean, i),
                "std": at(std, i),
            }
            for i, n in enumerate(names)
        ]
        try:
            from geofm_hf._version import __version__ as version
        except ImportError:  # pragma: no cover - only outside the package
            version = None
        base = {
            "preset": getattr(config, "preset", None),
            "architecture": type(model).__name__,
            "num_parameters_encoder": encoder,
            "num_parameters_total": total,
            "image_size": getattr(config, "image_size", None),
            "patch_size": getattr(config, "patch_size", None),
            "mask_ratio": getattr(config, "mask_ratio", None),
            "bands": bands,
            "package_version": version,
        }
        base.update(fields)
        return cls.from_dict(base)

    def _check(self) -> None:
        for i, row in enumerate(self.bands):
            if not isinstance(row, dict) or "name" not in row:
                raise ValueError(f"bands[{i}] must be a dict with at least 'name', found {row!r}")
            extra = set(row) - set(_BAND_KEYS)
            if extra:
                raise ValueError(
                    f"bands[{i}] has unknown keys {sorted(extra)}; expected {_BAND_KEYS}"
                )
        for i, ds in enumerate(self.datasets):
            if not isinstance(ds, dict) or not ds.get("repo_id_or_path"):
                raise ValueError(
                    f"datasets[{i}] must be {{'repo_id_or_path': ..., 'revision': ...}}, found {ds!r}"
                )
        for i, ev in enumerate(self.eval_results):
            missing = [k for k in ("task", "dataset_name", "metric_type", "value") if k not in ev]
            if missing:
                raise ValueError(f"eval_results[{i}] lacks {missing}; expected keys {_EVAL_KEYS}")
        if self.mfu is not None and not (0 <= self.mfu <= 1):
            raise ValueError(f"mfu is a fraction in [0, 1], found {self.mfu}")


# ---------------------------------------------------------------------- rendering
def render_model_card(record: RunRecord | dict, export_dir: str | os.PathLike) -> ModelCard:
    """Render the card for the export in ``export_dir`` (images are checked there).

    Returns a ``huggingface_hub.ModelCard`` whose ``.data`` is the ``ModelCardData`` metadata.
    Raises ValueError when the record references an image that is not in ``export_dir``.
    """
    if isinstance(record, dict):
        record = RunRecord.from_dict(record)
    record._check()
    export_dir = Path(export_dir)
    for attr in ("loss_curve_png", "reconstruction_png"):
        rel = getattr(record, attr)
        if rel is None:
            continue
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise ValueError(f"{attr} must be a path relative to the export dir, found {rel!r}")
        if not (export_dir / rel).is_file():
            raise ValueError(
                f"{attr}={rel!r} is referenced by the run record but {export_dir / rel} does not "
                "exist; write the figure into the export dir or drop it from the record"
            )

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=_fmt, params=_params, wall=_wall, yaml_block=_yaml_block)
    template = env.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))
    content = template.render(
        card_data=_card_data(record).to_yaml(),
        r=record,
        classifier=_is_classifier(record),
        on_hub=_on_hub,
        NOT_RECORDED=NOT_RECORDED,
        BIBTEX=BIBTEX,
    )
    return ModelCard(content)


def write_model_card(export_dir: str | os.PathLike, record: RunRecord | dict | None = None) -> Path:
    """Render and write ``export_dir/README.md`` atomically; returns its path.

    Without ``record``, reads ``export_dir/run_record.json``.
    """
    export_dir = Path(export_dir)
    if record is None:
        path = export_dir / RUN_RECORD_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no run record at {path}: pass a RunRecord or write {RUN_RECORD_NAME} first"
            )
        record = RunRecord.load(path)
    card = render_model_card(record, export_dir)
    out = export_dir / "README.md"
    atomic_write_text(out, str(card))
    return out


def _interval_args(e: dict[str, Any]) -> dict[str, Any] | None:
    """The 95 % interval of an evaluation (and over how many seeds), for the model-index's
    metric ``args``: the one structured slot of a metric that the Hub's parser keeps."""
    if not e.get("ci95"):
        return None
    args = {"ci95": list(e["ci95"])}
    for key in ("num_seeds", "std_over_seeds"):
        if e.get(key) is not None:
            args[key] = e[key]
    return args


def _is_classifier(r: RunRecord) -> bool:
    return bool(r.architecture and r.architecture.endswith("ForImageClassification"))


def _on_hub(repo_id_or_path: str) -> bool:
    """A Hub dataset id, not a local path that happens to look like one."""
    src = str(repo_id_or_path)
    return bool(_HUB_ID.match(src)) and not os.path.exists(src)


def _card_data(r: RunRecord) -> ModelCardData:
    tags = list(_BASE_TAGS)
    if r.sensor:
        tags.append(r.sensor)
    hub_datasets = [
        d["repo_id_or_path"] for d in r.datasets if _HUB_ID.match(str(d["repo_id_or_path"]))
    ]
    eval_results = [
        EvalResult(
            task_type=e["task"],
            dataset_type=e.get("dataset_id") or e["dataset_name"],
            dataset_name=e["dataset_name"],
            dataset_split=e.get("split"),
            metric_type=e["metric_type"],
            metric_name=e.get("metric_name"),
            metric_value=e["value"],
            metric_args=_interval_args(e),
        )
        for e in r.eval_results
    ]
    kwargs: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "image-classification" if _is_classifier(r) else "image-feature-extraction",
        "tags": tags,
    }
    if r.license:
        kwargs["license"] = r.license
    if hub_datasets:
        kwargs["datasets"] = hub_datasets
    if r.base_model:
        kwargs["base_model"] = r.base_model
    if eval_results:
        kwargs["model_name"] = r.repo_id or r.preset or "geofm-vit-mae"
        kwargs["eval_results"] = eval_results
    return ModelCardData(**kwargs)


def _fmt(value: Any, fmt: str = "{}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RECORDED
    return fmt.format(value)


def _params(n: int | None) -> str:
    if n is None:
        return NOT_RECORDED
    return f"{n:,} ({n / 1e6:.1f}M)" if n < 1e9 else f"{n:,} ({n / 1e9:.2f}B)"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RECORDED
    h, rem = divmod(round(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{seconds:,.0f} s ({h:d} h {m:02d} min {s:02d} s)"


def _yaml_block(d: dict) -> str:
    if not d:
        return f"_{NOT_RECORDED}_"
    return (
        "```yaml\n"
        + yaml.safe_dump(d, sort_keys=False, default_flow_style=False).rstrip()
        + "\n```"
    )


__all__ = [
    "BIBTEX",
    "NOT_RECORDED",
    "RUN_RECORD_NAME",
    "RunRecord",
    "render_model_card",
    "write_model_card",
]
