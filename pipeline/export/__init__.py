"""Export: a selection's kept documents as training shards plus a manifest.

    plan.py          the pure plan: seeded order, token budget and mixture sampling, shard cuts, fingerprints
    stage.py         the export stage: Spark counts tokens, the plan, Spark writes shards (pipeline.io.writers)
"""
