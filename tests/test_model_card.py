"""Model card rendering: metadata validates, every section is filled, images exist, nothing invented."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hubserver import validate_card_yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from geofm_hf.model_card import (
    BIBTEX,
    NOT_RECORDED,
    RUN_RECORD_NAME,
    TEMPLATE_PATH,
    RunRecord,
    render_model_card,
    write_model_card,
)

SECTIONS = [
    "Model details",
    "Bands",
    "How to load",
    "Training data",
    "Training procedure",
    "Results",
    "Limitations",
    "Citation",
]


def _full_record() -> dict:
    return {
        "preset": "vit-base",
        "architecture": "GeoViTMAEForPreTraining",
        "num_parameters_encoder": 85_798_656,
        "num_parameters_total": 111_907_840,
        "image_size": 224,
        "patch_size": 16,
        "mask_ratio": 0.75,
        "bands": [
            {"name": "B02", "wavelength_um": 0.49, "gsd_m": 10.0, "mean": 1354.4, "std": 245.7},
            {"name": "B03", "wavelength_um": 0.56, "gsd_m": 10.0, "mean": 1381.1, "std": 333.0},
            {"name": "B04", "wavelength_um": 0.665, "gsd_m": 10.0, "mean": 1262.7, "std": 395.1},
        ],
        "sensor": "sentinel-2",
        "datasets": [
            {"repo_id_or_path": "geofm-test/s2-chips", "revision": "a" * 40},
            {"repo_id_or_path": "/lustre/orion/shards/s2", "revision": "manifest-sha256:0f3a"},
        ],
        "base_model": "geofm-test/vit-base-mae",
        "base_model_revision": "b" * 40,
        "run_config": {"learning_rate": 1.5e-4, "mask_ratio": 0.75, "steps": 500},
        "accelerate_config": {"distributed_type": "FSDP", "fsdp_config": {"sharding": "HYBRID"}},
        "hardware": "8x AMD MI250X GCD (Frontier)",
        "world_size": 8,
        "global_batch": 256,
        "peak_learning_rate": 1.5e-4,
        "learning_rate_rule": "linear: base 0.00015 x 256/256 (--lr_scaling auto)",
        "steps": 500,
        "wall_time_s": 3723.4,
        "images_per_s": 1201.5,
        "mfu": 0.31,
        "final_loss": 0.4123,
        "loss_curve_png": "figures/loss_curve.png",
        "reconstruction_png": "figures/reconstructions.png",
        "eval_results": [
            {
                "task": "image-classification",
                "dataset_name": "EuroSAT",
                "dataset_id": "geofm-test/eurosat",
                "split": "test",
                "metric_type": "accuracy",
                "metric_name": "linear-probe top-1",
                "value": 0.8712,
            }
        ],
        "license": "apache-2.0",
        "repo_id": "geofm-test/vit-base-s2",
        "revision": None,
        "package_version": "0.1.0",
        "code_revision": "c" * 40,
        "limitations": ["Short demo run."],
    }


def _export(tmp_path, record: dict):
    for key in ("loss_curve_png", "reconstruction_png"):
        if record.get(key):
            path = tmp_path / record[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(path)
    return tmp_path


def _front_matter_and_body(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


def _sections(body: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", body, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def test_full_record_renders_valid_metadata_and_every_section(tmp_path):
    record = _full_record()
    card = render_model_card(record, _export(tmp_path, record))
    text = str(card)
    meta, body = _front_matter_and_body(text)

    # Metadata: the Hub's own parser reads it back, with the keys the Hub uses for search.
    reparsed = ModelCard(text)
    assert reparsed.data.library_name == "transformers"
    assert meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "image-feature-extraction"
    assert set(meta["tags"]) >= {"geospatial", "remote-sensing", "mae", "vit", "sentinel-2"}
    assert meta["datasets"] == ["geofm-test/s2-chips"]  # local paths are not Hub ids
    assert meta["base_model"] == "geofm-test/vit-base-mae"
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "geofm-test/vit-base-s2"
    assert results[0].metric_value == pytest.approx(0.8712)
    assert results[0].dataset_split == "test"
    assert validate_card_yaml(text) == ([], [])
    assert "| Peak learning rate | 1.500e-04 (linear: base 0.00015 x 256/256" in body

    sections = _sections(body)
    for section in SECTIONS:
        assert sections.get(section), f"section {section!r} missing or empty"
    assert NOT_RECORDED not in body
    assert "None" not in body
    assert "{{" not in text and "}}" not in text
    assert "85,798,656" in sections["Model details"]
    assert "0.665" in sections["Bands"] and "395.1" in sections["Bands"]
    assert 'trust_remote_code=True, revision="' in sections["How to load"]
    assert "a" * 40 in sections["Training data"] and "b" * 40 in sections["Training data"]
    assert "HYBRID" in sections["Training procedure"] and "31.0%" in sections["Training procedure"]
    assert "0.8712" in sections["Results"]
    assert "Short demo run." in sections["Limitations"]
    assert BIBTEX in sections["Citation"] and "1036--1046" in BIBTEX

    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body)
    assert sorted(images) == ["figures/loss_curve.png", "figures/reconstructions.png"]
    for rel in images:
        assert (tmp_path / rel).is_file()


def test_missing_information_is_said_not_invented(tmp_path):
    card = render_model_card(RunRecord(), tmp_path)
    meta, body = _front_matter_and_body(str(card))
    assert "license" not in meta and "datasets" not in meta and "model-index" not in meta
    assert meta["pipeline_tag"] == "image-feature-extraction"
    assert meta["tags"] == ["geospatial", "remote-sensing", "mae", "vit"]
    sections = _sections(body)
    for section in SECTIONS:
        assert sections.get(section), f"section {section!r} missing or empty"
    for section in ("Model details", "Bands", "Training data", "Training procedure", "Results"):
        assert NOT_RECORDED in sections[section], section
    assert "None" not in body
    assert "ORG/NAME" in sections["How to load"]  # a placeholder the text tells you to replace
    assert "names no base model" in sections["Training data"]


def test_classifier_gets_image_classification_tag(tmp_path):
    card = render_model_card(RunRecord(architecture="GeoViTMAEForImageClassification"), tmp_path)
    assert card.data.pipeline_tag == "image-classification"
    assert "AutoModelForImageClassification.from_pretrained" in str(card)


def test_missing_image_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"loss_curve_png='loss\.png'.*does not exist"):
        render_model_card(RunRecord(loss_curve_png="loss.png"), tmp_path)
    with pytest.raises(ValueError, match="relative to the export dir"):
        render_model_card(RunRecord(reconstruction_png="../x.png"), tmp_path)


def test_bad_records_are_rejected():
    with pytest.raises(ValueError, match=r"unknown run record keys \['lr'\]"):
        RunRecord.from_dict({"lr": 1.0})
    with pytest.raises(ValueError, match=r"eval_results\[0\] lacks \['metric_type', 'value'\]"):
        RunRecord.from_dict({"eval_results": [{"task": "t", "dataset_name": "d"}]})
    with pytest.raises(ValueError, match="mfu is a fraction"):
        RunRecord.from_dict({"mfu": 31.0})
    with pytest.raises(ValueError, match=r"datasets\[0\]"):
        RunRecord.from_dict({"datasets": [{"revision": "x"}]})


def test_record_round_trip_and_write_model_card(tmp_path):
    record = RunRecord.from_dict(_full_record())
    _export(tmp_path, record.to_dict())
    path = record.save(tmp_path / RUN_RECORD_NAME)
    assert RunRecord.load(path) == record
    assert json.loads(path.read_text())["steps"] == 500

    readme = write_model_card(tmp_path)  # reads run_record.json
    assert readme.read_text() == str(render_model_card(record, tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="no run record"):
        write_model_card(tmp_path / "figures")


def test_from_model_reads_config_and_counts(tmp_path):
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, count_parameters

    config = GeoViTMAEConfig.from_preset(
        "tiny",
        band_names=["B02", "B03"],
        wavelengths_um=[0.49, 0.56],
        gsd_m=[10.0, 10.0],
        image_mean=[0.1, 0.2],
        image_std=[0.3, 0.4],
    )
    model = GeoViTMAEForPreTraining(config)
    record = RunRecord.from_model(model, steps=3)
    assert record.num_parameters_total == count_parameters(model)
    assert record.num_parameters_encoder == count_parameters(model, encoder_only=True)
    assert record.num_parameters_encoder < record.num_parameters_total
    assert record.preset == "tiny" and record.patch_size == 8 and record.steps == 3
    assert record.bands[1] == {
        "name": "B03",
        "wavelength_um": 0.56,
        "gsd_m": 10.0,
        "mean": 0.2,
        "std": 0.4,
    }
    assert "| 1 | B03 | 0.560 | 10 | 0.2 | 0.4 |" in str(render_model_card(record, tmp_path))


def test_template_is_packaged_and_linked():
    from pathlib import Path

    link = Path(__file__).resolve().parents[1] / "model_cards" / "template.md"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == TEMPLATE_PATH.resolve()


def test_demo_card_is_rendered_from_its_record(tmp_path):
    """model_cards/demo/README.md (the demo run's card) is exactly what render.py produces."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "model_cards" / "demo"
    record = RunRecord.load(example / RUN_RECORD_NAME)
    assert (example / "README.md").read_text() == str(render_model_card(record, example))


def test_card_validates_through_the_hub_client(local_hub, tmp_path):
    record = _full_record()
    card = render_model_card(record, _export(tmp_path, record))
    card.validate()  # POST /api/validate-yaml on the local hub
    broken = ModelCard(str(card).replace("- geospatial", "- {a: 1}", 1))
    with pytest.raises(ValueError, match="tags"):
        broken.validate()


def test_template_renders_the_tables_from_the_record(tmp_path, monkeypatch):
    """The tables are the template's: it gets the RunRecord itself (``r``) and formatting filters,
    and the Python side builds no Markdown."""
    from pathlib import Path

    import geofm_hf.model_card as model_card

    source = Path(model_card.__file__).read_text()
    assert "|---" not in source and "| # |" not in source
    template = TEMPLATE_PATH.read_text()
    assert "{% for b in r.bands %}" in template and "{% for e in r.eval_results %}" in template

    custom = tmp_path / "card.md"
    custom.write_text(
        "---\n{{ card_data }}\n---\n"
        "{% for b in r.bands %}\n"
        "{{ b.name }}={{ b.get('mean') | fmt('{:.1f}') }}/{{ b.get('gsd_m') | fmt }};\n"
        "{% endfor %}\n"
        "{{ r.num_parameters_total | params }} {{ r.wall_time_s | wall }}\n"
    )
    monkeypatch.setattr(model_card, "TEMPLATE_PATH", custom)
    record = {
        "bands": [{"name": "B02", "mean": 1354.44}, {"name": "B03", "gsd_m": 10}],
        "num_parameters_total": 2_500_000_000,
        "wall_time_s": 3723.4,
    }
    body = str(render_model_card(record, tmp_path)).split("---\n", 2)[2]
    assert body == (
        f"B02=1354.4/{NOT_RECORDED};\nB03={NOT_RECORDED}/10;\n"
        "2,500,000,000 (2.50B) 3,723 s (1 h 02 min 03 s)\n"
    )
