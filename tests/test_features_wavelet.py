"""The wavelet extractor and the Frechet Wavelet Distance: equal to pytorchfwd, closed forms, registry defaults, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganbench.errors import ConfigError, MetricError
from ganbench.features import build_extractor
from ganbench.features.extract import extract_features
from ganbench.features.wavelet import PACKETS, packet_side
from ganbench.metric_values import applicable_metrics, check_metrics, metrics_from_features
from ganbench.metrics import frechet_wavelet_distance
from ganbench.metrics.fid import feature_statistics, frechet_distance
from ganbench.metrics.fwd import packet_distances


def _images(n: int, channels: int, seed: int, size: int = 28) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _brighter(images: torch.Tensor) -> torch.Tensor:
    return (images.float() * 0.7 + 30).round().to(torch.uint8)


@pytest.fixture(scope="module")
def extractor():
    return build_extractor("wavelet", device="cpu")


def _pytorchfwd():
    """pytorchfwd's functions, leaving torch's default dtype as it was (importing pytorchfwd sets it to float64)."""
    dtype = torch.get_default_dtype()
    fwd = pytest.importorskip("pytorchfwd.fwd", reason="pytorchfwd pins scipy==1.11.1, so CI cannot install it beside "
                              "this project's scipy; install it with --no-deps to run this comparison")
    torch.set_default_dtype(dtype)
    return fwd


def _pytorchfwd_value(fwd, real: torch.Tensor, fake: torch.Tensor) -> float:
    """pytorchfwd's FWD of two uint8 image sets, from the tensors its folder loader builds (convert("RGB"), ToTensor)."""
    def statistics(images):
        tensors = images.expand(-1, 3, -1, -1).float() / 255
        loader = torch.utils.data.DataLoader(tensors, batch_size=16)
        return fwd.compute_packet_statistics(loader, "Haar", 4, False)  # its CLI defaults

    (mu1, sigma1), (mu2, sigma2) = statistics(real), statistics(fake)
    return float(fwd._compute_avg_frechet_distance(mu1, mu2, sigma1, sigma2))


def test_fwd_equals_pytorchfwd_on_the_same_rgb_images(extractor, capsys):
    fwd = _pytorchfwd()
    real, fake = _images(40, 3, seed=0), _brighter(_images(40, 3, seed=1))
    ours = frechet_wavelet_distance(extractor(real).features, extractor(fake).features, PACKETS)
    expected = _pytorchfwd_value(fwd, real, fake)
    # pytorchfwd fits its statistics in float32; ganbench in float64 (measured here: 3e-6 relative)
    assert ours == pytest.approx(expected, rel=2e-5)
    assert ours > 0.01


def test_grayscale_fwd_is_three_times_the_one_channel_value(extractor):
    """Gray images repeated to 3 channels (pytorchfwd's convert("RGB")) give singular per-packet covariances, on which
    pytorchfwd's sqrtm is inaccurate (1e-3 here) or fails; the exact value is 3x the one-channel distance, because
    x -> (x, x, x) / sqrt(3) is an isometry. The one-channel distance comes from pytorchfwd's own formula."""
    _pytorchfwd()
    from pytorchfwd.freq_math import calculate_frechet_distance

    real, fake = _images(30, 1, seed=2), _brighter(_images(30, 1, seed=3))
    ours = frechet_wavelet_distance(extractor(real).features, extractor(fake).features, PACKETS)
    per_packet = []
    for features_real, features_fake in zip(_one_channel_packets(extractor, real), _one_channel_packets(extractor, fake),
                                            strict=True):
        per_packet.append(calculate_frechet_distance(*feature_statistics(features_real), *feature_statistics(features_fake)))
    assert ours == pytest.approx(3 * np.mean(per_packet), rel=1e-6)


def _one_channel_packets(extractor, images: torch.Tensor) -> list[np.ndarray]:
    """Per packet, the (N, s * s) coefficients of the first channel of the extractor's 3 equal channels."""
    side = packet_side(28)
    features = extractor(images).features.numpy().reshape(len(images), PACKETS, 3, side * side)
    return [features[:, p, 0] for p in range(PACKETS)]


