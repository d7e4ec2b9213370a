"""Reading and writing checkpoints: hszhao/semseg `train_epoch_*.pth` files, mmsegmentation's PSPNet
checkpoints (pspnet/mmseg.py), bare state_dicts, and this project's own format, which adds the model's config
and metadata so later stages need no repeated flags."""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from pspcore.errors import CheckpointError, first_line
from pspcore.files import atomic_output, require_file
from pspcore.model_info import ModelInfo
from pspnet import mmseg
from pspnet.factory import VARIANTS, create_from_config, model_config
from pspnet.labels import label_set_for
from pspnet.pspnet import PSPNet, PSPNetConfig

FORMAT = "pspnet-deploy"
FORMAT_VERSION = 1


def plain_globals() -> list:
    """What a checkpoint's meta may hold beyond torch's weights_only defaults: numpy arrays, scalars and dtypes
    (mmcv stored evaluation scores as numpy floats), under numpy 1's and 2's module names. Plain data only:
    none of these runs code of the file's choosing."""
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        function = getattr(multiarray, name)
        allowed += [(function, f"numpy.core.multiarray.{name}"), (function, f"numpy._core.multiarray.{name}")]
    kinds = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
             "float64")
    return allowed + [type(np.dtype(kind)) for kind in kinds]


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first_line(exc)}")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, or a CheckpointError naming the file (missing, truncated, not a checkpoint, or
    holding objects that only arbitrary unpickling could build). Always torch.load(weights_only=True)."""
    p = require_file(path, "checkpoint", CheckpointError)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            with torch.serialization.safe_globals(plain_globals()):
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if not found:
                raise _unreadable(p, exc) from None
            raise CheckpointError(f"{p}: the checkpoint stores a {found.group(1)} object, which is not loaded "
                                  "(weights_only: no code from a file is run); keep only its 'state_dict' and "
                                  "'meta' (torch.save({'state_dict': ..., 'meta': ...})) in the environment "
                                  "that wrote it") from None
        except Exception as exc:  # torch raises many types for truncated/corrupt files
            raise _unreadable(p, exc) from None
    except Exception as exc:
        raise _unreadable(p, exc) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def extract_state_dict(obj: dict, path: str | os.PathLike = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights from a semseg checkpoint ({'state_dict': ...}), our format, or a bare state_dict,
    with DataParallel/DDP's `module.` prefix removed."""
    state = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: no model state_dict found (keys: {', '.join(list(obj)[:6])})")
    return {k.removeprefix("module."): v for k, v in state.items()}


_WIDTH_FIELDS = {"base_width", "stem_channels"}  # a narrower semseg layout (pspnet18-tiny)


def infer_config(state: dict[str, torch.Tensor], path: str | os.PathLike = "checkpoint") -> PSPNetConfig:
    """Architecture, classes, PPM and aux read off the weights themselves (for checkpoints that don't say)."""
    depths = []
    for layer in range(1, 5):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{layer}\.(\d+)\.", k))}
        depths.append(max(idx) + 1 if idx else 0)
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    # semseg's layout only (at its width): mmseg's files are recognised by their own key names (pspnet/mmseg.py).
    standard = PSPNetConfig.base_width  # ResNet's 64
    width = int(state["layer1.0.conv1.weight"].shape[0]) if "layer1.0.conv1.weight" in state else standard
    arch = next((a for a, v in VARIANTS.items() if v.block == block and v.depths == tuple(depths)
                 and set(v.layout) <= _WIDTH_FIELDS and v.layout.get("base_width", standard) == width), None)
    if arch is None or "cls.4.weight" not in state:
        raise CheckpointError(f"{path}: weights do not look like a PSPNet (block={block}, depths={depths})")
    n_bins = len({k.split(".")[2] for k in state if k.startswith("ppm.features.")})
    bins = (1, 2, 3, 6) if n_bins in (0, 4) else tuple(range(1, n_bins + 1))
    return model_config(arch, int(state["cls.4.weight"].shape[0]), bins=bins, use_ppm=n_bins > 0,
                        aux="aux.4.weight" in state)


