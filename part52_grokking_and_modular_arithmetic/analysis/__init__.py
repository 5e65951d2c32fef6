"""The chapter's analysis of a trained model: the Fourier basis (:mod:`.fourier`), the circuit (:mod:`.circuit`:
activations, effective weights, neuron frequencies, ablations), the notebook's computed claims
(:mod:`.circuit_checks`), the progress measures over training (:mod:`.dynamics`) and plots (:mod:`.plotting`)."""
