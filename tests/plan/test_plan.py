"""`causeway plan`: the real layout on a fake process group, its memory, its refusals."""

from __future__ import annotations

import json
import time

import pytest
import torch.distributed as dist

from causeway.config import load_config
from causeway.models import build_model
from causeway.models.flops import count_parameters, flops_per_token
from causeway.parallel.dims import ParallelDims
from causeway.plan.memory import in_flight, optimizer_floats, self_block_bytes
from causeway.plan.report import fake_world, main_plan, plan

# The recipes' lengths are not multiples of tp 4 / 8 (626 = 2 x 313, 114 = 2 x 3 x 19):
# the trainer pads rows for sequence parallelism, so the layouts are valid as they are.
ND_64 = ["parallel.tp=4", "parallel.pp=2", "parallel.dp_shard=8"]
ED_128 = ["parallel.tp=8", "parallel.dp_shard=16"]
BIG = {"paper-4.8b-nd-mlm": (64, ND_64), "paper-11b-ed-mlm": (128, ED_128)}
# ED on 8 GPUs with 32-row micro-batches and no checkpointing: activations overflow.
ED_8_OVERFLOW = ["data.micro_batch_size=32"]


@pytest.fixture(scope="module")
def big_plans():
    """recipe -> (config, report, seconds taken by `plan`)."""
    out = {}
    for recipe, (gpus, sets) in BIG.items():
        cfg = load_config(recipe, sets)
        start = time.perf_counter()
        report = plan(cfg, gpus, "h100")
        out[recipe] = (cfg, report, time.perf_counter() - start)
    return out


@pytest.mark.parametrize("recipe", BIG)
def test_parameters_are_the_models_exact_count(big_plans, recipe):
    cfg, report, _ = big_plans[recipe]
    assert report["parameters"] == count_parameters(build_model(cfg.model))
    assert report["fits"] and report["overflow"] is None


@pytest.mark.parametrize("recipe", BIG)
def test_local_shards_add_up_to_the_model(big_plans, recipe):
    cfg, report, _ = big_plans[recipe]
    lay, total = report["layout"], report["parameters"]
    shards = lay["tp"] * lay["dp_shard"]
    # Every pipeline rank's shards together: the model, plus the last stage's copy of the
    # tied embedding, plus norm gains replicated over tp and FSDP's padding (tiny).
    tied_copy = cfg.model.vocab_size * cfg.model.d_model if lay["pp"] > 1 else 0
    summed = sum(r["parameter_count"] for r in report["per_pipeline_rank"]) * shards
    assert summed == pytest.approx(total + tied_copy, rel=1e-3)
    # Each key says its unit: counts are elements, bytes are fp32 bytes.
    for rank in report["per_pipeline_rank"]:
        assert rank["parameter_bytes"] == 4 * rank["parameter_count"]
    # The most loaded rank, times every rank, is the model within a few percent.
    per_rank = report["bytes_per_rank"]["parameters"]
    assert per_rank * shards * lay["pp"] == pytest.approx(4 * total, rel=0.04)
    assert report["bytes_per_rank"]["gradients"] == per_rank


@pytest.mark.parametrize("recipe", BIG)
def test_big_plans_take_well_under_a_minute(big_plans, recipe):
    seconds = big_plans[recipe][2]
    print(f"{recipe}: plan took {seconds:.2f} s")
    assert seconds < 60


@pytest.mark.parametrize("recipe", BIG)
def test_checkpointing_keeps_fewer_activations_and_the_fit_uses_the_configured_mode(
    big_plans, recipe
):
    cfg, report, _ = big_plans[recipe]
    b = report["bytes_per_rank"]
    assert 0 < b["activations_checkpointed"] < b["activations"] / 4
    gpus, sets = BIG[recipe]
    full = plan(load_config(recipe, [*sets, "parallel.activation_checkpoint=full"]), gpus)
    same_rank = full["per_pipeline_rank"][report["pipeline_rank"]]["total_bytes"]
    assert same_rank == b["total"] - b["activations"] + b["activations_checkpointed"]
    assert full["step_time_parts_s"]["recompute"] > 0 == report["step_time_parts_s"]["recompute"]


def test_adafactor_state_is_factored_and_adamw_state_is_two_floats_per_parameter():
    assert optimizer_floats("adamw", 1000, (100, 40)) == 2000
    assert optimizer_floats("adafactor", 250, (100, 40)) == 140  # rows + cols, global shape
    assert optimizer_floats("adafactor", 16, (128,)) == 16  # vectors: like the shard
    gpus, sets = BIG["paper-4.8b-nd-mlm"]
    adamw = plan(load_config("paper-4.8b-nd-mlm", [*sets, "optimizer.name=adamw"]), gpus)
    b = adamw["bytes_per_rank"]
    assert b["optimizer"] == 2 * b["parameters"]


