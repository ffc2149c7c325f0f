"""Reading pickled PyTorch checkpoints that hold whole `nn.Module`s, without running any code from the file.

Older methods (SVG, SLAMP, ...) released checkpoints made with `torch.save(module)`: the file names the classes of
the authors' code (`models.dcgan_64.encoder`) and unpickling it the ordinary way imports and runs whatever the file
names. `load_legacy` reads such a file through an unpickler that resolves only an allow-list of globals:

- PyTorch's tensor and storage rebuild functions (every format since 0.3), `torch.Size` and dtypes;
- every `torch.nn` module class and the caller's foreign module classes, each mapped to a `ModuleStandIn` that only
  records the pickled attributes (`_parameters`, `_buffers`, `_modules`, hyper-parameters): nothing is constructed
  from the file, no `__init__`/`forward` of any real class runs;
- `collections.OrderedDict`, `argparse.Namespace` (training options), a few inert builtins, and optimiser classes
  as bare `GlobalRef` names (SVG stores `torch.optim.Adam` in its options).

Any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) raises a `VpkitError` naming it, before
anything is called. `module_state_dict(stand_in)` then walks a state dict out of a stand-in, with the same keys
`nn.Module.state_dict()` would have produced.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import pickle
import re
import types
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.serialization import SourceChangeWarning

from vpkit.core.errors import VpkitError

__all__ = [
    "GlobalRef",
    "ModuleStandIn",
    "RefusedGlobal",
    "load_legacy",
    "load_standin_weights",
    "module_state_dict",
    "pickled_name",
]

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*")


class RefusedGlobal(VpkitError):
    """The file names a global that is not on the allow-list; nothing from it was called."""

    def __init__(self, name: str) -> None:
        super().__init__(f"refused to unpickle global '{name}'")
        self.name = name


# -- what pickled objects become ---------------------------------------------------------------------------------


class _FrozenMeta(type):
    """Metaclass of every class handed to the unpickler: the pickle's BUILD opcode can set attributes on any object
    it can reach, classes included, so classes it can reach refuse attribute assignment."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise AttributeError(f"{cls.__qualname__} is read-only")

    def __delattr__(cls, name: str) -> None:
        raise AttributeError(f"{cls.__qualname__} is read-only")


class ModuleStandIn(metaclass=_FrozenMeta):
    """What a pickled module becomes: a record of its attributes, never a working module.

    `pickled_name` is the class name the file used (`"models.vgg_64.encoder"`). Attribute access falls back to
    `_modules`, `_parameters` and `_buffers`, like `nn.Module`, so `stand_in.c1.main` walks the pickled tree.
    """

    pickled_name: ClassVar[str] = ""
    # torch's legacy loader compares saved module sources and writes a .patch file when this is True.
    dump_patches: ClassVar[bool] = False

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError(f"malformed state for pickled module {self.pickled_name}")
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("__"):
            for table in ("_modules", "_parameters", "_buffers"):
                entries = self.__dict__.get(table)
                if isinstance(entries, Mapping) and name in entries:
                    return entries[name]
        raise AttributeError(f"pickled module {self.pickled_name or type(self).__name__} has no attribute '{name}'")

    def __repr__(self) -> str:
        return f"<stand-in for {self.pickled_name}>"


class GlobalRef:
    """A global the file only names and never needs to call (an optimiser class stored in training options)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<global {self.name}>"


# `argparse.Namespace` for the file's training options; a subclass only so that the class stays read-only.
_Namespace = _FrozenMeta("Namespace", (argparse.Namespace,), {"__module__": __name__})


def _standin_class(qualified: str) -> type[ModuleStandIn]:
    module, _, name = qualified.rpartition(".")
    return _FrozenMeta(name, (ModuleStandIn,), {"pickled_name": qualified, "__module__": module,
                                                "__qualname__": name})


# -- allowed callables -------------------------------------------------------------------------------------------


class _Allowed:
    """An allowed function as the unpickler hands it out. BUILD can set attributes on any function it reaches
    (`__defaults__`, `__name__`, and `dump_patches`, which makes torch's legacy loader write a `<__name__>.patch`
    file), so the pickle only ever sees this read-only, source-less callable."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        object.__setattr__(self, "_call", call)

    def __call__(self, *args: Any) -> Any:
        return self._call(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("read-only")


def _tensor(value: Any, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise pickle.UnpicklingError(f"a pickled {what} does not hold a tensor")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> Tensor:
    return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)  # PyTorch <= 0.3


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, *metadata: Any) -> Tensor:
    # Hooks are never meant to be pickled (torch writes an empty dict); whatever the file holds is dropped.
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                           collections.OrderedDict(), *metadata)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, *dtype_and_metadata: Any) -> Tensor:
    return torch._utils._rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad,
                                           collections.OrderedDict(), *dtype_and_metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *state: Any) -> Tensor:
    # `state` (the `_with_state` variant) is Python attributes set on the parameter; weights need none of them.
    return torch.nn.Parameter(_tensor(data, "Parameter"), bool(requires_grad))


