"""The catalogue of plausible mistakes, shared by tests/test_bad_inputs.py and scripts/bad_input_table.py.

Each case is (job, arguments, what the one-line refusal must name). Arguments may hold placeholders that the
caller fills with `fill`: {tiny_slm} / {tiny_llm} (a working tiny pair), {other_llm} (a tiny model whose
vocabulary differs), {bad} (a folder of malformed data files), {no_config} (a folder without config.json),
{bad_config} / {list_config} (a malformed YAML run config; one that is a list), {a_file} (a plain file),
{space:NAME} (a space file written from SPACES[NAME]).
"""

from __future__ import annotations

from pathlib import Path

TINY = ["model.pair=custom", "model.slm={tiny_slm}", "model.llm={tiny_llm}", "model.dtype=float32"]

# a valid space to start from; each broken one below changes one thing
GOOD_SPACE = """name: t
objectives:
  - {metric: u_hlm.accuracy, mode: max}
methods: [llm, u_hlm]
params:
  policy.u_th: {grid: [0.2, 0.6]}
"""

SPACES = {
    "grid_second_value": GOOD_SPACE.replace("[0.2, 0.6]", "[0.2, 1.5]"),
    "grid_empty": GOOD_SPACE.replace("[0.2, 0.6]", "[]"),
    "grid_not_a_list": GOOD_SPACE.replace("[0.2, 0.6]", "0.2"),
    "choice_bad_value": GOOD_SPACE.replace("grid: [0.2, 0.6]", "choice: [0.2, -1]").replace(
        "params:", "search: random\nparams:"),
    "uniform_reversed": GOOD_SPACE.replace("grid: [0.2, 0.6]", "uniform: [0.6, 0.2]").replace(
        "params:", "search: random\nparams:"),
    "uniform_upper_out": GOOD_SPACE.replace("grid: [0.2, 0.6]", "uniform: [0.2, 3.0]").replace(
        "params:", "search: random\nparams:"),
    "loguniform_zero": GOOD_SPACE.replace("grid: [0.2, 0.6]", "loguniform: [0.0, 0.5]").replace(
        "params:", "search: random\nparams:"),
    "randint_out": GOOD_SPACE.replace("policy.u_th: {grid: [0.2, 0.6]}", "uncertainty.k: {randint: [0, 5]}")
    .replace("params:", "search: random\nparams:"),
    "unknown_distribution": GOOD_SPACE.replace("grid:", "normal:"),
    "two_distributions": GOOD_SPACE.replace("{grid: [0.2, 0.6]}", "{grid: [0.2], choice: [0.3]}"),
    "grid_with_random_search": GOOD_SPACE.replace("params:", "search: random\nparams:"),
    "unknown_param_key": GOOD_SPACE.replace("policy.u_th", "policy.u_thr"),
    "objective_typo": GOOD_SPACE.replace("u_hlm.accuracy", "u_hlm.acuracy"),
    "objective_unknown_method": GOOD_SPACE.replace("u_hlm.accuracy", "cu_hlm.accuracy"),
    "objective_mode": GOOD_SPACE.replace("mode: max", "mode: up"),
    "objective_extra_key": GOOD_SPACE.replace("mode: max}", "mode: max, goal: 1}"),
    "objectives_empty": GOOD_SPACE.replace("  - {metric: u_hlm.accuracy, mode: max}\n", "").replace(
        "objectives:", "objectives: []"),
    "unknown_space_key": GOOD_SPACE + "trials: 4\n",
    "missing_objectives": GOOD_SPACE.replace("objectives:\n  - {metric: u_hlm.accuracy, mode: max}\n", ""),
    "params_empty": GOOD_SPACE.replace("params:\n  policy.u_th: {grid: [0.2, 0.6]}\n", "params: {}\n"),
    "methods_empty": GOOD_SPACE.replace("[llm, u_hlm]", "[]"),
    "methods_unknown": GOOD_SPACE.replace("[llm, u_hlm]", "[llm, u_hlm, turbo]"),
    "search_unknown": GOOD_SPACE.replace("params:", "search: bayes\nparams:"),
    "num_samples_zero": GOOD_SPACE.replace("params:", "num_samples: 0\nparams:"),
    "base_bad_value": GOOD_SPACE.replace("params:", "base: {decode.max_new_tokens: 0}\nparams:"),
    "base_unknown_key": GOOD_SPACE.replace("params:", "base: {decode.max_tokens: 8}\nparams:"),
    "not_yaml": "name: t\nobjectives: [\n",
    "not_a_mapping": "- just\n- a list\n",
    "data_swept_missing": GOOD_SPACE.replace("policy.u_th: {grid: [0.2, 0.6]}", "data.name: {grid: [builtin, qed]}"),
}

