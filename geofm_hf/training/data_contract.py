"""The data a pretraining run reads and the model config it implies: datasets, bands, chip
size and statistics, decided in one place for the run and for ``--dry_run`` alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from transformers import AutoConfig

import geofm_hf
from geofm_hf import GeoViTMAEConfig, GeoViTMAEImageProcessor
from geofm_hf.data import resolve_source, sample_dataset_path
from geofm_hf.training.arguments import (
    ArgumentError,
)
from geofm_hf.training.collective import on_main_process

if TYPE_CHECKING:
    pass


@dataclass
class DataContract:
    """Where the images come from and what they are (bands, chip size, statistics)."""

    name_or_path: str
    info: object | None  # geofm_hf.data.DatasetInfo; None for synthetic data
    # Every dataset of a mixed-sensor run, (name_or_path, info); the first is the one above.
    datasets: list[tuple[str, object]] = field(default_factory=list)
    weights: dict[str, float] | None = None
    # name -> DatasetSource (commit, metadata, shards, row counts) resolved by the main process.
    sources: dict = field(default_factory=dict)


def read_data_contract(data_args, accelerator=None) -> DataContract:
    """The run's datasets, resolved once: with an ``accelerator`` of several processes, the main
    process alone asks the Hub (commit, ``geofm_dataset.json``, shard list) and every rank
    receives its answer or its error, so start-up requests do not grow with the ranks and all
    ranks read one commit."""
    names = [n.strip() for n in (data_args.dataset_name_or_path or "").split(",") if n.strip()] or [
        str(sample_dataset_path())
    ]
    if data_args.synthetic_data:
        return DataContract(names[0], None)
    sources = on_main_process(
        accelerator,
        lambda: {
            n: resolve_source(n, data_args.train_split, revision=data_args.dataset_revision)
            for n in names
        },
    )
    datasets = [(n, sources[n].info) for n in names]
    for name, info in datasets:
        bad = {k: v for k, v in (("mean", info.mean), ("std", info.std))
               if not all(math.isfinite(x) for x in v)}  # fmt: skip
        if bad:
            raise ValueError(
                f"{name}: geofm_dataset.json holds non-finite normalisation statistics "
                f"{bad}: every batch would be NaN. Rewrite the dataset (its statistics must "
                "exclude NaN/inf pixels) or fix mean/std there."
            )
    weights = None
    if data_args.dataset_weights:
        values = [float(w) for w in data_args.dataset_weights.split(",")]
        if len(values) != len(names):
            raise ValueError(
                f"--dataset_weights needs one weight per dataset: expected {len(names)} for "
                f"{names}, found {len(values)}: {values}."
            )
        weights = dict(zip(names, values))
    return DataContract(names[0], datasets[0][1], datasets, weights, sources)


def build_model_config(model_args, data_args, data_info, datasets=()) -> GeoViTMAEConfig:
    """The one place a run's model config is decided, for the run and for ``--dry_run`` alike.

    Continuing: the checkpoint's config (its bands must be the dataset's). From scratch: the
    preset's shape with the dataset's band contract and statistics.
    """
    if model_args.model_name_or_path:
        try:
            config = AutoConfig.from_pretrained(
                model_args.model_name_or_path, revision=model_args.model_revision
            )
        except (OSError, ValueError) as err:  # a dataset folder, a typo, no config.json
            raise ArgumentError(
                f"--model_name_or_path {model_args.model_name_or_path} is not a model export "
                f"(a folder or Hub repo with config.json): {' '.join(str(err).split())[:300]}. "
                "Pass an export folder (OUTPUT_DIR/final) or an ORG/NAME model repo."
            ) from None
        if not isinstance(config, GeoViTMAEConfig):
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {type(config).__name__}; continuing "
                "pretraining needs a GeoViTMAEForPreTraining checkpoint."
            )
        # A wavelength model takes any bands; a conv model only the ones it learnt.
        if data_info is not None and config.patch_embedding == "conv":
            check_band_contract(config, data_info)
        for name in ("mask_ratio", "norm_pix_loss"):
            if getattr(model_args, name) is not None:
                setattr(config, name, getattr(model_args, name))
        if model_args.image_size is not None and model_args.image_size != config.image_size:
            raise ArgumentError(
                f"--image_size {model_args.image_size} differs from the {config.image_size} px "
                f"that {model_args.model_name_or_path} was trained at; continued pretraining "
                f"keeps the checkpoint's size: drop --image_size or pass {config.image_size}."
            )
        check_image_size(config.image_size, getattr(data_info, "chip_size", None),
                         config.patch_size, asked=False,
                         source=f"{model_args.model_name_or_path}'s")  # fmt: skip
        for name in ("num_frames", "tubelet_size", "temporal_encoding", "location_encoding"):
            asked = getattr(model_args, name)
            if asked not in (None, getattr(GeoViTMAEConfig(), name), getattr(config, name)):
                raise ArgumentError(
                    f"--{name} {asked} differs from {model_args.model_name_or_path}'s "
                    f"{getattr(config, name)}; continued pretraining keeps the model's shape."
                )
        check_frames(config.num_frames, datasets or [("dataset", data_info)])
        config._attn_implementation = model_args.attn_implementation
        return config

    infos = [info for _, info in datasets if info is not None] or (
        [data_info] if data_info is not None else []
    )
    stored = {info.num_frames for info in infos}
    overrides = {
        "attn_implementation": model_args.attn_implementation,
        "patch_embedding": model_args.patch_embedding,
        "wavelength_embed_dim": model_args.wavelength_embed_dim,
        "wavelength_bandwidths": _use_bandwidths(model_args, infos),
        # Default: the data's frames (all datasets of a run must agree, checked below).
        "num_frames": model_args.num_frames or (min(stored) if stored else 1),
        "tubelet_size": model_args.tubelet_size,
        "temporal_encoding": model_args.temporal_encoding,
        "location_encoding": model_args.location_encoding,
        "metadata_dropout": model_args.metadata_dropout,
    }
    check_frames(overrides["num_frames"], datasets or [("dataset", data_info)])
    if len(datasets) > 1:
        if model_args.patch_embedding != "wavelength":
            raise ValueError(
                f"{len(datasets)} datasets were given ({[n for n, _ in datasets]}): mixing "
                "sensors needs --patch_embedding wavelength (conv kernels are tied to one band "
                "set)."
            )
        # No single band contract: each dataset brings its bands, wavelengths and statistics.
        overrides["num_channels"] = len(data_info.band_names)
    elif data_info is not None:
        overrides.update(
            num_channels=len(data_info.band_names),
            band_names=data_info.band_names,
            wavelengths_um=data_info.wavelengths_um,
            gsd_m=data_info.gsd_m,
            image_mean=data_info.mean,
            image_std=data_info.std,
        )
    else:
        overrides["num_channels"] = data_args.synthetic_channels
    for name in ("mask_ratio", "norm_pix_loss"):
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    preset = geofm_hf.PRESETS.get(model_args.preset, {})
    patch = preset.get("patch_size", 16)
    size = model_args.image_size or preset.get("image_size", 224)
    chips = [info.chip_size for _, info in datasets if info is not None] or (
        [data_info.chip_size] if data_info is not None else []
    )
    check_image_size(size, min(chips) if chips else None, patch,
                     asked=model_args.image_size is not None,
                     source=f"the {model_args.preset} preset's")  # fmt: skip
    overrides["image_size"] = size
    return GeoViTMAEConfig.from_preset(model_args.preset, **overrides)


def check_image_size(size: int, chip: int | None, patch: int, *, asked: bool, source: str) -> None:
    """A training size is never changed silently: one larger than the chips is refused."""
    if chip is None or size <= chip:
        return
    fits = (chip // patch) * patch
    what = f"--image_size {size}" if asked else f"{source} image_size {size}"
    raise ArgumentError(
        f"{what} is larger than the dataset's {chip} px chips. Pass --image_size {fits} (the "
        f"largest multiple of the patch size {patch} that fits; training crops it from each "
        f"chip at the chips' ground resolution), or write the shards with chips of at least "
        f"{size} px."
    )


def _use_bandwidths(model_args, infos) -> bool:
    """``--wavelength_bandwidths auto``: a wavelength model reads bandwidths when every dataset
    knows them (so inference, given them by the processor, matches pretraining)."""
    choice = str(model_args.wavelength_bandwidths).lower()
    if model_args.patch_embedding != "wavelength" or choice == "false":
        return False
    known = bool(infos) and all(info.band_widths() is not None for info in infos)
    if choice == "true" and not known:
        raise ArgumentError(
            "--wavelength_bandwidths true, but not every dataset knows its bands' widths "
            "(bandwidths_um in geofm_dataset.json, or a sensor in the tables): pass auto or false."
        )
    if choice not in ("auto", "true"):
        raise ArgumentError(f"--wavelength_bandwidths must be auto, true or false: found {choice}.")
    return known


def check_frames(num_frames: int, datasets) -> None:
    """Every dataset must hold at least ``num_frames`` frames per chip (picked clearest first)."""
    short = {name: info.num_frames for name, info in datasets
             if info is not None and info.num_frames < num_frames}  # fmt: skip
    if short:
        raise ArgumentError(
            f"the model takes {num_frames} frames per sample but {short} hold fewer per chip; "
            "pass --num_frames at most that, or write time-series shards with "
            "geofm-make-shards --num-frames"
        )


def check_band_contract(config, data_info) -> None:
    """Continuing pretraining: the dataset must carry the model's bands, in the model's order."""
    model_bands, data_bands = list(config.band_names or []), list(data_info.band_names)
    if model_bands == data_bands:
        return
    missing = [b for b in model_bands if b not in data_bands]
    extra = [b for b in data_bands if b not in model_bands]
    detail = []
    if missing:
        detail.append(f"missing from the dataset: {missing}")
    if extra:
        detail.append(f"not in the model: {extra}")
    if not missing and not extra:
        detail.append("same bands in another order")
    raise ValueError(
        f"The dataset's bands {data_bands} do not match the model's {model_bands} "
        f"({'; '.join(detail)}). Rewrite the shards with --bands in the model's order, or start "
        "from scratch."
    )


def build_processor(config: GeoViTMAEConfig, data: DataContract):
    """The exported image processor. Training crops ``image_size`` windows out of larger chips at
    the chips' own ground resolution, so inference crops the same way instead of resampling a
    chip down to ``image_size`` (which would show the model another ground resolution)."""
    if config.patch_embedding == "wavelength":
        # Takes any bands and returns their wavelengths; statistics belong to each sensor.
        return GeoViTMAEImageProcessor.from_model_config(config)
    if config.image_mean is None:
        return None
    chip = getattr(data.info, "chip_size", None)
    if chip is not None and chip > config.image_size:
        return GeoViTMAEImageProcessor.from_model_config(
            config, size=chip, crop_size=config.image_size
        )
    return GeoViTMAEImageProcessor.from_model_config(config)
