"""The clamped output's autograd functions: reconstructions clamped at 0 in the forward pass, the gradient passed
straight through the clamp (see SAEStack._output for why), each as one operation instead of a chain of generic ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class ClampedStraightThrough(torch.autograd.Function):
    """relu(x) forward, identity backward: `x + (relu(x) - x).detach()` (the same values bit for bit) in one
    operation instead of three, and no backward operation at all."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return F.relu(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class ClampedMSE(torch.autograd.Function):
    """The default training output and loss in one operation: reconstruction = relu((decoded + b_dec) · scale), and
    per SAE the mean squared error against the target, with the clamp's gradient passed straight through (as
    ClampedStraightThrough, then F.mse_loss and a mean). The backward is one multiplication; the generic ops
    kept four [n, B, d] intermediates and six passes over them per step."""

    @staticmethod
    def forward(ctx, decoded, b_dec, target, scale):  # type: ignore[override]
        out = decoded + b_dec.unsqueeze(1)
        if scale is not None:
            out.mul_(scale)
        reconstruction = out.relu_()
        difference = reconstruction - target  # target [B, d] or [n, B, d]
        n = difference.shape[0]
        count = difference[0].numel()
        # Autocast leaves norms in float32, so this is the float32 sum of squares whatever the context.
        loss = torch.linalg.vector_norm(difference.view(n, -1), dim=1).square_().div_(count)
        ctx.save_for_backward(difference, scale)
        ctx.count = count
        ctx.mark_non_differentiable(reconstruction)
        # No gradient ever flows into the reconstruction: without this autograd would fill a fresh [n, B, d] with
        # zeros for it every step (1 ms of page faults and writes at eight SAEs, for an argument backward ignores).
        ctx.set_materialize_grads(False)
        return reconstruction, loss

    @staticmethod
    def backward(ctx, _grad_reconstruction, grad_loss):  # type: ignore[override]
        difference, scale = ctx.saved_tensors
        if grad_loss is None:  # the loss was not part of what backward() was called on
            return None, None, None, None
        grad = difference * (grad_loss * (2 / ctx.count)).view(-1, 1, 1)
        if scale is not None:
            grad.mul_(scale)
        return grad, grad.sum(1), None, None
