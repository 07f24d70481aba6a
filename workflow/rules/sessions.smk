# Per session: fetch -> qc -> bin. "Unusable" is a successful qc verdict; "broken" is a failure.


rule fetch:
    input:
        fetch_inputs,
    output:
        manifest="results/sessions/{eid}/manifest.json",
    log:
        "results/logs/fetch/{eid}.log",
    # fetch retries transient network errors itself, with backoff (one.retries); what is left
    # (a corrupt file, no cache, no credentials, an unknown eid) would fail again
    retries: 0
    conda:
        CONDA_ENV
    threads: 1
    resources:
        ibl_api=1,
        mem_mb=per_attempt(2000),
        runtime=60,
    params:
        one=stages.one_params(config),
        code=script_code("fetch.py"),
    script:
        "../scripts/fetch.py"


rule qc:
    input:
        manifest=rules.fetch.output.manifest,
    output:
        units="results/sessions/{eid}/units.parquet",
        trials="results/sessions/{eid}/trials.parquet",
        behaviour="results/sessions/{eid}/behaviour.parquet",
        qc="results/sessions/{eid}/qc.json",
    log:
        "results/logs/qc/{eid}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=per_attempt(8000),
        runtime=20,
    params:
        qc=stages.as_params(stages.qc_config(config)),
        code=script_code("qc.py"),
    script:
        "../scripts/qc.py"


rule bin:
    input:
        manifest=rules.fetch.output.manifest,
        units=rules.qc.output.units,
        trials=rules.qc.output.trials,
        behaviour=rules.qc.output.behaviour,
        qc=rules.qc.output.qc,
        truth=truth_input,
    output:
        binned="results/sessions/{eid}/binned.parquet",
    log:
        "results/logs/bin/{eid}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=per_attempt(8000),
        runtime=20,
    params:
        binning=stages.as_params(stages.binning_config(config)),
        code=script_code("bin.py"),
    script:
        "../scripts/bin.py"


rule sessions_table:
    input:
        qc=expand("results/sessions/{eid}/qc.json", eid=EIDS),
        binned=expand("results/sessions/{eid}/binned.parquet", eid=EIDS),
    output:
        report(
            "results/sessions/sessions.tsv",
            caption="../report/sessions.rst",
            category="6. Data",
        ),
    log:
        "results/logs/sessions_table.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        code=script_code("sessions_table.py"),
    script:
        "../scripts/sessions_table.py"
