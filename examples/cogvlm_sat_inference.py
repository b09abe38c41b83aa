"""CogVLM's SAT chat demo (``basic_demo/cli_demo_sat.py``), one turn, on an HF CogVLM checkpoint.

    python examples/cogvlm_sat_inference.py [--from_pretrained HF_FOLDER_OR_HUB_ID] [--local_tokenizer PATH_OR_ID]
                                            [--image FILE] [--query TEXT] [--max_new_tokens N] [--bf16 | --fp16]

The model is loaded the way the CogVLM demo loads a SAT checkpoint: ``AutoModel.from_pretrained(name, args=<the
demo's namespace>)``, then ``CachedAutoregressiveMixin`` and SAT's ``filling_sequence``. The one added line is
``import adapters.sat``; with it ``--from_pretrained THUDM/cogvlm-chat-hf`` (or a local copy) loads the HF weights.
The demo then reads what it reads from a SAT checkpoint: ``model_args.text_processor_version``,
``model_args.eva_args["image_size"][0]``, ``model.image_length``, and for CogAgent (``THUDM/cogagent-chat-hf``)
``model_args.cross_image_pix``, the side of the high-resolution copy of the image it feeds as ``cross_*`` inputs.

Defaults need no download: without ``--from_pretrained`` a tiny random HF CogVLM is written to a temporary folder
(`adapters.sat.tiny.write_tiny_cogvlm`); without ``--local_tokenizer`` a character-level stand-in replaces the
Vicuna tokenizer (real checkpoints: ``--local_tokenizer lmsys/vicuna-7b-v1.5``, as in the demo); without ``--image``
the image is a seeded random tensor. The prompt is built as the demo's ``llama2_text_processor_inference`` builds it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from functools import partial
from pathlib import Path

import torch
from sat.generation.autoregressive_sampling import filling_sequence
from sat.generation.sampling_strategies import BaseStrategy
from sat.model import AutoModel
from sat.model.mixins import CachedAutoregressiveMixin

import adapters.sat  # noqa: F401  (the one added line: SAT's from_pretrained now also takes HF checkpoints)

# The demo's prompt formats (``utils/utils/language.py``); "<EOI>" marks where the image goes.
PROMPTS = {
    "base": lambda query, history: "<EOI>" + query,
    "chat": lambda query, history: "<EOI> [INST] " + "".join(f"{q} [/INST] {r} [INST] " for q, r in history)
    + query + " [/INST] ",
    "vqa": lambda query, history: "<EOI>Question: " + query + " Short answer:",
    "chat_old": lambda query, history: "<EOI>Question: " + "".join(f"{q} Answer: {r}\nQuestion: " for q, r in history)
    + query + " Answer:",
}  # fmt: skip
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's options (same names and defaults where they apply), plus the one-turn inputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max_length", type=int, default=2048, help="max length of the total sequence")
    parser.add_argument("--top_p", type=float, default=0.4, help="top p for nucleus sampling")
    parser.add_argument("--top_k", type=int, default=1, help="top k for top k sampling")
    parser.add_argument("--temperature", type=float, default=0.8, help="temperature for sampling")
    parser.add_argument("--version", type=str, default="chat", choices=list(PROMPTS),
                        help="prompt format, unless the checkpoint names one (text_processor_version)")  # fmt: skip
    parser.add_argument("--from_pretrained", type=str, default=None, help="HF checkpoint (default: a tiny one)")
    parser.add_argument("--local_tokenizer", type=str, default=None, help="tokenizer (default: a char stand-in)")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--image", type=str, default=None, help="image file (default: a random image)")
    parser.add_argument("--query", type=str, default="Describe this image.")
    parser.add_argument("--max_new_tokens", type=int, default=8)
    return parser.parse_args(argv)


def load(args: argparse.Namespace):
    """The demo's model loading, verbatim but for the device (CPU when there is no GPU): ``(model, model_args)``."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available()
    model, model_args = AutoModel.from_pretrained(
        args.from_pretrained,
        args=argparse.Namespace(
            deepspeed=None, local_rank=rank, rank=rank, world_size=world_size, model_parallel_size=world_size,
            mode="inference", skip_init=True, use_gpu_initialization=cuda, device="cuda" if cuda else "cpu",
            **vars(args),
        ),
        overwrite_args={"model_parallel_size": world_size} if world_size != 1 else {},
    )  # fmt: skip
    return model.eval(), model_args


