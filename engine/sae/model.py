"""Sparse autoencoders, many at once: stacked weights, one dense encoder matmul, sparse everything else.

A stack holds `n` SAEs of one architecture and width (instances with different seeds, or sweep
points with different k). Their weights are stacked on a leading axis, so one batched matmul
encodes every SAE.

Why it is fast: the only dense work is the encoder's pre-activations, computed *without* autograd.
The active latents are chosen from them, and everything after (their values, the decoder, and the
whole backward pass) works on the active (example, latent) entries alone (engine.sae.sparse_ops), at
O(active × d_in) instead of O(d_sae × d_in) per example. A step costs little more than the one
dense matmul, the floor of any SAE step.

Selection:
- TopK: exactly k per example.
- BatchTopK: exactly the B·k largest pre-activations over the batch (examples may have more or fewer
  than k); a running threshold encodes single examples consistently at inference.
- Matryoshka BatchTopK: latents form nested prefixes; each band between prefixes has its own
  BatchTopK budget, so prefix ℓ reconstructs with exactly its own k_ℓ on average, and its loss is
  weighted by w_ℓ. Early latents learn coarse, general features.
- ReLU + L1: the classic dense SAE, for comparison.

Transcoder (`d_out` given): the code is computed from one set of units (the inputs, d_in columns) and decodes
another (the targets, d_out columns), e.g. one area from another, or the current bin from the last L bins. An
example is then a row of d_in + d_out columns, inputs first, so the trainer and its batches stay the same. The
encoder cannot start as the decoder's transpose (they live in different spaces): both start as independent
random unit rows. The inputs are centred at a fixed point (their geometric median; b_enc absorbs any shift)
and the targets at b_dec, which trains as in an SAE; inputs and targets have their own scales.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.sae.config import SAEConfig
from engine.sae.output import output_and_loss, to_output
from engine.sae.outputs import ForwardOutput, SparseCode
from engine.sae.screened_selection import (
    SCREEN_MIN_ELEMENTS,
    native_bf16_matmul,
    screened_above,
    screened_cutoffs,
)
from engine.sae.selection import batch_cutoffs, batch_top, entries_above
from engine.sae.sparse_ops import Entries, index_div, sparse_decode, sparse_encode

CHUNK_ELEMENTS = 1 << 22
"""Pre-activations per chunk of SAEStack.chunk_rows (16 MiB of float32)."""


def geometric_median(x: torch.Tensor, iterations: int = 100, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm: a centre of the data that outliers (bursts) barely move."""
    median = x.mean(0)
    for _ in range(iterations):
        distance = torch.linalg.vector_norm(x - median, dim=1).clamp_min(eps)
        weights = 1.0 / distance
        updated = (weights[:, None] * x).sum(0) / weights.sum()
        if torch.linalg.vector_norm(updated - median) < 1e-6 * (1 + torch.linalg.vector_norm(median)):
            return updated
        median = updated
    return median


def _scale(given: torch.Tensor | None, d: int) -> torch.Tensor:
    return torch.ones(d) if given is None else given.float().expand(d).clone()


