"""ALBERT in flax.linen: factorized embeddings, one scanned (shared) layer body, and every transformers head.

Parameter tree (mirrors transformers' module names so conversion is a table, see `convert/hf.py`)::

    albert/embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, LayerNorm/{scale,bias}
    albert/encoder/embedding_hidden_mapping_in/{kernel,bias}
    albert/encoder/albert_layer_groups/attention/{query,key,value,dense}/{kernel,bias}, attention/LayerNorm/...
    albert/encoder/albert_layer_groups/{ffn,ffn_output}/{kernel,bias}, full_layer_layer_norm/{scale,bias}
    albert/pooler/{kernel,bias}
    predictions/{dense,LayerNorm}/..., predictions/bias      (decoder tied to word_embeddings)
    sop_classifier/classifier, classifier, qa_outputs

Every encoder parameter carries two leading axes ``[sets, inner_group_num]``: `sets` is
`config.num_attention_sets` for the attention sub-block and `config.num_ffn_sets` for the FFN sub-block
(1 when fully shared, `num_hidden_layers` when not shared). The encoder runs **one** layer body under
`nn.scan` for all ``num_hidden_layers * inner_group_num`` steps; each step picks its parameter set with an
index, so compile time does not grow with depth and a shared set receives the sum of its uses' gradients.

Activations carry logical axis names too (`_constrain`): batch, length, embed/hidden, heads, mlp. They pin the
layout under the rules and mesh that `training/sharding.activation_sharding` sets while a step is traced
(Megatron-style heads/FFN sharding over a `tensor` axis, batch-sharded activations with `fsdp`); elsewhere they
are no-ops.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, cast

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.linen.spmd import logical_to_mesh  # its home: flax.linen re-exports it unmarked (private to pyright)
from jax.sharding import PartitionSpec

from albert_jax.config import AlbertConfig

Array = Any

ACT2FN = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + jnp.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


# ---------------------------------------------------------------------------------------------------------
# Outputs (transformers' field names)
# ---------------------------------------------------------------------------------------------------------
@struct.dataclass
class AlbertModelOutput:
    last_hidden_state: Array
    pooler_output: Array | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class AlbertForPreTrainingOutput:
    prediction_logits: Array
    sop_logits: Array
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class MaskedLMOutput:
    logits: Array
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class ClassifierOutput:
    """Sequence, token and multiple-choice classification output."""

    logits: Array
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@struct.dataclass
class QuestionAnsweringOutput:
    start_logits: Array
    end_logits: Array
    hidden_states: tuple | None = None
    attentions: tuple | None = None


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------
def _matmul(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`jax.lax.dot_general` for ``lhs [..., K]`` contracted on its last axis with one axis of a 2-D `rhs`,
    computed as one 2-D matmul over the flattened leading axes: ``[prod(...), K] -> [..., N]``.

    The weight gradient of a dot over several leading axes contracts two of them (batch and length), for
    which XLA's CPU backend copies the incoming gradient transposed and runs a slower matmul; the 2-D form
    contracts one axis and needs no copy (README, Performance). Same signature as `dot_general`, so it is
    also `nn.Dense(dot_general=...)`.
    """
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if tuple(lhs_contract) != (lhs.ndim - 1,) or rhs.ndim != 2 or any(batch):
        raise ValueError(f"_matmul contracts lhs's last axis with a 2-D rhs, not {dimension_numbers}")
    out = jax.lax.dot_general(
        lhs.reshape(-1, lhs.shape[-1]),
        rhs,
        (((1,), tuple(rhs_contract)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return out.reshape(lhs.shape[:-1] + out.shape[-1:])


def fit_spec(spec: PartitionSpec, shape: tuple, mesh) -> PartitionSpec:
    """`spec` for an array of `shape` on `mesh` (a Mesh or AbstractMesh) with every dimension that its mesh axes
    do not divide replicated (2 heads over tensor=4, a batch of 3, a 3-label classifier split 2 ways)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else (axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if size > 1 and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def _constrain(x: Array, axes: tuple) -> Array:
    """`x` pinned to the mesh axes its logical `axes` (one name or None per dimension) map to under the rules of
    `nn.logical_axis_rules` on the context mesh (`jax.set_mesh` / `jax.sharding.use_abstract_mesh`), dimensions
    the mesh does not divide replicated. Without both rules and a mesh, `x` itself: plain `apply` is unchanged."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return x
    spec = fit_spec(logical_to_mesh(PartitionSpec(*axes), rules), x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def _init(config: AlbertConfig, axes: tuple):
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes)


def _dense(config: AlbertConfig, features: int, axes: tuple, name: str, dtype=None) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=jnp.dtype(dtype or config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        kernel_init=_init(config, axes),
        dot_general=_matmul,
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[-1:]),
        name=name,
    )


def _logits(config: AlbertConfig, features: int, axes: tuple, name: str) -> nn.Dense:
    """A head's output layer: float32 compute and logits whatever `config.dtype` (the loss is taken on them)."""
    return _dense(config, features, axes, name, dtype=jnp.float32)


def _layer_norm(config: AlbertConfig, axis_name: str, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)),
        name=name,
    )