class CharTokenizer:
    """Stand-in for the Vicuna tokenizer with a tiny random checkpoint: one id per character (0 pad, 1 bos, 2 eos)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [3 + ord(c) % (self.vocab_size - 3) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(32 + (i - 3) % 95) for i in ids if i >= 3)


def tokenizer_for(args: argparse.Namespace, model_args: argparse.Namespace):
    if args.local_tokenizer is None:
        return CharTokenizer(model_args.vocab_size)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.local_tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 32000  # as the demo's llama2_tokenizer
    return tokenizer


def image_inputs(path: str | None, size: int, dtype: torch.dtype, device) -> dict:
    """The demo's image inputs (``vision_*`` after prefixing): ``[1, 3, size, size]`` CLIP-normalised pixels."""
    if path is None:
        pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    else:
        from PIL import Image

        image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
        pixels = (
            torch.tensor(list(image.getdata()), dtype=torch.float32).view(1, size, size, 3).permute(0, 3, 1, 2) / 255
        )
    pixels = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return {"image": pixels.to(device, dtype), "input_ids": torch.zeros(1, 1, dtype=torch.long, device=device),
            "position_ids": None, "attention_mask": torch.ones(1, 1, dtype=torch.long, device=device)}  # fmt: skip


def text_inputs(tokenizer, prompt: str, image_length: int) -> dict:
    """``input_ids`` with ``image_length + 2`` image slots at "<EOI>" (boi, patches, eoi), and the demo's masks."""
    before, _, after = prompt.partition("<EOI>")
    head = [tokenizer.bos_token_id] + tokenizer.encode(before, add_special_tokens=False)
    ids = head + [0] * (image_length + 2) + tokenizer.encode(after, add_special_tokens=False)
    start = len(head)
    masks = {name: torch.zeros(1, len(ids), dtype=torch.long) for name in
             ("image_embed_mask", "vision_expert_mask", "image_rope_mask")}  # fmt: skip
    masks["image_embed_mask"][0, start : start + image_length + 2] = 1  # boi .. eoi
    masks["vision_expert_mask"][0, start : start + image_length + 1] = 1  # boi .. last patch
    masks["image_rope_mask"][0, start + 1 : start + image_length + 1] = 1  # the patches: one shared position
    return {"input_ids": torch.tensor([ids]), **masks}


def masks_and_positions(seq: torch.Tensor, image_rope_mask: torch.Tensor):
    """The demo's ``get_masks_and_position_ids``: causal mask; a run of patches shares one position id."""
    tokens = seq.unsqueeze(0)
    attention_mask = torch.ones(1, 1, len(seq), len(seq), device=seq.device).tril()
    flags = image_rope_mask[0].tolist()
    positions, pid = [], -1
    for i, flag in enumerate(flags):
        pid += 1 if flag == 0 or (i > 0 and flag != flags[i - 1]) else 0
        positions.append(pid)
    positions += range(pid + 1, pid + 1 + len(seq) - len(flags))
    return tokens, attention_mask, torch.tensor([positions], device=seq.device)


def chat_turn(model, model_args, tokenizer, args: argparse.Namespace) -> dict:
    """One turn of the demo's ``chat``: prompt, image, ``filling_sequence`` with the KV cache; the tokens it made."""
    version = getattr(model_args, "text_processor_version", args.version)
    prompt = PROMPTS[version](args.query, [])
    parameter = next(model.parameters())
    image = image_inputs(args.image, model_args.eva_args["image_size"][0], parameter.dtype, parameter.device)
    inputs = {k: v.to(parameter.device) for k, v in text_inputs(tokenizer, prompt, model.image_length).items()}
    if getattr(model_args, "cross_image_pix", None) is not None:  # CogAgent: the picture again, at high resolution
        cross = image_inputs(args.image, model_args.cross_image_pix, parameter.dtype, parameter.device)
        inputs |= {"cross_" + k: v for k, v in cross.items()}
    input_ids = inputs.pop("input_ids")[0]
    seq = torch.cat([input_ids, torch.full((args.max_new_tokens,), -1, device=input_ids.device)])
    strategy = BaseStrategy(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            end_tokens=[tokenizer.eos_token_id])  # fmt: skip
    get_func = partial(masks_and_positions, image_rope_mask=inputs["image_rope_mask"])
    with torch.no_grad():
        output = filling_sequence(model, seq, batch_size=1, get_masks_and_position_ids=get_func, strategy=strategy,
                                  **{"vision_" + k: v for k, v in image.items()}, **inputs)[0]  # fmt: skip
    tokens = output[0].tolist()
    return {"prompt": prompt, "version": version, "prompt_ids": input_ids.tolist(), "tokens": tokens,
            "response": tokenizer.decode(tokens[len(input_ids):]), "pixels": image["image"],
            "image_embed_mask": inputs["image_embed_mask"]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.from_pretrained is None:
            from adapters.sat.tiny import write_tiny_cogvlm

            args.from_pretrained = str(write_tiny_cogvlm(Path(tmp) / "tiny-cogvlm"))
        model, model_args = load(args)
        model.add_mixin("auto-regressive", CachedAutoregressiveMixin())
        tokenizer = tokenizer_for(args, model_args)
        result = chat_turn(model, model_args, tokenizer, args)
    print(f"[Language processor version]: {result['version']}")
    print(f"User: {args.query}\nModel: {result['response']}")
    print(
        f"({type(model).__name__} from {args.from_pretrained}; tokens {result['tokens'][len(result['prompt_ids']) :]})"
    )
    return result


if __name__ == "__main__":
    main()
