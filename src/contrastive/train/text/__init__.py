"""Text retrieval pieces of the ``retrieval`` recipe: the corpus (:mod:`.corpus`), lexical
baselines (:mod:`.lexical`), BM25-mined hard negatives (:mod:`.mining`), ranking metrics
(:mod:`.metrics`), the tokeniser and its cache (:mod:`.tokenizer`), the text encoders
(:mod:`.encoders`), search over a run's corpus (:mod:`.search`) and the sentence-transformers
export (:mod:`.export`)."""
