"""HUNYUAN_MOE_BACKEND=hunyuan: every MoE layer on torch.ops.hunyuan, our Triton kernels run in
Triton's interpreter on CPU (HUNYUAN_TRITON_ON_CPU=1, TRITON_INTERPRET=1), for an unquantized, an
FP8 and a GPTQ-Int4 checkpoint: greedy tokens identical to the core."""

import re

import pytest
from conftest import assert_matches_core, core_reference, model_line, run_llm

TRITON = {"HUNYUAN_MOE_BACKEND": "hunyuan", "HUNYUAN_TRITON_ON_CPU": "1", "TRITON_INTERPRET": "1"}
CASES = {
    # id: (fmt, op the MoE layers run)
    "fp32": ("fp32", "moe_experts"),
    "fp8": ("fp8", "moe_experts_fp8"),
    "gptq-int4": ("gptq-int4", "moe_experts_int4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hunyuan_moe_backend_triton_matches_core(tiny, case):
    fmt, op = CASES[case]
    path = tiny("a13b", "tencent", fmt)
    run = run_llm(path, env=TRITON, timeout=600)
    line = model_line(run)
    assert re.search(rf"moe: hunyuan {op} \(.*HUNYUAN_MOE_BACKEND=hunyuan", line), line
    ran = re.search(rf"MoE ran torch\.ops\.hunyuan\.{op} on cpu via (.*)", run.log)
    assert ran and ran.group(1).strip() == "Triton interpreter", run.log[-3000:]
    assert_matches_core(run, core_reference(path), f"a13b {case}, HUNYUAN_MOE_BACKEND=hunyuan, Triton interpreter")
