"""Small models shared by tests: transformers GPT-2, BERT, Llama (GQA), Mistral (sliding window),
T5 (encoder-decoder), ViT, transformers' ResNet and a hand-written ResNet-style CNN.

Every builder returns ``(module, example_inputs, input_names)``: ``module`` is in eval mode and
returns a tuple of tensors; its forward's argument names are ``input_names``. Weights are random
(seeded), configs tiny, nothing is read from or written to disk.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

Built = tuple[nn.Module, tuple[torch.Tensor, ...], tuple[str, ...]]

BATCH = 2
SEQ = 8
VOCAB = 128


def _tokens(seed: int, batch: int = BATCH, seq: int = SEQ, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def _padded_mask(batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    """An attention mask with right padding on the last row (so masking matters)."""
    m = torch.ones(batch, seq, dtype=torch.int64)
    m[-1, seq - 2:] = 0
    return m


def _hf(model_cls: Any, config: Any, attn: str) -> nn.Module:
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = model_cls(config)
    model.eval()
    return model


class _Wrapper(nn.Module):
    """Holds a transformers model (in eval mode) and returns a tuple of tensors."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.eval()


class _DecoderLM(_Wrapper):
    """input_ids, attention_mask -> (logits,)"""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         return_dict=False)
        return (out[0],)


def gpt2(attn: str = "eager") -> Built:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    m = _DecoderLM(_hf(GPT2LMHeadModel, cfg, attn))
    return m, (_tokens(1), _padded_mask()), ("input_ids", "attention_mask")


def llama(attn: str = "eager") -> Built:
    """Llama with grouped-query attention (4 query heads over 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64)
    m = _DecoderLM(_hf(LlamaForCausalLM, cfg, attn))
    return m, (_tokens(2), _padded_mask()), ("input_ids", "attention_mask")


def mistral(attn: str = "eager") -> Built:
    """Mistral with a sliding window shorter than the sequence (so the window matters)."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=64, sliding_window=4)
    m = _DecoderLM(_hf(MistralForCausalLM, cfg, attn))
    return m, (_tokens(3), _padded_mask()), ("input_ids", "attention_mask")


class _Encoder(_Wrapper):
    """input_ids, attention_mask -> (last_hidden_state, pooler_output)"""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
        return tuple(out[:2])


def bert(attn: str = "eager") -> Built:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    m = _Encoder(_hf(BertModel, cfg, attn))
    return m, (_tokens(4), _padded_mask()), ("input_ids", "attention_mask")


class _Seq2Seq(_Wrapper):
    """input_ids, attention_mask, decoder_input_ids -> (logits,)"""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         decoder_input_ids=decoder_input_ids, use_cache=False, return_dict=False)
        return (out[0],)


def t5(attn: str = "eager") -> Built:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                   num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                   relative_attention_max_distance=16, decoder_start_token_id=0)
    m = _Seq2Seq(_hf(T5ForConditionalGeneration, cfg, attn))
    dec = _tokens(5, seq=SEQ - 2)
    return m, (_tokens(6), _padded_mask(), dec), ("input_ids", "attention_mask",
                                                   "decoder_input_ids")


class _Vision(_Wrapper):
    """pixel_values -> (last hidden state or feature map, pooled output)"""

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(pixel_values=pixel_values, return_dict=False)
        return tuple(out[:2])


def _pixels(seed: int, size: int, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, channels, size, size, generator=g)


def vit(attn: str = "eager") -> Built:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=16, patch_size=4, num_channels=3)
    m = _Vision(_hf(ViTModel, cfg, attn))
    return m, (_pixels(7, 16),), ("pixel_values",)


def hf_resnet() -> Built:
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                       depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    inner = ResNetModel(cfg)
    _randomize_bn(inner)
    inner.eval()
    return _Vision(inner), (_pixels(8, 32),), ("pixel_values",)


def _randomize_bn(m: nn.Module) -> None:
    """Give batch norms non-trivial statistics (fresh ones are identity maps)."""
    g = torch.Generator().manual_seed(123)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))
                                if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet-style CNN: stem conv + max pool, two residual stages, average pool, linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.stage1 = _Block(8, 8, 1)
        self.stage2 = _Block(8, 16, 2)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.pool(torch.relu(self.stem(x)))
        y = self.stage2(self.stage1(y))
        feat = nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)
        return (self.head(feat),)


def resnet() -> Built:
    torch.manual_seed(0)
    m = SmallResNet()
    _randomize_bn(m)
    m.eval()
    return m, (_pixels(9, 16),), ("x",)


# name -> builder; "<name>_sdpa" variants use scaled_dot_product_attention
BUILDERS: dict[str, Callable[[], Built]] = {
    "gpt2": gpt2,
    "gpt2_sdpa": lambda: gpt2("sdpa"),
    "bert": bert,
    "bert_sdpa": lambda: bert("sdpa"),
    "llama": llama,
    "llama_sdpa": lambda: llama("sdpa"),
    "mistral": mistral,
    "mistral_sdpa": lambda: mistral("sdpa"),
    "t5": t5,
    "t5_sdpa": lambda: t5("sdpa"),
    "vit": vit,
    "vit_sdpa": lambda: vit("sdpa"),
    "resnet": resnet,
    "hf_resnet": hf_resnet,
}


def build(name: str) -> Built:
    if name not in BUILDERS:
        raise KeyError(f"no test model {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name]()
