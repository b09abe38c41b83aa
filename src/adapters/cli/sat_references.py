"""What ``adapters verify`` compares for each SAT family that transformers also implements, on one random input.

* llama, mixtral, gpt2, glm: logits (causal mask) vs ``AutoModelForCausalLM``.
* bert, roberta: the last hidden state, and the pooler output when the file has a pooler, vs ``AutoModel``
  (``BertModel``, ``RobertaModel``); MLM logits, when the file has the head, vs ``AutoModelForMaskedLM``.
* vit: the last hidden state vs ``AutoModel`` (``ViTModel``); classifier logits, when the file has them, vs
  ``AutoModelForImageClassification``.
* clip: both towers' projected embeddings (SAT's `CLIP` shim) vs ``CLIPModel.get_image_features`` /
  ``get_text_features``.

The SAT side is `adapters.sat.hf_outputs`.

Inputs: ``tokens`` random ids (BERT also random token types; RoBERTa ids above the pad id, HF's positions from
``pad_token_id + 1``; CLIP ids ending in the EOS, which SAT pools as the last position), or one random image of the
config's size. Each function returns the named output pairs, the transformers side (class and outputs) and the
input.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .output import CLIError

__all__ = ["COMPARE", "Compared", "Pairs"]

Pairs = list[tuple[str, torch.Tensor, torch.Tensor]]  # (output name, SAT's, transformers')
Compared = tuple[Pairs, str, str]  # the pairs, the transformers side, the input


def _ids(low: int, high: int, tokens: int, seed: int) -> torch.Tensor:
    return torch.randint(low, high, (1, tokens), generator=torch.Generator().manual_seed(seed))


def _reference(auto: str, path: Path, **kwargs) -> nn.Module:
    import transformers

    return getattr(transformers, auto).from_pretrained(path, dtype=torch.float32, **kwargs).eval()


def _fits(tokens: int, limit: int, path: Path) -> None:
    if tokens > limit:
        raise CLIError(f"{path}: --tokens {tokens} is more than the model's {limit} positions\n"
                       f"  hint: pass --tokens {limit} or fewer")  # fmt: skip


def _causal(path: Path, model: nn.Module, ckpt, tokens: int, seed: int) -> Compared:
    ids = _ids(0, ckpt.require("vocab_size"), tokens, seed)
    reference = _reference("AutoModelForCausalLM", path)
    with torch.no_grad():
        ours = model(input_ids=ids, position_ids=torch.arange(tokens)[None],
                     attention_mask=torch.ones(1, 1, tokens, tokens).tril())[0]  # fmt: skip
        theirs = reference(input_ids=ids).logits
    return [("logits", ours, theirs)], type(reference).__name__, f"{tokens} tokens"


def _encoder(path: Path, model: nn.Module, ckpt, tokens: int, seed: int) -> Compared:
    from ..sat.hf_outputs import encoder_outputs

    vocab, positions = ckpt.require("vocab_size"), ckpt.require("max_position_embeddings")
    if ckpt.model_type == "roberta":  # HF numbers positions from pad + 1 (pads keep pad); random ids avoid the pad
        first = int(ckpt.get("pad_token_id", 1)) + 1
        _fits(tokens, positions - first, path)
        ids, types = _ids(first, vocab, tokens, seed), None
        position_ids = first + torch.arange(tokens)[None]
    else:
        _fits(tokens, positions, path)
        ids, position_ids = _ids(0, vocab, tokens, seed), torch.arange(tokens)[None]
        types = _ids(0, int(ckpt.get("type_vocab_size", 2)), tokens, seed + 1)
    ours = encoder_outputs(model, ids, position_ids, types)
    kw = {} if types is None else {"token_type_ids": types}
    base = _reference("AutoModel", path, add_pooling_layer="pooler_output" in ours)
    with torch.no_grad():
        theirs = base(input_ids=ids, **kw)
    names = [name for name in ("last_hidden_state", "pooler_output") if name in ours]
    pairs = [(name, ours[name], getattr(theirs, name)) for name in names]
    what = f"{type(base).__name__} ({', '.join(n for n, _, _ in pairs)})"
    if "logits" in ours:
        head = _reference("AutoModelForMaskedLM", path)
        with torch.no_grad():
            pairs.append(("logits", ours["logits"], head(input_ids=ids, **kw).logits))
        what += f" and {type(head).__name__} (logits)"
    return pairs, what, f"{tokens} tokens"


def _pixels(config: dict, seed: int) -> torch.Tensor:
    size = config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else size
    shape = (1, int(config.get("num_channels", 3)), height, width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _vit(path: Path, model: nn.Module, ckpt, tokens: int, seed: int) -> Compared:
    from ..sat.hf_outputs import vit_outputs

    pixels = _pixels(ckpt.config, seed)
    ours = vit_outputs(model, pixels)
    base = _reference("AutoModel", path, add_pooling_layer=False)
    with torch.no_grad():
        pairs = [("last_hidden_state", ours["last_hidden_state"], base(pixel_values=pixels).last_hidden_state)]
    what = f"{type(base).__name__} (last_hidden_state)"
    if "logits" in ours:
        head = _reference("AutoModelForImageClassification", path)
        with torch.no_grad():
            pairs.append(("logits", ours["logits"], head(pixel_values=pixels).logits))
        what += f" and {type(head).__name__} (logits)"
    return pairs, what, "1 random image"


def _clip(path: Path, model: nn.Module, ckpt, tokens: int, seed: int) -> Compared:
    from ..sat.hf_outputs import clip_embeddings

    text = ckpt.config.get("text_config") or {}
    _fits(tokens, int(text.get("max_position_embeddings", 77)), path)
    eos = int(text.get("eos_token_id", 2))
    ids = _ids(1, eos, tokens, seed)
    ids[:, -1] = eos  # SAT pools the last position, HF the first EOS: one EOS, at the end
    pixels = _pixels(ckpt.config.get("vision_config") or {}, seed)
    ours = clip_embeddings(model, pixels, ids)
    reference = _reference("CLIPModel", path)
    with torch.no_grad():
        image = reference.get_image_features(pixel_values=pixels)
        words = reference.get_text_features(input_ids=ids)
    # transformers 5 returns an output object whose pooler_output holds the projected features.
    pairs = [("image_embeds", ours["image_embeds"], getattr(image, "pooler_output", image)),
             ("text_embeds", ours["text_embeds"], getattr(words, "pooler_output", words))]  # fmt: skip
    return pairs, "CLIPModel (image_embeds, text_embeds)", f"1 random image and {tokens} tokens"


COMPARE: dict[str, Callable[..., Compared]] = {
    "llama": _causal, "mixtral": _causal, "gpt2": _causal, "glm": _causal,
    "bert": _encoder, "roberta": _encoder, "vit": _vit, "clip": _clip,
}  # fmt: skip
