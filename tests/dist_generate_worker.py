"""Worker for tests/test_distributed.py: `torchrun --nproc_per_node=2 tests/dist_generate_worker.py MODE OUT.npy`.

Every rank loads the tiny pipeline, switches on MODE ("ulysses" or "cfg") and generates with a fixed seed; rank 0
saves the float video. The test compares it with one process.
"""

import os
import sys

import numpy as np

from engine.distributed import is_main_process, setup_parallel
from engine.registry import load_pipeline
from tests.dist_settings import KWARGS


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    pipe = load_pipeline("tiny", device="cpu")
    used = setup_parallel(pipe, mode)
    assert used == mode, used
    video = pipe(**KWARGS).frames[0]
    if is_main_process():
        np.save(out, video)
    import torch.distributed as dist

    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # see tests/dist_cp_worker.py: gloo teardown at interpreter exit can abort after the work is done


if __name__ == "__main__":
    main()
