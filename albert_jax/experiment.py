"""What every entry point (run.py, experiments/ablate.py, `python -m albert_jax.data.prepare`) shares about
experiments: config files with a big_vision style argument (`pretrain.py:size=base,runlocal=True`), the
`model` section of a config, `--config.*` flag parsing with one-line errors, and claims: the fingerprint that
identifies a run (or prepared data) recorded in its directory, so that a directory holding another one is
never reused by mistake."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import importlib.util
import inspect
import json
import os
import re
import shutil
import socket
import sys
import traceback
from collections.abc import Iterator

import ml_collections
from absl import flags
from ml_collections.config_dict import FieldReference, placeholder
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

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
    """`get_config(arg)` of an experiment config file given as `path[:arg]` (what `run.py --config` loads).
    Every failure is a one-line ValueError naming the file: a missing file, a file that does not load
    (with its line), an argument get_config does not take, get_config's own ValueError (how a config
    rejects its argument) and any other exception in get_config (with its type and line)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} does not exist (expected path/to/config.py[:arg])")
    loader = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    if loader is None or loader.loader is None:
        raise ValueError(f"config {path!r} is not a Python file (expected path/to/config.py[:arg])")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the file raises is reported, naming file and line
        raise ValueError(_failure_in(path, e)) from e
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"config file {path} defines no get_config()")
    args = (arg,) if arg else ()
    signature = inspect.signature(get_config)
    try:
        signature.bind(*args)
    except TypeError:
        if arg:
            raise ValueError(f"config file {path} takes no argument, got {arg!r}") from None
        raise ValueError(f"config file {path} needs an argument ({path}:ARG): get_config{signature}") from None
    try:
        config = get_config(*args)
    except ValueError as e:
        raise ValueError(f"config {spec}: {_one_line(e)}") from e
    except Exception as e:  # noqa: BLE001 - a bug in the config file: named with its line
        raise ValueError(_failure_in(path, e)) from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"config file {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
    return config


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (ml_collections' "did you mean" hints come after a newline)."""
    return " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())


def _failure_in(path: str, e: BaseException) -> str:
    """'config file PATH, line N: Type: message' for an exception raised while loading or running config
    file `path` (the line is the last one of `path` in the traceback, or the syntax error's)."""
    if isinstance(e, SyntaxError):
        line, message = e.lineno, e.msg
    else:
        here = os.path.abspath(path)
        in_file = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == here]
        line, message = (in_file[-1].lineno if in_file else None), _one_line(e)
    return f"config file {path}{f', line {line}' if line else ''}: {type(e).__name__}: {message}"


class _ConfigInputError(Exception):
    """A config file or `--config.*` override that parse_flags rejects; not a ValueError, which absl
    would prefix with the flag again."""


class _ConfigFileParser(ConfigFileFlagParser):
    """ml_collections' config file flag parser, loading through `load_config` and checking that each
    `--NAME.field` override names a field of the config."""

    def __init__(self, name: str, fields: list[str]):
        super().__init__(name)
        self.fields = fields

    def parse(self, path):
        try:
            config = load_config(path)
            for field in self.fields:
                _check_field(config, self.name, field)
        except ValueError as e:
            raise _ConfigInputError(str(e)) from None
        config.lock()
        return config


def _check_field(config: ml_collections.ConfigDict, name: str, field: str) -> None:
    """ValueError unless `field` ('a.b.c') names a field of `config`, with the closest name as a hint."""
    node, walked = config, []
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return  # inside a list or dict value: ml_collections' own checks apply
        if part not in node:
            close = difflib.get_close_matches(part, list(node.keys()), n=1)
            hint = f" (did you mean --{name}.{'.'.join([*walked, close[0]])}?)" if close else ""
            raise ValueError(f"--{name}.{field}: the config has no field {'.'.join([*walked, part])!r}{hint}")
        node, walked = node[part], [*walked, part]


def _set_none(config: ml_collections.ConfigDict, name: str, field: str) -> None:
    """`--NAME.field=None`: sets an optional field (an ml_collections placeholder, or a field that is None)
    to None; ValueError for any other field, which None would silently turn into the string 'None' or fail."""
    *parents, key = field.split(".")
    holder = config
    for part in parents:
        holder = holder[part]
    if not isinstance(holder._fields[key], FieldReference) and holder[key] is not None:  # placeholders are references
        raise ValueError(
            f"--{name}.{field}=None: {name}.{field} takes {type(holder[key]).__name__}, not None (only a placeholder "
            "field, one that may be None, takes None)"
        )
    holder[key] = None


