"""`AlbertConfig`: the field names and defaults of transformers' `AlbertConfig`, plus `sharing`.

A Hugging Face `config.json` loads and saves losslessly: fields this dataclass does not know are kept in
`extra` and written back. `sharing` selects the paper's cross-layer sharing ablation (Table 4):

* ``all``       attention and FFN parameters are shared inside each of the `num_hidden_groups` groups
                (ALBERT; with one group, one layer is applied `num_hidden_layers` times);
* ``attention`` only the attention sub-block is shared per group, every layer has its own FFN;
* ``ffn``       only the FFN sub-block is shared per group, every layer has its own attention;
* ``none``      every layer has its own parameters (BERT-style).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SHARING_MODES = ("all", "attention", "ffn", "none")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")
DTYPES = ("float32", "bfloat16", "float16")
# jax.checkpoint policies for the scanned layer ("none": keep every intermediate for the backward pass)
REMAT_POLICIES = ("none", "dots_with_no_batch_dims_saveable", "dots_saveable", "nothing_saveable")


@dataclasses.dataclass
class AlbertConfig:
    """ALBERT hyper-parameters; defaults are transformers' (the xxlarge shape).

    Attributes follow transformers' names. Extra to them:
      sharing: one of SHARING_MODES (see module docstring).
      dtype: compute dtype name (DTYPES); whatever it is, LayerNorm and the attention softmax compute in float32
        and the heads' logits are float32. param_dtype: parameter dtype name (float32 with a half-precision
        dtype is mixed precision: float32 master weights and gradients).
      remat_policy: which intermediates of the scanned layer the backward pass keeps (REMAT_POLICIES). The
        default keeps every matmul output, the attention scores included, and recomputes the element-wise ops:
        the fastest policy on CPU (README, Performance). 'dots_with_no_batch_dims_saveable' recomputes the
        attention instead of keeping its [B, heads, T, T] scores, the lighter choice for long sequences. With
        cuDNN attention (half precision on a GPU) the attention has no matmul for either policy to keep, and
        the two coincide.
      scan_unroll: layers per iteration of the scanned encoder loop (`nn.scan(unroll=...)`). 1 compiles one layer
        body; the planner sets it to the number of layer applications to count FLOPs, since XLA's cost analysis
        counts a while-loop body once.
      num_labels: classes of the classification heads (1 = regression); stored as `id2label` in HF JSON.
      extra: HF config fields this class has no attribute for, kept verbatim for `to_json_file`.
    """

    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 4096
    num_hidden_layers: int = 12
    num_hidden_groups: int = 1
    num_attention_heads: int = 64
    intermediate_size: int = 16384
    inner_group_num: int = 1
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout_prob: float = 0.1
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    num_labels: int = 2
    sharing: str = "all"
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "dots_saveable"
    scan_unroll: int = 1
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # -- validation ---------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raises ValueError naming the field and the rule it breaks."""
        positive = (
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "num_hidden_layers",
            "num_hidden_groups",
            "num_attention_heads",
            "intermediate_size",
            "inner_group_num",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
            "scan_unroll",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"AlbertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"AlbertConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.num_hidden_layers % self.num_hidden_groups:
            raise ValueError(
                f"AlbertConfig.num_hidden_layers ({self.num_hidden_layers}) must be divisible by "
                f"num_hidden_groups ({self.num_hidden_groups})"
            )
        if self.sharing not in SHARING_MODES:
            raise ValueError(f"AlbertConfig.sharing must be one of {SHARING_MODES}, got {self.sharing!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"AlbertConfig.hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"AlbertConfig.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"AlbertConfig.remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AlbertConfig.{name} must be in [0, 1), got {value!r}")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            raise ValueError("AlbertConfig.layer_norm_eps and initializer_range must be positive")

    # -- derived quantities -------------------------------------------------------------------------------
    @property
    def num_attention_sets(self) -> int:
        """How many distinct attention parameter sets the encoder stores (per inner layer)."""
        return self.num_hidden_groups if self.sharing in ("all", "attention") else self.num_hidden_layers

    @property
    def num_ffn_sets(self) -> int:
        """How many distinct FFN parameter sets the encoder stores (per inner layer)."""
        return self.num_hidden_groups if self.sharing in ("all", "ffn") else self.num_hidden_layers

    @property
    def hf_num_hidden_groups(self) -> int:
        """`num_hidden_groups` of the equivalent transformers model; ValueError when there is none."""
        if self.num_attention_sets != self.num_ffn_sets:
            raise ValueError(
                f"sharing={self.sharing!r} with {self.num_attention_sets} attention and {self.num_ffn_sets} FFN "
                "parameter sets has no transformers representation (transformers shares whole layers only); "
                "keep this model in albert-jax checkpoints"
            )
        return self.num_attention_sets

    def replace(self, **changes) -> AlbertConfig:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    # -- HF JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The HF `config.json` content (albert-jax-only fields are kept under their own names)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "num_labels"):
                out[f.name] = getattr(self, f.name)
        if self.num_labels != 2 or "id2label" in self.extra:
            id2label = self.extra.get("id2label") or {}
            if len(id2label) != self.num_labels:
                id2label = {str(i): f"LABEL_{i}" for i in range(self.num_labels)}
            out["id2label"] = id2label
            out["label2id"] = {v: int(k) for k, v in id2label.items()}
        out.setdefault("model_type", "albert")  # AutoConfig needs it
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlbertConfig:
        """Builds a config from an HF-style dict; unknown keys go to `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        # model_type "albert" is implied (and always written by to_dict)
        extra = {k: v for k, v in data.items() if k not in names and (k, v) != ("model_type", "albert")}
        if "id2label" in extra and "num_labels" not in known:
            known["num_labels"] = len(extra["id2label"])
        # transformers writes null for unset dropouts and for `dtype` (its weights' torch dtype, which it
        # shares a name with our compute dtype): null means "the default".
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob", "dtype"):
            if name in known and known[name] is None:
                known.pop(name)
        return cls(**known, extra=extra)

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Writes an HF `config.json`."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> AlbertConfig:
        """Reads an HF `config.json` (or a google-research `albert_config.json`)."""
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"no config file at {path}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> AlbertConfig:
        """A released configuration by name (see PRESETS), with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def _released(hidden, layers, heads, version):
    v1 = version == "v1"
    dropout = 0.1 if v1 and hidden < 4096 else 0.0
    return dict(
        vocab_size=30000,
        embedding_size=128,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        hidden_act="gelu" if v1 else "gelu_new",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


PRESETS: dict[str, dict[str, Any]] = {
    f"albert-{size}-{version}": _released(hidden, layers, heads, version)
    for size, (hidden, layers, heads) in {
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
        "xlarge": (2048, 24, 16),
        "xxlarge": (4096, 12, 64),
    }.items()
    for version in ("v1", "v2")
}
PRESETS["bert-base-equivalent"] = dict(
    _released(768, 12, 12, "v2"), embedding_size=768, sharing="none", hidden_act="gelu"
)
PRESETS["bert-large-equivalent"] = dict(
    _released(1024, 24, 16, "v2"), embedding_size=1024, sharing="none", hidden_act="gelu"
)
PRESETS["albert-tiny"] = dict(
    vocab_size=8000,
    embedding_size=64,
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    max_position_embeddings=512,
    hidden_act="gelu_new",
)
