"""Measurements of a net, from either layout: how colourful each tower's conv1 kernels are
(``colourfulness``, the paper's §6.1 observation as a number) and a hidden layer's
activations after its ReLU (``activations``, fc7 for the paper's Figure 4)."""