def test_closed_forms_identical_sets_and_a_constant_shift(extractor):
    images = _images(20, 3, seed=4)
    features = extractor(images).features
    assert frechet_wavelet_distance(features, features, PACKETS) == pytest.approx(0, abs=1e-9)
    # Adding c to every pixel changes only the approximation packet "aaaa": each level-4 haar average coefficient
    # grows by c * 2^4 (the orthonormal filter multiplies a constant by 2 per level); covariances are unchanged.
    shifted = (images.int() // 2 + 8).to(torch.uint8)  # no clipping: values stay in 8..135
    base = (images.int() // 2).to(torch.uint8)
    distances = packet_distances(extractor(base).features, extractor(shifted).features, PACKETS)
    coefficients = 3 * packet_side(28) ** 2
    assert distances[0] == pytest.approx(coefficients * (8 / 255 * 16) ** 2, rel=1e-5)
    assert np.abs(distances[1:]).max() < 1e-9
    assert frechet_wavelet_distance(extractor(base).features, extractor(shifted).features, PACKETS) == pytest.approx(
        distances[0] / PACKETS, rel=1e-5)


def test_features_layout_batching_and_protocol(extractor):
    images = _images(5, 1, seed=5)
    out = extractor(images)
    assert out.logits is None and out.features.shape == (5, extractor.feature_dim) == (5, 256 * 3 * 2 * 2)
    assert extractor.protocol == {"extractor": "wavelet", "preprocessing": "u/255-haar-level4-reflect-28px",
                                  "weights_sha256": "none", "gray_to_rgb": "repeat"}
    batched = extract_features(extractor, images, batch_size=2).features
    np.testing.assert_array_equal(batched, out.features.numpy())
    assert build_extractor("wavelet", image_size=299).feature_dim == 256 * 3 * 19 * 19  # 1.1 MB per image


def test_images_of_another_size_are_refused_in_one_line(extractor):
    with pytest.raises(ConfigError, match=r"^the wavelet extractor was built for 28x28 images .* received 32x32; pass "
                       r"--wavelet-size 32 when both sets are that size$"):
        extractor(_images(2, 3, seed=6, size=32))
    with pytest.raises(ConfigError, match=r"--wavelet-size: received 8; expected an image side of at least 16 pixels"):
        build_extractor("wavelet", image_size=8)
    with pytest.raises(MetricError, match=r"received D=100, which is not a multiple of 256 packets"):
        frechet_wavelet_distance(np.zeros((3, 100)), np.zeros((3, 100)), PACKETS)


def test_fwd_is_the_wavelet_extractors_default_and_only_there(extractor):
    real, fake = _images(12, 1, seed=7), _brighter(_images(12, 1, seed=8))
    real_set, fake_set = (extract_features(extractor, x) for x in (real, fake))
    assert applicable_metrics(fake_set) == ("fwd",)  # FID etc. on raw packet coefficients only when asked for
    values = metrics_from_features(real_set, fake_set)
    assert list(values) == ["fwd"]
    assert values["fwd"].value == pytest.approx(frechet_wavelet_distance(real_set.features, fake_set.features, PACKETS))
    assert "fid" in check_metrics(["fid"], fake_set)
    inception_like = type(fake_set)(fake_set.features, None, {**fake_set.protocol, "extractor": "inception"})
    assert "fwd" not in applicable_metrics(inception_like)
    with pytest.raises(ConfigError, match=r"metric fwd does not apply to extractor 'inception'"):
        check_metrics(["fwd"], inception_like)


def test_frechet_distance_per_packet_is_ganbenchs(extractor):
    real, fake = _images(10, 3, seed=9), _images(10, 3, seed=10)
    a = extractor(real).features.numpy().reshape(10, PACKETS, -1)
    b = extractor(fake).features.numpy().reshape(10, PACKETS, -1)
    expected = frechet_distance(*feature_statistics(a[:, 7]), *feature_statistics(b[:, 7]))
    assert packet_distances(a.reshape(10, -1), b.reshape(10, -1), PACKETS)[7] == pytest.approx(expected, rel=1e-12)
