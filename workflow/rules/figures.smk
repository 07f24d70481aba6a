rule data_overview:
    input:
        qc=expand("results/sessions/{eid}/qc.json", eid=EIDS),
        units=expand("results/sessions/{eid}/units.parquet", eid=EIDS),
        trials=expand("results/sessions/{eid}/trials.parquet", eid=EIDS),
    output:
        png=report(
            "results/figures/data_overview.png",
            caption="../report/data_overview.rst",
            category="6. Data",
        ),
        pdf="results/figures/data_overview.pdf",
        caption="results/figures/data_overview.txt",
    log:
        "results/logs/figures/data_overview.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("data_overview.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/data_overview.py"


rule ablation_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/ablation.png",
            caption="../report/ablation.rst",
            category="1. Single-session ablation",
        ),
        pdf="results/figures/ablation.pdf",
        caption="results/figures/ablation.txt",
        table=report(
            "results/figures/ablation.csv",
            caption="../report/table.rst",
            category="1. Single-session ablation",
        ),
    log:
        "results/logs/figures/ablation.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("ablation_figure.py"),
        demo=config["source"] == "demo",
        setting="single",
    script:
        "../scripts/ablation_figure.py"


rule mtm_vs_baseline_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/mtm_vs_baseline.png",
            caption="../report/mtm_vs_baseline.rst",
            category="2. MtM against the baseline",
        ),
        pdf="results/figures/mtm_vs_baseline.pdf",
        caption="results/figures/mtm_vs_baseline.txt",
    log:
        "results/logs/figures/mtm_vs_baseline.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("mtm_vs_baseline_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/mtm_vs_baseline_figure.py"


rule scaling_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/scaling.png",
            caption="../report/scaling.rst",
            category="4. Multi-session",
        ),
        pdf="results/figures/scaling.pdf",
        caption="results/figures/scaling.txt",
    log:
        "results/logs/figures/scaling.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("scaling_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/scaling_figure.py"


rule finetuned_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/finetuned.png",
            caption="../report/finetuned.rst",
            category="4. Multi-session",
        ),
        pdf="results/figures/finetuned.pdf",
        caption="results/figures/finetuned.txt",
        table=report(
            "results/figures/finetuned.csv",
            caption="../report/table.rst",
            category="4. Multi-session",
        ),
    log:
        "results/logs/figures/finetuned.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("ablation_figure.py"),
        demo=config["source"] == "demo",
        setting=f"pretrain-{max(config['multisession']['pretrain_sizes'])}",
    script:
        "../scripts/ablation_figure.py"


rule comparisons_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/comparisons.png",
            caption="../report/comparisons.rst",
            category="0. The paper's comparisons",
        ),
        pdf="results/figures/comparisons.pdf",
        caption="results/figures/comparisons.txt",
        table=report(
            "results/figures/comparisons.csv",
            caption="../report/table.rst",
            category="0. The paper's comparisons",
        ),
    log:
        "results/logs/figures/comparisons.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("comparisons_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/comparisons_figure.py"


rule convergence_figure:
    input:
        configs=trained_models(f"{SINGLE}/config.json", "training", eid=SINGLE_EIDS)
        + trained_models(
            f"{PRETRAINED}/config.json",
            "multisession",
            n=[n for n in PRETRAIN_SIZES if n > 1],
        )
        + trained_models(
            f"{FINETUNED}/config.json", "multisession", n=PRETRAIN_SIZES, eid=HELDOUT
        ),
    output:
        png=report(
            "results/figures/convergence.png",
            caption="../report/convergence.rst",
            category="9. Training",
        ),
        pdf="results/figures/convergence.pdf",
        caption="results/figures/convergence.txt",
        table=report(
            "results/figures/convergence.csv",
            caption="../report/table.rst",
            category="9. Training",
        ),
    log:
        "results/logs/figures/convergence.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("convergence_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/convergence_figure.py"


rule prompt_ablation_figure:
    input:
        rules.metrics_table.output.prompts,
    output:
        png=report(
            "results/figures/prompt_ablation.png",
            caption="../report/prompt_ablation.rst",
            category="5. Prompt ablation",
        ),
        pdf="results/figures/prompt_ablation.pdf",
        caption="results/figures/prompt_ablation.txt",
        table=report(
            "results/figures/prompt_ablation.csv",
            caption="../report/table.rst",
            category="5. Prompt ablation",
        ),
    log:
        "results/logs/figures/prompt_ablation.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("prompt_ablation_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/prompt_ablation_figure.py"


RASTER_EID = ([e for e in HELDOUT if e in SINGLE_EIDS] or SINGLE_EIDS)[0]
RASTER_MODELS = {
    "ndt1": ["temporal", "mtm-prompt"]
}  # MtM against the temporal baseline
HAS_RASTERS = "ndt1" in BACKBONES and set(RASTER_MODELS["ndt1"]) <= set(
    config["training"]["schemes"]["ndt1"]
)


rule raster_figure:
    input:
        mtm=f"results/eval/ndt1/mtm-prompt/single/{RASTER_EID}/seed-{SEEDS[0]}/units.parquet",
        baseline=f"results/eval/ndt1/temporal/single/{RASTER_EID}/seed-{SEEDS[0]}/units.parquet",
    output:
        png=report(
            "results/figures/rasters.png",
            caption="../report/rasters.rst",
            category="3. Region rasters",
        ),
        pdf="results/figures/rasters.pdf",
        caption="results/figures/rasters.txt",
    log:
        "results/logs/figures/rasters.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("raster_figure.py"),
        demo=config["source"] == "demo",
        region=config["figures"]["raster_region"],
        window_start=config["binning"]["window"][0],
        bin_size=config["binning"]["bin_size"],
    script:
        "../scripts/raster_figure.py"


HAS_HEADS = bool(supervised_heads(HEAD_DIR))


rule heads_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png=report(
            "results/figures/heads.png",
            caption="../report/heads.rst",
            category="8. Supervised heads",
        ),
        pdf="results/figures/heads.pdf",
        caption="results/figures/heads.txt",
        table=report(
            "results/figures/heads.csv",
            caption="../report/table.rst",
            category="8. Supervised heads",
        ),
    log:
        "results/logs/figures/heads.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("heads_figure.py"),
        demo=config["source"] == "demo",
    script:
        "../scripts/heads_figure.py"


rule all_figures:
    input:
        rules.comparisons_figure.output,
        rules.convergence_figure.output,
        rules.raster_figure.output if HAS_RASTERS else [],
        rules.heads_figure.output if HAS_HEADS else [],
        rules.prompt_ablation_figure.output,
        rules.scaling_figure.output,
        rules.finetuned_figure.output,
        rules.mtm_vs_baseline_figure.output,
        rules.data_overview.output,
        rules.ablation_figure.output,
        "results/sessions/sessions.tsv",
        rules.metrics_table.output,
    output:
        touch("results/figures/all.done"),
    localrule: True
