"""Routing kernels: top-k softmax (+ expert map) and the block alignment, vs torch references."""

import pytest
import torch
from moe_testing import DEVICE, align_reference

from hunyuan_plugins.ops import reference as ref
from hunyuan_plugins_kernels import align_block_size, route, topk_softmax


def _logits(T, E, seed=0):
    return torch.randn(T, E, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def assert_same_routing(weights, ids, logits, k, renormalize):
    """Tie-aware: the chosen probabilities agree (sorted); ids agree wherever no tie decides."""
    ref_w, ref_ids = ref.route(logits.cpu(), k, renormalize)
    weights, ids = weights.cpu(), ids.cpu()
    assert ids.dtype == torch.int32 and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sort(-1).values, ref_w.sort(-1).values, rtol=1e-5, atol=1e-7)
    probs = torch.softmax(logits.cpu().float(), -1)
    chosen = probs.gather(1, ids.long())
    torch.testing.assert_close(chosen.sort(-1).values, probs.topk(k, -1).values.sort(-1).values)
    untied = (probs.unsqueeze(-1) == probs.gather(1, ref_ids.long()).unsqueeze(1)).sum(1) == 1  # [T, k]
    assert torch.equal(ids[untied], ref_ids[untied])


@pytest.mark.parametrize("E,k,renormalize", [(8, 1, False), (16, 1, False), (8, 2, True), (64, 8, True),
                                             (64, 8, False), (256, 8, True)])
@pytest.mark.parametrize("T", [1, 3, 67])
def test_topk_softmax(T, E, k, renormalize):
    logits = _logits(T, E, seed=T * E + k)
    weights, ids, local = topk_softmax(logits, k, renormalize)
    assert local is ids
    assert_same_routing(weights, ids, logits, k, renormalize)


def test_topk_softmax_fp16_logits():
    logits = _logits(16, 64).half()
    weights, ids, _ = topk_softmax(logits, 8, True)
    assert_same_routing(weights, ids, logits, 8, True)


def test_ties_pick_the_lowest_expert_id():
    logits = torch.zeros(4, 16, device=DEVICE)
    logits[1, [3, 9, 12]] = 1.0          # three-way tie for the top, then 13 tied zeros
    logits[2] = torch.arange(16, device=DEVICE) % 4  # four ties at each of 4 levels
    logits[3, 5] = logits[3, 2] = -1.0
    weights, ids, _ = topk_softmax(logits, 8, True)
    # torch.topk on CPU does NOT order ties by index (all-zero logits give 12, 9, 10, ... on torch
    # 2.13), so the reference is only comparable tie-aware; the kernel's rule is checked exactly.
    assert_same_routing(weights, ids, logits, 8, True)
    assert ids[0].tolist() == list(range(8))
    assert ids[1].tolist() == [3, 9, 12, 0, 1, 2, 4, 5]
    assert ids[2].tolist() == [3, 7, 11, 15, 2, 6, 10, 14]
    assert ids[3].tolist() == [0, 1, 3, 4, 6, 7, 8, 9]
    assert torch.allclose(weights.sum(-1), torch.ones(4, device=DEVICE))


def test_expert_map():
    E, k, T = 64, 8, 16
    expert_map = torch.full((E,), -1, dtype=torch.int32)
    expert_map[16:48] = torch.arange(32, dtype=torch.int32)  # this rank owns experts 16..47
    logits = _logits(T, E)
    weights, ids, local = topk_softmax(logits, k, True, expert_map.to(DEVICE))
    assert_same_routing(weights, ids, logits, k, True)
    assert torch.equal(local.cpu(), ref.apply_expert_map(ids.cpu(), expert_map))
    assert (local == -1).any() and (local >= 0).any()


def _check_align(local_ids, E, block_m, **kw):
    sorted_ids, expert_ids, num_post = align_block_size(local_ids.to(DEVICE), E, block_m, **kw)
    want_sorted, want_experts, want_total = align_reference(local_ids, E, block_m)
    total = int(num_post)
    assert total == want_total and total % block_m == 0
    assert torch.equal(sorted_ids[:total].cpu(), want_sorted)
    assert (sorted_ids[total:] == local_ids.numel()).all()  # sentinel everywhere else
    n_blocks = total // block_m
    assert torch.equal(expert_ids[:n_blocks].cpu(), want_experts)
    assert (expert_ids[n_blocks:] == -1).all()
    assert sorted_ids.numel() >= local_ids.numel() + E * (block_m - 1)  # worst case, from shapes only


@pytest.mark.parametrize("T,E,k,block_m", [(1, 64, 8, 16), (3, 8, 2, 32), (67, 64, 8, 16), (67, 256, 8, 64),
                                           (16, 16, 1, 32), (200, 256, 8, 16)])
def test_align_block_size(T, E, k, block_m):
    # (200, 256, 8): 1600 slots in 16-slot steps = 100 steps > MAX_CHUNKS, so each chunk takes 2 steps
    # and the placing programs read the 50 count rows in several BLOCK_P passes
    _, ids = ref.route(_logits(T, E, seed=7).cpu(), k, True)
    _check_align(ids, E, block_m)


def test_align_edge_cases():
    E = 8
    _check_align(torch.full((67, 2), 3, dtype=torch.int32), E, 16)         # all on one expert, rest empty
    ids = torch.randint(0, E, (35, 4), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    ids[::3, 1] = -1                                                       # slots owned by other ranks
    ids[5] = -1
    _check_align(ids, E, 32)
    _check_align(torch.full((4, 2), -1, dtype=torch.int32), E, 16)        # nothing local at all


def test_align_many_chunks_stay_stable():
    """Slots of one expert spread over many chunks keep ascending order (the stable sort)."""
    ids = torch.randint(0, 3, (97, 4), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    ids[10:20] = -1
    for block_s in (16, 32):  # 388 slots: 25 and 13 chunks
        _check_align(ids, 8, 16, block_s=block_s)


def test_align_rejects_block_m_not_power_of_2():
    with pytest.raises(ValueError, match="power of 2"):
        align_block_size(torch.zeros(2, 2, dtype=torch.int32, device=DEVICE), 8, 24)


def test_route_combines_both():
    logits = _logits(5, 16)
    r = route(logits, 2, True, block_m=16)
    _, ids = ref.route(logits.cpu(), 2, True)
    want_sorted, _, total = align_reference(ids, 16, 16)
    assert int(r.num_tokens_post_padded) == total
    assert torch.equal(r.sorted_token_ids[:total].cpu(), want_sorted)
