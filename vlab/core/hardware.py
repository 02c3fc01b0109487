"""A small table of GPUs: memory, memory bandwidth and dense 16-bit tensor throughput, each figure with its source.

Units: `memory_bytes` in bytes, `bandwidth_bytes_per_s` in bytes/s (1 TB/s = 10^12 B/s, as vendors count), `peak_flops`
in FLOP/s (1 TFLOPS = 10^12 FLOP/s) for dense BF16/FP16 matrix multiply on the tensor cores with FP32 accumulation,
without 2:4 structured sparsity. NVIDIA's data-center datasheets print the sparse figure with a footnote ("with
sparsity"); the dense figure is half of it. GeForce figures are for FP32 accumulation (what PyTorch's FP16/BF16
GEMMs use), which on GeForce Ada cards runs at half the FP16-accumulate rate.

`card_for(nvml_name)` finds a card from the name NVML reports (`nvmlDeviceGetName`, e.g. "NVIDIA H200",
"NVIDIA A100-SXM4-80GB"); an unknown name gives None, and the report then says the physical limit is unknown.

The figures were checked in this project's session of 2026-12-01 against the sources named; where only a third-party
page was found, the source says so. Nothing here is measured, except where a source says "measured".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Card:
    """One GPU model. `nvml_names`: the exact names NVML reports for it (matched case- and space-insensitively)."""

    key: str
    """Short name used in profiles and docs, e.g. "H200" or "RTX 4050 Laptop"."""
    nvml_names: tuple[str, ...]
    memory_bytes: int
    bandwidth_bytes_per_s: float
    peak_flops: float
    """Dense BF16/FP16 tensor-core FLOP/s, FP32 accumulate, no sparsity."""
    memory_source: str
    bandwidth_source: str
    flops_source: str
    note: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def sources(self) -> dict[str, str]:
        """Figure → where it comes from."""
        return {"memory": self.memory_source, "bandwidth": self.bandwidth_source, "peak_flops": self.flops_source}


_H200_DS = (
    "NVIDIA H200 Tensor Core GPU product page and datasheet, https://www.nvidia.com/en-us/data-center/h200/ "
    "(H200 SXM column)"
)
_H100_DS = "NVIDIA H100 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h100/"
_A100_DS = (
    "NVIDIA A100 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/"
    "pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_L4_DS = "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/"
_ADA_WP = (
    "NVIDIA Ada Lovelace GPU Architecture whitepaper v2.1, appendix table 'GeForce RTX 4090' "
    "(https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf)"
)
_SPARSE_HALF = "; dense = half of the datasheet's figure 'with sparsity'"

CARDS: tuple[Card, ...] = (
    Card(
        key="H200",
        nvml_names=("NVIDIA H200",),
        memory_bytes=150_754_820_096,
        bandwidth_bytes_per_s=4.8e12,
        peak_flops=989.5e12,
        memory_source="measured: nvmlDeviceGetMemoryInfo total on this project's H200 SXM host, 2026-12-01 "
        "(143,771 MiB; datasheet: 141 GB HBM3e; CUDA reports 139.8 GiB of it to vLLM, the rest is driver-reserved)",
        bandwidth_source=f"{_H200_DS}: 4.8 TB/s (NVML on the host: max memory clock 3,201 MHz x 6,016-bit bus x 2 "
        "/ 8 = 4.81e12 B/s)",
        flops_source=f"{_H200_DS}: BF16/FP16 Tensor Core 1,979 TFLOPS with sparsity{_SPARSE_HALF} "
        "(dense ~989 TFLOPS also in the third-party table at https://itkb.uw.cz/2026/06/"
        "nvidia-h200-vs-b300-precisions-cores.html)",
    ),
    Card(
        key="H200 NVL",
        nvml_names=("NVIDIA H200 NVL",),
        memory_bytes=141 * GIB,
        bandwidth_bytes_per_s=4.8e12,
        peak_flops=835.5e12,
        memory_source=f"{_H200_DS.replace('H200 SXM column', 'H200 NVL column')}: 141 GB HBM3e (taken as GiB)",
        bandwidth_source=f"{_H200_DS.replace('H200 SXM column', 'H200 NVL column')}: 4.8 TB/s",
        flops_source=f"{_H200_DS.replace('H200 SXM column', 'H200 NVL column')}: BF16/FP16 Tensor Core 1,671 TFLOPS "
        f"with sparsity{_SPARSE_HALF}",
    ),
    Card(
        key="H100",
        nvml_names=("NVIDIA H100 80GB HBM3",),
        memory_bytes=80 * GIB,
        bandwidth_bytes_per_s=3.35e12,
        peak_flops=989.5e12,
        memory_source=f"{_H100_DS} (H100 SXM column): 80 GB HBM3 (taken as GiB)",
        bandwidth_source=f"{_H100_DS} (H100 SXM column): 3.35 TB/s",
        flops_source=f"{_H100_DS} (H100 SXM column): BF16/FP16 Tensor Core 1,979 TFLOPS with sparsity{_SPARSE_HALF} "
        "(dense 989.4 TFLOPS in the third-party page https://glennklockwood.com/garden/processors/h100)",
    ),
    Card(
        key="H100 PCIe",
        nvml_names=("NVIDIA H100 PCIe",),
        memory_bytes=80 * GIB,
        bandwidth_bytes_per_s=2.0e12,
        peak_flops=756.5e12,
        memory_source=f"{_H100_DS} (H100 PCIe column): 80 GB HBM2e (taken as GiB)",
        bandwidth_source=f"{_H100_DS} (H100 PCIe column): 2 TB/s",
        flops_source=f"{_H100_DS} (H100 PCIe column): BF16/FP16 Tensor Core 1,513 TFLOPS with sparsity{_SPARSE_HALF}",
    ),
    Card(
        key="H100 NVL",
        nvml_names=("NVIDIA H100 NVL",),
        memory_bytes=94 * GIB,
        bandwidth_bytes_per_s=3.9e12,
        peak_flops=835.5e12,
        memory_source=f"{_H100_DS} (H100 NVL column): 94 GB HBM3 (taken as GiB)",
        bandwidth_source=f"{_H100_DS} (H100 NVL column): 3.9 TB/s",
        flops_source=f"{_H100_DS} (H100 NVL column): BF16/FP16 Tensor Core 1,671 TFLOPS with sparsity{_SPARSE_HALF}",
    ),
    Card(
        key="A100 80GB SXM",
        nvml_names=("NVIDIA A100-SXM4-80GB",),
        memory_bytes=80 * GIB,
        bandwidth_bytes_per_s=2.039e12,
        peak_flops=312e12,
        memory_source=f"{_A100_DS}: 80 GB HBM2e (taken as GiB)",
        bandwidth_source=f"{_A100_DS}: A100 80GB SXM 2,039 GB/s",
        flops_source=f"{_A100_DS}: BFLOAT16/FP16 Tensor Core 312 TFLOPS (624 with sparsity)",
    ),
    Card(
        key="A100 80GB PCIe",
        nvml_names=("NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"),
        memory_bytes=80 * GIB,
        bandwidth_bytes_per_s=1.935e12,
        peak_flops=312e12,
        memory_source=f"{_A100_DS}: 80 GB HBM2e (taken as GiB)",
        bandwidth_source=f"{_A100_DS}: A100 80GB PCIe 1,935 GB/s",
        flops_source=f"{_A100_DS}: BFLOAT16/FP16 Tensor Core 312 TFLOPS (624 with sparsity)",
    ),
    Card(
        key="A100 40GB",
        nvml_names=("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"),
        memory_bytes=40 * GIB,
        bandwidth_bytes_per_s=1.555e12,
        peak_flops=312e12,
        memory_source=f"{_A100_DS}: 40 GB HBM2 (taken as GiB)",
        bandwidth_source=f"{_A100_DS}: A100 40GB 1,555 GB/s (SXM and PCIe)",
        flops_source=f"{_A100_DS}: BFLOAT16/FP16 Tensor Core 312 TFLOPS (624 with sparsity)",
    ),
    Card(
        key="L4",
        nvml_names=("NVIDIA L4",),
        memory_bytes=24 * GIB,
        bandwidth_bytes_per_s=300e9,
        peak_flops=121e12,
        memory_source=f"{_L4_DS}: 24 GB GDDR6 (taken as GiB)",
        bandwidth_source=f"{_L4_DS}: 300 GB/s",
        flops_source=f"{_L4_DS}: BF16/FP16 Tensor Core 242 TFLOPS with sparsity{_SPARSE_HALF} (the third-party "
        "https://hmc-tech.com/gpu/nvidia-l4-vs-nvidia-a100-40gb lists 125.3 dense at its 2,040 MHz boost)",
    ),
    Card(
        key="RTX 4090",
        nvml_names=("NVIDIA GeForce RTX 4090",),
        memory_bytes=24 * GIB,
        bandwidth_bytes_per_s=1.008e12,
        peak_flops=165.2e12,
        memory_source=f"{_ADA_WP}: 24 GB GDDR6X (taken as GiB)",
        bandwidth_source=f"{_ADA_WP}: 1,008 GB/s (21 Gbps x 384-bit / 8; also https://www.thefpsreview.com/"
        "gpu-family/nvidia-geforce-rtx-4090-gpu-family-specifications, third-party)",
        flops_source=f"{_ADA_WP}: peak FP16/BF16 Tensor TFLOPS with FP32 accumulate 165.2 (330.4 with sparsity; "
        "FP16 accumulate is twice that)",
    ),
    Card(
        key="RTX 4050 Laptop",
        nvml_names=("NVIDIA GeForce RTX 4050 Laptop GPU",),
        memory_bytes=6 * GIB,
        bandwidth_bytes_per_s=192e9,
        peak_flops=24.3e12,
        memory_source="NVIDIA GeForce RTX 40 Series Laptops specifications, https://www.nvidia.com/en-us/geforce/"
        "laptops/compare/: 6 GB GDDR6 (taken as GiB; nvidia-smi shows 6,141 MiB on one user's laptop, "
        "https://huggingface.co/Doommsky/hardware-profile, third-party)",
        bandwidth_source="third-party only: 16 Gbps GDDR6 x 96-bit / 8 = 192 GB/s (https://data-check.eu/en/"
        "nvidia-geforce-rtx-4050-laptop-gpu/, https://www.chaynikam.info/es/GeForce_RTX_4050_Mobile.html); "
        "NVIDIA's page gives no bandwidth",
        flops_source="derived, no vendor figure: 20 SMs x 512 FLOP/clock/SM (Ada GeForce FP16/BF16 tensor with FP32 "
        "accumulate: 165.2e12 / (128 SMs x 2.52 GHz) for the RTX 4090 in the Ada whitepaper) x 2.37 GHz, the "
        "highest boost clock (115 W TGP; 1.605 GHz at 35 W gives 16.4e12) per https://data-check.eu/en/"
        "nvidia-geforce-rtx-4050-laptop-gpu/ (third-party); consistent with NVIDIA's '194 AI TOPS' (FP8, "
        "sparse) / 8 = 24.25e12 and with https://hmc-tech.com/gpu/nvidia-geforce-rtx-4050-laptop-75w "
        "(21.04 TFLOPS at 2,055 MHz, third-party)",
        note="a laptop GPU's clocks depend on the laptop's power limit (35-115 W): its peak FLOP/s is an upper bound",
    ),
)
"""The cards the lab knows. Add one: copy an entry, give every figure a source."""


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def card_for(nvml_name: str | None) -> Card | None:
    """The card whose NVML name is `nvml_name` (case, spaces and punctuation ignored), else None.

    An exact match of one of a card's `nvml_names` wins; failing that, a card's `key` alone (e.g. "H200",
    "RTX 4050 Laptop") is accepted, so profiles can name cards the short way. Nothing fuzzier: a wrong card would give
    a wrong floor, which is worse than none.
    """
    if not nvml_name:
        return None
    wanted = _norm(nvml_name)
    for card in CARDS:
        if wanted in (_norm(n) for n in card.nvml_names):
            return card
    for card in CARDS:
        if wanted in (_norm(card.key), _norm(f"NVIDIA {card.key}"), _norm(f"NVIDIA GeForce {card.key}")):
            return card
    return None


def card_keys() -> list[str]:
    """The short names of the known cards, in table order."""
    return [card.key for card in CARDS]
