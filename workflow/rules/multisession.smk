# Pretraining on the first n sessions of the pool (every configured session that is not held
# out), for each n of multisession.pretrain_sizes, then finetuning on each held-out session. A
# finetuned model sits in the same layout as a single-session one (setting pretrain-{n} instead
# of single), so rule evaluate scores both.

PRETRAINED = "results/models/{backbone}/{scheme}/pretrain-{n}"
FINETUNED = "results/models/{backbone}/{scheme}/pretrain-{n}/{eid}"


wildcard_constraints:
    n="[0-9]+",


rule pretrain:
    input:
        binned=pretrain_binned,
    output:
        model=f"{PRETRAINED}/model.safetensors",
        config=f"{PRETRAINED}/config.json",
        log_csv=f"{PRETRAINED}/log.csv",
    log:
        "results/logs/train/{backbone}/{scheme}/pretrain-{n}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{scheme}/pretrain-{n}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=per_attempt(config["training"]["mem_mb"]),
        runtime=config["training"]["runtime"],
        gpu=config["training"]["gpus"],
    params:
        training=lambda wildcards: multisession_training("pretrain", wildcards.backbone),
        code=script_code("pretrain.py"),
    script:
        "../scripts/pretrain.py"


rule finetune:
    input:
        pretrained=f"{PRETRAINED}/config.json",
        weights=f"{PRETRAINED}/model.safetensors",
        binned="results/sessions/{eid}/binned.parquet",
    output:
        model=f"{FINETUNED}/model.safetensors",
        config=f"{FINETUNED}/config.json",
        log_csv=f"{FINETUNED}/log.csv",
    log:
        "results/logs/train/{backbone}/{scheme}/pretrain-{n}/{eid}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{scheme}/pretrain-{n}/{eid}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=per_attempt(config["training"]["mem_mb"]),
        runtime=config["training"]["runtime"],
        gpu=config["training"]["gpus"],
    params:
        training=lambda wildcards: multisession_training("finetune", wildcards.backbone),
        code=script_code("finetune.py"),
    script:
        "../scripts/finetune.py"
