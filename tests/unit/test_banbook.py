"""Ban book: persistence, the escalation step of each detected ban (the kernel escalates; the
book records it), offender memory kept for a flushed table, restore of lost bans."""

from connguard.agent.banbook import BanBook
from connguard.nft.observe import KernelBan

TIERS = (600, 1200, 2400)
DAY = 86_400


def step_of(ifname, ip, seconds):
    if seconds not in TIERS:
        return None
    k = TIERS.index(seconds) + 1
    return k, f"tR4_{k}"


def sync(book, kernel, now, manual=frozenset()):
    return book.sync(kernel, now, manual=set(manual), step_of=step_of)


def test_first_offence_is_recorded_at_step_one_with_its_memory(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    [rec] = sync(book, [KernelBan("10.0.0.9", "tapa", 599, 600)], 1000.0)
    assert (rec.offence, rec.memory) == (1, "tR4_1")
    # the kernel remembers the step until a day after the ban ends
    assert book.memory == {"tR4_1|tapa|10.0.0.9": 1000.0 + 599 + DAY}


def test_immediate_reban_is_seen_as_the_next_step_and_memory_moves(tmp_path):
    """The attacker retried the moment the ban expired: the book never sees the ban gone,
    only its expiry jump; the kernel's longer timeout says which step it is."""
    book = BanBook(tmp_path / "bans.json")
    sync(book, [KernelBan("10.0.0.9", "tapa", 600, 600)], 1000.0)
    [rec] = sync(book, [KernelBan("10.0.0.9", "tapa", 1200, 1200)], 1600.2)
    assert (rec.offence, rec.memory, rec.expires_at) == (2, "tR4_2", 2800.2)
    assert book.memory == {"tR4_2|tapa|10.0.0.9": 2800.2 + DAY}, "step 1 memory left behind"
    # the same ban seen again is not a new offence
    assert sync(book, [KernelBan("10.0.0.9", "tapa", 1199, 1200)], 1601.2) == []


def test_a_ban_of_no_rules_length_keeps_step_one_and_no_memory(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    [rec] = sync(book, [KernelBan("10.0.0.9", "tapa", 40, 45)], 1000.0)
    assert (rec.offence, rec.memory) == (1, None) and book.memory == {}


def test_memory_is_forgotten_when_the_kernel_forgets_it(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    sync(book, [KernelBan("10.0.0.9", "tapa", 600, 600)], 0.0)
    sync(book, [], 700.0)
    assert book.bans == {} and list(book.memory) == ["tR4_1|tapa|10.0.0.9"]
    sync(book, [], 600 + DAY + 1)
    assert book.memory == {}


def test_persisted_and_restored_after_loss(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    sync(book, [KernelBan("10.0.0.9", "tapa", 500, 600), KernelBan("198.51.100.0/24", None, None, None)], 1000.0)
    book.save()
    again = BanBook(path)  # a restarted agent
    # the table was flushed: the kernel has nothing
    missing = {(b.interface_name, b.ip_address): round(b.remaining(1100.0) or -1) for b in again.missing_from([], 1100.0)}
    assert missing == {("tapa", "10.0.0.9"): 400, (None, "198.51.100.0/24"): -1}
    # and an expired ban is not brought back
    assert [b.ip_address for b in again.missing_from([], 1600.0)] == ["198.51.100.0/24"]
    # its memory is, to sets the ruleset still has, with the time it has left
    [mem] = again.memory_entries(1600.0, {"tR4_1"})
    assert (mem.set_name, mem.interface_name, mem.ip_address, mem.seconds) == ("tR4_1", "tapa", "10.0.0.9", 1000 + 500 + DAY - 1600)
    assert again.memory_entries(1600.0, {"tOTHER4_1"}) == []


def test_manual_bans_get_no_step(tmp_path):
    book = BanBook(tmp_path / "bans.json")
    for t in (0.0, 5000.0):
        assert sync(book, [KernelBan("10.0.0.9", "tapa", 599, 600)], t, manual={("tapa", "10.0.0.9")}) == []
        assert book.bans[("tapa", "10.0.0.9")].origin == "manual" and book.memory == {}
        sync(book, [], t + 700)


def test_book_is_written_only_when_it_changed(tmp_path):
    path = tmp_path / "bans.json"
    book = BanBook(path)
    ban = [KernelBan("10.0.0.9", "tapa", 599, 600)]
    sync(book, ban, 1000.0)
    book.save()
    first = path.stat().st_ino
    sync(book, ban, 1001.0)  # nothing new
    book.save()
    assert path.stat().st_ino == first  # not rewritten (a rewrite replaces the file)
    sync(book, [], 2000.0)  # expired: removed (its memory stays a day)
    book.save()
    assert path.stat().st_ino != first and BanBook(path).bans == {}
    assert list(BanBook(path).memory) == ["tR4_1|tapa|10.0.0.9"]


def test_a_book_from_before_kernel_escalation_loads(tmp_path):
    path = tmp_path / "bans.json"
    path.write_text('{"bans": [{"ip_address": "10.0.0.9", "interface_name": "tapa", "expires_at": 5000.0,'
                    ' "offence": 2, "origin": "detected"}], "offences": {"tapa|10.0.0.9": {"count": 2, "until": 9e9}},'
                    ' "seeded": {}}')
    book = BanBook(path)
    assert book.bans[("tapa", "10.0.0.9")].expires_at == 5000.0 and book.memory == {}
