"""The weight-free wavelet-packet feature space of the Frechet Wavelet Distance (`--extractor wavelet`).

Paper: Veeramacheneni et al., ICLR 2025. Reference implementation matched: pytorchfwd 1.0.1 with its defaults
(`--wavelet Haar --max_level 4`, no `--log_scale`, no `--resize`): PIL's convert("RGB") (grayscale repeated to
3 channels), `ToTensor()` (u / 255, float32), then ptwt's `WaveletPacket2D(images, haar, maxlevel=4)` (its
default "reflect" boundary mode) and the level-4 packets in ptwt's natural order, 4^4 = 256 of them.

Features, per image: the 256 packets' coefficients (3 channels x h x w each) flattened packet by packet, so the
`fwd` metric can fit one Gaussian per packet. Their size grows with the image: at 28x28 a packet is 3 x 2 x 2
(3,072 floats per image); at 299x299 it is 3 x 19 x 19 (277,248 floats, 1.1 MB per image). Because the size
depends on the image size, the extractor is built for one `image_size` (part of its protocol, `--wavelet-size`)
and refuses images of any other size. No network, no weights: `weights_sha256` is "none".
"""

from __future__ import annotations

import torch

from ganbench.errors import ConfigError
from ganbench.features.base import ExtractorOutput, FeatureExtractor

WAVELET = "haar"  # pytorchfwd's default "Haar"; pywt reads the name case-insensitively
LEVEL = 4  # pytorchfwd's default --max_level
PACKETS = 4**LEVEL
MODE = "reflect"  # ptwt's default boundary mode, which pytorchfwd uses
DEFAULT_IMAGE_SIZE = 28  # every dataset ganbench trains on (MNIST, Fashion-MNIST) is 28x28
SIZE_FLAG = "--wavelet-size"


def packet_side(size: int, level: int = LEVEL) -> int:
    """Side of a level-`level` packet of a `size`-pixel side: each haar level halves it, an odd side padded by one."""
    for _ in range(level):
        size = (size + 1) // 2
    return size


class WaveletExtractor(FeatureExtractor):
    """pytorchfwd's level-4 haar packets of (image_size x image_size) images; build it with `build_wavelet`.

    `forward(images)` takes uint8 NCHW images (1 or 3 channels, exactly image_size square) and returns float32
    features (N, 256 * 3 * s * s) with s = `packet_side(image_size)`, and no logits.
    """

    name = "wavelet"
    num_classes = None
    weights_sha256 = "none"
    gray_to_rgb = "repeat"

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.preprocessing = f"u/255-{WAVELET}-level{LEVEL}-{MODE}-{image_size}px"
        self.feature_dim = PACKETS * 3 * packet_side(image_size) ** 2
        self.packets = PACKETS

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        import ptwt
        import pywt

        height, width = images.shape[-2:]
        if (height, width) != (self.image_size, self.image_size):
            raise ConfigError(
                f"the wavelet extractor was built for {self.image_size}x{self.image_size} images (its feature size "
                f"depends on it) and received {height}x{width}; pass {SIZE_FLAG} {height} when both sets are that size"
            )
        x = images.expand(-1, 3, -1, -1).to(torch.float32).div(255)  # convert("RGB"), then ToTensor()
        packets = ptwt.WaveletPacket2D(x, pywt.Wavelet(WAVELET), mode=MODE, maxlevel=LEVEL)
        stacked = torch.stack([packets[node] for node in packets.get_natural_order(LEVEL)], dim=1)  # (N, P, 3, s, s)
        return ExtractorOutput(features=stacked.reshape(x.shape[0], -1).float(), logits=None)


def build_wavelet(image_size: int = DEFAULT_IMAGE_SIZE, device: str | torch.device = "cpu") -> WaveletExtractor:
    """The wavelet-packet extractor for square images of side `image_size` (>= 2^4 = 16, so level 4 exists)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 2**LEVEL:
        raise ConfigError(f"{SIZE_FLAG}: received {image_size!r}; expected an image side of at least {2**LEVEL} pixels "
                          f"(a level-{LEVEL} wavelet packet transform halves it {LEVEL} times)")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"invalid device {device!r} for the wavelet extractor: {error}") from error
    try:  # checked here, before any work: the packets come from ptwt, the wavelet from PyWavelets
        import ptwt  # noqa: F401
        import pywt  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"the wavelet extractor needs ptwt and PyWavelets ({error}); "
                          "install them with pip install 'ganbench[extractors]'") from error
    return WaveletExtractor(image_size).to(device)
