"""The FID Inception v3 extractor: pool3 features (2048-d) and logits (1008) in one pass, under a named preprocessing.

The network and its weights are torch-fidelity's `FeatureExtractorInceptionV3`: the TensorFlow 2015-12-05 FID graph
ported to PyTorch, with the graph's quirks (TF-style average pooling, max pooling in Mixed_7c, 1008 classes). pytorch-fid
builds the same network; on the same 299x299 input the two give the same pool3 features (bit-identical on CPU
here; the tests check them to 1e-4).
What differs between the reference implementations is the preprocessing, so it is part of the protocol:

- "tf1" (default): torch-fidelity's own forward, unchanged: uint8 -> float32, TensorFlow-1.x-exact bilinear resize to
  299x299 (align_corners=False, no half-pixel centres), then (u - 128) / 128. This is the protocol of the original TF
  FID/IS code, torch-fidelity and torchmetrics.
- "pytorch-fid": what pytorch-fid's `InceptionV3([3], resize_input=True, normalize_input=True)` computes on its loader's
  `ToTensor()` images: u / 255, torch's `F.interpolate(bilinear, align_corners=False)` (half-pixel centres) to 299x299,
  then 2x - 1, on the same network. pytorch-fid itself is not imported.

The two resizes sample different source positions, so small images (28x28, 32x32) give clearly different features
and FIDs: numbers from different protocols are not comparable.

Grayscale (1-channel) images are repeated to 3 identical channels before either protocol, as PIL's convert("RGB") does
in pytorch-fid's loader; `gray_to_rgb = "repeat"` records this in `protocol`. The logits are torch-fidelity's
"logits_unbiased" (the fc layer without its bias), the layer its Inception Score uses.

Weights come from, in order: the `weights` argument (`--inception-weights PATH`), the GANBENCH_INCEPTION_WEIGHTS
variable, the torch hub cache (torch-fidelity's file, then pytorch-fid's `pt_inception` file, which has the same
bytes), then a download of torch-fidelity's file into the hub cache, checked against the published sha256. A file
under either reference name must be those bytes (a partial download or another file left under the name is refused);
a file passed by path under another name is used as given, its sha256 in the protocol. Nothing else is ever
substituted: no torchvision ImageNet weights, no random initialisation.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ganbench.errors import ConfigError, DataUnavailableError, one_line
from ganbench.features.base import ExtractorOutput, FeatureExtractor, existing_weights_file
from ganbench.safeload import load_error_detail

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name, in <torch hub dir>/checkpoints
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
PYTORCH_FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's copy: the same bytes
# The published file's sha256 (95,628,359 bytes); both names carry its first 8 digits, as torch.hub names files.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "GANBENCH_INCEPTION_WEIGHTS"
WEIGHTS_FLAG = "--inception-weights"
DOWNLOAD_PROBE_TIMEOUT_S = 10.0
_EXPECTED = f"expected the FID Inception weights {WEIGHTS_FILE} (from {WEIGHTS_URL}) or pytorch-fid's {PYTORCH_FID_WEIGHTS_FILE}"

PREPROCESSINGS: dict[str, str] = {
    "tf1": "torch-fidelity / TF1: TF1-exact bilinear resize of uint8 values to 299, then (u - 128) / 128",
    "pytorch-fid": "pytorch-fid: u / 255, torch bilinear resize (align_corners=False) to 299, then 2x - 1",
}

INPUT_SIZE = 299
# torch-fidelity's layers after its preprocessing, in its forward's order; fed by the pytorch-fid protocol.
_LAYERS_AFTER_PREPROCESSING = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)  # fmt: skip


class InceptionExtractor(FeatureExtractor):
    """FID Inception v3 under one preprocessing protocol; build it with `build_inception`.

    `forward(images)` takes uint8 NCHW images (1 or 3 channels, any size) and returns float32 pool3 features (N, 2048)
    and logits_unbiased (N, 1008). Every image is processed independently (eval-mode batch norm), so the features
    do not depend on how images are batched, up to float rounding of the batched convolutions (~1e-6 relative).
    """

    name = "inception"
    feature_dim = 2048
    num_classes = 1008
    gray_to_rgb = "repeat"

    def __init__(
        self, network: torch.nn.Module, *, preprocessing: str, weights_sha256: str, weights_path: Path, batch_size: int | None
    ) -> None:
        super().__init__()
        self.network = network  # torch-fidelity's FeatureExtractorInceptionV3, asked for ("2048", "logits_unbiased")
        self.preprocessing = preprocessing
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.batch_size = batch_size
        self.eval()

    def train(self, mode: bool = True) -> InceptionExtractor:
        """Stays in eval mode: batch norm must use its stored statistics, or features would depend on the batch."""
        return super().train(False)

    def _forward(self, images: torch.Tensor) -> ExtractorOutput:
        device = self.network.fc.weight.device
        chunks = images.split(self.batch_size) if self.batch_size else (images,)
        outputs = [self._forward_batch(chunk.to(device)) for chunk in chunks]
        features = torch.cat([features for features, _ in outputs])
        logits = torch.cat([logits for _, logits in outputs])
        return ExtractorOutput(features=features, logits=logits)

    def _forward_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = images.expand(-1, 3, -1, -1)  # gray -> 3 equal channels; RGB unchanged
        if self.preprocessing == "tf1":
            return self.network(rgb)
        return _pool3_and_logits(self.network, _pytorch_fid_preprocess(rgb))


def _pytorch_fid_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1] as torchvision's ToTensor does, then pytorch-fid's resize and scaling, in its order."""
    x = images.to(torch.float32).div(255)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


