"""Importing official DLPv2 / DDLP runs (github.com/taldatech/ddlp) into vpkit models.

An official run directory holds `hparams.json` (an exact copy of the `configs/*.json` it trained with, written by
`train_dlp.py` / `train_ddlp.py`) and `saves/{ds}_{dlp|ddlp}{run_prefix}[_best|_best_lpips].pth`, each a plain
`torch.save(model.state_dict())`. The released checkpoints (`checkpoints/{dlp|ddlp}-{ds}/`) put the `.pth` beside
`hparams.json`. Our modules keep the official attribute names, so the keys line up one to one, the duplicated glimpse
decoder (`object_dec.main.*` and `object_dec.decode.*`) and the `grouupnorm_*` spelling included. The file is read
with `torch.load(weights_only=True)`, which runs no code.

DDLP or DLPv2 is decided by the weights: a DDLP state dict has the PINT `dyn_module.*` keys (both scripts write the
same json keys). The hparams map onto `DLPConfig` / `DDLPConfig` field for field (same names); the options the
official code accepts but no shipped config uses (`n_kp != 1`, `use_resblock`, `enable_enc_attn`, a `kp_range` other
than [-1, 1]) are refused. `dropout` (CNN dropout, 0 in every config, inactive at evaluation) and
`start_dyn_epoch` (training-only) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit_ddlp.config import DDLPConfig, DLPConfig

OPTIONS = ("weights", "n_context", "n_future", "dataset", "vgg_weights")
"""What `vpkit import ddlp PATH --set KEY=VALUE` may override: `weights` (the .pth inside a run directory),
`n_context` / `n_future` (the evaluation split written to the checkpoint), `dataset` (the vpkit dataset name) and
`vgg_weights` (for fine-tuning with the VGG loss)."""

DATASETS: dict[str, tuple[str, str]] = {
    "obj3d128": ("obj3d", "obj3d128"), "obj3d": ("obj3d", "obj3d"), "traffic": ("traffic", "traffic"),
    "phyre": ("phyre", "phyre"), "clevrer": ("clevrer", "clevrer"), "balls": ("balls", "balls"),
    "shapes": ("shapes", "shapes"),
}
"""Official `ds` -> (vpkit dataset, our preset of the same name, whose `epoch_steps` and data options apply)."""

SHARED_FIELDS = ("enc_channels", "prior_channels", "patch_size", "n_kp_prior", "n_kp_enc", "learned_feature_dim",
                 "bg_learned_feature_dim", "anchor_s", "kp_activation", "pad_mode", "use_correlation_heatmaps",
                 "filtering_heuristic", "sigma", "scale_std", "offset_std", "obj_on_alpha", "obj_on_beta",
                 "recon_loss_type", "beta_kl", "beta_rec", "kl_balance", "train_enc_prior", "warmup_epoch", "lr",
                 "adam_betas", "adam_eps", "weight_decay", "scheduler_gamma")
DDLP_FIELDS = ("timestep_horizon", "num_static_frames", "beta_dyn", "beta_dyn_rec", "pint_layers", "pint_heads",
               "pint_dim", "predict_delta")
REQUIRED = ("ch", "image_size", "enc_channels", "prior_channels", "patch_size", "n_kp_enc", "n_kp_prior",
            "learned_feature_dim", "anchor_s")
REQUIRED_DDLP = ("timestep_horizon", "pint_layers", "pint_heads", "pint_dim")
EVAL_HORIZON = 50
"""`eval/eval_gen_metrics.py --horizon` default: frames per test episode, context included."""


def load_official(path: Path, options: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """Read an official run: `path` is its directory (holding `hparams.json` and the `.pth`, directly or under
    `saves/`) or the `.pth` itself. Returns `("ddlp" | "dlp", model in eval mode, data section)`."""
    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the DDLP importer.{did_you_mean(unknown[0], OPTIONS)} "
                         f"Known: {', '.join(OPTIONS)}.")
    path = Path(path)
    if not path.exists():
        raise VpkitError(f"{path} not found: give an official DDLP run directory (hparams.json + saves/*.pth) or "
                         "its .pth file.")
    hparams_path = find_hparams(path)
    hp = read_hparams(hparams_path)
    weights = find_weights(path, hp, options)
    state = read_state_dict(weights)
    model_key = "ddlp" if any(key.startswith("dyn_module.") for key in state) else "dlp"
    config, frame_shape = config_from_hparams(hparams_path, hp, model_key, options)
    model = build(model_key, config, frame_shape)
    load_weights(weights, hparams_path, model_key, model, state)
    model.eval()
    return model_key, model, data_section(hparams_path, hp, model_key, config, frame_shape, options)


# -- files ----------------------------------------------------------------------------------------------------------


def find_hparams(path: Path) -> Path:
    """`hparams.json` of a run directory, or beside a `.pth` (or one folder up, for `<run>/saves/*.pth`)."""
    folders = [path] if path.is_dir() else [path.parent, path.parent.parent]
    for folder in folders:
        if (folder / "hparams.json").is_file():
            return folder / "hparams.json"
    where = " or ".join(str(f) for f in folders)
    raise VpkitError(f"hparams.json not found in {where}: an official DDLP run keeps the config it trained with "
                     "there (train_ddlp.py / train_dlp.py write it; the released checkpoints ship it).")


def read_hparams(path: Path) -> dict[str, Any]:
    try:
        hp = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VpkitError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(hp, dict):
        raise VpkitError(f"{path} must hold a JSON object (the official config), not a {type(hp).__name__}.")
    missing = [name for name in REQUIRED if name not in hp]
    if missing:
        raise VpkitError(f"{path} lacks {', '.join(missing)}: not an official DLPv2/DDLP config.")
    return hp


def find_weights(path: Path, hp: Mapping[str, Any], options: Mapping[str, Any]) -> Path:
    """The `.pth` to read: `path` itself, `--set weights=NAME` inside the run, or the run's latest checkpoint
    `{ds}_{ddlp|dlp}{run_prefix}.pth` (the one `eval_gen_metrics.py --use_last` reads); a lone `.pth` also does."""
    if path.is_file():
        return path
    folders = [path, path / "saves"]
    if "weights" in options:
        for folder in folders:
            if (folder / str(options["weights"])).is_file():
                return folder / str(options["weights"])
        raise VpkitError(f"{options['weights']} not found in {path} or {path / 'saves'}.")
    found = sorted({f for folder in folders if folder.is_dir() for f in folder.glob("*.pth")})
    prefix = hp.get("run_prefix") or ""
    for kind in ("ddlp", "dlp"):
        for folder in folders:
            latest = folder / f"{hp.get('ds')}_{kind}{prefix}.pth"
            if latest.is_file():
                return latest
    if len(found) == 1:
        return found[0]
    if not found:
        raise VpkitError(f"No .pth weights in {path} or {path / 'saves'}.")
    names = ", ".join(f.name for f in found)
    raise VpkitError(f"{path} holds several checkpoints ({names}); choose one with --set weights=NAME.")


def read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, unpickling and storage errors of a damaged or foreign file
        raise VpkitError(f"{weights} is not a readable PyTorch state_dict: {err}") from None
    if isinstance(state, Mapping) and "ema" in state and "model" in state:
        raise VpkitError(f"{weights} is a DiffuseDDLP training checkpoint (step/model/ema/opt), not the DDLP or "
                         "DLPv2 state_dict this importer reads.")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VpkitError(f"{weights} holds a {type(state).__name__}, not the plain state_dict the official "
                         "train scripts save.")
    return {key.removeprefix("module."): value for key, value in state.items()}


# -- config ---------------------------------------------------------------------------------------------------------


def config_from_hparams(where: Path, hp: Mapping[str, Any], model_key: str, options: Mapping[str, Any]
                        ) -> tuple[DLPConfig | DDLPConfig, tuple[int, int, int]]:
    """Our config and `(C, H, W)` from the official hparams (the same field names)."""
    _refuse_unsupported(where, hp)
    fields: dict[str, Any] = {name: hp[name] for name in SHARED_FIELDS if hp.get(name) is not None}
    ds = hp.get("ds")
    preset = _preset(model_key, ds)
    if preset is not None and "epoch_steps" in preset.model:
        fields["epoch_steps"] = preset.model["epoch_steps"]
    if "vgg_weights" in options:
        fields["vgg_weights"] = str(options["vgg_weights"])
    if model_key == "ddlp":
        missing = [name for name in REQUIRED_DDLP if name not in hp]
        if missing:
            raise VpkitError(f"{where} lacks {', '.join(missing)}, but the weights hold DDLP's dynamics module "
                             "(dyn_module.*): the hparams do not belong to these weights.")
        fields.update({name: hp[name] for name in DDLP_FIELDS if hp.get(name) is not None})
        horizon = int(hp["timestep_horizon"])
        fields["n_context"] = min(int(hp.get("cond_steps") or horizon), horizon)
        fields["n_future"] = horizon + 1 - fields["n_context"]
        fields["num_static_frames"] = min(int(fields.get("num_static_frames", 4)), horizon + 1)
        cls: type[DLPConfig | DDLPConfig] = DDLPConfig
    else:
        cls = DLPConfig
    config = build_config(cls, fields, what=f"{model_key} config derived from {where}")
    size = int(hp["image_size"])
    return config, (int(hp["ch"]), size, size)


def _refuse_unsupported(where: Path, hp: Mapping[str, Any]) -> None:
    if int(hp.get("n_kp", 1)) != 1:
        raise VpkitError(f"{where}: n_kp={hp['n_kp']}; vpkit's DDLP supports one keypoint per prior patch (n_kp 1, "
                         "as every official config).")
    if list(hp.get("kp_range", [-1, 1])) != [-1, 1]:
        raise VpkitError(f"{where}: kp_range={hp['kp_range']}; vpkit's DDLP uses [-1, 1] (every official config).")
    for flag in ("use_resblock", "enable_enc_attn"):
        if hp.get(flag):
            raise VpkitError(f"{where}: {flag} is true; vpkit's DDLP implements the configs that leave it false "
                             "(all the shipped ones).")


def _preset(model_key: str, ds: Any):
    from vpkit_ddlp.plugin import DDLP_PRESETS, DLP_PRESETS

    if ds not in DATASETS:
        return None
    return (DDLP_PRESETS if model_key == "ddlp" else DLP_PRESETS).get(DATASETS[ds][1])


def build(model_key: str, config: DLPConfig | DDLPConfig, frame_shape: tuple[int, int, int]):
    if model_key == "ddlp":
        from vpkit_ddlp.ddlp import DDLP

        return DDLP(config, frame_shape)  # type: ignore[arg-type]
    from vpkit_ddlp.dlp import DLP

    return DLP(config, frame_shape)  # type: ignore[arg-type]


# -- weights --------------------------------------------------------------------------------------------------------


def load_weights(weights: Path, hparams: Path, model_key: str, model: torch.nn.Module,
                 state: Mapping[str, torch.Tensor]) -> None:
    """Copy the official state_dict into `model`: names and shapes must match exactly (strict)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or wrong:
        problems = ([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]]
                    + [f"shape {w}" for w in wrong[:3]])
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape"
        raise VpkitError(f"{weights}: the weights do not fit {model_key} as {hparams} describes it ({counts}: "
                         f"{'; '.join(problems)}).")
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()})


