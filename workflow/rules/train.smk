# Per (masking scheme, session): NDT1 trained on that session alone. An unusable session is a
# successful job whose config.json says why it was skipped (and whose weights file is empty).

NDT1_SINGLE = "results/models/ndt1/{scheme}/single/{eid}"
# TrainConfig fields, as configured (the scheme comes from the wildcard)
TRAIN_PARAMS = [
    "model",
    "region_level",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_fraction",
    "seed",
    "precision",
    "loss",
    "accumulation",
]


wildcard_constraints:
    scheme="temporal|neuron|causal|intra-region|inter-region|random-token|mtm|mtm-prompt",


rule train_single:
    input:
        binned="results/sessions/{eid}/binned.parquet",
    output:
        model=f"{NDT1_SINGLE}/model.safetensors",
        config=f"{NDT1_SINGLE}/config.json",
        log_csv=f"{NDT1_SINGLE}/log.csv",
    log:
        "results/logs/train/ndt1/{scheme}/single/{eid}.log",
    benchmark:
        "results/benchmarks/train/ndt1/{scheme}/single/{eid}.tsv"
    conda:
        CONDA_ENV
    threads: config["training"]["threads"]
    resources:
        mem_mb=config["training"]["mem_mb"],
        runtime=config["training"]["runtime"],
        gpu=config["training"]["gpus"],
    params:
        training={k: config["training"][k] for k in TRAIN_PARAMS},
        version=mtm.__version__,
    script:
        "../scripts/train_single.py"


rule train_all:
    input:
        expand(
            f"{NDT1_SINGLE}/config.json",
            scheme=config["training"]["schemes"],
            eid=EIDS,
        ),
    localrule: True
