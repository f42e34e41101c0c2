"""Floor 3: Ray Train and Ray Tune + Optuna around the algorithm layer."""
