"""Train the joint model with the original project's contrastive objective (configs/train.yaml)."""
from training.loop import train
from utils.config import load_config
from utils.config_schema import TRAIN
from utils.errors import run_cli


def main(argv):
    train(load_config(TRAIN, TRAIN.defaults_path, argv))


if __name__ == "__main__":
    run_cli(main)
