"""MMAction2 config files (`*.py`) read as data: literal assignments, never executed.

An MMAction2 config is Python, but what we need from it — the backbone's sizes, the head's
classes, the test pipeline's sampling and the normalisation — is written as literals
(`dict(...)`, lists, numbers, names assigned earlier). `read_config` parses the file with
`ast` and evaluates only those forms; anything else (a call, a comprehension, an import)
reads as None. `_base_` files are read the same way and merged underneath (MMEngine's rule:
dicts merge key by key unless `_delete_=True`; everything else is replaced).
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path

from models.config import Preprocessing
from models.errors import CheckpointError
from models.text import read_text

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}  # fmt: skip


class ConfigFileError(CheckpointError):
    """An MMAction2 config that cannot be read; the message names the file and why."""


def _value(node: ast.AST, env: dict):
    """The literal a node spells, with names looked up in `env` (an unknown name reads as
    its own spelling: new-style configs write `type=SampleFrames`); None if not literal."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                out.update(_value(v, env) or {})
            else:
                out[_value(k, env)] = _value(v, env)
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        out = {}
        for kw in node.keywords:
            if kw.arg is None:  # dict(type='Normalize', **img_norm_cfg)
                out.update(_value(kw.value, env) or {})
            else:
                out[kw.arg] = _value(kw.value, env)
        return out
    if isinstance(node, ast.Name):
        return env.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, env)
        return (-v if isinstance(node.op, ast.USub) else v) if isinstance(v, (int, float)) else None
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        a, b = _value(node.left, env), _value(node.right, env)
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        return _BINARY[type(node.op)](a, b) if numbers else None
    return None


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("_delete_"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = {k: v for k, v in value.items() if k != "_delete_"} if isinstance(value, dict) else value
    return out


def read_config(path: str | Path, _depth: int = 0) -> dict:
    """Top-level names of an MMAction2 config -> their literal values, `_base_` merged in."""
    path = Path(path)
    try:
        tree = ast.parse(read_text(path), filename=str(path))  # not UTF-8: read_text's one line
    except (OSError, SyntaxError) as err:
        raise ConfigFileError(f"{path}: cannot read MMAction2 config ({type(err).__name__}: {err})") from None
    env: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            env[node.targets[0].id] = _value(node.value, env)
    bases = env.pop("_base_", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        if isinstance(base, str) and (path.parent / base).is_file() and _depth < 8:
            merged = _merge(merged, read_config(path.parent / base, _depth + 1))
    return _merge(merged, env)


def _pipeline(cfg: dict) -> list[dict]:
    """The test pipeline wherever this config generation keeps it."""
    candidates = [
        cfg.get("test_pipeline"),
        (cfg.get("test_dataloader") or {}).get("dataset", {}).get("pipeline"),
        ((cfg.get("data") or {}).get("test") or {}).get("pipeline"),
        cfg.get("val_pipeline"),
    ]
    for steps in candidates:
        if isinstance(steps, list) and steps:
            return [s for s in steps if isinstance(s, dict)]
    return []


def _short_side(scale) -> int | None:
    """`Resize(scale=(-1, 256))` (MMAction2: -1 keeps the ratio) -> 256."""
    if isinstance(scale, (int, float)) and scale > 0:
        return int(scale)
    if isinstance(scale, (list, tuple)):
        sides = [int(s) for s in scale if isinstance(s, (int, float)) and s > 0]
        return min(sides) if sides else None
    return None


def _crop(size) -> int | None:
    if isinstance(size, (int, float)):
        return int(size)
    if isinstance(size, (list, tuple)) and size and isinstance(size[0], (int, float)):
        return int(min(size))
    return None


def backbone(cfg: dict) -> dict:
    value = (cfg.get("model") or {}).get("backbone") if isinstance(cfg.get("model"), dict) else None
    return dict(value) if isinstance(value, dict) else {}


def positive(value, name: str, kind: type = int):
    """A size or eps read from a config, checked: None stays None; a wrong type is one clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value % 1):
        raise ConfigFileError(f"config {name} = {value!r}: expected a positive {kind.__name__}")
    return kind(value)


def clip_settings(cfg: dict) -> dict:
    """What the config says about the input clip, only the keys it says:
    `num_frames`, `image_size` (crop), `short_side`, `sampling`, `frame_interval`, `mean`, `std`
    (0..1 scale; MMAction2 writes them in 0..255)."""
    out: dict = {}
    norm = dict((cfg.get("model") or {}).get("data_preprocessor") or {})
    for step in _pipeline(cfg):
        kind = str(step.get("type", ""))
        if kind == "SampleFrames":
            out.update(sampling="dense", num_frames=step.get("clip_len"), frame_interval=step.get("frame_interval"))
        elif kind in ("UniformSample", "UniformSampleFrames"):
            out.update(sampling="uniform", num_frames=step.get("clip_len"))
        elif kind == "Resize":
            out["short_side"] = _short_side(step.get("scale"))
        elif kind in ("CenterCrop", "ThreeCrop", "TenCrop"):
            out["image_size"] = _crop(step.get("crop_size"))
        elif kind == "Normalize":
            norm = {**step, **norm}
    for key in ("mean", "std"):
        values = norm.get(key)
        if isinstance(values, (list, tuple)) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values):
            out[key] = tuple(round(float(v) / 255, 6) if max(values) > 1 else float(v) for v in values)
    return {k: v for k, v in out.items() if v is not None}


def preprocessing(settings: dict, default: Preprocessing) -> Preprocessing:
    """`default` with what the config says put over it."""
    fields = {k: settings[k] for k in ("mean", "std", "short_side", "sampling", "frame_interval") if k in settings}
    return Preprocessing(**{**default.__dict__, **fields})