def test_activation_rules_per_token_and_in_flight():
    cfg = load_config("paper-4.8b-nd-mlm")
    # d 4096, q = kv = 4096, f 10240: 2d + q + 2kv + 2q + 4f sharded, 2d gathered, bf16;
    # fp32 rstd x 2 and a log-sum-exp per head (64).
    assert self_block_bytes(cfg.model, 1, 2) == 2 * (9 * 4096 + 4 * 10240) + 4 * 66
    assert self_block_bytes(cfg.model, 4, 2) == 2 * (7 * 4096 / 4 + 10240 + 2 * 4096) + 66
    assert [in_flight(cfg, 4, 32, r) for r in range(4)] == [4, 3, 2, 1]  # 1F1B
    assert in_flight(cfg, 1, 32, 0) == 1
    cfg.parallel.pp_schedule = "gpipe"
    assert in_flight(cfg, 4, 32, 3) == 32
    cfg.parallel.pp_schedule, cfg.parallel.virtual_stages = "interleaved_1f1b", 2
    assert in_flight(cfg, 4, 8, 0) == (4 + 2 * 3 + 1) / 2


def test_an_overflowing_layout_is_refused_naming_activations(capsys):
    assert main_plan("paper-11b-ed-mlm", 8, "h100", ED_8_OVERFLOW, False) == 2
    out, err = capsys.readouterr()
    assert "DOES NOT FIT" in out and "step time (estimate)" in out  # the figures still show
    assert len(err.strip().splitlines()) == 1
    assert "largest: activations" in err and "> 72.0 GiB usable" in err
    assert "parallel.activation_checkpoint=full" in err
    # Following the advice fits; so does the same layout on an H200's 141 GB.
    full = [*ED_8_OVERFLOW, "parallel.activation_checkpoint=full"]
    assert main_plan("paper-11b-ed-mlm", 8, "h100", full, False) == 0
    assert main_plan("paper-11b-ed-mlm", 8, "h200", ED_8_OVERFLOW, False) == 0


def test_an_overflowing_layout_still_prints_its_json(capsys):
    assert main_plan("paper-11b-ed-mlm", 8, "h100", ED_8_OVERFLOW, True) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["fits"] is False and "largest: activations" in report["overflow"]
    assert report["step_time_s_estimate"] > 0 and "largest: activations" in err


def test_each_activation_line_is_the_worst_rank_for_its_own_mode():
    from causeway.plan.report import measure_ranks, rank_bytes

    cfg = load_config("paper-4.8b-nd-mlm", [*ND_64, "parallel.activation_checkpoint=full"])
    report = plan(cfg, 64)
    dims = ParallelDims.from_config(cfg, 64)
    per_rank = [rank_bytes(cfg, dims, rank) for rank in measure_ranks(cfg, dims)]
    for mode, key in (("none", "activations"), ("full", "activations_checkpointed")):
        worst = max(range(len(per_rank)), key=lambda r: per_rank[r][key])
        assert report["activations_by_mode"][mode] == {
            "bytes": per_rank[worst][key], "pipeline_rank": worst
        }  # fmt: skip


def test_an_optimizer_that_overflows_is_named(capsys):
    sets = ["optimizer.name=adamw", "parallel.activation_checkpoint=full"]
    assert main_plan("paper-4.8b-nd-mlm", 1, "h100", sets, False) == 2
    err = capsys.readouterr().err
    assert "largest: optimizer" in err and "optimizer 35.5 GiB" in err


@pytest.mark.parametrize(
    ("recipe", "gpus", "gpu", "sets", "message"),
    [
        ("paper-11b-ed-mlm", 16, "h100", ["parallel.pp=2"], "pipeline parallelism is not"),
        (
            "paper-4.8b-nd-mlm", 2, "h100",
            ["parallel.pp=2", "parallel.pp_schedule=interleaved_1f1b"],
            "interleaved_1f1b needs parallel.virtual_stages >= 2",
        ),
        ("paper-4.8b-nd-mlm", 63, "h100", ["parallel.tp=2"], "not divisible by dp_replicate"),
        ("paper-4.8b-nd-mlm", 8, "v100", [], "unknown --gpu 'v100'; known: h100, h200, a100"),
        ("paper-4.8b-nd-mlm", 0, "h100", [], "--gpus must be >= 1"),
        ("paper-4.8b-nd-mlm", 8, "h100", ["parallel.virtual_stages=2"],
         "parallel.virtual_stages 2 needs a pipeline"),
    ],
)  # fmt: skip
def test_invalid_layouts_are_refused_with_their_reason(capsys, recipe, gpus, gpu, sets, message):
    assert main_plan(recipe, gpus, gpu, sets, True) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and len(err.strip().splitlines()) == 1
    assert not dist.is_initialized()


