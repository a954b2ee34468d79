"""Linear probe (MAE protocol) and kNN probe of a frozen geospatial ViT-MAE encoder on scene
classification.

    python recipes/linear_probe.py recipes/configs/probe_demo.yaml \
        --model_name_or_path runs/pretrain/final --output_dir runs/probe-tiny
    python recipes/linear_probe.py table runs/probe-*/ --baseline runs/probe-random \
        --output runs/probe_table.md

The run is :func:`geofm_hf.classification.run_probe` (arguments:
:class:`~geofm_hf.classification.ProbeArguments`): data -> model + band mapping -> features
(cached) -> choices on a validation split of train -> linear probes over seeds and kNN ->
OUTPUT_DIR/results.json (top1, top5, macro_f1 with 95 % intervals, num_train, num_test ...),
OUTPUT_DIR/confusion_matrix.png, and the card of a local checkpoint (else
OUTPUT_DIR/model_card/README.md). The model is a local export or a Hub repo id + revision
(offline from the cache with HF_HUB_OFFLINE=1). ``table`` compares finished runs.
"""

from __future__ import annotations

import argparse
import sys

from geofm_hf.classification import ProbeArguments, probe_table, recipe_main, run_probe

__all__ = ["ProbeArguments", "main"]


def table_main(argv: list[str]) -> str:
    """``table RUN_DIR_OR_RESULTS_JSON... [--baseline RUN] [--output FILE]``: the Markdown table."""
    parser = argparse.ArgumentParser(prog="linear_probe.py table")
    parser.add_argument("results", nargs="+", help="results.json files or run folders")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    parser.add_argument(
        "--baseline",
        help="run to compare every row with (paired bootstrap of top-1 on the same test set)",
    )
    ns = parser.parse_args(argv)
    text = probe_table(ns.results, baseline=ns.baseline, output=ns.output)
    print(text, end="")
    return text


def main(argv: list[str] | None = None) -> dict | str:
    """Entry point: ``[CONFIG.yaml] [--overrides]`` runs the probe; ``table ...`` aggregates."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "table":
        return table_main(argv[1:])
    return recipe_main(ProbeArguments, run_probe, argv)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
