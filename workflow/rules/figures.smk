rule data_overview:
    input:
        qc=expand("results/sessions/{eid}/qc.json", eid=EIDS),
        units=expand("results/sessions/{eid}/units.parquet", eid=EIDS),
        trials=expand("results/sessions/{eid}/trials.parquet", eid=EIDS),
    output:
        png="results/figures/data_overview.png",
        pdf="results/figures/data_overview.pdf",
        caption="results/figures/data_overview.txt",
    log:
        "results/logs/figures/data_overview.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        demo=config["source"] == "demo",
    script:
        "../scripts/data_overview.py"


rule ablation_figure:
    input:
        rules.metrics_table.output.parquet,
    output:
        png="results/figures/ablation.png",
        pdf="results/figures/ablation.pdf",
        caption="results/figures/ablation.txt",
        table="results/figures/ablation.csv",
    log:
        "results/logs/figures/ablation.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        demo=config["source"] == "demo",
    script:
        "../scripts/ablation_figure.py"


rule all_figures:
    input:
        rules.data_overview.output,
        rules.ablation_figure.output,
        "results/sessions/sessions.tsv",
        rules.metrics_table.output,
    output:
        touch("results/figures/all.done"),
    localrule: True
