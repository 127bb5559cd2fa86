"""Text retrieval pieces of the ``retrieval`` recipe: the corpus (:mod:`.corpus`), lexical
baselines (:mod:`.lexical`), ranking metrics (:mod:`.metrics`), the tokeniser
(:mod:`.tokenizer`) and the text encoders (:mod:`.encoders`)."""
