"""Input data: text sources (built-in corpus, text files, tfds) and ALBERT pretraining examples."""
