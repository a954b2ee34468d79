"""Linear probe of a wavelength (mixed-sensor) checkpoint on the bundled OSM land-use labels,
with all 13 Sentinel-2 bands and with only RGB+NIR, against a random-init twin of the same shape.

Features are the mean of the encoder's patch tokens (16 px chips, positions interpolated); the
probe is the package's linear probe (BatchNorm + linear, MAE's recipe). Error bars: mean and standard deviation over
``--splits`` stratified resplits of train+test (the test fraction of the original split).

    python benchmarks/probe_any_sensor.py --checkpoint outputs/demo_mixed_sensors/final
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from geofm_hf import GeoViTMAEModel
from geofm_hf.bands import band_bandwidths, band_wavelengths
from geofm_hf.classification.data import load_classification_split
from geofm_hf.classification.probe import predict_scores, train_linear_probe
from geofm_hf.data import read_dataset_info

DATASET = "geofm_hf/sample_data/s2_osm_landuse"
SUBSETS = {"13 bands": None, "RGB+NIR": ["B04", "B03", "B02", "B08"]}


def features(model, images: np.ndarray, bands: list[str], names: list[str], mean, std):
    index = [names.index(b) for b in bands]
    x = (images[:, index].astype(np.float32) - mean[index, None, None]) / std[index, None, None]
    wavelengths = band_wavelengths(bands, "sentinel2-l1c")
    # A model pretrained with bandwidths gets them, as its processor would give them.
    widths = band_bandwidths(bands, "sentinel2-l1c") if model.config.wavelength_bandwidths else None
    with torch.no_grad():
        out = model(
            torch.from_numpy(x), wavelengths=wavelengths, bandwidths=widths,
            interpolate_pos_encoding=True,
        ).last_hidden_state  # fmt: skip
    return out[:, 1:].mean(dim=1).numpy()


def _stratified_split(labels: np.ndarray, test_size: float, seed: int):
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cut = max(1, round(len(idx) * test_size))
        test.extend(idx[:cut])
        train.extend(idx[cut:])
    return np.array(train), np.array(test)


def probe(feats: np.ndarray, labels: np.ndarray, test_size: float, splits: int) -> list[float]:
    scores = []
    x, y = torch.from_numpy(feats), torch.from_numpy(labels).long()
    classes = int(labels.max()) + 1
    for seed in range(splits):
        train, test = _stratified_split(labels, test_size, seed)
        head, _ = train_linear_probe(x[train], y[train], classes, epochs=60, seed=seed)
        predicted = predict_scores(head, x[test]).argmax(dim=1)
        scores.append(float((predicted == y[test]).float().mean()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--splits", type=int, default=5)
    args = parser.parse_args()
    train = load_classification_split(DATASET, "train")
    test = load_classification_split(DATASET, "test")
    images = np.concatenate([np.asarray(train.images), np.asarray(test.images)])
    labels = np.concatenate([train.labels, test.labels])
    info = read_dataset_info(DATASET)
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
    pretrained = GeoViTMAEModel.from_pretrained(args.checkpoint).eval()
    torch.manual_seed(0)
    random_twin = GeoViTMAEModel(pretrained.config).eval()
    test_size = len(test.labels) / len(labels)
    print(f"OSM land use: {len(labels)} chips, {len(set(labels.tolist()))} classes; "
          f"{args.splits} stratified resplits, test fraction {test_size:.2f}")  # fmt: skip
    print(f"{'bands':<10}{'pretrained':>20}{'random init':>20}")
    for label, subset in SUBSETS.items():
        bands = subset or train.band_names
        row = []
        for model in (pretrained, random_twin):
            scores = probe(
                features(model, images, bands, train.band_names, mean, std),
                labels,
                test_size,
                args.splits,
            )
            row.append(f"{statistics.mean(scores):.3f} +- {statistics.stdev(scores):.3f}")
        print(f"{label:<10}{row[0]:>20}{row[1]:>20}")


if __name__ == "__main__":
    main()
