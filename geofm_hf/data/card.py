"""Dataset card (README.md) for a shard folder: YAML header that ``datasets`` reads, then prose."""

from __future__ import annotations

from typing import Any

from .format import GeoDatasetInfo

__all__ = ["render_dataset_card"]

_FEATURES_YAML = """\
    - name: image
      dtype: binary
    - name: shape
      sequence: int32
    - name: dtype
      dtype: string
    - name: band_names
      sequence: string
    - name: crs
      dtype: string
    - name: transform
      sequence: float64
    - name: bounds
      sequence: float64
    - name: source
      dtype: string
    - name: datetime
      dtype: string
    - name: gsd_m
      dtype: float64
    - name: chip_id
      dtype: string
"""


def render_dataset_card(
    info: GeoDatasetInfo,
    *,
    name: str,
    skipped_items: list[dict[str, str]] | None = None,
    license: str = "other",
    notes: str | None = None,
) -> str:
    """Render the dataset card: YAML (configs/data_files, features, splits) + band table,
    per-band statistics, provenance and the skipped-item summary."""
    features = _FEATURES_YAML
    if info.label_names:
        features += "    - name: label\n      dtype: int64\n"
    features += "    - name: valid_mask\n      dtype: binary\n"
    chip_bytes = len(info.band_names) * info.chip_size**2 * _itemsize(info.dtype)
    splits = "".join(
        f"    - name: {s}\n      num_bytes: {n * chip_bytes}\n      num_examples: {n}\n"
        for s, n in info.num_samples.items()
    )
    data_files = "".join(
        f"      - split: {s}\n        path: data/{s}-*.parquet\n" for s in info.num_samples
    )
    header = (
        "---\n"
        f"license: {license}\ntask_categories:\n  - image-feature-extraction\n"
        f"tags:\n  - geospatial\n  - remote-sensing\n  - geofm_hf\n"
        f"configs:\n  - config_name: default\n    data_files:\n{data_files}"
        f"dataset_info:\n  features:\n{features}  splits:\n{splits}"
        "---\n"
    )
    wl = info.wavelengths_um or [None] * len(info.band_names)
    gsd = info.gsd_m or [None] * len(info.band_names)
    rows = "\n".join(
        f"| {i} | {b} | {'' if w is None else f'{w:.3f}'} | {'' if g is None else f'{g:g}'} "
        f"| {m:.2f} | {s:.2f} |"
        for i, (b, w, g, m, s) in enumerate(zip(info.band_names, wl, gsd, info.mean, info.std))
    )
    skipped = info.skipped or {"count": 0, "by_reason": {}}
    reasons = (
        "\n".join(f"- `{k}`: {v}" for k, v in skipped.get("by_reason", {}).items()) or "- none"
    )
    listed = ""
    if skipped_items:
        listed = "\n\nFirst skipped items:\n\n" + "\n".join(
            f"- `{it['item']}` ({it['reason']}): {it['message'][:200]}" for it in skipped_items[:20]
        )
    sources = "\n".join(f"- `{s}`" for s in info.sources[:50]) or "- (none recorded)"
    if len(info.sources) > 50:
        sources += f"\n- ... and {len(info.sources) - 50} more"
    counts = ", ".join(f"{s}: {n}" for s, n in info.num_samples.items())
    labels = ""
    if info.label_names:
        labels = "\n## Labels\n\n" + "\n".join(f"{i}. {n}" for i, n in enumerate(info.label_names))
        labels += "\n"
    stats_split = info.extra.get("stats_split", "train")
    body = f"""
# {name}

Chips of {len(info.band_names)} x {info.chip_size} x {info.chip_size} `{info.dtype}`
(sensor: `{info.sensor or "unknown"}`), written by `geofm-make-shards` (geofm_hf).
Samples per split: {counts}.

Load with `geofm_hf.data.load_geo_dataset(<repo id or folder>)` or plainly with
`datasets.load_dataset(<repo id or folder>, streaming=True, split="train")`. The `image`
column holds raw C-order array bytes: `np.frombuffer(row["image"], row["dtype"])
.reshape(row["shape"])`. `geofm_dataset.json` repeats band order and statistics in
machine-readable form.

## Bands

Per-band mean and standard deviation over the valid pixels of the `{stats_split}` split,
in raw `{info.dtype}` units (normalise with `(x - mean) / std`).

| index | band | wavelength (um) | native GSD (m) | mean | std |
|---|---|---|---|---|---|
{rows}

## Columns

`image` (binary), `shape` ([C, H, W]), `dtype`, `band_names`, `crs` (EPSG code or WKT),
`transform` (affine a, b, c, d, e, f), `bounds` (left, bottom, right, top), `source`,
`datetime` (ISO 8601 or null), `gsd_m`, `chip_id`{", `label`" if info.label_names else ""}.
{labels}
## Provenance

Sources:

{sources}

Parameters: {_params(info.extra)}

## Skipped items

{skipped.get("count", 0)} items skipped ({skipped.get("errors", 0)} bad inputs; the rest are chips
dropped by the nodata filter):

{reasons}{listed}
"""
    if notes:
        body += "\n" + notes.strip() + "\n"
    return header + body


def _params(extra: dict[str, Any]) -> str:
    keys = ("stride", "target_gsd_m", "resampling", "max_nodata_fraction")
    return ", ".join(f"`{k}={extra[k]}`" for k in keys if k in extra) or "not recorded"


def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize
