"""The share rule: a batch takes only free slots, none while interactive requests wait, and
never more than its share of a model's slots."""

import pytest

from mistral_serve.batch.share import batch_room


@pytest.mark.parametrize(
    ("slots", "free", "waiting", "running", "share", "room"),
    [
        (16, 16, 0, 0, 0.8, 12),  # an idle pair of engines: 80 % of 16 slots
        (16, 16, 1, 0, 0.8, 0),  # an interactive request waits: nothing starts
        (16, 3, 0, 10, 0.8, 2),  # the share bounds it before the free slots do
        (16, 2, 0, 4, 0.8, 2),  # the free slots bound it
        (16, 0, 0, 0, 0.8, 0),
        (16, 16, 0, 14, 0.8, 0),  # over its share (another gateway's claims): none
        (10, 10, 0, 0, 1.0, 10),
        (5, 5, 0, 0, 0.7, 3),
        (0, 0, 0, 0, 0.8, 0),  # no engine serves the model now
    ],
)
def test_batch_room(slots, free, waiting, running, share, room):
    assert (
        batch_room(slots=slots, free=free, waiting=waiting, batch_running=running, share=share)
        == room
    )
