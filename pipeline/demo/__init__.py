"""`curate demo`: a small web-like corpus from text already on this machine, and the run over it.

    corpus.py        the documents: real text (Python docs, package READMEs, licences, docstrings) + junk
    formats.py       written in every input format, with planted bad inputs
    queries.py       the demo's run config, its SmolLM2 sample and the SQL tables it prints
"""
