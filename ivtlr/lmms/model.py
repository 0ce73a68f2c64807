"""The lmms-eval model ``ivtlr``: a checkpoint's latent generation behind lmms-eval's ``generate_until``.

    lmms-eval --model ivtlr --model_args checkpoint=PATH,latents=3 --tasks m3cot_ivtlr \\
        --include_path "$(python -m ivtlr.lmms)" --output_path results/

Model arguments (``--model_args k=v,...``):

- ``checkpoint``: an ivtlr checkpoint folder, or an authors' ``.pth`` with ``base`` (hub id or local path).
- ``latents``: latent steps per question (default: the run's last stage).
- ``prompt``: ``task`` (default) rebuilds each question from its document (question, choices, context; M3CoT's
  letter answers or ScienceQA's index answers) and prompts it as the checkpoint was trained, so the latents
  see the training layout; ``context`` uses lmms-eval's prompt text verbatim (any task with one image).
- ``output``: ``text`` (default) returns the generated text; ``letter`` returns the option letter the text names
  under the checkpoint task's headline judge (for tasks scored by exact letter match, e.g. ``scienceqa_img``).
- ``max_new_tokens``: the answer budget when the task gives none (default 32); ``device``, ``dtype``.

Generation is greedy (IVT-LR's), batched by ``--batch_size``; a task's ``until`` strings cut the text.
Log-likelihood tasks are refused: IVT-LR answers by generation.
"""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image

from ..explain import generate_prompts, predicted_letter
from ..inference import load_inference
from ..tasks import get_task
from ..tasks.examples import BadRecord

PROMPTS, OUTPUTS = ("task", "context"), ("text", "letter")


class IVTLR(lmms):
    is_simple = True

    def __init__(self, checkpoint: str, latents: int | None = None, base: str | None = None, prompt: str = "task",
                 output: str = "text", max_new_tokens: int = 32, device: str | None = None, dtype: str = "auto",
                 batch_size: int | str = 1, **unknown) -> None:
        super().__init__()
        if unknown:
            raise ValueError(f"--model ivtlr: unknown model_args {sorted(unknown)} (valid: checkpoint, latents, base, "
                             "prompt, output, max_new_tokens, device, dtype)")
        if prompt not in PROMPTS or output not in OUTPUTS:
            raise ValueError(f"--model ivtlr: prompt must be one of {PROMPTS} and output one of {OUTPUTS}, got "
                             f"prompt={prompt!r} output={output!r}")
        if output == "letter" and prompt != "task":
            raise ValueError("--model ivtlr: output=letter needs prompt=task (the options come from the document)")
        self.inf = load_inference(str(checkpoint), base=None if base in (None, "None") else str(base),
                                  device=device, dtype=dtype)
        n = self.inf.config.curriculum.max_latent_stage if latents in (None, "None") else int(latents)
        if n < 0:
            raise ValueError(f"--model ivtlr: latents must be >= 0, got {latents}")
        self.latents, self.prompt, self.output = n, prompt, output
        self.max_new_tokens, self.batch_size = int(max_new_tokens), max(1, int(batch_size))

    # ------------------------------------------------------------------------------------------ requests
    def _example(self, doc: dict, name: str, image: Image.Image):
        """(task, Example) of a document: ScienceQA's schema (an integer answer) or the checkpoint task's own."""
        task = get_task("scienceqa") if isinstance(doc.get("answer"), int) else self.inf.task
        row = dict(doc, id=doc.get("id") or name)
        try:
            return task, task.example_from_row(row, str(row["id"]), image)
        except BadRecord as err:
            raise ValueError(f"{name}: {err}") from None

    def _prompt(self, request: Instance):
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        name = f"{task}/{split}/{doc_id}"
        doc = self.task_dict[task][split][doc_id]
        visuals = [v for v in doc_to_visual(doc) if v is not None]
        if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
            raise ValueError(f"{name}: IVT-LR takes exactly one image per question, the task gave {len(visuals)}")
        image = visuals[0].convert("RGB")
        example = self._example(doc, name, image) if self.prompt == "task" else None
        text = self.inf.task.prompt(example[1], "infer") if example is not None else context
        return name, text, image, example, dict(gen_kwargs or {})

    def generate_until(self, requests: list[Instance]) -> list[str]:
        from tqdm.auto import tqdm

        prepared = [self._prompt(r) for r in requests]
        out: list[str] = [""] * len(prepared)
        budget = lambda kw: int(kw.get("max_new_tokens") or self.max_new_tokens)  # noqa: E731
        order = sorted(range(len(prepared)), key=lambda i: budget(prepared[i][4]))  # one budget per batch
        bar = tqdm(total=len(order), desc="ivtlr", disable=self.rank != 0)
        i = 0
        while i < len(order):
            chunk = [order[i]]
            while (len(chunk) < self.batch_size and i + len(chunk) < len(order)
                   and budget(prepared[order[i + len(chunk)]][4]) == budget(prepared[order[i]][4])):
                chunk.append(order[i + len(chunk)])
            gens = generate_prompts(self.inf, [prepared[j][:3] for j in chunk], self.latents,
                                    budget(prepared[chunk[0]][4]))
            for j, gen in zip(chunk, gens):
                out[j] = self._finish(gen.text, prepared[j][3], prepared[j][4])
                self.cache_hook.add_partial("generate_until", (requests[j].args[0], prepared[j][4]), out[j])
            bar.update(len(chunk))
            i += len(chunk)
        bar.close()
        return out

    def _finish(self, text: str, example, gen_kwargs: dict) -> str:
        until = gen_kwargs.get("until") or []
        for stop in [until] if isinstance(until, str) else until:
            if stop:
                text = text.split(stop)[0]
        if self.output == "letter":
            letter = predicted_letter(*example, text)  # (task, Example): that task's headline judge
            return "" if letter == "FAILED" else letter
        return text

    # ------------------------------------------------------------------------------------------- refused
    def loglikelihood(self, requests):
        raise NotImplementedError("--model ivtlr answers by generation: log-likelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("--model ivtlr answers one turn per question: multi-round tasks are not supported")
