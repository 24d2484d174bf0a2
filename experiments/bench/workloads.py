"""What every system runs, defined once: the run's settings, the workloads (head, shapes, loss), their inputs
and the optimizer. numpy only, so the Keras-Hub worker can import it before choosing its backend.

A workload is computed identically by albert-jax, transformers and Keras-Hub: same weights (one exported HF
directory), same integer inputs (`make_inputs`, a pure function of the workload), same loss and the same AdamW
settings (`OPTIMIZER`). Dropout is 0 everywhere, so the three compute the same function (the v2 presets have it 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

ITEMS = ("peak", "forward", "train", "pretrain", "squad", "compile", "memory", "pipeline")
SYSTEMS = ("albert_jax", "transformers", "keras_hub")
FRAMEWORK = {"albert_jax": "xla", "transformers": "pytorch", "keras_hub": "xla"}  # whose matmul peak MFU uses

# AdamW of every training step: albert-jax's fine-tuning optimizer (global-norm clipping, no weight decay on
# biases and LayerNorm) at a constant learning rate, so no system needs a schedule.
OPTIMIZER = dict(learning_rate=1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, clip_norm=1.0)

# The dimensions --quick uses: every code path in seconds on a CPU.
QUICK_MODEL = dict(
    vocab_size=1000,
    embedding_size=32,
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=128,
    num_hidden_layers=2,
    max_position_embeddings=128,
)


@dataclasses.dataclass
class Settings:
    """One benchmark run (JSON-serialisable: workers get it as a dict)."""

    preset: str = "albert-base-v2"
    quick: bool = False
    device: str = "cpu"  # 'cpu' or 'gpu'
    dtype: str = "float32"  # compute dtype; parameters stay float32
    repeats: int = 5  # timed calls per measurement (median reported), after one warm-up call
    batch: int = 8
    seq: int = 128  # forward, train, pretrain, compile
    squad_seq: int = 384
    memory_seq: int = 512
    compile_layers: tuple = (12, 24, 48)
    masked_positions: int = 20  # max_predictions_per_seq of the original pretraining
    pipeline_sentences: int = 1000
    pipeline_passes: int = 1  # timed passes over all sentences (each ~1,000 / batch model calls)
    pipeline_batch_sizes: tuple = (1, 8, 32, 64)
    pipeline_vocab: int = 6000  # the built-in corpus cannot support a 30k SentencePiece vocabulary
    model: dict = dataclasses.field(default_factory=dict)  # AlbertConfig field overrides of the preset
    reuse_host_memory: bool = True  # albert-jax's processes as run.py runs them (albert_jax.training.hostmem)

    @classmethod
    def for_args(cls, preset, quick, device, dtype, repeats, seq=None):
        """The defaults of a full or a --quick run; `seq` overrides the main sequence length."""
        if quick:
            s = cls(
                preset=preset,
                quick=True,
                device=device,
                dtype=dtype,
                repeats=repeats or 3,
                batch=2,
                seq=32,
                squad_seq=64,
                memory_seq=128,
                compile_layers=(2, 4, 8),
                pipeline_sentences=64,
                pipeline_batch_sizes=(1, 8),
                pipeline_vocab=1000,
                model=dict(QUICK_MODEL),
            )
        else:
            s = cls(preset=preset, device=device, dtype=dtype, repeats=repeats or 5)
        if seq:
            s.seq = seq
        return s

    def albert_config(self):
        """The AlbertConfig every system's model has (dropout off; float32 compute: workers set their dtype)."""
        from albert_jax.config import AlbertConfig

        return AlbertConfig.from_preset(self.preset, **self.model).replace(
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        d = dict(d)
        for name in ("compile_layers", "pipeline_batch_sizes"):
            d[name] = tuple(d[name])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One measured computation.

    head: 'backbone' (AlbertModel / AlbertBackbone), 'pretraining' (MLM + SOP) or 'qa' (span start/end).
    loss: None (forward only, no gradient); 'mlm_all_sop' (MLM logits and mean cross-entropy over every
      position + SOP); 'mlm_masked_sop' (MLM logits only at `positions` masked positions per sequence, the
      original ALBERT loss; transformers, which has no such argument, computes all positions and ignores the
      others with label -100); 'span' ((start CE + end CE) / 2, transformers' QA loss).
    layers: overrides num_hidden_layers (the compile-time measurement).
    """

    name: str
    head: str
    loss: str | None
    batch: int
    seq: int
    positions: int = 0
    layers: int | None = None

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def workloads(s: Settings) -> dict[str, Workload]:
    """Every workload of the run by name: forward, train, pretrain, squad, memory, compile_<layers>."""
    out = {
        "forward": Workload("forward", "backbone", None, s.batch, s.seq),
        "train": Workload("train", "pretraining", "mlm_all_sop", s.batch, s.seq),
        "pretrain": Workload("pretrain", "pretraining", "mlm_masked_sop", s.batch, s.seq, s.masked_positions),
        "squad": Workload("squad", "qa", "span", s.batch, s.squad_seq),
        "memory": Workload("memory", "pretraining", "mlm_all_sop", s.batch, s.memory_seq),
    }
    for layers in s.compile_layers:
        out[f"compile_{layers}"] = Workload(
            f"compile_{layers}", "pretraining", "mlm_all_sop", s.batch, s.seq, layers=layers
        )
    return out


def make_inputs(w: Workload, vocab_size: int) -> dict[str, np.ndarray]:
    """The inputs of `w` (int32 unless noted), a pure function of the workload's shapes and loss:

    input_ids, attention_mask (all ones: no padding), token_type_ids (0 then 1, a sentence pair) [B, T];
    'mlm_all_sop': mlm_labels [B, T], sentence_order_label [B];
    'mlm_masked_sop': masked_lm_positions (distinct, sorted, never [CLS]), masked_lm_ids [B, P],
      masked_lm_weights (float32 ones) [B, P], sentence_order_label [B];
    'span': start_positions, end_positions [B].
    """
    rng = np.random.RandomState(w.batch * 1_000_003 + w.seq)
    b, t = w.batch, w.seq
    x = dict(
        input_ids=rng.randint(5, vocab_size, (b, t)).astype(np.int32),
        attention_mask=np.ones((b, t), np.int32),
        token_type_ids=np.broadcast_to(np.arange(t) >= t // 2, (b, t)).astype(np.int32),
    )
    if w.loss == "mlm_all_sop":
        x.update(
            mlm_labels=rng.randint(5, vocab_size, (b, t)).astype(np.int32),
            sentence_order_label=rng.randint(0, 2, b).astype(np.int32),
        )
    elif w.loss == "mlm_masked_sop":
        if w.positions > t - 2:
            raise ValueError(f"{w.positions} masked positions do not fit in sequences of {t}")
        x.update(
            masked_lm_positions=np.stack(
                [np.sort(rng.choice(np.arange(1, t - 1), w.positions, replace=False)) for _ in range(b)]
            ).astype(np.int32),
            masked_lm_ids=rng.randint(5, vocab_size, (b, w.positions)).astype(np.int32),
            masked_lm_weights=np.ones((b, w.positions), np.float32),
            sentence_order_label=rng.randint(0, 2, b).astype(np.int32),
        )
    elif w.loss == "span":
        start = rng.randint(1, t - 1, b)
        x.update(
            start_positions=start.astype(np.int32),
            end_positions=np.minimum(start + rng.randint(0, 10, b), t - 1).astype(np.int32),
        )
    return x


def decays(name: str) -> bool:
    """Whether the parameter `name` (any framework's path) gets weight decay: not biases, not LayerNorm."""
    lowered = name.lower()
    return not (lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered)
