"""Importing official SVG checkpoints, and refusing hostile pickles, without the official code.

The checkpoints here are fabricated: small classes of our own, named like the official ones (`models.dcgan_64.encoder`,
`models.lstm.gaussian_lstm`, ...) and laid out with the same attributes, are registered in `sys.modules` only while
`torch.save` pickles them whole, as `train_svg_{lp,fp}.py` does. Loading then has nothing to import: it must work from
the file alone. Files are written in the zip format, the pre-1.6 format, and the way PyTorch 0.3 wrote the released
`pretrained_models/*.pth` (Parameters and Variables pickled as calls, a THNN backend reference in every module, no
BatchNorm batch counter).
"""

from __future__ import annotations

import argparse
import builtins
import collections
import copyreg
import itertools
import os
import pickle
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.backends import thnn

from vpkit.core.errors import VpkitError
from vpkit.engine.legacy_pickle import ModuleStandIn, load_legacy, module_state_dict, pickled_name
from vpkit_svg.importer import load_official

# -- official-layout classes (our own code, the official names and attribute layout) ------------------------------


def _conv_bn_lrelu(conv: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.LeakyReLU(0.2, inplace=True))


class dcgan_conv(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = _conv_bn_lrelu(nn.Conv2d(nin, nout, 4, 2, 1))


class dcgan_upconv(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = _conv_bn_lrelu(nn.ConvTranspose2d(nin, nout, 4, 2, 1))


class vgg_layer(nn.Module):
    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = _conv_bn_lrelu(nn.Conv2d(nin, nout, 3, 1, 1))


def _to_code(nin: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(nin, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh())


def _from_code(dim: int, nout: int) -> nn.Sequential:
    return _conv_bn_lrelu(nn.ConvTranspose2d(dim, nout, 4, 1, 0))


class dcgan_encoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1) -> None:
        super().__init__()
        self.dim = dim
        for k, (nin, nout) in enumerate([(nc, 64), (64, 128), (128, 256), (256, 512)], start=1):
            setattr(self, f"c{k}", dcgan_conv(nin, nout))
        self.c5 = _to_code(512, dim)


class dcgan_decoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.upc1 = _from_code(dim, 512)
        for k, (nin, nout) in enumerate([(1024, 256), (512, 128), (256, 64)], start=2):
            setattr(self, f"upc{k}", dcgan_upconv(nin, nout))
        self.upc5 = nn.Sequential(nn.ConvTranspose2d(128, nc, 4, 2, 1), nn.Sigmoid())


def _vgg_stack(*widths: int) -> nn.Sequential:
    return nn.Sequential(*(vgg_layer(a, b) for a, b in itertools.pairwise(widths)))


class vgg_encoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.c1 = _vgg_stack(nc, 64, 64)
        self.c2 = _vgg_stack(64, 128, 128)
        self.c3 = _vgg_stack(128, 256, 256, 256)
        self.c4 = _vgg_stack(256, 512, 512, 512)
        self.c5 = _to_code(512, dim)
        self.mp = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)


class vgg_decoder(nn.Module):
    def __init__(self, dim: int, nc: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.upc1 = _from_code(dim, 512)
        self.upc2 = _vgg_stack(1024, 512, 512, 256)
        self.upc3 = _vgg_stack(512, 256, 256, 128)
        self.upc4 = _vgg_stack(256, 128, 64)
        self.upc5 = nn.Sequential(vgg_layer(128, 64), nn.ConvTranspose2d(64, nc, 3, 1, 1), nn.Sigmoid())
        self.up = nn.UpsamplingNearest2d(scale_factor=2)


class _Recurrent(nn.Module):
    """Attributes shared by the official `lstm` and `gaussian_lstm` (the hidden state is pickled along)."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, n_layers: int, batch_size: int):
        super().__init__()
        self.input_size, self.output_size, self.hidden_size = input_size, output_size, hidden_size
        self.n_layers, self.batch_size = n_layers, batch_size
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(n_layers)])


class lstm(_Recurrent):
    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.output = nn.Sequential(nn.Linear(self.hidden_size, self.output_size), nn.Tanh())
        self.hidden = [(torch.randn(self.batch_size, self.hidden_size), torch.randn(self.batch_size,
                                                                                   self.hidden_size))
                       for _ in range(self.n_layers)]


class gaussian_lstm(_Recurrent):
    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.mu_net = nn.Linear(self.hidden_size, self.output_size)
        self.logvar_net = nn.Linear(self.hidden_size, self.output_size)
        self.hidden = [(torch.zeros(self.batch_size, self.hidden_size), torch.zeros(self.batch_size,
                                                                                   self.hidden_size))
                       for _ in range(self.n_layers)]


OFFICIAL_NAMES: dict[type, tuple[str, str]] = {
    dcgan_conv: ("models.dcgan_64", "dcgan_conv"),
    dcgan_upconv: ("models.dcgan_64", "dcgan_upconv"),
    dcgan_encoder: ("models.dcgan_64", "encoder"),
    dcgan_decoder: ("models.dcgan_64", "decoder"),
    vgg_layer: ("models.vgg_64", "vgg_layer"),
    vgg_encoder: ("models.vgg_64", "encoder"),
    vgg_decoder: ("models.vgg_64", "decoder"),
    lstm: ("models.lstm", "lstm"),
    gaussian_lstm: ("models.lstm", "gaussian_lstm"),
}
for _cls, (_module, _name) in OFFICIAL_NAMES.items():
    _cls.__module__, _cls.__qualname__ = _module, _name

G_DIM, Z_DIM, RNN = 16, 4, 32


def official_options(**changes: object) -> argparse.Namespace:
    """The options train_svg_lp.py saves (its defaults, with small latent sizes)."""
    opt = argparse.Namespace(
        lr=0.002, beta1=0.9, batch_size=100, log_dir="logs/lp", model_dir="", name="", data_root="data",
        optimizer=torch.optim.Adam, niter=300, seed=1, epoch_size=600, image_width=64, channels=1,
        dataset="smmnist", n_past=5, n_future=10, n_eval=30, rnn_size=RNN, prior_rnn_layers=1,
        posterior_rnn_layers=1, predictor_rnn_layers=2, z_dim=Z_DIM, g_dim=G_DIM, beta=0.0001, model="dcgan",
        data_threads=5, num_digits=2, last_frame_skip=False,
    )
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


def official_checkpoint(opt: argparse.Namespace, *, learned_prior: bool = True) -> dict:
    """The dict train_svg_lp.py (or _fp.py, without a prior) saves, with random weights and BatchNorm statistics."""
    torch.manual_seed(0)
    encoder, decoder = {"dcgan": (dcgan_encoder, dcgan_decoder), "vgg": (vgg_encoder, vgg_decoder)}[opt.model]
    saved = {
        "encoder": encoder(opt.g_dim, opt.channels),
        "decoder": decoder(opt.g_dim, opt.channels),
        "frame_predictor": lstm(opt.g_dim + opt.z_dim, opt.g_dim, opt.rnn_size, opt.predictor_rnn_layers, 2),
        "posterior": gaussian_lstm(opt.g_dim, opt.z_dim, opt.rnn_size, opt.posterior_rnn_layers, 2),
    }
    if learned_prior:
        saved["prior"] = gaussian_lstm(opt.g_dim, opt.z_dim, opt.rnn_size, opt.prior_rnn_layers, 2)
    with torch.no_grad():
        for module in (m for network in saved.values() for m in network.modules()):
            if isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(600)
    return saved | {"opt": opt}


@contextmanager
def official_modules_importable() -> Iterator[None]:
    """Make `models.*` importable (pickle saves classes by reference and checks they resolve), then remove it."""
    fakes = {name: types.ModuleType(name) for name in ("models", "models.dcgan_64", "models.vgg_64", "models.lstm")}
    for cls, (module, name) in OFFICIAL_NAMES.items():
        setattr(fakes[module], name, cls)
    assert not any(name in sys.modules for name in fakes)
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            del sys.modules[name]


# -- PyTorch 0.3's way of pickling (what the released files hold) --------------------------------------------------


class _Thnn:
    def __reduce__(self):
        return thnn._get_thnn_function_backend, ()


_MODULE_KEYS_03 = {"_backend", "_parameters", "_buffers", "_backward_hooks", "_forward_hooks", "_forward_pre_hooks",
                   "_modules", "training"}


class _Torch03Pickler(pickle.Pickler):
    """Pickles modules, Parameters and tensors the way PyTorch 0.3 did: `Parameter(data)` and
    `Variable(data)` calls followed by their autograd state, tensors through `_rebuild_tensor`, module state with
    a THNN backend reference and without the attributes added since (BatchNorm's `num_batches_tracked` among them)."""

    def reducer_override(self, obj):
        if isinstance(obj, nn.Parameter):
            return nn.Parameter, (obj.detach(),), (obj.requires_grad, False, collections.OrderedDict())
        if isinstance(obj, torch.Tensor):
            if getattr(obj, "is_variable", False):  # the LSTMs' pickled hidden states were Variables
                data = obj.detach()
                return torch.autograd.variable.Variable, (data,), (False, False, collections.OrderedDict())
            storage = torch.storage.TypedStorage(wrap_storage=obj.untyped_storage(), dtype=obj.dtype, _internal=True)
            return torch._utils._rebuild_tensor, (storage, obj.storage_offset(), tuple(obj.shape), obj.stride())
        if isinstance(obj, nn.Module):
            state = {k: v for k, v in obj.__dict__.items() if k in _MODULE_KEYS_03 or not k.startswith("_")}
            state["_backend"] = _Thnn()
            if isinstance(obj, nn.BatchNorm2d):
                state.pop("track_running_stats")
                state["_buffers"] = collections.OrderedDict(
                    (k, v) for k, v in obj._buffers.items() if k != "num_batches_tracked")
            return copyreg.__newobj__, (type(obj),), state
        return NotImplemented


torch03 = types.SimpleNamespace(__name__="torch03_pickle", Pickler=_Torch03Pickler, dump=pickle.dump)


def save_official(path: Path, saved: dict, file_format: str) -> Path:
    """`torch.save` the dict whole: 'zip' (PyTorch >= 1.6), 'legacy' (0.4 - 1.5) or 'torch03' (0.3)."""
    with official_modules_importable(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy saving warns it cannot find our classes' source
        if file_format == "torch03":
            for network in saved.values():
                for tensor in (t for state in getattr(network, "hidden", ()) for t in state):
                    tensor.is_variable = True
            torch.save(saved, path, pickle_module=torch03, _use_new_zipfile_serialization=False)
        else:
            torch.save(saved, path, _use_new_zipfile_serialization=file_format == "zip")
    return path


def expected_state(saved: dict) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, network in saved.items() if isinstance(network, nn.Module)
            for key, value in network.state_dict().items()}


# -- importing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "file_format"), [("dcgan", "zip"), ("dcgan", "legacy"), ("dcgan", "torch03"),
                                                    ("vgg", "legacy")])
def test_svg_lp_weights_land_on_the_right_parameters(tmp_path: Path, model: str, file_format: str) -> None:
    channels = 3 if model == "vgg" else 1
    saved = official_checkpoint(official_options(model=model, channels=channels))
    path = save_official(tmp_path / "model.pth", saved, file_format)
    assert "models" not in sys.modules  # nothing of the authors' code is around while loading
    if file_format == "torch03":  # the file really is in PyTorch 0.3's terms
        raw = path.read_bytes()
        for name in (b"_rebuild_tensor\n", b"Parameter\n", b"Variable\n", b"_get_thnn_function_backend\n"):
            assert name in raw
        assert b"_rebuild_tensor_v2" not in raw and b"num_batches_tracked" not in raw

    model_key, svg, data = load_official(path, {})

    assert model_key == "svg-lp"
    assert data == {"name": "smmnist", "config": {"num_digits": 2}, "frame_shape": [channels, 64, 64],
                    "n_context": 5, "n_future": 10}
    cfg = svg.config
    assert (cfg.architecture, cfg.g_dim, cfg.z_dim, cfg.rnn_size) == (f"{model}64", G_DIM, Z_DIM, RNN)
    assert (cfg.predictor_rnn_layers, cfg.posterior_rnn_layers, cfg.prior_rnn_layers) == (2, 1, 1)
    assert (cfg.n_context, cfg.n_future, cfg.last_frame_skip, cfg.beta, cfg.lr, cfg.beta1) == (
        5, 10, False, 1e-4, 2e-3, 0.9)
    assert cfg.sampling_batchnorm == "batch"  # generate_svg_lp.py samples with BatchNorm in training mode

    ours = svg.state_dict()
    expected = expected_state(saved)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and file_format == "torch03":
            assert ours[key].item() == 0, key  # PyTorch 0.3 had no batch counter: it starts at zero
        else:
            assert torch.equal(ours[key], value), key
    first_conv = {"dcgan": "c1.main.0.weight", "vgg": "c1.0.main.0.weight"}[model]
    assert torch.equal(svg.encoder.get_parameter(first_conv), saved["encoder"].get_parameter(first_conv))
    assert torch.equal(svg.frame_predictor.lstm[1].weight_hh, saved["frame_predictor"].lstm[1].weight_hh)

    assert not svg.training  # ready to sample
    context = torch.rand(1, 5, channels, 64, 64, generator=torch.Generator().manual_seed(0))
    futures = svg.predict(context, 2, num_samples=2, generator=torch.Generator().manual_seed(1))
    assert futures.shape == (1, 2, 2, channels, 64, 64)
    assert torch.isfinite(futures).all() and futures.min() >= 0 and futures.max() <= 1
    assert not torch.equal(futures[:, 0], futures[:, 1])  # two samples, two futures


def test_svg_fp_checkpoint_has_no_prior(tmp_path: Path) -> None:
    saved = official_checkpoint(official_options(dataset="kth", n_past=10, beta=1e-6, lr=8e-4),
                                learned_prior=False)
    model_key, svg, data = load_official(save_official(tmp_path / "fp.pth", saved, "legacy"), {})

    assert model_key == "svg-fp"
    assert not svg.learned_prior and not hasattr(svg, "prior")
    assert (svg.config.n_context, svg.config.beta, svg.config.lr) == (10, 1e-6, 8e-4)
    assert svg.config.sampling_batchnorm == "running"  # generate_svg_fp.py puts the networks in eval mode
    assert data["name"] == "kth" and data["config"] == {}
    ours = svg.state_dict()
    assert all(torch.equal(ours[key], value) for key, value in expected_state(saved).items())
    assert svg.predict(torch.rand(1, 10, 1, 64, 64), 2).shape == (1, 1, 2, 1, 64, 64)


def test_options_override_horizons_dataset_and_batchnorm(tmp_path: Path) -> None:
    path = save_official(tmp_path / "m.pth", official_checkpoint(official_options(last_frame_skip=True)), "zip")
    _, svg, data = load_official(path, {"n_context": 2, "n_future": 28, "dataset": "my-mnist",
                                        "sampling_batchnorm": "running"})
    assert (data["n_context"], data["n_future"], data["name"]) == (2, 28, "my-mnist")
    assert (svg.config.n_context, svg.config.n_future, svg.config.sampling_batchnorm) == (2, 28, "running")
    assert svg.config.last_frame_skip

    with pytest.raises(VpkitError, match="Unknown option 'n_contxt'.*Did you mean 'n_context'"):
        load_official(path, {"n_contxt": 3})
    with pytest.raises(VpkitError, match="sampling_batchnorm"):
        load_official(path, {"sampling_batchnorm": "sometimes"})


def test_sizes_missing_from_the_options_are_read_off_the_networks(tmp_path: Path) -> None:
    saved = official_checkpoint(official_options(channels=3))
    for name in ("channels", "g_dim", "z_dim", "rnn_size", "predictor_rnn_layers", "posterior_rnn_layers",
                 "prior_rnn_layers", "beta", "lr", "beta1", "last_frame_skip", "n_past"):
        delattr(saved["opt"], name)
    path = save_official(tmp_path / "old.pth", saved, "legacy")
    with pytest.raises(VpkitError, match="lack 'n_past'; give it with --set n_context=N"):
        load_official(path, {})

    _, svg, data = load_official(path, {"n_context": 5})
    cfg = svg.config
    assert data["frame_shape"] == [3, 64, 64]
    assert (cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.predictor_rnn_layers, cfg.n_context) == (G_DIM, Z_DIM, RNN, 2, 5)
    assert all(torch.equal(svg.state_dict()[key], value) for key, value in expected_state(saved).items())


def test_imported_checkpoint_round_trips_through_vpkit_import(tmp_path: Path) -> None:
    from vpkit.cli.import_ import import_command
    from vpkit.core.checkpoint import load_model

    path = save_official(tmp_path / "svglp.pth", official_checkpoint(official_options()), "torch03")
    out = tmp_path / "imported"
    import_command(name="svg", path=path, out=out, overrides=["n_future=20"], force=False)

    reloaded, ckpt = load_model(out)
    _, imported, data = load_official(path, {"n_future": 20})
    assert ckpt.model_key == "svg-lp" and ckpt.meta["data"] == data
    assert reloaded.config == imported.config
    reloaded.eval()
    context = torch.rand(1, 5, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    futures = [m.predict(context, 2, generator=torch.Generator().manual_seed(1)) for m in (reloaded, imported)]
    assert torch.equal(*futures)


# -- clear errors ---------------------------------------------------------------------------------------------------


def test_missing_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(VpkitError, match="not found.*nothing.pth is not a file"):
        load_official(tmp_path / "nothing.pth", {})
    with pytest.raises(VpkitError, match="is not a file"):
        load_official(tmp_path, {})


def test_other_files_are_not_svg_checkpoints(tmp_path: Path) -> None:
    state_dict = tmp_path / "state_dict.pth"
    torch.save({"weight": torch.zeros(2)}, state_dict)
    with pytest.raises(VpkitError, match="not an official SVG checkpoint: it lacks 'encoder'"):
        load_official(state_dict, {})

    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(VpkitError, match="not an official SVG checkpoint: it holds a Tensor"):
        load_official(tensor, {})

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(VpkitError, match="could not be read as a PyTorch SVG checkpoint"):
        load_official(garbage, {})

    pointer = tmp_path / "lfs.pth"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    with pytest.raises(VpkitError, match="Git LFS pointer.*git lfs pull"):
        load_official(pointer, {})

    truncated = tmp_path / "truncated.pth"
    save_official(truncated, official_checkpoint(official_options()), "legacy")
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(VpkitError, match="could not be read"):
        load_official(truncated, {})


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    saved = official_checkpoint(official_options())
    resnet = type("encoder", (dcgan_encoder,), {"__module__": "models.resnet_64", "__qualname__": "encoder"})
    saved["encoder"].__class__ = resnet
    path = tmp_path / "resnet.pth"
    with official_modules_importable():
        sys.modules["models.resnet_64"] = types.ModuleType("models.resnet_64")
        sys.modules["models.resnet_64"].encoder = resnet
        try:
            torch.save(saved, path)
        finally:
            del sys.modules["models.resnet_64"]
    with pytest.raises(VpkitError, match="'models.resnet_64.encoder'.*supported: dcgan64, vgg64"):
        load_official(path, {})


def test_options_that_contradict_the_networks_are_reported(tmp_path: Path) -> None:
    saved = official_checkpoint(official_options())
    saved["opt"].model = "vgg"
    with pytest.raises(VpkitError, match="inconsistent.*models.dcgan_64.encoder.*model='vgg'"):
        load_official(save_official(tmp_path / "m.pth", saved, "zip"), {})

    saved = official_checkpoint(official_options())
    saved["opt"].z_dim = Z_DIM + 1
    with pytest.raises(VpkitError, match=r"weights do not fit.*frame_predictor.embed.weight \(32, 20\) vs \(32, 21\)"):
        load_official(save_official(tmp_path / "m.pth", saved, "zip"), {})


# -- hostile files --------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs `call(*args)`: the classic pickle exploit."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "posix.system": _Payload(os.system, f"touch {marker}"),  # os.system pickles under its real module
        "builtins.exec": _Payload(builtins.exec, touch),
        "builtins.eval": _Payload(builtins.eval, touch),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
    }


def _hostile_checkpoint(payload: _Payload, where: str) -> dict:
    saved = official_checkpoint(official_options())
    if where == "opt":
        saved["opt"].data_root = payload
    else:  # deep inside a module's attributes
        saved["encoder"].c3.main[1].momentum = payload
    return saved


def test_a_hostile_pickle_really_runs_code_when_loaded_unguarded(tmp_path: Path) -> None:
    # Control for the tests below: the payload is live, so their marker check can fail.
    marker = tmp_path / "MARKER"
    torch.save({"opt": _payloads(marker)["builtins.exec"]}, tmp_path / "evil.pth")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["posix.system", "builtins.exec", "builtins.eval", "subprocess.call",
                                  "subprocess.Popen"])
