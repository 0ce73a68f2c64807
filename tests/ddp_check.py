"""Run under torchrun (2 processes, CPU/gloo): train a few steps, then report each rank's weight checksum."""

import json
import sys

import torch
import torch.distributed as dist

from ivtlr.config import TrainConfig
from ivtlr.train import Trainer


def main(config_path: str, out_path: str) -> None:
    cfg = TrainConfig.load(config_path)
    trainer = Trainer(cfg)
    trainer.run()
    flat = torch.cat([p.detach().float().flatten() for p in trainer.s.model.parameters()])
    mine = {"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": flat.sum().item(),
            "abs_sum": flat.abs().sum().item(), "first": flat[:8].tolist(),
            "ddp": type(trainer.module).__name__, "steps": trainer.pos.step}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()  # a live gloo group at interpreter exit can abort a rank ("terminate called")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
