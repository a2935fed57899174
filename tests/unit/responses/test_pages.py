import pytest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.responses.pages import Page, page_of

ITEMS = [{"id": f"msg_{index}"} for index in range(5)]  # oldest first


def ids(page: dict) -> list[str]:
    return [item["id"] for item in page["data"]]


def test_newest_first_by_default_with_cursors():
    first = page_of(ITEMS, Page(limit=2))
    assert ids(first) == ["msg_4", "msg_3"] and first["has_more"]
    assert first["first_id"] == "msg_4" and first["last_id"] == "msg_3"
    second = page_of(ITEMS, Page(after=first["last_id"], limit=2))
    assert ids(second) == ["msg_2", "msg_1"] and second["has_more"]
    last = page_of(ITEMS, Page(after="msg_1", limit=2))
    assert ids(last) == ["msg_0"] and not last["has_more"]


def test_ascending():
    page = page_of(ITEMS, Page(limit=10, order="asc"))
    assert ids(page) == [item["id"] for item in ITEMS] and not page["has_more"]


def test_an_empty_list():
    assert page_of([], Page()) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
    ],
)
def test_bad_queries_are_a_400(query, param):
    with pytest.raises(InvalidRequestError) as raised:
        Page.of(query)
    assert raised.value.param == param


def test_an_unknown_cursor_is_a_400():
    with pytest.raises(InvalidRequestError):
        page_of(ITEMS, Page(after="msg_9"))
