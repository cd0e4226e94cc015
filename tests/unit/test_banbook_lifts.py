"""Lift requests (``connguard ban delete ADDRESS --netns NS``): the book forgets the ban, ignores
the kernel's copy until it is gone, and so restores nothing."""

from connguard.agent.banbook import BanBook, lifts_path, pending_lifts, request_lifts
from connguard.nft.observe import KernelBan

NOW = 1_800_000_000.0


def no_step(*_):
    return None


def test_a_lift_is_honoured_while_the_kernel_still_has_the_ban(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    ban = KernelBan("198.51.100.7", "tap1", 600, 600)
    other = KernelBan("198.51.100.8", "tap1", 600, 600)
    book.sync([ban, other], NOW, manual=set(), step_of=no_step)
    assert set(book.bans) == {("tap1", "198.51.100.7"), ("tap1", "198.51.100.8")}
    request_lifts(path, [("tap1", "198.51.100.7")], NOW)
    # a pass that still sees it in the kernel (the CLI deletes it right after asking)
    book.sync([ban, other], NOW + 0.2, manual=set(), step_of=no_step)
    assert set(book.bans) == {("tap1", "198.51.100.8")}
    assert pending_lifts(path, NOW + 0.2) == {("tap1", "198.51.100.7")}
    # the kernel no longer has it: nothing to restore, the request is retired
    book.sync([other], NOW + 0.4, manual=set(), step_of=no_step)
    assert book.missing_from([other], NOW + 0.4) == []
    assert not lifts_path(path).exists()
    book.save()
    assert set(BanBook(path).bans) == {("tap1", "198.51.100.8")}


def test_a_lift_without_an_agent_rewrites_the_book_and_lapses(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    book.sync([KernelBan("10.0.0.0/8", None, 60, 60)], NOW, manual=set(), step_of=no_step)
    book.save()
    request_lifts(path, [(None, "10.0.0.0/8")], NOW)
    BanBook(path).apply_lifts(NOW)
    assert BanBook(path).bans == {}
    assert pending_lifts(path, NOW) == {(None, "10.0.0.0/8")}  # an agent started meanwhile honours it
    assert pending_lifts(path, NOW + 11) == set()  # then it lapses
