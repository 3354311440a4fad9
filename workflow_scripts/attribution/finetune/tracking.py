"""wandb for fine-tuning runs: ``disabled`` (default) | ``offline`` | ``online``.

``online`` needs WANDB_API_KEY in the environment and fails before any model is loaded when it
is missing (no interactive login prompt, no hang). The run is started here, on the main process
only, with an explicit directory, mode and init timeout; the Trainer's WandbCallback then logs
into it. The run id is derived from the job fingerprint, so a resumed job continues its run.
Nothing here logs or stores the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WANDB_MODES = ("disabled", "offline", "online")
INIT_TIMEOUT_S = 90.0


class WandbConfigError(RuntimeError):
    """wandb is configured in a way that cannot work here; the message says how to fix it."""


@dataclass(frozen=True)
class WandbSettings:
    mode: str = "disabled"
    project: str = "code-llm-attribution"
    entity: str | None = None

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> WandbSettings:
        block = dict(block or {})
        settings = cls(
            mode=block.get("mode", cls.mode),
            project=block.get("project", cls.project),
            entity=block.get("entity"),
        )
        if settings.mode not in WANDB_MODES:
            raise WandbConfigError(f"wandb.mode: {settings.mode!r} is not one of {WANDB_MODES}")
        return settings

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"


def check_wandb(settings: WandbSettings, environ: dict[str, str] | None = None) -> None:
    """Fail fast on a configuration that would prompt, hang or fail later."""
    env = os.environ if environ is None else environ
    if settings.mode == "online" and not env.get("WANDB_API_KEY"):
        raise WandbConfigError(
            "wandb.mode is 'online' but WANDB_API_KEY is not set in the environment of this "
            "job. Export WANDB_API_KEY, or set wandb.mode: offline (sync later with "
            "`wandb sync <run dir>`) or disabled."
        )


def start_run(
    settings: WandbSettings, run_dir: str | Path, name: str, run_id: str, config: dict[str, Any]
) -> Any:
    """Start (or resume) the wandb run; None when disabled. Call on the main process only."""
    if not settings.enabled:
        return None
    check_wandb(settings)
    import wandb

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        mode=settings.mode,
        config=config,
        settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S, console="off", silent=True),
    )


def finish_run(run: Any) -> None:
    if run is not None:
        run.finish()