class AlbertEmbeddings(nn.Module):
    """word + token-type + position embeddings of size E, LayerNorm, dropout: [B, T] ids -> [B, T, E]."""

    config: AlbertConfig

    def setup(self):
        c = self.config
        pdt = jnp.dtype(c.param_dtype)
        self.word_embeddings = nn.Embed(
            c.vocab_size,
            c.embedding_size,
            dtype=jnp.dtype(c.dtype),
            param_dtype=pdt,
            embedding_init=_init(c, ("vocab", "embed")),
        )
        self.position_embeddings = nn.Embed(
            c.max_position_embeddings,
            c.embedding_size,
            dtype=jnp.dtype(c.dtype),
            param_dtype=pdt,
            embedding_init=_init(c, (None, "embed")),
        )
        self.token_type_embeddings = nn.Embed(
            c.type_vocab_size,
            c.embedding_size,
            dtype=jnp.dtype(c.dtype),
            param_dtype=pdt,
            embedding_init=_init(c, (None, "embed")),
        )
        self.LayerNorm = _layer_norm(c, "embed", "LayerNorm")
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool):
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(position_ids)
        )
        x = self.dropout(self.LayerNorm(x), deterministic=deterministic)
        return _constrain(x, ("batch", "length", "embed"))

    def attend(self, x, bias):
        """Tied MLM decoder: [..., E] -> [..., V] float32 logits ``x @ word_embeddings^T + bias`` (float32
        accumulation and result whatever the compute dtype: the loss is taken on them).

        The bias [V] enters the matmul as one more contraction column (``[x, 1] @ [table, bias]^T``): added
        after it, it would cost a pass over the [tokens, V] logits forward and a column sum of their gradient
        backward; inside, it is one of E + 1 products per logit (README, Performance). With a bfloat16 compute
        dtype the bias is rounded to bfloat16, as the table is.
        """
        x = jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], -1)
        table = jnp.concatenate([self.word_embeddings.embedding, bias[:, None]], 1).astype(x.dtype)
        return _matmul(x, table, (((x.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


class _StackedDense(nn.Module):
    """Dense layer whose kernel [sets, inner, in, out] and bias [sets, inner, out] are indexed per step."""

    config: AlbertConfig
    features: int
    num_sets: int
    axes: tuple

    @nn.compact
    def __call__(self, x, index):
        c = self.config
        lead = (self.num_sets, c.inner_group_num)
        kernel = self.param(
            "kernel",
            _init(c, ("layers", None) + self.axes),
            lead + (x.shape[-1], self.features),
            jnp.dtype(c.param_dtype),
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("layers", None, self.axes[-1])),
            lead + (self.features,),
            jnp.dtype(c.param_dtype),
        )
        kernel, bias = jnp.asarray(kernel)[index], jnp.asarray(bias)[index]
        dtype = jnp.dtype(c.dtype)
        return _matmul(x.astype(dtype), kernel.astype(dtype), (((x.ndim - 1,), (0,)), ((), ()))) + bias.astype(dtype)


class _StackedLayerNorm(nn.Module):
    """LayerNorm whose scale and bias [sets, inner, H] are indexed per step; statistics in float32."""

    config: AlbertConfig
    num_sets: int

    @nn.compact
    def __call__(self, x, index):
        c = self.config
        shape = (self.num_sets, c.inner_group_num, x.shape[-1])
        axes = ("layers", None, "hidden")
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, axes), shape, jnp.dtype(c.param_dtype)
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, axes), shape, jnp.dtype(c.param_dtype)
        )
        scale, bias = jnp.asarray(scale)[index], jnp.asarray(bias)[index]
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + c.layer_norm_eps) * scale.astype(jnp.float32)
        return (y + bias.astype(jnp.float32)).astype(x.dtype)


