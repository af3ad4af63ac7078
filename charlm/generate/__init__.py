"""Generation: text from a trained model, one character at a time.

- ``streams``: ``StreamSet``, many generation streams advanced together through ``FastStep``, each
  with its own settings and random generator (why a seed gives one text alone or among others);
- ``sample``: ``generate`` (token ids) and ``Sampler`` (text: stop strings, reverse, whole lines,
  novel and unique lines), which ``charlm sample``, the API and training's previews use.
"""
