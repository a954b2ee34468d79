"""Render a model card from a run record: ``python model_cards/render.py [EXPORT_DIR]``.

EXPORT_DIR (default: ``model_cards/demo``, the card of the quickstart demo run) must hold
``run_record.json`` and the figures it references; ``README.md`` is written next to them. The
pretraining recipe does the same at the end of a run (``geofm_hf.model_card.write_model_card``),
the probe recipe again when it adds results, and ``geofm-push`` when a folder has a record but no
card.

To refresh the demo card: run the quickstart's first command, then
``python recipes/linear_probe.py recipes/configs/probe_demo.yaml --model_name_or_path
outputs/demo/final --output_dir outputs/probe_demo [--feature mean]`` and copy ``README.md``,
``run_record.json``, ``loss_curve.png`` and ``reconstruction.png`` from ``outputs/demo/final``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geofm_hf.model_card import write_model_card

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir", nargs="?", default=str(DEMO_DIR))
    args = p.parse_args()
    print(write_model_card(Path(args.export_dir)))


if __name__ == "__main__":
    main()