def _first(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """The state to load, or one CheckpointError that says exactly what does not match."""
    expected = model.state_dict()
    if not any(k.startswith("aux.") for k in expected):
        state = {k: v for k, v in state.items() if not k.startswith("aux.")}  # training-only head
    if "cls.4.weight" in state and "cls.4.weight" in expected:
        have, want = state["cls.4.weight"].shape[0], expected["cls.4.weight"].shape[0]
        if have != want:
            raise CheckpointError(f"{path}: checkpoint has {have} classes, the model has {want} "
                                  f"(cls.4.weight {tuple(state['cls.4.weight'].shape)} vs "
                                  f"{tuple(expected['cls.4.weight'].shape)})")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        arch = getattr(getattr(model, "config", None), "arch", type(model).__name__)
        try:
            looks_like = f" (it looks like {infer_config(state, path).arch})"
        except CheckpointError:
            looks_like = ""
        parts = [f"missing keys: {_first(missing)}" if missing else "",
                 f"unexpected keys: {_first(unexpected)}" if unexpected else "",
                 f"shape mismatches: {_first(shapes, 3)}" if shapes else ""]
        raise CheckpointError(f"{path}: checkpoint does not fit {arch}{looks_like}; "
                              + "; ".join(p for p in parts if p))
    return state


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> ModelInfo | None:
    """Load weights into `model` with strict key checking; returns the stored ModelInfo (our format, mmseg's)
    or None (semseg's files and bare state_dicts carry none)."""
    obj = read_checkpoint(path)
    state, info = extract_state_dict(obj, path), None
    if obj.get("format") == FORMAT:
        info = ModelInfo.from_dict(obj["info"])
    elif mmseg.is_mmseg_state(state):
        _, state, info = mmseg.read_mmseg(obj, state, path)
    model.load_state_dict(check_compatible(model, state, path), strict=True)
    return info


def info_for_config(config: PSPNetConfig, dataset: str = "") -> ModelInfo:
    labels = label_set_for(config.num_classes, dataset)
    return ModelInfo(arch=config.arch, num_classes=config.num_classes, class_names=labels.class_names,
                     palette=labels.palette, input_size=VARIANTS[config.arch].input_size, dataset=labels.name)


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None,
               **options) -> tuple[PSPNet, ModelInfo]:
    """Build the model a checkpoint describes and load it. `arch`/`num_classes` are needed only when the
    checkpoint does not say (they are read off the weights for semseg checkpoints), and must agree if given."""
    obj = read_checkpoint(path)
    state = extract_state_dict(obj, path)
    if obj.get("format") == FORMAT:
        config = create_from_config(obj["config"]).config
        info = ModelInfo.from_dict(obj["info"])
    elif mmseg.is_mmseg_state(state):
        config, state, info = mmseg.read_mmseg(obj, state, path)
    else:
        config = infer_config(state, path)
        info = None
    if arch and arch != config.arch:  # another variant asked for: its layout, this file's head options
        config = model_config(arch, num_classes or config.num_classes, bins=config.bins, aux=config.aux,
                              dropout=config.dropout, use_ppm=config.use_ppm)
    elif num_classes:
        config = replace(config, num_classes=num_classes)
    model = create_from_config(config, **options)
    model.load_state_dict(check_compatible(model, state, path), strict=True)
    return model.eval(), info or info_for_config(model.config)


def save_checkpoint(path: str | os.PathLike, model: PSPNet, info: ModelInfo, **training_state) -> Path:
    """Write our format atomically. `training_state` (epoch, iteration, optimizer, rng, ...) is kept as is;
    it must hold only tensors, numbers, strings, lists and dicts so it loads with weights_only=True."""
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(model.config),
               "info": info.to_dict(), "state_dict": model.state_dict(), **training_state}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
