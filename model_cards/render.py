"""Render a model card from a run record: ``python model_cards/render.py [EXPORT_DIR]``.

EXPORT_DIR (default: ``model_cards/example``) must hold ``run_record.json`` and the figures it
references; ``README.md`` is written next to them. The pretraining recipe does the same at the end
of a run (``geofm_hf.model_card.write_model_card``); ``geofm-push`` does it when a folder has a
record but no card.

``--make-example`` first rewrites ``model_cards/example/run_record.json`` from the ``tiny`` preset
with Sentinel-2 RGB+NIR bands: the model fields are computed from a real model; there is no
training run behind it, so every training field renders as "not recorded". The lead replaces
this example with the card of the demo run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geofm_hf.model_card import RUN_RECORD_NAME, RunRecord, write_model_card

EXAMPLE_DIR = Path(__file__).resolve().parent / "example"


def _example_record() -> RunRecord:
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
    from geofm_hf.bands import get_sensor_bands

    wanted = ["B02", "B03", "B04", "B08"]
    bands = {b.name: b for b in get_sensor_bands("sentinel2-l1c")}
    config = GeoViTMAEConfig.from_preset(
        "tiny",
        band_names=wanted,
        wavelengths_um=[bands[n].wavelength_um for n in wanted],
        gsd_m=[bands[n].gsd_m for n in wanted],
    )
    return RunRecord.from_model(
        GeoViTMAEForPreTraining(config),
        sensor="sentinel-2",
        license="apache-2.0",
        repo_id="geofm-hf/example-tiny-s2",
        limitations=[
            "Example card: the model fields come from the `tiny` preset; no training run is "
            "behind it, so every training field says it was not recorded."
        ],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir", nargs="?", default=str(EXAMPLE_DIR))
    p.add_argument("--make-example", action="store_true", help="rebuild the example record first")
    args = p.parse_args()
    export_dir = Path(args.export_dir)
    if args.make_example:
        _example_record().save(EXAMPLE_DIR / RUN_RECORD_NAME)
    print(write_model_card(export_dir))


if __name__ == "__main__":
    main()
