"""``geofm-make-shards``: rasters -> Hub-ready Parquet shards (optionally pushed to the Hub)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from .._errors import UserInputError, user_error_exit
from .format import BadInputError
from .progress import Progress, add_max_chips_argument
from .writer import write_shards

__all__ = ["add_scene_arguments", "main", "push_dataset_to_hub", "scene_arguments"]


def _parse_split(text: str):
    if "=" not in text:
        return text
    out = {}
    for part in text.split(","):
        name, _, frac = part.partition("=")
        try:
            out[name.strip()] = float(frac)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--split expects NAME or NAME=FRACTION,...; got {text!r}"
            ) from None
    return out


def _parse_band_files(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInputError(
                "bad_band_files",
                f"--band-files expects NAME=PATH ... (e.g. red=ls7_30.tif nir=ls7_40.tif); "
                f"got {item!r}",
            )
        if name in out:
            raise BadInputError("bad_band_files", f"--band-files names band {name!r} twice")
        out[name] = path
    return out


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _number(kind, *, low=None, high=None, low_open=False, name=""):
    """argparse type: a number of ``kind`` within [low, high] (``low_open``: > low)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, found {text!r}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and value > high
        ):  # fmt: skip
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"<= {high}"
            raise argparse.ArgumentTypeError(
                f"expected a value {' and '.join(x for x in (lo, hi) if x)}, found {text}"
            )
        return value

    parse.__name__ = name or kind.__name__
    return parse


_POSITIVE_INT = _number(int, low=0, low_open=True, name="positive int")
_FRACTION = _number(float, low=0.0, high=1.0, name="fraction in [0, 1]")


def add_scene_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say how input rasters are read, shared by every door that reads them
    (``geofm-make-shards``, ``geofm-embed``, ``geofm-segment``): one meaning, one spelling."""
    g = p.add_argument_group(
        "reading scenes", "how input rasters become named bands (the same in every geofm tool)"
    )
    g.add_argument(
        "--band-names",
        type=_names,
        default=None,
        help="name the bands of multi-band files that carry no band descriptions",
    )
    g.add_argument(
        "--band-files",
        nargs="+",
        action="append",
        default=None,
        metavar="NAME=PATH",
        help="one scene from one file per band (repeat the flag for more scenes)",
    )
    g.add_argument(
        "--filename-pattern",
        default=None,
        help="regex with a named 'band' group (optionally 'scene') grouping "
        r"one-file-per-band inputs, e.g. '(?P<scene>.+)_(?P<band>\d)0\.tif$'",
    )
    g.add_argument(
        "--ignore-qa-masks",
        action="store_true",
        help="do not apply <scene>_fmask/_SCL/_QA_PIXEL cloud masks to validity",
    )
    g.add_argument("--nodata", type=float, default=None,
                   help="a value that is nodata in every band, besides each file's declared "
                   "nodata and the sensor's fill values")  # fmt: skip
    g.add_argument(
        "--sensor",
        default=None,
        help="band table, e.g. landsat7, landsat5, landsat8, sentinel2-l2a, hls-s30; "
        "default: identified from product ids / metadata, else an error if ambiguous",
    )


def scene_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`add_scene_arguments`' flags (``band_files`` parsed)."""
    band_files = [_parse_band_files(g) for g in args.band_files] if args.band_files else None
    return {"band_names": args.band_names, "band_files": band_files,
            "filename_pattern": args.filename_pattern, "qa_masks": not args.ignore_qa_masks,
            "nodata": args.nodata, "sensor": args.sensor}  # fmt: skip


