"""A SAT inference script, unchanged but for `import adapters.sat`, run on an HF checkpoint.

    python examples/sat_inference_from_hf.py [HF_FOLDER_OR_HUB_ID] [--max-new-tokens N]

Without a path it builds a tiny random HF LLaMA (GQA, rope θ 5e5) with transformers in a temporary folder. The
script loads it the SAT way (`AutoModel.from_pretrained(path, args)`), generates greedily with SAT's own
`filling_sequence` and KV cache (`CachedAutoregressiveMixin`), and, for the tiny default, checks the tokens and
logits against transformers' `generate` on the same checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from sat import AutoModel
from sat.generation.autoregressive_sampling import filling_sequence
from sat.generation.sampling_strategies import BaseStrategy
from sat.model.mixins import CachedAutoregressiveMixin

import adapters.sat  # noqa: F401  (the one added line: SAT's from_pretrained now also takes HF checkpoints)
from adapters.demo.sat_demo import write_tiny_llama


def sat_generate(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding with SAT's generation loop and KV cache."""
    seq = torch.tensor(prompt + [-1] * new_tokens)
    output = filling_sequence(model, seq, batch_size=1, strategy=BaseStrategy(top_k=1))[0]
    return output[0].tolist()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", nargs="?", help="HF checkpoint folder or hub id (default: a tiny random LLaMA)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    opts = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        path = opts.path
        if path is None:
            path = str(Path(tmp) / "tiny-llama")
            reference = write_tiny_llama(Path(path), max_shard_size="100KB")  # the demo's tiny LLaMA, sharded

        # --- what a SAT inference script does -------------------------------------------------------------
        args = argparse.Namespace(mode="inference", fp16=False, bf16=False, skip_init=True, device="cpu")
        model, args = AutoModel.from_pretrained(path, args)
        model.eval()
        model.add_mixin("auto-regressive", CachedAutoregressiveMixin())
        prompt = [1, 17, 42, 5, 99]
        tokens = sat_generate(model, prompt, opts.max_new_tokens)
        print(f"SAT {type(model).__name__} from {path}: {tokens}")
        result = {"tokens": tokens}

        if reference is not None:  # the tiny default: compare with transformers on the same files
            with torch.no_grad():
                expected = reference.generate(torch.tensor([prompt]), max_new_tokens=opts.max_new_tokens,
                                              do_sample=False, pad_token_id=0)[0].tolist()  # fmt: skip
                ids = torch.tensor([tokens[:-1]])
                length = ids.shape[1]
                sat_logits = model(input_ids=ids, position_ids=torch.arange(length)[None],
                                   attention_mask=torch.ones(1, 1, length, length).tril())[0]  # fmt: skip
                diff = (sat_logits - reference(ids).logits).abs().max().item()
            print(f"transformers generate: {expected}")
            print(f"same tokens: {tokens == expected}; max abs logit diff over the sequence: {diff:.2e}")
            result |= {"expected": expected, "max_abs_diff": diff}
    return result


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result.get("expected", result["tokens"]) == result["tokens"] else 1)
