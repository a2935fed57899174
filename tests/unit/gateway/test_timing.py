from mistral_serve.gateway.timing import timing_headers
from mistral_serve.telemetry.genai import Timings


def test_a_whole_answer_carries_counts_and_times():
    timings = Timings(started=1.0, sent=1.002, finished=1.502, input_tokens=12, output_tokens=100)
    assert timing_headers(timings, streamed=False) == {
        "x-queue-time": "2",
        "x-total-time": "502",
        "x-inference-time": "500",
        "x-time-per-token": "5",
        "x-prompt-tokens": "12",
        "x-generated-tokens": "100",
    }


def test_a_stream_carries_what_is_known_at_its_first_event():
    timings = Timings(started=1.0, sent=1.001, first_chunk=1.25)
    assert timing_headers(timings, streamed=True) == {
        "x-queue-time": "1",
        "x-time-to-first-token": "250",
    }


def test_unknowns_are_left_out():
    assert timing_headers(Timings(started=1.0), streamed=False) == {}
