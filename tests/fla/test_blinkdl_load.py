"""BlinkDL .pth -> FLA through the engine, compared with BlinkDL's own `rwkv` package (the reference)."""

import pytest
import torch

pytest.importorskip("fla")
pytest.importorskip("rwkv")

from blinkdl_checkpoint import make_blinkdl_rwkv7, save_blinkdl_rwkv7  # noqa: E402
from reference import rwkv_logits  # noqa: E402

from adapters.core import HookError  # noqa: E402
from adapters.fla.blinkdl import from_blinkdl  # noqa: E402


@pytest.mark.parametrize(
    "head_size, dtype, with_block0_v, T",
    [
        (64, torch.float32, True, 16),
        (16, torch.float32, False, 16),
        (64, torch.bfloat16, True, 16),
        (16, torch.bfloat16, True, 80),
        (64, torch.float16, True, 16),
    ],
)
def test_logits_match_rwkv_package(tmp_path, head_size, dtype, with_block0_v, T):
    sd = make_blinkdl_rwkv7(
        hidden_size=128, num_layers=2, head_size=head_size, dtype=dtype, with_block0_v=with_block0_v
    )
    path = save_blinkdl_rwkv7(sd, tmp_path / "rwkv7-tiny.pth")
    before = path.read_bytes()
    model = from_blinkdl(path, fuse_norm=False)
    tokens = torch.randint(0, 300, (T,), generator=torch.Generator().manual_seed(1)).tolist()
    ref, _ = rwkv_logits(path, tokens)
    with torch.no_grad():
        ours = model(torch.tensor([tokens])).logits[0].float()
    assert (ours - ref).abs().max().item() <= 1e-4
    assert path.read_bytes() == before


def test_files_of_no_known_generation_are_refused(tmp_path):
    # BlinkDL's layout, but no key that names a generation: refused for the x070 keys it lacks. Files of known
    # generations are refused by name (test_variants.py).
    torch.save({"emb.weight": torch.zeros(4, 4), "blocks.0.att.time_decay": torch.zeros(4)}, tmp_path / "odd.pth")
    with pytest.raises(HookError) as e:
        from_blinkdl(tmp_path / "odd.pth")
    assert str(e.value) == (
        f"{tmp_path}/odd.pth is not a BlinkDL RWKV-7 (x070) checkpoint: it has no blocks.0.att.r_k, "
        "blocks.0.ffn.key.weight, blocks.0.att.w1, blocks.0.att.a1, blocks.0.att.g1, head.weight\n"
        "  hint: adapters.fla loads final x070 files (rwkv7-*.pth, RWKV-x070-*.pth)"
    )
