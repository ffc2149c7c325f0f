"""Importing an official DiffuseDDLP result folder (github.com/taldatech/ddlp, `train_diffuse_ddlp.py`) as a vpkit
`diffuse-ddlp` model.

`train_diffuse_ddlp.py` leaves `<result_dir>/diffusion_hparams.json` (the `configs/diffuse_ddlp.json` it ran with,
`result_dir` filled in), `ddlp_hparams.json` (a copy of the DDLP's `hparams.json`), `latent_stats.pth` (a copy of
`<ddlp_dir>/latent_stats.pth`) and `saves/model.pth` = `{step, model, opt, ema, scaler}`. The DDLP weights are not
in the folder: the diffusion config names them (`ddlp_dir`, `ddlp_ckpt`, paths relative to where the script ran), or
`--set ddlp=DDLP_RUN_DIR_OR_PTH` does. The DDLP is read by `vpkit_ddlp.importer`; `model.pth` gives the online
denoiser and the EMA copy that the official generation script samples with; every file is read with
`torch.load(weights_only=True)`, which runs no code.

The official script fixes the denoiser to the DDLP's PINT sizes, dropout 0.1, EMA 0.995 every 10 steps after step 100
and `sampling_timesteps = timesteps`: our `DiffuseDDLPConfig` defaults. From `diffusion_hparams.json` come
`diffuse_frames`, `diffusion_num_steps` (-> `timesteps`), `loss_type`, `particle_norm` and `lr`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit_ddlp import importer

OPTIONS = ("ddlp", "ddlp_weights", "n_context", "n_future", "dataset", "sample_with_dropout")
"""What `vpkit import diffuse-ddlp RESULT_DIR --set KEY=VALUE` may set: `ddlp` (the official DDLP run directory or
its .pth; default: `ddlp_ckpt` / `ddlp_dir` of the diffusion config), `ddlp_weights` (the .pth inside that run
directory), `n_context` / `n_future` / `dataset` (the conditional-prediction evaluation split, as for
`vpkit import ddlp`) and `sample_with_dropout` (the official generation quirk, see DiffuseDDLPConfig)."""

CONFIG_FILE = "diffusion_hparams.json"
DDLP_CONFIG_FILE = "ddlp_hparams.json"
STATS_FILE = "latent_stats.pth"
WEIGHTS_FILE = Path("saves") / "model.pth"
REQUIRED = ("diffuse_frames", "diffusion_num_steps")
FIELDS = {"diffuse_frames": "diffuse_frames", "diffusion_num_steps": "timesteps", "loss_type": "loss_type",
          "particle_norm": "particle_norm", "lr": "lr"}
"""Official diffusion config key -> DiffuseDDLPConfig field."""


def load_official_diffuse(path: Path, options: Mapping[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """Read an official DiffuseDDLP result folder (or its `diffusion_hparams.json` / `saves/model.pth`) and the
    DDLP it was trained over. Returns `("diffuse-ddlp", model in eval mode, data section)`; the data section is the
    DDLP's (conditional prediction is the frozen DDLP's)."""
    from vpkit_ddlp.diffuse import DiffuseDDLP, DiffuseDDLPConfig, load_official_state

    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the DiffuseDDLP importer."
                         f"{did_you_mean(unknown[0], OPTIONS)} Known: {', '.join(OPTIONS)}.")
    root = result_dir(Path(path))
    hp = read_diffusion_config(root / CONFIG_FILE)
    model_pth = read_model_pth(root / WEIGHTS_FILE)
    stats = read_latent_stats(root, hp)
    ddlp, data = load_ddlp(root, hp, options)

    fields = {FIELDS[key]: hp[key] for key in FIELDS if hp.get(key) is not None}
    fields["ddlp"] = ddlp.config.model_dump(mode="json")
    if "sample_with_dropout" in options:
        fields["sample_with_dropout"] = bool(options["sample_with_dropout"])
    config = build_config(DiffuseDDLPConfig, fields, what=f"diffuse-ddlp config derived from {root / CONFIG_FILE}")
    model = DiffuseDDLP(config, ddlp.frame_shape)
    model.ddlp.load_state_dict(ddlp.state_dict())
    check_model_pth(root / WEIGHTS_FILE, model, model_pth)
    try:
        load_official_state(model, model_pth, stats)
    except VpkitError as err:
        raise VpkitError(f"{root / STATS_FILE}: {err}") from None
    model.eval()
    return "diffuse-ddlp", model, data


# -- files ----------------------------------------------------------------------------------------------------------


def result_dir(path: Path) -> Path:
    """The result folder: `path` itself, or the folder of `diffusion_hparams.json`, or two up from `saves/model.pth`."""
    if not path.exists():
        raise VpkitError(f"{path} not found: give an official DiffuseDDLP result folder ({CONFIG_FILE}, "
                         f"{STATS_FILE}, saves/model.pth).")
    root = path if path.is_dir() else (path.parent.parent if path.parent.name == "saves" else path.parent)
    if not (root / CONFIG_FILE).is_file():
        raise VpkitError(f"{CONFIG_FILE} not found in {root}: an official DiffuseDDLP result folder keeps the "
                         "diffusion config there (train_diffuse_ddlp.py writes it).")
    return root


def read_diffusion_config(path: Path) -> dict[str, Any]:
    try:
        hp = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise VpkitError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(hp, dict):
        raise VpkitError(f"{path} must hold a JSON object (the official diffusion config).")
    missing = [key for key in REQUIRED if key not in hp]
    if missing:
        raise VpkitError(f"{path} lacks {', '.join(missing)}: not an official DiffuseDDLP config "
                         "(configs/diffuse_ddlp.json).")
    return hp


def _torch_load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise VpkitError(f"{path} not found: an official DiffuseDDLP result folder holds {what}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, unpickling and storage errors of a damaged or foreign file
        raise VpkitError(f"{path} is not a readable PyTorch file: {err}") from None


def read_model_pth(path: Path) -> Mapping[str, Any]:
    """`saves/model.pth`: the trainer's `{step, model, opt, ema, scaler}`."""
    data = _torch_load(path, "saves/model.pth (the trainer's checkpoint)")
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping) \
            or not isinstance(data.get("ema"), Mapping):
        raise VpkitError(f"{path} is not a DiffuseDDLP trainer checkpoint (a dict with 'model' and 'ema' state "
                         "dicts, as TrainerDiffuseDDLP.save writes).")
    return data


