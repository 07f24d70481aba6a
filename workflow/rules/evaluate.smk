# Per (backbone, masking scheme, setting, session, seed): every activity task and behaviour decoder on the test
# trials of the model of that session; then one table of all of them. Setting "single": trained
# on the session alone; "pretrain-{n}": pretrained on n other sessions, finetuned on this one.

MODEL_DIR = "results/models/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}"
EVAL_DIR = "results/eval/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}"
GLM_DIR = "results/eval/glm/smoothing/single/{eid}"
GLM_SESSIONS = SINGLE_EIDS if config["glm"]["enabled"] else []


wildcard_constraints:
    setting="single|pretrain-[0-9]+",


rule evaluate:
    input:
        model=f"{MODEL_DIR}/model.safetensors",
        config=f"{MODEL_DIR}/config.json",
        binned="results/sessions/{eid}/binned.parquet",
    output:
        metrics=f"{EVAL_DIR}/metrics.parquet",
        csv=f"{EVAL_DIR}/metrics.csv",
        units=f"{EVAL_DIR}/units.parquet",
        prompts=f"{EVAL_DIR}/prompts.parquet",
    log:
        "results/logs/eval/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/eval/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}.tsv"
    conda:
        CONDA_ENV
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=section_resource("evaluation", "mem_mb"),
        runtime=section_resource("evaluation", "runtime"),
        gpu=config["evaluation"]["gpus"],
    params:
        evaluation=lambda wildcards: stages.as_params(
            stages.eval_config(config, setting=wildcards.setting)
        ),
        code=script_code("evaluate.py"),
    script:
        "../scripts/evaluate.py"


rule metrics_table:
    input:
        evaluations=trained_models(
            f"{EVAL_DIR}/metrics.parquet",
            "training",
            setting="single",
            eid=SINGLE_EIDS,
        ),
        evaluations_pretrained=trained_models(
            f"{EVAL_DIR}/metrics.parquet",
            "multisession",
            setting=[f"pretrain-{n}" for n in PRETRAIN_SIZES],
            eid=HELDOUT,
        ),
        glm=expand(f"{GLM_DIR}/metrics.parquet", eid=GLM_SESSIONS),
        heads=supervised_heads(
            "results/heads/{backbone}/{scheme}/{setting}/{eid}/seed-{seed}/{target}/metrics.parquet"
        ),
    output:
        parquet="results/eval/metrics.parquet",
        csv="results/eval/metrics.csv",
        summary=report(
            "results/eval/summary.csv",
            caption="../report/metrics.rst",
            category="7. Metrics",
        ),
        prompts="results/eval/prompts.parquet",
    log:
        "results/logs/eval/metrics_table.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("metrics_table.py"),
    script:
        "../scripts/metrics_table.py"


rule glm_baseline:
    input:
        binned="results/sessions/{eid}/binned.parquet",
    output:
        metrics=f"{GLM_DIR}/metrics.parquet",
        csv=f"{GLM_DIR}/metrics.csv",
        units=f"{GLM_DIR}/units.parquet",
    log:
        "results/logs/eval/glm/{eid}.log",
    benchmark:
        "results/benchmarks/eval/glm/{eid}.tsv"
    conda:
        CONDA_ENV
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=section_resource("evaluation", "mem_mb"),
        runtime=section_resource("evaluation", "runtime"),
    params:
        evaluation=stages.as_params(stages.glm_scoring(config)),
        glm=stages.as_params(stages.glm_config(config)),
        region_level=config["training"]["region_level"],
        code=script_code("glm_baseline.py"),
    script:
        "../scripts/glm_baseline.py"
