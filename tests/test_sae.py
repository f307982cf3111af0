"""SAEStack: each architecture's invariants, the hand-written sparse backward against dense autograd,
AuxK's revival of dead latents, folded weights, losses and one-line refusals of bad settings.

All on small real tensors: 20 units, 64 latents, batches of 256 Poisson counts from a seeded generator.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.sae.model import SAEConfig, SAEStack

D_IN, D_SAE, BATCH = 20, 64, 256

def poisson_counts(batch: int = BATCH, d_in: int = D_IN, seed: int = 1) -> torch.Tensor:
    """Spike counts with unit-specific rates (0.3 to 4 per bin), from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    rates = 0.3 + 3.7 * torch.rand(d_in, generator=generator)
    return torch.poisson(rates.expand(batch, d_in).contiguous(), generator=generator)


def make_stack(architecture: str = "batchtopk", ks: tuple[int, ...] = (3,), *, seeds: tuple[int, ...] | None = None,
               input_scale: torch.Tensor | None = None, **config) -> SAEStack:
    config.setdefault("d_sae", D_SAE)
    seeds = seeds if seeds is not None else tuple(range(len(ks)))
    return SAEStack(SAEConfig(architecture=architecture, ks=ks, **config), D_IN, seeds, input_scale=input_scale)


def perturb(stack: SAEStack, x: torch.Tensor, seed: int = 7) -> None:
    """Move the weights off their tied initialisation so every parameter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        stack.initialise_from_data(x)
        stack.W_enc.add_(0.1 * torch.randn(stack.W_enc.shape, generator=generator))
        stack.b_enc.copy_(0.1 * torch.randn(stack.b_enc.shape, generator=generator))
        stack.b_dec.add_(0.1 * torch.randn(stack.b_dec.shape, generator=generator))


def entries_of(code, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sae, example, latent) of each entry of a code."""
    return code.row // batch, code.row % batch, code.latent


def dense_pre(stack: SAEStack, x: torch.Tensor) -> torch.Tensor:
    """Pre-activations [n, B, D] by plain dense math."""
    centred = x.unsqueeze(0) / stack.scale - stack.b_dec.unsqueeze(1)
    return centred @ stack.W_enc.transpose(1, 2) + stack.b_enc.unsqueeze(1)


def level_of(stack: SAEStack, latent: torch.Tensor) -> torch.Tensor:
    """Matryoshka band of each latent: ℓ where sizes[ℓ-1] <= latent < sizes[ℓ]."""
    sizes = stack.config.levels()[0]
    level = torch.zeros_like(latent)
    for size in sizes[:-1]:
        level += (latent >= size).long()
    return level


