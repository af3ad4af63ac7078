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


def test_a_wait_ends_as_soon_as_a_stop_is_requested():
    import threading
    import time

    with StopRequest() as stop:
        started = time.monotonic()
        stop.wait(0.2)
        assert 0.2 <= time.monotonic() - started < 1.0 and stop.requested is None  # nothing asked: the whole wait
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        stop.wait(30)
    assert stop.requested == "SIGTERM" and time.monotonic() - started < 5
