"""SGLang's tensor parallel on CPU, TP 2: tiny A13B (top-k MoE + shared expert) and tiny Large FP8
(CLA, top-1, W8A8 per-shard scales) split over two scheduler ranks; tokens equal the reference core,
prompt logprobs within 1e-4. It needs two environment variables of SGLang's (conftest.tp_env; why:
docs/sglang.md, "Tensor parallel on CPU")."""

from __future__ import annotations

import re

import pytest
from conftest import TP_RUN
from test_engine import _compare


@pytest.mark.parametrize("name", TP_RUN)
def test_tp2_matches_reference(name, checkpoints, tp_run):
    results, _ = tp_run
    _compare(f"{name} (TP 2, CPU)", results[name], checkpoints[name])


def test_tp2_runs_two_ranks_with_sharded_kv(tp_run):
    """Both ranks build our class; each holds half the KV heads (tiny: 2 KV heads -> 1 per rank)."""
    _, log = tp_run
    for rank in ("TP0", "TP1"):
        assert len(re.findall(rf"{rank}\] hunyuan_plugins: \w+ served by hunyuan_plugins\.sglang\.model", log)) == 2
    pools = re.findall(r"TP(\d)\] hunyuan_plugins: KV pool: (\d+) layer buffers for (\d+) layers, (\d+) bytes", log)
    print(f"\nKV pools (rank, buffers, layers, bytes): {pools}")
    # each rank: half the bytes of TP 1 (A13B 4196352, Large with CLA 2098176: 2 buffers for 4 layers)
    assert sorted(pools) == sorted([(r, "4", "4", "2098176") for r in "01"] + [(r, "2", "4", "1049088") for r in "01"])
