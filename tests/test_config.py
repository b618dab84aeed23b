"""Bad input is refused with an error naming the field and the allowed range."""

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from uhlm_ray.config import load_config
from uhlm_ray.device.policies import RandomSend, UncertaintyThreshold
from uhlm_ray.validation import ConfigError


def test_defaults_load_and_overrides_apply(tmp_path):
    cfg = load_config(overrides=["data.n_prompts=20", "policy.u_th=0.4"])
    assert cfg.data.n_prompts == 20 and cfg.policy.u_th == 0.4
    yaml = tmp_path / "c.yaml"
    yaml.write_text("uncertainty:\n  k: 10\nchannel:\n  mean_snr_db: 5.0\n")
    cfg = load_config(yaml_path=yaml, overrides=["uncertainty.k=12"])
    assert cfg.uncertainty.k == 12 and cfg.channel.mean_snr_db == 5.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("uncertainty.theta_max=0", r"uncertainty.theta_max=0.0 is outside the allowed range \(0.0, inf\]"),
        ("uncertainty.theta_max=-2", r"uncertainty.theta_max=-2.0 is outside the allowed range"),
        ("uncertainty.k=0", r"uncertainty.k=0 is outside the allowed range \[1, inf\]"),
        ("policy.u_th=1.5", r"policy.u_th=1.5 is outside the allowed range \[0.0, 1.0\]"),
        ("policy.u_th=-0.1", r"policy.u_th=-0.1 is outside the allowed range \[0.0, 1.0\]"),
        ("policy.send_prob=2", r"policy.send_prob=2.0 is outside the allowed range \[0.0, 1.0\]"),
        ("data.name=squad", r"data.name='squad' is not one of \['alpaca', 'builtin', 'creak', 'qed', 'strategyqa'\]"),
        ("methods=[hlm,foo]", r"methods\[1\]='foo' is not one of"),
        ("uncertainty.measure=dropout", r"uncertainty.measure='dropout' is not one of"),
        ("payload.prob_bits=8", r"payload.prob_bits='8' is not one of \['16', '32'\]"),
        ("channel.fading=rician", r"channel.fading='rician' is not one of"),
        ("decode.max_new_tokens=0", r"decode.max_new_tokens=0 is outside the allowed range"),
        ("data.n_prompts=0", r"data.n_prompts=0 is outside the allowed range"),
        ("clock.tau_slm_ms=0", r"clock.tau_slm_ms=0.0 is outside the allowed range"),
    ],
)
def test_bad_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_unknown_keys_and_wrong_types_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"policy.u_threshold: Key 'u_threshold' not in 'PolicyConfig'") as err:
        load_config(overrides=["policy.u_threshold=0.4"])
    assert isinstance(err.value.__cause__, ConfigKeyError)
    with pytest.raises(ConfigError, match=r"uncertainty.k: Value 'many' .* could not be converted") as err:
        load_config(overrides=["uncertainty.k=many"])
    assert isinstance(err.value.__cause__, ValidationError)
    with pytest.raises(ConfigError, match="--config file not found"):
        load_config(yaml_path="/nonexistent.yaml")


def test_policies_check_their_own_ranges():
    with pytest.raises(ConfigError, match="policy.u_th"):
        UncertaintyThreshold(u_th=1.01)
    with pytest.raises(ConfigError, match="policy.send_prob"):
        RandomSend(send_prob=float("nan"))


def test_the_shipped_paper_config_loads():
    from pathlib import Path

    cfg = load_config(yaml_path=Path(__file__).resolve().parents[1] / "jobs" / "configs" / "paper.yaml")
    assert cfg.model.pair == "paper" and cfg.data.name == "alpaca" and cfg.data.n_prompts == 100
    assert (cfg.clock.tau_slm_ms, cfg.clock.tau_llm_ms) == (24.6, 104.6)


def test_an_explicit_tracking_uri_wins_over_the_environment(monkeypatch, tmp_path):
    """MLflow exports MLFLOW_TRACKING_URI to child processes once any code called set_tracking_uri; what the user
    typed must still decide where runs go."""
    from uhlm_ray.config import TrackingConfig
    from uhlm_ray.experiments.tracking import resolve_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert resolve_tracking_uri(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db")) == \
        f"sqlite:///{tmp_path}/m.db"
    assert resolve_tracking_uri(TrackingConfig()) == "sqlite:////elsewhere/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(TrackingConfig()) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