def data_section(where: Path, hp: Mapping[str, Any], model_key: str, config: DLPConfig | DDLPConfig,
                 frame_shape: tuple[int, int, int], options: Mapping[str, Any]) -> dict[str, Any]:
    """`vpkit.json`'s data section: the vpkit dataset and its options (as our preset of the same name), and the
    evaluation split (DDLP: `cond_steps` context frames, the rest of a 50-frame test episode predicted, as
    `eval_gen_metrics.py`; DLPv2: single images)."""
    ds = hp.get("ds")
    if "dataset" in options:
        name, data_config = str(options["dataset"]), {}
    elif ds in DATASETS:
        name = DATASETS[ds][0]
        preset = _preset(model_key, ds)
        data_config = dict(preset.data) if preset is not None else {}
        if name in ("obj3d", "traffic", "shapes"):
            data_config["image_size"] = frame_shape[-1]
        if model_key == "ddlp" and name != "shapes":
            data_config["seq_len"] = config.timestep_horizon + 1  # type: ignore[union-attr]
    else:
        known = ", ".join(DATASETS)
        raise VpkitError(f"{where}: dataset ds={ds!r} is not one vpkit knows ({known}); name the vpkit dataset to "
                         "evaluate on with --set dataset=NAME.")
    if model_key == "ddlp":
        n_context = int(options.get("n_context", hp.get("cond_steps") or config.timestep_horizon))  # type: ignore
        n_future = int(options.get("n_future", max(EVAL_HORIZON - n_context, 1)))
    else:
        n_context, n_future = int(options.get("n_context", 1)), 0
    if n_context < 1 or n_future < 0:
        raise VpkitError(f"n_context must be >= 1 and n_future >= 0; got {n_context} and {n_future}.")
    return {"name": name, "config": data_config, "frame_shape": list(frame_shape), "n_context": n_context,
            "n_future": n_future}
