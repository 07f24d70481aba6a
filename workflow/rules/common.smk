# Validation, the static session list, and input functions. Rules live in the other .smk files.
import sys
from pathlib import Path

sys.path.append(str(Path(workflow.basedir) / "src"))  # mtm from src/ when not installed
from mtm import cost
from mtm.code_hash import code_hash
from mtm.config import stages
from mtm.config.checks import read_eids
from mtm.config.validate import validate_config
from mtm import vocabulary

CONDA_ENV = "../../envs/mtm.yaml"

# Defaults filled in from the schema; every value that cannot work stops the run here, before a
# job starts (mtm.config).
validate_config(config)

DEMO_CACHE = "results/demo/one_cache"
DEMO_TRUTH = "results/demo/truth"


def session_eids():
    """The static session list: from the config (list or file), or the demo's sessions."""
    sessions = config["sessions"]
    if sessions is None:
        if config["source"] != "demo":
            raise ValueError(
                "config: `sessions` must list eids (or name a file) when source is not demo"
            )
        from mtm.demo import demo_sessions

        return [s.eid for s in demo_sessions(config["demo"]["n_sessions"])]
    return read_eids(sessions, "sessions")


def script_code(script):
    """A hash of a rule's script and of the mtm code it imports, for `params: code=`: a change
    to that code reruns the rule's jobs (Snakemake's `code` trigger sees only the script).
    """
    return code_hash(Path(workflow.basedir) / "workflow" / "scripts" / script)


def per_attempt(mem_mb):
    """`mem_mb` for the first attempt, twice that for the first retry, and so on: a job killed
    for memory is retried with more (retries: in the profiles, or --retries)."""
    return lambda wildcards, attempt: mem_mb * attempt


def section_resource(section, key):
    """The `runtime` or `mem_mb` of a job whose config section is `section` (training,
    evaluation, supervised): the section's number (mem_mb per_attempt), or with `auto` the job's
    estimate (mtm.cost.job_resources: its rule, binned inputs and wildcards, on the GPU class
    cost.gpu, times cost.safety and the attempt; `mtm cost` prints the same numbers)."""
    value = config[section][key]
    if value != "auto":
        return per_attempt(value) if key == "mem_mb" else value
    return lambda wildcards, input, attempt, rulename: cost.job_resources(
        rulename,
        config,
        binned=[f for f in input if f.endswith("binned.parquet")],
        wildcards=dict(wildcards.items()),
        attempt=attempt,
    )[key]


def heldout_eids():
    """Sessions held out of pretraining, to finetune on: as configured, or by default the
    configured sessions that are in the MtM paper's test list."""
    heldout = config["multisession"]["heldout"]
    if heldout is None:
        from mtm.demo.sessions import test_eids

        return [eid for eid in EIDS if eid in test_eids()]
    heldout = read_eids(heldout, "multisession.heldout")
    unknown = sorted(set(heldout) - set(EIDS))
    if unknown:
        raise ValueError(
            f"config: multisession.heldout names sessions that are not configured: {unknown}"
        )
    return [eid for eid in EIDS if eid in heldout]


def single_session_eids():
    """Sessions with models trained on them alone (training.sessions: null for every configured
    session, "heldout" for the held-out ones, or eids). When 1 is a pretraining size, the
    pool's first session too: its single-session model is the model pretrained on one session.
    """
    chosen = config["training"]["sessions"]
    if chosen is None:
        chosen = EIDS
    elif chosen == "heldout":
        chosen = HELDOUT
    unknown = sorted(set(chosen) - set(EIDS))
    if unknown:
        raise ValueError(
            f"config: training.sessions names sessions that are not configured: {unknown}"
        )
    if 1 in config["multisession"]["pretrain_sizes"] and PRETRAIN_POOL:
        chosen = [*chosen, PRETRAIN_POOL[0]]
    return [eid for eid in EIDS if eid in chosen]


EIDS = session_eids()
HELDOUT = heldout_eids()
PRETRAIN_POOL = [eid for eid in EIDS if eid not in HELDOUT]
SINGLE_EIDS = single_session_eids()
PRETRAIN_SIZES = config["multisession"]["pretrain_sizes"]


SEEDS = config["training"]["seeds"]


wildcard_constraints:
    eid="[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    backbone=vocabulary.wildcard(vocabulary.BACKBONES),
    seed="[0-9]+",


def fetch_inputs(wildcards):
    if config["source"] == "demo":
        return [f"{DEMO_CACHE}/sessions.pqt", f"{DEMO_CACHE}/datasets.pqt"]
    return []


def truth_input(wildcards):
    return f"{DEMO_TRUTH}/{wildcards.eid}.npz" if config["source"] == "demo" else []


