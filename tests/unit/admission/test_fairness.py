"""Fair shares of a line: start tags by tokens over weight, the largest share, the counts."""

from __future__ import annotations

from mistral_serve.admission.fairness import FairShares, Ticket


def serve_all(fair: FairShares, queued: list[tuple[float, int, Ticket]]) -> list[str]:
    """Start every queued request in the line's order (start tag, then arrival)."""
    order = []
    for start, _, ticket in sorted(queued, key=lambda item: (item[0], item[1])):
        fair.started(ticket, 0, start)
        order.append(ticket.tenant)
    return order


def test_tenants_take_turns_whatever_one_of_them_queued_first():
    fair = FairShares()
    loud, quiet = Ticket("loud", tokens=100), Ticket("quiet", tokens=100)
    queued = [(fair.enter(loud, 0)[0], i, loud) for i in range(6)]
    queued += [(fair.enter(quiet, 0)[0], 10 + i, quiet) for i in range(2)]
    order = serve_all(fair, queued)
    # The quiet tenant's first request goes second, not seventh.
    assert order[:4] == ["loud", "quiet", "loud", "quiet"]


def test_shares_are_counted_in_tokens_not_requests():
    fair = FairShares()
    long, short = Ticket("long", tokens=1000), Ticket("short", tokens=100)
    queued = [(fair.enter(long, 0)[0], i, long) for i in range(3)]
    queued += [(fair.enter(short, 0)[0], 10 + i, short) for i in range(30)]
    order = serve_all(fair, queued)
    # By the time "long" has had its second request (2000 tokens' worth of turns), "short"
    # has had about ten of its 100-token ones: the same tokens, not the same count.
    before_second_long = order[: [i for i, t in enumerate(order) if t == "long"][1]]
    assert 9 <= before_second_long.count("short") <= 11


def test_a_weight_of_two_gets_twice_the_turns():
    fair = FairShares()
    heavy, light = Ticket("heavy", weight=2, tokens=100), Ticket("light", tokens=100)
    queued = [(fair.enter(heavy, 0)[0], i, heavy) for i in range(20)]
    queued += [(fair.enter(light, 0)[0], 100 + i, light) for i in range(20)]
    first_twelve = serve_all(fair, queued)[:12]
    assert first_twelve.count("heavy") == 8 and first_twelve.count("light") == 4


def test_a_tenant_that_leaves_its_last_place_loses_no_turn():
    fair = FairShares()
    ticket = Ticket("a", tokens=50)
    start, end = fair.enter(ticket, 0)
    fair.enter(Ticket("b", tokens=50), 0)  # keeps the level alive
    fair.left(ticket, 0, start, end)
    assert fair.enter(ticket, 0)[0] == start


def test_the_largest_share_is_weighted_and_ignores_more_urgent_requests():
    fair = FairShares()
    for _ in range(4):
        fair.enter(Ticket("many", tokens=100), 0)
    for _ in range(3):
        fair.enter(Ticket("heavy", weight=4, tokens=100), 0)  # 300 tokens, weighted 75
    for _ in range(9):
        fair.enter(Ticket("urgent", tokens=100), -1)
    assert fair.largest(0) == "many"
    assert fair.largest(-1) == "urgent"
    assert fair.held("many", 0) == 400


def test_shares_are_shown_in_the_order_the_line_serves_them():
    fair = FairShares()
    loud, quiet = Ticket("loud", tokens=100), Ticket("quiet", tokens=100)
    for _ in range(4):
        fair.enter(loud, 0)  # start tags 0, 100, 200, 300
    fair.started(loud, 0, 0.0)
    fair.started(loud, 0, 100.0)  # the line's time is 100: two loud ones left to serve
    fair.enter(quiet, 0)  # starts at 100, before the loud key's next (200)
    assert [row.tenant for row in fair.shares()] == ["quiet", "loud"]


def test_shares_show_counts_only_most_urgent_first():
    fair = FairShares()
    fair.enter(Ticket("a", tokens=300), 0)
    fair.enter(Ticket("b", tokens=100), 0)
    fair.enter(Ticket("c", tokens=10), -5)
    rows = fair.shares()
    assert [(r.tenant, r.priority, r.waiting, r.tokens, r.share) for r in rows] == [
        ("c", -5, 1, 10, 1.0),
        ("a", 0, 1, 300, 0.75),
        ("b", 0, 1, 100, 0.25),
    ]


def test_an_idle_level_starts_afresh():
    fair = FairShares()
    ticket = Ticket("a", tokens=10_000)
    start, _ = fair.enter(ticket, 0)
    fair.started(ticket, 0, start)
    assert fair.shares() == []
    assert fair.enter(Ticket("b"), 0)[0] == 0.0
