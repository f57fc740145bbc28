"""The run-config schema (memr1_jax.config): every field reachable from the command line,
round trips through the run folder's JSON, clear errors, shipped config files."""

import dataclasses
import json
import pathlib

import pytest

from memr1_jax import config as C
from memr1_jax.parallel.targets import TARGETS
from memr1_jax.rl.train_state import RLConfig

CONFIGS = sorted(pathlib.Path("configs").glob("*.py"))


def _leaves(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            yield from _leaves(v, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, v


def _other_value(key, value):
    """A different valid value of the same type, as a command-line string and as parsed."""
    choices = {"model.encoder": "hashing", "task.agent": "manager", "task.bank": "llm", "eval.split": "validation",
               "eval.manager": "add-all", "eval.system": "rag", "task.answer.prompt": "full", "task.manager.kind":
               "add-all", "rl.algorithm": "ppo", "rl.schedule": "cosine", "rl.kl_kind": "k1", "rl.agg_mode":
               "sequence-mean-token-sum", "rl.adv_estimator": "rloo", "task.manager.template": "Facts: {facts}",
               "model.dtype": "bfloat16", "model.param_dtype": "bfloat16", "model.attention": "blockwise"}
    if key in choices:
        return choices[key], choices[key]
    if isinstance(value, bool):
        return str(not value).lower(), not value
    if isinstance(value, int):
        return str(value + 1), value + 1
    if isinstance(value, float):
        other = value / 2 if key in C.UNIT_KEYS else value + 0.5   # stays inside [0, 1]
        return repr(other), other
    if isinstance(value, str):
        return "some/other", "some/other"
    if value is None:   # optional ints / floats of RLConfig
        return "2", 2
    raise AssertionError(f"{key}: no test value for {value!r}")


def test_every_field_is_settable_from_the_command_line():
    base = C.override(C.default_config(), {"rl.mini_batch_size": None, "rl.micro_batch_size": None,
                                           "task.answer.prompt": "compact", "rl.shared_prompt": False})
    keys = dict(_leaves(base))
    # the whole RLConfig is there (LoRA has its own section)
    assert {f"rl.{f.name}" for f in dataclasses.fields(RLConfig)} - {"rl.lora"} <= set(keys)
    for key, value in keys.items():
        if key in ("rl.lora", "mesh.rules"):   # set in config files (LoRA through its own section)
            continue
        if key in ("task.manager_sft", "task.manager_items", "task.manager_sparse_keep", "task.manager_crowd",
                   "task.manager_counterfactual",
                   "distributed.process_id"):   # need other keys set with them (below, and
            continue                                            # test_data_changing)
        raw, want = _other_value(key, value)
        if key in ("rl.mini_batch_size", "rl.micro_batch_size", "rollout.questions_per_step", "rl.group_size"):
            raw, want = "4", 4     # keep the batch divisible
        if key == "eval.system":
            raw = want = "rag"
        if key == "data.format":
            raw = want = "msc"
        if key == "data.facts":
            raw = want = "extract"
        if key == "task.manager.output":
            raw = want = "lines"
        if key == "task.manager.min_score":
            raw, want = "0.6", 0.6     # a cosine
        if key == "task.manager_reward":
            raw = want = "gold"
        if key == "logging.wandb":
            raw = want = "offline"
        got = C.override(base, {key: raw}, from_strings=True)
        node = got
        for part in key.split("."):
            node = getattr(node, part)
        assert node == want, key
        # and nothing else changed
        assert {k: v for k, v in _leaves(got) if k != key} == {k: v for k, v in _leaves(base) if k != key}, key


def test_optional_fields_take_none_and_types_are_checked():
    cfg = C.override(C.default_config(), {"rl.clip_eps_high": "0.28", "rl.max_grad_norm": "none"}, from_strings=True)
    assert cfg.rl.clip_eps_high == 0.28 and cfg.rl.max_grad_norm is None
    with pytest.raises(C.ConfigError, match="steps='abc'.*expected int"):
        C.override(C.default_config(), {"steps": "abc"}, from_strings=True)
    with pytest.raises(C.ConfigError, match="expected true or false"):
        C.override(C.default_config(), {"export_hf": "maybe"}, from_strings=True)
    with pytest.raises(C.ConfigError, match="expected int, got str"):
        C.override(C.default_config(), {"steps": "3"})          # Python values are not parsed
    with pytest.raises(C.ConfigError, match="section.*model.name"):
        C.override(C.default_config(), {"model": "tiny-llama"}, from_strings=True)
    with pytest.raises(C.ConfigError, match="rl.algorithm.*expected one of"):
        C.override(C.default_config(), {"rl.algorithm": "dpo"}, from_strings=True)


@pytest.mark.parametrize("key,closest", [("rl.learning_rat", "rl.learning_rate"), ("stepz", "steps"),
                                         ("task.answer.k_per_speakers", "task.answer.k_per_speaker"),
                                         ("data.val_limt", "data.val_limit")])
def test_unknown_key_names_the_closest(key, closest):
    with pytest.raises(C.ConfigError, match=f"unknown config key '{key}'; did you mean '{closest}'"):
        C.override(C.default_config(), {key: "1"}, from_strings=True)


def test_cross_field_errors_name_the_keys():
    with pytest.raises(C.ConfigError, match="rl.mini_batch_size=5 does not divide the 32 rows"):
        C.override(C.default_config(), {"rl.mini_batch_size": 5})
    with pytest.raises(C.ConfigError, match="rl.lora"):
        C.override(C.default_config(), {"rl": RLConfig(lora={"rank": 4})})
    # constrained manager samples: the sampler's masked log-probs are not the update's old policy
    manager = {"task.agent": "manager", "task.manager.constrained": True}
    with pytest.raises(C.ConfigError, match="rollout.old_logprobs_from_sampler=false"):
        C.override(C.default_config(), manager)
    C.override(C.default_config(), {**manager, "rollout.old_logprobs_from_sampler": False})
    C.override(C.default_config(), {"task.manager.constrained": True})   # bank building only: fine


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_round_trips_through_json(path):
    cfg = C.load_config_file(path)
    assert C.from_dict(json.loads(C.to_json(cfg))) == cfg
    assert cfg.name == path.stem
    # config files import the package normally
    assert "sys.path" not in path.read_text()


def test_from_dict_rejects_unknown_keys_and_fills_defaults():
    assert C.from_dict({"steps": 3}) == C.override(C.RunConfig(), {"steps": 3})
    with pytest.raises(C.ConfigError, match="unknown config key 'rl.gama'; did you mean 'rl.gamma'"):
        C.from_dict({"rl": {"gama": 1.0}})


def test_print_config_prints_the_resolved_config(capsys):
    from memr1_jax.train import main
    assert main(["--config", "configs/tiny_cpu.py", "--config.rl.beta=0.04", "--print_config"]) == 0
    printed = C.from_dict(json.loads(capsys.readouterr().out))
    assert printed == C.override(C.load_config_file("configs/tiny_cpu.py"), {"rl.beta": 0.04})
    assert main(["--config.nosuch=1"]) == 2
    assert "unknown config key 'nosuch'" in capsys.readouterr().err
    assert main(["--config", "configs/missing.py"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_paper_configs_are_paper_scale():
    for path in pathlib.Path("configs").glob("*_paper.py"):
        c = C.load_config_file(path)
        assert c.rl.learning_rate == 1e-6 and c.rl.critic_learning_rate == 1e-5, path
        assert c.rollout.max_prompt_tokens == 4096 and c.rl.temperature == 1.0 and c.lora.rank == 0, path
        assert c.rollout.questions_per_step * c.rl.group_size == 128, path
        assert c.task.answer.k_per_speaker == 30, path
        # placed for a named target: FSDP over all its devices, bf16 activations, remat, blockwise
        target = TARGETS[c.target]
        assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (1, target.devices, 1), path
        assert (c.model.dtype, c.model.param_dtype, c.model.remat, c.model.attention) == \
            ("bfloat16", "float32", True, "blockwise"), path
        assert c.rl.micro_batch_size % target.devices == 0, path
    with pytest.raises(C.ConfigError, match="target='v9-1'"):
        C.paper_config("x", "answer", "grpo", "qwen2.5-7b-instruct", "v9-1")


def test_shared_prompt_micro_batches_must_hold_whole_groups_at_config_time():
    # Found when the config is read, not by the update after the first rollouts.
    with pytest.raises(C.ConfigError, match="rl.micro_batch_size=4.*multiples of rl.group_size=8"):
        C.override(C.default_config(), {"rl.micro_batch_size": 4})
    assert C.override(C.default_config(), {"rl.micro_batch_size": 4, "rl.shared_prompt": False}).rl.micro_batch_size == 4
    assert C.override(C.default_config(), {"rl.micro_batch_size": 16}).rl.micro_batch_size == 16


def test_system_at_manager_names_a_known_manager():
    cfg = C.override(C.evaluation_defaults(), {"eval.system": "memory-r1,memory-r1@add-all,base@gold"})
    assert cfg.eval.systems == ["memory-r1", "memory-r1@add-all", "base@gold"]
    with pytest.raises(C.ConfigError, match=r"'base@nope' names manager 'nope'"):
        C.override(cfg, {"eval.system": "base@nope"})
    with pytest.raises(C.ConfigError, match="is not one of"):
        C.override(cfg, {"eval.system": "bogus@add-all"})


def test_manager_items_steps_needs_gold_scored_training():
    base = C.load_config_file("configs/memory_manager_grpo_changing_cpu.py")
    got = C.override(base, {"task.manager_items": "steps"}, from_strings=True)   # gold reward: fine
    assert got.task.manager_items == "steps"
    with pytest.raises(C.ConfigError, match="manager_items='steps' has no question to answer"):
        C.override(base, {"task.manager_items": "steps", "task.manager_reward": "answer"}, from_strings=True)
    with pytest.raises(C.ConfigError, match="manager_items='every'"):
        C.override(base, {"task.manager_items": "every"}, from_strings=True)


def _numeric_keys(cfg):
    import functools
    for key in C.all_keys(cfg):
        value = functools.reduce(getattr, key.split("."), cfg)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, value


def test_every_numeric_key_refuses_a_negative_value_naming_the_key():
    # -1 (a mistyped sign) must stop at the command line, not at step 1 ("learning rate too high?")
    # or after a run folder exists (questions_per_step=0: "pack_episodes: no episodes").
    keys = [k for k, _ in _numeric_keys(C.default_config()) if not k.startswith("mesh.")]
    assert "rl.learning_rate" in keys and "rollout.questions_per_step" in keys
    for key in keys:
        with pytest.raises(C.ConfigError, match=f"^{key}="):
            C.resolve(None, [(key, "-2")], C.default_config())
    for key in C.POSITIVE_KEYS:
        with pytest.raises(C.ConfigError, match=f"^{key}=.*must be (> 0|>= 1)"):
            C.resolve(None, [(key, "0")], C.default_config())
    for key, interval in C.UNIT_KEYS.items():
        if key.startswith("rl."):
            with pytest.raises(C.ConfigError, match=f"^{key}=1.5: must be in"):
                C.resolve(None, [(key, "1.5")], C.default_config())
            if interval.endswith(")"):
                with pytest.raises(C.ConfigError, match=f"^{key}=1.0: must be in"):
                    C.resolve(None, [(key, "1.0")], C.default_config())


@pytest.mark.parametrize("key, value", [("rl.learning_rate", "-1"), ("rollout.questions_per_step", "0"),
                                        ("distributed.process_id", "2")])
def test_train_refuses_bad_values_before_anything_loads(tmp_path, capsys, key, value):
    from memr1_jax import train
    run = tmp_path / "run"
    assert train.main([f"--config.{key}={value}", f"--config.run_dir={run}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {key}=")
    assert not run.exists()


def test_an_unknown_wandb_mode_is_refused_naming_the_key():
    with pytest.raises(C.ConfigError, match=r"logging.wandb='cloud': expected '' \(off\), 'offline' or 'online'"):
        C.override(C.default_config(), {"logging.wandb": "cloud"}, from_strings=True)
