"""Multi-SPIN's heterogeneous draft control: each device's block length, planned before a cell decodes, to maximise
the cell's token goodput (Multi-access speculative inference, arXiv 2606.04581, its heterogeneous case).

Terms: device i drafts L_i tokens a block (block.stop=fixed with its own length), uploads them on an FDMA share w_i
of the band W, and the base station verifies every device's block of the slot as one synchronised batch, so a slot
lasts as long as its slowest round (the cell's clock, uhlm_ray/cell.py). The plan assumes i.i.d. acceptance alpha_i
per draft, so a round yields E_i(L) tokens (`expected_block_tokens`), and prices a round as

    R_i(L, w) = L (tau_SLM + tau_u) + t_i(L b, w) + tau_LLM(1 + L) + t_down(L)

on the decode-time clock (`DecodeClock`: the configured taus, else the paper's), with t_i the configured link
model's expected upload time of L b bits on a share w at SNR_i / w (noise over the band), on its closed form over
independent fading blocks (`channel.process=per_round`: on a process in time every question would search the bank,
ARQ's rate included) and read as affine in the bits at each share (`upload_table`: two questions per share, exact
for eq. 3). The cell's goodput for lengths L is

    G(L) = sum_i E_i(L_i) / T*(L),   T*(L) = min_w max_i R_i(L_i, w_i)  s.t.  sum_i w_i = 1,

the inner problem being Multi-SPIN's homogeneous-case allocation (`uhlm_ray.cell.multi_spin_shares`, here on
tabulated times: `uhlm_ray.cell.slot_seconds`). The slot couples every device, so `plan_draft_lengths` searches
over slot lengths T (for each, the lengths whose least shares fit the band: `lengths_for_slot`), then improves one
device's length at a time while G grows. A device far out, whose upload dominates its round, gets a short block; a
near one, whose round is mostly drafting, the LLM's pass and the answer, a longer one. The uploads are then priced
per slot by `cell.scheduler` on each round's own bits and fading draws; the plan only chooses the lengths.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np

from uhlm_ray.cell import device_channel, device_distances, least_shares, slot_seconds
from uhlm_ray.config import ChannelConfig, EvaluateConfig
from uhlm_ray.link.channel import expected_upload_seconds
from uhlm_ray.link.fading import DecodeClock
from uhlm_ray.link.payload import index_bits
from uhlm_ray.snr import mean_snr


@dataclass(frozen=True)
class DraftPlan:
    """Each device's block length and its share of the band in the planned slot, with the goodputs compared."""

    drafts: dict[int, int]  # L_i
    shares: dict[int, float]  # w_i of the planned slot (the scheduler prices the real ones)
    slot_s: float  # T*(L): the planned slot
    goodput: float  # G(L): expected tokens of the cell per second
    homogeneous_drafts: int  # the best common length
    homogeneous_goodput: float
    configured_goodput: float  # every device at block.fixed_drafts


def expected_block_tokens(*, drafts: int | np.ndarray, acceptance: float) -> float | np.ndarray:
    """Tokens a verified block of L drafts yields when each draft is accepted with probability alpha, independently:
    (1 - alpha^(L+1)) / (1 - alpha), the accepted drafts plus the recovered or bonus token (Leviathan et al. 2023,
    eq. 1); its limit L + 1 at alpha = 1, where every draft is accepted."""
    if acceptance >= 1.0:
        return np.asarray(drafts) + 1.0
    return (1.0 - acceptance ** (np.asarray(drafts) + 1)) / (1.0 - acceptance)


def share_grid(n_devices: int) -> np.ndarray:
    """Shares 1, 2^-1/2, ... down to 1 / (16 n), ascending: a device of a slot may need far less than 1 / n."""
    steps = int(math.ceil(2 * math.log2(16 * n_devices)))
    return np.array([2.0 ** (-k / 2) for k in range(steps + 1)])[::-1]


