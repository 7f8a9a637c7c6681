"""A local Hugging Face ``transformers`` model folder (``config.json`` + weights, as written by
``save_pretrained``) -> a torch module, example inputs and dynamic axes for the PyTorch frontend.

``resolve_folder(path, task, batch, seq)`` reads the config with ``AutoConfig`` and builds the
model with ``from_pretrained(path, local_files_only=True)`` (nothing is downloaded; a folder
whose weights or code need the network is an error). The model class is

* the task's ``AutoModelFor...`` when ``task`` is given (:data:`TASKS`), else
* the config's first ``architectures`` entry (the class that wrote the folder), its task read
  from the class name (``...ForCausalLM`` -> causal-lm, ...); a config without
  ``architectures`` needs ``task``.

The module returned wraps the model in inference form (``eval``, ``return_dict=False``,
``use_cache=False``) and returns a tuple of tensors; its forward takes the model's main inputs:
``input_ids, attention_mask`` for text, plus ``decoder_input_ids`` for encoder-decoders,
``pixel_values`` for vision models. Example inputs: ``batch`` x ``seq`` token ids drawn from the
vocabulary (seeded), an attention mask with the last row right-padded, images of the config's
size. Dynamic axes (the PyTorch frontend's ``{input: {axis: symbol}}``, exported as
``torch.export`` ``Dim.AUTO``): batch (axis 0) and sequence (axis 1 of token inputs); an axis
whose example size is 1 stays static (``torch.export`` specializes size-1 dims).

``load_folder(path, task, batch, seq, dynamic)`` is what ``graphopt.optimize(DIR)`` and
``graphopt optimize DIR`` take: with static shapes the module and its example inputs (graphopt's
PyTorch frontend lifts it, the check runs the module itself); with dynamic shapes an
``onnx.ModelProto`` exported by ``torch.onnx.export(dynamo=True)`` (``torch.export`` with the
axes as ``Dim``, then ONNX; graphopt's ONNX frontend tracks the symbolic shape computations),
because graphopt's PyTorch frontend keeps calls over symbolic sizes (``arange(seq)`` position
ids, slices of position buffers up to ``seq``) as aten calls that have no ONNX form.
"""
from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from ..errors import FrontendError

if TYPE_CHECKING:
    import torch

# task -> transformers auto class
TASKS = {
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
    "feature-extraction": "AutoModel",
}
# class-name suffix -> task, for configs' ``architectures`` (first match wins)
SUFFIXES = (("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"),
            ("ForMaskedLM", "masked-lm"), ("ForConditionalGeneration", "seq2seq-lm"),
            ("ForSequenceClassification", "sequence-classification"),
            ("ForTokenClassification", "token-classification"),
            ("ForQuestionAnswering", "question-answering"),
            ("ForImageClassification", "image-classification"), ("Model", "feature-extraction"))
