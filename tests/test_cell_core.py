"""The cell's pure parts: device placement, the shared uplink worked out by hand, per-device and cell metrics."""

import math

import numpy as np
import pytest

from uhlm_ray.cell import apply_shared_uplink, device_distances, slot_transmitters
from uhlm_ray.config import CellConfig, ChannelConfig, load_config
from uhlm_ray.link.channel import uplink_seconds
from uhlm_ray.records import RoundRecord
from uhlm_ray.validation import ConfigError


def _record(*, sent: bool, snr_db: float = 0.0, bits: int = 1_000_000) -> RoundRecord:
    return RoundRecord(
        method="u_hlm", prompt_index=0, round=1, draft=1, token=1, uncertainty=0.5, sent=sent, x_d=0.5, y_d=0.5,
        beta=0.0, accepted=True if sent else None, resampled=False if sent else None,
        payload_bits=bits if sent else 0, catch_up_tokens=1, fading_gain=1.0, snr_db=snr_db, tau_up_s=0.0,
        tau_slm_s=0.01, tau_uncertainty_s=0.0, tau_llm_s=0.1 if sent else 0.0, wall_s=0.1,
    )


# eq. 3 at a fixed SNR (no fading, no per-upload overhead), so each share of the band can be worked out by hand
EQ3 = ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0)


def _share(records, snrs=None):
    return apply_shared_uplink(records_by_device=records, channel=EQ3, mean_snrs=snrs or dict.fromkeys(records, 1.0),
                               seed=0)


def test_one_transmitter_is_eq3_and_sharing_by_hand():
    alone = _share({0: [_record(sent=True)]})
    assert alone[0][0].tau_up_s == pytest.approx(uplink_seconds(bits=1e6, bandwidth_hz=1e6, snr=1.0))
    # two devices at SNR 1 split W = 1 MHz: each gets 0.5 MHz with noise halved, rate 0.5e6 * log2(1 + 2)
    pair = _share({0: [_record(sent=True)], 1: [_record(sent=True)]})
    assert pair[1][0].tau_up_s == pytest.approx(1e6 / (0.5e6 * math.log2(3.0)))
    # a device at SNR 3 sharing with one at SNR 1: 0.5 MHz at 2 x 3
    mixed = _share({0: [_record(sent=True)], 1: [_record(sent=True)]}, snrs={0: 3.0, 1: 1.0})
    assert mixed[0][0].tau_up_s == pytest.approx(1e6 / (0.5e6 * math.log2(7.0)))


def test_slots_count_transmitters_by_round_not_by_arrival():
    records = {
        0: [_record(sent=True), _record(sent=False), _record(sent=True)],
        1: [_record(sent=True), _record(sent=True)],
        2: [_record(sent=False), _record(sent=True), _record(sent=True), _record(sent=True)],
    }
    assert slot_transmitters(records) == {0: 2, 1: 2, 2: 2, 3: 1}
    shared = _share(records)
    assert shared[0][0].tau_up_s == pytest.approx(1e6 / (0.5e6 * math.log2(1 + 2 * 1.0)))
    assert shared[0][1].tau_up_s == 0.0  # skipped rounds upload nothing
    assert shared[2][3].tau_up_s == pytest.approx(1e6 / (1e6 * math.log2(2.0)))  # alone in slot 3
    assert records[0][0].tau_up_s == 0.0  # the input records are not modified


def test_distances_drawn_uniformly_over_the_disc():
    cell = CellConfig(n_devices=4000, radius_m=1000.0, min_distance_m=10.0, placement_seed=3)
    r = np.array(device_distances(cell))
    assert r.min() >= 10.0 and r.max() <= 1000.0
    # uniform by area: P(r <= R/2) = (R^2/4 - r0^2) / (R^2 - r0^2) ~ 0.25, not 0.5 as uniform in radius would give
    inner = (r <= 500.0).mean()
    expected = (500.0**2 - 10.0**2) / (1000.0**2 - 10.0**2)
    assert abs(inner - expected) < 4 * math.sqrt(expected * (1 - expected) / len(r))
    assert device_distances(cell) == device_distances(cell)  # a fixed placement seed
    assert device_distances(CellConfig(n_devices=2, distances_m=[100.0, 200.0])) == [100.0, 200.0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cell.n_devices=0", r"cell.n_devices=0 is outside the allowed range \[1, inf\]"),
        ("cell.method=llm", r"cell.method='llm' is not one of"),
        ("cell.distances_m=[100,200]", r"cell.distances_m has 2 entries; it needs one per device"),
        ("runtime.max_ongoing_requests=4", r"runtime.max_ongoing_requests=4 is outside the allowed range \[16, inf\]"),
        ("runtime.http_port=70000", r"runtime.http_port=70000 is outside the allowed range \[1, 65535\]"),
        ("cell.n_device=3", r"cell.n_device: Key 'n_device' not in 'CellConfig'"),
    ],
)
def test_bad_cell_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_loopback_by_default():
    assert load_config().runtime.http_host == "127.0.0.1"