def _legacy_parameter(data: Any, requires_grad: Any = True, *_: Any) -> Tensor:
    # PyTorch 0.3/0.4 pickled a Parameter as a call of its class on its data (0.3 with a BUILD of the autograd
    # state afterwards, which torch's Tensor.__setstate__ still understands).
    return torch.nn.Parameter(_tensor(data, "Parameter"), bool(requires_grad))


def _legacy_variable(data: Any, *_: Any) -> Tensor:
    # PyTorch 0.3 pickled autograd Variables (e.g. an LSTM's stored hidden state) as a call on their data.
    return _tensor(data, "Variable").detach()


def _no_backend(*_: Any) -> None:
    # PyTorch 0.3 modules carried a reference to the THNN backend object; modern modules have none.
    return None


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 spell `bytes` as `_codecs.encode(str, "latin1")`.
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode("latin1")


_EXACT: dict[str, Any] = {
    "torch._utils._rebuild_tensor": _Allowed(_rebuild_tensor),
    "torch._utils._rebuild_tensor_v2": _Allowed(_rebuild_tensor_v2),
    "torch._utils._rebuild_tensor_v3": _Allowed(_rebuild_tensor_v3),
    "torch._utils._rebuild_parameter": _Allowed(_rebuild_parameter),
    "torch._utils._rebuild_parameter_with_state": _Allowed(_rebuild_parameter),
    "torch.nn.parameter.Parameter": _Allowed(_legacy_parameter),
    "torch.autograd.variable.Variable": _Allowed(_legacy_variable),
    "torch.nn.backends.thnn._get_thnn_function_backend": _Allowed(_no_backend),
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "collections.OrderedDict": collections.OrderedDict,
    "argparse.Namespace": _Namespace,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.slice": slice,
    "builtins.bytearray": bytearray,
    "_codecs.encode": _Allowed(_latin1_encode),
}

_TORCH_MODULE_CLASS = re.compile(rf"torch\.nn\.(modules|parallel)\.{_IDENTIFIER}\.[A-Z][A-Za-z0-9_]*")
_OPTIMISER_CLASS = re.compile(rf"torch\.optim\.({_IDENTIFIER}\.)?[A-Z][A-Za-z0-9_]*")


