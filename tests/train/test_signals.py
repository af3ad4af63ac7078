import os
import signal

import pytest

from charlm.train.signals import StopRequest


def test_a_signal_is_a_request_a_second_ctrl_c_aborts_and_the_handlers_come_back(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest("stopping after this step") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"  # a request, not an exception in the middle of anything
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM: stopping after this step (Ctrl-C again to abort)" in capsys.readouterr().err
    with StopRequest() as quiet:
        os.kill(os.getpid(), signal.SIGINT)
    assert quiet.requested == "SIGINT" and capsys.readouterr().err == ""