# -- selection invariants ------------------------------------------------------------------------------
def test_topk_gives_each_example_exactly_its_saes_k_largest_latents():
    x = poisson_counts()
    stack = make_stack("topk", ks=(3, 5))
    perturb(stack, x)
    code = stack.encode(x)
    per_row = torch.bincount(code.row, minlength=2 * BATCH)
    assert per_row[:BATCH].tolist() == [3] * BATCH
    assert per_row[BATCH:].tolist() == [5] * BATCH
    pre = dense_pre(stack, x).detach()
    sae, example, latent = entries_of(code, BATCH)
    for i, k in enumerate((3, 5)):
        expected = pre[i].topk(k, dim=1).indices.sort(dim=1).values
        mine = sae == i
        assert torch.equal(example[mine], torch.arange(BATCH).repeat_interleave(k))  # sorted by example
        assert torch.equal(latent[mine].reshape(BATCH, k).sort(dim=1).values, expected)
    assert bool((code.value > 0).all())
    torch.testing.assert_close(code.value, F.relu(pre[sae, example, latent]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchtopk_spends_exactly_the_batch_budget_unevenly_over_examples(dtype):
    x = poisson_counts().to(dtype)
    stack = make_stack("batchtopk", ks=(3, 5)).to(dtype)
    perturb(stack, x)
    out = stack(x, aux=False)
    code = out.code
    sae, example, latent = entries_of(code, BATCH)
    pre = dense_pre(stack, x).detach()
    for i, k in enumerate((3, 5)):
        mine = sae == i
        assert int(mine.sum()) == round(k * BATCH)
        per_example = torch.bincount(example[mine], minlength=BATCH)
        assert per_example.min() < k < per_example.max()  # a batch budget, not a per-example one
        chosen = torch.zeros(BATCH, D_SAE, dtype=torch.bool)
        chosen[example[mine], latent[mine]] = True
        assert pre[i][chosen].min() >= pre[i][~chosen].max()  # the largest B·k of the whole batch
    assert out.l0.tolist() == [3.0, 5.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_is_a_running_average_of_each_saes_smallest_chosen_activation(dtype):
    x = poisson_counts(batch=3 * BATCH, seed=6).to(dtype)
    stack = make_stack("batchtopk", ks=(3, 5), threshold_momentum=0.9).to(dtype)
    stack.initialise_from_data(x)
    assert stack.threshold.tolist() == [0.0, 0.0]
    expected = None
    for step in range(3):
        code = stack(x[step * BATCH: (step + 1) * BATCH]).code
        smallest = torch.stack([code.value.detach()[code.row // BATCH == i].min() for i in range(2)])
        expected = smallest if expected is None else 0.9 * expected + 0.1 * smallest
        stack.after_step(code, BATCH)
        torch.testing.assert_close(stack.threshold, expected)
        with torch.no_grad():  # a different model each step, so the smallest values differ
            stack.b_enc.add_(0.05)


def train_steps(stack: SAEStack, x: torch.Tensor, steps: int, lr: float = 1e-2, batch: int = BATCH) -> None:
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr)
    stack.train()
    for step in range(steps):
        part = x[(step * batch) % len(x):][:batch]
        out = stack(part)
        optimizer.zero_grad()
        out.loss.backward()
        stack.remove_parallel_decoder_grad()
        optimizer.step()
        stack.after_step(out.code, part.shape[0])


def test_batchtopk_threshold_encodes_an_example_alone_as_inside_a_batch():
    x = poisson_counts(batch=4 * BATCH, seed=3)
    stack = make_stack("batchtopk", ks=(3, 6))
    stack.initialise_from_data(x)
    train_steps(stack, x, steps=8)
    assert bool((stack.threshold > 0).all())
    stack.eval()
    batch = x[:BATCH]
    in_batch = stack.encode(batch, use_threshold=True)
    sae_b, example_b, latent_b = entries_of(in_batch, BATCH)
    assert bool((in_batch.value > stack.threshold[sae_b]).all())
    for ex in (0, 17, 101, 255):
        alone = stack.encode(batch[ex: ex + 1], use_threshold=True)
        for i in range(stack.n):
            inside = (sae_b == i) & (example_b == ex)
            order_b = latent_b[inside].argsort()
            mine = alone.row == i
            order_a = alone.latent[mine].argsort()
            assert torch.equal(alone.latent[mine][order_a], latent_b[inside][order_b])
            torch.testing.assert_close(alone.value[mine][order_a], in_batch.value[inside][order_b],
                                       rtol=1e-5, atol=1e-5)
    # Without the threshold a lone example gets exactly round(k) latents, whatever the batch would give.
    alone = stack.encode(batch[:1])
    assert torch.bincount(alone.row, minlength=2).tolist() == [3, 6]


def test_matryoshka_levels_sit_in_their_bands_and_budgets_add_up_to_cumulative_fractions():
    x = poisson_counts()
    stack = make_stack("matryoshka", ks=(4, 8))  # default sizes 8, 16, 32, 64 and fractions 1/4 ... 1
    perturb(stack, x)
    sizes, fractions, _ = stack.config.levels()
    assert sizes == (8, 16, 32, 64)
    code = stack(x, aux=False).code
    sae, _, latent = entries_of(code, BATCH)
    assert torch.equal(code.level, level_of(stack, latent))
    lower = torch.tensor((0, *sizes[:-1]))[code.level]
    upper = torch.tensor(sizes)[code.level]
    assert bool(((lower <= latent) & (latent < upper)).all())
    for i, k in enumerate((4, 8)):
        for level, fraction in enumerate(fractions):
            used = int(((sae == i) & (code.level <= level)).sum())
            assert used == round(k * fraction * BATCH)
    assert torch.equal(code.row, code.row.sort().values)  # sorted by (sae, example) for the offsets


def test_matryoshka_loss_is_the_weighted_sum_of_prefix_reconstruction_losses():
    x = poisson_counts()
    weights = (0.5, 0.3, 0.2)
    stack = make_stack("matryoshka", ks=(4, 8), matryoshka_sizes=(6, 20, 64),
                       matryoshka_k_fractions=(0.25, 0.5, 1.0), matryoshka_weights=weights)
    perturb(stack, x)
    stack.eval()
    out = stack(x)
    code = out.code._replace(value=out.code.value.detach())
    expected = torch.zeros(2)
    for level, weight in enumerate(weights):
        keep = code.level <= level
        prefix = code._replace(row=code.row[keep], latent=code.latent[keep], value=code.value[keep],
                               level=code.level[keep])
        reconstruction = stack.decode(prefix, BATCH)
        expected += weight * ((reconstruction - x) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(out.per_sae_loss, expected, rtol=1e-5, atol=1e-6)
    assert math.isclose(float(out.loss.detach()), float(expected.sum()), rel_tol=1e-5)
    # The full code's reconstruction is the last prefix's.
    torch.testing.assert_close(out.reconstruction.detach(), stack.decode(code, BATCH), rtol=1e-5, atol=1e-5)
    # The comparison can tell: the full code's loss alone is something else.
    full = ((out.reconstruction.detach() - x) ** 2).mean(dim=(1, 2))
    assert bool(((out.per_sae_loss - full).abs() > 1e-3).all())


def test_relu_code_is_every_positive_pre_activation_and_l1_raises_the_loss():
    x = poisson_counts()
    plain = make_stack("relu", ks=(1, 1), l1_coefficient=0.0)
    penalised = make_stack("relu", ks=(1, 1), l1_coefficient=3e-3)
    perturb(plain, x)
    perturb(penalised, x)
    pre = dense_pre(plain, x).detach()
    code = plain.encode(x)
    sae, example, latent = entries_of(code, BATCH)
    chosen = torch.zeros(2, BATCH, D_SAE, dtype=torch.bool)
    chosen[sae, example, latent] = True
    assert bool((pre[chosen] > -1e-5).all())
    assert bool((chosen | (pre < 1e-5)).all())
    assert int(chosen.sum()) > 2 * BATCH * 5  # dense: far more than a TopK code
    out_plain, out_penalised = plain(x), penalised(x)
    assert bool((out_penalised.per_sae_loss > out_plain.per_sae_loss).all())
    values = code.value
    norms = torch.linalg.vector_norm(plain.W_dec, dim=2)[sae, latent]
    l1 = torch.zeros(2).index_add(0, sae, values * norms) / BATCH
    torch.testing.assert_close(out_penalised.per_sae_loss - out_plain.per_sae_loss, 3e-3 * l1,
                               rtol=1e-4, atol=1e-7)


# -- the sparse backward against dense autograd ----------------------------------------------------------
def dense_reference_loss(stack: SAEStack, x: torch.Tensor, code, aux: bool) -> torch.Tensor:
    """The stack's total loss by plain dense autograd, given which entries were chosen."""
    config = stack.config
    n, batch = stack.n, x.shape[0]
    normalised = x.unsqueeze(0) / stack.scale
    centred = normalised - stack.b_dec.unsqueeze(1)
    pre = centred @ stack.W_enc.transpose(1, 2) + stack.b_enc.unsqueeze(1)
    sae, example, latent = entries_of(code, batch)
    mask = torch.zeros(pre.shape, dtype=torch.bool)
    mask[sae, example, latent] = True
    acts = F.relu(pre) * mask
    band = level_of(stack, torch.arange(config.d_sae))

    def output(decoded: torch.Tensor) -> torch.Tensor:
        out = decoded * stack.scale
        if config.loss == "poisson":
            return F.softplus(out, beta=4.0) + 1e-6
        # Counts are clamped at 0. MSE training (output="clamped") clamps the forward pass only and
        # passes the gradient straight through; output="linear" trains without the clamp.
        if not config.nonnegative_output:
            return out
        if config.loss == "msle" or not stack.training:
            return F.relu(out)
        return out if config.output == "linear" else out + (F.relu(out) - out).detach()

    def reconstruction_loss(out: torch.Tensor) -> torch.Tensor:
        if config.loss == "mse":
            error = (out - x) ** 2
        elif config.loss == "msle":
            error = (torch.log(x + config.msle_tau) - torch.log(out + config.msle_tau)) ** 2
        else:
            error = out - x * torch.log(out)
        return error.mean(dim=(1, 2))

    loss = torch.zeros(n, dtype=x.dtype)
    for level, weight in enumerate(config.levels()[2]):
        reconstruction = output((acts * (band <= level)) @ stack.W_dec + stack.b_dec.unsqueeze(1))
        loss = loss + weight * reconstruction_loss(reconstruction)
    if config.architecture == "relu":
        loss = loss + config.l1_coefficient * (acts * torch.linalg.vector_norm(stack.W_dec, dim=2).unsqueeze(1)
                                               ).sum(dim=(1, 2)) / batch
    if aux:
        dead = stack.dead_mask()
        aux_k = config.aux_k or D_IN // 2
        dead_pre = pre.detach().masked_fill(~dead.unsqueeze(1), 0.0)
        aux_mask = torch.zeros(pre.shape, dtype=torch.bool)
        for i in range(n):
            budget = min(int(dead[i].sum()), aux_k) * batch
            top = dead_pre[i].reshape(-1).topk(budget)
            picked = top.indices[top.values > 0]
            aux_mask[i].view(-1)[picked] = True
        explained = (F.relu(pre) * aux_mask) @ stack.W_dec
        residual = normalised - reconstruction.detach() / stack.scale
        error = ((residual - explained) ** 2).sum(dim=(1, 2))
        spread = ((residual - residual.mean(1, keepdim=True)) ** 2).sum(dim=(1, 2))
        loss = loss + config.aux_coefficient * dead.any(1).to(x.dtype) * error / spread
    return loss


PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


@pytest.mark.parametrize(("architecture", "ks", "loss", "output"), [
    ("batchtopk", (3, 5), "mse", "clamped"),
    ("batchtopk", (3, 5), "mse", "linear"),
    ("matryoshka", (4, 8), "mse", "clamped"),
    ("topk", (3, 5), "mse", "clamped"),
    ("relu", (1, 1), "mse", "clamped"),
    ("batchtopk", (4,), "msle", "clamped"),
    ("matryoshka", (4,), "poisson", "clamped"),
])
def test_sparse_backward_equals_dense_autograd(architecture, ks, loss, output):
    x = poisson_counts().double()
    scale = (0.5 + 2.5 * torch.rand(D_IN, generator=torch.Generator().manual_seed(5)))
    stack = make_stack(architecture, ks, input_scale=scale, loss=loss, output=output).double()
    perturb(stack, x)
    out = stack(x, aux=False)
    out.loss.backward()
    sparse_grads = {name: getattr(stack, name).grad.clone() for name in PARAMETERS}
    reference = dense_reference_loss(stack, x, out.code, aux=False)
    torch.testing.assert_close(out.per_sae_loss, reference.detach())
    dense_grads = torch.autograd.grad(reference.sum(), [getattr(stack, name) for name in PARAMETERS])
    for name, dense in zip(PARAMETERS, dense_grads, strict=True):
        assert float(dense.abs().max()) > 0, name
        torch.testing.assert_close(sparse_grads[name], dense, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("architecture", ["batchtopk", "matryoshka"])
def test_sparse_backward_with_auxk_equals_dense_autograd(architecture):
    x = poisson_counts().double()
    stack = make_stack(architecture, (4, 8), dead_after_examples=100).double()
    perturb(stack, x)
    with torch.no_grad():
        stack.examples_since_fired[0, 40:52] = 1000  # SAE 0 has 12 dead latents, SAE 1 none
        stack.examples_since_fired[1, 3] = 1000  # ... and SAE 1 just one
    out = stack(x)
    out.loss.backward()
    reference = dense_reference_loss(stack, x, out.code, aux=True)
    torch.testing.assert_close(out.per_sae_loss, reference.detach())
    dense_grads = torch.autograd.grad(reference.sum(), [getattr(stack, name) for name in PARAMETERS])
    for name, dense in zip(PARAMETERS, dense_grads, strict=True):
        torch.testing.assert_close(getattr(stack, name).grad, dense, msg=lambda m, name=name: f"{name}: {m}")


# -- decoder norm ----------------------------------------------------------------------------------------
def test_decoder_rows_stay_unit_norm_through_optimiser_steps():
    x = poisson_counts(batch=4 * BATCH)
    stack = make_stack("batchtopk", ks=(3, 5))
    stack.initialise_from_data(x)
    before = stack.W_dec.detach().clone()
    train_steps(stack, x, steps=6, lr=3e-2)
    norms = torch.linalg.vector_norm(stack.W_dec.detach(), dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)
    assert float((stack.W_dec.detach() - before).abs().max()) > 1e-2  # the decoder did move


def test_remove_parallel_decoder_grad_leaves_the_gradient_orthogonal_to_each_row():
    x = poisson_counts()
    stack = make_stack("batchtopk", ks=(3, 5))
    perturb(stack, x)
    stack(x).loss.backward()
    grad = stack.W_dec.grad.clone()
    parallel = (grad * stack.W_dec.detach()).sum(-1)
    assert float(parallel.abs().max()) > 1e-4  # there was something to remove
    stack.remove_parallel_decoder_grad()
    after = stack.W_dec.grad
    torch.testing.assert_close((after * stack.W_dec.detach()).sum(-1), torch.zeros_like(parallel),
                               rtol=0, atol=1e-7)
    # Only the parallel part went: grad = after + (grad · row) row.
    torch.testing.assert_close(after + parallel.unsqueeze(-1) * stack.W_dec.detach(), grad)


# -- AuxK ------------------------------------------------------------------------------------------------
def weaken(stack: SAEStack, latents: list[int], seed: int = 2) -> None:
    """Give latents of SAE 0 a tiny random encoder: positive on some examples, never among the top B·k."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for j in latents:
            stack.W_enc[0, j] = 0.01 * torch.randn(D_IN, generator=generator)
            stack.b_enc[0, j] = 0.0


def test_auxk_gradient_reaches_dead_latents_and_only_them():
    x = poisson_counts()
    stack = make_stack("batchtopk", ks=(3,), dead_after_examples=1000)
    perturb(stack, x)
    dead = [5, 17, 30, 41, 52, 63]
    weaken(stack, dead)
    assert not set(dead) & set(stack(x, aux=False).code.latent.tolist())
    assert all(bool((dense_pre(stack, x).detach()[0, :, j] > 0).any()) for j in dead)
    with torch.no_grad():
        stack.examples_since_fired[0, dead] = 5000
    assert stack.dead_mask()[0].nonzero().squeeze(1).tolist() == dead

    def grads(aux: bool) -> dict[str, torch.Tensor]:
        stack.zero_grad()
        out = stack(x, aux=aux)
        out.loss.backward()
        return {name: getattr(stack, name).grad.clone() for name in PARAMETERS}

    with_aux, without = grads(True), grads(False)
    for j in dead:
        assert float(with_aux["W_enc"][0, j].abs().sum()) > 0
        assert float(with_aux["W_dec"][0, j].abs().sum()) > 0
        assert float(with_aux["b_enc"][0, j].abs()) > 0
        assert float(without["W_enc"][0, j].abs().sum()) == 0
        assert float(without["W_dec"][0, j].abs().sum()) == 0
        assert float(without["b_enc"][0, j].abs()) == 0
    live = [j for j in range(D_SAE) if j not in dead]
    for name in ("W_enc", "b_enc", "W_dec"):  # AuxK leaves the live latents' gradients alone
        torch.testing.assert_close(with_aux[name][0, live], without[name][0, live])
    # In eval mode, or with nothing dead, the loss has no AuxK term at all.
    stack.eval()
    assert torch.equal(stack(x).per_sae_loss, stack(x, aux=False).per_sae_loss)
    stack.train()
    with torch.no_grad():
        stack.examples_since_fired.zero_()
    assert torch.equal(stack(x).per_sae_loss, stack(x, aux=False).per_sae_loss)


def test_auxk_alone_revives_a_dead_latent():
    """A dead latent that never makes the batch budget, trained by the AuxK loss alone, fires again."""
    x = poisson_counts(batch=4 * BATCH, seed=11)
    stack = make_stack("batchtopk", ks=(3,), dead_after_examples=2 * BATCH)
    stack.initialise_from_data(x)
    train_steps(stack, x, steps=20)  # a trained stack, with a cutoff to beat
    j = 5
    weaken(stack, [j])
    assert int((stack.encode(x).latent == j).sum()) == 0
    optimizer = torch.optim.Adam([stack.W_enc, stack.b_enc, stack.W_dec], lr=1e-2)
    only_j = torch.zeros(1, D_SAE, 1)
    only_j[0, j] = 1
    for step in range(25):
        with torch.no_grad():
            stack.examples_since_fired[0, j] = 10 * BATCH  # dead throughout
        part = x[(step * BATCH) % len(x):][:BATCH]
        aux_only = stack(part).loss - stack(part, aux=False).loss  # the AuxK term alone
        assert float(aux_only.detach()) > 0
        optimizer.zero_grad()
        aux_only.backward()
        stack.W_enc.grad *= only_j
        stack.W_dec.grad *= only_j
        stack.b_enc.grad *= only_j[..., 0]
        stack.remove_parallel_decoder_grad()
        optimizer.step()
        with torch.no_grad():
            stack.W_dec.div_(torch.linalg.vector_norm(stack.W_dec, dim=2, keepdim=True))
    fired = int((stack.encode(x).latent == j).sum())
    assert fired >= 10, f"latent fires on {fired} of {len(x)} examples after AuxK training"


# -- bad settings ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "d_in", "words"), [
    (SAEConfig(d_sae=16, ks=(17,)), 20, "--k 17"),
    (SAEConfig(d_sae=16, ks=(4, 0)), 20, "--k 0"),
    (SAEConfig(d_sae=16, ks=(-2,), architecture="topk"), 20, "--k -2"),
    (SAEConfig(d_sae=0, ks=(1,)), 20, "--d-sae 0"),
    (SAEConfig(d_sae=-3, ks=(1,)), 20, "--d-sae -3"),
    (SAEConfig(ks=()), 20, "--k"),
    (SAEConfig(architecture="gated"), 20, "--arch gated"),
    (SAEConfig(loss="l2"), 20, "--loss l2"),
    (SAEConfig(d_sae=16, ks=(4,)), 0, "no units"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 32, 16, 64)), 20,
     "matryoshka sizes"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 32)), 20, "matryoshka sizes"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(0, 32, 64)), 20,
     "matryoshka sizes"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 8, 64)), 20, "matryoshka sizes"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 32, 64),
               matryoshka_k_fractions=(0.5, 1.0)), 20, "same length"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 32, 64),
               matryoshka_k_fractions=(0.5, 0.4, 1.0)), 20, "k fractions"),
    (SAEConfig(architecture="matryoshka", d_sae=64, ks=(4,), matryoshka_sizes=(8, 32, 64),
               matryoshka_k_fractions=(0.25, 0.5, 0.9)), 20, "k fractions"),
])
def test_bad_settings_are_refused_in_one_line(config, d_in, words):
    with pytest.raises(InputError) as caught:
        config.validate(d_in)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message and 0 < len(message) < 200
    with pytest.raises(InputError):  # the stack refuses them too, before building anything
        SAEStack(config, d_in, seeds=tuple(range(max(1, len(config.ks)))))


def test_good_edge_settings_are_accepted():
    SAEConfig(d_sae=16, ks=(16,)).validate(20)  # k == d_sae
    SAEConfig(d_sae=1, ks=(1,), architecture="topk").validate(1)
    SAEConfig(architecture="relu", d_sae=16, ks=(0,)).validate(20)  # ReLU ignores k
    SAEConfig(architecture="matryoshka", d_sae=4, ks=(2,)).validate(20)  # defaults dedupe small sizes
    with pytest.raises(ValueError, match="one seed per SAE"):
        SAEStack(SAEConfig(d_sae=16, ks=(2, 3)), 20, seeds=(0,))


# -- folded weights --------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_folded_weights_reproduce_the_stack_on_raw_counts(architecture):
    x = poisson_counts()
    scale = 0.5 + 2.5 * torch.rand(D_IN, generator=torch.Generator().manual_seed(9))
    stack = make_stack(architecture, ks=(3, 5), input_scale=scale)
    perturb(stack, x)
    with torch.no_grad():
        stack.threshold.copy_(torch.tensor([0.8, 0.5]))
    folded = stack.folded_weights()
    pre = x.unsqueeze(0) @ folded["W_enc"].transpose(1, 2) + folded["b_enc"].unsqueeze(1)  # [n, B, D]
    use_threshold = architecture == "batchtopk"
    code = stack.encode(x, use_threshold=use_threshold)
    sae, example, latent = entries_of(code, BATCH)
    torch.testing.assert_close(code.value, F.relu(pre[sae, example, latent]), rtol=1e-4, atol=1e-4)
    chosen = torch.zeros(pre.shape, dtype=torch.bool)
    chosen[sae, example, latent] = True
    if use_threshold:  # exactly the entries above the stored threshold
        floor = folded["threshold"][:, None, None]
        assert bool(((pre > floor + 1e-4) <= chosen).all())
        assert bool((pre[chosen] > floor.expand_as(pre)[chosen] - 1e-4).all())
    else:
        for i, k in enumerate((3, 5)):
            top = torch.zeros(BATCH, D_SAE, dtype=torch.bool)
            top.scatter_(1, pre[i].topk(k, dim=1).indices, True)
            assert torch.equal(top, chosen[i])
    acts = torch.zeros(pre.shape)
    acts[sae, example, latent] = code.value
    manual = F.relu(acts @ folded["W_dec"] + folded["b_dec"].unsqueeze(1))
    torch.testing.assert_close(stack.decode(code, BATCH), manual, rtol=1e-4, atol=1e-4)
    stack.eval()  # at inference the reconstruction is clamped at 0, as decode() does
    torch.testing.assert_close(stack(x, use_threshold=use_threshold, aux=False).reconstruction.detach(), manual,
                               rtol=1e-4, atol=1e-4)
    stack.train()  # training clamps the forward pass too (the gradient passes straight through)
    torch.testing.assert_close(stack(x, use_threshold=use_threshold, aux=False).reconstruction.detach(), manual,
                               rtol=1e-4, atol=1e-4)
    assert torch.equal(folded["threshold"], stack.threshold)


# -- losses ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["msle", "poisson"])
def test_count_losses_are_finite_with_non_negative_reconstructions_and_train(loss):
    x = poisson_counts(batch=4 * BATCH, seed=4)
    stack = make_stack("batchtopk", ks=(3, 5), loss=loss)
    stack.initialise_from_data(x)
    first = stack(x[:BATCH])
    assert bool(torch.isfinite(first.per_sae_loss).all())
    assert bool((first.reconstruction >= 0).all())
    if loss == "poisson":
        assert bool((first.reconstruction > 0).all())  # a rate, so log(rate) is finite
    first.loss.backward()
    assert all(bool(torch.isfinite(getattr(stack, name).grad).all()) for name in PARAMETERS)
    train_steps(stack, x, steps=24)
    stack.eval()
    last = stack(x[:BATCH], aux=False)
    assert bool(torch.isfinite(last.per_sae_loss).all())
    assert bool((last.reconstruction >= 0).all())
    assert bool((last.per_sae_loss < first.per_sae_loss).all())


def test_forward_under_bf16_autocast_trains_in_float32():
    """The trainer runs the forward pass under autocast on CUDA; the bf16 dense matmul must not leak into
    the sparse ops (embedding_bag refuses mixed dtypes) or into the threshold."""
    x = poisson_counts()
    stack = make_stack("batchtopk", ks=(3, 5))
    stack.initialise_from_data(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stack(x)
    out.loss.backward()
    stack.after_step(out.code, BATCH)
    assert out.code.value.dtype == torch.float32
    assert stack.threshold.dtype == torch.float32 and bool((stack.threshold > 0).all())
    assert all(bool(torch.isfinite(getattr(stack, name).grad).all()) for name in PARAMETERS)
