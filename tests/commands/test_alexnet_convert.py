"""torchvision-layout AlexNet weights, written by real torch code, converted and compared: the Flax
FCN equals torch's AlexNet `features` on the same spectrogram image."""

import hashlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from avfbp_jax.commands import alexnet_convert
from avfbp_jax.models import alexnet
from avfbp_jax.models.audio import AudioFCN
from avfbp_jax.models.config import model_config, torchvision_alexnet
from avfbp_jax.models.model import AVModel, example_batch, load_pretrained

torch = pytest.importorskip("torch")
nn = torch.nn


class TorchAlexNet(nn.Module):
    """torchvision.models.AlexNet as torchvision defines it (same modules, names and order)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )


@pytest.fixture(scope="module")
def torch_alexnet(tmp_path_factory):
    """(torch model, its state_dict saved as a .pth by torch.save, the converted folder)."""
    torch.manual_seed(0)
    model = TorchAlexNet(num_classes=10).eval()
    root = tmp_path_factory.mktemp("alexnet")
    pth = root / "alexnet-random.pth"
    torch.save(model.state_dict(), pth)
    out = alexnet_convert.convert(pth, root / "converted")
    return model, pth, out


def test_flax_fcn_equals_torch_features(torch_alexnet):
    model, _, out = torch_alexnet
    params = alexnet.load_fcn_params(out)
    cfg = torchvision_alexnet(model_config().audio)
    spec = np.random.default_rng(0).standard_normal((2, 150, 200)).astype(np.float32)
    h, length = AudioFCN(cfg).apply({"params": params}, spec, np.array([150, 150]))
    # The image: frequency along the height, time along the width, gray replicated into RGB.
    image = torch.from_numpy(np.repeat(spec.transpose(0, 2, 1)[:, None], 3, axis=1))
    with torch.no_grad():
        want = model.features(image).numpy().transpose(0, 3, 2, 1)  # [B, T', F', C]
    assert h.shape == want.shape and int(length[0]) == want.shape[1]
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(h) / scale, want / scale, atol=1e-5)


def test_metadata_and_model_init(torch_alexnet):
    _, pth, out = torch_alexnet
    meta = (out / alexnet.META_FILE).read_text()
    assert hashlib.sha256(pth.read_bytes()).hexdigest() in meta and '"published": false' in meta
    cfg = model_config()
    cfg.fusion = "audio"
    cfg.audio.init_weights = str(out)
    torchvision_alexnet(cfg.audio)
    batch = example_batch(cfg, 1, 1.0, 2)
    params = jax.eval_shape(AVModel(cfg).init, jax.random.key(0), batch)["params"]
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params)
    loaded = load_pretrained(params, cfg)
    np.testing.assert_array_equal(loaded["audio"]["fcn"]["conv2"]["kernel"],
                                  alexnet.load_fcn_params(out)["conv2"]["kernel"])
    assert np.all(loaded["audio"]["norm"]["scale"] == 0)  # the rest is left as it was
    caffe = model_config()
    caffe.fusion, caffe.audio.init_weights = "audio", str(out)
    caffe_params = jax.eval_shape(AVModel(caffe).init, jax.random.key(0), batch)["params"]
    with pytest.raises(ValueError, match=r"do not fit audio/fcn: \['conv1'\]\['bias'\]"):
        load_pretrained(caffe_params, caffe)


def test_published_name_must_match_the_checksum(torch_alexnet, tmp_path):
    _, pth, _ = torch_alexnet
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()
    good = tmp_path / f"alexnet-owt-{digest[:8]}.pth"
    shutil.copy(pth, good)
    alexnet_convert.convert(good, tmp_path / "ok")
    bad = tmp_path / "alexnet-owt-00000000.pth"
    shutil.copy(pth, bad)
    with pytest.raises(alexnet.WeightsError, match="does not match the 00000000"):
        alexnet_convert.convert(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_wrong_layers_are_named(tmp_path):
    state = TorchAlexNet().state_dict()
    state["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(alexnet.WeightsError, match=r"features.3 is \[192, 64, 3, 3\]"):
        alexnet_convert.convert(tmp_path / "x.pth", tmp_path / "out")
    del state["features.0.bias"]
    with pytest.raises(alexnet.WeightsError, match="no features.0.bias"):
        alexnet.fcn_params_from_state_dict({k: v.numpy() for k, v in state.items()})


def test_command_reports_a_missing_file_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "avfbp_jax.commands.alexnet_convert",
                             str(tmp_path / "none.pth"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'none.pth'}: no such file"
