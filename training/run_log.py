"""Training metrics on disk: metrics.jsonl, metrics.csv, TensorBoard events and curves.png."""
import csv
import importlib.util
import json
import logging
import os

logger = logging.getLogger(__name__)


class RunLog:
    """Writes one record per epoch (rewritten from the full history, so a resumed run stays consistent)
    and per-step scalars to TensorBoard."""

    def __init__(self, log_dir, history, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.history = list(history)
        self.writer = SummaryWriter(log_dir, purge_step=purge_step)

    def step(self, step, loss, lr, temperature, swap_margin=None):
        self.writer.add_scalar("train/loss", loss, step)
        if swap_margin is not None:
            self.writer.add_scalar("train/swap_margin", swap_margin, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/temperature", temperature, step)

    def epoch(self, record):
        self.history.append(record)
        for name, value in record.items():
            if name not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{name}", value, record["epoch"])
        self.writer.flush()
        with open(os.path.join(self.log_dir, "metrics.jsonl"), "w", encoding="utf-8") as handle:
            for item in self.history:
                handle.write(json.dumps(item) + "\n")
        columns = list(dict.fromkeys(name for item in self.history for name in item))
        with open(os.path.join(self.log_dir, "metrics.csv"), "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)

    def close(self):
        self.writer.close()
        if not self.history:
            return
        if importlib.util.find_spec("matplotlib") is None:  # a requirement; a trimmed environment keeps the results
            logger.warning(f"matplotlib is not installed: {self.log_dir}/curves.png not drawn (metrics.csv has "
                           f"the same numbers)")
            return
        plot_curves(self.history, os.path.join(self.log_dir, "curves.png"))


def plot_curves(history, path):
    """Loss and R@k per epoch, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [item["epoch"] for item in history]
    trained = [item for item in history if item["train_loss"] is not None]  # epoch 0 (validate-first) has none
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot([item["epoch"] for item in trained], [item["train_loss"] for item in trained], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="loss")
    for name in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"):
        recall_axis.plot(epochs, [item[name] for item in history], marker=".", label=name,
                         linestyle="-" if name.startswith("i2t") else "--")
    recall_axis.set(title="validation recall", xlabel="epoch", ylabel="R@k", ylim=(0, 1))
    recall_axis.legend(ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
