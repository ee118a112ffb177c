"""GPU tests run only where a Hopper GPU is present; elsewhere they skip with a reason."""

import pytest
import torch


def hopper() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    major, _ = torch.cuda.get_device_capability(0)
    return None if major == 9 else f"the sm_90a megakernel needs a Hopper GPU, got sm_{major}x"


@pytest.fixture(scope="session")
def gpu() -> torch.device:
    why = hopper()
    if why:
        pytest.skip(why)
    return torch.device("cuda", 0)
