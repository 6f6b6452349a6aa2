"""transformers registration of Tencent's config dialect (``model_type: "hunyuan"``).

transformers knows ``hunyuan_v1_moe`` / ``hunyuan_v1_dense`` but not Tencent's own
``model_type: "hunyuan"`` (A13B's GitHub config, every Hunyuan-Large config): without this,
``AutoConfig`` (and so every engine) demands ``trust_remote_code``. Registering a config class
here lets ``AutoConfig.from_pretrained`` read those checkpoints with local code only.
Engine adapters call :func:`register` from their plugin entry points. Imports transformers.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from hunyuan_plugins.config import HunyuanConfig


class HunYuanConfig(PretrainedConfig):
    """Tencent-dialect Hunyuan config: keeps every field of config.json as an attribute."""

    model_type = "hunyuan"
    keys_to_ignore_at_inference = ["past_key_values"]

    # Hunyuan's alpha-NTK keys; transformers' rope validation does not know them
    ignore_keys_at_rope_validation = {"alpha", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"}

    def __init__(self, **kwargs):
        kwargs.pop("auto_map", None)  # point at Tencent's remote code; we serve it locally
        for key in ("rope_scaling", "rope_parameters"):
            rope = kwargs.get(key)
            if isinstance(rope, dict) and "alpha" in rope and "factor" not in rope:
                # Hunyuan-Large writes {"type": "dynamic", "alpha": ...}; transformers' validator
                # insists on a factor, which the static alpha base ignores anyway
                kwargs[key] = dict(rope, factor=1.0)
        super().__init__(**kwargs)
        # engines read head_dim; Tencent's dialect calls it attention_head_dim
        if getattr(self, "head_dim", None) is None and getattr(self, "attention_head_dim", None):
            self.head_dim = self.attention_head_dim

    def hunyuan(self) -> HunyuanConfig:
        """The validated, normalised view (raises HunyuanConfigError naming a bad field)."""
        return HunyuanConfig.from_dict(self.to_dict())


def register() -> None:
    """Idempotent: make AutoConfig resolve model_type 'hunyuan' to HunYuanConfig."""
    AutoConfig.register("hunyuan", HunYuanConfig, exist_ok=True)
