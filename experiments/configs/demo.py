"""The README demo: a small ALBERT pretrained for a few minutes on a 2-core CPU.

    python run.py --config=experiments/configs/demo.py --workdir=runs/demo

Built-in corpus (Python's own documentation) -> 6k SentencePiece vocabulary -> a small ALBERT (E=64,
H=128, 4 shared layers) -> MLM + SOP with LAMB -> HF export in runs/demo/hf -> fill-mask predictions.
Expected: MLM accuracy well above chance (1/6000) and SOP accuracy above 0.5 on held-out documents.
"""

from albert_jax.training.configs import model_config
from albert_jax.training.pretrain import default_config


def get_config():
    c = default_config()
    c.total_steps = 600
    c.batch_size = 64
    c.log_every = 25
    c.eval_every = 200
    c.checkpoint_every = 200
    c.model = model_config("albert-tiny", vocab_size=6000, hidden_size=128, intermediate_size=512,
                           num_attention_heads=2)
    # Docstring documents are short (a 128-token pair would be half padding): 64 tokens, 10 predictions.
    c.data.max_seq_length = 64
    c.data.max_predictions_per_seq = 10
    c.data.dupe_factor = 5
    c.data.spm_sentences = 200_000
    c.data.eval_batches = 8
    c.optimizer.learning_rate = 0.01
    c.optimizer.warmup_steps = 60
    c.export.hf_dir = "hf"
    c.export.fill_mask = ("The function returns a [MASK] of the arguments.", "Hello I'm a [MASK] model.")
    return c
