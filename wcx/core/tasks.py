"""The decision tasks a cascade serves, as the manifest names them.

Every task ends in the same runtime decision, ``accept iff score >= tau``; tasks differ in what
"accept" means and in what calibration controls (its *target*, in
:mod:`wcx.calibration.targets`). The runtime only needs to know that a manifest's task exists.

* ``selective``: accept the prediction (else reject it / send it to a human); calibration
  controls the selective risk (errors among accepted inputs); default score ``msp``.
* ``ood``: keep the input as in-distribution (else flag it as out of distribution); calibration
  controls the in-distribution true-positive rate; default score ``neg_energy``.

A new task registers a :class:`Task` here (``wcx.calibration.targets.register_target`` does so
for its target) or through the ``wcx.tasks`` entry point group.
"""

from __future__ import annotations

from dataclasses import dataclass

from wcx.core.registry import Registry


@dataclass(frozen=True)
class Task:
    """A task's name, default score and what accepting an input means."""

    name: str
    default_score: str
    accept_means: str


TASK_REGISTRY: Registry[Task] = Registry("task", "wcx.tasks", lambda t: t.name)
SELECTIVE = TASK_REGISTRY.register(Task("selective", "msp", "the prediction is accepted"))
OOD = TASK_REGISTRY.register(Task("ood", "neg_energy", "the input is kept as in-distribution"))


def get_task(name: str) -> Task:
    """The task called ``name``; ``BadInputError`` listing the valid tasks if none."""
    return TASK_REGISTRY.get(name)
