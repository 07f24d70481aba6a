# Per (backbone, masking scheme, session, seed): a model trained on that session alone. An unusable
# session is a successful job whose config.json says why it was skipped (and whose weights file
# is empty). With training.stack: scheme, a backbone's models of one (session, seed) train in one
# job (rule train_stack_<backbone>, mtm.stack), into the same folders.


wildcard_constraints:
    scheme=vocabulary.wildcard(vocabulary.TRAIN_SCHEMES),


if config["training"]["stack"] == "none":

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
            mem_mb=section_resource("training", "mem_mb"),
            runtime=section_resource("training", "runtime"),
            gpu=config["training"]["gpus"],
        params:
            training=training_params("single"),
            code=script_code("train_single.py"),
        script:
            "../scripts/train_single.py"

else:
    for stacked_backbone in BACKBONES:

        rule:
            name:
                f"train_stack_{stacked_backbone}"
            input:
                binned="results/sessions/{eid}/binned.parquet",
            output:
                stacked_models(stacked_backbone),
            log:
                f"results/logs/train/{stacked_backbone}/stack/single/{{eid}}/seed-{{seed}}.log",
            benchmark:
                f"results/benchmarks/train/{stacked_backbone}/stack/single/{{eid}}/seed-{{seed}}.tsv"
            conda:
                CONDA_ENV
            threads: config["training"]["threads"]
            resources:
                mem_mb=section_resource("training", "mem_mb"),
                runtime=section_resource("training", "runtime"),
                gpu=min(config["training"]["gpus"], 1),
            params:
                training=stack_params(stacked_backbone),
                out_dirs=stack_folders(stacked_backbone),
                code=script_code("train_stack.py"),
            script:
                "../scripts/train_stack.py"


rule train_all:
    input:
        trained_models(f"{SINGLE}/config.json", "training", eid=SINGLE_EIDS),
    localrule: True
