"""CPU versions of FLA's fused cross-entropy losses, used by `adapters.fla.cpu_ops.install_cpu_fallbacks`.

`FusedCrossEntropyLoss` asserts CUDA/NPU/XPU tensors and `FusedLinearCrossEntropyLoss` runs Triton kernels, and
`FLAForCausalLM._compute_logits_and_loss` builds one of them whenever `labels` are given (with the config's
default `fuse_cross_entropy=True`). The factories below subclass FLA's classes so that CPU inputs are computed
here with the same options and reductions, and every other device still goes to FLA's `forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import UnsupportedOnCPUError

__all__ = ["cpu_aware_cross_entropy_loss", "cpu_aware_linear_cross_entropy_loss", "cross_entropy"]


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    logit_scale: float = 1.0,
    lse_square_scale: float = 0.0,
    logit_softcapping: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross entropy with FLA's options; returns `(loss, z_loss)`, both `[N]` float32.

    Layouts: `logits` `[N, V]`, `target` `[N]`. With `z = softcap(logit_scale * logits)` and `lse` its
    logsumexp: `loss = lse - (1 - s) z[target] - s mean(z) + lse_square_scale lse^2` (s = label_smoothing)
    and `z_loss = lse_square_scale lse^2`; both are 0 where `target == ignore_index`.
    """
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) * logit_scale
    if logit_softcapping is not None:
        z = logit_softcapping * torch.tanh(z / logit_softcapping)
    lse = torch.logsumexp(z, dim=-1)
    valid = target != ignore_index
    z_target = z.gather(-1, target.where(valid, 0).unsqueeze(-1)).squeeze(-1)
    loss = lse - (1 - label_smoothing) * z_target
    if label_smoothing > 0:
        loss = loss - label_smoothing * z.mean(-1)
    z_loss = lse_square_scale * lse.square()
    return (loss + z_loss) * valid, z_loss * valid


def cpu_aware_cross_entropy_loss(base: type) -> type:
    """Subclass `base` (FLA's `FusedCrossEntropyLoss`): logits `[N, V]`, targets `[N]`, same options and
    reductions (`mean` divides by the number of non-ignored targets), `(loss, z_loss)` with `return_z_loss`."""

    class CpuAwareFusedCrossEntropyLoss(base):
        """FLA's `FusedCrossEntropyLoss`, with CPU tensors computed by `cross_entropy` above."""

        def forward(self, input: torch.Tensor, target: torch.Tensor):
            if input.device.type != "cpu":
                return super().forward(input, target)
            if self.process_group is not None:
                raise UnsupportedOnCPUError(
                    "FusedCrossEntropyLoss: process_group has no CPU implementation\n"
                    "  hint: use a plain loss on CPU, or run tensor-parallel training on GPUs"
                )
            loss, z_loss = cross_entropy(
                input,
                target,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                logit_scale=self.logit_scale,
                lse_square_scale=self.lse_square_scale,
                logit_softcapping=self.logit_softcapping,
            )
            if self.reduction != "none":
                loss, z_loss = loss.sum(), z_loss.sum()
                if self.reduction == "mean":
                    total = (target != self.ignore_index).sum()
                    loss, z_loss = loss / total, z_loss / total
            return (loss, z_loss) if self.return_z_loss else loss

    return CpuAwareFusedCrossEntropyLoss


def cpu_aware_linear_cross_entropy_loss(base: type) -> type:
    """Subclass `base` (FLA's `FusedLinearCrossEntropyLoss`): hidden states `[..., C]`, targets `[...]`,
    head weight `[V, C]` (and bias `[V]`). `mean` divides by the non-ignored count (at least 1); with
    `use_l2warp` the L2Warp penalty of the raw logits is added to the gradient, as FLA's kernel does."""
    from fla.modules.l2warp import l2_warp

    class CpuAwareFusedLinearCrossEntropyLoss(base):
        """FLA's `FusedLinearCrossEntropyLoss`; on CPU: `F.linear`, then `cross_entropy`, then L2Warp."""

        def forward(self, x, target, weight, bias=None):
            if x.device.type != "cpu":
                return super().forward(x, target, weight, bias)
            if self.process_group is not None:
                raise UnsupportedOnCPUError(
                    "FusedLinearCrossEntropyLoss: process_group has no CPU implementation\n"
                    "  hint: use a plain loss on CPU, or run tensor-parallel training on GPUs"
                )
            logits = F.linear(x.reshape(-1, x.shape[-1]), weight, bias)
            target = target.reshape(-1)
            loss, _ = cross_entropy(
                logits,
                target,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                logit_scale=self.logit_scale,
                logit_softcapping=self.logit_softcapping,
            )
            loss = loss.sum()
            if self.reduction == "mean":
                loss = loss / (target != self.ignore_index).sum().clamp_min(1)
            if self.use_l2warp:
                # L2Warp normalises by logits.shape[0] * shape[1]: [1, N, V] makes that the token count.
                loss = l2_warp(loss, logits.unsqueeze(0), self.l2_penalty_factor)
            return loss

    return CpuAwareFusedLinearCrossEntropyLoss