# (job, argv, the text the message must contain)
CASES: list[tuple[str, list[str], str]] = [
    # config values, the channel
    ("evaluate", ["channel.mean_snr_db=nan"], "channel.mean_snr_db"),
    ("evaluate", ["channel.tx_power_dbm=nan"], "channel.tx_power_dbm"),
    ("evaluate", ["channel.mean_snr_db=-200"], "channel.mean_snr_db"),
    ("evaluate", ["channel.mean_snr_db=inf"], "channel.mean_snr_db"),
    ("evaluate", ["channel.distance_m=1e9"], "channel.distance_m"),
    ("evaluate", ["channel.distance_m=200000"], "channel.tx_power_dbm"),  # a legal distance, an SNR of -87 dB
    ("evaluate", ["channel.noise_dbm=nan"], "channel.noise_dbm"),
    ("evaluate", ["channel.bandwidth_hz=0"], "channel.bandwidth_hz"),
    ("evaluate", ["channel.path_loss_exponent=0"], "channel.path_loss_exponent"),
    ("evaluate", ["channel.model=ideal"], "channel.model"),
    ("evaluate", ["channel.arq_rate=-1"], "channel.arq_rate"),
    ("evaluate", ["channel.upload_overhead_ms=-5"], "channel.upload_overhead_ms"),
    ("evaluate", ["clock.snr_sweep_db=[0,nan]"], "clock.snr_sweep_db[1]"),
    ("evaluate", ["clock.tau_llm_ms=0"], "clock.tau_llm_ms"),
    # config values, methods and decoding
    ("evaluate", ["policy.u_th=1.5"], "policy.u_th"),
    ("evaluate", ["policy.u_th=nan"], "policy.u_th"),
    ("evaluate", ["decode.seed=-1"], "decode.seed"),
    ("evaluate", ["decode.seed=abc"], "decode.seed"),
    ("evaluate", ["decode.max_new_tokens=0"], "decode.max_new_tokens"),
    ("evaluate", ["methods=[]"], "methods"),
    ("evaluate", ["methods=[llm,turbo]"], "methods[1]"),
    ("evaluate", ["decod.seed=1"], "decod"),
    ("evaluate", ["uncertainty.k=0"], "uncertainty.k"),
    ("evaluate", ["uncertainty.measure=dropout"], "uncertainty.measure"),
    ("evaluate", ["block.max_drafts=0"], "block.max_drafts"),
    ("evaluate", ["block.fixed_drafts=99"], "block.fixed_drafts"),
    ("evaluate", ["block.payload=zip"], "block.payload"),
    ("evaluate", ["cu_hlm.top_p=0"], "cu_hlm.top_p"),
    ("evaluate", ["model.dtype=int8"], "model.dtype"),
    ("evaluate", ["model.slm_head_vocab=0"], "model.slm_head_vocab"),
    ("evaluate", ["--config", "/nonexistent/run.yaml"], "--config"),
    ("evaluate", ["--config", "{bad_config}"], "not valid YAML"),
    ("evaluate", ["--config", "{list_config}"], "--config"),
    ("evaluate", ["--config", "{bad}"], "--config"),  # a folder
    ("evaluate", ["decode.max_new_tokens=["], "decode.max_new_tokens=["),
    ("evaluate", ["output_dir={a_file}/results"], "output_dir"),  # under a plain file: cannot be created
    ("evaluate", ["runtime.scratch_dir={a_file}"], "runtime.scratch_dir"),
    ("evaluate", ["runtime.batch_size=0"], "runtime.batch_size"),
    ("evaluate", ["clock.timing=measured", "runtime.batch_size=4"], "runtime.batch_size"),
    ("evaluate", ["clock.timing=guessed"], "clock.timing"),
    ("evaluate", ["clock.tau_measure_ms=-1"], "clock.tau_measure_ms"),
    ("evaluate", ["runtime.trial_resources={GPU: 0.5}"], "model.device"),
    # data folders and files
    ("evaluate", ["data.name=squad"], "data.name"),
    ("evaluate", ["data.n_prompts=0"], "data.n_prompts"),
    ("evaluate", ["data.name=alpaca"], "data.path"),
    ("evaluate", ["data.name=alpaca", "data.path=/nonexistent/data"], "data.path"),
    ("evaluate", ["data.name=qed", "data.path={no_config}"], "qed-dev.jsonlines"),
    ("evaluate", ["data.name=alpaca", "data.path={bad}"], "alpaca_5000.json"),
    ("evaluate", ["data.name=creak", "data.path={bad}"], "flan_cot_creak_train.tsv"),
    ("evaluate", ["data.name=strategyqa", "data.path={bad}"], "flan_cot_strategyqa_train.tsv"),
    ("evaluate", ["data.name=qed", "data.path={bad}"], "qed-dev.jsonlines"),
    ("reproduce", ["data.path=/nonexistent/data"], "data.path"),
    ("reproduce", [], "data.path"),
    ("reproduce", ["reproduce.datasets=[alpaca,squad]"], "reproduce.datasets[1]"),
    # model paths and tokenizers (files only, before any weights load)
    ("evaluate", ["model.pair=custom", "model.slm=/nonexistent/slm", "model.llm={tiny_llm}"], "model.slm"),
    ("evaluate", ["model.pair=custom", "model.slm={tiny_slm}", "model.llm=/nonexistent/llm"], "model.llm"),
    ("evaluate", ["model.pair=custom", "model.slm={tiny_slm}"], "model.llm"),
    ("evaluate", ["model.pair=custom", "model.slm={no_config}", "model.llm={tiny_llm}"], "config.json"),
    ("evaluate", ["model.pair=custom", "model.slm={tiny_slm}", "model.llm={other_llm}"], "vocabulary"),
    ("evaluate", [*TINY, "model.slm_head_vocab=19"], "model.slm_head_vocab=19 is outside 1..18"),
    ("evaluate", ["model.pair=custom", "model.slm=/nonexistent/slm.gguf", "model.llm={tiny_llm}"], "model.slm"),
    ("evaluate", ["model.pair=turbo"], "model.pair"),
    ("cell", ["model.pair=custom", "model.slm={tiny_slm}", "model.llm={other_llm}"], "vocabulary"),
    # the cell's runtime
    ("cell", ["cell.n_devices=0"], "cell.n_devices"),
    ("cell", ["cell.n_devices=2", "cell.distances_m=[100]"], "cell.distances_m"),
    ("cell", ["cell.method=llm"], "cell.method"),
    ("cell", ["runtime.http_port=70000"], "runtime.http_port"),
    ("cell", ["runtime.verifier_replicas=0"], "runtime.verifier_replicas"),
    ("cell", ["runtime.verifier_device=cuda"], "runtime.verifier_num_gpus"),
    ("cell", ["runtime.verifier_autoscaling={max_replica: 4}"], "runtime.verifier_autoscaling"),
    ("cell", [*TINY, "runtime.address=127.0.0.1:1"], "runtime.address"),
    # the sweep: the command line
    ("sweep", ["no_such_space"], "no_such_space"),
    ("sweep", ["default", "channel.mean_snr_db=nan"], "channel.mean_snr_db"),
    ("sweep", ["default", "policy.u_th=0.3"], "policy.u_th"),
    ("sweep", ["default", "methods=[]"], "methods"),
    ("sweep", ["paper_grid", "data.path=/nonexistent/data"], "data.path"),
    ("sweep", ["default", "runtime.address=127.0.0.1:1", *TINY], "runtime.address"),
    ("sweep", ["default", "runtime.verifier_device=cuda"], "runtime.verifier_num_gpus"),
    ("sweep", ["default", "model.pair=custom", "model.slm={tiny_slm}", "model.llm={other_llm}"], "vocabulary"),
    ("sweep", ["default", "runtime.trial_resources={gpu_node: 1}", *TINY], "runtime.trial_resources"),
    # the sweep: space files
    *[("sweep", ["{space:" + name + "}", *TINY], must) for name, must in [
        ("grid_second_value", "params.policy.u_th value 1.5"), ("grid_empty", "params.policy.u_th"),
        ("grid_not_a_list", "params.policy.u_th"), ("choice_bad_value", "params.policy.u_th value -1"),
        ("uniform_reversed", "params.policy.u_th"), ("uniform_upper_out", "params.policy.u_th value 3.0"),
        ("loguniform_zero", "params.policy.u_th"), ("randint_out", "params.uncertainty.k value 0"),
        ("unknown_distribution", "params.policy.u_th"), ("two_distributions", "params.policy.u_th"),
        ("grid_with_random_search", "params.policy.u_th"), ("unknown_param_key", "policy.u_thr"),
        ("objective_typo", "objectives[0].metric"), ("objective_unknown_method", "objectives[0].metric"),
        ("objective_mode", "objectives[0].mode"), ("objective_extra_key", "objectives[0]"),
        ("objectives_empty", "objectives"), ("unknown_space_key", "trials"),
        ("missing_objectives", "objectives"), ("params_empty", "params"), ("methods_empty", "methods"),
        ("methods_unknown", "methods[2]"), ("search_unknown", "search"), ("num_samples_zero", "num_samples"),
        ("base_bad_value", "decode.max_new_tokens"), ("base_unknown_key", "decode.max_tokens"),
        ("not_yaml", "YAML"), ("not_a_mapping", "mapping"), ("data_swept_missing", "data.path"),
    ]],
]


