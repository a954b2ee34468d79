"""``convert_from`` and the ``geofm-convert`` command: any supported source -> a geofm_hf export
(config, safetensors weights, image processor with the band contract, model card)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .._atomic import check_free_space, disk_full_as
from .._errors import BadInputError, user_error_exit
from ..configuration_geofm import GeoViTMAEConfig
from ..image_processing_geofm import GeoViTMAEImageProcessor
from ..modeling_geofm import GeoViTMAEPreTrainedModel
from .layout import Conversion, UnsupportedSourceError, convert_mae_layout, is_mae_layout
from .sources import KNOWN_SOURCES, KnownSource
from .timm import from_timm_module, is_timm_vit
from .vitmae import from_transformers_vitmae

_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# Training checkpoints wrap the weights; these are the wrappers the public sources use.
_WRAPPERS = ("model", "state_dict", "model_state_dict", "module")


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint needs code execution to load; it was not loaded."""


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a ``.safetensors`` file, or of a pickled ``.pth/.pt/.bin/.ckpt`` read with
    ``torch.load(weights_only=True)`` (anything needing unsafe unpickling is refused).

    Returns the state dict and notes (e.g. which wrapper key held the weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    notes: list[str] = []
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), notes
    if path.suffix not in _PICKLE_SUFFIXES:
        raise ValueError(
            f"Expected a .safetensors or a {'/'.join(_PICKLE_SUFFIXES)} checkpoint: found "
            f"{path.name}."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path.name} cannot be read with torch.load(weights_only=True): it holds Python "
            f"objects beyond tensors and plain containers, and loading those runs code from the "
            f"file. It was not loaded. Reason from torch: {str(e).splitlines()[0]} If you trust "
            "the file, re-save its state dict as safetensors yourself and convert that."
        ) from None
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((k for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            kinds = {k: type(v).__name__ for k, v in obj.items()}
            raise ValueError(
                f"{path.name} holds a dict that is not a state dict (values: {kinds}) and none "
                f"of the wrapper keys {list(_WRAPPERS)}."
            )
        notes.append(f"Weights read from the checkpoint's {inner!r} entry.")
        obj = obj[inner]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path.name} does not hold a state dict: found {type(obj).__name__}.")
    return obj, notes


def download_known_source(
    name: str, revision: str | None = None, token: str | bool | None = None
) -> tuple[Path, str | None]:
    """Downloads a known source's checkpoint with ``huggingface_hub``; returns the local path and
    the commit it came from."""
    from huggingface_hub import hf_hub_download

    source = KNOWN_SOURCES[name]
    path = Path(
        hf_hub_download(
            source.repo_id, source.filename, revision=revision or source.revision, token=token
        )
    )
    # The cache lays files out as .../snapshots/<commit>/<filename>.
    commit = path.parent.name if path.parent.parent.name == "snapshots" else None
    return path, commit


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_expected(conversion: Conversion, source: KnownSource) -> None:
    config = conversion.model.config
    wrong = {
        k: (v, getattr(config, k)) for k, v in source.expected.items() if getattr(config, k) != v
    }
    if wrong:
        detail = ", ".join(f"{k}: expected {e}, found {f}" for k, (e, f) in wrong.items())
        raise UnsupportedSourceError(
            f"The checkpoint does not have the published shape of {source.name} ({detail}); "
            "convert it as a generic checkpoint file with its own arguments instead."
        )


def convert_from(
    source: Any,
    output_dir: str | os.PathLike | None = None,
    *,
    push_to_hub: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    num_frames: int = 1,
    layer_norm_eps: float = 1e-6,
    norm_pix_loss: bool = False,
    encoder_only: bool = False,
    band_names: list[str] | None = None,
    sensor: str | None = None,
    wavelengths_um: list[float] | None = None,
    gsd_m: list[float] | None = None,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    license: str | None = None,
    citation: str | None = None,
    no_normalization: bool = False,
) -> GeoViTMAEPreTrainedModel:
    """Converts ``source`` to a geofm_hf model and, with ``output_dir``, writes the export.

    ``source`` is one of:

    * a known name (``geofm_hf.convert.KNOWN_SOURCES``: ``"ssl4eo-s12-mae-vit-s16"``,
      ``"prithvi-eo-1.0-100m"``, ``"prithvi-eo-2.0-300m"``, ``"prithvi-eo-2.0-600m"`` and the
      ``-tl`` variants with time and location encodings): the
      checkpoint is downloaded from the Hub and the published architecture and band contract
      are used;
    * a checkpoint file (``.safetensors``, or ``.pth/.pt/.bin/.ckpt`` read with
      ``torch.load(weights_only=True)``) in timm / MAE / Prithvi layout: pass ``num_heads``
      (and ``decoder_num_heads`` with an MAE decoder), ``num_frames`` for a time series and the
      band contract (``band_names``; ``sensor`` fills wavelengths and GSD from
      :mod:`geofm_hf.bands`);
    * a timm-layout state dict (same arguments), a timm ``VisionTransformer`` module, or a
      transformers ``ViTMAEModel`` / ``ViTMAEForPreTraining`` (in memory or a saved folder).

    Returns a :class:`GeoViTMAEForPreTraining` where the source has an MAE decoder, else a
    :class:`GeoViTMAEModel`. Anything without an exact counterpart raises
    :class:`UnsupportedSourceError` and nothing is written. ``push_to_hub`` (``ORG/NAME``)
    uploads the export with ``geofm-push``'s uploader.

    Weights with NaN or infinity are refused. An export whose processor would not normalise
    (no ``image_mean``/``image_std`` for a fixed-band model) is refused unless
    ``no_normalization=True`` (``--no-normalization``) says the model takes raw values.
    """
    if sensor is not None:
        if band_names is None:
            raise ValueError(f"sensor={sensor!r} needs band_names (the source's band order).")
        from ..bands import band_gsd, band_wavelengths

        # Unknown names raise here, before anything is converted or written.
        wavelengths_um = wavelengths_um or band_wavelengths(band_names, sensor)
        gsd_m = gsd_m or band_gsd(band_names, sensor)
    contract = {
        "band_names": band_names,
        "wavelengths_um": wavelengths_um,
        "gsd_m": gsd_m,
        "image_mean": image_mean,
        "image_std": image_std,
    }
    contract = {k: v for k, v in contract.items() if v is not None}
    record: dict[str, Any] = {"license": license, "citation": citation}
    # What a state dict does not record (the loss target only matters for further pretraining).
    arch = {
        "num_heads": num_heads,
        "decoder_num_heads": decoder_num_heads,
        "num_frames": num_frames,
        "layer_norm_eps": layer_norm_eps,
        "norm_pix_loss": norm_pix_loss,
    }
    known: KnownSource | None = None
    if isinstance(source, str) and source in KNOWN_SOURCES:
        known = KNOWN_SOURCES[source]
        if contract:
            raise ValueError(
                f"{known.name} has a published band contract; band arguments are not taken "
                f"(found {sorted(contract)})."
            )
        path, commit = download_known_source(known.name, revision, token)
        state, notes = load_checkpoint(path)
        conversion = convert_mae_layout(
            state, encoder_only=encoder_only, **known.arch, **known.band_contract()
        )
        _check_expected(conversion, known)
        conversion.notes[:0] = notes + known.notes
        record.update(
            name=known.title,
            source=f"https://huggingface.co/{known.repo_id}",
            file=known.filename,
            revision=commit or revision or known.revision,
            sha256=_sha256(path),
            license=known.license,
            citation=known.citation,
            band_source=known.band_source,
        )
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        path = Path(source)
        state, notes = load_checkpoint(path)
        conversion = _convert_state_dict(state, arch, encoder_only, contract)
        conversion.notes[:0] = notes
        record.update(name=path.name, source=str(path.resolve()), sha256=_sha256(path))
    elif isinstance(source, (str, os.PathLike)) and (Path(source) / "config.json").is_file():
        source = _load_transformers_vitmae(Path(source))
        conversion = Conversion(from_transformers_vitmae(source, **contract).eval())
        record.update(name=type(source).__name__, source="transformers ViTMAE folder")
    elif isinstance(source, str):
        raise ValueError(
            f"{source!r} is neither a checkpoint file nor a known source. Known sources: "
            f"{', '.join(KNOWN_SOURCES)}."
        )
    elif isinstance(source, dict):
        conversion = _convert_state_dict(source, arch, encoder_only, contract)
        record.update(name="a timm-layout state dict", source="in-memory state dict")
    elif getattr(getattr(source, "config", None), "model_type", None) == "vit_mae":
        model = from_transformers_vitmae(source, **contract)
        conversion = Conversion(model.eval())
        record.update(name=type(source).__name__, source="transformers ViTMAE (in memory)")
    elif is_timm_vit(source):
        conversion = from_timm_module(source, **contract)
        record.update(name=type(source).__name__, source="timm VisionTransformer (in memory)")
    else:
        raise ValueError(
            "Expected a known source name, a checkpoint file, a state dict, a timm "
            "VisionTransformer or a transformers ViTMAE model: found "
            f"{type(source).__name__}."
        )
    model = conversion.model
    _check_finite(model, record.get("name") or "the source")
    if output_dir is not None:
        _check_normalisation(model.config, no_normalization)
        export(model, output_dir, record=record, notes=conversion.notes)
        if push_to_hub:
            from ..hub import main as push_main

            if push_main([str(output_dir), push_to_hub]) != 0:
                raise RuntimeError(
                    f"The export in {output_dir} was written but pushing it to {push_to_hub} "
                    "failed; push it again with `geofm-push`."
                )
    elif push_to_hub:
        raise ValueError("push_to_hub needs output_dir (the export folder that is uploaded).")
    model.conversion_notes = list(conversion.notes)
    return model


def _load_transformers_vitmae(folder: Path):
    """A transformers ViTMAE ``save_pretrained`` folder (safetensors weights only)."""
    from transformers import ViTMAEForPreTraining, ViTMAEModel

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "vit_mae":
        raise ValueError(
            f"{folder} holds a {config.get('model_type')!r} model; folders are converted when they "
            "hold a transformers ViTMAE (model_type 'vit_mae')."
        )
    if not list(folder.glob("*.safetensors")):
        raise UnsafeCheckpointError(
            f"{folder} has no .safetensors weights; pickled weights in a folder are not loaded."
        )
    pretraining = "ViTMAEForPreTraining" in (config.get("architectures") or [])
    cls = ViTMAEForPreTraining if pretraining else ViTMAEModel
    return cls.from_pretrained(folder, use_safetensors=True).eval()


def _convert_state_dict(state: dict, arch: dict, encoder_only: bool, contract: dict) -> Conversion:
    if not is_mae_layout(state):
        raise UnsupportedSourceError(
            "Expected a timm / MAE / Prithvi layout state dict (cls_token, patch_embed.proj, "
            f"blocks.N.attn.qkv, ...): found keys {sorted(state)[:8]}..."
        )
    if arch["num_heads"] is None:
        raise ValueError(
            "A state dict does not record the number of attention heads: pass num_heads "
            "(e.g. 6 for ViT-S, 12 for ViT-B, 16 for ViT-L)."
        )
    return convert_mae_layout(state, encoder_only=encoder_only, **arch, **contract)


def _card(config: GeoViTMAEConfig, record: dict[str, Any], notes: list[str], kind: str) -> str:
    license = record.get("license") or "other"
    rows = []
    for i in range(config.num_channels):

        def cell(field: str, i: int = i) -> str:
            values = getattr(config, field)
            return "" if values is None or values[i] is None else f"{values[i]:g}"

        name = config.band_names[i] if config.band_names else f"channel {i}"
        rows.append(
            f"| {i} | {name} | {cell('wavelengths_um')} | {cell('gsd_m')} | "
            f"{cell('image_mean')} | {cell('image_std')} |"
        )
    lines = [
        "---",
        f"license: {license}",
        "library_name: transformers",
        "tags:",
        "- geofm_hf",
        "- earth-observation",
        "- converted",
        "---",
        "",
        f"# {record.get('name') or 'Converted model'} (geofm_hf format)",
        "",
        f"Converted by `geofm_hf.convert_from` to a `{kind}` with safetensors weights. The "
        "features equal the source model's on the same input (tested on a random-init replica "
        "of the source architecture).",
        "",
        "## Source",
        "",
        f"- Source: {record.get('source')}",
    ]
    for key, label in (("file", "File"), ("revision", "Revision"), ("sha256", "SHA-256")):
        if record.get(key):
            lines.append(f"- {label}: `{record[key]}`")
    lines.append(f"- License of the source weights: {license}")
    if record.get("band_source"):
        lines.append(f"- Band table, normalisation and architecture from: {record['band_source']}")
    lines += [
        "",
        "## Bands (input order)",
        "",
        "| # | band | wavelength (um) | GSD (m) | mean | std |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if config.band_names is None:
        lines += [
            "The source gave no band names: inputs must already be in the source's order.",
            "",
        ]
    if notes:
        lines += ["## Conversion notes", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import geofm_hf  # or trust_remote_code=True without the package",
        "from transformers import AutoImageProcessor, AutoModel",
        'model = AutoModel.from_pretrained("PATH_OR_REPO")',
        'processor = AutoImageProcessor.from_pretrained("PATH_OR_REPO")',
        "```",
        "",
        "## Citation",
        "",
    ]
    if record.get("citation"):
        lines += ["Cite the source model:", "", "```bibtex", record["citation"], "```", ""]
    else:
        lines += ["No citation was given for the source; cite the source model's authors.", ""]
    return "\n".join(lines)


def _check_finite(model, name: str) -> None:
    """Refuse weights holding NaN or infinity: every output of the model would be NaN."""
    bad = []
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{key} ({count} of {tensor.numel()})")
    if bad:
        raise BadInputError(
            "non_finite_weights",
            f"{name}: {len(bad)} tensors hold NaN or infinite values: {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; expected finite weights. The checkpoint is "
            "damaged or was saved after a diverged step: convert an earlier one",
        )
    for field in ("image_mean", "image_std"):
        values = getattr(model.config, field, None)
        if values is not None and not all(math.isfinite(v) for v in values):
            raise BadInputError("bad_statistics", f"--{field.replace('_', '-')} {values}: "
                                "expected finite numbers")  # fmt: skip
    std = getattr(model.config, "image_std", None)
    if std is not None and any(v <= 0 for v in std):
        raise BadInputError("bad_statistics", f"--image-std {std}: every value must be > 0")


def _check_normalisation(config, no_normalization: bool) -> None:
    """An export's processor normalises with the source's statistics, or the user says not to."""
    if getattr(config, "patch_embedding", "conv") == "wavelength" or no_normalization:
        return
    if config.image_mean is None or config.image_std is None:
        raise BadInputError(
            "missing_statistics",
            "the source records no per-band statistics, so the exported processor would pass "
            "raw values to a model trained on normalised ones; give the source's --image-mean "
            "and --image-std (one per band), or pass --no-normalization "
            "(no_normalization=True) if the model takes raw values",
        )


def export(
    model: GeoViTMAEPreTrainedModel,
    output_dir: str | os.PathLike,
    *,
    record: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Writes config, safetensors weights, image processor, ``conversion.json`` and the model
    card to ``output_dir`` (which must not exist yet or be empty), all or nothing."""
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not an empty folder; exports are never overwritten in place. "
            "Choose a new folder."
        )
    record = dict(record or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    # The weights are nearly all of it: refused up front when they cannot fit.
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with disk_full_as(out):
            check_free_space(tmp, weights)
            _write_export(model, tmp, record, notes)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_export(model, tmp: Path, record: dict[str, Any], notes: list[str] | None) -> None:
    """Config, weights, image processor, model card and ``conversion.json`` into ``tmp``."""
    model.save_pretrained(tmp, safe_serialization=True)
    GeoViTMAEImageProcessor.from_model_config(model.config).save_pretrained(tmp)
    kind = type(model).__name__
    (tmp / "README.md").write_text(_card(model.config, record, notes or [], kind))
    info = {**record, "notes": notes or [], "class": kind}
    (tmp / "conversion.json").write_text(json.dumps(info, indent=2) + "\n")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="geofm-convert",
        description=(
            "Convert a public geospatial MAE (a known name, or a .safetensors / .pth / .pt / .bin "
            "checkpoint in timm, MAE or Prithvi layout) to a geofm_hf export. Known names: "
            + ", ".join(KNOWN_SOURCES)
            + ". Pickled files are read with torch.load(weights_only=True) only."
        ),
    )
    p.add_argument("source", help="known source name or checkpoint file")
    p.add_argument("-o", "--output", required=True, help="export folder (must not exist)")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None)
    p.add_argument("--revision", default=None, help="Hub revision of a known source")
    p.add_argument("--num-heads", type=int, default=None)
    p.add_argument("--decoder-num-heads", type=int, default=None)
    p.add_argument("--num-frames", type=int, default=1)
    p.add_argument("--layer-norm-eps", type=float, default=1e-6)
    p.add_argument("--encoder-only", action="store_true", help="drop an MAE decoder")
    p.add_argument(
        "--norm-pix-loss", action="store_true", help="the source's MAE loss used normalised pixels"
    )
    p.add_argument("--band-names", nargs="+", default=None, help="the source's band order")
    p.add_argument(
        "--sensor", default=None, help="sensor table for wavelengths and GSD (e.g. sentinel2-l1c)"
    )
    p.add_argument("--image-mean", nargs="+", type=float, default=None)
    p.add_argument("--image-std", nargs="+", type=float, default=None)
    p.add_argument("--license", default=None, help="license of the source weights (card)")
    p.add_argument(
        "--no-normalization",
        action="store_true",
        help="export without per-band statistics: the processor passes raw values",
    )
    return p.parse_args(argv)


@user_error_exit("geofm-convert")
def main(argv: list[str] | None = None) -> int:
    """``geofm-convert SOURCE -o OUT [--push-to-hub ORG/NAME]``."""
    args = _parse_args(argv)
    try:
        model = convert_from(
            args.source,
            args.output,
            push_to_hub=args.push_to_hub,
            revision=args.revision,
            num_heads=args.num_heads,
            decoder_num_heads=args.decoder_num_heads,
            num_frames=args.num_frames,
            layer_norm_eps=args.layer_norm_eps,
            norm_pix_loss=args.norm_pix_loss,
            encoder_only=args.encoder_only,
            band_names=args.band_names,
            sensor=args.sensor,
            image_mean=args.image_mean,
            image_std=args.image_std,
            license=args.license,
            no_normalization=args.no_normalization,
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"geofm-convert: {e}", file=sys.stderr)
        return 2
    print(f"geofm-convert: wrote {type(model).__name__} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "UnsafeCheckpointError",
    "convert_from",
    "download_known_source",
    "export",
    "load_checkpoint",
    "main",
]
