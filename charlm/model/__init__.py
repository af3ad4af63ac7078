"""The model: what a run trains and what generation steps.

- ``network``: ``CharRNN``, embedding -> recurrent stack -> head; where the LSTM runs
  (``CharRNN.forward`` calls torch's fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``), and the state it carries;
- ``cells``: minGRU and minLSTM (the window's gates in one product, then ``linear_scan``) and the
  residual block, for any cell;
- ``fast_step``: ``FastStep``, the same network one character at a time, written out by hand for
  sampling and serving.
"""
