"""Ban book: persistence, escalation of repeat offences, restore of lost bans."""

from connguard.agent.banbook import BanBook
from connguard.nft.observe import KernelBan


def ban_for(ifname, offence):
    return min(600 * 2 ** (offence - 1), 3600)


def test_first_offence_is_recorded_not_escalated(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    esc = book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], 1000.0, manual=set(), ban_for=ban_for)
    assert esc == []
    assert book.bans[("tapa", "10.0.0.9")].offence == 1


def test_repeat_offence_is_escalated_and_capped(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    t = 1000.0
    offences = []
    for n in range(4):
        book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], t, manual=set(), ban_for=ban_for)
        offences.append(book.bans[("tapa", "10.0.0.9")].offence)
        t += 4000  # the ban expired
        book.sync([], t, manual=set(), ban_for=ban_for)
    assert offences == [1, 2, 3, 4]
    esc = book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], t, manual=set(), ban_for=ban_for)
    assert esc and esc[0].offence == 5 and esc[0].seconds == 3600


def test_offences_are_forgotten_after_a_day(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], 0.0, manual=set(), ban_for=ban_for)
    book.sync([], 700.0, manual=set(), ban_for=ban_for)
    esc = book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], 700.0 + 90_000, manual=set(), ban_for=ban_for)
    assert esc == [] and book.bans[("tapa", "10.0.0.9")].offence == 1


def test_persisted_and_restored_after_loss(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    book.sync([KernelBan("10.0.0.9", "tapa", 500, 600), KernelBan("198.51.100.0/24", None, None, None)],
              1000.0, manual=set(), ban_for=ban_for)
    book.save()
    again = BanBook(path)  # a restarted agent
    # the table was flushed: the kernel has nothing
    missing = {(b.interface_name, b.ip_address): round(b.remaining(1100.0) or -1) for b in again.missing_from([], 1100.0)}
    assert missing == {("tapa", "10.0.0.9"): 400, (None, "198.51.100.0/24"): -1}
    # and an expired ban is not brought back
    assert [b.ip_address for b in again.missing_from([], 1600.0)] == ["198.51.100.0/24"]


def test_manual_bans_are_not_escalated(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    for t in (0.0, 5000.0):
        esc = book.sync([KernelBan("10.0.0.9", "tapa", 599, 600)], t, manual={("tapa", "10.0.0.9")}, ban_for=ban_for)
        assert esc == []
        book.sync([], t + 700, manual=set(), ban_for=ban_for)


def test_book_is_written_only_when_it_changed(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    ban = [KernelBan("10.0.0.9", "tapa", 599, 600)]
    book.sync(ban, 1000.0, manual=set(), ban_for=ban_for)
    book.save()
    first = path.stat().st_ino
    book.sync(ban, 1001.0, manual=set(), ban_for=ban_for)  # nothing new
    book.save()
    assert path.stat().st_ino == first  # not rewritten (a rewrite replaces the file)
    book.sync([], 2000.0, manual=set(), ban_for=ban_for)  # expired: removed
    book.save()
    assert path.stat().st_ino != first and BanBook(path).bans == {}
