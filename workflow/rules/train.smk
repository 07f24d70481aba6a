# Per (backbone, masking scheme, session, seed): a model trained on that session alone. An unusable
# session is a successful job whose config.json says why it was skipped (and whose weights file
# is empty).

SINGLE = "results/models/{backbone}/{scheme}/single/{eid}/seed-{seed}"


wildcard_constraints:
    scheme=vocabulary.wildcard(vocabulary.TRAIN_SCHEMES),


rule train_single:
    input:
        binned="results/sessions/{eid}/binned.parquet",
    output:
        model=f"{SINGLE}/model.safetensors",
        config=f"{SINGLE}/config.json",
        log_csv=f"{SINGLE}/log.csv",
    log:
        "results/logs/train/{backbone}/{scheme}/single/{eid}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/train/{backbone}/{scheme}/single/{eid}/seed-{seed}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=per_attempt(config["training"]["mem_mb"]),
        runtime=config["training"]["runtime"],
        gpu=config["training"]["gpus"],
    params:
        training=training_params("single"),
        code=script_code("train_single.py"),
    script:
        "../scripts/train_single.py"


rule train_all:
    input:
        trained_models(f"{SINGLE}/config.json", "training", eid=SINGLE_EIDS),
    localrule: True
