"""``geofm-export-onnx``: a geofm_hf export -> one ONNX file for onnxruntime, with the band
contract in its metadata.

Steps: resolve the model (local folder, or Hub id at a revision, recorded as the commit it
resolved to) -> load the class named by ``config.json`` -> wrap it as a graph of plain tensors
(``pixel_values`` in; ``last_hidden_state`` + ``pooler_output``, or the head's ``logits``, out)
-> run it eagerly on random inputs -> trace it with ``torch.export`` (``torch.onnx.export(...,
dynamo=True)``, batch axis dynamic) -> stage the file beside the output with the metadata ->
run the staged file with onnxruntime at two other batch sizes and compare with the eager
outputs -> move it under its final name. A failure at any step leaves no file under that name.

Wavelength models (``patch_embedding="wavelength"``): the wavelengths of the exported bands are
constants of the graph, not an input. Every export then takes ``pixel_values`` alone, as conv
ones do; the wavelengths are checked once, here (micrometres, positive), where onnxruntime could
not check them at run time; and the hypernetwork that turns them into patch kernels is folded
away instead of running at every call. Other bands of the same model are another export
(``--band-names`` with ``--sensor``, or ``--wavelengths``).

Only the batch axis is dynamic: height and width are the model's ``image_size`` (the sin-cos
positions are constants of the graph), and optional metadata inputs (``gsd``, dates, location)
are left out, as :func:`geofm_hf.embed` leaves them out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from .._errors import user_error_exit

__all__ = ["OnnxExport", "OnnxExportError", "export_onnx", "main"]

# What each class of a geofm_hf export becomes: its encoder, or its encoder and head.
_EXPORTABLE = {
    "GeoViTMAEModel": "encoder",
    # The MAE decoder reconstructs masked patches, a pretraining task: only the encoder goes.
    "GeoViTMAEForPreTraining": "encoder",
    "GeoViTMAEForImageClassification": "classification",
    "GeoViTMAEForSemanticSegmentation": "segmentation",
}
_ENCODER_OUTPUTS = ["last_hidden_state", "pooler_output"]
# Export traces at batch 2 (torch.export specialises a dimension traced at size 1); the check
# runs at two other sizes, so a batch axis that was silently fixed fails it.
_TRACE_BATCH = 2
_CHECK_BATCHES = (1, 3)
_METADATA_PREFIX = "geofm."


class OnnxExportError(ValueError):
    """A model, band set or output path that cannot be exported; says what to do instead."""


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    path: Path
    model_class: str
    inputs: list[str]
    outputs: list[str]
    # Largest |onnxruntime - eager| over every output at the checked batch sizes.
    max_abs_diff: float
    metadata: dict[str, str]


# ------------------------------------------------------------------------------------ graphs
class _Encoder(nn.Module):
    """``pixel_values`` -> ``last_hidden_state`` ``(B, 1 + L, D)``, ``pooler_output`` ``(B, D)``
    through the model's own forward (conv patch embedding)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vit(pixel_values)
        return out.last_hidden_state, out.pooler_output