class SAEStack(torch.nn.Module):
    """n SAEs of one architecture and width, stacked on a leading axis (one seed per SAE)."""

    def __init__(self, config: SAEConfig, d_in: int, seeds: tuple[int, ...],
                 input_scale: torch.Tensor | None = None, d_out: int | None = None,
                 target_scale: torch.Tensor | None = None):
        """A plain SAE when `d_out` is None (`input_scale` scales inputs and reconstructions alike); a transcoder
        from d_in inputs to d_out targets otherwise (even when d_out == d_in), with `input_scale` for the inputs
        and `target_scale` for the targets."""
        super().__init__()
        config.validate(d_in)
        if d_out is not None and d_out < 1:
            raise InputError("the transcoder has no target units")
        if len(seeds) != len(config.ks):
            raise ValueError("one seed per SAE: len(seeds) must equal len(config.ks)")
        self.config, self.d_in, self.seeds = config, d_in, tuple(seeds)
        self.transcoder = d_out is not None
        self.d_out = d_in if d_out is None else d_out
        n, D = len(seeds), config.d_sae
        decoders, encoders = [], []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            w = torch.randn(D, self.d_out, generator=generator)
            decoders.append(w / torch.linalg.vector_norm(w, dim=1, keepdim=True))
            if self.transcoder:  # drawn after the decoder from the same generator: independent of it
                e = torch.randn(D, d_in, generator=generator)
                encoders.append(e / torch.linalg.vector_norm(e, dim=1, keepdim=True))
        w_dec = torch.stack(decoders)
        # Tied initialisation: the encoder starts as the decoder (both stored as [n, D, d_in]), so an
        # activation starts as the input's projection on its latent's direction.
        self.W_dec = torch.nn.Parameter(w_dec.clone())
        self.W_enc = torch.nn.Parameter(torch.stack(encoders) if self.transcoder else w_dec.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(n, D))
        self.b_dec = torch.nn.Parameter(torch.zeros(n, self.d_out))
        if self.transcoder:
            self.register_buffer("scale", _scale(target_scale, self.d_out))
            self.register_buffer("input_scale", _scale(input_scale, d_in))
            self.register_buffer("input_centre", torch.zeros(d_in))
        else:
            self.register_buffer("scale", _scale(input_scale, d_in))
        self.unit_scale = bool((self.scale == 1).all())  # then skip two elementwise passes per step
        self.register_buffer("threshold", torch.zeros(n))
        self.register_buffer("examples_since_fired", torch.zeros(n, D, dtype=torch.long))
        self.register_buffer("ks", torch.tensor(config.ks, dtype=torch.long))
        # Last step's BatchTopK cutoff per SAE and Matryoshka level: a cheap floor for candidates.
        self.register_buffer("cutoff_estimate", torch.zeros(n, len(config.levels()[0])))
        self._budget_cache: dict[int, list[list[int]]] = {}
        self.dead_hint: list[int] = [0] * len(seeds)
        """Dead latents per SAE when a trainer last read them on the host (refresh_dead_hint): the AuxK budget of a
        sync-free step, which cannot read the live count without waiting for the device."""

    @property
    def n(self) -> int:
        return len(self.seeds)

    def chunk_rows(self) -> int:
        """Examples per chunk when encoding many at once: the dense pre-activations [n, rows, d_sae] stay near
        CHUNK_ELEMENTS floats. A larger block is fresh memory from the system on every chunk (page faults cost
        more than the matmul): validating an 8-SAE stack in chunks of 8,192 rows took twice as long as in 1,024."""
        return max(256, CHUNK_ELEMENTS // (self.n * self.config.d_sae))

    def split_example(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs [B, d_in], targets [B, d_out]) of examples: the same tensor twice for a plain SAE."""
        if not self.transcoder:
            return x, x
        return x[:, :self.d_in], x[:, self.d_in:]

    # -- initialisation from data -------------------------------------------------------------------
    @torch.no_grad()
    def initialise_from_data(self, sample: torch.Tensor, centre: str = "median") -> None:
        """b_dec at the data's (geometric) median or mean, in the SAE's normalised input space (a transcoder's:
        b_dec at its targets', the fixed input centre at its inputs')."""
        inputs, targets = self.split_example(sample.float())
        find = geometric_median if centre == "median" else (lambda scaled: scaled.mean(0))
        self.b_dec.copy_(find(targets / self.scale).expand_as(self.b_dec))
        if self.transcoder:
            self.input_centre.copy_(find(inputs / self.input_scale))

    # -- forward ------------------------------------------------------------------------------------
    def _pre_activations(self, centred: torch.Tensor) -> torch.Tensor:
        # bmm, then the bias in place: baddbmm first copies the broadcast bias into all of [n, B, D] (a fifth of
        # the matmul's time on CPU).
        return torch.bmm(centred, self.W_enc.transpose(1, 2)).add_(self.b_enc.unsqueeze(1))

    def _budgets(self, batch: int) -> list[list[int]]:
        """BatchTopK budget per Matryoshka level and SAE for a batch size: B·k_ℓ entries, at least 1."""
        if batch not in self._budget_cache:  # fixed by the config: computed once, not as tensors every step
            budgets, used = [], torch.zeros(self.n)
            ks = torch.tensor(self.config.ks, dtype=torch.long).float()  # the ks buffer's values, without a device read
            for fraction in self.config.levels()[1]:
                band_k = ks * fraction - used
                used = used + band_k
                budgets.append((band_k * batch).round().clamp_min(1).long().tolist())
            self._budget_cache[batch] = budgets
        return self._budget_cache[batch]

    def _level_counts(self, batch: int) -> list[int]:
        """Entries per Matryoshka level that a sync-free step selects (batch_top's fixed sizes)."""
        starts = (0, *self.config.levels()[0][:-1])
        return [sum(min(budget, batch * (end - start)) for budget in budgets)
                for start, end, budgets in zip(starts, self.config.levels()[0], self._budgets(batch), strict=True)]

    def _select(self, pre: torch.Tensor, use_threshold: bool, sync_free: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chosen entries as flat indices into pre [n, B, D], ascending by (sae, example), their
        pre-activations and Matryoshka levels. `sync_free` (training TopK and BatchTopK): tensors of fixed size,
        so that a CUDA step never waits for the device to learn how many entries there are (see batch_top)."""
        n, batch, D = pre.shape
        arch = self.config.architecture
        if arch == "relu" or (use_threshold and arch != "topk"):
            chosen, values = entries_above(pre, pre.new_zeros(n) if arch == "relu" else self.threshold)
            level = torch.zeros(len(chosen), dtype=torch.long, device=pre.device)
            if arch == "matryoshka":
                sizes = torch.tensor(self.config.levels()[0], device=pre.device)
                level = torch.searchsorted(sizes, chosen % D, right=True)
            return chosen, values, level
        if arch == "topk":
            k_max = max(self.config.ks)
            values, latents = pre.topk(k_max, dim=-1, sorted=True)
            keep = (torch.arange(k_max, device=pre.device) < self.ks[:, None, None]) & (values > 0)
            if sync_free:  # every slot is an entry (rows ascend as laid out); a slot not kept has pre-activation 0
                rows = torch.arange(n * batch, device=pre.device).view(n, batch, 1)
                chosen = (rows * D + latents).reshape(-1)
                return chosen, values.masked_fill(~keep, 0.0).reshape(-1), torch.zeros_like(chosen)
            slots = keep.nonzero()
            chosen = (slots[:, 0] * batch + slots[:, 1]) * D + latents[keep]
            return chosen, values[keep], torch.zeros(len(slots), dtype=torch.long, device=pre.device)
        sizes = self.config.levels()[0]
        if len(sizes) == 1 and sync_free:
            chosen, values, _ = batch_top(pre, self._budgets(batch)[0])
            return chosen, values, torch.zeros_like(chosen)
        if len(sizes) == 1:  # BatchTopK: one band, the whole width
            estimate = self.cutoff_estimate[:, 0]
            ready = all(value > 0 for value in estimate.tolist())
            chosen, values, cutoffs = batch_cutoffs(pre, self._budgets(batch)[0], estimate if ready else None)
            self.cutoff_estimate[:, 0] = cutoffs
            return chosen, values, torch.zeros(len(chosen), dtype=torch.long, device=pre.device)
        picks, pre_values, levels, start = [], [], [], 0
        for level, (end, budgets) in enumerate(zip(sizes, self._budgets(batch), strict=True)):
            if sync_free:
                in_band, values, _ = batch_top(pre[:, :, start:end], budgets)
            else:
                estimate = self.cutoff_estimate[:, level]
                ready = all(value > 0 for value in estimate.tolist())
                in_band, values, cutoffs = batch_cutoffs(pre[:, :, start:end], budgets,
                                                               estimate if ready else None)
                self.cutoff_estimate[:, level] = cutoffs
            row = in_band // (end - start)
            picks.append(row * D + start + (in_band - row * (end - start)))
            pre_values.append(values)
            levels.append(torch.full((len(in_band),), level, dtype=torch.long, device=pre.device))
            start = end
        chosen, values, level = torch.cat(picks), torch.cat(pre_values), torch.cat(levels)
        # Entries must be sorted by (sae, example) for the row offsets (stable: each row keeps level order).
        order = torch.argsort(chosen // D, stable=True)
        return chosen[order], values[order], level[order]

    def _screened_select(self, centred: torch.Tensor, centred_flat: torch.Tensor, batch: int, use_threshold: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """A CPU step's BatchTopK, or its threshold's selection at inference (validation), through a bf16 screen
        (engine.sae.screened_selection: the same entries as _select, at a fraction of the dense matmul's cost), or
        None where it does not apply: another architecture or device, float32 not the arithmetic asked for, no
        hardware bf16, no cutoff or threshold yet, or in training dead latents (AuxK reads the dense
        pre-activations)."""
        if (self.config.architecture != "batchtopk" or centred.device.type != "cpu" or centred.dtype != torch.float32
                or torch.is_autocast_enabled("cpu") or self.n * batch * self.config.d_sae < SCREEN_MIN_ELEMENTS
                or not native_bf16_matmul()):
            return None
        if use_threshold:
            if not all(value > 0 for value in self.threshold.tolist()):
                return None
            found = screened_above(centred, centred_flat, self.W_enc, self.b_enc, self.threshold.to(centred.dtype))
            return None if found is None else (*found, torch.zeros(len(found[0]), dtype=torch.long))
        estimate = self.cutoff_estimate[:, 0]
        if not all(value > 0 for value in estimate.tolist()) or bool(self.dead_mask().any()):
            return None
        found = screened_cutoffs(centred, centred_flat, self.W_enc, self.b_enc, self._budgets(batch)[0], estimate)
        if found is None:
            return None
        chosen, values, cutoffs = found
        self.cutoff_estimate[:, 0] = cutoffs
        return chosen, values, torch.zeros(len(chosen), dtype=torch.long)

    def _entries(self, chosen: torch.Tensor, batch: int) -> Entries:
        """Entries of flat indices into [n, B, D]: row = sae · B + example, latent = sae · D + feature."""
        n, D = self.n, self.config.d_sae
        row = index_div(chosen, D)
        latent = chosen - row * D if n == 1 else chosen - (row - index_div(row, batch)) * D
        return Entries.build(row, latent, n * batch, n * D)

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, D = self.n, self.config.d_sae
        return self.W_enc.reshape(n * D, self.d_in), self.b_enc.reshape(n * D), self.W_dec.reshape(n * D, self.d_out)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0) if self.unit_scale else x.unsqueeze(0) / self.scale

    def _centred(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the encoder's centred input [n, B, d_in], the normalised target [1, B, d_out]) of examples."""
        if not self.transcoder:
            normalised = self._normalise(x)
            return normalised - self.b_dec.unsqueeze(1), normalised
        return self._transcoder_input(x), self._normalise(x[:, self.d_in:])

    def _transcoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """A transcoder's centred, scaled inputs [n, B, d_in] from examples whose first d_in columns are them."""
        return (x[:, :self.d_in] / self.input_scale - self.input_centre).unsqueeze(0).expand(self.n, -1, -1)

    def _input_centre(self) -> torch.Tensor:
        """What sparse_encode subtracts from the inputs, per SAE: b_dec (trained) or a transcoder's fixed centre."""
        return self.input_centre.expand(self.n, -1) if self.transcoder else self.b_dec

    def _output_scale(self) -> torch.Tensor | None:
        """The targets' scale, or None where every unit's is 1 (two elementwise passes a step skipped)."""
        return None if self.unit_scale else self.scale

    def _output_and_loss(self, decoded: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return output_and_loss(decoded, self.b_dec, target, self._output_scale(), self.config, self.training)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, use_threshold: bool = False) -> SparseCode:
        """Sparse code of a batch [B, d_in] for every SAE (a transcoder's examples may carry their targets too)."""
        chosen, pre_values, level = self._select(self.pre_activations(x), use_threshold)
        row = chosen // self.config.d_sae
        return SparseCode(row, chosen - row * self.config.d_sae, F.relu(pre_values), level)

    @torch.no_grad()
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """[n, B, d_sae] encoder pre-activations of a batch [B, d_in]: encode's one dense matmul, before selection.
        Linear in x, so validation's ablation updates them where it zeroes a few inputs."""
        centred = self._transcoder_input(x) if self.transcoder else self._normalise(x) - self.b_dec.unsqueeze(1)
        return self._pre_activations(centred)

    @torch.no_grad()
    def decode(self, code: SparseCode, batch: int) -> torch.Tensor:
        """Reconstruction [n, B, d_out] in target units from a sparse code."""
        n, D = self.n, self.config.d_sae
        entries = Entries.build(code.row, (code.row // batch) * D + code.latent, n * batch, n * D)
        decoded = entries.sum_by_row(self._flat()[2], code.value).reshape(n, batch, self.d_out)
        return to_output(decoded + self.b_dec.unsqueeze(1), self._output_scale(), self.config, training=False)

    def forward(self, x: torch.Tensor, *, use_threshold: bool = False, aux: bool = True,
                sync_free: bool = False) -> ForwardOutput:
        """Encode, decode and score a batch [B, d_in] (a transcoder's: [B, d_in + d_out], inputs then targets);
        `loss` is ready for backward().

        `sync_free`: a training step that never waits for the device (what a CUDA trainer asks for): every tensor's
        size is known before it is computed (selection.batch_top), and AuxK budgets come from `dead_hint`. ReLU's
        selection (`pre > 0`) is data-dependent by nature and still reads its count."""
        n, batch, d = self.n, x.shape[0], self.d_out
        with torch.no_grad():  # sparse_encode gives b_dec the gradient it would get through centred
            centred, normalised = self._centred(x)
            centred_flat = centred.reshape(n * batch, self.d_in)
            # A threshold's selection is screened at inference only: in training, AuxK may need the dense values.
            screened = None if sync_free or (use_threshold and self.training) else self._screened_select(
                centred, centred_flat, batch, use_threshold)
            if screened is None:
                pre = self._pre_activations(centred).to(centred.dtype)  # autocast computes it in bf16
                chosen, pre_values, level = self._select(pre, use_threshold, sync_free and not use_threshold)
            else:  # no dense pre-activations: AuxK, which needs them, has no dead latents to work on
                pre, (chosen, pre_values, level) = None, screened
        w_enc, b_enc, w_dec = self._flat()
        entries = self._entries(chosen, batch)
        values = sparse_encode(pre_values, centred_flat, w_enc, b_enc, self._input_centre(), entries)
        code = SparseCode(entries.row, chosen - entries.row * self.config.d_sae, values, level)
        _, _, weights = self.config.levels()
        target = self.split_example(x)[1]
        if len(weights) == 1:  # the common case, in as few operations as it takes
            reconstruction, loss_per_sae = self._output_and_loss(sparse_decode(values, w_dec, entries).view(n, batch, d),
                                                                 target)
        else:
            loss_per_sae = torch.zeros(n, device=x.device)
            decoded = x.new_zeros(n, batch, d)
            if sync_free and not use_threshold:  # each level's entries by a stable sort, in slices of known size
                by_level = torch.argsort(level, stable=True)
                bounds = list(itertools.accumulate(self._level_counts(batch), initial=0))
            for lvl, weight in enumerate(weights):
                if sync_free and not use_threshold:
                    picked = by_level[bounds[lvl]: bounds[lvl + 1]]
                else:
                    picked = (level == lvl).nonzero().squeeze(1)
                part_entries = self._entries(chosen.index_select(0, picked), batch)
                part_values = values.index_select(0, picked)
                decoded = decoded + sparse_decode(part_values, w_dec, part_entries).reshape(n, batch, d)
                reconstruction, level_loss = self._output_and_loss(decoded, target)
                loss_per_sae = loss_per_sae + weight * level_loss
        reconstruction_loss = loss_per_sae.detach()
        if self.config.architecture == "relu":
            norms = torch.linalg.vector_norm(w_dec, dim=1)
            weighted = values * norms[entries.latent]
            l1 = weighted.new_zeros(n).index_add(0, entries.row // batch, weighted)
            loss_per_sae = loss_per_sae + self.config.l1_coefficient * l1 / batch
        if aux and self.training and self.config.architecture != "relu":
            loss_per_sae = loss_per_sae + self._aux_loss(pre, centred_flat, normalised, reconstruction, sync_free)
        if sync_free:  # entries with activation 0 (see batch_top) do not count
            l0 = torch.zeros(n, device=x.device).index_add_(0, entries.row // batch, (values > 0).float()) / batch
        elif n == 1:
            l0 = torch.full((1,), len(values) / batch, device=x.device)
        else:  # each SAE's entries are one run of rows: its count is a difference of two row offsets
            l0 = entries.row_offsets[::batch].diff().float() / batch
        return ForwardOutput(reconstruction, code, loss_per_sae.sum(), loss_per_sae.detach(), reconstruction_loss, l0)

    def _aux_loss(self, pre: torch.Tensor | None, centred_flat: torch.Tensor, normalised: torch.Tensor,
                  reconstruction: torch.Tensor, sync_free: bool = False) -> torch.Tensor:
        """AuxK: the dead latents' largest activations must explain what the live ones left over.

        Its gradient reaches the dead latents' encoder and decoder rows and pulls them back towards
        the data; without it they stay dead for good. Like the main code, the aux code is a batch
        top-k: the batch's B·aux_k largest dead pre-activations. Sync-free, the dead counts are those the trainer
        last read (`dead_hint`, at most log_every steps old): AuxK starts and sizes itself a few steps late.
        """
        dead = self.dead_mask()  # [n, D]
        if not (any(self.dead_hint) if sync_free else bool(dead.any())):
            return torch.zeros(self.n, device=centred_flat.device)
        assert pre is not None, "forward's screened selection skips the dense pre-activations only with no dead latent"
        n, batch, d = pre.shape[0], pre.shape[1], self.d_out
        aux_k = self.config.aux_k or max(1, self.d_out // 2)
        with torch.no_grad():
            dead_pre = pre.masked_fill(~dead.unsqueeze(1), 0.0)
            counts = self.dead_hint if sync_free else dead.sum(1).tolist()
            budgets = [min(dead_count, aux_k) * batch for dead_count in counts]
            select = batch_top if sync_free else lambda band, b: batch_cutoffs(band, b, None)
            chosen, pre_values, _ = select(dead_pre, budgets)
        if len(chosen) == 0:
            return torch.zeros(n, device=pre.device)
        w_enc, b_enc, w_dec = self._flat()
        entries = self._entries(chosen, batch)
        values = sparse_encode(pre_values, centred_flat, w_enc, b_enc, self._input_centre(), entries)
        explained = sparse_decode(values, w_dec, entries).reshape(n, batch, d)
        residual = normalised - reconstruction.detach() / self.scale
        error = ((residual - explained) ** 2).sum(dim=(1, 2))
        scale = ((residual - residual.mean(1, keepdim=True)) ** 2).sum(dim=(1, 2)).clamp_min(1e-8)
        return self.config.aux_coefficient * dead.any(1).float() * error / scale

    # -- bookkeeping a trainer calls after each step ------------------------------------------------
    def refresh_dead_hint(self) -> None:
        """Read the dead latents per SAE onto the host (one synchronisation) for sync-free steps' AuxK."""
        self.dead_hint = self.dead_mask().sum(1).tolist()

    @torch.no_grad()
    def after_step(self, code: SparseCode, batch: int, sync_free: bool = False) -> None:
        """Count examples since each latent fired; keep decoder rows unit-norm; track the threshold. `sync_free`: the
        code may hold entries with activation 0 (a sync-free forward's), which neither fire nor set the threshold."""
        n, D = self.n, self.config.d_sae
        sae = index_div(code.row, batch) if n > 1 else None
        flat_latent = code.latent if sae is None else sae * D + code.latent
        if sync_free:
            fired = torch.zeros(n * D, dtype=torch.long, device=code.value.device)
            fired.index_add_(0, flat_latent, (code.value > 0).long())
            counter = self.examples_since_fired.view(-1)
            counter.copy_(torch.where(fired > 0, 0, counter + batch))
        else:
            # Latents that fired are set to -batch, so adding batch to all leaves them at 0.
            self.examples_since_fired.view(-1).index_fill_(0, flat_latent, -batch)
            self.examples_since_fired += batch
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=2, keepdim=True).clamp_min(1e-8))
        if self.config.architecture in ("batchtopk", "matryoshka") and len(code.value):
            value = code.value.detach()
            if sync_free:
                value = value.masked_fill(value <= 0, torch.inf)
            if n == 1:
                smallest = value.min().reshape(1).to(self.threshold.dtype)
            else:
                smallest = torch.full((n,), torch.inf, dtype=code.value.dtype, device=code.value.device)
                smallest.scatter_reduce_(0, sae, value, reduce="amin")
                smallest = smallest.to(self.threshold.dtype)
            momentum = self.config.threshold_momentum
            moved = torch.where(self.threshold == 0, smallest, momentum * self.threshold + (1 - momentum) * smallest)
            # An SAE with no entries has smallest = inf and keeps its threshold (abs() < inf: isfinite in 2 ops, not 5).
            self.threshold.copy_(torch.where(smallest.abs() < torch.inf, moved, self.threshold))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component along each decoder row (which stays unit-norm)."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec.data).sum(-1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec.data

    def dead_mask(self) -> torch.Tensor:
        return self.examples_since_fired > self.config.dead_after_examples

    @torch.no_grad()
    def folded_weights(self) -> dict[str, torch.Tensor]:
        """Weights in input units with the normalisation folded in (what is stored and exported)."""
        if self.transcoder:  # pre = W_enc (x / s_in - c) + b_enc; the targets' side as an SAE's
            return {
                "W_enc": self.W_enc / self.input_scale,
                "b_enc": self.b_enc - (self.W_enc * self.input_centre).sum(-1),
                "W_dec": self.W_dec * self.scale,
                "b_dec": self.b_dec * self.scale,
                "threshold": self.threshold.clone(),
            }
        return {
            "W_enc": self.W_enc / self.scale,  # [n, D, d]: pre = W_enc x + b_enc - W_enc b_dec / scale
            "b_enc": self.b_enc - (self.W_enc * self.b_dec.unsqueeze(1)).sum(-1),
            "W_dec": self.W_dec * self.scale,  # rows are decoder directions in count units
            "b_dec": self.b_dec * self.scale,
            "threshold": self.threshold.clone(),
        }
