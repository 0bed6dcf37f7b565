def test_import():
    import esl_audio_stream

    assert esl_audio_stream.__version__