def test_json_report_has_the_documented_fields(capsys):
    assert main_plan("paper-4.8b-nd-mlm", 64, "h100", ND_64, True) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("parameters", "flops_per_token", "tokens_per_step", "step_time_s_estimate"):
        assert report[key] > 0
    assert 0 < report["mfu_estimate"] < 0.8  # the best measured matmul rate over peak
    assert report["gpu"] == "h100" and report["fits"] is True
    assert report["layout"] == report["layout"] | {
        "dp_replicate": 1, "dp_shard": 8, "tp": 4, "pp": 2, "virtual_stages": 1,
    }  # fmt: skip
    parts = ("parameters", "gradients", "optimizer", "activations", "activations_checkpointed")
    assert all(report["bytes_per_rank"][k] > 0 for k in (*parts, "total"))
    assert report["tokens_per_step"] == 2048 * 626


def test_human_report_is_a_table_labelled_as_an_estimate(capsys):
    assert main_plan("paper-11b-ed-mlm", 128, "a100", ED_128, False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("recipe") and "paper-11b-ed-mlm on 128 x a100" in lines[0]
    values = {line.split("  ")[0].strip(): line for line in lines}
    assert "step time (estimate)" in values and "MFU (estimate)" in values
    assert "11,003,731,968" in values["parameters"]
    columns = {len(line) - len(line[line.index("  ") :].lstrip()) for line in lines[:6]}
    assert len(columns) == 1  # values start in one column


def test_flops_per_token_is_the_models(big_plans):
    cfg, r, _ = big_plans["paper-4.8b-nd-mlm"]
    assert r["flops_per_token"] == pytest.approx(flops_per_token(cfg.model, 626))


def test_encoder_decoder_flops_count_each_side_over_its_own_tokens(big_plans):
    cfg, r, _ = big_plans["paper-11b-ed-mlm"]
    m = cfg.model
    # 6 x parameters over the tokens that use them: encoder (and cross K/V) over the
    # inputs, decoder and output over the targets; plus attention scores.
    enc = 24 * (4 * 4096**2 + 3 * 4096 * 10240) + 24 * 2 * 4096**2
    dec = 24 * (6 * 4096**2 + 3 * 4096 * 10240) + 4096 * m.vocab_size
    scores = 12 * 4096 * 24 * (512 * 512 + 114 * (114 + 512))
    expected = (6 * (512 * enc + 114 * dec) + scores) * 2048
    assert r["flops_per_step"] == pytest.approx(expected, rel=1e-9)


def test_plan_leaves_no_process_group_and_refuses_to_share_one():
    assert not dist.is_initialized()
    with fake_world(4), pytest.raises(RuntimeError, match="needs its own process group"):
        plan(load_config("paper-4.8b-nd-mlm"), 4)
    assert not dist.is_initialized()


def test_assumptions_are_labelled_and_megatron_mfu_halves_only_causal_attention(capsys):
    sets = ["parallel.tp=4", "parallel.pp=2"]
    causal = plan(load_config("paper-4.8b-cd-flm", sets), 64)
    prefix = plan(load_config("paper-4.8b-nd-plm", sets), 64)
    for report in (causal, prefix):
        labels = report["assumptions"]
        assert "full T x T square" in labels["flop_convention"]
        assert labels["precision"].startswith("bf16 compute")
        assert "no [T, T] scores" in labels["attention"] and labels["sequence_parallel"]
    assert causal["mfu_estimate_megatron_convention"] < causal["mfu_estimate"]
    assert prefix["mfu_estimate_megatron_convention"] == prefix["mfu_estimate"]
    ed = plan(load_config("paper-11b-ed-mlm", ["parallel.tp=8"]), 128)
    assert "per input + target token" in ed["assumptions"]["flops_per_token"]
    assert ed["flops_per_target_token"] > ed["flops_per_token"]
    assert main_plan("paper-4.8b-cd-flm", 64, "h100", sets, False) == 0
    out = capsys.readouterr().out
    assert "MFU, Megatron-LM convention" in out and "  flop_convention: PaLM" in out
