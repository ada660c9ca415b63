"""Train the joint model with the seed's contrastive objective (configs/train.yaml)."""
from utils.config import load_config
from utils.config_schema import TRAIN
from utils.errors import run_cli
from utils.training import train


def main(argv):
    train(load_config(TRAIN, "configs/train.yaml", argv))


if __name__ == "__main__":
    run_cli(main)
