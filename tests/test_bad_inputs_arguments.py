"""Bad recipe arguments, one table row per case: each is refused at parse time by an error naming
the argument (a YAML config of the wrong shape or type included); a few are accepted and converted
where YAML's spelling has one obvious meaning. From the command line the recipes exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from geofm_hf.classification._cli import parse_recipe_args
from geofm_hf.training.arguments import ArgumentError, parse_arguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

# (command-line arguments, YAML text or None, words the error must contain)
PRETRAIN_ERRORS = {
    "max_steps_negative": (["--max_steps", "-5"], None, ["--max_steps", "-5"]),
    "max_steps_0": (["--max_steps", "0"], None, ["--max_steps", "found 0"]),
    "learning_rate_0": (["--learning_rate", "0"], None, ["--learning_rate", "found 0"]),
    "image_size_0": (["--image_size", "0"], None, ["--image_size"]),
    "mask_ratio_0": (["--mask_ratio", "0"], None, ["--mask_ratio"]),
    "mask_ratio_1": (["--mask_ratio", "1"], None, ["--mask_ratio"]),
    "save_steps_0": (["--save_steps", "0"], None, ["--save_steps"]),
    "logging_steps_0": (["--logging_steps", "0"], None, ["--logging_steps"]),
    "gradient_accumulation_steps_0": (["--gradient_accumulation_steps", "0"], None,
                                      ["--gradient_accumulation_steps"]),
    "batch_size_0": (["--per_device_train_batch_size", "0"], None,
                     ["--per_device_train_batch_size"]),
    "save_total_limit_0": (["--save_total_limit", "0"], None, ["--save_total_limit"]),
    "warmup_negative": (["--warmup_steps", "-1"], None, ["--warmup_steps"]),
    "max_error_fraction_7": (["--max_error_fraction", "7"], None, ["--max_error_fraction"]),
    "max_grad_norm_nan": (["--max_grad_norm", "nan"], None, ["--max_grad_norm"]),
    "adam_beta2_1": (["--adam_beta2", "1"], None, ["--adam_beta2"]),
    "on_error_typo": (["--on_error", "skipp"], None, ["--on_error", "'skipp'"]),
    "nan_policy_typo": (["--nan_policy", "ignore"], None, ["--nan_policy"]),
    "bf16_typo": (["--bf16", "maybe"], None, ["--bf16"]),
    "yaml_list": ([], "- max_steps\n- 5\n", ["expected a mapping", "list"]),
    "yaml_string": ([], "max_steps 5\n", ["expected a mapping", "str"]),
    "yaml_int": ([], "7\n", ["expected a mapping", "int"]),
    "yaml_bad_syntax": ([], "max_steps: [5\n", ["not valid YAML"]),
    "yaml_unknown_key": ([], "max_stepz: 5\n", ["unknown arguments", "max_stepz"]),
    "yaml_int_as_text": ([], "max_steps: ten\n", ["max_steps must be an integer", "'ten'"]),
    "yaml_int_as_float": ([], "max_steps: 1.5\n", ["max_steps must be an integer", "1.5"]),
    "yaml_bool_as_text": ([], "push_to_hub: yes please\n", ["push_to_hub must be true or false"]),
    "yaml_number_as_list": ([], "learning_rate: [1]\n", ["learning_rate must be a number"]),
    "yaml_value_0": ([], "save_steps: 0\n", ["--save_steps", "found 0"]),
    "config_missing": (["--config", "/nonexistent/run.yaml"], None, ["cannot read it"]),
}  # fmt: skip


def _argv(tmp_path, args, yaml_text):
    if yaml_text is None:
        return list(args)
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    return ["--config", str(config), *args]


@pytest.mark.parametrize("name", sorted(PRETRAIN_ERRORS))
def test_pretrain_argument_refused_naming_it(name, tmp_path):
    args, yaml_text, words = PRETRAIN_ERRORS[name]
    with pytest.raises(ArgumentError) as err:
        parse_arguments(_argv(tmp_path, args, yaml_text))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


PRETRAIN_ACCEPTED = {
    # YAML text -> (attribute of the training arguments, value it must hold)
    "bf16: false\n": ("bf16", "false"),
    "bf16: true\n": ("bf16", "true"),
    "learning_rate: 1e-4\n": ("learning_rate", 1e-4),  # YAML 1.1 reads this as a string
    "max_grad_norm: 2\n": ("max_grad_norm", 2.0),
    "save_total_limit: null\n": ("save_total_limit", None),
}


@pytest.mark.parametrize("yaml_text", sorted(PRETRAIN_ACCEPTED))
def test_pretrain_yaml_spellings_converted(yaml_text, tmp_path):
    attr, expected = PRETRAIN_ACCEPTED[yaml_text]
    _, _, args = parse_arguments(_argv(tmp_path, [], yaml_text))
    assert getattr(args, attr) == expected


def _probe_cls():
    import linear_probe

    return linear_probe.ProbeArguments


def _finetune_cls():
    import finetune

    return finetune.FinetuneArguments


REQUIRED = ["--model_name_or_path", "m", "--dataset_name_or_path", "d", "--output_dir", "o"]
CLASSIFICATION_ERRORS = {
    "probe_epochs_0": (_probe_cls, ["--num_train_epochs", "0"], None, ["--num_train_epochs"]),
    "probe_batch_0": (_probe_cls, ["--per_device_train_batch_size", "0"], None,
                      ["--per_device_train_batch_size"]),
    "probe_eval_batch_0": (_probe_cls, ["--per_device_eval_batch_size", "0"], None,
                           ["--per_device_eval_batch_size"]),
    "probe_feature_typo": (_probe_cls, ["--feature", "avg"], None, ["--feature", "'avg'"]),
    "probe_yaml_list": (_probe_cls, [], "- a\n", ["expected a mapping"]),
    "probe_yaml_wrong_type": (_probe_cls, [], "num_train_epochs: many\n",
                              ["num_train_epochs must be an integer"]),
    "finetune_layer_decay_0": (_finetune_cls, ["--layer_decay", "0"], None, ["--layer_decay"]),
    "finetune_label_smoothing_1": (_finetune_cls, ["--label_smoothing", "1"], None,
                                   ["--label_smoothing"]),
    "finetune_learning_rate_0": (_finetune_cls, ["--learning_rate", "0"], None,
                                 ["--learning_rate"]),
    "finetune_mixed_precision_typo": (_finetune_cls, ["--mixed_precision", "fp8"], None,
                                      ["--mixed_precision"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CLASSIFICATION_ERRORS))
def test_classification_argument_refused_naming_it(name, tmp_path):
    cls, args, yaml_text, words = CLASSIFICATION_ERRORS[name]
    argv = [*REQUIRED, *args]
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = [str(tmp_path / "c.yaml"), *argv]
    with pytest.raises(ArgumentError) as err:
        parse_recipe_args(cls(), argv)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


RECIPE_COMMANDS = {
    "linear_probe.py": ([*REQUIRED, "--per_device_eval_batch_size", "0"],
                        "--per_device_eval_batch_size must be > 0: found 0"),
    "finetune.py": ([*REQUIRED, "--per_device_eval_batch_size", "0"],
                    "--per_device_eval_batch_size must be > 0: found 0"),
    "pretrain.py": (["--max_steps", "0"], "--max_steps must be > 0: found 0"),
    "segment.py": ([*REQUIRED, "--per_device_eval_batch_size", "0"],
                   "--per_device_eval_batch_size must be > 0: found 0"),
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(RECIPE_COMMANDS))
def test_recipe_command_line_exits_2(script, tmp_path):
    args, message = RECIPE_COMMANDS[script]
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / script), *args], cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["linear_probe", "finetune", "segment"])
def test_unwritable_output_dir_is_an_argument_error(module, tmp_path, monkeypatch):
    import importlib
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: refuse the write the way EACCES does
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(ro)):
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        ro.chmod(0o555)
    recipe = importlib.import_module(module)
    argv = ["--model_name_or_path", "m", "--dataset_name_or_path", "d",
            "--output_dir", str(ro / "out")]  # fmt: skip
    with pytest.raises(ArgumentError, match="is not writable"):
        recipe.main(argv)
