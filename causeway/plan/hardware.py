"""The GPUs `causeway plan` knows: datasheet figures and the measured rates the step-time
model uses, each with its source.

| figure | A100 80GB SXM4 | H100 SXM5 | H200 SXM | source |
|---|---|---|---|---|
| dense bf16 tensor-core peak, TFLOP/s | 312 | 989 | 989 | NVIDIA datasheets |
| best measured bf16 matmul, TFLOP/s | 271 | 795 | 795 | MAMF table, see below |
| flash attention, forward + backward, TFLOP/s | 190 | 330 | 330 | FlashAttention-2 paper |
| memory, GB (taken as GiB, as nvidia-smi shows) | 80 | 80 | 141 | datasheets |
| memory bandwidth, GB/s | 2039 | 3350 | 4800 | datasheets |
| streaming multiprocessors | 108 | 132 | 132 | datasheets / whitepapers |
| NVLink per GPU, both directions, GB/s | 600 | 900 | 900 | datasheets |
| network per GPU (one IB port), Gb/s | 200 (HDR) | 400 (NDR) | 400 (NDR) | DGX/HGX systems |

- Best measured matmul: Stas Bekman's "Maximum Achievable Matmul FLOPS" table
  (stas00/ml-engineering, compute/accelerator/README.md): A100 SXM 271.2 TFLOP/s (86.9%),
  H100 SXM 794.5 TFLOP/s (80.3%), brute-force searched shapes, torch 2.6-2.7. The H200 has
  the H100's compute die and clocks; its figure is taken as the H100's.
- Flash attention: FlashAttention-2 (Dao 2023, arXiv 2307.08691), forward + backward at
  head dim 128 and 2k-16k tokens, read from its A100 and H100 figures (about 190 and 330
  TFLOP/s). That is the kernel torch's SDPA and flash-attn 2 run; FlashAttention-3 or
  cuDNN attention on Hopper are faster (about 600 forward), which the plan does not assume.
- Sustained rates: inside a training step matmuls and attention run at `SUSTAINED` of
  those best measured rates (clocks under the power limit for minutes rather than a
  100-iteration burst, NCCL kernels sharing the SMs, cache-cold operands). This one
  figure is calibrated, not measured: it is the value that puts
  benchmarks/plan_vs_published.py's published runs (A100 and H100, FSDP, tensor and
  pipeline parallel) closest to their measured step times, and the same for every GPU.
- Links: collectives reach `LINK_EFFICIENCY` of the one-direction rate; memory-bound
  kernels `MEMORY_EFFICIENCY` of the datasheet bandwidth (device-to-device copies reach
  about 85-90%; short unfused kernels less).
"""

from __future__ import annotations

from dataclasses import dataclass

from causeway.config import ConfigError

LINK_EFFICIENCY = 0.8
SUSTAINED = 0.8
MEMORY_EFFICIENCY = 0.7
GPUS_PER_NODE = 8


@dataclass(frozen=True)
class GPU:
    name: str
    peak_tflops: float  # dense bf16, datasheet
    matmul_tflops: float  # best measured bf16 matmul
    attention_tflops: float  # flash attention forward + backward
    memory_gib: float
    memory_gbs: float  # HBM bandwidth, datasheet
    sms: int
    nvlink_gbs: float  # per GPU, both directions
    network_gbits: float  # per GPU, one direction

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def intra_node_bytes_s(self) -> float:
        return self.nvlink_gbs / 2 * 1e9 * LINK_EFFICIENCY

    @property
    def inter_node_bytes_s(self) -> float:
        return self.network_gbits / 8 * 1e9 * LINK_EFFICIENCY

    @property
    def hbm_bytes_s(self) -> float:
        return self.memory_gbs * 1e9 * MEMORY_EFFICIENCY


GPUS = {
    "h100": GPU("h100", 989.0, 794.5, 330.0, 80.0, 3350.0, 132, 900.0, 400.0),
    "h200": GPU("h200", 989.0, 794.5, 330.0, 141.0, 4800.0, 132, 900.0, 400.0),
    "a100": GPU("a100", 312.0, 271.2, 190.0, 80.0, 2039.0, 108, 600.0, 200.0),
}


def gpu_spec(name: str) -> GPU:
    if name not in GPUS:
        raise ConfigError(f"unknown --gpu '{name}'; known: {', '.join(GPUS)}")
    return GPUS[name]


def bandwidth(gpu: GPU, stride: int, size: int) -> float:
    """Bytes/s of a group of `size` ranks `stride` apart in the global rank order: a group
    that spans more than one node runs at the inter-node rate."""
    return gpu.intra_node_bytes_s if stride * size <= GPUS_PER_NODE else gpu.inter_node_bytes_s
