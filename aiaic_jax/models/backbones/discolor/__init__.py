"""DisColor (DISCO, Xia et al., SIGGRAPH Asia 2022): the model (`model.py` with its networks in
`nets.py` and its superpixel tokens in `tokens.py`), the 313 colour bins (`bins.py`), the
objective (`objective.py`, with the VGG19 of `vgg19.py`) and the converter of the official
checkpoint (`convert.py`)."""