def push_dataset_to_hub(folder: str, repo_id: str, *, private: bool = False,
                        revision: str | None = None, token: str | None = None) -> str:  # fmt: skip
    """Upload a shard folder as a dataset repo (``upload_folder``); returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or ``huggingface-cli login`` and is never
    printed or logged.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    info = api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message="Add geofm_hf shards",
        ignore_patterns=[".geofm_staging/*", "*.tmp"],
    )
    return str(getattr(info, "commit_url", info))


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geofm-make-shards",
        description="Cut rasters (files, folders, globs; one file per band or multi-band) into "
        "chips and write Parquet shards + dataset card + geofm_dataset.json.",
    )
    p.add_argument("inputs", nargs="*", help="raster files, folders or quoted globs")
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("--chip-size", type=_POSITIVE_INT, default=64)
    p.add_argument("--stride", type=_POSITIVE_INT, default=None, help="default: chip size")
    add_scene_arguments(p)
    p.add_argument(
        "--bands",
        type=_names,
        default=None,
        help="select and reorder bands by name/alias, e.g. B4,B3,B2 (pixels follow)",
    )
    p.add_argument(
        "--resolution",
        type=_number(float, low=0.0, low_open=True),
        default=None,
        help="target GSD (default finest)",
    )
    p.add_argument("--resampling", default="nearest")
    p.add_argument(
        "--max-nodata-fraction",
        type=_FRACTION,
        default=0.0,
        help="drop chips (with --num-frames: frames) with more invalid pixels",
    )
    p.add_argument(
        "--num-frames",
        type=_POSITIVE_INT,
        default=None,
        help="write time series: the scenes on one grid are dates of one footprint; "
        "each chip stacks this many dates, (T, C, H, W), in date order",
    )
    p.add_argument("--target-shard-mb", type=_number(float, low=0.0, low_open=True), default=128.0)
    p.add_argument("--rows-per-shard", type=_POSITIVE_INT, default=None)
    p.add_argument("--compression-level", type=_number(int, low=1, high=22), default=3)
    p.add_argument(
        "--split",
        type=_parse_split,
        default="train",
        help="NAME, or spatial blocks NAME=FRACTION,... e.g. train=0.8,validation=0.2",
    )
    p.add_argument("--on-error", choices=["skip", "raise"], default="raise")
    p.add_argument("--max-error-fraction", type=_FRACTION, default=0.05)
    p.add_argument("--name", default=None, help="dataset card title")
    p.add_argument("--license", default="other")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to push to")
    p.add_argument("--labels", metavar="MASK.tif", default=None,
                   help="class raster (value = class, nodata = unlabelled), any grid: "
                   "reprojected nearest-neighbour; adds a per-chip mask")  # fmt: skip
    p.add_argument(
        "--labels-vector",
        metavar="FILE",
        default=None,
        help="polygons (GeoPackage, GeoJSON, shapefile ...) rasterised as the mask",
    )
    p.add_argument("--label-field", default=None, help="attribute naming each polygon's class")
    p.add_argument("--targets", metavar="RASTER", default=None,
                   help="continuous raster (first band; nodata/NaN = unknown), any grid: "
                   "reprojected bilinear; adds a per-chip float32 target for regression")  # fmt: skip
    add_max_chips_argument(p)
    p.add_argument("--no-progress", action="store_true",
                   help="print neither the plan nor progress lines")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@user_error_exit("geofm-make-shards")
def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    reading = scene_arguments(args)
    if not args.inputs and not reading["band_files"]:
        raise BadInputError("no_inputs", "no inputs: give raster files/folders/globs or "
                            "--band-files")  # fmt: skip
    if args.filename_pattern is not None:
        try:
            re.compile(args.filename_pattern)
        except re.error as err:
            raise BadInputError("bad_pattern", f"--filename-pattern {args.filename_pattern!r} "
                                f"is not a valid regular expression: {err}") from None  # fmt: skip
    try:
        summary = write_shards(
            args.inputs, args.output_dir, chip_size=args.chip_size, stride=args.stride,
            bands=args.bands, **reading, resolution=args.resolution,
            resampling=args.resampling,
            max_nodata_fraction=args.max_nodata_fraction, target_shard_mb=args.target_shard_mb,
            rows_per_shard=args.rows_per_shard, compression_level=args.compression_level,
            split=args.split, on_error=args.on_error, max_error_fraction=args.max_error_fraction,
            overwrite=args.overwrite, dataset_name=args.name,
            license=args.license, label_raster=args.labels, label_vector=args.labels_vector,
            label_field=args.label_field, num_frames=args.num_frames,
            target_raster=args.targets, max_chips=args.max_chips,
            progress=Progress("geofm-make-shards", enabled=not args.no_progress),
        )  # fmt: skip
    except (UserInputError, ValueError, OSError) as err:
        user = err
        if not isinstance(err, (UserInputError, OSError)):
            # The scene and band checks below the writer raise ValueError for what a user gave.
            user = BadInputError("bad_input", str(err))
        elif isinstance(err, PermissionError):  # a read-only output folder
            user = BadInputError(
                "not_writable", f"cannot write {args.output_dir}: {err.strerror or err}"
            )
        elif isinstance(err, OSError) and err.errno is None and not isinstance(err, UserInputError):
            # GDAL's read errors (rasterio's RasterioIOError) carry the file in their message.
            user = BadInputError("unreadable", f"I/O error: {err}")
        if not getattr(err, "__notes__", None):
            user.add_note("nothing was written; the output folder is as it was before the run")
        if user is err:
            raise
        raise user from None
    print(json.dumps({
        "output_dir": summary.output_dir, "num_samples": summary.num_samples,
        "num_shards": summary.num_shards, "skipped": summary.skipped,
        "read_mb_per_s": round(summary.read_mb_per_s, 1),
    }, indent=2))  # fmt: skip
    if args.push_to_hub:
        url = push_dataset_to_hub(args.output_dir, args.push_to_hub, private=args.private,
                                  revision=args.revision)  # fmt: skip
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
