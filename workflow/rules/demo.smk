rule demo_cache:
    output:
        sessions=f"{DEMO_CACHE}/sessions.pqt",
        datasets=f"{DEMO_CACHE}/datasets.pqt",
        truth=expand(f"{DEMO_TRUTH}/{{eid}}.npz", eid=EIDS),
    log:
        "results/logs/demo_cache.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        demo=config["demo"],
        binning=config["binning"],
        version=mtm.__version__,
    script:
        "../scripts/demo_cache.py"
