"""Watch a training run from outside it (the fault tests decide when to strike from these)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


def logged_step(out: Path) -> int:
    """Highest step with a loss in the run's MLflow store (0 if none yet)."""
    return _max_step(out, "key = 'loss'")


def restarted_step(out: Path, restarts: int) -> int:
    """Highest step logged with ``restarts`` >= the given count (0 if none yet)."""
    return _max_step(out, "key = 'restarts' and value >= ?", restarts)


def _max_step(out: Path, where: str, *args) -> int:
    """Highest metric step matching ``where``, read without locking the store the run writes."""
    try:
        with sqlite3.connect(f"file:{out}/mlflow.db?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(f"select max(step) from metrics where {where}", args).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0) if row else 0


def registered_steps(out: Path) -> list[int]:
    """Steps of the checkpoints Ray Train has registered (its checkpoint_manager_snapshot.json).

    A checkpoint folder appears on disk before the controller registers it; a worker lost in
    between restarts from the previous registered checkpoint (or from scratch), so a test that
    strikes "after the step-N checkpoint" waits for this, not for the folder."""
    steps = []
    for snapshot in Path(out).glob("checkpoints/*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (OSError, ValueError, KeyError):
            continue  # being written
        steps += [int(r["checkpoint_dir_name"].rsplit("_", 1)[1]) for r in results]
    return sorted(steps)
