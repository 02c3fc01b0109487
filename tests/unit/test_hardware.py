"""The card table: lookup by the names NVML reports, dense figures, a source for every figure."""

from __future__ import annotations

import pytest

from vlab.core.hardware import CARDS, GIB, card_for, card_keys


@pytest.mark.parametrize(
    ("nvml_name", "key"),
    [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
        ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 4050 Laptop GPU", "RTX 4050 Laptop"),
        ("nvidia geforce rtx 4050 laptop gpu", "RTX 4050 Laptop"),  # case
        ("  NVIDIA  A100-SXM4-80GB ", "A100 80GB SXM"),  # spaces
        ("nvidia_a100_sxm4_80gb", "A100 80GB SXM"),  # punctuation
        ("RTX 4050 Laptop", "RTX 4050 Laptop"),  # the short key, as profiles write it
        ("H200", "H200"),
    ],
)
def test_card_for_nvml_names(nvml_name: str, key: str) -> None:
    card = card_for(nvml_name)
    assert card is not None and card.key == key


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 3090", "Tesla T4", "", None, "NVIDIA H20", "AMD Instinct MI300X"])
def test_unknown_cards_are_none(name: str | None) -> None:
    assert card_for(name) is None


def test_every_figure_has_a_source_and_keys_are_unique() -> None:
    assert len(set(card_keys())) == len(CARDS)
    names = [n for c in CARDS for n in c.nvml_names]
    assert len(set(names)) == len(names)
    for card in CARDS:
        assert all(len(src) > 20 for src in card.sources().values()), card.key
        assert card.memory_bytes > GIB and card.bandwidth_bytes_per_s > 1e11 and card.peak_flops > 1e13


def test_dense_figures_are_half_the_sparse_datasheet_ones() -> None:
    assert card_for("H200").peak_flops == 1979e12 / 2  # datasheet: 1,979 TFLOPS with sparsity
    assert card_for("H100").peak_flops == 1979e12 / 2
    assert card_for("L4").peak_flops == 242e12 / 2  # datasheet: 242 TFLOPS with sparsity
    assert card_for("A100 80GB SXM").peak_flops == 312e12  # the A100 datasheet prints the dense figure
    assert card_for("RTX 4090").peak_flops == 165.2e12  # FP32 accumulate, Ada whitepaper


def test_h200_figures_match_what_nvml_reported_on_the_host() -> None:
    h200 = card_for("NVIDIA H200")
    assert h200.memory_bytes == 150754820096  # docs/gpu-runs/2026-12-01-bringup/nvml.json mem_total
    # NVML's max memory clock x bus width x 2 (double data rate) / 8 bits: 3201 MHz x 6016 bit
    assert abs(3201e6 * 2 * 6016 / 8 - h200.bandwidth_bytes_per_s) / h200.bandwidth_bytes_per_s < 0.01


def test_rtx4050_laptop_derivation() -> None:
    card = card_for("NVIDIA GeForce RTX 4050 Laptop GPU")
    assert card.memory_bytes == 6 * GIB
    assert card.bandwidth_bytes_per_s == 16e9 * 96 / 8  # 16 Gbps GDDR6 on a 96-bit bus
    per_sm_clock = 165.2e12 / (128 * 2.52e9)  # RTX 4090: 128 SMs at 2.52 GHz -> 512 FLOP/clock/SM
    assert abs(20 * per_sm_clock * 2.37e9 - card.peak_flops) / card.peak_flops < 0.01
