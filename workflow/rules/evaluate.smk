# Per (masking scheme, session): every activity task and behaviour decoder on the test trials of
# the model trained on that session; then one table of all of them.

NDT1_SINGLE_EVAL = "results/eval/ndt1/{scheme}/single/{eid}"
EVAL_PARAMS = [
    "tasks",
    "decoding",
    "max_units",
    "batch_size",
    "forward_bins",
    "precision",
    "seed",
]


rule evaluate_single:
    input:
        model=f"{NDT1_SINGLE}/model.safetensors",
        config=f"{NDT1_SINGLE}/config.json",
        binned="results/sessions/{eid}/binned.parquet",
    output:
        metrics=f"{NDT1_SINGLE_EVAL}/metrics.parquet",
        csv=f"{NDT1_SINGLE_EVAL}/metrics.csv",
        units=f"{NDT1_SINGLE_EVAL}/units.parquet",
    log:
        "results/logs/eval/ndt1/{scheme}/single/{eid}.log",
    benchmark:
        "results/benchmarks/eval/ndt1/{scheme}/single/{eid}.tsv"
    conda:
        CONDA_ENV
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=config["evaluation"]["mem_mb"],
        runtime=config["evaluation"]["runtime"],
        gpu=config["evaluation"]["gpus"],
    params:
        evaluation={k: config["evaluation"][k] for k in EVAL_PARAMS},
        setting="single",
        version=mtm.__version__,
    script:
        "../scripts/evaluate_single.py"


rule metrics_table:
    input:
        expand(
            f"{NDT1_SINGLE_EVAL}/metrics.parquet",
            scheme=config["training"]["schemes"],
            eid=EIDS,
        ),
    output:
        parquet="results/eval/metrics.parquet",
        csv="results/eval/metrics.csv",
        summary="results/eval/summary.csv",
    log:
        "results/logs/eval/metrics_table.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/metrics_table.py"
