"""transformers' (PyTorch) side: the workload's model from the exported HF directory, an eager forward or an
AdamW train step with transformers' own losses; AMP bfloat16 when the run's dtype is bfloat16."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import transformers

from .workloads import OPTIMIZER, Workload, decays, make_inputs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

HEADS = {
    "backbone": transformers.AlbertModel,
    "pretraining": transformers.AlbertForPreTraining,
    "qa": transformers.AlbertForQuestionAnswering,
}


def torch_device(device: str) -> str:
    return "cuda" if device == "gpu" else "cpu"


def load(hf_dir: str, w: Workload, device: str):
    """The transformers model of `w.head`, float32 weights, on `device` ('cpu' or 'gpu')."""
    overrides = {"num_hidden_layers": w.layers} if w.layers else {}
    return HEADS[w.head].from_pretrained(hf_dir, dtype=torch.float32, **overrides).to(torch_device(device))


def _autocast(device: str, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch_device(device), dtype=getattr(torch, dtype))


def _sync(device: str):
    if device == "gpu":
        torch.cuda.synchronize()


def _tensors(x: dict, device: str) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_device(device)) for k, v in x.items()}


class Forward:
    """`runner()` runs the model once under no_grad; `outputs()` gives last_hidden_state, pooler_output."""

    def __init__(self, hf_dir: str, w: Workload, device: str, dtype: str):
        self.model = load(hf_dir, w, device).eval()
        x = _tensors(make_inputs(w, self.model.config.vocab_size), device)
        self.inputs = {k: x[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        self.device, self.dtype = device, dtype

    def _run(self):
        with torch.no_grad(), _autocast(self.device, self.dtype):
            return self.model(**self.inputs)

    def __call__(self):
        self._run()
        _sync(self.device)

    def outputs(self) -> dict:
        out = self._run()
        return {
            "last_hidden_state": out.last_hidden_state.float().cpu().numpy(),
            "pooler_output": out.pooler_output.float().cpu().numpy(),
        }


def make_optimizer(model) -> torch.optim.AdamW:
    """torch's AdamW (its default implementation for the device) with OPTIMIZER's settings."""
    o = OPTIMIZER
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": o["weight_decay"]},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=o["learning_rate"], betas=(o["b1"], o["b2"]), eps=o["eps"])


class TrainStep:
    """`runner()` runs one step (zero_grad, forward with transformers' loss, backward, global-norm clipping,
    AdamW) and returns the loss before the update."""

    def __init__(self, hf_dir: str, w: Workload, device: str, dtype: str):
        self.model = load(hf_dir, w, device).train()
        self.optimizer = make_optimizer(self.model)
        x = _tensors(make_inputs(w, self.model.config.vocab_size), device)
        self.inputs = {k: x[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if w.loss == "mlm_all_sop":
            self.inputs.update(labels=x["mlm_labels"].long(), sentence_order_label=x["sentence_order_label"].long())
        elif w.loss == "mlm_masked_sop":  # transformers has no masked positions: all logits, labels -100 elsewhere
            labels = torch.full_like(x["input_ids"], -100, dtype=torch.long)
            labels.scatter_(1, x["masked_lm_positions"].long(), x["masked_lm_ids"].long())
            self.inputs.update(labels=labels, sentence_order_label=x["sentence_order_label"].long())
        elif w.loss == "span":
            self.inputs.update(start_positions=x["start_positions"].long(), end_positions=x["end_positions"].long())
        self.device, self.dtype = device, dtype

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, self.dtype):
            loss = self.model(**self.inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPTIMIZER["clip_norm"])
        self.optimizer.step()
        return float(loss.detach())  # waits for the step

    def allocate_optimizer_state(self):
        """Creates AdamW's moments now (torch does it lazily in the first step) without changing the weights,
        so that a memory baseline taken afterwards holds them, as it does for the other systems."""
        for group in self.optimizer.param_groups:
            group["lr"], group["saved_wd"], group["weight_decay"] = 0.0, group["weight_decay"], 0.0
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        self.optimizer.step()
        for group in self.optimizer.param_groups:
            group["lr"], group["weight_decay"] = OPTIMIZER["learning_rate"], group.pop("saved_wd")
            for state in self.optimizer.state.values():
                state["step"].zero_()
        self.optimizer.zero_grad(set_to_none=True)