class _WavelengthEncoder(nn.Module):
    """The encoder of a wavelength model for one fixed band set, its band embedding ``(C, E)``
    a constant.

    ``GeoViTMAEModel.forward`` validates the wavelengths with data-dependent branches, which
    ``torch.export`` cannot trace; this runs its stages after that check (done eagerly, once,
    by the caller): patch tokens with positions -> cls token -> blocks -> final norm -> pooling.
    The export's check against the eager ``forward`` keeps the two the same.
    """

    def __init__(self, vit: nn.Module, band_embedding: torch.Tensor) -> None:
        super().__init__()
        self.vit = vit
        self.register_buffer("band_embedding", band_embedding.detach().clone())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.vit
        tokens, cls_token = vit.embeddings(pixel_values, band_embedding=self.band_embedding)
        tokens = torch.cat([cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        hidden, _ = vit.encoder(tokens)  # (B, 1 + L, D)
        hidden = vit.layernorm(hidden)
        pooled = hidden[:, 0] if vit.config.pooling == "cls" else hidden[:, 1:].mean(dim=1)
        return hidden, pooled


class _Classifier(nn.Module):
    """``pixel_values`` -> class ``logits`` ``(B, num_labels)``: encoder, pooled feature, head."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(pixel_values)[1])


class _Segmenter(nn.Module):
    """``pixel_values`` -> per-pixel ``logits`` ``(B, num_labels, H, W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


# ----------------------------------------------------------------------------------- loading
def _check_output(output: str | os.PathLike) -> Path:
    """The output path, once it is known to end in ``.onnx`` in a folder this process can write
    to (checked by creating a file there: ``os.access`` says yes to root on a read-only mount)."""
    out = Path(output)
    if out.suffix.lower() != ".onnx":
        raise OnnxExportError(
            f"the output must be an .onnx file: found {str(output)!r}; name it e.g. model.onnx."
        )
    if out.is_dir():
        raise OnnxExportError(f"the output {out} is a folder: expected a file name ending .onnx.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        raise OnnxExportError(
            f"cannot write to the output folder {out.parent} ({e.strerror or e}); choose a "
            "folder you can write to."
        ) from None
    return out


def _resolve(model: str | os.PathLike, revision: str | None) -> tuple[Path, str, str | None]:
    """``(local folder, model id, revision)``: a Hub model is downloaded once and its revision
    recorded as the commit it resolved to, so the ONNX file names the exact weights."""
    path = Path(model)
    text = str(model)
    if path.is_dir():
        if revision is not None:
            raise OnnxExportError(
                f"--revision {revision!r} names a Hub revision, but {text!r} is a local folder: "
                "drop --revision, or pass the Hub repo id."
            )
        return path, text, None
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise OnnxExportError(
            f"model {text!r} is neither a local export folder nor a Hub repo id (ORG/NAME); "
            "pass the folder save_pretrained wrote, or a repo id."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        local = Path(
            snapshot_download(text, revision=revision, allow_patterns=["*.json", "*.safetensors"])
        )
    except (HfHubHTTPError, LocalEntryNotFoundError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxExportError(
            f"cannot download {text!r} at revision {revision or 'main'} from the Hub: {first}"
        ) from None
    return local, text, local.name  # snapshots/<commit sha>


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OnnxExportError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise OnnxExportError(f"{path} must hold a JSON object: found {type(data).__name__}.")
    return data


def _model_class(folder: Path) -> str:
    """The geofm_hf class ``config.json`` names, if it is one this exporter handles."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise OnnxExportError(
            f"{folder} holds no config.json: expected a geofm_hf export (the folder "
            "save_pretrained or geofm-convert wrote)."
        )
    config = _read_json(config_file)
    model_type = config.get("model_type")
    if model_type != "geofm_vit_mae":
        raise OnnxExportError(
            f"{folder} holds a {model_type!r} model, not a geofm_hf export (model_type "
            "'geofm_vit_mae'); convert it with geofm-convert first."
        )
    names = config.get("architectures") or ["GeoViTMAEModel"]
    name = names[0]
    if name not in _EXPORTABLE:
        raise OnnxExportError(
            f"{folder} holds a {name}, which cannot be exported to ONNX: expected one of "
            f"{', '.join(_EXPORTABLE)}."
        )
    return name


def _load(folder: Path, class_name: str):
    """The model (eval mode, fp32) and the image processor saved beside it."""
    from .. import modeling_geofm
    from ..image_processing_geofm import GeoViTMAEImageProcessor

    model = getattr(modeling_geofm, class_name).from_pretrained(folder, dtype=torch.float32)
    model.eval()
    if (folder / "preprocessor_config.json").is_file():
        processor = GeoViTMAEImageProcessor.from_pretrained(folder)
    else:
        processor = GeoViTMAEImageProcessor.from_model_config(model.config)
    return model, processor


def _export_bands(
    config, band_names: list[str] | None, sensor: str | None, wavelengths_um: list[float] | None
) -> tuple[list[str] | None, list[float] | None, str | None]:
    """Band names, wavelengths and sensor of the exported model. A conv model's bands are its
    weights'; a wavelength model exports the bands asked for, else its config's."""
    asked = band_names is not None or wavelengths_um is not None
    if config.patch_embedding != "wavelength":
        if asked:
            raise OnnxExportError(
                "--band-names/--wavelengths choose the bands of a wavelength model "
                "(patch_embedding='wavelength'); this model's patch kernels are learnt for its "
                f"own bands {config.band_names}: drop them."
            )
        return config.band_names, config.wavelengths_um, sensor
    if not asked:
        band_names, wavelengths_um = config.band_names, config.wavelengths_um
    elif wavelengths_um is None:
        from ..bands import band_wavelengths

        try:
            wavelengths_um = band_wavelengths(band_names, sensor)
        except (KeyError, ValueError) as e:
            raise OnnxExportError(f"cannot look up the bands {band_names}: {e}") from None
        if wavelengths_um is None:
            raise OnnxExportError(
                f"no sensor table names the bands {band_names}: pass --sensor (e.g. "
                "sentinel2-l2a) or their --wavelengths in micrometres."
            )
    if wavelengths_um is None:
        raise OnnxExportError(
            "this wavelength model's config records no wavelengths_um: choose the bands to "
            "export with --band-names and --sensor, or --wavelengths (micrometres)."
        )
    if band_names is not None and len(band_names) != len(wavelengths_um):
        raise OnnxExportError(
            f"expected one wavelength per band: found {len(band_names)} band names "
            f"{band_names} and {len(wavelengths_um)} wavelengths {wavelengths_um}."
        )
    return band_names, [float(w) for w in wavelengths_um], sensor


def _sensor(folder: Path, band_names: list[str] | None) -> str | None:
    """The sensor the run record names, else the one the band names identify, else None."""
    record = folder / "run_record.json"
    if record.is_file():
        sensor = _read_json(record).get("sensor")
        if sensor:
            return str(sensor)
    if band_names:
        from ..bands import detect_sensor

        return detect_sensor(list(band_names))
    return None


# -------------------------------------------------------------------------------- the graph
def _graph(
    model: nn.Module, class_name: str, wavelengths_um: list[float] | None, encoder_only: bool
) -> tuple[nn.Module, Callable[[torch.Tensor], tuple[torch.Tensor, ...]], list[str], int]:
    """The module to trace, the model's own forward it must match (outputs as a tuple), its
    output names and the input's channel count."""
    config = model.config
    kind = _EXPORTABLE[class_name]
    vit = model if class_name == "GeoViTMAEModel" else model.vit
    wavelength = config.patch_embedding == "wavelength"
    if wavelength and kind == "segmentation" and not encoder_only:
        raise OnnxExportError(
            "GeoViTMAEForSemanticSegmentation takes no wavelengths, so a wavelength model's "
            "segmentation head cannot run (in PyTorch either): export its encoder with "
            "--encoder-only."
        )
    channels = len(wavelengths_um) if wavelength else config.num_channels
    if wavelength:
        # The eager forward validates the wavelengths and returns their embedding (C, E).
        probe = torch.zeros(1, *_input_shape(config, channels))
        with torch.no_grad():
            try:
                embedding = vit(probe, wavelengths=wavelengths_um).band_embedding
            except ValueError as e:
                raise OnnxExportError(f"the export's wavelengths cannot be used: {e}") from None
        encoder: nn.Module = _WavelengthEncoder(vit, embedding)
    else:
        encoder = _Encoder(vit)
    extra = {"wavelengths": wavelengths_um} if wavelength else {}
    if encoder_only or kind == "encoder":

        def reference(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = vit(x, **extra)
            return out.last_hidden_state, out.pooler_output

        return encoder.eval(), reference, list(_ENCODER_OUTPUTS), channels

    def head(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (model(x, **extra).logits,)

    if kind == "classification":
        return _Classifier(encoder, model.classifier).eval(), head, ["logits"], channels
    return _Segmenter(model).eval(), head, ["logits"], channels


def _input_shape(config, channels: int) -> tuple[int, ...]:
    """One sample's ``pixel_values`` shape: ``(C, H, W)``, or ``(T, C, H, W)`` for a series."""
    size = config.image_size
    frames = (config.num_frames,) if config.num_frames > 1 else ()
    return (*frames, channels, size, size)


def _metadata(
    config,
    processor,
    *,
    class_name: str,
    outputs: list[str],
    band_names: list[str] | None,
    wavelengths_um: list[float] | None,
    sensor: str | None,
    model_id: str,
    revision: str | None,
) -> dict[str, str]:
    """The band contract and provenance as ONNX ``metadata_props`` (strings; lists as JSON)."""
    from .. import __version__

    layout = "(batch, frames, channels, height, width)" if config.num_frames > 1 else (
        "(batch, channels, height, width)"
    )  # fmt: skip
    values: dict[str, Any] = {
        "model_class": class_name,
        "outputs": outputs,
        "input_layout": layout,
        "band_names": band_names,
        "wavelengths_um": wavelengths_um,
        "sensor": sensor,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_frames": config.num_frames,
        "image_mean": processor.image_mean if processor.do_normalize else None,
        "image_std": processor.image_std if processor.do_normalize else None,
        "patch_embedding": config.patch_embedding,
        "pooling": config.pooling,
        "geofm_hf_version": __version__,
        "source_model": model_id,
        "source_revision": revision,
    }
    if "logits" in outputs:
        values["id2label"] = {str(k): v for k, v in config.id2label.items()}
    # Absent, not "null": a key is present exactly when the value is known.
    return {
        _METADATA_PREFIX + key: value if isinstance(value, str) else json.dumps(value)
        for key, value in values.items()
        if value is not None
    }


def _trace(graph: nn.Module, sample: torch.Tensor, outputs: list[str]):
    """``torch.onnx.export(dynamo=True)`` of ``graph`` with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    # The exporter warns once per torchvision op it cannot register when torchvision is absent;
    # none of them is in these graphs.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            return torch.onnx.export(
                graph,
                (sample,),
                input_names=["pixel_values"],
                output_names=outputs,
                dynamic_shapes={"pixel_values": {0: batch}},
                dynamo=True,
                verbose=False,
            )
    finally:
        registration.setLevel(level)


def _max_abs_diff(
    path: Path, samples: list[torch.Tensor], expected: list[tuple[torch.Tensor, ...]]
) -> float:
    """Largest |onnxruntime - eager| over every output of ``path`` on ``samples``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for sample, want in zip(samples, expected, strict=True):
        got = session.run(None, {"pixel_values": sample.numpy()})
        for g, e in zip(got, want, strict=True):
            if tuple(g.shape) != tuple(e.shape):
                raise OnnxExportError(
                    f"onnxruntime returned shape {tuple(g.shape)} where PyTorch returns "
                    f"{tuple(e.shape)} (batch {sample.shape[0]}): the export is wrong."
                )
            worst = max(worst, float((torch.from_numpy(g) - e).abs().max()))
    return worst


def _move_into_place(stage: Path, out: Path) -> None:
    """Staged files -> beside ``out``; the ``.onnx`` goes last, so it appears only once its
    external weights (models over 2 GB: ``NAME.onnx.data``) are in place."""
    staged = stage / out.name
    for extra in sorted(p for p in stage.iterdir() if p != staged):
        with atomic_path(out.parent / extra.name) as tmp:
            os.replace(extra, tmp)
    with atomic_path(out) as tmp:
        os.replace(staged, tmp)


@contextlib.contextmanager
def _staging(out: Path):
    """A private folder beside ``out`` (same file system, so moves are renames), removed after."""
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# -------------------------------------------------------------------------------------- API
def export_onnx(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    encoder_only: bool = False,
    band_names: list[str] | None = None,
    sensor: str | None = None,
    wavelengths_um: list[float] | None = None,
    atol: float = 1e-4,
    seed: int = 0,
) -> OnnxExport:
    """Export ``model`` (a geofm_hf export folder, or a Hub repo id at ``revision``) to the ONNX
    file ``output``.

    ``GeoViTMAEModel`` and ``GeoViTMAEForPreTraining`` export their encoder (outputs
    ``last_hidden_state`` ``(B, 1 + L, D)`` and ``pooler_output`` ``(B, D)``); classification and
    segmentation models export encoder and head (``logits``), or with ``encoder_only`` the
    encoder. The input is ``pixel_values`` ``(B, C, H, W)`` (``(B, T, C, H, W)`` for a time
    series), float32, bands and normalisation as the image processor returns them (the file's
    ``geofm.*`` metadata says which). ``band_names`` with ``sensor``, or ``wavelengths_um``,
    choose the bands of a wavelength model (default: its config's).

    The file is checked before it is kept: onnxruntime must agree with PyTorch within
    ``atol * max(1, max |output|)`` on random inputs (``seed``) at batch sizes 1 and 3.
    Raises :class:`OnnxExportError` for anything the caller can fix; nothing is then written.
    """
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise OnnxExportError(
                f"ONNX export needs the {name} package: pip install 'geofm_hf[onnx]'."
            ) from None
    out = _check_output(output)
    folder, model_id, revision = _resolve(model, revision)
    class_name = _model_class(folder)
    from ..configuration_geofm import GeoViTMAEConfig

    # The band choice is checked on the config, before any weight is read.
    config = GeoViTMAEConfig.from_pretrained(folder)
    bands, wavelengths, sensor = _export_bands(config, band_names, sensor, wavelengths_um)
    loaded, processor = _load(folder, class_name)
    graph, reference, outputs, channels = _graph(loaded, class_name, wavelengths, encoder_only)
    metadata = _metadata(
        loaded.config,
        processor,
        class_name=class_name,
        outputs=outputs,
        band_names=bands,
        wavelengths_um=wavelengths,
        sensor=sensor or _sensor(folder, bands),
        model_id=model_id,
        revision=revision,
    )
    generator = torch.Generator().manual_seed(seed)
    shape = _input_shape(config, channels)
    samples = [torch.randn(b, *shape, generator=generator) for b in _CHECK_BATCHES]
    trace_sample = torch.randn(_TRACE_BATCH, *shape, generator=generator)
    # Eager first: the model caches its sin-cos position tables on first use, and a table first
    # computed inside the trace would be cached as a trace-time placeholder.
    with torch.no_grad():
        expected = [reference(s) for s in samples]
    scale = max(1.0, *(float(t.abs().max()) for outs in expected for t in outs))
    program = _trace(graph, trace_sample, outputs)
    program.model.metadata_props.update(metadata)
    with _staging(out) as stage:
        program.save(stage / out.name)
        diff = _max_abs_diff(stage / out.name, samples, expected)
        if not diff <= atol * scale:
            raise OnnxExportError(
                f"onnxruntime's outputs differ from PyTorch's by up to {diff:.3g} (allowed "
                f"{atol * scale:.3g}); nothing was written. Report this with the model's config."
            )
        _move_into_place(stage, out)
    return OnnxExport(out, class_name, ["pixel_values"], outputs, diff, metadata)


# -------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geofm-export-onnx",
        description="Export a geofm_hf model (encoder, or encoder and head) to ONNX with a "
        "dynamic batch axis and the band contract in its metadata; the file is checked against "
        "PyTorch with onnxruntime before it is kept.",
    )
    p.add_argument("model", help="local export folder or Hub model repo id")
    p.add_argument("-o", "--output", required=True, help="OUT.onnx")
    p.add_argument("--revision", help="model revision (Hub branch, tag or commit)")
    p.add_argument("--encoder-only", action="store_true",
                   help="a classification or segmentation model: export the encoder alone")  # fmt: skip
    p.add_argument("--band-names", nargs="+", help="wavelength models: the bands to export")
    p.add_argument("--sensor", help="sensor table for --band-names (e.g. sentinel2-l2a)")
    p.add_argument("--wavelengths", nargs="+", type=float, metavar="UM",
                   help="wavelength models: centre wavelength of each band, micrometres")  # fmt: skip
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest onnxruntime-vs-PyTorch difference accepted, per unit of output")  # fmt: skip
    return p


@user_error_exit("geofm-export-onnx")
def main(argv: list[str] | None = None) -> int:
    """``geofm-export-onnx MODEL -o OUT.onnx [--revision REV] [--encoder-only]``."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = export_onnx(
            args.model,
            args.output,
            revision=args.revision,
            encoder_only=args.encoder_only,
            band_names=args.band_names,
            sensor=args.sensor,
            wavelengths_um=args.wavelengths,
            atol=args.atol,
        )
    except (OnnxExportError, FileNotFoundError, PermissionError) as e:
        print(f"geofm-export-onnx: error: {e}", file=sys.stderr)
        return 2
    print(
        f"geofm-export-onnx: wrote {result.model_class} -> {result.path} (outputs "
        f"{', '.join(result.outputs)}; onnxruntime vs PyTorch max abs diff "
        f"{result.max_abs_diff:.2g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
