"""Every trial of a sweep in the trackers researchers already watch: MLflow and Weights & Biases.

``sweep.tracking: [mlflow, wandb]`` adds logger callbacks to the Tuner: Ray Tune's own
``MLflowLoggerCallback`` and a W&B callback like Ray's ``WandbLoggerCallback`` but with one logging
actor for the whole sweep, not two per trial (:mod:`acl_ray.orchestration.trackers`,
:mod:`acl_ray.orchestration.wandb_tracker`), adapted to a sweep:

- one run per trial (a resumed sweep continues its trials' runs), the searched values as parameters
  and the trial's full config as the file ``trial_config.yaml`` (``acl-ray pretrain --config`` takes it);
- every reported row at its ``epoch`` (Tune's ``training_iteration`` starts again when a trial is
  restored), a restored trial's replayed rows once;
- the final protocol's numbers (``val/*``, ``eval/*``) at the last epoch, or, for a trial ASHA stopped,
  at its last epoch once its post-hoc evaluation is in (its run ends then, not when it stopped).

Defaults that work offline, nothing to start: MLflow logs to ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///DIR/mlflow.db`` (artifacts in ``DIR/mlartifacts``), in an experiment named after the sweep
folder. W&B logs to the project ``$WANDB_PROJECT`` (default ``acl-ray``), grouped by the sweep folder,
files in ``DIR/wandb/``: online when logged in (``WANDB_API_KEY`` or ``wandb login``), else offline
(``wandb sync`` uploads later); ``WANDB_MODE`` decides when set. Both need the ``tracking`` extra,
as ``acl-ray dashboard`` does: :func:`require` checks it before anything starts. This module imports
neither Ray nor the trackers: the callbacks are in :mod:`acl_ray.orchestration.trackers`, imported
only by a sweep that tracks.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path

from acl_ray.config.sweep import Sweep

EXTRA = 'pip install -c constraints.txt -e ".[tracking]"'  # from the acl_ray checkout
MODULES = {"mlflow": "mlflow", "wandb": "wandb", "dashboard": "optuna_dashboard"}

CONFIG_FILE = "trial_config.yaml"  # each run's copy of its trial's full config
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
MLFLOW_VERSION = "3.17.2"  # the mlflow-skinny pinned in constraints.txt: its UI must be the same version
WANDB_DIR = "wandb"


def require(what: str, uses: str) -> None:
    """A one-line ``ValueError`` naming the install command when ``what``'s package is missing;
    ``uses``: what needs it, as the user asked for it (``sweep.tracking=wandb``)."""
    if importlib.util.find_spec(MODULES[what]) is None:
        raise ValueError(f"{uses} needs the tracking extra, not installed here: {EXTRA}")


def mlflow_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out / MLFLOW_DB}"


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; online when logged in (an API key in the environment or in ~/.netrc,
    where ``wandb login`` keeps it); else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        logged_in = netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def check_extras(s: Sweep) -> None:
    """Every tracker ``sweep.tracking`` names is installed, or a one-line error (before anything starts)."""
    for name in s.sweep.tracking:
        require(name, f"sweep.tracking={name}")



def hints(s: Sweep, out: Path) -> list[str]:
    """How to open what the sweep's trackers wrote: one line each."""
    lines = []
    if "mlflow" in s.sweep.tracking:
        uri = mlflow_uri(out)
        if uri.startswith("sqlite:"):
            lines.append(
                f"MLflow: mlflow ui --backend-store-uri {uri}  (the UI is in the full mlflow=="
                f"{MLFLOW_VERSION}, in an environment of its own: it pins pyarrow<26)"
            )
        else:
            lines.append(f"MLflow: the runs are in {uri}, experiment {out.name!r}")
    if "wandb" in s.sweep.tracking:
        if wandb_mode() == "offline":
            lines.append(f"W&B (offline): wandb login, then wandb sync {out / WANDB_DIR}/offline-run-*")
        else:
            project = os.environ.get("WANDB_PROJECT") or "acl-ray"
            lines.append(f"W&B: project {project!r}, group {out.name!r}")
    return lines
