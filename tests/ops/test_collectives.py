"""ops/collectives.py in a one-rank gloo group (in this process): a failing collective becomes a
DistributedError naming the operation, what failed and the rank, with the backend error kept;
and the collectives' shapes. Ranks of unequal row counts (the padding and unpadding) are
tested across processes in tests/test_distributed.py and tests/test_distributed_objectives.py."""

import pytest
import torch
import torch.distributed as dist

from contrastive.ops.collectives import (
    DistributedError,
    all_reduce,
    exchange,
    gather_rows,
    guarded,
    reduce_scatter_rows,
)


@pytest.fixture
def one_rank(tmp_path):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_a_failing_collective_names_the_operation_and_the_rank(one_rank):
    def broken():
        raise RuntimeError("Connection closed by peer")

    with pytest.raises(DistributedError) as exc:
        guarded("info_nce", "all-gather of the embeddings", broken, None)
    msg = str(exc.value)
    assert msg.startswith(
        "contrastive.distributed.info_nce: the all-gather of the embeddings failed on rank 0 of 1"
    )
    assert "init_process_group(timeout=...)" in msg and "Backend error: Connection closed by peer" in msg
    assert isinstance(exc.value.__cause__, RuntimeError)
    assert guarded("info_nce", "x", lambda: 7, None) == 7  # success passes the value through


def test_collectives_of_one_rank(one_rank):
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(gather_rows("op", x, [3], None), x, rtol=0, atol=0)
    torch.testing.assert_close(reduce_scatter_rows("op", x, [3], 0, None), x, rtol=0, atol=0)
    assert exchange("op", [2, 0.5], torch.device("cpu"), None).tolist() == [[2.0, 0.5]]
    t = torch.ones(2)
    assert all_reduce("op", t, "sum", None) is t and t.tolist() == [1.0, 1.0]
