"""The backward's GEMMs over the packed steps (kernels/packed_step_gemms.py) against torch.

Each kernel reads the count of steps in use, S, from the device and must touch only rows
s < S of buffers sized S_max: the rows past S here hold NaN (and chars past the table),
so a kernel that reads one shows NaN in a sum, or an out-of-bounds read. Forced grids
make each program loop over several tiles; hidden sizes are not powers of two.
"""

import pytest
import torch
from backend_cases import TRITON_DEVICES

from charfast.kernels.packed_step_gemms import launch_gate_table_grad, launch_recompute_gates, launch_weight_hh_grad

N_CHARS = 5  # few chars: many steps of one tile add into the same row of the gate table's gradient


def _packed_steps(hidden, total_steps, capacity, dtype, device, seed=0):
    """(gate_table [C, 4H], weight_hh [4H, H], h_prev [S_max, H], step_chars [S_max],
    dgates [S_max, 4H] float32, step_count [1]); rows from S on are poison."""
    g = torch.Generator().manual_seed(seed)
    gate_table = torch.randn(N_CHARS, 4 * hidden, generator=g).to(dtype)
    weight_hh = (torch.randn(4 * hidden, hidden, generator=g) / hidden**0.5).to(dtype)
    h_prev = torch.rand(capacity, hidden, generator=g).mul(2).sub(1).to(dtype)
    step_chars = torch.randint(0, N_CHARS, (capacity,), generator=g, dtype=torch.int32)
    dgates = torch.randn(capacity, 4 * hidden, generator=g)
    h_prev[total_steps:] = float("nan")
    dgates[total_steps:] = float("nan")
    step_chars[total_steps:] = 10**6  # far outside the gate table
    step_count = torch.tensor([total_steps])
    tensors = (gate_table, weight_hh, h_prev, step_chars, dgates, step_count)
    return tuple(t.to(device) for t in tensors)


def _tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


SHAPES = [(40, 150, 200), (130, 70, 70), (256, 33, 130)]  # (hidden, S, S_max)
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("hidden, total_steps, capacity", SHAPES)
def test_recompute_gates(device, dtype, hidden, total_steps, capacity):
    gate_table, weight_hh, h_prev, step_chars, _, step_count = _packed_steps(
        hidden, total_steps, capacity, dtype, device
    )
    gates = launch_recompute_gates(gate_table, weight_hh, h_prev, step_chars, step_count, programs=3)
    used = slice(0, total_steps)
    expected = gate_table.double()[step_chars[used].long()] + h_prev[used].double() @ weight_hh.double().t()
    assert gates.shape == (capacity, 4 * hidden) and gates.dtype == torch.float32
    torch.testing.assert_close(gates[used].double(), expected, **_tolerance(dtype))


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("hidden, total_steps, capacity", SHAPES)
def test_gate_table_grad_adds_each_step_at_its_char(device, hidden, total_steps, capacity):
    *_, step_chars, dgates, step_count = _packed_steps(hidden, total_steps, capacity, torch.float32, device)
    grad = launch_gate_table_grad(dgates, step_chars, step_count, N_CHARS, programs=3)
    used = slice(0, total_steps)
    expected = torch.zeros(N_CHARS, 4 * hidden, dtype=torch.float64, device=device)
    expected.index_add_(0, step_chars[used].long(), dgates[used].double())
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "bfloat16"])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("hidden, total_steps, capacity", SHAPES)
def test_weight_hh_grad(device, dtype, splits, hidden, total_steps, capacity):
    _, _, h_prev, _, dgates, step_count = _packed_steps(hidden, total_steps, capacity, dtype, device)
    grad = launch_weight_hh_grad(dgates, h_prev, step_count, splits=splits)
    used = slice(0, total_steps)
    # 16-bit parameters multiply dgates rounded to their dtype, as the GEMM it replaced did.
    expected = dgates[used].to(dtype).double().t() @ h_prev[used].double()
    torch.testing.assert_close(grad.double(), expected, **_tolerance(dtype))


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_no_step_in_use_gives_zero_gradients(device):
    gate_table, weight_hh, h_prev, step_chars, dgates, step_count = _packed_steps(24, 0, 50, torch.float32, device)
    launch_recompute_gates(gate_table, weight_hh, h_prev, step_chars, step_count)
    assert (launch_gate_table_grad(dgates, step_chars, step_count, N_CHARS) == 0).all()
    assert (launch_weight_hh_grad(dgates, h_prev, step_count, splits=2) == 0).all()


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_no_capacity_launches_nothing_that_fails(device):
    gate_table, weight_hh, h_prev, step_chars, dgates, step_count = _packed_steps(24, 0, 0, torch.float32, device)
    assert launch_recompute_gates(gate_table, weight_hh, h_prev, step_chars, step_count).shape == (0, 96)
    assert (launch_gate_table_grad(dgates, step_chars, step_count, N_CHARS) == 0).all()
    assert (launch_weight_hh_grad(dgates, h_prev, step_count) == 0).all()
