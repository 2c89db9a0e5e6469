"""Loaders of released baseline checkpoints in their official layouts (one module per family).

Image baselines (frame by frame, tokens ``[B, T * Np, D]`` in (t, h, w) order):

* :mod:`~unisurg.backbones.surgenet` ``surgenet:FILE`` (CAFormer-S18 / ConvNeXtV2-T / PVTv2-B2; not ResNet-50s);
* :mod:`~unisurg.backbones.gsvit` ``gsvit:FILE`` (EfficientViT-M5, BGR input);
* :mod:`~unisurg.backbones.selfsupsurg` ``selfsupsurg:FILE`` (VISSL ResNet-50);
* :mod:`~unisurg.backbones.gastronet` ``gastronet:FILE`` (DINO ViT-S/16 training checkpoint or bare backbone).

EndoSSL (Hirsch et al. 2023; RoyHirsch/endossl) is not loadable yet: its models are released as TensorFlow
SavedModel folders (``saved_model_inference``, read by the repository with ``tf.saved_model.load`` and used as
``backbone(x)[1]``), not as JAX/flax parameter files, and the repository holds no model definition. A loader needs
the variable names stored in such a folder (``variables/variables.index``, a TF tensor bundle) to map them onto
the ViT, and the meaning of the graph's output 1; neither can be known without one of the released files.
SurgMotion's adapter (``endossl_adapter.py`` @0e5c678) is no reference: it only looks for ``.pth``/``.pt``/``.ckpt``
files in the folder and, finding none in a SavedModel, probes a randomly initialised ViT-L.
"""
