"""The downlink: a sent round's verdict and the token the LLM chose come back to the device as ids.

The device cannot draft the next token before it knows the response token, so a sent round waits for the answer:
its modelled time (`measures/clock.py`) is the upload, the LLM pass, and then this downlink.

What comes back (`downlink_bits`), ceil(log2 |V|) bits per id as on the uplink (`payload.index_bits`):

- a round of the paper's methods: 1 verdict bit (accepted or not), and the id of the resampled token when the draft
  was rejected (an accepted draft is the response token, which the device already holds);
- a block: the number of accepted drafts a (ceil(log2(n + 1)) bits for a block of n drafts) and the id of the LLM's
  own token, the recovered or the bonus one;
- the LLM alone streams every token's id (no verdict). Its tokens are generated back to back at the base station,
  so a token's reception overlaps the next token's generation: the downlink costs the LLM alone energy on the
  device (`link/energy.py`) but no time on the modelled clock.

Rate and overhead (`DownlinkConfig`): the base station transmits at `downlink.tx_power_dbm` over the uplink's path
(same distance and path-loss exponent), so its mean SNR is s_d = P_BS rho^(-alpha) / N. It learns the fading from
the device's channel reports and adapts its rate, so a message is sent at the ergodic capacity of Rayleigh fading,
C = E[log2(1 + s_d h)] = log2(e) e^(1/s_d) E1(1/s_d) bit/s/Hz (Goldsmith, Wireless Communications, 4.2.1), or
log2(1 + s_d) without fading. A message costs `downlink.overhead_ms` (one LTE subframe, the grant and the data share
it) plus bits / (W_d C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from uhlm_ray.config import ChannelConfig, DownlinkConfig, ModelConfig
from uhlm_ray.link.capacity import ergodic_capacity
from uhlm_ray.link.payload import index_bits
from uhlm_ray.records import BlockRecord, RoundRecord
from uhlm_ray.snr import db_to_linear, dbm_to_watts, linear_to_db


@dataclass(frozen=True)
class DownlinkLink:
    """A resolved downlink: its rate, its per-message overhead and the bits of one token id."""

    rate_bps: float
    overhead_s: float
    id_bits: int

    def message_seconds(self, bits: int) -> float:
        """A message of `bits` bits: the overhead and its air time (0 for no message)."""
        return self.overhead_s + bits / self.rate_bps if bits else 0.0

    def block_answer_seconds(self, drafts: int) -> float:
        """The answer to a block of `drafts` drafts before it is verified: its verdict and the LLM's own token (the
        recovered or the bonus one), what a device plans a block with."""
        return self.message_seconds(block_verdict_bits(drafts) + self.id_bits)

    def draft_answer_seconds(self) -> float:
        """The answer to one sent draft, priced at its size when rejected (the verdict and the resampled id): the
        overhead dominates it."""
        return self.message_seconds(1 + self.id_bits)


def downlink_mean_snr(*, downlink: DownlinkConfig, channel: ChannelConfig) -> float:
    """s_d = P_BS rho^(-alpha) / N_d (linear), the uplink's path loss; or `downlink.mean_snr_db` when set."""
    if downlink.mean_snr_db is not None:
        return db_to_linear(downlink.mean_snr_db)
    noise = channel.noise_dbm if downlink.noise_dbm is None else downlink.noise_dbm
    received = dbm_to_watts(downlink.tx_power_dbm) * channel.distance_m ** (-channel.path_loss_exponent)
    return received / dbm_to_watts(noise)


def downlink_mean_snr_db(*, downlink: DownlinkConfig, channel: ChannelConfig) -> float:
    return linear_to_db(downlink_mean_snr(downlink=downlink, channel=channel))


def downlink_link(*, downlink: DownlinkConfig, channel: ChannelConfig, vocab_size: int) -> DownlinkLink | None:
    """The downlink of a run, or None when `downlink.enabled` is false."""
    if not downlink.enabled:
        return None
    width = channel.bandwidth_hz if downlink.bandwidth_hz is None else downlink.bandwidth_hz
    capacity = ergodic_capacity(mean_snr=downlink_mean_snr(downlink=downlink, channel=channel),
                                fading=channel.fading)
    return DownlinkLink(rate_bps=width * capacity, overhead_s=downlink.overhead_ms / 1e3,
                        id_bits=index_bits(vocab_size=vocab_size))


def block_verdict_bits(drafts: int) -> int:
    """ceil(log2(n + 1)) bits (at least 1): how many of a block's n drafts were accepted."""
    return max(1, math.ceil(math.log2(drafts + 1)))


def downlink_bits(*, record: RoundRecord | BlockRecord, id_bits: int) -> int:
    """The bits that come back after a round (0 when nothing was verified): see the module docstring."""
    if record.method == "llm":
        return id_bits
    if not record.sent:
        return 0
    if isinstance(record, BlockRecord):
        return block_verdict_bits(len(record.drafts)) + id_bits * int(record.recovered or record.bonus)
    return 1 + (0 if record.accepted else id_bits)


def receive_seconds(*, record: RoundRecord | BlockRecord, link: DownlinkLink | None) -> float:
    """How long the device's radio receives after this round (the LLM alone's streamed tokens included)."""
    if link is None:
        return 0.0
    return link.message_seconds(downlink_bits(record=record, id_bits=link.id_bits))


def downlink_seconds(*, record: RoundRecord | BlockRecord, link: DownlinkLink | None) -> float:
    """The downlink's share of a round on the modelled clock: a sent round waits for its answer; the LLM alone's
    streamed tokens overlap its generation (0)."""
    return 0.0 if record.method == "llm" else receive_seconds(record=record, link=link)


def model_vocab_size(model: ModelConfig) -> int:
    """|V| of the configured pair's SLM, from its config.json (the decoders know it from the loaded model; the
    summaries of a stored run read it here). Raises ConfigError when it cannot be read (a .gguf without one)."""
    from uhlm_ray.models.presets import resolve_pair

    return _vocab_size(resolve_pair(model)[0])


@lru_cache(maxsize=16)
def _vocab_size(slm: str) -> int:
    from transformers import AutoConfig

    from uhlm_ray.models.loading import hub_reference, resolve_source
    from uhlm_ray.validation import ConfigError

    try:
        where, revision = hub_reference(resolve_source(slm))
        config = AutoConfig.from_pretrained(where, revision=revision)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.slm={slm!r}: its vocabulary size (for the downlink's token ids) cannot be read "
                          f"({type(err).__name__}); pass vocab_size to the summary") from err
    text = getattr(config, "text_config", None) or config
    return int(text.vocab_size)
