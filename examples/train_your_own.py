"""Train your own encoder with supcon_loss through the library's training loop.

A small MLP on scikit-learn's digits, each batch scored with the supervised contrastive loss; the
loop brings the run folder, seeding, optimiser, checkpoints, non-finite checks and the final table.
Replace ``Digits.build`` with your encoder and ``Digits.loss`` with any objective of the library.

    python examples/train_your_own.py [--epochs 30] [--root runs]
"""

import argparse
import dataclasses

import torch
from torch import nn

from contrastive import supcon_loss
from contrastive.train.config import EvalConfig, OptimConfig, RunConfig, TrainConfig
from contrastive.train.data import load_digits, to_float
from contrastive.train.evaluate import embed, knn_accuracy
from contrastive.train.loop import Batch, Task, train_run


@dataclasses.dataclass
class DigitsConfig:
    run: RunConfig
    optim: OptimConfig
    train: TrainConfig
    eval: EvalConfig


class Digits(Task):
    name = "digits-supcon"

    def run_name(self):
        return "digits-supcon"

    def prepare(self):  # the data, once; returns the number of training items
        data = load_digits(seed=self.cfg.run.seed)
        self.train_x, self.train_y = to_float(data.train.x).flatten(1), data.train.y
        self.test_x, self.test_y = to_float(data.test.x).flatten(1), data.test.y
        return len(self.train_x)

    def build(self, device):  # your encoder
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).to(device)

    def batch(self, idx, device):  # one view per image; the labels pick the positives
        x = self.train_x[idx].to(device)
        return Batch((x + 0.05 * torch.randn_like(x),), targets=self.train_y[idx].to(device), size=len(idx))

    def loss(self, z, batch):
        return supcon_loss(z[0], batch.targets, temperature=0.1)

    def evaluate(self, model):
        tr, te = embed(model, self.train_x), embed(model, self.test_x)
        return {"knn_accuracy": 100 * knn_accuracy(tr, self.train_y, te, self.test_y, k=20)}, None

    def baselines(self, model):  # the final table's first row: the encoder before training
        return {"random encoder": self.evaluate(model)[0]}

    def table(self, rows):
        return "\n".join(f"{name:<28} kNN accuracy {m['knn_accuracy']:.2f}" for name, m in rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--root", default="runs")
    args = p.parse_args(argv)
    cfg = DigitsConfig(
        RunConfig(root=args.root, overwrite=True, progress=False, device="cpu"),
        OptimConfig(lr=3e-3, warmup_epochs=2),
        TrainConfig(epochs=args.epochs, batch_size=256),
        EvalConfig(every=0),
    )
    return train_run(Digits(cfg))


if __name__ == "__main__":
    main()