Dynamic = dict[str, dict[int, str]]


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding a ``config.json`` (a transformers model folder)."""
    p = os.fspath(path)
    return os.path.isdir(p) and os.path.isfile(os.path.join(p, "config.json"))


def guess_task(architectures: list[str] | None) -> str | None:
    """The task a config's first architecture class stands for (None: no architectures, or a
    class name no suffix of :data:`SUFFIXES` matches)."""
    if not architectures:
        return None
    for suffix, task in SUFFIXES:
        if architectures[0].endswith(suffix):
            return task
    return None


def resolve_folder(path: str | os.PathLike[str], task: str | None = None, batch: int = 2,
                   seq: int = 16, dynamic: bool = True
                   ) -> tuple["torch.nn.Module", tuple["torch.Tensor", ...], Dynamic | None]:
    """``(module, example_inputs, dynamic_axes)`` for the model folder at ``path`` (see the
    module docstring); ``dynamic_axes`` is None when ``dynamic`` is False."""
    folder = os.fspath(path)
    if not is_model_folder(folder):
        raise FrontendError("not a transformers model folder (no config.json)", where=folder)
    if batch < 1 or seq < 1:
        raise FrontendError(f"batch and seq must be >= 1 (got {batch}, {seq})", where=folder)
    model, task = _load(folder, task)
    wrapper = wrapper_classes()[_input_kind(model)](model, task)
    example = _example_inputs(model, wrapper.input_names, batch, seq, folder)
    axes = None
    if dynamic:
        axes = {}
        for name, x in zip(wrapper.input_names, example):
            ax = {a: sym for a, sym in ((0, "batch"), (1, _seq_symbol(name)))
                  if a < x.dim() and x.shape[a] > 1 and (a == 0 or name != "pixel_values")}
            if ax:
                axes[name] = ax
    return wrapper, example, axes


def load_folder(path: str | os.PathLike[str], task: str | None = None, batch: int = 2,
                seq: int = 16, dynamic: bool = True) -> tuple[Any, tuple[Any, ...] | None]:
    """``(model, example_inputs)`` for ``graphopt.optimize``: the module and its example
    inputs (``dynamic=False``), or the ONNX export with dynamic batch / sequence axes and None
    (see the module docstring)."""
    module, example, axes = resolve_folder(path, task, batch, seq, dynamic)
    if not axes:
        return module, example
    return export_onnx(module, example, axes, where=os.fspath(path)), None


def export_onnx(module: "torch.nn.Module", example: tuple["torch.Tensor", ...], axes: Dynamic,
                where: str = "") -> Any:
    """``module`` as an ``onnx.ModelProto`` through ``torch.onnx.export(dynamo=True)``: inputs
    named after the forward's arguments, ``axes`` as ``torch.export`` dims named by their
    symbols (equal symbols are one dim)."""
    import torch
    from torch.export import Dim

    dims: dict[str, Any] = {}
    names = list(getattr(module, "input_names", ()))
    shapes = {n: {a: dims.setdefault(sym, Dim(sym)) for a, sym in axes.get(n, {}).items()}
              or None for n in names}
    try:
        with torch.no_grad():
            program = torch.onnx.export(module, example, dynamic_shapes=shapes, dynamo=True,
                                        input_names=names, verbose=False)
    except Exception as e:  # noqa: BLE001 - torch.export / the ONNX translation failed
        raise FrontendError(f"torch.onnx.export (dynamo, dynamic axes {axes}) failed: "
                            f"{_first_line(e)}; static shapes (--static) go through graphopt's "
                            f"PyTorch frontend instead", where=where or type(module).__name__
                            ) from e
    return program.model_proto


def _seq_symbol(name: str) -> str:
    return "decoder_seq" if name.startswith("decoder_") else "seq"


def _load(folder: str, task: str | None) -> tuple[Any, str]:
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError / ValueError / KeyError
        raise FrontendError(f"transformers cannot read config.json: {_first_line(e)}",
                            where=folder) from e
    archs = list(getattr(config, "architectures", None) or [])
    if task is not None:
        if task not in TASKS:
            raise FrontendError(f"unknown task {task!r}; known: {', '.join(TASKS)}",
                                where=folder)
        cls = getattr(transformers, TASKS[task])
    else:
        task = guess_task(archs)
        cls = getattr(transformers, archs[0], None) if archs else None
        if task is None or cls is None:
            raise FrontendError(f"cannot tell the task from config.json (architectures: "
                                f"{archs or 'none'}); give one of {', '.join(TASKS)} (--task)",
                                where=folder)
    try:
        model = cls.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - missing weights, unknown model type, remote code
        raise FrontendError(f"{cls.__name__}.from_pretrained failed: {_first_line(e)}",
                            where=folder) from e
    model.eval()
    return model, task


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _example_inputs(model: Any, names: tuple[str, ...], batch: int, seq: int, folder: str
                    ) -> tuple["torch.Tensor", ...]:
    import torch

    cfg = model.config
    g = torch.Generator().manual_seed(0)
    limit = _max_positions(cfg)
    if limit is not None and seq > limit and "input_ids" in names:
        raise FrontendError(f"seq {seq} is longer than the model's {limit} positions",
                            where=folder)
    out: list[torch.Tensor] = []
    for name in names:
        if name == "pixel_values":
            size = getattr(cfg, "image_size", 224)
            hw = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
            out.append(torch.randn(batch, getattr(cfg, "num_channels", 3), *hw, generator=g))
        elif name == "attention_mask":
            mask = torch.ones(batch, seq, dtype=torch.int64)
            if batch > 1 and seq > 2:
                mask[-1, seq - 2:] = 0  # right padding on the last row: the mask matters
            out.append(mask)
        else:  # input_ids, decoder_input_ids
            vocab = int(getattr(cfg, "vocab_size", 0) or 0)
            if vocab < 1:
                raise FrontendError("config has no vocab_size to draw token ids from",
                                    where=folder)
            out.append(torch.randint(0, vocab, (batch, seq), generator=g))
    return tuple(out)


def _max_positions(cfg: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _input_kind(model: Any) -> str:
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        return "vision"
    if getattr(model.config, "is_encoder_decoder", False):
        return "seq2seq"
    return "text"


@functools.lru_cache(maxsize=None)
def wrapper_classes() -> dict[str, type]:
    """The wrappers by input kind ("text", "seq2seq", "vision"): ``nn.Module`` subclasses
    whose forward names the model's main inputs (the frontend names graph inputs after them),
    defined on first use (importing this module does not import torch)."""
    import torch

    class FolderModel(torch.nn.Module):
        """A transformers model in inference form, a tuple of tensors out."""

        input_names: tuple[str, ...] = ()

        def __init__(self, model: Any, task: str) -> None:
            super().__init__()
            self.model = model
            self.task = task
            self.eval()

        def run(self, **kwargs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if getattr(self.model.config, "use_cache", None) is not None:
                kwargs["use_cache"] = False  # type: ignore[assignment]
            out = self.model(**kwargs, return_dict=False)
            leaves = out if isinstance(out, (tuple, list)) else (out,)
            return tuple(x for x in leaves if isinstance(x, torch.Tensor))

    class TextModel(FolderModel):
        input_names = ("input_ids", "attention_mask")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
            return self.run(input_ids=input_ids, attention_mask=attention_mask)

    class Seq2SeqModel(FolderModel):
        input_names = ("input_ids", "attention_mask", "decoder_input_ids")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    decoder_input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.run(input_ids=input_ids, attention_mask=attention_mask,
                            decoder_input_ids=decoder_input_ids)

    class VisionModel(FolderModel):
        input_names = ("pixel_values",)

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return self.run(pixel_values=pixel_values)

    return {"text": TextModel, "seq2seq": Seq2SeqModel, "vision": VisionModel}
