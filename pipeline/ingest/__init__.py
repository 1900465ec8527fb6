"""Ingest: raw input files -> store/docs, bad rows -> store/quarantine.

    documents.py     one record -> one document: normalisation, doc_id, host and domain, language ID
    stage.py         the ingest stage: Spark reads each file, then deduplicates and writes balanced shards
"""
