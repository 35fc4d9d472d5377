"""Speed-ups and tracing checks below the network: the fast LRN and the fused CPU blocks
(``lrn``), and whether torch.compile is tracing (``tracing``). They compute exactly what
``alexnet.model`` defines; ``alexnet.model.lrn`` chooses them with ``lrn_impl``."""
