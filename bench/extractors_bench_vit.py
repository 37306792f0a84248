"""DINOv2 / CLIP feature throughput (images/s): ganbench's extractors vs the packages they build on, called directly.

Peers, on the same uint8 images and the same random weights: timm's `vit_small_patch14_dinov2` (img_size 224) fed
torch's bicubic resize and ImageNet scaling; open_clip's ViT-B-32 vision tower fed open_clip's own eval transform
(PIL, image by image). Rows alternate within each round; the table shows the median over rounds. Throughput does not
depend on the weight values, so random weights in the official layouts are written to a temporary folder.

    python bench/extractors_bench_vit.py [--images 16] [--size 28] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def dinov2_rows(folder: Path, images: torch.Tensor) -> dict:
    import timm

    from ganbench.features import dinov2 as dv

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, num_classes=0).eval()
    state = dict(model.state_dict(), mask_token=torch.zeros(1, 384))  # the official layout: 518 px pos_embed
    torch.save(state, folder / "dinov2_vits14_pretrain.pth")
    peer = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=224, num_classes=0).eval()
    peer.load_state_dict(dv.timm_state_dict(dict(state)))
    rgb = images.expand(-1, 3, -1, -1)

    def timm_direct():
        x = torch.nn.functional.interpolate(rgb.float(), size=(224, 224), mode="bicubic", antialias=True) / 255
        return peer.forward_features(dv.normalize(x, dv.IMAGENET_MEAN, dv.IMAGENET_STD))[:, 0]

    rows = {f"dinov2-vit-s14 {p}": dv.build_dinov2("dinov2-vit-s14", folder / "dinov2_vits14_pretrain.pth", p)
            for p in ("dgm-eval", "edm2")}
    return {**{k: (lambda e=e: e(images)) for k, e in rows.items()}, "timm vit_small_patch14_dinov2 (peer)": timm_direct}


def clip_rows(folder: Path, images: torch.Tensor) -> dict:
    import open_clip
    from PIL import Image
    from safetensors.torch import save_file

    from ganbench.features import clip as cl

    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / cl.SAFETENSORS_FILE))
    transform = open_clip.image_transform(224, is_train=False)
    pixels = images.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()

    def open_clip_direct():
        return model.encode_image(torch.stack([transform(Image.fromarray(p, "RGB")) for p in pixels]))

    rows = {f"clip-vit-b32 {p}": cl.build_clip("clip-vit-b32", folder / cl.SAFETENSORS_FILE, p) for p in ("cmmd", "open-clip")}
    return {**{k: (lambda e=e: e(images)) for k, e in rows.items()}, "open_clip ViT-B-32 encode_image (peer)": open_clip_direct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (args.images, 1, args.size, args.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        rows = {**dinov2_rows(Path(tmp), images), **clip_rows(Path(tmp), images)}
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, run in rows.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    print(f"{args.images} images of {args.size}x{args.size}, {args.threads} thread(s), median of {args.rounds} rounds")
    print(f"{'extractor':<44} {'images/s':>9}")
    for name, seconds in times.items():
        print(f"{name:<44} {args.images / statistics.median(seconds):>9.1f}")


if __name__ == "__main__":
    main()
