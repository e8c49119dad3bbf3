"""ChromaGAN (Vitoria, Raad, Ballester, WACV 2020): everything that is its own.

`model`: the generator (VGG16 trunk, global and class branches, mid-level branch, fusion and
colorization head) with the DSG point and the official input/output conventions; `critic`: its
PatchGAN WGAN critic; `objective`: its training objective (MSE, KL to a VGG16 classifier, the
WGAN-GP critic); `teacher`: that VGG16 classifier and its converters (torchvision .pth, Keras
.h5); `convert`: the official Keras checkpoint `my_model_colorization.h5` -> Flax variables,
mapped by the graph stored in the file.
"""
