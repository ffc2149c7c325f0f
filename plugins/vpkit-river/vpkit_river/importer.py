"""Importing the official RIVER checkpoints (github.com/Araachie/river, Hugging Face `cvg-unibe/river_*`).

A release holds two files:

- `model.pth`: the official trainer's checkpoint, `{"model", "optimizer", "lr_scheduler", "global_step"}`, the model
  saved from DDP (`module.` prefixes). It embeds the frozen autoencoder: `ae.backbone.{encoder,decoder,
  vector_quantizer}.*` for the authors' VQVAE (CLEVRER), `ae.{encoder,decoder,quantize,quant_conv,post_quant_conv}.*`
  for the taming/LDM VQGAN (BAIR, KTH); then `vector_field_regressor.*`. Its pickle holds only dicts and tensors, so
  it is read with `torch.load(weights_only=True)`.
- the autoencoder alone: `vqvae.pth` (CLEVRER, `{"model": state_dict}`) or `vqvae.ckpt` (BAIR, KTH: a PyTorch
  Lightning checkpoint, weights under `state_dict` beside the discriminator/LPIPS `loss.*` weights, and a pickle that
  names Lightning's callback classes). A file `weights_only` refuses is read again through
  `vpkit.engine.legacy_pickle` with Lightning's names as inert stand-ins: Lightning is never imported and nothing
  from the file runs; any other global is refused.

Since the autoencoder is inside `model.pth`, `--autoencoder FILE` is only needed for a `model.pth` without it;
when both hold one, the embedded weights win (as the official loader, which loads `model.pth` last).
Neither file records the frame size or the clip lengths: they come from the official config, picked with
`--set preset=bair64|bair256|kth64|clevrer128` (inferred where the autoencoder tells: the authors' VQVAE is
CLEVRER's, the f16 VQGAN BAIR-256's). Importing an autoencoder file alone gives a `river-vqvae` or
`river-vqgan` checkpoint (the VQGAN with its discriminator when the file holds one); `--set refiner=CKPT` attaches
a trained vpkit `river-refiner` to an imported `river`.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit_river.config import RiverConfig, VQVAEConfig

OPTIONS = ("autoencoder", "preset", "frame_size", "n_context", "n_future", "dataset", "heads", "norm_groups",
           "solver", "steps", "warm_start", "refiner")
"""What `vpkit import river FILE --set KEY=VALUE` accepts."""


@dataclass(frozen=True)
class OfficialSetting:
    """What an official `configs/*.yaml` fixes that no checkpoint records."""

    frame_size: int
    n_context: int
    n_future: int
    dataset: str
    data: Mapping[str, Any]


SETTINGS = {
    "bair64": OfficialSetting(64, 1, 15, "bair", {"seq_len": 16}),
    "bair256": OfficialSetting(256, 1, 15, "h5", {"seq_len": 16, "test_seq_len": 16}),
    "kth64": OfficialSetting(64, 10, 30, "kth", {"seq_len": 40, "rgb": True}),
    "clevrer128": OfficialSetting(128, 2, 14, "clevrer", {"seq_len": 16, "step": 5}),
}

LIGHTNING_NAMES = ("pytorch_lightning.*", "lightning.*", "lightning_fabric.*")
"""Globals a Lightning checkpoint may name (callback classes keying `callbacks`, trainer-state records): read as
inert stand-ins, never imported."""

VQVAE_PREFIX = "ae.backbone."
VECTOR_FIELD_PREFIX = "vector_field_regressor."


# -- reading files ----------------------------------------------------------------------------------------------------


def read_official(path: Path | str, what: str) -> Any:
    """The object pickled in `path`: `torch.load(weights_only=True)` first, then, for a file that names other globals
    (Lightning's), the allow-listing unpickler with Lightning's names as stand-ins. Runs no code from the file."""
    from vpkit.engine.legacy_pickle import load_legacy

    path = Path(path)
    if not path.is_file():
        raise VpkitError(f"{what[:1].upper()}{what[1:]} not found: {path} is not a file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # names a global weights_only does not know: read again through the allow-list
    except Exception as err:  # noqa: BLE001 - zip, pickle and storage errors of a damaged or foreign file
        raise VpkitError(f"{path} could not be read as a PyTorch {what} ({type(err).__name__}: {err}).") from None
    return load_legacy(path, foreign=LIGHTNING_NAMES, what=what)


def state_dict_of(obj: Any, path: Path, what: str) -> dict[str, Tensor]:
    """The weights inside an official file: `["model"]` (RIVER's trainer, the VQVAE), `["state_dict"]` (Lightning) or
    the file itself, with DDP's `module.` prefixes removed."""
    if not isinstance(obj, Mapping):
        raise VpkitError(f"{path} holds a {type(obj).__name__}, not the dict a {what} is saved as.")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise VpkitError(f"{path} is not a {what}: it holds {type(value).__name__} '{key}' among its weights "
                             "(expected the dict under 'model' or 'state_dict').")
        state[key.removeprefix("module.")] = value
    return state


def autoencoder_kind(state: Mapping[str, Tensor]) -> str | None:
    """`"vqvae"` (the authors' VQVAE), `"ldm"` (taming/LDM VQGAN) or None, by the codebook's key."""
    if "vector_quantizer.embedding.weight" in state:
        return "vqvae"
    if "quantize.embedding.weight" in state:
        return "ldm"
    return None


def read_autoencoder(path: Path | str) -> dict[str, Tensor]:
    """The autoencoder's own weights (`encoder.*`, ...) from `vqvae.pth` / `vqvae.ckpt` (Lightning: `loss.*`, the
    discriminator and LPIPS of its training, dropped) or from a `model.pth` that embeds one."""
    path = Path(path)
    state = state_dict_of(read_official(path, "autoencoder checkpoint"), path, "autoencoder checkpoint")
    for prefix in (VQVAE_PREFIX, "ae."):
        inner = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if autoencoder_kind(inner):
            state = inner
            break
    if autoencoder_kind(state) is None:
        raise VpkitError(f"{path} holds no RIVER autoencoder: neither 'vector_quantizer.embedding.weight' (the "
                         "authors' VQVAE) nor 'quantize.embedding.weight' (the taming/LDM VQGAN) is among its weights.")
    return {k: v for k, v in state.items() if not k.startswith("loss.")}


# -- configs from weights ---------------------------------------------------------------------------------------------


def _shape(state: Mapping[str, Tensor], key: str, where: Path) -> tuple[int, ...]:
    if key not in state:
        raise VpkitError(f"{where}: '{key}' is missing; not an official RIVER checkpoint.")
    return tuple(state[key].shape)


def vqvae_config(state: Mapping[str, Tensor], where: Path, options: Mapping[str, Any]) -> tuple[VQVAEConfig, int]:
    """The `VQVAEConfig` of the authors' VQVAE weights (widths and codebook from the shapes; GroupNorm groups, which
    no weight records, 32 as official unless `norm_groups` is given) and its image channels."""
    encoder_width, channels = _shape(state, "encoder.conv_in.weight", where)[:2]
    decoder_width = _shape(state, "decoder.conv_in.weight", where)[0]
    codes, latent = _shape(state, "vector_quantizer.embedding.weight", where)
    fields = {"latent_channels": latent, "num_embeddings": codes, "encoder_channels": encoder_width,
              "decoder_channels": decoder_width, "norm_groups": options.get("norm_groups", 32)}
    return build_config(VQVAEConfig, fields, what=f"VQVAE config derived from {where}"), channels


def vector_field_fields(state: Mapping[str, Tensor], where: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """RiverConfig fields of the regressor weights (`vector_field_regressor.` stripped): width, depths, head, table
    sizes; attention heads, which no weight records, 8 as official unless `heads` is given."""
    inner_dim = _shape(state, "project_in.1.weight", where)[0]
    depth = len({k.split(".")[1] for k in state if k.startswith("in_blocks.")})
    mid_depth = len({k.split(".")[1] for k in state if k.startswith("mid_blocks.")})
    ffn = _shape(state, "in_blocks.0.linear1.weight", where)[0] if depth else 4 * inner_dim
    return {
        "inner_dim": inner_dim, "depth": depth, "mid_depth": mid_depth, "ffn_mult": ffn // inner_dim,
        "out_norm": "bn" if "project_out.3.running_mean" in state else "ln",
        "position_table": _shape(state, "position_encoding.row_embed.weight", where)[0],
        "distance_hidden": _shape(state, "time_projection.0.weight", where)[0],
        "heads": options.get("heads", 8),
    }


def official_setting(options: Mapping[str, Any], kind: str, latent_channels: int) -> tuple[str | None,
                                                                                         OfficialSetting | None]:
    """The official config the checkpoint belongs to: `preset`, else the one its autoencoder implies."""
    preset = options.get("preset")
    if preset is not None:
        if preset not in SETTINGS:
            raise VpkitError(f"Unknown preset '{preset}' for the RIVER importer.{did_you_mean(str(preset), SETTINGS)}"
                             f" Known: {', '.join(SETTINGS)}.")
        return preset, SETTINGS[preset]
    if kind == "vqvae":
        return "clevrer128", SETTINGS["clevrer128"]
    if latent_channels == 8:
        return "bair256", SETTINGS["bair256"]
    return None, None


def _load_strict(model: torch.nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """Copy `state` into `model`; names and shapes must match exactly (missing BatchNorm step counters excepted)."""
    state = dict(state)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        problems = [f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]] + wrong[:3]
        raise VpkitError(f"{where}: the weights do not fit the model they describe ({'; '.join(problems)}).")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


# -- the importer -----------------------------------------------------------------------------------------------------


def load_official(path: Path, options: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """`vpkit import river FILE`: FILE is an official `model.pth` (-> `river`) or an autoencoder file alone
    (`vqvae.pth` -> `river-vqvae`, `vqvae.ckpt` -> `river-vqgan`). Returns `(model key, model in eval mode, data
    section)`."""
    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the RIVER importer.{did_you_mean(unknown[0], OPTIONS)} "
                         f"Known: {', '.join(OPTIONS)}.")
    path = Path(path)
    state = state_dict_of(read_official(path, "RIVER checkpoint"), path, "RIVER checkpoint")
    regressor = {k.removeprefix(VECTOR_FIELD_PREFIX): v for k, v in state.items()
                 if k.startswith(VECTOR_FIELD_PREFIX)}
    if not regressor:
        if options.get("autoencoder") is not None:
            raise VpkitError(f"{path} holds no vector-field regressor (no '{VECTOR_FIELD_PREFIX}*' weights), so it is "
                             "not a model.pth; import the autoencoder alone without --autoencoder.")
        return _import_autoencoder(path, options)
    embedded = {k: v for k, v in state.items() if not k.startswith(VECTOR_FIELD_PREFIX)}
    autoencoder = _pick_autoencoder(path, embedded, options)
    ae = describe_autoencoder(autoencoder, path, options)
    fields = {**vector_field_fields(regressor, path, options), ae.kind: ae.config,
              "autoencoder_source": str(options.get("autoencoder") or path),
              "n_context": ae.n_context, "n_future": ae.n_future}
    fields.update({k: options[k] for k in ("solver", "steps", "warm_start") if k in options})
    config = build_config(RiverConfig, fields, what=f"RIVER config derived from {path}")
    channels_in = _shape(regressor, "project_in.1.weight", path)[1]
    if channels_in != 3 * ae.latent_channels:
        raise VpkitError(f"{path}: the regressor takes {channels_in // 3} latent channels, the autoencoder gives "
                         f"{ae.latent_channels}; the two do not belong together.")
    from vpkit_river.model import River

    model = River(config, ae.frame_shape)
    prefix = VQVAE_PREFIX if ae.kind == "vqvae" else "ae."
    weights = {**{prefix + k: v for k, v in ae.weights.items()},
               **{VECTOR_FIELD_PREFIX + k: v for k, v in regressor.items()}}
    _load_strict(model, weights, str(path))
    model.eval()
    if options.get("refiner") is not None:  # a vpkit river-refiner for the generated frames
        from vpkit_river.refiner import with_refiner

        model = with_refiner(model, str(options["refiner"]))
    return "river", model, ae.data(options)


@dataclass
class Autoencoder:
    """An official autoencoder described for vpkit: `kind` is the RiverConfig field of its architecture."""

    kind: Literal["vqvae", "vqgan"]
    config: Any  # VQVAEConfig | VQGANConfig
    weights: dict[str, Tensor]
    frame_shape: tuple[int, int, int]
    latent_channels: int
    setting: OfficialSetting | None
    n_context: int
    n_future: int

    def data(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint's data section: the official config's dataset, clip and split lengths."""
        name = options.get("dataset", self.setting.dataset if self.setting else None)
        if name is None:
            raise VpkitError("name the vpkit dataset to evaluate on with --set dataset=NAME (or --set preset=...).")
        return {"name": str(name), "config": dict(self.setting.data) if self.setting else {},
                "frame_shape": list(self.frame_shape), "n_context": self.n_context, "n_future": self.n_future}


def describe_autoencoder(state: dict[str, Tensor], where: Path, options: Mapping[str, Any]) -> Autoencoder:
    """Architecture, frame shape and clip lengths of an autoencoder's weights (+ the options / official config)."""
    kind = autoencoder_kind(state)
    codebook = "vector_quantizer.embedding.weight" if kind == "vqvae" else "quantize.embedding.weight"
    latent_channels = _shape(state, codebook, where)[1]
    _, setting = official_setting(options, kind or "", latent_channels)
    if setting is None and not all(k in options for k in ("frame_size", "n_context", "n_future")):
        raise VpkitError(f"{where}: an f8 VQGAN autoencoder is used by both official BAIR-64 and KTH models; say which "
                         f"with --set preset=bair64 or --set preset=kth64 (known: {', '.join(SETTINGS)}), or give "
                         "frame_size, n_context and n_future.")
    frame_size = int(options.get("frame_size", setting.frame_size if setting else 0))
    n_context = int(options.get("n_context", setting.n_context if setting else 0))
    n_future = int(options.get("n_future", setting.n_future if setting else 0))
    weights = {k: v for k, v in state.items() if not k.startswith("loss.")}  # the GAN loss's parts are not the AE
    if kind == "vqvae":
        config, channels = vqvae_config(state, where, options)
        return Autoencoder("vqvae", config, weights, (channels, frame_size, frame_size), latent_channels, setting,
                           n_context, n_future)
    config, channels = vqgan_config(state, where, options, frame_size)
    return Autoencoder("vqgan", config, weights, (channels, frame_size, frame_size), latent_channels, setting,
                       n_context, n_future)


def vqgan_config(state: Mapping[str, Tensor], where: Path, options: Mapping[str, Any], resolution: int
                 ) -> tuple[Any, int]:
    """The `VQGANConfig` of taming VQGAN weights: widths, levels, blocks, attention levels, codebook and, when the
    weights hold one, the discriminator (`loss.discriminator.*`); GroupNorm groups 32 unless `norm_groups`."""
    from vpkit_river.vqgan_config import VQGANConfig

    ch, channels = _shape(state, "encoder.conv_in.weight", where)[:2]
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    if levels != list(range(len(levels))) or not levels:
        raise VpkitError(f"{where}: the VQGAN encoder's levels {levels} are not 0..n-1.")
    blocks = {k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")}
    fields: dict[str, Any] = {
        "ch": ch,
        "ch_mult": tuple(_shape(state, f"encoder.down.{i}.block.0.conv1.weight", where)[0] // ch for i in levels),
        "num_res_blocks": len(blocks),
        "attn_resolutions": tuple(resolution // 2 ** i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in state),
        "resolution": resolution,
        "z_channels": _shape(state, "decoder.conv_in.weight", where)[1],
        "embed_dim": _shape(state, "quant_conv.weight", where)[0],
        "n_embed": _shape(state, "quantize.embedding.weight", where)[0],
        "resamp_with_conv": "encoder.down.0.downsample.conv.weight" in state,
        "norm_groups": options.get("norm_groups", 32),
    }
    if "loss.discriminator.main.0.weight" in state:
        fields["disc_ndf"] = _shape(state, "loss.discriminator.main.0.weight", where)[0]
        fields["disc_num_layers"] = sum(1 for k in state if k.startswith("loss.discriminator.")
                                        and k.endswith(".running_mean"))
    return build_config(VQGANConfig, fields, what=f"VQGAN config derived from {where}"), channels


def _pick_autoencoder(path: Path, embedded: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Tensor]:
    """The autoencoder weights for a model.pth: the embedded ones (official behaviour), else `--autoencoder`."""
    inner: dict[str, Tensor] = {}
    for prefix in (VQVAE_PREFIX, "ae."):
        inner = {k.removeprefix(prefix): v for k, v in embedded.items() if k.startswith(prefix)}
        if autoencoder_kind(inner):
            break
    source = options.get("autoencoder")
    if autoencoder_kind(inner):
        if source is not None:
            given = read_autoencoder(source)
            same = given.keys() == inner.keys() and all(torch.equal(given[k], inner[k]) for k in inner)
            if not same:
                warnings.warn(f"{path} embeds autoencoder weights that differ from {source}; using the embedded ones "
                              "(the official loader does the same).", stacklevel=3)
        return {k: v for k, v in inner.items() if not k.startswith("loss.")}
    if source is None:
        raise VpkitError(f"{path} holds no autoencoder weights (no 'ae.*'); give the release's autoencoder with "
                         "--autoencoder vqvae.ckpt (or vqvae.pth).")
    return read_autoencoder(source)


def _import_autoencoder(path: Path, options: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """An autoencoder file alone -> a `river-vqvae` or `river-vqgan` checkpoint (to train a new RIVER, or a
    refiner, on the released autoencoder). A VQGAN's discriminator comes along when the file holds it."""
    path = Path(path)
    state = state_dict_of(read_official(path, "autoencoder checkpoint"), path, "autoencoder checkpoint")
    discriminator = {k: v for k, v in state.items() if k.startswith("loss.discriminator.")}
    ae = describe_autoencoder({**read_autoencoder(path), **discriminator}, path, options)
    if ae.kind == "vqvae":
        from vpkit_river.vqvae import RiverVQVAE

        model: Any = RiverVQVAE(ae.config, ae.frame_shape)
        _load_strict(model, ae.weights, str(path))
        key = "river-vqvae"
    else:
        from vpkit_river.vqgan_presets import build_vqgan

        model = build_vqgan(ae.config, ae.frame_shape)
        expected = model.state_dict()
        if not discriminator:
            warnings.warn(f"{path} holds no discriminator (loss.discriminator.*): it starts from random weights.",
                          stacklevel=3)
            discriminator = {k: v for k, v in expected.items() if k.startswith("loss.discriminator.")}
        _load_strict(model, {**ae.weights, **discriminator,
                             **{k: v for k, v in expected.items() if k.startswith("loss.")
                                and not k.startswith("loss.discriminator.")}}, str(path))
        key = "river-vqgan"
    model.eval()
    return key, model, ae.data(options)
