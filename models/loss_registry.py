"""The loss registry: each training objective registers itself under the name the ``loss`` key takes.

A loss is a class decorated ``@register_loss(name, options)`` (see models/loss.py): called as
loss(image [N, D], text [T, D], logit_scale, logit_bias, pairs) -> scalar, with the layout of models/loss.py's
docstring (pairs: a models.pairing.Pairing; pairs.block(N) is the [N, T] positive mask). What it asks of the model is declared, not coded elsewhere: ``learns_bias`` (the
model gains a logit bias and the checkpoint's spec says so), ``start_scale_and_bias`` (where a first run of
this loss starts them), ``uses_temperature`` (False: the logit scale is frozen). ``options`` maps the train
keys it reads to its constructor's arguments, each with the value that asks nothing of it (None: the key is
simply unused by other losses; any other value there is refused when another loss is chosen).
"""
LOSSES = {}


def register_loss(name, options=None):
    """Class decorator: the loss ``name`` (the ``loss`` key's value), reading ``options``
    ({train key: (argument, neutral value)})."""
    def add(cls):
        if name in LOSSES:
            raise ValueError(f"loss '{name}' is registered twice")
        cls.name, cls.options = name, dict(options or {})
        LOSSES[name] = cls
        return cls
    return add


class Loss:
    """One objective. Subclasses give __call__ and describe(); the class attributes say what it needs."""
    name = None
    options = {}
    learns_bias = False
    start_scale_and_bias = None
    uses_temperature = True

    def __call__(self, image_features, text_features, logit_scale, logit_bias, pairs):
        raise NotImplementedError

    def describe(self):
        return f"loss: {self.name}"