def upload_table(*, mean_snr: float, bits_per_draft: float, max_drafts: int, channel: ChannelConfig,
                 grid: np.ndarray) -> np.ndarray:
    """The expected upload seconds [max_drafts, G] of L = 1 .. max_drafts drafts at each share of `grid`, affine in
    the bits between the questions asked for 1 and max_drafts drafts (blind: the plan knows no fade)."""
    def ask(drafts: int, share: float) -> float:
        return expected_upload_seconds(bits=drafts * bits_per_draft, channel=channel, mean_snr=mean_snr / share,
                                       bandwidth_hz=channel.bandwidth_hz * share)

    one = np.array([ask(1, w) for w in grid])  # [G]
    most = np.array([ask(max_drafts, w) for w in grid]) if max_drafts > 1 else one  # [G]
    per_draft = (most - one) / max(max_drafts - 1, 1)  # [G]; inf - inf where both are infinite
    per_draft = np.where(np.isfinite(most) & np.isfinite(one), per_draft, np.inf)
    drafts = np.arange(1, max_drafts + 1)[:, None]  # [L, 1]
    return np.where(np.isfinite(one), one + (drafts - 1) * per_draft, np.inf)  # [L, G]


def round_fixed_seconds(*, drafts: np.ndarray, clock: DecodeClock, measure_s: float) -> np.ndarray:
    """A block round's time besides its upload, [L]: drafting (an SLM step and, when the rule measures it, u each),
    the LLM's pass over the catch-up token and the drafts, and the answer on the downlink."""
    return np.array([d * (clock.tau_slm_s + measure_s) + clock.llm_pass_seconds(1 + d) + clock.block_answer_seconds(d)
                     for d in drafts])


def lengths_for_slot(*, tokens: np.ndarray, needed: np.ndarray, iterations: int = 40) -> np.ndarray | None:
    """For one slot length: the lengths that maximise the tokens whose least shares fit the band, a multiple-choice
    knapsack solved by a price lambda on the band (each device takes argmax_L E_i(L) - lambda w_i(L), lambda
    bisected to the least that fits). `tokens` [n, L] E_i(L); `needed` [n, L] the least shares (inf: cannot
    finish). None when not even one draft each fits."""
    if not np.isfinite(needed[:, 0]).all() or needed[:, 0].sum() > 1.0:
        return None

    def pick(price: float) -> np.ndarray:
        return np.argmax(np.where(np.isfinite(needed), tokens - price * np.nan_to_num(needed, posinf=0.0), -np.inf),
                         axis=1)

    rows = np.arange(tokens.shape[0])
    low, high = 0.0, float(tokens.max() / max(needed[np.isfinite(needed)].min(), 1e-12)) + 1.0
    if needed[rows, pick(low)].sum() <= 1.0:
        return pick(low)
    for _ in range(iterations):
        mid = (low + high) / 2
        if needed[rows, pick(mid)].sum() <= 1.0:
            high = mid
        else:
            low = mid
    return pick(high)


