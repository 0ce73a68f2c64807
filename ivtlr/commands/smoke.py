"""``ivtlr smoke``: the engine end to end on a tiny random Qwen2-VL, in seconds, offline.

It builds a tiny model, fits it for a few steps to a fixed answer after 3 latent steps (training forward and
backward through the KV-cached latent passes), then generates for a batch of questions with different image
sizes and prints, per question, the answer tokens and the image patches each latent step selected.
"""

from __future__ import annotations

import argparse
import time

import torch

from ..backbones import backbone_for
from ..batching import Sample, collate
from ..engine import LatentConfig, LatentEngine
from ..backbones.qwen2vl import TINY_QWEN_IDS, TinyQwen2VLSpec, build_tiny_qwen2vl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ivtlr smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--k", type=int, default=4, help="image tokens per latent step (default 4)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    ids = TINY_QWEN_IDS
    spec = TinyQwen2VLSpec(vocab_size=64, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                           num_kv_heads=2, vision_depth=1, vision_embed_dim=32, vision_heads=2)
    model = build_tiny_qwen2vl(spec, ids, seed=0)
    engine = LatentEngine(backbone_for(model, ids.token_ids()), LatentConfig(k=args.k))
    g = torch.Generator().manual_seed(0)
    answer = [20, 21, 22, ids.eos]

    def question(i: int, rows: int, cols: int, train: bool) -> Sample:
        prompt = [10 + i % 5, ids.vision_start] + [ids.image_pad] * (rows * cols) + [ids.vision_end, 30 + i % 7]
        vision = {"pixel_values": torch.randn(rows * cols * 4, 1176, generator=g),
                  "image_grid_thw": torch.tensor([[1, 2 * rows, 2 * cols]])}
        rest = answer if train else []
        labels = [-100] * (len(prompt) + 3) + rest if train else None
        return Sample(prompt + [ids.latent] * 3 + rest, len(prompt), labels, vision, id=f"q{i}")

    grids = [(3, 4), (4, 4), (2, 6), (4, 3)]
    train = collate([question(i, *grid, train=True) for i, grid in enumerate(grids)], ids.pad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(args.steps):
        out = engine.forward(train)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if step in (0, args.steps - 1):
            print(f"step {step:3d}  loss {out.loss.item():.4f}  ({out.n_tokens} supervised tokens)")
    model.eval()
    test = collate([question(i, *grid, train=False) for i, grid in enumerate(grids)], ids.pad)
    gen = engine.generate(test, max_new_tokens=8)
    for b, grid in enumerate(grids):
        n = gen.num_generated[b]
        print(f"q{b} image {grid[0]}x{grid[1]} tokens: generated {gen.sequences[b, :n].tolist()} "
              f"({n} steps), selected per latent step: {gen.selected[b]}")
    ok = all(gen.sequences[b, :4].tolist() == answer for b in range(len(grids)))
    print(f"answers {'match' if ok else 'do NOT match'} the trained target {answer}; "
          f"{time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1