class _Policy:
    """Resolves `module.name` pairs for one load: the allow-list plus the caller's foreign names."""

    def __init__(self, foreign: Mapping[str, type | None] | Iterable[str]) -> None:
        self.exact: dict[str, type] = {}
        self.prefixes: list[str] = []
        items = foreign.items() if isinstance(foreign, Mapping) else ((name, None) for name in foreign)
        for key, target in items:
            if key.endswith(".*"):
                if target is not None:
                    raise ValueError(f"a prefix pattern ({key}) cannot map to a class")
                self.prefixes.append(key[:-1])
            elif target is None:
                self.exact[key] = _standin_class(key)
            else:
                self.exact[key] = target
        self._classes: dict[str, type[ModuleStandIn]] = {}

    def resolve(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if not (isinstance(module, str) and isinstance(name, str) and _DOTTED.fullmatch(qualified)
                and name.isidentifier()):
            raise RefusedGlobal(qualified)
        if qualified in _EXACT:
            return _EXACT[qualified]
        if qualified in self.exact:
            return self.exact[qualified]
        if _TORCH_MODULE_CLASS.fullmatch(qualified) or any(qualified.startswith(p) for p in self.prefixes):
            return self._standin(qualified)
        if _OPTIMISER_CLASS.fullmatch(qualified):
            return GlobalRef(qualified)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise RefusedGlobal(qualified)

    def _standin(self, qualified: str) -> type[ModuleStandIn]:
        if qualified not in self._classes:
            self._classes[qualified] = _standin_class(qualified)
        return self._classes[qualified]


def _pickle_module(policy: _Policy) -> types.ModuleType:
    """A stand-in for the `pickle` module, as `torch.load(pickle_module=...)` wants: `Unpickler` and `load`."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # Protocol-2 pickles spell names the Python 2 way (`__builtin__.set`); the stock find_class translates
            # them, so this one must too, before the allow-list sees them.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            return policy.resolve(module, name)

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    restricted = types.ModuleType("vpkit_restricted_pickle")
    restricted.Unpickler = Unpickler  # type: ignore[attr-defined]
    restricted.load = load  # type: ignore[attr-defined]
    return restricted


# -- public API --------------------------------------------------------------------------------------------------


def load_legacy(
    path: Path | str, *, foreign: Mapping[str, type | None] | Iterable[str] = (), what: str = "checkpoint"
) -> Any:
    """Unpickle a `torch.save` file (zip or legacy pre-1.6 format) without running code from it.

    `foreign` names the classes of the authors' code the file may use: exact names (`"models.lstm.lstm"`) and
    prefixes ending in `.*` (`"models.*"`), each loaded as a `ModuleStandIn`, or a mapping of exact names to the
    caller's own `ModuleStandIn` subclasses (None: the default stand-in). `what` names the file in errors.
    Tensors land on the CPU. Raises `VpkitError` when the file is missing, unreadable, or names
    any global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise VpkitError(f"{what[:1].upper()}{what[1:]} not found: {path} is not a file.")
    policy = _Policy(foreign)
    try:
        with warnings.catch_warnings():
            # The legacy format stores each module's source, and torch warns that our stand-ins differ from it.
            warnings.simplefilter("ignore", SourceChangeWarning)
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            return torch.load(path, map_location="cpu", pickle_module=_pickle_module(policy), weights_only=False)
    except RefusedGlobal as exc:
        raise VpkitError(
            f"{path} was not loaded: it names the global '{exc.name}', which no {what} needs (nothing from the "
            f"file was run); the file may be malicious, so import only files from a source you trust."
        ) from None
    except VpkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch and pickle raise many types for corrupt or foreign files
        raise VpkitError(
            f"{path} could not be read as a PyTorch {what} ({type(exc).__name__}: {exc}). {_hint(path)}"
        ) from None


def _hint(path: Path) -> str:
    """What an unreadable file most likely is, judged by its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip().lower()
    if head.startswith(b"version https://git-lfs"):
        return "It is a Git LFS pointer, not the file itself: fetch the real file with `git lfs pull`."
    if head.startswith((b"<!doctype html", b"<html")):
        return "It is a web page (a download that failed or asked for a confirmation), not a checkpoint."
    return "Check that the file is complete and was written by torch.save."


def pickled_name(obj: Any) -> str | None:
    """The class name a stand-in was pickled under (`"models.dcgan_64.encoder"`), else None."""
    return type(obj).pickled_name if isinstance(obj, ModuleStandIn) else None


def module_state_dict(module: ModuleStandIn, prefix: str = "") -> dict[str, Tensor]:
    """The `state_dict()` the pickled module would have given: parameters, persistent buffers, then children.

    Entries that are `None` (a conv without bias) are skipped, as `nn.Module.state_dict` does.
    """
    state: dict[str, Tensor] = {}
    _collect(module, prefix, state, ancestors=())
    return state


def _collect(module: Any, prefix: str, state: dict[str, Tensor], ancestors: tuple[int, ...]) -> None:
    if not isinstance(module, ModuleStandIn):
        raise VpkitError(f"the pickled module tree holds a {type(module).__name__} at '{prefix or '.'}', "
                         f"not a module; the file is not a module checkpoint.")
    if id(module) in ancestors:
        raise VpkitError(f"the pickled module tree loops back on itself at '{prefix or '.'}'.")
    ancestors = (*ancestors, id(module))
    non_persistent = module.__dict__.get("_non_persistent_buffers_set") or set()
    for table in ("_parameters", "_buffers"):
        entries = module.__dict__.get(table) or {}
        if not isinstance(entries, Mapping):
            raise VpkitError(f"pickled module {module.pickled_name} has a malformed {table}.")
        for name, value in entries.items():
            if value is None or (table == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, Tensor):
                raise VpkitError(f"pickled module {module.pickled_name} holds a {type(value).__name__} as "
                                 f"{table[1:-1]} '{name}'.")
            state[prefix + name] = value.detach()
    children = module.__dict__.get("_modules") or {}
    if not isinstance(children, Mapping):
        raise VpkitError(f"pickled module {module.pickled_name} has malformed submodules.")
    for name, child in children.items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", state, ancestors)


def load_standin_weights(model: torch.nn.Module, networks: Mapping[str, ModuleStandIn], *, path: Path,
                         what: str) -> None:
    """Copy every parameter and buffer of the pickled `networks` (official name -> stand-in) into `model`, whose
    submodules carry the same names; names and shapes must match exactly. BatchNorm batch counters that older
    PyTorch did not save start at 0. `what` names the model in the error (e.g. "SVG 'dcgan64'")."""
    state: dict[str, Tensor] = {}
    for name, module in networks.items():
        state.update(module_state_dict(module, prefix=f"{name}."))
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or wrong:
        problems = [f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]] + wrong[:3]
        raise VpkitError(f"{path}: the weights do not fit {what} as its options describe it "
                         f"({'; '.join(problems)}).")
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()})
