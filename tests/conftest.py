import os

import pytest
import torch

# pytest-xdist runs one worker per core; more threads per worker would only oversubscribe.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