def _pool3_and_logits(network: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch-fidelity's network from its first convolution on already preprocessed 299x299 input."""
    for layer in _LAYERS_AFTER_PREPROCESSING:
        x = getattr(network, layer)(x)
    features = torch.flatten(x, 1)
    return features, features.mm(network.fc.weight.T)  # logits_unbiased, as torch-fidelity computes them


def build_inception(
    weights: str | Path | None = None,
    preprocessing: str = "tf1",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    *,
    channels_last: bool = False,
    download: bool = True,
) -> InceptionExtractor:
    """The FID Inception extractor.

    weights: path of the weights file; None searches GANBENCH_INCEPTION_WEIGHTS, then the torch hub cache, then downloads
    (see `resolve_inception_weights`). preprocessing: "tf1" or "pytorch-fid" (module docstring). batch_size: the most
    images per network pass inside `forward` (None: the whole input at once); it bounds memory, never the values.
    channels_last: store the convolution weights channels-last, which lets oneDNN pick faster CPU kernels (1.4-1.7x
    measured by bench/features_bench.py); features then differ from torch-fidelity's by float rounding only (~1e-6
    relative), so it is off by default to keep tf1 bit-identical to the reference. download: False never touches
    the network. Raises ConfigError for bad options, DataUnavailableError for weights
    that cannot be found, downloaded or loaded.
    """
    if preprocessing not in PREPROCESSINGS:
        choices = ", ".join(PREPROCESSINGS)
        raise ConfigError(f"unknown Inception preprocessing {preprocessing!r}; expected one of: {choices} (--preprocessing)")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"Inception batch_size must be a positive integer or None, got {batch_size!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"invalid device {device!r} for the Inception extractor: {error}") from error
    path = resolve_inception_weights(weights, download=download)
    network, sha256 = load_inception_network(path)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    extractor = InceptionExtractor(
        network, preprocessing=preprocessing, weights_sha256=sha256, weights_path=path, batch_size=batch_size
    )
    return extractor.to(device)


def hub_weights_paths() -> tuple[Path, Path]:
    """Where torch-fidelity and pytorch-fid cache their weights: <torch.hub.get_dir()>/checkpoints/<file>."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return checkpoints / WEIGHTS_FILE, checkpoints / PYTORCH_FID_WEIGHTS_FILE


def resolve_inception_weights(weights: str | Path | None = None, *, download: bool = True) -> Path:
    """The weights file to use: the argument, else $GANBENCH_INCEPTION_WEIGHTS, else the hub cache, else a download.

    A path given explicitly (argument or variable) must exist: a wrong path is an error, never a reason to look further.
    """
    if weights is not None:
        return existing_weights_file(Path(weights).expanduser(), f"{WEIGHTS_FLAG} {weights}", _EXPECTED)
    from_env = os.environ.get(WEIGHTS_ENV)
    if from_env:
        return existing_weights_file(Path(from_env).expanduser(), f"{WEIGHTS_ENV}={from_env}", _EXPECTED)
    for cached in hub_weights_paths():
        if cached.is_file():
            return cached
    target = hub_weights_paths()[0]
    if not download:
        raise DataUnavailableError(_missing_weights_message("downloads are disabled"))
    _download_weights(target)
    return target


def _missing_weights_message(reason: str) -> str:
    target, pytorch_fid_copy = hub_weights_paths()
    return (
        f"the FID Inception weights {WEIGHTS_FILE} are not available: not found at {target} "
        f"(nor pytorch-fid's copy at {pytorch_fid_copy}), and downloading {WEIGHTS_URL} failed ({reason}). "
        f"Download that URL on a machine with internet and put the file at {target}, or pass {WEIGHTS_FLAG} PATH, "
        f"or set {WEIGHTS_ENV}=PATH; or use --extractor lenet-fashion-mnist or --extractor lenet-mnist "
        f"(their scores are not comparable with Inception ones)"
    )


def _download_weights(target: Path) -> None:
    """Fetch torch-fidelity's file into the hub cache with torch.hub (atomic: temp file, then move).

    torch.hub opens the URL without a timeout, so a short request first makes an offline machine fail in seconds.
    """
    import urllib.request

    try:
        request = urllib.request.Request(WEIGHTS_URL, headers={"User-Agent": "ganbench"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(target), hash_prefix=WEIGHTS_SHA256, progress=True)
    except (OSError, RuntimeError) as error:  # URLError, HTTPError, timeouts; RuntimeError: a hash mismatch
        raise DataUnavailableError(_missing_weights_message(f"{type(error).__name__}: {one_line(error)}")) from error


def load_inception_network(path: Path) -> tuple[torch.nn.Module, str]:
    """torch-fidelity's network with the weights in `path`, and the sha256 of exactly the bytes that were loaded.

    The file is read once: hashed, then loaded with weights_only=True. torch-fidelity's constructor unpickles its
    weights with weights_only=False, so it only ever sees an in-memory re-serialisation of that verified tensor dict.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    if path.name in (WEIGHTS_FILE, PYTORCH_FID_WEIGHTS_FILE) and sha256 != WEIGHTS_SHA256:
        raise DataUnavailableError(
            f"{path} has sha256 {sha256[:12]}..., not the published FID Inception weights' {WEIGHTS_SHA256} that its "
            f"name promises (a partial download, or another file left under the name); delete it so ganbench can "
            f"download the real file, or pass {WEIGHTS_FLAG} PATH under another name to use a different file on purpose"
        )
    try:
        state_dict = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise DataUnavailableError(
            f"{path} is not a loadable weights-only tensor file ({load_error_detail(error)}); "
            f"expected the FID Inception weights {WEIGHTS_FILE} from {WEIGHTS_URL}"
        ) from error
    del raw
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise DataUnavailableError(
            f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors; "
            f"expected the FID Inception weights {WEIGHTS_FILE} from {WEIGHTS_URL}"
        )
    verified = io.BytesIO()
    torch.save(state_dict, verified)
    del state_dict
    verified.seek(0)
    try:
        network = FeatureExtractorInceptionV3(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=verified,
            feature_extractor_internal_dtype="float32",
        )
    except RuntimeError as error:  # load_state_dict(strict=True): missing, unexpected or mis-shaped tensors
        detail = " ".join(str(error).split())[:300]  # torch's multi-line report, on one line for the CLI
        raise DataUnavailableError(
            f"{path} does not hold the FID Inception v3 tensors ({detail}); "
            f"expected {WEIGHTS_FILE} from {WEIGHTS_URL} or pytorch-fid's {PYTORCH_FID_WEIGHTS_FILE}"
        ) from error
    return network, sha256
