"""The bad-input table: one `Bad` row per wrong input (tests/test_bad_inputs.py runs them).

To add a case, add a `Bad` row: the command line after `causeway` (with the placeholders of
`test_bad_input`'s `where`), a fragment of the expected line, and, when the bad input is a
file or a directory, a `setup` that makes it under `{tmp}`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# A 1-layer model: its checkpoint is trained in well under a second.
SMALL = ["model.n_layers=1", "model.d_model=64", "model.d_ff=128"]
SETS = " ".join(f"--set {item}" for item in SMALL)
Setup = Callable[[Path, dict], None]


@dataclass(frozen=True)
class Bad:
    id: str
    args: str  # the command line after `causeway`, with {placeholders}
    says: str  # a fragment of the one line on stderr
    code: int = 2
    setup: Setup | None = None  # makes the bad file or directory under {tmp}
    needs: str | None = None  # a module the case cannot run without


def write(name: str, text: str) -> Setup:
    def setup(tmp: Path, _: dict) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(text.encode(errors="surrogateescape"))

    return setup


def dataset(damage: Callable[[Path], None]) -> Setup:
    """A copy of the builtin dataset at {tmp}/ds, damaged."""

    def setup(tmp: Path, where: dict) -> None:
        shutil.copytree(where["builtin"], tmp / "ds")
        damage(tmp / "ds")

    return setup


def run_copy(damage: Callable[[Path], None]) -> Setup:
    """A copy of the shared run at {tmp}/r, damaged (its checkpoint is {tmp}/r/ckpt)."""

    def setup(tmp: Path, where: dict) -> None:
        shutil.copytree(where["run"], tmp / "r")
        damage(tmp / "r" / "checkpoints" / "step_1")

    return setup


def flip_bytes(path: Path, at: int = 5000) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"XXXX")


def truncate_train_shards(ds: Path) -> None:
    for shard in ds.glob("train-*.tar"):
        with open(shard, "r+b") as f:
            f.truncate(1000)


def set_index(**fields) -> Callable[[Path], None]:
    def damage(ds: Path) -> None:
        (ds / "index.json").write_text(json.dumps(fields))

    return damage


def multiple(*setups: Setup) -> Setup:
    def setup(tmp: Path, where: dict) -> None:
        for one in setups:
            one(tmp, where)

    return setup


JSONL = write("docs.jsonl", json.dumps({"text": "a document " * 20}) + "\n")
TRAIN = "train tiny-cd-flm --run-dir {out}"

CASES = [
    # -- unknown and mistyped config keys, at every nesting level ------------------------
    Bad("key-typo-in-section", f"{TRAIN} --set model.d_modle=3",
        "unknown key 'model.d_modle' (in --set model.d_modle=3); did you mean 'model.d_model'?"),
    Bad("key-typo-top-level", f"{TRAIN} --set modle.d_model=3",
        "unknown key 'modle' (in --set modle.d_model=3); did you mean 'model'?"),
    Bad("key-typo-third-level", f"{TRAIN} --set train.wandb.projct=x",
        "did you mean 'train.wandb.project'?"),
    Bad("key-typo-in-list-entry", TRAIN + " --set 'data.mixture=[{{pth: x}}]'",
        "unknown key 'data.mixture[0].pth' (in --set data.mixture=[{{pth: x}}]); "
        "did you mean 'data.mixture[0].path'?"),
    Bad("key-typo-in-recipe-file", "train {tmp}/r.yaml --run-dir {out}",
        "unknown key 'model.dmodel' (in {tmp}/r.yaml); did you mean 'model.d_model'?",
        setup=write("r.yaml", "model:\n  dmodel: 64\n")),
    Bad("top-level-typo-in-recipe-file", "train {tmp}/r.yaml --run-dir {out}",
        "unknown key 'nmae' (in {tmp}/r.yaml); did you mean 'name'?",
        setup=write("r.yaml", "nmae: x\n")),
    Bad("override-without-value", f"{TRAIN} --set steps",
        "override 'steps' must look like section.key=value"),
    Bad("override-into-a-value", f"{TRAIN} --set model.d_model.x=3",
        "'d_model' is a value, not a section"),
    # -- wrong types and values -------------------------------------------------------
    Bad("float-not-a-number", f"{TRAIN} --set optimizer.lr=abc",
        "optimizer.lr expects float, got 'abc' (str) (in --set optimizer.lr=abc)"),
    Bad("int-not-a-number", f"{TRAIN} --set train.steps=many", "train.steps expects int"),
    Bad("int-given-a-float", f"{TRAIN} --set model.n_layers=2.5",
        "model.n_layers expects int, got 2.5"),
    Bad("int-given-a-bool", f"{TRAIN} --set train.steps=true", "got True (bool)"),
    Bad("list-given-a-scalar", f"{TRAIN} --set optimizer.betas=0.9",
        "optimizer.betas expects list"),
    Bad("section-given-a-scalar", f"{TRAIN} --set model=3", "model must be a mapping, got 3"),
    Bad("choice-misspelt", f"{TRAIN} --set model.arch=decodr",
        "model.arch: 'decodr' is not one of decoder, encoder_decoder (in --set model.arch=decodr)"
        "; did you mean 'decoder'?"),
    Bad("meaningless-combination", f"{TRAIN} --set model.visibility=bidirectional",
        "with model.visibility 'bidirectional' is refused"),
    Bad("non-positive-steps", f"{TRAIN} --set train.steps=0", "train.steps must be positive"),
    Bad("negative-max-bad-steps", f"{TRAIN} --set train.max_bad_steps=-1",
        "train.max_bad_steps must be >= 0 (0: off), got -1"),
    Bad("spike-window-of-one", f"{TRAIN} --set train.spike_window=1",
        "train.spike_window=1 has no spread to measure"),
    Bad("zero-spike-z", f"{TRAIN} --set train.spike_z=0", "train.spike_z must be positive"),
    Bad("zero-collective-timeout", f"{TRAIN} --set train.collective_timeout_s=0",
        "train.collective_timeout_s must be positive seconds, got 0"),
    Bad("pairs-for-another-objective", f"{TRAIN} --set data.source=builtin_mtf",
        "data.source builtin_mtf holds (inputs, targets) pairs for objective mtf, not 'full_lm'"),
    Bad("negative-worker-restarts", f"{TRAIN} --set data.worker_restarts=-2",
        "data.worker_restarts (-2) must be >= 0"),
    # -- impossible parallel layouts --------------------------------------------------
    Bad("tp-larger-than-world", f"{TRAIN} --set parallel.tp=2",
        "world size 1 is not divisible by dp_replicate x tp x pp = 2"),
    Bad("tp-zero", f"{TRAIN} --set parallel.tp=0", "parallel.tp must be >= 1"),
    Bad("launch-layout-does-not-fit", "launch local tiny-cd-flm --nproc 3 --run-dir {out} "
        "--set parallel.tp=2", "world size 3 is not divisible by dp_replicate x tp x pp = 2"),
    Bad("launch-zero-processes", "launch local tiny-cd-flm --nproc 0 --run-dir {out}",
        "--nproc must be >= 1 (got 0)"),
    Bad("batch-not-divisible", "launch slurm tiny-cd-flm --nodes 1 --gpus-per-node 3 "
        "--dry-run --run-dir {out}",
        "data.batch_size (8) is not divisible by data-parallel size 3"),
    Bad("plan-layout-does-not-fit", "plan tiny-cd-flm --gpus 3 --set parallel.tp=2",
        "causeway plan: world size 3 is not divisible"),
    # -- recipes ------------------------------------------------------------------------
    Bad("recipe-misspelt", "train tiny-cd-flmm --run-dir {out}",
        "recipe 'tiny-cd-flmm' not found (not a file, not in"),
    Bad("recipe-file-missing", "train {tmp}/nope.yaml --run-dir {out}",
        "recipe file '{tmp}/nope.yaml' does not exist"),
    Bad("recipe-is-a-directory", "train {tmp} --run-dir {out}",
        "recipe '{tmp}' is a directory, not a YAML file"),
    Bad("recipe-not-yaml", "train {tmp}/r.yaml --run-dir {out}",
        "{tmp}/r.yaml: not valid YAML at line 2, column 1: expected ',' or ']'",
        setup=write("r.yaml", "model: [1, 2\n")),
    Bad("recipe-not-text", "train {tmp}/r.yaml --run-dir {out}",
        "{tmp}/r.yaml: cannot be read (not UTF-8 text)", setup=write("r.yaml", "\udcff")),
    Bad("recipe-not-a-mapping", "train {tmp}/r.yaml --run-dir {out}",
        "{tmp}/r.yaml: a recipe must be a mapping, got list", setup=write("r.yaml", "- 1\n")),
    # -- datasets: missing, unreadable, corrupt; tokenizers that do not fit --------------
    Bad("data-path-missing", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/none",
        "data.path '{tmp}/none' does not exist"),
    Bad("data-path-a-file", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/docs.jsonl",
        "data.path '{tmp}/docs.jsonl' is not a directory", setup=JSONL),
    Bad("data-path-not-prepared", f"{TRAIN} --set data.source=path --set data.path={{tmp}}",
        "data.path '{tmp}' has no index.json"),
    Bad("mixture-entry-missing", TRAIN + " --set 'data.mixture=[{{path: {tmp}/none}}]'",
        "data.mixture[0].path '{tmp}/none' does not exist"),
    Bad("index-not-json", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/ds",
        "index.json: not valid JSON",
        setup=dataset(lambda ds: (ds / "index.json").write_text("{"))),
    Bad("index-missing-keys", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/ds",
        "index.json: missing key 'tokenizer'", setup=dataset(set_index(version=1))),
    Bad("every-train-shard-damaged", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/ds",
        "no train shard is intact (train-000000.tar is 1000 bytes, index.json says",
        setup=dataset(truncate_train_shards)),
    Bad("dataset-tokenizer-garbage", f"{TRAIN} --set data.source=path --set data.path={{tmp}}/ds",
        "tokenizer {tmp}/ds/tokenizer.json is not a readable tokenizer.json",
        setup=dataset(lambda ds: (ds / "tokenizer.json").write_text("garbage"))),
    Bad("tokenizer-larger-than-model", f"{TRAIN} --set model.vocab_size=1000",
        "model.vocab_size (1000) is smaller than the tokenizer of the builtin corpus"),
    Bad("inspect-corrupt-shard", "data inspect {tmp}/ds --verify --samples 0",
        "1 shard(s) failed verification (first: train-000000.tar: corrupt tar header",
        setup=dataset(lambda ds: flip_bytes(ds / "train-000000.tar"))),
    Bad("inspect-missing-dir", "data inspect {tmp}/none", "dataset '{tmp}/none' does not exist"),
    Bad("inspect-unknown-split", "data inspect {builtin} --split tset --samples 0",
        "--split 'tset': {builtin} has the splits train, val"),
    Bad("prepare-input-missing", "data prepare --input {tmp}/none.jsonl --tokenizer "
        "{builtin}/tokenizer.json --out {out}", "input file not found: {tmp}/none.jsonl"),
    Bad("prepare-tokenizer-missing", "data prepare --input {tmp}/docs.jsonl --tokenizer "
        "{tmp}/none.json --out {out}", "--tokenizer {tmp}/none.json not found", setup=JSONL),
    Bad("prepare-tokenizer-a-directory", "data prepare --input {tmp}/docs.jsonl --tokenizer "
        "{tmp} --out {out}", "--tokenizer {tmp} is a directory, not a tokenizer.json",
        setup=JSONL),
    Bad("prepare-tokenizer-garbage", "data prepare --input {tmp}/docs.jsonl --tokenizer "
        "{tmp}/docs.jsonl --out {out}", "--tokenizer {tmp}/docs.jsonl is not a readable "
        "tokenizer.json", setup=JSONL),
    Bad("prepare-out-not-empty", "data prepare --source builtin --out {tmp}/o",
        "--out {tmp}/o is not empty and is no dataset (notes.txt)",
        setup=write("o/notes.txt", "mine\n")),
    Bad("prepare-vocab-too-small", "data prepare --source builtin --vocab-size 10 --out {out}",
        "--vocab-size 10 is too small: the builtin BPE needs at least"),
    Bad("prepare-fraction-out-of-range", "data prepare --source builtin --val-fraction 2 "
        "--out {out}", "--val-fraction must be in [0, 1), got 2.0"),
    Bad("prepare-size-unreadable", "data prepare --source builtin --shard-size lots --out {out}",
        "--shard-size: cannot read a size from 'lots'"),
    # -- checkpoints and run directories ----------------------------------------------
    Bad("init-from-missing", f"{TRAIN} {SETS} --init-from {{tmp}}/none",
        "--init-from: {tmp}/none does not exist"),
    Bad("init-from-no-committed-checkpoint", f"{TRAIN} {SETS} --init-from {{tmp}}/r",
        "--init-from: {tmp}/r has no committed checkpoint under checkpoints/",
        setup=run_copy(lambda ckpt: (ckpt / "COMMITTED").unlink())),
    Bad("init-from-partial-checkpoint", f"{TRAIN} {SETS} --init-from {{tmp}}/r/checkpoints/step_1",
        "is partial (no COMMITTED marker); pass --allow-partial",
        setup=run_copy(lambda ckpt: (ckpt / "COMMITTED").unlink())),
    Bad("init-from-damaged-metadata", f"{TRAIN} {SETS} --init-from {{tmp}}/r", ".metadata",
        setup=run_copy(lambda ckpt: flip_bytes(ckpt / ".metadata", at=0))),
    Bad("init-from-another-architecture", f"{TRAIN} {SETS} --init-from {{ed}}",
        "is another model (model.arch encoder_decoder there, decoder here"),
    Bad("init-from-another-vocabulary", f"{TRAIN} {SETS} --set model.vocab_size=8192 "
        "--init-from {run}", "is another model (model.vocab_size 4096 there, 8192 here)"),
    Bad("resume-no-committed-checkpoint", f"{TRAIN} {SETS} --set checkpoint.resume={{tmp}}/r",
        "checkpoint.resume: {tmp}/r has no committed checkpoint",
        setup=run_copy(lambda ckpt: (ckpt / "COMMITTED").unlink())),
    Bad("run-dir-holds-another-run", "train tiny-cd-flm --run-dir {run} " + SETS,
        "run dir {run} already holds checkpoints of an earlier run (step_1); continue it with "
        "--set checkpoint.resume=auto"),
    Bad("run-dir-is-a-file", "train tiny-cd-flm --run-dir {tmp}/docs.jsonl",
        "run dir {tmp}/docs.jsonl is a file, not a directory", setup=JSONL),
    Bad("relaunch-with-another-model", "launch local tiny-cd-flm --nproc 1 --run-dir {run}",
        "the newest checkpoint {run}/checkpoints/step_1 is another model"),
    Bad("launch-data-missing", "launch local tiny-cd-flm --nproc 2 --run-dir {out} "
        "--set data.source=path --set data.path={tmp}/none",
        "data.path '{tmp}/none' does not exist"),
    Bad("convert-no-committed-checkpoint", "convert inspect {tmp}/r",
        "{tmp}/r has no committed checkpoint",
        setup=run_copy(lambda ckpt: (ckpt / "COMMITTED").unlink())),
    Bad("convert-out-not-empty", "convert arch {run} --visibility causal --out {tmp}/o",
        "exists and is not empty; conversions never overwrite", setup=write("o/x", "")),
    Bad("convert-meaningless", "convert arch {run} --visibility bidirectional --out {out}",
        "objective.name 'full_lm' with model.visibility 'bidirectional' is refused"),
    Bad("convert-ed-twice", "convert to-encoder-decoder {ed} --out {out}",
        "is already an encoder-decoder"),
    Bad("consolidate-over-a-file", "convert consolidate {run} --out {tmp}/docs.jsonl",
        "{tmp}/docs.jsonl exists; consolidate never overwrites", setup=JSONL),
    Bad("export-missing", "convert export-hf {tmp}/none --out {out}", "{tmp}/none does not exist"),
    Bad("import-hf-missing", "convert import-hf {tmp}/none --out {out}",
        "{tmp}/none is not a directory"),
    Bad("import-hf-not-llama", "convert import-hf {tmp}/hf --out {out}",
        "{tmp}/hf/config.json: not importable: model_type 'bert' (only llama)",
        setup=write("hf/config.json", json.dumps({"model_type": "bert"}))),
    Bad("profile-steps-reversed", "train tiny-cd-flm --set train.profile_steps=[5,2]",
        "train.profile_steps [5, 2]: the first step is after the last"),
    Bad("profile-steps-one-value", "train tiny-cd-flm --set train.profile_steps=[3]",
        "train.profile_steps must be [FIRST, LAST], two steps >= 1, got [3]"),
    Bad("import-megatron-untrusted", "convert import-megatron {tmp} --out {out}",
        "{tmp}: Megatron-LM checkpoints are Python pickles"),
    Bad("import-megatron-no-tracker", "convert import-megatron {tmp}/mg --out {out} "
        "--trust-pickle", "{tmp}/mg: no latest_checkpointed_iteration.txt; pass --iteration N "
        "(saved: iter_0000005)", setup=write("mg/iter_0000005/mp_rank_00/x", "")),
    Bad("import-megatron-bad-tracker", "convert import-megatron {tmp}/mg --out {out} "
        "--trust-pickle", "latest_checkpointed_iteration.txt: 'soon' is neither an iteration "
        "nor release", setup=write("mg/latest_checkpointed_iteration.txt", "soon")),
    Bad("import-deepspeed-untrusted", "convert import-deepspeed {tmp} --out {out}",
        "{tmp}: DeepSpeed checkpoints are Python pickles"),
    Bad("import-deepspeed-no-latest", "convert import-deepspeed {tmp}/ds --out {out} "
        "--trust-pickle --recipe tiny-cd-flm", "{tmp}/ds: no `latest` file; pass --tag "
        "(saved: global_step2)", setup=write("ds/global_step2/x", ""), needs="deepspeed"),
    Bad("status-not-a-run", "status {tmp}", "{tmp} is not a causeway run directory"),
    # -- CLI flags: unknown, mistyped, missing, contradictory -------------------------
    Bad("unknown-flag", "train tiny-cd-flm --bogus",
        "causeway: error: unrecognized arguments: --bogus"),
    Bad("flag-not-an-int", "plan tiny-cd-flm --gpus abc",
        "causeway plan: error: argument --gpus: invalid int value: 'abc'"),
    Bad("flag-choice-misspelt", "convert arch {run} --visibility causal --objective full_lmm "
        "--out {out}", "argument --objective: invalid choice: 'full_lmm'"),
    Bad("required-flag-missing", "launch slurm tiny-cd-flm --gpus-per-node 0 --dry-run",
        "the following arguments are required: --nodes"),
    Bad("unknown-gpu", "plan tiny-cd-flm --gpus 8 --gpu h999", "unknown --gpu 'h999'"),
    Bad("builtin-with-input", "data prepare --source builtin --input {tmp}/docs.jsonl --out {out}",
        "--source builtin reads no --input: those are for --source files", setup=JSONL),
    Bad("files-with-vocab-size", "data prepare --input {tmp}/docs.jsonl --tokenizer "
        "{builtin}/tokenizer.json --vocab-size 512 --out {out}",
        "--vocab-size sizes the builtin BPE", setup=JSONL),
    Bad("val-files-and-fraction", "data prepare --input {tmp}/docs.jsonl --val-files "
        "{tmp}/docs.jsonl --val-fraction 0.1 --tokenizer {builtin}/tokenizer.json --out {out}",
        "--val-files and --val-fraction both choose the validation documents", setup=JSONL),
    Bad("files-without-tokenizer", "data prepare --source files --input {tmp}/docs.jsonl "
        "--out {out}", "--source files needs --input FILES and --tokenizer", setup=JSONL),
    # -- the launchers' own inputs ----------------------------------------------------
    Bad("slurm-zero-nodes", "launch slurm tiny-cd-flm --nodes 0 --gpus-per-node 1 --dry-run "
        "--run-dir {out}", "--nodes must be >= 1 (got 0)"),
    Bad("slurm-procs-contradict-gpus", "launch slurm tiny-cd-flm --nodes 1 --gpus-per-node 2 "
        "--procs-per-node 4 --dry-run --run-dir {out}",
        "--procs-per-node 4 contradicts --gpus-per-node 2"),
    Bad("ray-min-above-max", "launch ray tiny-cd-flm --address 127.0.0.1:1 --workers 2 "
        "--min-workers 3 --run-dir {out}", "--min-workers 3 must be in 1..--workers 2",
        needs="ray"),
    Bad("ray-address-is-a-url", "launch ray tiny-cd-flm --address http://head:8265 --workers 1 "
        "--run-dir {out}", "give the cluster's GCS address (host:port", needs="ray"),
]  # fmt: skip
