"""The trainer: the loop (loop.py), one optimisation step (step.py), resuming (resume.py), hard-negative
batches, the optimizer and schedule, and the run's log files; validation scores through evaluation/."""
