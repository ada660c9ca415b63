import pytest

from tests.conftest import run_script
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
                         (TRAIN, "configs/coco/seed-train.yaml"), (TRAIN, "configs/coco/improved-train.yaml")]:
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
def test_scripts_exit_2_with_one_message_and_no_traceback(script, argv, words):
    result = run_script(script, *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr


def test_help_lists_keys_and_exits_0():
    result = run_script("train.py", "--help")
    assert result.returncode == 0 and "--learning-rate" in result.stdout
