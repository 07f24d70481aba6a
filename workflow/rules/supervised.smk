# Per (model, behaviour target): a supervised head on the model's encoder latents, trained on the
# train trials, selected on val, scored on test (mtm.supervised); its metric rows join the
# metrics table beside the rate-based decoders'. One job per target, so one failing target reruns
# alone.

HEAD_DIR = "results/heads/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}/{target}"


wildcard_constraints:
    target=vocabulary.wildcard(vocabulary.DECODING_TARGETS),


rule supervised_head:
    input:
        model=f"{MODEL_DIR}/model.safetensors",
        config=f"{MODEL_DIR}/config.json",
        binned="results/sessions/{eid}/binned.parquet",
    output:
        model=f"{HEAD_DIR}/model.safetensors",
        config=f"{HEAD_DIR}/config.json",
        log_csv=f"{HEAD_DIR}/log.csv",
        metrics=f"{HEAD_DIR}/metrics.parquet",
    log:
        "results/logs/heads/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}/{target}.log",
    benchmark:
        "results/benchmarks/heads/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}/{target}.tsv"
    conda:
        CONDA_ENV
    threads: config["supervised"]["threads"]
    resources:
        mem_mb=section_resource("supervised", "mem_mb"),
        runtime=section_resource("supervised", "runtime"),
        gpu=config["supervised"]["gpus"],
    params:
        head=lambda wildcards: stages.as_params(
            stages.head_config(config, seed=wildcards.seed)
        ),
        code=script_code("supervised_head.py"),
    script:
        "../scripts/supervised_head.py"


rule heads_all:
    input:
        supervised_heads(f"{HEAD_DIR}/metrics.parquet"),
    localrule: True
