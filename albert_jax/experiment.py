"""What every entry point (run.py, experiments/ablate.py, `python -m albert_jax.data.prepare`) shares about
experiments: config files with a big_vision style argument (`pretrain.py:size=base,runlocal=True`), the
`model` section of a config, `--config.*` flag parsing with one-line errors, and claims: the fingerprint that
identifies a run (or prepared data) recorded in its directory, so that a directory holding another one is
never reused by mistake."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import sys

import ml_collections
from ml_collections.config_dict import placeholder

from albert_jax.config import AlbertConfig


def model_section(preset: str, **overrides) -> ml_collections.ConfigDict:
    """`model` config: a preset name plus every AlbertConfig field as an overridable placeholder
    (None = the preset's value), e.g. `--config.model.embedding_size=64 --config.model.sharing=ffn`."""
    defaults = AlbertConfig()
    fields = {"preset": preset}
    for f in dataclasses.fields(AlbertConfig):
        if f.name != "extra":
            fields[f.name] = placeholder(type(getattr(defaults, f.name)))
    config = ml_collections.ConfigDict(fields)
    config.update(overrides)
    return config


def model_overrides(model: ml_collections.ConfigDict) -> dict:
    """The AlbertConfig fields a `model_section` sets (those not None), without the preset."""
    return {k: v for k, v in model.items() if k != "preset" and v is not None}


def albert_config(model: ml_collections.ConfigDict) -> AlbertConfig:
    """AlbertConfig from a `model_section` ConfigDict (validated; errors name the field)."""
    return AlbertConfig.from_preset(model.preset, **model_overrides(model))


def check_max_seq_length(config: ml_collections.ConfigDict, model: AlbertConfig) -> None:
    """ValueError when `config.data.max_seq_length` exceeds what the model's position embeddings cover."""
    if config.data.max_seq_length > model.max_position_embeddings:
        raise ValueError(
            f"config.data.max_seq_length ({config.data.max_seq_length}) exceeds the model's "
            f"max_position_embeddings ({model.max_position_embeddings})"
        )


def parse_arg(arg: str | None, **defaults):
    """big_vision's config argument: 'task=mnli,runlocal=True' -> ConfigDict over `defaults` (values cast
    to the default's type; bools accept True/False/1/0). An unknown key is a ValueError listing the known."""
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"config argument {key!r} is not one of {sorted(defaults)}")
        kind = type(defaults[key])
        values[key] = value.lower() in ("true", "1", "yes") if kind is bool else kind(value)
    return ml_collections.ConfigDict(values)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of an experiment config file given as `path[:arg]` (what `run.py --config` loads)."""
    path, _, arg = spec.partition(":")
    spec_ = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    if spec_ is None or spec_.loader is None:
        raise ValueError(f"config {path!r} is not a Python file that can be loaded (expected path/to/config.py[:arg])")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def parse_flags(argv: list[str], usage: str):
    """absl flag parsing for the command-line entry points, with config typos and bad values reported
    in one line (and `usage`) instead of a traceback."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, KeyError, ValueError, TypeError, AttributeError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        sys.exit(f"error: {message}\nusage: {usage}")


def config_from_flag(holder) -> ml_collections.ConfigDict:
    """The value of a `config_flags.DEFINE_config_file` flag; a config file that cannot be loaded (which
    ml_collections reports only when the value is first read) exits with its reason in one line."""
    value = holder.value
    try:
        if value is not None:
            value.keys()  # a failed load surfaces here, on first use
        return value
    except OSError as e:
        sys.exit(f"error: --config: {str(e).strip().splitlines()[-1].strip()}")


def fingerprint(config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> dict:
    """The config sections `keys` as plain JSON data: what identifies a run, so that a work dir with
    another fingerprint is not resumed into."""
    return json.loads(
        json.dumps(
            {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys if k in config}
        )
    )


class ClaimError(ValueError):
    """A directory holds another run or other data (a different claim record), or cannot be written."""


def check_claim(
    directory: str, record: str, values: dict, *, overwrite: bool, conflict: str, fix: str, foreign: str | None = None
) -> bool:
    """Whether `directory/record` (a JSON claim record) already holds `values`. Otherwise, unless `overwrite`
    (`write_claim` then empties the directory), raises ClaimError when the record holds other values, naming
    the keys that differ ("<directory> <conflict> (differs in: ...); <fix>"), and, with `foreign` set, when
    the directory is not empty but has no record ("<directory> is not empty and <foreign>")."""
    path = os.path.join(directory, record)
    previous = None
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
    if previous == values:
        return True
    if overwrite:
        return False
    if previous is not None:
        changed = sorted(k for k in set(previous) | set(values) if previous.get(k) != values.get(k))
        raise ClaimError(f"{directory} {conflict} (differs in: {', '.join(changed)}); {fix}")
    if foreign and os.path.isdir(directory) and os.listdir(directory):
        raise ClaimError(f"{directory} is not empty and {foreign}")
    return False


def write_claim(directory: str, record: str, values: dict, *, overwrite: bool) -> None:
    """Makes `directory` (first emptying it when `overwrite`) and writes `values` to `directory/record`.
    Call `check_claim` first."""
    if overwrite and os.path.isdir(directory):
        for name in os.listdir(directory):
            target = os.path.join(directory, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.remove(target)
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, record), values)


def write_json(path: str, value) -> None:
    """Writes `value` as JSON to `path` atomically (a temporary file renamed): a reader never sees half."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
