"""What classify.py --data reports: accuracy overall and per class, and on request report.json and a
confusion matrix."""
import logging
import os

from utils.atomic_file import atomic_write_json

logger = logging.getLogger(__name__)


def folder_summary(labels, targets, predictions, skipped, output=None):
    """{"accuracy", "images", "skipped", "classes"}, with "per-class" when ``output`` names a folder for the
    report (report.json and confusion.png are written there)."""
    summary = {"accuracy": float((predictions == targets).mean()), "images": int(len(targets)), "skipped": skipped,
               "classes": labels}
    if output:
        report = write_report(labels, targets, predictions, output)
        summary["per-class"] = {label: report[label] for label in labels}
        logger.info(f"wrote {os.path.join(output, 'report.json')} and confusion.png")
    return summary


def accuracy_table(labels, targets, predictions, skipped):
    """Overall accuracy, then each class's accuracy and image count, as text."""
    lines = [f"zero-shot accuracy {float((predictions == targets).mean()):.4f} on {len(targets)} images, "
             f"{len(labels)} classes" + (f" ({skipped} skipped)" if skipped else "")]
    for target, label in enumerate(labels):
        mask = targets == target
        if mask.any():
            lines.append(f"  {label:<24} {float((predictions[mask] == target).mean()):.3f}  ({int(mask.sum())} images)")
    return "\n".join(lines)


def write_report(classes, targets, predictions, directory):
    """report.json (scikit-learn's classification report) and confusion.png in ``directory``; returns the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, classification_report

    report = classification_report(targets, predictions, labels=list(range(len(classes))), target_names=classes,
                                   output_dict=True, zero_division=0)
    atomic_write_json(os.path.join(directory, "report.json"),
                      {"per-class": {name: report[name] for name in classes},
                       "overall": {k: v for k, v in report.items() if k not in classes}})
    many = len(classes) > 30  # beyond this, per-cell numbers and tick labels are unreadable and slow to draw
    figure, axis = plt.subplots(figsize=(min(24, max(4, len(classes) * 0.6 + 2)),) * 2)
    ConfusionMatrixDisplay.from_predictions(targets, predictions, labels=list(range(len(classes))),
                                            display_labels=None if many else classes, ax=axis, colorbar=many,
                                            include_values=not many, xticks_rotation=45)
    figure.tight_layout()
    figure.savefig(os.path.join(directory, "confusion.png"), dpi=100)
    plt.close(figure)
    return report
