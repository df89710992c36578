"""The plan's step-time model: its parts follow the shapes, the masks and the layout."""

from __future__ import annotations

import pytest

from causeway.config import load_config
from causeway.plan.hardware import GPUS, SUSTAINED
from causeway.plan.report import plan
from causeway.plan.step_time import EXPOSED, Gemm, gemm_seconds

H100 = GPUS["h100"]
# A 1.3B decoder: d 2048, 24 layers, 2048 tokens, 16 rows per GPU on 8 GPUs.
MID = ["model.d_model=2048", "model.n_layers=24", "model.n_heads=16", "model.d_ff=5504",
       "model.vocab_size=32000", "model.max_seq_len=2048", "data.seq_len=2048",
       "data.batch_size=128", "data.micro_batch_size=4"]  # fmt: skip


def achieved(g: Gemm) -> float:
    return 2 * g.m * g.n * g.k / gemm_seconds(H100, g, 2) / 1e12


def test_gemm_rate_falls_for_small_and_skinny_shapes():
    big = achieved(Gemm(8192, 8192, 8192))
    assert big == pytest.approx(H100.matmul_tflops * SUSTAINED, rel=0.05)
    assert achieved(Gemm(8192, 8192, 128)) < 0.75 * big  # short reduction
    assert achieved(Gemm(256, 256, 4096)) < 0.5 * big  # few output tiles
    assert achieved(Gemm(64, 64, 64)) < 0.05 * big  # memory and tiles
    # Past the ridge point the roofline's memory side takes over: a matrix-vector product.
    vector = Gemm(8192, 1, 8192)
    assert gemm_seconds(H100, vector, 2) == pytest.approx(
        2 * (8192**2 + 2 * 8192) / H100.hbm_bytes_s
    )


def test_parts_add_up_shares_sum_to_one_and_mfu_follows():
    r = plan(load_config("tiny-cd-flm", MID), 8, "h100")
    parts, shares = r["step_time_parts_s"], r["step_time_shares"]
    assert r["step_time_s_estimate"] == pytest.approx(sum(parts[k] for k in EXPOSED), rel=1e-3)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(shares, key=shares.get) == "matmul"
    peak = r["peak_tflops"] * 1e12 * r["gpus"]
    assert r["mfu_estimate"] == pytest.approx(
        r["flops_per_step"] / (r["step_time_s_estimate"] * peak), rel=1e-3
    )
    assert 0.25 < r["mfu_estimate"] < 0.6  # published H100 runs of this size: 35-50%


def test_a_tiny_model_is_launch_bound_not_at_matmul_efficiency():
    r = plan(load_config("tiny-cd-flm"), 1, "h100")
    shares = r["step_time_shares"]
    assert shares["launch_overhead"] > shares["matmul"]
    assert r["mfu_estimate"] < 0.05


def test_causal_attention_costs_less_than_prefix_and_prefix_less_than_bidirectional():
    recipes = {"causal": "tiny-cd-flm", "prefix": "tiny-nd-plm", "bidirectional": "tiny-bi-mlm"}
    seconds = {v: plan(load_config(recipe, MID), 8) for v, recipe in recipes.items()}
    attention = {v: r["step_time_parts_s"]["attention"] for v, r in seconds.items()}
    assert attention["causal"] < attention["prefix"] < attention["bidirectional"]
    assert attention["causal"] == pytest.approx(attention["bidirectional"] / 2, rel=1e-6)
    # Same model FLOPs (the full square is counted whatever the mask).
    assert len({r["flops_per_step"] for r in seconds.values()}) == 1


def test_recompute_bubble_and_tensor_parallel_appear_with_their_layouts():
    base = plan(load_config("tiny-cd-flm", MID), 8)["step_time_parts_s"]
    full = plan(load_config("tiny-cd-flm", [*MID, "parallel.activation_checkpoint=full"]), 8)
    recompute = full["step_time_parts_s"]["recompute"]
    # The forward again: about a third of the matmuls, attention and block elementwise work.
    work = sum(base[k] for k in ("matmul", "attention", "memory_bound"))
    assert base["recompute"] == 0 and 0.25 < recompute / work < 0.4
    piped = plan(load_config("tiny-cd-flm", [*MID, "parallel.pp=2"]), 8)
    p, lay = piped["step_time_parts_s"], piped["layout"]
    compute = sum(p[k] for k in ("matmul", "attention", "memory_bound", "recompute",
                                 "launch_overhead"))  # fmt: skip
    bubble = (lay["pp"] - 1) / lay["micro_batches"]
    optimizer_free = compute - p["memory_bound"]  # the optimizer step is outside the bubble
    assert optimizer_free * bubble <= p["pipeline_bubble"] <= compute * bubble
    tp = plan(load_config("tiny-cd-flm", [*MID, "parallel.tp=2"]), 8)["step_time_parts_s"]
    assert base["tp_communication"] == 0 < tp["tp_communication"]
    assert tp["matmul"] == pytest.approx(base["matmul"], rel=0.25)  # half the GEMM, twice the rows


def test_a100_is_slower_than_h100_by_about_its_matmul_rate():
    cfg = load_config("tiny-cd-flm", MID)
    h100, a100 = plan(cfg, 8, "h100"), plan(cfg, 8, "a100")
    ratio = a100["step_time_parts_s"]["matmul"] / h100["step_time_parts_s"]["matmul"]
    assert ratio == pytest.approx(794.5 / 271.2, rel=0.15)
