# Pretraining on the first n sessions of the pool (every configured session that is not held
# out), for each n of multisession.pretrain_sizes and each seed, then finetuning on each held-out
# session from the pretrained model of the same seed. For n = 1 that model is the first pool
# session's single-session model (rule train_single): the same training, not run twice. A
# finetuned model sits in the same layout as a single-session one (setting pretrain-{n} instead
# of single), so rule evaluate scores both.

PRETRAINED = "results/models/{backbone}/{scheme}/pretrain-{n}/seed-{seed}"
FINETUNED = "results/models/{backbone}/{scheme}/pretrain-{n}/{eid}/seed-{seed}"


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
        "results/logs/train/{backbone}/{scheme}/pretrain-{n}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{scheme}/pretrain-{n}/seed-{seed}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=section_resource("training", "mem_mb"),
        runtime=section_resource("training", "runtime"),
        gpu=config["training"]["gpus"],
    params:
        training=training_params("pretrain"),
        code=script_code("pretrain.py"),
    script:
        "../scripts/pretrain.py"


rule finetune:
    input:
        pretrained=lambda wildcards: f"{pretrained_model(wildcards)}/config.json",
        weights=lambda wildcards: f"{pretrained_model(wildcards)}/model.safetensors",
        binned="results/sessions/{eid}/binned.parquet",
    output:
        model=f"{FINETUNED}/model.safetensors",
        config=f"{FINETUNED}/config.json",
        log_csv=f"{FINETUNED}/log.csv",
    log:
        "results/logs/train/{backbone}/{scheme}/pretrain-{n}/{eid}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{scheme}/pretrain-{n}/{eid}/seed-{seed}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=section_resource("training", "mem_mb"),
        runtime=section_resource("training", "runtime"),
        gpu=config["training"]["gpus"],
    params:
        training=training_params("finetune"),
        code=script_code("finetune.py"),
    script:
        "../scripts/finetune.py"