def _fused_attention(dtype, head_dim: int, length: int) -> Literal["cudnn"] | None:
    """The `implementation` of `jax.nn.dot_product_attention` that attention uses, or None for the explicit
    einsum-softmax-einsum path.

    'cudnn' (cuDNN flash attention) where it accepts the call: a CUDA GPU, bfloat16/float16 inputs, a head
    size that is a multiple of 8 up to 128, and an even length (cuDNN receives the padding mask as a bias,
    whose backward pass needs even lengths). Elsewhere the explicit path, which computes what the function's
    XLA implementation computes (the one `implementation=None` selects, on a GPU too) and runs faster: that
    implementation vmaps over head groups, which on CPU splits XLA's scores-softmax-context fusion and copies
    the probabilities (README, Performance).
    """
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return None
    if head_dim % 8 or head_dim > 128 or length % 2:
        return None
    if jax.default_backend() != "gpu" or "cuda" not in jax.extend.backend.get_backend().platform_version:
        return None
    return "cudnn"


def _explicit_attention(q, k, v, mask, dropout):
    """softmax(q k^T / sqrt(D) + mask bias) v for q, k, v [B, T, N, D] and mask [B, 1, 1, T] (True: attend):
    (context [B, T, N, D], probabilities [B, N, T, T] float32). `dropout` maps the probabilities to what
    multiplies v.

    The operands are laid out head-major, with k as [B, N, D, T], before the matmuls, so that XLA's CPU
    backend runs both as plain batched matmuls; the same einsums on [B, T, N, D] operands are slower
    (README, Performance).
    """
    q, v = q.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    scores = jnp.einsum("bhqd,bhdk->bhqk", q, k.transpose(0, 2, 3, 1), preferred_element_type=jnp.float32) / np.sqrt(
        q.shape[-1]
    )
    probs = jax.nn.softmax(scores + jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min), axis=-1)
    context = jnp.einsum("bhqk,bhkd->bhqd", dropout(probs).astype(q.dtype), v)
    return context.transpose(0, 2, 1, 3), probs


_HIDDEN_AXES = ("batch", "length", "hidden")  # the rules give 'batch' its mesh axes first: 'hidden' gets none
_HEADS_AXES = ("batch", "length", "heads", None)


class _Attention(nn.Module):
    """Multi-head self-attention + output projection + residual LayerNorm (transformers' AlbertAttention).

    Scores and softmax are float32 whatever the compute dtype. Where `_fused_attention` names an
    implementation, `jax.nn.dot_product_attention` computes the attention, unless the probabilities are
    needed: to return them (`output_attentions`) or to drop them out (attention dropout in training).
    """

    config: AlbertConfig
    deterministic: bool
    output_attentions: bool = False

    @nn.compact
    def __call__(self, hidden, index, mask):
        """hidden [B, T, H], mask [B, 1, 1, T] bool (True: attend) -> (hidden [B, T, H], probs [B, N, T, T] or None)."""
        c = self.config
        n = c.num_attention_sets
        heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        batch, length = hidden.shape[:2]

        # Column-parallel Q/K/V and a row-parallel output projection: heads split over `tensor`, one reduction of
        # the output's partial sums per layer.
        def project(name):
            out = _StackedDense(c, c.hidden_size, n, ("hidden", "heads"), name=name)(hidden, index)
            return _constrain(out.reshape(batch, length, heads, head_dim), _HEADS_AXES)

        q, k, v = project("query"), project("key"), project("value")
        fused = _fused_attention(q.dtype, head_dim, length)
        if fused and not self.output_attentions and (self.deterministic or c.attention_probs_dropout_prob == 0):
            probs = None
            context = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=fused)
        else:
            dropout = nn.Dropout(c.attention_probs_dropout_prob)
            context, probs = _explicit_attention(q, k, v, mask, lambda p: dropout(p, deterministic=self.deterministic))
        context = _constrain(context, _HEADS_AXES)
        out = _StackedDense(c, c.hidden_size, n, ("heads", "hidden"), name="dense")(
            context.reshape(batch, length, -1), index
        )
        out = nn.Dropout(c.hidden_dropout_prob)(out, deterministic=self.deterministic)
        out = _StackedLayerNorm(c, n, name="LayerNorm")(hidden + out, index)
        return _constrain(out, _HIDDEN_AXES), probs


