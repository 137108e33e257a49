"""The judge: whether each read showed a page that was still true 100 ms before it was sent,
and how long each write took to become visible."""

from __future__ import annotations

import bisect
import dataclasses
from collections import defaultdict
from typing import Any

from tests.support.freshness.knobs import GRACE
from tests.support.freshness.model import CONTACT_TARGET, NEVER, TENANT1, Model, Page, Sig
from tests.support.freshness.readers import Read
from tests.support.freshness.world import World
from tests.support.freshness.writer import Writer


@dataclasses.dataclass
class Stale:
    read: Read
    lateness: float
    missed: str      # the source of the write (or "clock") the read did not reflect
    detail: str
    expected: Sig


class Judge:
    """See the module docstring. States j = 0..K: S_j held from the start of write j (it may be
    visible from then on) to the commit return of write j + 1 (it must be gone 100 ms later).
    The clock splits time into classes at every end E: class i is the seconds after the i-th
    end, seen from wall time E + 1 on. A contact's page is judged in two parts, each of which
    must be fresh: which member the contact was (the mapping) and that member's page."""

    def __init__(self, writer: Writer, world: World, reads: list[Read], offset: float):
        self.w = writer
        self.model = Model()
        self.states = writer.states
        self.K = len(self.states) - 1
        self.starts = writer.starts[1:]      # starts[k - 1]: write k
        self.commits = writer.commits[1:]
        self.bounds = world.ends
        self.reps = ([self.bounds[0]] + [b + 1 for b in self.bounds]) if self.bounds else [0]
        self.cls_begin = [-NEVER] + [b + 1.0 for b in self.bounds]
        self.cls_end = [b + 1.0 for b in self.bounds] + [NEVER]
        self.offset = offset                 # time.time() - time.monotonic()
        self.reads = reads
        self.pages = sorted({r.page for r in reads}, key=repr)
        # page (of a member) -> sig -> class -> ascending states
        self._index: dict[Page, dict[Sig, dict[int, list[int]]]] = {}
        # The contact: per member, the states it was that member in, and for each state the
        # first later state where it is another member.
        contacts = [state.contact for state in self.states]
        self.contact_states: dict[int, list[int]] = defaultdict(list)
        for j, uid in enumerate(contacts):
            self.contact_states[uid].append(j)
        self.contact_change: list[int | None] = [None] * len(contacts)
        following: int | None = None
        for j in range(len(contacts) - 1, -1, -1):
            self.contact_change[j] = following
            if j > 0 and contacts[j - 1] != contacts[j]:
                following = j

    def index(self, page: Page) -> dict[Sig, dict[int, list[int]]]:
        per = self._index.get(page)
        if per is None:
            per = {}
            for j, state in enumerate(self.states):
                for i, rep in enumerate(self.reps):
                    per.setdefault(self.model.page(state, page, rep), {}).setdefault(
                        i, []).append(j)
            self._index[page] = per
        return per

    def views(self, page: Page) -> list[tuple[Page, int | None]]:
        """The member pages a read of `page` may show: itself, or for the contact the same
        page of each member it may have been."""
        if page[0] != CONTACT_TARGET:
            return [(page, None)]
        return [((uid, *page[1:]), uid) for uid in TENANT1]

    def k_hi(self, read: Read) -> int:
        """The last state whose write had started before the answer arrived."""
        return bisect.bisect_left(self.starts, read.r)

    def _until(self, j: int | None) -> float:
        """When the state (or contact interval) ending before state j stopped being true:
        the commit return of write j; never, if there is no such write."""
        return NEVER if j is None or j > self.K else self.commits[j - 1]

    def lateness(self, read: Read) -> tuple[float, str, int, int] | None:
        """The most favourable reading of what `read` showed: (lateness, what made it late:
        "state" | "clock" | "contact", the write it missed (state index), the class); None if
        it matches nothing possible."""
        if read.sig is None:
            return None
        hi = self.k_hi(read)
        best = None
        for view, uid in self.views(read.page):
            per = self.index(view).get(read.sig)
            if not per:
                continue
            by_contact, contact_missed = -NEVER, 0
            if uid is not None:
                states = self.contact_states.get(uid, [])
                pos = bisect.bisect_right(states, hi) - 1
                if pos < 0:
                    continue
                change = self.contact_change[states[pos]]
                by_contact, contact_missed = read.s - self._until(change), change or 0
            for i, states in per.items():
                if self.cls_begin[i] > read.rw:
                    continue
                pos = bisect.bisect_right(states, hi) - 1
                if pos < 0:
                    continue
                j = states[pos]
                parts = ((read.s - self._until(j + 1), "state", j + 1),
                         (read.sw - self.cls_end[i], "clock", 0),
                         (by_contact, "contact", contact_missed))
                late, why, missed = max(parts, key=lambda part: part[0])
                if best is None or late < best[0]:
                    best = (late, why, missed, i)
        return best

    def reflects(self, read: Read, first_state: int, first_class: int) -> bool:
        """Whether `read` shows its page as of state `first_state` (and class `first_class`)
        or later."""
        if read.sig is None:
            return False
        hi = self.k_hi(read)
        for view, uid in self.views(read.page):
            per = self.index(view).get(read.sig)
            if not per:
                continue
            if uid is not None:
                states = self.contact_states.get(uid, [])
                pos = bisect.bisect_left(states, first_state)
                if pos == len(states) or states[pos] > hi:
                    continue
            for i, states in per.items():
                if i < first_class or self.cls_begin[i] > read.rw:
                    continue
                pos = bisect.bisect_left(states, first_state)
                if pos < len(states) and states[pos] <= hi:
                    return True
        return False

    def class_at(self, wall: float) -> int:
        return bisect.bisect_right(self.cls_begin, wall) - 1

    def judge(self) -> dict[str, Any]:
        judged, stale, unexplained = 0, [], []
        closest = -NEVER   # the latest a read judged fresh was (how near the 100 ms it came)
        for read in self.reads:
            if read.status != 200:
                continue
            judged += 1
            found = self.lateness(read)
            if found is None:
                unexplained.append(read)
                continue
            late, why, missed, i = found
            if late > GRACE:
                if why == "clock":
                    source, detail = "clock", f"end {self.bounds[i]}"
                else:
                    source, detail = self.w.sources[missed], self.w.details[missed]
                rep = self.reps[self.class_at(read.sw)]
                expected = self.model.page(self.states[self.k_hi(read)], read.page, rep)
                stale.append(Stale(read, late, source, detail, expected))
            else:
                closest = max(closest, late)
        return {"judged": judged, "stale": stale, "unexplained": unexplained,
                "closest_fresh": None if closest == -NEVER else closest}

    def visibility(self) -> dict[str, dict[str, Any]]:
        """Per source: commit-to-visible of each write, to the first affected page's first read
        that reflects it ("first") and to the last affected page's ("all")."""
        by_page: dict[Page, list[Read]] = defaultdict(list)
        for read in self.reads:
            if read.status == 200:
                by_page[read.page].append(read)
        sends: dict[Page, list[float]] = {}
        for page, reads in by_page.items():
            reads.sort(key=lambda r: r.s)
            sends[page] = [r.s for r in reads]
        out: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"events": 0, "first": [], "all": [], "unseen": 0})

        def seen(page: Page, since: float, first_state: int, first_class: int) -> float | None:
            reads = by_page.get(page, [])
            pos = bisect.bisect_left(sends.get(page, []), since)
            for read in reads[pos:]:
                if read.s > since + 10:
                    return None
                if self.reflects(read, first_state, first_class):
                    return read.s - since
            return None

        events: list[tuple[str, float, int, int, list[Page]]] = []
        for k in range(1, self.K + 1):
            commit = self.commits[k - 1]
            cls = self.class_at(commit + self.offset)
            rep = self.reps[cls]
            changed = [p for p in self.pages
                       if self.model.page(self.states[k], p, rep)
                       != self.model.page(self.states[k - 1], p, rep)]
            events.append((self.w.sources[k], commit, k, 0, changed))
        for b, end in enumerate(self.bounds):
            moment = end + 1 - self.offset
            k = bisect.bisect_left(self.commits, moment)
            changed = [p for p in self.pages
                       if self.model.page(self.states[k], p, self.reps[b])
                       != self.model.page(self.states[k], p, self.reps[b + 1])]
            events.append(("clock", moment, 0, b + 1, changed))
        last_send = max((r.s for r in self.reads), default=0.0)
        for source, moment, first_state, first_class, changed in events:
            if not changed or moment > last_send - 0.5:   # too late in the run to be seen
                continue
            times = [seen(p, moment, first_state, first_class) for p in changed]
            known = [t for t in times if t is not None]
            out[source]["events"] += 1
            if known:
                out[source]["first"].append(min(known))
            if len(known) == len(times):
                out[source]["all"].append(max(known))
            else:
                out[source]["unseen"] += len(times) - len(known)
        return out
