"""From a decoded code to a reconstruction in target units and its loss: the output nonlinearity, the reconstruction
loss per SAE, and the clamped output's autograd functions (reconstructions clamped at 0 in the forward pass, the
gradient passed straight through the clamp; see `to_output` for why), each as one operation instead of a chain of
generic ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from engine.sae.config import SAEConfig


def to_output(normalised: torch.Tensor, scale: torch.Tensor | None, config: SAEConfig, training: bool) -> torch.Tensor:
    """Back to target units (× `scale`, None where it is 1), through the output nonlinearity; `training`: a training
    forward pass (inference clamps plainly).

    Spike counts are never negative, so reconstructions are clamped at 0 at inference. In MSE
    training the default ('clamped') clamps the forward pass and lets the gradient through as if
    linear, so a unit whose output dips below 0 still learns when its count is positive. Training
    without the clamp (output='linear') lowers val FVU on the sample recording (0.26 against
    0.35) but the decoder rows stop matching the planted ensembles (MMCS 0.73 against 0.99): the
    extra variance is each example's Poisson noise, which an oracle that knows the true rates
    cannot explain either (its FVU is 0.64).
    """
    out = normalised if scale is None else normalised * scale
    if config.loss == "poisson":
        return F.softplus(out, beta=4.0) + 1e-6
    if not config.nonnegative_output:
        return out
    if not training or config.loss == "msle":
        return F.relu(out)
    if config.output == "linear":
        return out
    return ClampedStraightThrough.apply(out)


def output_and_loss(decoded: torch.Tensor, b_dec: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None,
                    config: SAEConfig, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction [n, B, d] in target units, [n] reconstruction loss) of decoded codes without b_dec [n, d],
    against targets [B, d]: the default training case fused (ClampedMSE), every other case as to_output and
    reconstruction_loss."""
    if (training and config.loss == "mse" and config.nonnegative_output and config.output == "clamped"
            and decoded.dtype in (torch.float32, torch.float64)):
        return ClampedMSE.apply(decoded, b_dec, target, scale)
    reconstruction = to_output(decoded + b_dec.unsqueeze(1), scale, config, training)
    return reconstruction, reconstruction_loss(config, target.expand_as(reconstruction), reconstruction)


def reconstruction_loss(config: SAEConfig, target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """[n] loss per SAE, averaged over examples and units."""
    if config.loss == "mse":
        error = F.mse_loss(output, target, reduction="none")
    elif config.loss == "msle":
        tau = config.msle_tau
        error = (torch.log(target.clamp_min(0) + tau) - torch.log(output.clamp_min(0) + tau)) ** 2
    else:
        error = output - target * torch.log(output)
    return error.mean(dim=(1, 2))


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
