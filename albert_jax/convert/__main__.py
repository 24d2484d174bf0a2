"""``python -m albert_jax.convert``: runs the converter's command line (`albert_jax.convert.cli`)."""

from albert_jax.convert.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