@pytest.mark.parametrize(("file_format", "where"), [("zip", "opt"), ("legacy", "module")])
def test_hostile_pickles_are_refused_before_anything_runs(tmp_path: Path, name: str, file_format: str,
                                                          where: str) -> None:
    marker = tmp_path / "MARKER"
    saved = _hostile_checkpoint(_payloads(marker)[name], where)
    path = save_official(tmp_path / "evil.pth", saved, file_format)

    with pytest.raises(VpkitError) as error:
        load_official(path, {})

    message = str(error.value)
    assert f"global '{name}'" in message and "nothing from the file was run" in message
    assert "\n" not in message
    assert not marker.exists()


def unicode(text: str) -> bytes:
    """The BINUNICODE opcode for `text`, for hand-written pickles."""
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _legacy_file(path: Path, main_pickle: bytes) -> Path:
    """A pre-1.6 torch.save file around a hand-written main pickle (no tensors)."""
    with open(path, "wb") as f:
        for header in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION,
                       {"protocol_version": torch.serialization.PROTOCOL_VERSION, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(main_pickle)
        pickle.dump([], f, protocol=2)
    return path


@pytest.mark.parametrize(("module", "name"), [
    ("torch.serialization", "load"),             # a loader without the guard
    ("collections", "OrderedDict.fromkeys"),     # attribute paths reach further than the allowed name
    ("torch._utils", "_rebuild_tensor_v2.__globals__"),
    ("copyreg", "_reconstructor"),
    ("models.lstm", "lstm.__init__"),
])
def test_names_outside_the_allow_list_are_refused(tmp_path: Path, module: str, name: str) -> None:
    # Protocol 4 STACK_GLOBAL: module and name as two strings, so the name may contain dots.
    raw = b"\x80\x04" + unicode(module) + unicode(name) + b"\x93" + b"."
    with pytest.raises(VpkitError, match=f"global '{module}.{name}'"):
        load_legacy(_legacy_file(tmp_path / "evil.pth", raw), foreign=["models.*"])


def test_pickled_state_cannot_tamper_with_allowed_classes(tmp_path: Path) -> None:
    # GLOBAL argparse.Namespace, then BUILD with slot state {'evil': 1}: setattr on the class itself.
    raw = (b"\x80\x02cargparse\nNamespace\nN}X\x04\x00\x00\x00evilK\x01s\x86b.")
    with pytest.raises(VpkitError, match="could not be read"):
        load_legacy(_legacy_file(tmp_path / "tamper.pth", raw))
    assert not hasattr(argparse.Namespace, "evil")


def test_pickled_state_cannot_arm_torchs_patch_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # BUILD sets `dump_patches` and `__name__` on an allowed function, then a legacy 'module' persistent id hands
    # it to torch's source check, which would write `<__name__>.patch` into the working directory.
    raw = (b"\x80\x02ctorch._utils\n_rebuild_tensor\nq\x00N}" + unicode("dump_patches") + b"\x88s"
           + unicode("__name__") + unicode("pwned") + b"s\x86b0(" + unicode("module") + b"h\x00"
           + unicode("file.py") + unicode("def x(): pass") + b"tQ.")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VpkitError, match="could not be read"):
        load_legacy(_legacy_file(tmp_path / "evil.pth", raw))
    assert not list(tmp_path.glob("*.patch"))


