"""Hugging Face Llama-family export and import of causeway decoders.

A causeway decoder with SwiGLU, RMSNorm, rotary positions ("rotate half", as in HF Llama),
grouped-query attention and no biases is a Llama model; only the names differ
(`hf_export.LAYER_NAMES`, `hf_export.TOP_NAMES`).
Both directions are exact in fp32: RMSNorm is `weight * x / sqrt(mean(x^2) + eps)` on
both sides (HF computes it in fp32, so equal in fp32), and the rotary tables use the same
inverse frequencies.

`config.json` also carries a `causeway` block with the model section, so that what Llama
cannot say (visibility, dropout, attention backend) survives a round trip; Llama's own
fields always win over the block. A checkpoint from elsewhere has no block and imports as
a causal decoder.

Visibility: Llama modules are causal. The weights of a prefix or bidirectional decoder
export fine, but at inference they need a 4-D attention mask (`hf_attention_mask`), which
transformers passes to the attention as given; without it they run causally.
"""

from causeway.convert.hf_export import export_hf, hf_attention_mask
from causeway.convert.hf_import import import_hf

__all__ = ["export_hf", "hf_attention_mask", "import_hf"]
