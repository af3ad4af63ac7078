"""``charlm inspect``: look inside recurrent models.

- ``gradients``: how far back a prediction still depends on its input (vanishing gradients);
- ``memory``: a synthetic long-range task that plain RNNs fail and gated cells pass;
- ``text``: an HTML page of a text coloured by surprisal or by one hidden unit, and a search for
  units that track a feature of the text.
"""
