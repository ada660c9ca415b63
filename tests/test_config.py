import os

import pytest

from tests.helpers import run_script
from utils.config import load_config
from utils.config_schema import CLASSIFY, EVAL, EXPORT, INDEX, INIT, SEARCH, SERVE, TRAIN
from utils.errors import ConfigError


def test_seed_configs_keep_the_seeds_keys_and_defaults():
    train = load_config(TRAIN, "configs/train.yaml", [])
    assert (train["epochs"], train["learning-rate"], train["batch-size"], train["num-workers"]) == (200, 5e-6, 192, 8)
    assert (train["use-amp"], train["use-augment"], train["temperature"]) == (True, True, 0.07)
    assert (train["load-path"], train["best-path"], train["last-path"]) == (
        "checkpoints/pretrain.pt", "checkpoints/best.pt", "checkpoints/last.pt")
    init = load_config(INIT, "configs/init.yaml", [])
    assert (init["pretrained"], init["save-path"], init["image-model"], init["text-model"]) == (
        True, "checkpoints/pretrain.pt", "resnet50", "pretrains/roberta")
    evaluation = load_config(EVAL, "configs/eval.yaml", [])
    assert (evaluation["batch-size"], evaluation["model-path"], evaluation["valid-data"]) == (
        256, "checkpoints/best.pt", "datasets/valid")


def test_every_config_file_is_valid():
    for schema, path in [(INIT, "configs/init.yaml"), (TRAIN, "configs/train.yaml"), (EVAL, "configs/eval.yaml"),
                         (INIT, "configs/demo/init.yaml"), (TRAIN, "configs/demo/train.yaml"),
                         (EVAL, "configs/demo/eval.yaml"), (INIT, "configs/demo-zh/init.yaml"),
                         (TRAIN, "configs/demo-zh/train.yaml"), (EVAL, "configs/demo-zh/eval.yaml"),
                         (INDEX, "configs/index.yaml"), (SEARCH, "configs/search.yaml"),
                         (CLASSIFY, "configs/classify.yaml"), (SERVE, "configs/serve.yaml"),
                         (EXPORT, "configs/export.yaml"), (INIT, "configs/demo-pretrained/init.yaml"),
                         (TRAIN, "configs/demo-pretrained/train.yaml"), (EVAL, "configs/demo-pretrained/eval.yaml"),
                         (TRAIN, "configs/coco/original-train.yaml"), (TRAIN, "configs/coco/improved-train.yaml"),
                         (TRAIN, "configs/finetune/full.yaml"), (TRAIN, "configs/finetune/locked-image.yaml"),
                         (INIT, "configs/demo-binding/init.yaml"), (TRAIN, "configs/demo-binding/train.yaml")]:
        config = load_config(schema, path, [])
        assert set(config) == {key.name for key in schema} | {"config-path"}


def test_command_line_overrides_are_typed():
    config = load_config(TRAIN, "configs/train.yaml", ["--epochs", "3", "--batch-size=64", "--use-amp", "false",
                                                       "--resume", "null"])
    assert (config["epochs"], config["batch-size"], config["use-amp"], config["resume"]) == (3, 64, False, None)


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "ten"], ["'epochs'", "command line", "an integer", "'ten'"]),
    (["--batchsize", "3"], ["unknown key 'batchsize'", "batch-size"]),
    (["--augment-flip", "maybe"], ["'augment-flip'", "one of auto, on, off"]),
    (["--device", "gpu"], ["'device'", "cuda:N"]),
    (["--batch-size", "1"], ["at least 2"]),
    (["--epochs"], ["--epochs needs a value"]),
])
def test_bad_overrides_name_the_key_and_the_choices(argv, words):
    with pytest.raises(ConfigError) as error:
        load_config(TRAIN, "configs/train.yaml", argv)
    for word in words:
        assert word in str(error.value)


def test_yaml_numbers_in_scientific_notation_are_numbers(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text("learning-rate: 1e-5\nepochs: 3\n")
    assert load_config(TRAIN, str(path), [])["learning-rate"] == 1e-5


def test_seed_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="at most 2147483647"):
        load_config(TRAIN, "configs/train.yaml", ["--seed", "100000000000000"])


def test_bad_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'learning_rate'; valid keys: .*learning-rate"):
        load_config(TRAIN, str(path), [])
    path.write_text("use-amp: maybe\n")
    with pytest.raises(ConfigError, match=f"{path}: key 'use-amp' must be true or false"):
        load_config(TRAIN, str(path), [])
    path.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TRAIN, str(path), [])


