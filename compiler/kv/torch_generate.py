"""Greedy generation with a torch decode callable and a preallocated cache.

``generate_torch(decode_fn, spec, prompt_ids, ...)`` returns prompt + new ids [B, L + n] like
transformers' greedy ``generate`` (no stop at an end-of-sequence token), the same as the ONNX
Runtime loop (``graphopt.kv.generate``). ``decode_fn`` follows the decoder-with-past contract
(``graphopt.kv.spec``; e.g. ``torch_path.decode_callable``): called with the contract's inputs by
name, it returns a dict by output name, or a tuple in the contract's output order.

Prompts of different lengths are LEFT-padded with 0 and masked; position ids are
``cumsum(mask) - 1`` clipped at 0. The prompt is one call with past length 0, then one call per
new token. The cache is one buffer [B, num_kv_heads, L + n - 1, head_size] per past input,
allocated once: each call gets views of its filled part as ``past_key_values.*``, and the new
rows of ``present.*`` are copied into the buffer after it. The token matrix and the mask are
allocated once too; tokens stay on the device (no host sync per step).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import GraphOptError
from .generate import _check_lengths, prepare_prompts
from .spec import IO, CacheSpec

if TYPE_CHECKING:
    import torch

Progress = Callable[[int, int], None]


class PreallocatedCache:
    """One buffer per past input name, [B, Hkv, capacity, D]; ``filled`` slots are valid."""

    def __init__(self, spec: CacheSpec, batch: int, capacity: int, device: Any) -> None:
        import torch

        self.spec = spec
        dt = getattr(torch, spec.dtype)
        shape = (batch, spec.num_kv_heads, capacity, spec.head_size)
        self.buffers = {p: torch.zeros(shape, dtype=dt, device=device) for p in IO.pasts(spec)}
        self.filled = 0

    @property
    def capacity(self) -> int:
        return next(iter(self.buffers.values())).shape[2]

    def past(self) -> dict[str, "torch.Tensor"]:
        """Views of the filled slots, by past input name."""
        return {p: b[:, :, :self.filled] for p, b in self.buffers.items()}

    def append(self, presents: list["torch.Tensor"], stop: int) -> None:
        """Copy slots [filled, stop) of each present (past + new) into the buffers."""
        if stop > self.capacity:
            raise GraphOptError(f"the cache holds {self.capacity} tokens; {stop} requested")
        for (p, b), x in zip(self.buffers.items(), presents):
            if x.shape[2] != stop or x.shape[:2] != b.shape[:2] or x.shape[3] != b.shape[3]:
                raise GraphOptError(f"{p}: the decode function's present has shape "
                                    f"{list(x.shape)}, expected {[*b.shape[:2], stop, b.shape[3]]}"
                                    f" (past + new along axis 2)", where="kv.generate_torch")
            b[:, :, self.filled:stop].copy_(x[:, :, self.filled:stop])
        self.filled = stop


def _split(out: Any, spec: CacheSpec) -> tuple["torch.Tensor", list["torch.Tensor"]]:
    """(logits, presents in ``IO.presents`` order) from a decode function's result."""
    if isinstance(out, Mapping):
        missing = [n for n in IO.outputs(spec) if n not in out]
        if missing:
            raise GraphOptError(f"the decode function returned no {missing}; it returned "
                                f"{list(out)}", where="kv.generate_torch")
        return out[IO.LOGITS], [out[n] for n in IO.presents(spec)]
    if isinstance(out, (tuple, list)) and len(out) >= 1 + 2 * spec.num_layers:
        return out[0], list(out[1:1 + 2 * spec.num_layers])
    raise GraphOptError(f"the decode function must return a dict by output name or a tuple "
                        f"(logits, present.0.key, present.0.value, ...); got "
                        f"{type(out).__name__}", where="kv.generate_torch")


def _device(decode_fn: Any, prompt_ids: Any) -> Any:
    import torch

    if isinstance(decode_fn, torch.nn.Module):
        for t in (*decode_fn.buffers(), *decode_fn.parameters()):
            return t.device
    if isinstance(prompt_ids, torch.Tensor):
        return prompt_ids.device
    return torch.device("cpu")


def _numpy(x: Any) -> Any:
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def generate_torch(decode_fn: Callable[..., Any], spec: CacheSpec, prompt_ids: Any,
                   attention_mask: Any = None, max_new_tokens: int = 32, *, device: Any = None,
                   progress: Progress | None = None) -> "torch.Tensor":
    """Greedy generation: prompt + ``max_new_tokens`` new ids, int64 [B, L + n] on ``device``
    (default: the device of ``decode_fn``'s buffers when it is a module, else the prompt's).

    ``prompt_ids``: [B, L] ints (tensor, array or lists), or prompts of different lengths
    (left-padded with 0 and masked); ``attention_mask`` (given) wins over the padding mask.
    ``progress(done, total)`` is called after every new token."""
    import torch

    ids_np, mask_np = prepare_prompts(_numpy(prompt_ids), _numpy(attention_mask), spec)
    b, l = ids_np.shape
    _check_lengths(spec, l, max_new_tokens)
    dev = torch.device(device) if device is not None else _device(decode_fn, prompt_ids)
    n = int(max_new_tokens)
    ids = torch.zeros((b, l + n), dtype=torch.int64, device=dev)
    mask = torch.ones((b, l + n), dtype=torch.int64, device=dev)
    ids[:, :l] = torch.from_numpy(ids_np)
    mask[:, :l] = torch.from_numpy(mask_np)
    if n == 0:
        return ids
    cache = PreallocatedCache(spec, b, l + n - 1, dev)
    count = mask[:, :l].sum(1)  # real tokens so far per row: the next position
    positions = (mask[:, :l].cumsum(1) - 1).clamp(min=0)
    start, stop = 0, l
    with torch.inference_mode():
        for k in range(n):
            out = decode_fn(**{IO.INPUT_IDS: ids[:, start:stop],
                               IO.ATTENTION_MASK: mask[:, :stop],
                               IO.POSITION_IDS: positions}, **cache.past())
            logits, presents = _split(out, spec)
            ids[:, stop] = logits[:, -1].argmax(-1)
            if progress is not None:
                progress(k + 1, n)
            if k + 1 == n:
                break
            cache.append(presents, stop)
            positions = count[:, None].clone()
            count += 1
            start, stop = stop, stop + 1
    return ids

