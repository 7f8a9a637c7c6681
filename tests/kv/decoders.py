"""Hand-made torch decoders for the KV-cache legality tests, and ONNX exports of any test model.

``TinyDecoder(variant)`` is a one-block decoder (token + learned position embedding, attention
over a bool keep mask built from the sequence length and the attention_mask, an output
projection, a norm and the LM head) whose ``variant`` puts one thing in that a KV cache cannot
take or that it must measure:

* ``"causal"``: legal (keys j <= i, padding from attention_mask);
* ``"window"``: legal, a sliding window of ``WINDOW`` keys;
* ``"no_padding"``: legal, keys j <= i whatever the attention_mask says;
* ``"cumsum"``, ``"mean"``, ``"conv"``: a cumsum over the sequence, a mean over the sequence
  added to the hidden state, a conv1d along the sequence, on the token stream;
* ``"softmax_seq"``: an unfused attention whose softmax runs over the query (sequence) axis;
* ``"bidirectional"``: every real key (an encoder's mask);
* ``"alibi"``: an additive ALiBi-style bias of -(i - j) on the kept scores.

``ExtraInputDecoder`` takes a third input (``segment_ids``) that no generation loop feeds.
``export(module, inputs, names, exporter)`` writes ONNX with the torch exporters: "legacy"
(``dynamic_axes``), "dynamo" (``dynamic_shapes``) or "static" (no dynamic axes).
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import onnx
import torch
from torch import nn

VOCAB, HIDDEN, HEADS, CONTEXT, WINDOW = 32, 16, 2, 32, 3
VARIANTS = ("causal", "window", "no_padding", "cumsum", "mean", "conv", "softmax_seq",
            "bidirectional", "alibi")


def tokens(batch: int = 2, seq: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and an attention_mask with right padding on the last row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq - 2:] = 0
    return ids, mask


class TinyDecoder(nn.Module):
    """input_ids, attention_mask -> (logits,), with the module docstring's ``variant``."""

    def __init__(self, variant: str = "causal") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        self.variant = variant
        torch.manual_seed(0)
        self.tok = nn.Embedding(VOCAB, HIDDEN)
        self.pos = nn.Embedding(CONTEXT, HIDDEN)
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.proj = nn.Linear(HIDDEN, HIDDEN)
        self.conv = nn.Conv1d(HIDDEN, HIDDEN, 3, padding=1)
        self.norm = nn.LayerNorm(HIDDEN)
        self.lm = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.eval()

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(s, device=input_ids.device)[None])
        if self.variant == "cumsum":
            x = x.cumsum(1)
        elif self.variant == "mean":
            x = x + x.mean(1, keepdim=True)
        elif self.variant == "conv":
            x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        return x

    def keep(self, attention_mask: torch.Tensor, s: int) -> torch.Tensor:
        """keep[b, 1, i, j] (bool)."""
        i = torch.arange(s)[:, None]
        j = torch.arange(s)[None, :]
        keep = j <= i
        if self.variant == "window":
            keep = keep & (j > i - WINDOW)
        if self.variant == "bidirectional":
            keep = torch.ones(s, s, dtype=torch.bool)
        if self.variant == "no_padding":
            return keep[None, None]
        return keep[None, None] & attention_mask[:, None, None, :].bool()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        x = self.embed(input_ids)
        b, s, _ = x.shape
        q, k, v = (t.reshape(b, s, HEADS, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        keep = self.keep(attention_mask, s)
        if self.variant == "softmax_seq":
            scores = (q @ k.transpose(-1, -2)).masked_fill(~keep, -1e4)
            o = torch.softmax(scores, dim=-2) @ v
        elif self.variant == "alibi":
            i = torch.arange(s)[:, None]
            j = torch.arange(s)[None, :]
            bias = torch.where(keep, -(i - j).to(q.dtype), torch.finfo(q.dtype).min)
            o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        o = o.transpose(1, 2).reshape(b, s, HIDDEN)
        return (self.lm(self.norm(x + self.proj(o))),)


class ExtraInputDecoder(TinyDecoder):
    """A causal TinyDecoder with a third input, ``segment_ids``, added to the embeddings."""

    def __init__(self) -> None:
        super().__init__("causal")
        self.seg = nn.Embedding(2, HIDDEN)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,  # type: ignore
                segment_ids: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.embed(input_ids) + self.seg(segment_ids)
        b, s, _ = x.shape
        q, k, v = (t.reshape(b, s, HEADS, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        o = nn.functional.scaled_dot_product_attention(q, k, v,
                                                       attn_mask=self.keep(attention_mask, s))
        o = o.transpose(1, 2).reshape(b, s, HIDDEN)
        return (self.lm(self.norm(x + self.proj(o))),)


def tiny(variant: str = "causal") -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]:
    """A TinyDecoder with example inputs and input names (the tests.models convention)."""
    return TinyDecoder(variant), tokens(), ("input_ids", "attention_mask")


def extra_input() -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]:
    ids, mask = tokens()
    return ExtraInputDecoder(), (ids, mask, torch.zeros_like(ids)), (
        "input_ids", "attention_mask", "segment_ids")


class _Encoder(nn.Module):
    """A transformers encoder without its pooler: input_ids, attention_mask ->
    (last_hidden_state,)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor]:
        return (self.inner(input_ids=input_ids, attention_mask=attention_mask,
                           return_dict=False)[0],)


def bert_encoder() -> tuple[nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]:
    """tests.models' BERT returning its hidden states only (no pooler reading token 0): its
    one reason to be refused is its bidirectional attention."""
    from tests import models

    module, inputs, names = models.bert("sdpa")
    return _Encoder(module.inner), inputs, names


def export(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...],
           exporter: str) -> onnx.ModelProto:
    """``module`` as ONNX with output ``logits``: exporter "legacy" (dynamic_axes batch and
    seq), "dynamo" (dynamic_shapes) or "static" (the example's shapes)."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                from torch.export import Dim

                batch, seq = Dim("batch", max=64), Dim("seq", max=512)
                shapes = {n: {0: batch, 1: seq} for n in names}
                return torch.onnx.export(module, inputs, dynamo=True, input_names=list(names),
                                         output_names=["logits"], dynamic_shapes=shapes,
                                         verbose=False).model_proto
            if exporter not in ("legacy", "static"):
                raise ValueError(f"unknown exporter {exporter!r}")
            axes: Any = {n: {0: "batch", 1: "seq"} for n in names} \
                if exporter == "legacy" else None
            f = io.BytesIO()
            torch.onnx.export(module, inputs, f, dynamo=False, input_names=list(names),
                              output_names=["logits"], dynamic_axes=axes, opset_version=17)
            return onnx.load_from_string(f.getvalue())
    finally:
        logging.disable(logging.NOTSET)
