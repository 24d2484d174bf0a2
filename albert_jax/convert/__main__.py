"""Checkpoint conversion: Hugging Face transformers <-> albert-jax, and original TF checkpoints -> albert-jax.

Command line: ``python -m albert_jax.convert {to-hf,from-hf,from-tf} --help``.
"""

from __future__ import annotations

import argparse
import sys

from albert_jax import pretrained
from albert_jax.convert.hf import load_hf, save_hf
from albert_jax.convert.tf import load_tf
from albert_jax.tokenizer import AlbertTokenizer, check_vocab_size


def main(argv: list[str] | None = None) -> int:
    """Runs the converter CLI on `argv` (default: sys.argv[1:]); returns the exit code (1 on a bad checkpoint)."""
    parser = argparse.ArgumentParser(prog="python -m albert_jax.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_hf = sub.add_parser("to-hf", help="albert-jax checkpoint (work dir or exported dir) -> HF directory")
    to_hf.add_argument("--checkpoint", required=True, help="albert-jax directory written by save_pretrained")
    to_hf.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    from_hf = sub.add_parser("from-hf", help="HF directory -> albert-jax directory")
    from_hf.add_argument("--hf-dir", required=True)
    from_hf.add_argument("--out", required=True)
    from_hf.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin (unsafe)")
    from_tf = sub.add_parser("from-tf", help="original google-research/albert TF checkpoint -> albert-jax and/or HF")
    from_tf.add_argument("--tf-checkpoint", required=True, help="checkpoint prefix, e.g. .../model.ckpt-best")
    from_tf.add_argument("--albert-config", required=True, help="the checkpoint's albert_config.json")
    from_tf.add_argument("--out", help="albert-jax output directory")
    from_tf.add_argument("--hf-out", help="transformers output directory")
    from_tf.add_argument("--spiece-model", help="the checkpoint's SentencePiece model (e.g. 30k-clean.model), "
                                                "saved as spiece.model into the output directories")
    args = parser.parse_args(argv)
    if args.command == "from-tf" and not (args.out or args.hf_out):
        parser.error("from-tf needs --out and/or --hf-out")
    try:
        if args.command == "to-hf":
            config, params = pretrained.from_pretrained(args.checkpoint)
            save_hf(config, params, args.out)
        elif args.command == "from-hf":
            config, params = load_hf(args.hf_dir, allow_pickle=args.allow_pickle)
            pretrained.save_pretrained(config, params, args.out)
        else:
            _from_tf(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(d for d in (args.out, getattr(args, 'hf_out', None)) if d)}")
    return 0


def _from_tf(args) -> None:
    config, params = load_tf(args.tf_checkpoint, args.albert_config)
    tokenizer = None
    if args.spiece_model:
        tokenizer = AlbertTokenizer(args.spiece_model)
        check_vocab_size(tokenizer, config.vocab_size)
    for out, save in ((args.out, pretrained.save_pretrained), (args.hf_out, save_hf)):
        if out:
            save(config, params, out)
            if tokenizer is not None:
                tokenizer.save_pretrained(out)


if __name__ == "__main__":
    sys.exit(main())
