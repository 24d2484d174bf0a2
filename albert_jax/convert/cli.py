"""The converter's command line: ``python -m albert_jax.convert {to-hf,from-hf,from-tf} --help``.

Each output directory ends up holding one model: its config.json, its weights and, when the source has
one, its tokenizer (spiece.model, tokenizer_config.json, special_tokens_map.json). A directory that already
holds model or tokenizer files is refused unless --overwrite, which replaces all of them (other files are
kept), so new weights never sit beside another model's vocabulary. The files are written to a staging
folder first: a failed conversion changes nothing in the output directory. Errors are one line on stderr
and exit status 1.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile

from albert_jax import pretrained
from albert_jax.convert.hf import PICKLE_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, load_hf, save_hf
from albert_jax.convert.tf import load_tf
from albert_jax.tokenizer import VOCAB_FILE, AlbertTokenizer, check_vocab_size

# every file of a model directory, in either format, and of its tokenizer (transformers' fast one included)
MODEL_FILES = (
    "config.json",
    pretrained.PARAMS_NAME,
    WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    PICKLE_NAME,
    VOCAB_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
)
SHARD_PATTERN = "model-*-of-*.safetensors"  # the files a model.safetensors.index.json lists


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `main` (commands to-hf, from-hf, from-tf)."""
    parser = argparse.ArgumentParser(
        prog="python -m albert_jax.convert",
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,  # no docstrings under python -OO
        description="Checkpoint conversion: transformers <-> albert-jax, original TF checkpoints -> both.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="albert-jax model directory -> transformers directory")
    to_hf.add_argument(
        "--checkpoint",
        required=True,
        help="model directory: albert-jax (config.json + albert_jax.safetensors, as save_pretrained "
        "and a training job's <workdir>/final write it) or transformers",
    )
    to_hf.add_argument("--out", required=True, help="transformers output directory")
    from_hf = sub.add_parser("from-hf", help="transformers directory -> albert-jax directory")
    from_hf.add_argument("--hf-dir", required=True, help="transformers model directory (config.json + weights)")
    from_hf.add_argument("--out", required=True, help="albert-jax output directory")
    from_hf.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin (unsafe)")
    from_tf = sub.add_parser("from-tf", help="original google-research/albert TF checkpoint -> albert-jax and/or HF")
    from_tf.add_argument("--tf-checkpoint", required=True, help="checkpoint prefix, e.g. .../model.ckpt-best")
    from_tf.add_argument("--albert-config", required=True, help="the checkpoint's albert_config.json")
    from_tf.add_argument("--out", help="albert-jax output directory")
    from_tf.add_argument("--hf-out", help="transformers output directory")
    from_tf.add_argument(
        "--spiece-model",
        help="the checkpoint's SentencePiece model (e.g. 30k-clean.model), "
        "saved as spiece.model into the output directories",
    )
    for command in (to_hf, from_hf, from_tf):
        command.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the model and tokenizer files an output directory already holds",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the converter on `argv` (default: sys.argv[1:]); returns the exit code, 1 after an error (printed
    as one line on stderr). Bad arguments exit through argparse (status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    hf_out = getattr(args, "hf_out", None)
    if args.command == "from-tf":
        if not (args.out or hf_out):
            parser.error("from-tf needs --out and/or --hf-out")
        if args.out and hf_out and os.path.realpath(args.out) == os.path.realpath(hf_out):
            parser.error("--out and --hf-out must be different directories")
    if args.command == "to-hf":
        outputs = [(args.out, save_hf)]
    else:
        outputs = [(out, save) for out, save in ((args.out, pretrained.save_pretrained), (hf_out, save_hf)) if out]
    try:
        for out, _ in outputs:
            _check_out(out, args.overwrite)
        config, params, tokenizer = _load(args)
        for out, save in outputs:
            _write(out, save, config, params, tokenizer)
    except (ValueError, OSError, ImportError) as e:  # ConversionError is a ValueError
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    note = "" if tokenizer is not None else " (model only: no spiece.model in the source)"
    print(f"wrote {', '.join(out for out, _ in outputs)}{note}")
    return 0


def _load(args) -> tuple:
    """(config, params, tokenizer or None) of the command's source; the tokenizer must fit the config."""
    if args.command == "from-tf":
        config, params = load_tf(args.tf_checkpoint, args.albert_config)
        tokenizer = AlbertTokenizer(args.spiece_model) if args.spiece_model else None
    else:
        if args.command == "to-hf":
            source, (config, params) = args.checkpoint, pretrained.from_pretrained(args.checkpoint)
        else:
            source, (config, params) = args.hf_dir, load_hf(args.hf_dir, allow_pickle=args.allow_pickle)
        has_tokenizer = os.path.isfile(os.path.join(source, VOCAB_FILE))
        tokenizer = AlbertTokenizer.from_pretrained(source) if has_tokenizer else None
    if tokenizer is not None:
        check_vocab_size(tokenizer, config.vocab_size)
    return config, params, tokenizer


def _model_files(directory: str) -> list[str]:
    """Paths of the model and tokenizer files in `directory` (none when it does not exist)."""
    if not os.path.isdir(directory):
        return []
    paths = [os.path.join(directory, name) for name in MODEL_FILES]
    return [p for p in paths if os.path.lexists(p)] + glob.glob(os.path.join(glob.escape(directory), SHARD_PATTERN))


def _check_out(out: str, overwrite: bool) -> None:
    """Raises ValueError unless `out` is absent, a directory without a model, or `overwrite` is set."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output directory {out} exists and is not a directory")
    existing = _model_files(out)
    if existing and not overwrite:
        names = ", ".join(sorted(os.path.basename(p) for p in existing))
        raise ValueError(
            f"{out} already holds a model or tokenizer ({names}); pass --overwrite to replace it, "
            "or choose another directory"
        )


def _write(out: str, save, config, params, tokenizer) -> None:
    """`save(config, params, dir)` and the tokenizer into a staging folder in `out`, then its files replace the
    model files of `out`."""
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".convert-", dir=out)
    try:
        save(config, params, staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        for path in _model_files(out):
            os.remove(path)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(out):  # a failed conversion leaves no empty directory behind
            os.rmdir(out)
