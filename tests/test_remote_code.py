"""A saved checkpoint loads with trust_remote_code=True where geofm_hf cannot be imported."""

import json
import textwrap
from pathlib import Path

import numpy as np
import torch
from remote_code_helpers import run_isolated
from transformers.dynamic_module_utils import get_relative_import_files

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForPreTraining,
    GeoViTMAEImageProcessor,
    image_processing_geofm,
)
from geofm_hf.image_processing_geofm import PROCESSOR_CODE_FILES

BLOCK_GEOFM = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "geofm_hf" or name.startswith("geofm_hf."):
                raise ImportError("geofm_hf is blocked in this test")
            return None

    sys.meta_path.insert(0, _Block())
    try:
        import geofm_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("geofm_hf was importable")
    """
)


def test_remote_code_load_without_the_package(tmp_path):
    bands = ["B02", "B03", "B04", "B08"]
    config = GeoViTMAEConfig.from_preset(
        "tiny", band_names=bands, image_mean=[1.0, 2.0, 3.0, 4.0], image_std=[1.0, 1.0, 2.0, 2.0]
    )
    torch.manual_seed(0)
    model = GeoViTMAEForPreTraining(config).eval()
    export = tmp_path / "export"
    model.save_pretrained(export)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(export)

    pixels = torch.randn(2, 4, 64, 64)
    noise = torch.rand(2, 64)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    np.save(tmp_path / "noise.npy", noise.numpy())
    with torch.no_grad():
        expected = {
            "loss": model(pixels, noise=noise).loss.item(),
            "pooled": model.vit(pixels).pooler_output.sum().item(),
        }

    script = BLOCK_GEOFM + textwrap.dedent(
        f"""
        import json, numpy as np, torch
        from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining
        path = {str(export)!r}
        mae = AutoModelForPreTraining.from_pretrained(path, trust_remote_code=True).eval()
        encoder = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
        pixels = torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))
        noise = torch.from_numpy(np.load({str(tmp_path / "noise.npy")!r}))
        raw = np.ones((4, 64, 64), dtype=np.uint16)
        with torch.no_grad():
            out = {{
                "loss": mae(pixels, noise=noise).loss.item(),
                "pooled": encoder(pixels).pooler_output.sum().item(),
                "classes": [type(mae).__module__, type(encoder).__name__, type(processor).__name__],
                "processed": processor(raw).pixel_values[0, :, 0, 0].tolist(),
            }}
        print(json.dumps(out))
        """
    )
    got = run_isolated(script, tmp_path)
    assert abs(got["loss"] - expected["loss"]) < 1e-6
    assert abs(got["pooled"] - expected["pooled"]) < 1e-4
    # the classes came from the copied files, not from an installed geofm_hf
    assert not got["classes"][0].startswith("geofm_hf")
    assert got["classes"][1:] == ["GeoViTMAEModel", "GeoViTMAEImageProcessor"]
    assert got["processed"] == [0.0, -1.0, -1.0, -1.5]  # (1 - mean) / std


def test_remote_code_load_for_each_model_option(tmp_path):
    # One subprocess loads every option's export: wavelength patches, time series, and the
    # wavelength + time series + time/location + GSD model.
    from test_modeling_any_sensor import OPTIONS, option_inputs

    expected = {}
    for name, fields in OPTIONS.items():
        config = GeoViTMAEConfig.from_preset("tiny", **{**fields, "metadata_dropout": 0.0})
        torch.manual_seed(0)
        model = GeoViTMAEForPreTraining(config).eval()
        model.save_pretrained(tmp_path / name)
        inputs = option_inputs(name)
        torch.save(inputs, tmp_path / f"{name}.inputs.pt")
        with torch.no_grad():
            expected[name] = model.vit(**inputs).pooler_output.sum().item()

    script = BLOCK_GEOFM + textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModel
        root, out = {str(tmp_path)!r}, {{}}
        for name in {sorted(OPTIONS)!r}:
            encoder = AutoModel.from_pretrained(f"{{root}}/{{name}}", trust_remote_code=True).eval()
            inputs = torch.load(f"{{root}}/{{name}}.inputs.pt", weights_only=True)
            with torch.no_grad():
                out[name] = [encoder(**inputs).pooler_output.sum().item(), type(encoder).__module__]
        print(json.dumps(out))
        """
    )
    got = run_isolated(script, tmp_path)
    assert sorted(got) == sorted(OPTIONS)
    for name, (pooled, module) in got.items():
        assert abs(pooled - expected[name]) < 1e-4, name
        assert not module.startswith("geofm_hf"), module


def test_processor_export_holds_and_loads_every_file_it_imports(tmp_path):
    # The processor is split over files joined by relative imports; transformers copies and
    # loads the files those imports name, so the list an export is checked against must be
    # exactly them (a helper left out of it, or imported absolutely, would go unnoticed).
    source = Path(image_processing_geofm.__file__)
    imported = {source.name} | {Path(f).name for f in get_relative_import_files(source)}
    assert imported == set(PROCESSOR_CODE_FILES)

    bands = ["B02", "B03", "B04", "B08"]
    processor = GeoViTMAEImageProcessor(
        band_names=bands, image_mean=[1.0, 2.0, 3.0, 4.0], image_std=[1.0, 1.0, 2.0, 2.0], size=8
    )
    export = tmp_path / "export"
    processor.save_pretrained(export)
    assert set(PROCESSOR_CODE_FILES) <= {p.name for p in export.iterdir()}
    auto_map = json.loads((export / "preprocessor_config.json").read_text())["auto_map"]
    assert auto_map == {"AutoImageProcessor": "image_processing_geofm.GeoViTMAEImageProcessor"}

    # Named bands in another order (the band helper reorders them), with dates (the input helper
    # turns them into temporal_coords).
    inputs = {b: np.full((8, 8), float(i + 1), dtype=np.float32) for i, b in enumerate(bands)}
    expected = processor(dict(reversed(inputs.items())), dates="2020-02-01").pixel_values
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = BLOCK_GEOFM + textwrap.dedent(
        f"""
        import json, os, sys
        import numpy as np
        from transformers import AutoImageProcessor
        assert not any(os.path.isdir(os.path.join(p, "geofm_hf")) for p in sys.path), sys.path
        processor = AutoImageProcessor.from_pretrained({str(export)!r}, trust_remote_code=True)
        inputs = dict(np.load({str(tmp_path / "inputs.npz")!r}))
        out = processor(dict(reversed(inputs.items())), dates="2020-02-01")
        files = {{
            name.rsplit(".", 1)[-1] + ".py": module.__file__
            for name, module in list(sys.modules.items())
            if name.rsplit(".", 1)[-1].startswith("image_processing_geofm")
        }}
        print(json.dumps({{
            "pixels": out.pixel_values.flatten().tolist(),
            "temporal": out.temporal_coords.flatten().tolist(),
            "class": type(processor).__module__,
            "files": files,
        }}))
        """
    )
    modules = tmp_path / "modules"
    got = run_isolated(script, tmp_path)
    assert np.allclose(got["pixels"], expected.flatten().numpy())
    assert got["temporal"] == [2020.0, 32.0]
    assert not got["class"].startswith("geofm_hf"), got["class"]
    # Every file came from the export's copy in transformers' module cache.
    assert sorted(got["files"]) == sorted(PROCESSOR_CODE_FILES)
    for name, path in got["files"].items():
        assert Path(path).name == name and Path(path).is_relative_to(modules), path