def write_fixtures(root: Path, *, tiny_slm: str, tiny_llm: str) -> dict[str, str]:
    """The files the placeholders name, under `root`; returns the placeholder values."""
    from uhlm_ray.models.tiny import WORDS, save_tiny_model

    bad = root / "bad_data"
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "alpaca_5000.json").write_text('[{"instruction": "Say hi", "input": "", "output": "hi"}, {"instr')
    (bad / "flan_cot_creak_train.tsv").write_text("Is the sky blue?\tyes\n")  # the reasoning column is missing
    (bad / "flan_cot_strategyqa_train.tsv").write_text("Q\tA\tR\tsurplus\n")
    (bad / "qed-dev.jsonlines").write_text('{"example_id": 1, "title_text": "x"}\n')  # no question, no annotation
    no_config = root / "no_config"
    no_config.mkdir(exist_ok=True)
    other = root / "other_llm"
    if not (other / "config.json").is_file():
        save_tiny_model(other, words=[w.upper() for w in WORDS], layers=2, hidden=32, seed=3)
    (root / "bad_config.yaml").write_text("decode:\n  max_new_tokens: [1, 2\n")  # an unclosed list
    (root / "list_config.yaml").write_text("- decode.max_new_tokens=8\n")  # a list, not a mapping of sections
    (root / "a_file").write_text("not a folder\n")
    values = {"tiny_slm": tiny_slm, "tiny_llm": tiny_llm, "other_llm": str(other), "bad": str(bad),
              "no_config": str(no_config), "bad_config": str(root / "bad_config.yaml"),
              "list_config": str(root / "list_config.yaml"), "a_file": str(root / "a_file")}
    for name, text in SPACES.items():
        path = root / "spaces" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        values[f"space:{name}"] = str(path)
    return values


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out
