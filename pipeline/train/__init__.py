"""Small causal LMs trained by the pipeline itself.

    reference.py     the trainer, readable top to bottom: split, tokenizer, data, model, schedule, loop
    stage.py         the train_reference stage: the split from the store, the model, reference_splits/
"""