class AlbertLayer(nn.Module):
    """One scan step: attention + FFN with parameters picked from the stacked sets by `step`.

    Called by `nn.scan` as ``(hidden [B,T,H], step, mask [B,1,1,T] bool) -> (hidden, (hidden or None, probs or
    None))`` where `step` holds the int32 indices (attention set, FFN set, inner layer) of this application.
    """

    config: AlbertConfig
    deterministic: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False

    @nn.compact
    def __call__(self, hidden, step, mask):
        c = self.config
        attn_set, ffn_set, inner = step
        # A constant index keeps the fully shared / single-inner-layer case a plain slice.
        inner = 0 if c.inner_group_num == 1 else inner
        attn_index = (0 if c.num_attention_sets == 1 else attn_set, inner)
        ffn_index = (0 if c.num_ffn_sets == 1 else ffn_set, inner)
        nf = c.num_ffn_sets

        hidden = _constrain(hidden, _HIDDEN_AXES)
        attn_out, probs = _Attention(c, self.deterministic, self.output_attentions, name="attention")(
            hidden, attn_index, mask
        )
        # Column-parallel FFN-in, row-parallel FFN-out (intermediate split over `tensor`), as in attention.
        ffn = _StackedDense(c, c.intermediate_size, nf, ("hidden", "mlp"), name="ffn")(attn_out, ffn_index)
        ffn = _constrain(ffn, ("batch", "length", "mlp"))
        ffn = _StackedDense(c, c.hidden_size, nf, ("mlp", "hidden"), name="ffn_output")(
            ACT2FN[c.hidden_act](ffn), ffn_index
        )
        hidden = _StackedLayerNorm(c, nf, name="full_layer_layer_norm")(ffn + attn_out, ffn_index)
        hidden = _constrain(hidden, _HIDDEN_AXES)
        return hidden, (hidden if self.output_hidden_states else None, probs if self.output_attentions else None)


class AlbertTransformer(nn.Module):
    """E -> H projection, then the scanned layer applied num_hidden_layers * inner_group_num times."""

    config: AlbertConfig

    @nn.compact
    def __call__(self, embeddings, mask, deterministic=True, output_attentions=False, output_hidden_states=False):
        c = self.config
        hidden = _dense(c, c.hidden_size, ("embed", "hidden"), "embedding_hidden_mapping_in")(embeddings)
        hidden = _constrain(hidden, _HIDDEN_AXES)
        layer_of_step = np.arange(c.num_hidden_layers * c.inner_group_num) // c.inner_group_num
        steps = (
            jnp.asarray(layer_of_step * c.num_attention_sets // c.num_hidden_layers, jnp.int32),
            jnp.asarray(layer_of_step * c.num_ffn_sets // c.num_hidden_layers, jnp.int32),
            jnp.asarray(np.arange(len(layer_of_step)) % c.inner_group_num, jnp.int32),
        )
        body = AlbertLayer
        if c.remat_policy != "none":
            body = nn.remat(AlbertLayer, policy=getattr(jax.checkpoint_policies, c.remat_policy), prevent_cse=False)
        scan = nn.scan(
            body,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            # flax's `in_axes` is unannotated, so its type is inferred from the default 0: `int`; a tuple is valid.
            in_axes=(0, nn.broadcast),  # pyright: ignore[reportArgumentType]
            length=len(layer_of_step),
            unroll=c.scan_unroll,
        )
        first = hidden
        hidden, (all_hidden, all_attn) = scan(
            c, deterministic, output_attentions, output_hidden_states, name="albert_layer_groups"
        )(hidden, steps, mask)
        # With output_hidden_states: as transformers, the projected embeddings, then every (inner) layer's output.
        if all_hidden is not None:
            all_hidden = (first,) + tuple(all_hidden)
        return hidden, all_hidden, all_attn


class AlbertBackbone(nn.Module):
    """Embeddings + encoder (+ pooler): the `albert` sub-tree shared by every head."""

    config: AlbertConfig
    add_pooling_layer: bool = True

    def setup(self):
        self.embeddings = AlbertEmbeddings(self.config)
        self.encoder = AlbertTransformer(self.config)
        if self.add_pooling_layer:
            self.pooler = _dense(self.config, self.config.hidden_size, ("hidden", "hidden_out"), "pooler")

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        deterministic=True,
        output_hidden_states=False,
        output_attentions=False,
    ) -> AlbertModelOutput:
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        mask = (attention_mask > 0)[:, None, None, :]
        hidden, all_hidden, all_attn = self.encoder(
            embeddings, mask, deterministic, output_attentions, output_hidden_states
        )
        pooled = None
        if self.add_pooling_layer:
            pooled = _constrain(jnp.tanh(self.pooler(hidden[:, 0])), ("batch", "hidden"))
        return AlbertModelOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=None if all_hidden is None else tuple(all_hidden),  # None unless output_hidden_states
            attentions=None if all_attn is None else tuple(all_attn),  # None unless output_attentions
        )

    def attend(self, x, bias):
        return self.embeddings.attend(x, bias)