def parse_flags(argv: list[str], usage: str, flag_values: flags.FlagValues | None = None):
    """absl flag parsing of `argv` for the command-line entry points (into `flag_values`, absl's FLAGS by
    default). Config file flags load through `load_config`, `--config.field=value` must name a field of the
    config and `--config.field=None` sets an optional (placeholder) field to None. Bad input exits with one
    line on stderr: the config file, field or flag and what is wrong (plus `usage` for a flag absl rejects)."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    names = [n for n in flag_values if isinstance(flag_values[n].parser, ConfigFileFlagParser)]
    nones = {}  # `--NAME.field=None` -> (NAME, field), applied after the other flags
    for name in names:  # overrides as ml_collections finds them: `--[no]NAME.field[=value]`
        overrides = [m for a in argv if (m := re.fullmatch(rf"--?(?:no)?{re.escape(name)}\.([^=]+)(=.*)?", a))]
        flag_values[name].parser = _ConfigFileParser(name, [m[1] for m in overrides])
        nones |= {m.string: (name, m[1]) for m in overrides if m[2] == "=None"}
    try:
        rest = flag_values([a for a in argv if a not in nones])
        for name, field in nones.values():
            _set_none(flag_values[name].value, name, field)
        return rest
    except (_ConfigInputError, ValueError) as e:
        sys.exit(f"error: {e}")
    except (flags.Error, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"error: {_one_line(e)} (usage: {usage})")


def fingerprint(config: ml_collections.ConfigDict, keys: tuple[str, ...]) -> dict:
    """The config sections `keys` as plain JSON data: what identifies a run, so that a work dir with
    another fingerprint is not resumed into."""
    return json.loads(
        json.dumps(
            {k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k] for k in keys if k in config}
        )
    )


LOCK_NAME = ".lock"  # a directory's lock file (`exclusive`), kept by write_claim's clearing


class ClaimError(ValueError):
    """A directory holds another run or other data (a different claim record), is in use by another process,
    or cannot be written."""


@contextlib.contextmanager
def exclusive(path: str, *, busy: str, wait: bool = False) -> Iterator[None]:
    """Holds an exclusive lock on the file `path` (made if missing) for the `with` block, with this host and
    PID written into it. The OS releases the lock when the process ends, however it ends, so a crash leaves
    nothing to clean up. POSIX record locks (`lockf`): they hold on a shared file system, and a process
    does not block itself. When another process holds the lock, "<busy> (<holder>)" is printed on stderr
    before waiting for it (`wait`) or else raised as a ClaimError."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            message = f"{busy} ({f.read().strip() or 'a process that has not said who it is'})"
            if not wait:
                raise ClaimError(message) from None
            print(message, file=sys.stderr, flush=True)
            fcntl.lockf(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"held by host {socket.gethostname()}, pid {os.getpid()}\n")
        f.flush()
        yield


def check_claim(
    directory: str,
    record: str,
    values: dict,
    *,
    overwrite: bool,
    conflict: str,
    fix: str,
    foreign: str | None = None,
    ours: tuple[str, ...] = (),
) -> bool:
    """Whether `directory/record` (a JSON claim record) already holds `values`. Otherwise raises ClaimError
    when the record holds other values, naming the keys that differ ("<directory> <conflict> (differs in:
    ...); <fix>"), and, with `foreign` set, when the directory is not empty but has no record ("<directory>
    is not empty and <foreign>"). With `overwrite` (`write_claim` then empties the directory) neither is an
    error, but a directory that is not empty and holds neither `record` nor one of the names `ours` (what
    else marks it as one of ours) is refused, naming a few of its entries: --overwrite deletes only our own."""
    path = os.path.join(directory, record)
    previous = None
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
    if previous == values:
        return True
    entries = sorted(set(os.listdir(directory)) - {LOCK_NAME}) if os.path.isdir(directory) else []
    if overwrite:
        if entries and not {record, *ours} & set(entries):
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ClaimError(
                f"--overwrite deletes only a directory of ours (holding {' or '.join((record, *ours))}) or an "
                f"empty one; {directory} holds {shown}: nothing was deleted, use another directory"
            )
        return False
    if previous is not None:
        changed = sorted(k for k in set(previous) | set(values) if previous.get(k) != values.get(k))
        raise ClaimError(f"{directory} {conflict} (differs in: {', '.join(changed)}); {fix}")
    if foreign and entries:
        raise ClaimError(f"{directory} is not empty and {foreign}")
    return False


def write_claim(directory: str, record: str, values: dict, *, overwrite: bool) -> None:
    """Makes `directory` (first emptying it when `overwrite`, all but its lock file) and writes `values` to
    `directory/record`. Call `check_claim` first (under the directory's lock, `exclusive`)."""
    if overwrite and os.path.isdir(directory):
        for name in set(os.listdir(directory)) - {LOCK_NAME}:
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
