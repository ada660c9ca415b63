"""The trainer: the loop (loop.py), one optimisation step (step.py), resuming (resume.py), validation
embedding and recall (evaluate.py, recall.py), the optimizer and schedule, and the run's log files."""