# -- the stand-ins ---------------------------------------------------------------------------------------------------


def test_stand_ins_record_modules_without_building_them(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Linear(2, 2))
    net.register_buffer("scratch", torch.ones(1), persistent=False)
    net.add_module("again", net[2])  # a shared submodule appears under both names, as in state_dict
    torch.save(net, tmp_path / "net.pth")

    loaded = load_legacy(tmp_path / "net.pth")

    assert isinstance(loaded, ModuleStandIn) and not isinstance(loaded, nn.Module)
    assert pickled_name(loaded) == "torch.nn.modules.container.Sequential"
    assert pickled_name(loaded._modules["0"]) == "torch.nn.modules.conv.Conv2d"
    assert loaded._modules["0"].kernel_size == (3, 3)
    state = module_state_dict(loaded)
    assert list(state) == list(net.state_dict())  # no bias entry, no non-persistent buffer, shared module twice
    assert all(torch.equal(state[key], value) for key, value in net.state_dict().items())
    assert not any(isinstance(value, nn.Parameter) for value in state.values())


def test_a_module_tree_that_loops_is_reported() -> None:
    cls = type("Loop", (ModuleStandIn,), {"pickled_name": "models.loop"})
    node = cls()
    node.__setstate__({"_parameters": {}, "_buffers": {}, "_modules": {"child": node}})
    with pytest.raises(VpkitError, match="loops back on itself at 'child.'"):
        module_state_dict(node)


