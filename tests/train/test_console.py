from charlm.train.console import Console


def test_only_an_enabled_console_speaks(capsys):
    Console(enabled=False).say("from rank 1")
    console = Console(enabled=True, bar=False)
    console.progress(0.5, "before the bar: ignored")
    console.say("from rank 0")
    console.show_bar()
    console.progress(0.25, "step 10")
    console.close()
    console.close()  # twice is fine: the loop's wrap-up and the session both close it
    err = capsys.readouterr().err
    assert "from rank 0" in err and "from rank 1" not in err
