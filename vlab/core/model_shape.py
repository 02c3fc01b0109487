"""The shape of a dense decoder-only transformer (Llama/Qwen2 style), read from a Hugging Face `config.json`, and the
sizes that follow from it: parameters, weight bytes, KV-cache bytes per token, FLOPs per token.

With h = hidden_size, L = num_hidden_layers, n_q = num_attention_heads, n_kv = num_key_value_heads,
d = head_dim (or h / n_q when absent), f = intermediate_size, V = vocab_size:

- embedding: V·h; lm_head: V·h unless tie_word_embeddings (then it is the embedding matrix itself, counted once);
- attention per layer: q: h·(n_q·d), k and v: h·(n_kv·d) each, o: (n_q·d)·h; plus biases n_q·d + 2·n_kv·d when the
  model has q/k/v biases (Qwen2 always; Llama when `attention_bias` is true); o has none;
- MLP per layer (SwiGLU): gate and up h·f each, down f·h (plus biases 2f + h when `mlp_bias`);
- norms: 2·h per layer (input and post-attention RMSNorm weights) + h for the final norm;
- parameters = embedding + L·(attention + MLP + 2h) + h + lm_head (0 when tied).

Weight bytes = parameters × bytes per element of the dtype (bf16/fp16: 2, fp32: 4). KV-cache bytes per token =
2 (K and V) × L × n_kv × d × bytes per element.

FLOPs per token ≈ 2 × `matmul_params` (one multiply and one add per weight): every matrix multiply's weights, the
lm_head included (tied or not), the input embedding excluded (a table lookup costs no FLOPs). For a tied model that is
2 × parameters less the norms; untied (Qwen2-7B) it is 2 × (parameters − V·h). Left out: attention's score and value
products, 4·L·n_q·d·c FLOPs for a token that attends to c earlier tokens (`attention_flops_per_token(c)`): for
Qwen2-1.5B at c = 512 that is 88 MFLOP against 3.09 GFLOP of matmuls, 2.9 %; at c = 4096, 23 %. Norms, RoPE, softmax
and activations are a fraction of a percent. The physical limits built on this are floors, and leaving work out keeps
them floors.

Only dense models with these keys are accepted; MoE, sliding-window-only or multimodal configs raise ConfigError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlab.core.errors import ConfigError

DTYPE_BYTES: dict[str, int] = {"float16": 2, "bfloat16": 2, "half": 2, "float32": 4, "float": 4}
"""Bytes per element of the weight dtypes vLLM takes (`--dtype`)."""
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of `dtype` ("float16", "bfloat16", "float32", ...). Raises ConfigError if unknown."""
    try:
        return DTYPE_BYTES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(DTYPE_BYTES)}") from None


