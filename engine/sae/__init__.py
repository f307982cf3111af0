"""SAE training: the model (TopK, BatchTopK, ReLU, Matryoshka), its sparse operations, the trainer, the
settings chosen from a recording, and QC of a trained SAE against PCA and NMF."""