def test_a_stand_in_class_refuses_attribute_assignment() -> None:
    with pytest.raises(AttributeError):
        ModuleStandIn.dump_patches = True  # torch's legacy loader writes .patch files when this is True
    assert ModuleStandIn.dump_patches is False


def test_foreign_classes_load_only_when_listed(tmp_path: Path) -> None:
    path = save_official(tmp_path / "m.pth", official_checkpoint(official_options()), "zip")
    names = ["models.dcgan_64.encoder", "models.dcgan_64.decoder", "models.dcgan_64.dcgan_conv",
             "models.dcgan_64.dcgan_upconv", "models.lstm.lstm", "models.lstm.gaussian_lstm"]
    with pytest.raises(VpkitError, match="global 'models.dcgan_64.encoder'"):
        load_legacy(path)
    with pytest.raises(VpkitError, match="global 'models.lstm.lstm'"):
        load_legacy(path, foreign=names[:4])

    loaded = load_legacy(path, foreign=names)
    assert pickled_name(loaded["decoder"]) == "models.dcgan_64.decoder"
    assert loaded["opt"].optimizer.name == "torch.optim.adam.Adam"  # named, never called

    class Mine(ModuleStandIn):
        pickled_name = "mine"

    loaded = load_legacy(path, foreign=dict.fromkeys(names, Mine))
    assert type(loaded["encoder"]) is Mine and type(loaded["encoder"].c1) is Mine
