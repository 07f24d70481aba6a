rule demo_cache:
    output:
        sessions=f"{DEMO_CACHE}/sessions.pqt",
        datasets=f"{DEMO_CACHE}/datasets.pqt",
        truth=expand(f"{DEMO_TRUTH}/{{eid}}.npz", eid=EIDS),
    log:
        "results/logs/demo_cache.log",
    localrule: True  # seconds of work: not worth a cluster job
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=per_attempt(4000),
        runtime=10,
    params:
        demo=config["demo"],
        binning=config["binning"],
        code=script_code("demo_cache.py"),
    script:
        "../scripts/demo_cache.py"