def plan_draft_lengths(*, mean_snrs: dict[int, float], acceptance: dict[int, float], bits_per_draft: float,
                       max_drafts: int, configured_drafts: int, channel: ChannelConfig, clock: DecodeClock,
                       measure_s: float = 0.0, slots: int = 64, sweeps: int = 20) -> DraftPlan:
    """Multi-SPIN's heterogeneous draft control for devices with average SNRs `mean_snrs` (over the whole band) and
    assumed per-draft acceptance rates `acceptance`: the block lengths that maximise G(L) (module docstring).

    A slot's length T couples every device (the slot lasts as long as its slowest round, and every device's share
    is what lets it finish by T), so lengths are searched per T: for each of `slots` slot lengths between the
    fastest possible and the all-longest slot, `lengths_for_slot` picks the lengths that fit the band by then;
    the best of those is then improved one device's length at a time while G grows."""
    devices = sorted(mean_snrs)
    n = len(devices)
    grid = share_grid(n)
    channel = dataclasses.replace(channel, process="per_round")  # closed forms: see the module docstring
    lengths = np.arange(1, max_drafts + 1)
    fixed = round_fixed_seconds(drafts=lengths, clock=clock, measure_s=measure_s)  # [L]
    # rounds[i, l, g]: device i's round with l + 1 drafts on share grid[g]
    rounds = np.stack([fixed[:, None] + upload_table(mean_snr=mean_snrs[d], bits_per_draft=bits_per_draft,
                                                     max_drafts=max_drafts, channel=channel, grid=grid)
                       for d in devices])  # [n, L, G]
    tokens = np.stack([expected_block_tokens(drafts=lengths, acceptance=acceptance[d]) for d in devices])  # [n, L]
    rows = np.arange(n)

    def goodput(choice: np.ndarray) -> tuple[float, float, np.ndarray]:
        slot, shares = slot_seconds(rounds[rows, choice], grid)
        return (float(tokens[rows, choice].sum() / slot) if math.isfinite(slot) else 0.0), slot, shares

    common = [goodput(np.full(n, k)) for k in range(max_drafts)]
    best_common = int(np.argmax([g for g, _, _ in common]))
    choice, best = np.full(n, best_common), common[best_common][0]
    fastest, slowest = float(rounds[:, 0, -1].max()), common[-1][1]
    if math.isfinite(fastest) and math.isfinite(slowest) and slowest > fastest:
        for t in np.geomspace(fastest, slowest, slots):
            picked = lengths_for_slot(tokens=tokens, needed=least_shares(rounds.reshape(n * max_drafts, -1), grid,
                                                                         float(t)).reshape(n, max_drafts))
            if picked is not None and (g := goodput(picked)[0]) > best:
                best, choice = g, picked
    for _ in range(sweeps):  # then one device's length at a time, while the goodput grows
        improved = False
        for i, k in itertools.product(range(n), range(max_drafts)):
            if k != choice[i]:
                trial = choice.copy()
                trial[i] = k
                if (g := goodput(trial)[0]) > best * (1 + 1e-9):
                    best, choice, improved = g, trial, True
        if not improved:
            break
    g, slot, shares = goodput(choice)
    return DraftPlan(drafts={d: int(choice[i]) + 1 for i, d in enumerate(devices)},
                     shares={d: float(shares[i]) for i, d in enumerate(devices)}, slot_s=slot, goodput=g,
                     homogeneous_drafts=best_common + 1, homogeneous_goodput=common[best_common][0],
                     configured_goodput=common[min(configured_drafts, max_drafts) - 1][0])


def cell_draft_plan(*, cfg: EvaluateConfig, vocab_size: int) -> DraftPlan | None:
    """The plan of a cell run with cell.draft_lengths=multi_spin (None otherwise): its devices at their distances,
    the acceptance `cell.plan_acceptance` assumes, `cell.plan_bits_per_draft` (else the ids payload's bits), on the
    decode-time clock. A pure function of the configuration, so every actor and the driver agree on it."""
    cell = cfg.cell
    if cell.draft_lengths != "multi_spin":
        return None
    distances = device_distances(cell)
    alphas = cell.plan_acceptance * cell.n_devices if len(cell.plan_acceptance) == 1 else cell.plan_acceptance
    clock = DecodeClock.for_run(cfg, measure=cfg.uncertainty.measure, vocab_size=vocab_size)
    bits = cell.plan_bits_per_draft if cell.plan_bits_per_draft is not None else index_bits(vocab_size=vocab_size)
    return plan_draft_lengths(
        mean_snrs={d: mean_snr(device_channel(channel=cfg.channel, distance_m=distances[d]))
                   for d in range(cell.n_devices)},
        acceptance=dict(enumerate(alphas)), bits_per_draft=float(bits), max_drafts=cfg.block.max_drafts,
        configured_drafts=cfg.block.fixed_drafts,
        channel=cfg.channel, clock=clock,
        measure_s=clock.tau_measure_s if cfg.block.skip_u_th is not None else 0.0)