class AlbertMLMHead(nn.Module):
    """H -> E dense, activation, LayerNorm, then the tied decoder plus an own bias: [..., H] -> [..., V] float32."""

    config: AlbertConfig

    @nn.compact
    def __call__(self, hidden, backbone: AlbertBackbone):
        c = self.config
        x = _dense(c, c.embedding_size, ("hidden", "embed"), "dense")(hidden)
        x = _layer_norm(c, "embed", "LayerNorm")(ACT2FN[c.hidden_act](x))
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (c.vocab_size,),
            jnp.dtype(c.param_dtype),
        )
        # Batch-sharded logits: with `fsdp` (which splits the tied table's vocabulary) XLA would otherwise compute
        # them split over the vocabulary and reduce the softmax across devices.
        return _constrain(backbone.attend(x, bias), ("batch", "length", "vocab"))


def _gather_positions(hidden, positions):
    """[B, T, H] hidden, [B, P] positions -> [B, P, H]."""
    return _constrain(jnp.take_along_axis(hidden, positions[..., None], axis=1), _HIDDEN_AXES)


# ---------------------------------------------------------------------------------------------------------
# Heads. Each is `Head(config)` and `head.apply({'params': p}, input_ids, attention_mask=None,
# token_type_ids=None, position_ids=None, deterministic=True)`; dropout needs rngs={'dropout': key}.
# ---------------------------------------------------------------------------------------------------------
class _Head(nn.Module):
    """Backbone + a head. Subclasses set up their layers in `setup_head` and map the backbone output
    to their output in `head(out, deterministic, **kwargs)`."""

    config: AlbertConfig
    add_pooling_layer = True

    def setup(self):
        self.albert = AlbertBackbone(self.config, add_pooling_layer=self.add_pooling_layer)
        self.dropout = nn.Dropout(self.config.classifier_dropout_prob)
        self.setup_head()

    def setup_head(self):
        pass

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        deterministic=True,
        output_hidden_states=False,
        output_attentions=False,
        **head_kwargs,
    ):
        out = self.albert(
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            deterministic,
            output_hidden_states,
            output_attentions,
        )
        return self.head(out, deterministic, **head_kwargs)

    def classify(self, features, deterministic):
        return self.classifier(self.dropout(features, deterministic=deterministic))


class AlbertModel(_Head):
    """The bare encoder: `last_hidden_state` [B, T, H] and `pooler_output` [B, H]."""

    def head(self, out: AlbertModelOutput, deterministic) -> AlbertModelOutput:
        return out


class _SOPHead(nn.Module):
    config: AlbertConfig

    @nn.compact
    def __call__(self, pooled, deterministic):
        pooled = nn.Dropout(self.config.classifier_dropout_prob)(pooled, deterministic=deterministic)
        return _logits(self.config, self.config.num_labels, ("hidden", None), "classifier")(pooled)