class ModelShape(BaseModel):
    """The architecture numbers that decide memory and compute (not the weights). All counts are elements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(description="First entry of config.json `architectures`, e.g. Qwen2ForCausalLM.")
    model_type: str = ""
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool
    qkv_bias: bool
    mlp_bias: bool = False
    dtype: Literal["float16", "bfloat16", "float32"] = Field(description="The checkpoint's dtype (torch_dtype).")
    max_position_embeddings: int | None = None

    # ------------------------------------------------------------------------------------------------- reading
    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> ModelShape:
        """Read a Hugging Face config dict (Qwen2/Llama keys). Raises ConfigError (one line, naming `source`)."""
        if any(k in config and config[k] for k in MOE_KEYS):
            raise ConfigError(f"{source}: mixture-of-experts configs are not supported (dense models only)")
        text = config.get("text_config")
        if isinstance(text, dict) and "hidden_size" not in config:
            raise ConfigError(f"{source}: multimodal config (text_config); give the text model's config.json")
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            arch = (config.get("architectures") or [config.get("model_type", "unknown")])[0]
            model_type = str(config.get("model_type", ""))
            dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
            if dtype not in ("float16", "bfloat16", "float32"):
                raise ConfigError(f"{source}: torch_dtype {dtype!r} not supported (float16, bfloat16, float32)")
            qwen2 = model_type == "qwen2" or str(arch).startswith("Qwen2")
            return cls(
                architecture=str(arch),
                model_type=model_type,
                hidden_size=hidden,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate_size=int(config["intermediate_size"]),
                vocab_size=int(config["vocab_size"]),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=bool(config.get("attention_bias", qwen2)),
                mlp_bias=bool(config.get("mlp_bias", False)),
                dtype=dtype,  # type: ignore[arg-type]
                max_position_embeddings=config.get("max_position_embeddings"),
            )
        except KeyError as exc:
            raise ConfigError(f"{source}: missing key {exc.args[0]!r} (not a Llama/Qwen2-style config)") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None

    @classmethod
    def from_config_file(cls, path: Path | str) -> ModelShape:
        """Read `path` (a config.json, or a model folder holding one). Raises ConfigError if missing or invalid."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read model config ({exc.strerror})") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_config(data, str(path))

    # ----------------------------------------------------------------------------------------------- parameters
    @property
    def q_dim(self) -> int:
        """n_q · d: width of the query projection."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """n_kv · d: width of each of the key and value projections."""
        return self.num_kv_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        """V · h."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """V · h, or 0 when tied to the embedding."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def attention_params_per_layer(self) -> int:
        """q, k, v, o weights, plus q/k/v biases when the model has them."""
        h = self.hidden_size
        weights = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        bias = self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0
        return weights + bias

    @property
    def mlp_params_per_layer(self) -> int:
        """gate, up (h·f each) and down (f·h), plus biases when `mlp_bias`."""
        h, f = self.hidden_size, self.intermediate_size
        return 3 * h * f + ((2 * f + h) if self.mlp_bias else 0)

    @property
    def norm_params(self) -> int:
        """2h per layer + h for the final norm."""
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def params(self) -> int:
        """All parameters (a tied lm_head counted once)."""
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        return self.embedding_params + self.num_layers * per_layer + self.norm_params + self.lm_head_params

    @property
    def matmul_params(self) -> int:
        """Weights that take part in a matrix multiply for every token: all layers' projections and the lm_head
        (V·h, tied or not); not the input embedding lookup, not the norms."""
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        return self.num_layers * per_layer + self.vocab_size * self.hidden_size

    # -------------------------------------------------------------------------------------------------- bytes
    def resolve_dtype(self, dtype: str | None = "auto") -> str:
        """The dtype vLLM runs with for `--dtype dtype`: the given one, or for "auto"/None the checkpoint's, with
        float32 checkpoints run in bfloat16 (vLLM's "auto" does not serve in fp32)."""
        if dtype in (None, "auto"):
            return "bfloat16" if self.dtype == "float32" else self.dtype
        dtype_bytes(dtype)
        return dtype

    def weight_bytes(self, dtype: str | None = "auto") -> int:
        """Parameters × bytes per element of the served dtype."""
        return self.params * dtype_bytes(self.resolve_dtype(dtype))

    def matmul_weight_bytes(self, dtype: str | None = "auto") -> int:
        """Bytes of the weights a forward pass must read in full: `matmul_params` × bytes per element."""
        return self.matmul_params * dtype_bytes(self.resolve_dtype(dtype))

    def kv_bytes_per_token(self, dtype: str | None = "auto") -> int:
        """2 × layers × kv_heads × head_dim × bytes per element (the KV cache takes the model's dtype)."""
        return 2 * self.num_layers * self.kv_dim * dtype_bytes(self.resolve_dtype(dtype))

    # -------------------------------------------------------------------------------------------------- FLOPs
    @property
    def flops_per_token(self) -> int:
        """2 × matmul_params: the matrix-multiply FLOPs of one token's forward pass (attention scores excluded)."""
        return 2 * self.matmul_params

    def attention_flops_per_token(self, context_tokens: float) -> float:
        """4 × layers × n_q × d × c: QKᵀ and the weighted sum over V for one token attending to c tokens."""
        return 4.0 * self.num_layers * self.q_dim * float(context_tokens)

    def summary(self, dtype: str | None = "auto") -> str:
        """One line: layers, widths, parameters, weight bytes and KV bytes per token."""
        d = self.resolve_dtype(dtype)
        return (
            f"{self.architecture}: {self.num_layers} layers, hidden {self.hidden_size}, {self.num_heads} heads / "
            f"{self.num_kv_heads} KV heads (head {self.head_dim}), MLP {self.intermediate_size}, vocab "
            f"{self.vocab_size}{', tied' if self.tie_word_embeddings else ''}; {self.params:,} parameters, "
            f"{self.weight_bytes(d) / 1e9:.2f} GB {d}, KV {self.kv_bytes_per_token(d) / 1024:g} KiB/token"
        )
