"""lmms-eval integration: ``lmms-eval --model ivtlr`` runs latent generation on any of its generation tasks.

- ``manifests`` is the ``lmms_eval.models`` entry point (pyproject.toml): it registers the model ``ivtlr``
  (``ivtlr.lmms.model.IVTLR``), which lmms-eval imports only when ``--model ivtlr`` asks for it.
- ``TASKS_DIR`` holds lmms-eval tasks of ours: ``m3cot_ivtlr`` (M3CoT's test split, scored by M3CoT's official
  judge, the one ``ivtlr score`` uses). Pass it with ``--include_path "$(python -m ivtlr.lmms)"``.

docs/lmms-eval.md has the commands, the model arguments and how it is installed.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def manifests():
    """The models this package registers with lmms-eval (imported while ``lmms_eval.models`` initialises, so
    nothing heavy here)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="ivtlr", simple_class_path="ivtlr.lmms.model.IVTLR")]
