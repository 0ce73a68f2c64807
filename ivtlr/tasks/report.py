"""The score report: accuracy per judge, overall and per group, with the per-id verdicts."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any


@dataclass
class Tally:
    """Correct and total counts of one judge over one group."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total}


@dataclass
class ScoreReport:
    """Accuracy of each judge, overall and per group, and the per-record verdicts.

    `overall`: judge -> Tally. `groups`: group name ("domain", "topic", "category") -> group key -> judge ->
    Tally. `verdicts`: one dict per record: id, answer, and judge -> {"prediction", "correct"}.
    """

    task: str
    judges: tuple[str, ...]
    overall: dict[str, Tally]
    groups: dict[str, dict[str, dict[str, Tally]]]
    verdicts: list[dict[str, Any]]

    def to_dict(self, verdicts: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; the per-record verdicts are included when `verdicts` is true."""
        out: dict[str, Any] = {
            "task": self.task,
            "judges": list(self.judges),
            "overall": {j: t.to_dict() for j, t in self.overall.items()},
            "groups": {
                g: {k: {j: t.to_dict() for j, t in by_judge.items()} for k, by_judge in keys.items()}
                for g, keys in self.groups.items()
            },
        }
        if verdicts:
            out["verdicts"] = self.verdicts
        return out

    def format(self, verdicts: bool = False) -> str:
        """A plain-text table: one row per group key, one column per judge, accuracy in percent."""
        rows = [("all", self.overall)]
        for group, keys in self.groups.items():
            rows += [(f"{group} {key}", keys[key]) for key in sorted(keys)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{self.task}: {next(iter(self.overall.values())).total} predictions"]
        lines.append(" " * width + "".join(f"  {j:>22}" for j in self.judges))
        for name, by_judge in rows:
            cells = "".join(
                f"  {f'{100 * t.accuracy:.2f} ({t.correct}/{t.total})':>22}" for t in by_judge.values()
            )
            lines.append(f"{name:<{width}}{cells}")
        if verdicts:
            for v in self.verdicts:
                marks = " ".join(
                    f"{j}={v[j]['prediction']}:{'ok' if v[j]['correct'] else 'wrong'}" for j in self.judges
                )
                lines.append(f"{v['id']}\tanswer={v['answer']}\t{marks}")
        return "\n".join(lines)
