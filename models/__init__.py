"""Topic and sentiment classifiers: training, export, evaluation and the inference engine."""
