"""Every TensorRT-LLM name the PyTorch-backend model classes use, imported in one place.

Pinned to TensorRT-LLM 1.2.1 (module paths of the 1.2 line: ``_torch/modules/attention.py``; later
releases moved ``Attention`` to ``_torch/attention/attention.py``). The test-only stand-in in
``tests/trtllm/trtllm_stand_in.py`` provides exactly these names with the same signatures.
"""

from tensorrt_llm._torch.attention_backend import AttentionMetadata  # noqa: F401
from tensorrt_llm._torch.attention_backend.interface import (  # noqa: F401
    PositionalEmbeddingParams,
    PredefinedAttentionMask,
    RopeParams,
)
from tensorrt_llm._torch.model_config import ModelConfig  # noqa: F401
from tensorrt_llm._torch.models.modeling_utils import (  # noqa: F401
    DecoderModel,
    DecoderModelForCausalLM,
    register_auto_model,
)
from tensorrt_llm._torch.modules.attention import Attention  # noqa: F401
from tensorrt_llm._torch.modules.decoder_layer import DecoderLayer  # noqa: F401
from tensorrt_llm._torch.modules.embedding import Embedding  # noqa: F401
from tensorrt_llm._torch.modules.fused_moe import (  # noqa: F401
    DefaultMoeRoutingMethod,
    RenormalizeMoeRoutingMethod,
    create_moe,
)
from tensorrt_llm._torch.modules.gated_mlp import GatedMLP  # noqa: F401
from tensorrt_llm._torch.modules.linear import Linear, TensorParallelMode  # noqa: F401
from tensorrt_llm._torch.modules.rms_norm import RMSNorm  # noqa: F401
from tensorrt_llm.functional import PositionEmbeddingType  # noqa: F401