def read_latent_stats(root: Path, hp: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """`latent_stats.pth` of the result folder, else the original in the DDLP folder (`ddlp_dir`)."""
    path = root / STATS_FILE
    if not path.is_file() and hp.get("ddlp_dir"):
        beside = _existing(str(hp["ddlp_dir"]), root)
        if beside is not None and (beside / STATS_FILE).is_file():
            path = beside / STATS_FILE
    stats = _torch_load(path, f"{STATS_FILE} (the latent statistics the diffusion was trained with)")
    if not isinstance(stats, Mapping) or not all(isinstance(v, torch.Tensor) for v in stats.values()):
        raise VpkitError(f"{path} holds a {type(stats).__name__}, not the latent statistics (a dict of tensors).")
    return stats


def _existing(recorded: str, root: Path) -> Path | None:
    """A path recorded by the official script (relative to the folder it ran in): as written, else relative to the
    result folder or the one above it."""
    raw = Path(recorded).expanduser()
    candidates = [raw] if raw.is_absolute() else [raw, root / raw, root.parent / raw]
    return next((c for c in candidates if c.exists()), None)


# -- the DDLP -------------------------------------------------------------------------------------------------------


def ddlp_location(root: Path, hp: Mapping[str, Any], options: Mapping[str, Any]) -> Path:
    """`--set ddlp=...`, else the diffusion config's `ddlp_ckpt`, else its `ddlp_dir`."""
    if "ddlp" in options:
        given = Path(str(options["ddlp"])).expanduser()
        if not given.exists():
            raise VpkitError(f"--set ddlp={options['ddlp']}: not found (give the official DDLP run directory or "
                             "its .pth).")
        return given
    for key in ("ddlp_ckpt", "ddlp_dir"):
        if hp.get(key):
            found = _existing(str(hp[key]), root)
            if found is not None:
                return found
    recorded = ", ".join(f"{k}={hp[k]}" for k in ("ddlp_dir", "ddlp_ckpt") if hp.get(k)) or "none"
    raise VpkitError(f"The DDLP this DiffuseDDLP was trained over was not found (recorded in {root / CONFIG_FILE}: "
                     f"{recorded}); name it with --set ddlp=DDLP_RUN_DIR_OR_PTH.")


def load_ddlp(root: Path, hp: Mapping[str, Any], options: Mapping[str, Any]):
    """The official DDLP (its `hparams.json`, else `ddlp_dir/hparams.json`, else the result folder's
    `ddlp_hparams.json`) with its weights, and its data section."""
    where = ddlp_location(root, hp, options)
    sub = {k: options[k] for k in ("n_context", "n_future", "dataset") if k in options}
    if "ddlp_weights" in options:
        sub["weights"] = options["ddlp_weights"]
    hparams_path = _ddlp_hparams(where, root, hp)
    ddlp_hp = importer.read_hparams(hparams_path)
    weights = importer.find_weights(where, ddlp_hp, sub)
    state = importer.read_state_dict(weights)
    if not any(key.startswith("dyn_module.") for key in state):
        raise VpkitError(f"{weights} is a DLPv2 (no dyn_module.* weights); DiffuseDDLP needs the DDLP it was "
                         "trained over.")
    config, frame_shape = importer.config_from_hparams(hparams_path, ddlp_hp, "ddlp", sub)
    ddlp = importer.build("ddlp", config, frame_shape)
    importer.load_weights(weights, hparams_path, "ddlp", ddlp, state)
    return ddlp, importer.data_section(hparams_path, ddlp_hp, "ddlp", config, frame_shape, sub)


def _ddlp_hparams(where: Path, root: Path, hp: Mapping[str, Any]) -> Path:
    try:
        return importer.find_hparams(where)
    except VpkitError:
        folders = [_existing(str(hp["ddlp_dir"]), root)] if hp.get("ddlp_dir") else []
        for candidate in [f / "hparams.json" for f in folders if f is not None] + [root / DDLP_CONFIG_FILE]:
            if candidate.is_file():
                return candidate
        raise


# -- weights --------------------------------------------------------------------------------------------------------


def check_model_pth(path: Path, model: Any, data: Mapping[str, Any]) -> None:
    """The online (`model`) and EMA (`ema.ema_model.*`) state dicts must fit the denoiser the configs describe."""
    expected = model.diffusion.state_dict()
    ema = data["ema"]
    for what, state in (("model", data["model"]),
                        ("ema", {k[len("ema_model."):]: v for k, v in ema.items() if k.startswith("ema_model.")})):
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if missing or unexpected or wrong:
            problems = ([f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]]
                        + [f"shape {w}" for w in wrong[:3]])
            raise VpkitError(f"{path}: the '{what}' weights do not fit the denoiser that {CONFIG_FILE} and the DDLP "
                             f"describe ({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of "
                             f"another shape: {'; '.join(problems)}); is this the DDLP it was trained over?")
    for key in ("initted", "step"):
        if key not in ema:
            raise VpkitError(f"{path}: the 'ema' state lacks '{key}' (not an ema-pytorch EMA state dict).")
