"""Entry point for the distributed training tests: ``torchrun ... _ddp_entry.py FAULT ARGS...``.

FAULT is ``none`` (plain ``contrastive`` CLI), ``nan`` (rank 1's embeddings become NaN at
the second step, so the global loss is NaN on every rank) or ``raise`` (rank 1 raises at the
second step while rank 0 goes on). Not a test module; the tests launch it.
"""

import os
import sys

import torch

import contrastive.distributed as cd
from contrastive.cli import main


def _faulty(kind):
    real, calls = cd.info_nce, {"n": 0}

    def loss(z1, z2, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 and os.environ.get("RANK") == "1":
            if kind == "raise":
                raise RuntimeError("injected failure on rank 1")
            z1 = z1 * torch.tensor(float("nan"))
        return real(z1, z2, *args, **kwargs)

    return loss


if __name__ == "__main__":
    fault, argv = sys.argv[1], sys.argv[2:]
    if fault != "none":
        cd.info_nce = _faulty(fault)
    sys.exit(main(argv))
