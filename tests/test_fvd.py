"""FVD's I3D plumbing with a stand-in TorchScript module of the real one's call signature (the real weights cannot
be downloaded here): where the file comes from (path, cache, a download from a local HTTP server, its pinned hash),
what each failure says, the two preprocessing conventions against references written here, and the distance."""

from __future__ import annotations

import functools
import http.server
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from vpkit.core.errors import VpkitError
from vpkit.engine.frechet import FeatureStats
from vpkit.plugins.metrics import fvd
from vpkit.testing.i3d import save_stand_in_i3d


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    return save_stand_in_i3d(tmp_path_factory.mktemp("i3d") / fvd.I3D_FILE)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def server(i3d_file, tmp_path):
    """An HTTP server on 127.0.0.1 serving the stand-in as /i3d_torchscript.pt (and junk as /junk.pt)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / fvd.I3D_FILE).write_bytes(i3d_file.read_bytes())
    (root / "junk.pt").write_bytes(b"<html>quota exceeded</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def clips(n: int, t: int = 12, c: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, c, size, size, generator=torch.Generator().manual_seed(seed))


# -- where the network comes from -------------------------------------------------------------------------------------


def test_explicit_path_loads_and_records_its_hash(i3d_file):
    features = fvd.build({"i3d": str(i3d_file)})
    assert features.settings["sha256"] == fvd.sha256_of(i3d_file)
    assert features.settings["file"] == str(i3d_file)
    assert features.identity == f"i3d:{fvd.sha256_of(i3d_file)[:16]}:squash"
    out = features(clips(3))
    assert out.shape == (3, 400) and out.dtype == torch.float64


def test_download_once_into_the_cache_and_pin_its_hash(server, i3d_file):
    features = fvd.build({"i3d_url": f"{server}/{fvd.I3D_FILE}"})
    cached = fvd.cached_i3d_path()
    assert cached.is_file() and features.settings["file"] == str(cached)
    assert cached.with_name(cached.name + ".sha256").read_text().strip() == fvd.sha256_of(i3d_file)
    # Later loads read the cache, even with the network gone.
    again = fvd.build({"i3d_url": "http://127.0.0.1:9/unreachable"})
    assert again.settings["sha256"] == features.settings["sha256"]


def test_a_corrupted_cache_is_detected(server):
    fvd.build({"i3d_url": f"{server}/{fvd.I3D_FILE}"})
    cached = fvd.cached_i3d_path()
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(VpkitError, match="changed since it was downloaded .* truncated or corrupt. Delete it"):
        fvd.build({})


def test_a_download_that_is_not_i3d_is_refused_and_removed(server):
    with pytest.raises(VpkitError, match="The downloaded i3d_torchscript.pt is not the I3D network"):
        fvd.build({"i3d_url": f"{server}/junk.pt"})
    assert not fvd.cached_i3d_path().exists()


def test_offline_names_the_file_the_url_and_where_to_put_it():
    with pytest.raises(VpkitError) as error:
        fvd.build({"i3d_url": "http://127.0.0.1:9/i3d_torchscript.pt"})
    message = str(error.value)
    assert fvd.I3D_FILE in message and fvd.I3D_URL in message and str(fvd.cached_i3d_path()) in message
    assert "--i3d PATH" in message and "could not be downloaded" in message and "\n" not in message


def test_expected_hash_and_missing_or_foreign_files(i3d_file, tmp_path):
    with pytest.raises(VpkitError, match="not the --i3d-sha256 00ff"):
        fvd.build({"i3d": str(i3d_file), "i3d_sha256": "00ff"})
    assert fvd.build({"i3d": str(i3d_file), "i3d_sha256": fvd.sha256_of(i3d_file).upper()})
    with pytest.raises(VpkitError, match=r"but the --i3d file .*nothing\.pt does not exist"):
        fvd.build({"i3d": str(tmp_path / "nothing.pt")})
    state_dict = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, state_dict)
    with pytest.raises(VpkitError, match="is not a TorchScript I3D"):
        fvd.build({"i3d": str(state_dict)})

    class Other(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    other = tmp_path / "other.pt"
    torch.jit.script(Other()).save(str(other))
    with pytest.raises(VpkitError, match=r"does not answer I3D's call detector\(x, rescale, resize, return_features\)"):
        fvd.build({"i3d": str(other)})


# -- preprocessing ------------------------------------------------------------------------------------------------------


class Recorder(torch.nn.Module):
    """Records what it is given; returns the per-channel means as features."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, bool, bool]] = []

    def forward(self, x, rescale=False, resize=False, return_features=False):
        self.calls.append((x.clone(), rescale, resize))
        return x.mean(dim=(2, 3, 4))


def test_squash_passes_0_255_frames_and_lets_the_module_resize():
    recorder = Recorder()
    video = clips(2, t=10, c=3, size=40)
    fvd.I3DFeatures(recorder, resize="squash")(video)
    (x, rescale, resize), = recorder.calls
    assert rescale and resize
    torch.testing.assert_close(x, video.permute(0, 2, 1, 3, 4) * 255)


def test_crop_resizes_the_short_side_crops_the_centre_and_maps_to_minus_one_one():
    recorder = Recorder()
    video = torch.rand(1, 10, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    fvd.I3DFeatures(recorder, resize="crop")(video)
    (x, rescale, resize), = recorder.calls
    assert not rescale and not resize and x.shape == (1, 3, 10, 224, 224)
    width = math.ceil(64 * 224 / 48)  # 299
    reference = F.interpolate(video[0], size=(224, width), mode="bilinear", align_corners=False)
    left = (width - 224) // 2
    reference = reference[:, :, :, left:left + 224] * 2 - 1
    torch.testing.assert_close(x[0].permute(1, 0, 2, 3), reference)


def test_grey_is_repeated_to_three_channels(i3d_file):
    features = fvd.build({"i3d": str(i3d_file)})
    grey = clips(2, c=1)
    torch.testing.assert_close(features(grey), features(grey.repeat(1, 1, 3, 1, 1)))


def test_chunking_does_not_change_features(i3d_file, monkeypatch):
    features = fvd.build({"i3d": str(i3d_file)})
    video = clips(5)
    whole = features(video)
    monkeypatch.setattr(fvd, "VALUES_PER_CHUNK", 1)  # one clip per forward pass
    torch.testing.assert_close(features(video), whole, rtol=1e-6, atol=1e-6)


def test_short_clips_and_bad_channels_are_refused(i3d_file):
    features = fvd.build({"i3d": str(i3d_file)})
    with pytest.raises(VpkitError, match="at least 10 frames .* got 9; raise --horizon"):
        features(clips(2, t=9))
    with pytest.raises(VpkitError, match="grey or RGB frames, got 2 channels"):
        features(clips(2, c=2))
    with pytest.raises(VpkitError, match="Unknown fvd_resize 'pad'; choose one of squash, crop"):
        fvd.build({"i3d": str(i3d_file), "fvd_resize": "pad"})


def test_distance_is_zero_for_the_same_set_and_grows_with_the_difference(i3d_file):
    features = fvd.build({"i3d": str(i3d_file)})
    real = clips(24, seed=2)

    def stats(video):
        s = FeatureStats(400)
        s.add(features(video).numpy())
        return s

    same = stats(real).distance(stats(real))
    blurred = stats(real).distance(stats(F.avg_pool3d(real.transpose(1, 2), (1, 3, 3), 1, (0, 1, 1)).transpose(1, 2)))
    black = stats(real).distance(stats(torch.zeros_like(real) + 0.01 * real))
    assert same == pytest.approx(0, abs=1e-6)
    assert 0 < blurred < black
