"""The workflow's config, one route from file to code:

    schema.yaml   every key, its type and its default (the only place defaults live)
    schema.py     the schema and its defaults (`from_schema`: the dataclasses' defaults)
    validate.py   `validate_config`: defaults filled in, the schema checked, then checks.py
    checks.py     what the schema cannot express (binning grid, split fractions, session lists)
    stages.py     the typed config of each stage (TrainConfig, EvalConfig, HeadConfig, ...)
                  built from a validated config: what the Snakemake rules pass to their jobs
"""