@pytest.mark.parametrize("script, argv, words", [
    ("train.py", ["--epochs", "ten"], ["epochs"]),
    ("eval.py", ["--config", "configs/missing.yaml"], ["configs/missing.yaml", "not found"]),
    ("init.py", ["--image-size", "big"], ["image-size"]),
])
@pytest.mark.slow
def test_scripts_exit_2_with_one_message_and_no_traceback(script, argv, words):
    result = run_script(script, *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr


@pytest.mark.slow
def test_help_lists_keys_and_exits_0():
    result = run_script("train.py", "--help")
    assert result.returncode == 0 and "--learning-rate" in result.stdout


SCRIPT_CONFIGS = {"init": INIT, "train": TRAIN, "eval": EVAL, "index": INDEX, "search": SEARCH,
                  "classify": CLASSIFY, "serve": SERVE, "export": EXPORT}


def test_each_scripts_own_config_gives_every_key_its_default():
    from utils.config import read_yaml

    for name, schema in SCRIPT_CONFIGS.items():
        assert schema.defaults_path == f"configs/{name}.yaml"
        data = read_yaml(schema.defaults_path)
        assert "base" not in data and set(data) == {key.name for key in schema}, name


def test_derived_configs_name_a_base_and_list_only_what_they_change():
    import glob

    from utils.config import read_yaml

    derived = sorted(glob.glob("configs/*/*.yaml"))
    assert len(derived) >= 11
    for path in derived:
        data = read_yaml(path)
        assert isinstance(data.get("base"), str), f"{path} names no base"
        schema = INIT if path.endswith("init.yaml") else EVAL if path.endswith("eval.yaml") else TRAIN
        base = os.path.normpath(os.path.join(os.path.dirname(path), data["base"]))
        inherited = load_config(schema, base, [])
        repeated = [k for k, v in data.items() if k != "base" and inherited[k] == v]
        assert not repeated, f"{path} repeats its base's values for {repeated}"


def test_a_default_changed_in_the_scripts_own_file_reaches_every_config_built_on_it(tmp_path):
    import shutil

    from utils.config import Schema

    shutil.copytree("configs", tmp_path / "configs")
    own = tmp_path / "configs" / "train.yaml"
    own.write_text(own.read_text().replace("weight-decay: 0.1", "weight-decay: 0.3"))
    schema = Schema(str(own), TRAIN)
    assert load_config(schema, str(tmp_path / "configs/coco/original-train.yaml"), [])["weight-decay"] == 0.3
    assert load_config(schema, str(tmp_path / "configs/demo-zh/train.yaml"), [])["weight-decay"] == 0.05
    user = tmp_path / "mine.yaml"  # no base: builds on the script's own file
    user.write_text("epochs: 2\n")
    assert load_config(schema, str(user), [])["weight-decay"] == 0.3


@pytest.mark.parametrize("text, words", [
    ("base: missing.yaml\n", ["missing.yaml", "not found", "base of"]),
    ("base: [1]\n", ["key 'base'", "path of another config file"]),
    ("base: loop.yaml\n", ["cycle"]),
])
def test_bad_base_names_the_file(tmp_path, text, words):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(TRAIN, str(tmp_path / "loop.yaml"), [])
    for word in words:
        assert word in str(error.value)


def test_an_incomplete_scripts_own_config_is_an_error_naming_the_missing_keys(tmp_path):
    from utils.config import Schema

    own = tmp_path / "train.yaml"
    own.write_text("epochs: 3\n")
    with pytest.raises(ConfigError, match=r"train.yaml: missing key\(s\) learning-rate, batch-size"):
        load_config(Schema(str(own), TRAIN), str(own), [])


def test_every_training_key_decides_whether_it_defines_the_run():
    from training.resume import RUN_DEFINING_KEYS

    assert all(isinstance(key.run_defining, bool) for key in TRAIN)
    for name in ("valid-data", "grad-clip", "use-amp", "temperature", "epochs", "seed", "train-data"):
        assert name in RUN_DEFINING_KEYS, name
    for name in ("num-workers", "device", "resume", "overwrite", "log-dir", "compile"):
        assert name not in RUN_DEFINING_KEYS, name


def test_early_stop_counts_epochs_without_a_better_mean_recall():
    from training.loop import stop_early

    assert not stop_early([0.1, 0.2, 0.2], 0)  # 0 = off
    assert not stop_early([0.1, 0.2], 2)  # not enough epochs yet
    assert stop_early([0.1, 0.3, 0.3, 0.2], 2)  # two epochs, none above 0.3
    assert not stop_early([0.1, 0.3, 0.2, 0.31], 2)  # the last one improved
    assert stop_early([0.5, 0.5], 1)  # equal is not better