class AlbertForPreTraining(_Head):
    """MLM (tied decoder) + SOP heads. With `masked_lm_positions` [B, P] the MLM logits are computed at
    those positions only ([B, P, V]) - what pretraining needs - instead of at every position ([B, T, V])."""

    def setup_head(self):
        self.predictions = AlbertMLMHead(self.config)
        self.sop_classifier = _SOPHead(self.config)

    def head(self, out, deterministic, masked_lm_positions=None) -> AlbertForPreTrainingOutput:
        hidden = out.last_hidden_state
        if masked_lm_positions is not None:
            hidden = _gather_positions(hidden, masked_lm_positions)
        return AlbertForPreTrainingOutput(
            prediction_logits=self.predictions(hidden, self.albert),
            sop_logits=self.sop_classifier(out.pooler_output, deterministic),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class AlbertForMaskedLM(_Head):
    """MLM head only (no pooler), `logits` [B, T, V]."""

    add_pooling_layer = False

    def setup_head(self):
        self.predictions = AlbertMLMHead(self.config)

    def head(self, out, deterministic) -> MaskedLMOutput:
        return MaskedLMOutput(self.predictions(out.last_hidden_state, self.albert), out.hidden_states, out.attentions)


class AlbertForSequenceClassification(_Head):
    """Pooled output -> dropout -> `num_labels` logits [B, num_labels] (num_labels=1: regression)."""

    def setup_head(self):
        self.classifier = _logits(self.config, self.config.num_labels, ("hidden", None), "classifier")

    def head(self, out, deterministic) -> ClassifierOutput:
        return ClassifierOutput(self.classify(out.pooler_output, deterministic), out.hidden_states, out.attentions)


class AlbertForTokenClassification(_Head):
    """Per-token logits [B, T, num_labels] (no pooler)."""

    add_pooling_layer = False

    def setup_head(self):
        self.classifier = _logits(self.config, self.config.num_labels, ("hidden", None), "classifier")

    def head(self, out, deterministic) -> ClassifierOutput:
        return ClassifierOutput(self.classify(out.last_hidden_state, deterministic), out.hidden_states, out.attentions)


class AlbertForQuestionAnswering(_Head):
    """Span logits `start_logits`, `end_logits`, each [B, T] (no pooler)."""

    add_pooling_layer = False

    def setup_head(self):
        self.qa_outputs = _logits(self.config, 2, ("hidden", None), "qa_outputs")

    def head(self, out, deterministic) -> QuestionAnsweringOutput:
        logits = self.qa_outputs(out.last_hidden_state)
        return QuestionAnsweringOutput(logits[..., 0], logits[..., 1], out.hidden_states, out.attentions)


class AlbertForMultipleChoice(_Head):
    """Inputs [B, C, T]; one score per choice from the pooled output: `logits` [B, C]."""

    def setup_head(self):
        self.classifier = _logits(self.config, 1, ("hidden", None), "classifier")

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        deterministic=True,
        output_hidden_states=False,
        output_attentions=False,
    ):
        def flat(x):
            return None if x is None else x.reshape(-1, x.shape[-1])

        return super().__call__(
            flat(input_ids),
            flat(attention_mask),
            flat(token_type_ids),
            flat(position_ids),
            deterministic,
            output_hidden_states,
            output_attentions,
            num_choices=input_ids.shape[1],
        )

    def head(self, out, deterministic, num_choices) -> ClassifierOutput:
        logits = self.classify(out.pooler_output, deterministic)
        return ClassifierOutput(logits.reshape(-1, num_choices), out.hidden_states, out.attentions)


HEADS = {
    cls.__name__: cls
    for cls in (
        AlbertModel,
        AlbertForPreTraining,
        AlbertForMaskedLM,
        AlbertForSequenceClassification,
        AlbertForTokenClassification,
        AlbertForQuestionAnswering,
        AlbertForMultipleChoice,
    )
}


def boxed_params(model: nn.Module, rng: jax.Array, seq_len: int = 8) -> dict:
    """Randomly initialised parameters of `model`, boxed with their logical axes (`model.init(...)["params"]`
    on a dummy batch of one `seq_len`-token row; one row of one choice for multiple choice)."""
    shape = (1, 1, seq_len) if isinstance(model, AlbertForMultipleChoice) else (1, seq_len)
    # flax declares `init` -> FrozenDict | dict; it returns a dict (flax_return_frozendict is off).
    return cast(dict, model.init(rng, jnp.zeros(shape, jnp.int32))["params"])


def init_params(model: nn.Module, rng: jax.Array, seq_len: int = 8) -> dict:
    """Randomly initialised parameters (plain arrays, logical-axis metadata removed) for `model`."""
    return nn.meta.unbox(boxed_params(model, rng, seq_len))


def abstract_params(model: nn.Module, seq_len: int = 8) -> dict:
    """Parameter shapes/dtypes of `model` as `jax.ShapeDtypeStruct`s, boxed with their logical axes."""
    return jax.eval_shape(lambda: boxed_params(model, jax.random.PRNGKey(0), seq_len))


def count_params(config: AlbertConfig, head: type = AlbertModel) -> int:
    """Number of parameters of `head(config)` (default: the bare encoder with pooler), without allocating."""
    shapes = nn.meta.unbox(abstract_params(head(config)))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
