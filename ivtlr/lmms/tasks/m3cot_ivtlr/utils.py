"""lmms-eval functions of the ``m3cot_ivtlr`` task: ivtlr's M3CoT prompt and M3CoT's official judge."""

from ivtlr.tasks import get_task

M3COT = get_task("m3cot")


def _example(doc, image=None):
    return M3COT.example_from_row(doc, str(doc["id"]), image)


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return M3COT.prompt(_example(doc), "infer")


def doc_to_target(doc):
    return doc["answer"]


def process_results(doc, results):
    """Each judge's verdict on the generated text: "official" is M3CoT's own procedure, "reference" the authors'."""
    record = M3COT.to_record(_example(doc), results[0])
    return {judge: {"id": doc["id"], "correct": bool(M3COT.judge(record, judge)[1])} for judge in ("official", "reference")}


def accuracy(items):
    return 100.0 * sum(item["correct"] for item in items) / max(1, len(items))