def pretrain_binned(wildcards):
    n = int(wildcards.n)
    if not 2 <= n <= len(PRETRAIN_POOL):
        raise ValueError(
            f"pretrain-{n}: the pool holds {len(PRETRAIN_POOL)} sessions (every configured session not held out); "
            "pretraining on one session is its single-session model"
        )
    return [f"results/sessions/{eid}/binned.parquet" for eid in PRETRAIN_POOL[:n]]


def pretrained_model(wildcards):
    """The folder of the model that finetuning on a held-out session starts from: pretrained on
    the pool's first n sessions, or for n = 1 the single-session model of the first (training
    on one session alone is pretraining on one session: the same run, not trained twice).
    """
    if int(wildcards.n) == 1:
        return f"results/models/{wildcards.backbone}/{wildcards.scheme}/single/{PRETRAIN_POOL[0]}/seed-{wildcards.seed}"
    return f"results/models/{wildcards.backbone}/{wildcards.scheme}/pretrain-{wildcards.n}/seed-{wildcards.seed}"


BACKBONES = config["training"]["backbones"]
for section in ("training", "multisession"):
    missing = [b for b in BACKBONES if b not in config[section]["schemes"]]
    if missing:
        raise ValueError(
            f"config: {section}.schemes lists no schemes for backbone(s) {missing} of training.backbones"
        )


for backbone, schemes in config["supervised"]["schemes"].items():
    trained = set(config["training"]["schemes"].get(backbone, [])) | set(
        config["multisession"]["schemes"].get(backbone, [])
    )
    untrained = sorted(set(schemes) - trained) if backbone in BACKBONES else []
    if untrained:
        raise ValueError(
            f"config: supervised.schemes.{backbone} names {untrained}, which no model is trained with "
            f"(training.schemes, multisession.schemes)"
        )


def trained_models(pattern, section, **wildcards):
    """`pattern` expanded over every (backbone, scheme) of the config's `section` (training or
    multisession), every seed and `wildcards`."""
    return [
        path
        for backbone in BACKBONES
        for path in expand(
            pattern,
            backbone=backbone,
            scheme=config[section]["schemes"][backbone],
            seed=SEEDS,
            **wildcards,
        )
    ]


SINGLE = "results/models/{backbone}/{scheme}/single/{eid}/seed-{seed}"
SINGLE_FILES = ("model.safetensors", "config.json", "log.csv")


def stacked_models(backbone):
    """The files a stack job of `backbone` writes: every scheme's model of {eid} and {seed}."""
    return [
        f"results/models/{backbone}/{scheme}/single/{{eid}}/seed-{{seed}}/{name}"
        for scheme in config["training"]["schemes"][backbone]
        for name in SINGLE_FILES
    ]


def stack_folders(backbone):
    return lambda wildcards: [
        SINGLE.format(
            backbone=backbone, scheme=scheme, eid=wildcards.eid, seed=wildcards.seed
        )
        for scheme in config["training"]["schemes"][backbone]
    ]


def stack_params(backbone):
    """The TrainConfigs of a stack job of `backbone`, one per scheme, as params."""
    return lambda wildcards: [
        stages.as_params(
            stages.train_config(
                config,
                stage="single",
                backbone=backbone,
                scheme=scheme,
                seed=wildcards.seed,
            )
        )
        for scheme in config["training"]["schemes"][backbone]
    ]


def training_params(stage):
    """The TrainConfig of a job of `stage` (single, pretrain, finetune), as params."""
    return lambda wildcards: stages.as_params(
        stages.train_config(
            config,
            stage=stage,
            backbone=wildcards.backbone,
            scheme=wildcards.scheme,
            seed=wildcards.seed,
        )
    )


def supervised_heads(pattern):
    """`pattern` expanded over every head the config's `supervised` section asks for: each
    selected (backbone, scheme) in each selected setting where that model is trained, for every
    seed and target."""
    heads = config["supervised"]
    settings = []
    if "single" in heads["settings"]:
        settings.append(("training", ["single"], SINGLE_EIDS))
    if "pretrained" in heads["settings"]:
        pretrained = [f"pretrain-{n}" for n in PRETRAIN_SIZES]
        settings.append(("multisession", pretrained, HELDOUT))
    paths = []
    for backbone in BACKBONES:
        for section, names, eids in settings:
            trained = config[section]["schemes"][backbone]
            paths += expand(
                pattern,
                backbone=backbone,
                scheme=[s for s in heads["schemes"].get(backbone, []) if s in trained],
                setting=names,
                eid=eids,
                seed=SEEDS,
                target=heads["targets"],
            )
    return paths
