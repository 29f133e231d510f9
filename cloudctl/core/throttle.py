"""Backoff after failed logins, per source address and per user name, in bounded memory.

Failures are counted under three keys; after a key's free failures, each further failure
doubles its backoff (`backoff_s`, 2×, 4×, … up to `backoff_max_s`), and a key quiet for
`forget_s` is forgotten:

- (name, source): while it backs off, that address's attempts for that name are refused,
  before any password work. A success from the pair clears it.
- source: while it backs off, every attempt from the address is refused (a guesser trying
  many names from one address). A success does not clear it: one valid account of the
  attacker's own must not reset its budget for guessing others'.
- name: while it backs off, attempts for the name from any address are *delayed* (by the
  remaining backoff, at most `name_delay_max_s`), never refused. Refusing here would let anyone
  who knows a user name lock that user out from everywhere; delaying slows a guesser spread over
  many addresses (each of which has its own source budget) while the user still gets in.
  Addresses that logged in as the name before (within `forget_s`) skip the delay.

Refusals and delays never run the check they guard, and are not failures themselves (the
refused attempt learnt nothing), so hammering during a backoff does not lengthen it.

Attempts being checked are counted apart from failures (`pending`): only failures back off, so an
honest client with many requests in flight is never mistaken for a guesser. A key that has
failures may only have as many attempts in flight as could fail before its backoff starts (one at
a time once it is at its limit): guessers waiting on the same backoff cannot all slip into the
checks when it ends. A key with no failure is not limited; its first burst of wrong guesses is
checked (cheap for signatures and sessions; bounded by the password pool for HTTP Basic) and
starts the backoff. A refusal
is answered after min(the backoff left, `refusal_pace_s`): a client looping on refusals is paced
to a few attempts per second instead of costing the loop thousands of answers a second.

Memory: each kind of key has its own table, capped at `max_tracked` entries, least recently
touched dropped first. A spray of random names fills only the name and pair tables (and runs
into its source's budget); it cannot push the source entries out.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from ..config import LoginThrottle as ThrottleConfig
from ..slim import dataclass

_MAX_NAME = 128   # longer claimed names are cut: a key's size stays bounded


class Throttled(Exception):
    """The attempt is refused without being checked; retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Key:
    failures: int = 0
    last_failure: float = 0.0
    until: float = 0.0            # backing off before this time
    trusted_until: float = 0.0    # (pairs) a success from here skips the name's delay until then
    pending: int = 0              # attempts admitted and not yet resolved


class _Table:
    """One kind of key: backoff state in an LRU-capped map."""

    def __init__(self, cfg: ThrottleConfig, free: int) -> None:
        self.cfg, self.free = cfg, free
        self.rows: OrderedDict[Hashable, _Key] = OrderedDict()

    def get(self, key: Hashable, now: float) -> _Key | None:
        k = self.rows.get(key)
        if k is not None and now - max(k.last_failure, k.trusted_until) > self.cfg.forget_s:
            del self.rows[key]
            return None
        return k

    def touch(self, key: Hashable, now: float) -> _Key:
        return self.touch_known(key, self.get(key, now))

    def touch_known(self, key: Hashable, k: _Key | None) -> _Key:
        """`touch`, given what `get(key, now)` just returned (one lookup less on the hot path)."""
        if k is None:
            k = self.rows[key] = _Key()
            while len(self.rows) > self.cfg.max_tracked:
                self.rows.popitem(last=False)
        else:
            self.rows.move_to_end(key)
        return k

    def fail(self, key: Hashable, now: float) -> None:
        k = self.touch(key, now)
        if now - k.last_failure > self.cfg.forget_s:
            k.failures = 0
        k.failures += 1
        k.last_failure = now
        self._backoff(k)

    def busy(self, key: Hashable, now: float) -> bool:
        """True if `key` has failures and as many attempts in flight as may still fail before its
        backoff starts (at least one): a further attempt must wait for them."""
        return self.busy_known(self.get(key, now))

    def busy_known(self, k: _Key | None) -> bool:
        return k is not None and k.failures > 0 and k.pending >= max(1, self.free + 1 - k.failures)

    def begin(self, key: Hashable, now: float) -> None:
        self.touch(key, now).pending += 1

    def end(self, key: Hashable, now: float) -> None:
        k = self.get(key, now)
        if k is not None and k.pending > 0:
            k.pending -= 1

    def _backoff(self, k: _Key) -> None:
        over = k.failures - self.free
        k.until = k.last_failure + min(self.cfg.backoff_s * 2 ** min(over - 1, 62), self.cfg.backoff_max_s) \
            if over > 0 else 0.0

    def wait(self, key: Hashable, now: float) -> float:
        return _wait(self.get(key, now), now)


# `at_once`'s word for a source with no entry to keep (see there): `passed` leaves its table as is.
_NO_SOURCE = _Key()


def _wait(k: _Key | None, now: float) -> float:
    return max(0.0, k.until - now) if k is not None else 0.0


class Throttle:
    """One API's login backoff: `admit` before checking a credential, then `failed`, `succeeded`
    or `void` (not checked after all)."""

    def __init__(self, cfg: ThrottleConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.pairs = _Table(cfg, cfg.pair_free_failures)
        self.sources = _Table(cfg, cfg.source_free_failures)
        self.names = _Table(cfg, cfg.name_free_failures)
        self.failures = 0     # counters for /metrics
        self.refused = 0
        self.delayed = 0

    async def admit(self, name: str, source: str) -> None:
        """Wait out the name's delay, if any, before this attempt is checked; raise Throttled
        (after the refusal's pace) to refuse it unchecked."""
        wait = self.admission(name, source)
        if wait is not None:
            await wait

    def admission(self, name: str, source: str) -> Awaitable[None] | None:
        """`admit` without a coroutine for the common case: None when the attempt is admitted
        at once, else what to await (the delay, or the refusal's pace and then Throttled)."""
        try:
            delay = self.enter(name, source)
        except Throttled as e:
            return self._refuse(e)
        return asyncio.sleep(delay) if delay else None

    async def _refuse(self, e: Throttled) -> None:
        await asyncio.sleep(min(e.retry_after_s, self.cfg.refusal_pace_s))
        raise e

    def enter(self, name: str, source: str) -> float:
        """Admit the attempt and return the delay (s) before checking it; raise Throttled
        (admitting nothing) to refuse it."""
        name, now = name[:_MAX_NAME], self.clock()
        pair = (name, source)
        # Each entry is looked up once (a lookup drops a forgotten one) and used for every test.
        kp, ks = self.pairs.get(pair, now), self.sources.get(source, now)
        wait = max(_wait(kp, now), _wait(ks, now))
        if wait == 0 and (self.pairs.busy_known(kp) or self.sources.busy_known(ks)):
            wait = self.cfg.backoff_s   # (the attempts in flight decide whether a backoff starts)
        if wait > 0:
            self.refused += 1
            raise Throttled(wait)
        trusted = kp is not None and kp.trusted_until > now
        delay = 0.0 if trusted else min(self.names.wait(name, now), self.cfg.name_delay_max_s)
        if delay > 0:
            self.delayed += 1
        self.pairs.touch_known(pair, kp).pending += 1
        self.sources.touch_known(source, ks).pending += 1
        return delay

    def at_once(self, name: str, source: str) -> tuple[tuple[str, str], _Key | None, _Key | None, float] | None:
        """For an attempt checked synchronously (nothing awaited between this and `passed`):
        what `enter` needs to admit it, if it would be admitted at once (no refusal, no delay);
        None otherwise (call `admission` then). Changes nothing but what `enter` would have done
        to forgotten entries (dropped), so None costs the caller nothing to fall back from."""
        name, now = name[:_MAX_NAME], self.clock()
        pair = (name, source)
        kp = self.pairs.rows.get(pair)
        if kp is not None and kp.trusted_until > now and kp.failures == 0 and kp.until <= now:
            # (the usual case: a trusted pair with no failure, which `get` keeps, which neither
            # waits nor is busy, and whose name's delay it skips; then its source, as `get` and
            # the tests below would find it)
            sources = self.sources.rows
            ks = sources.get(source)
            if ks is not None and now - max(ks.last_failure, ks.trusted_until) > self.cfg.forget_s:
                del sources[source]   # (what `get` does to a forgotten entry)
                ks = None
            if ks is None:
                # `passed` would add the source's entry and drop it again at once (no failure to
                # remember): nothing to do, unless the addition evicts another, or the clock is
                # still within `forget_s` of its start (then it is kept)
                if now > self.cfg.forget_s and len(sources) < self.cfg.max_tracked:
                    return pair, kp, _NO_SOURCE, now
            elif ks.until <= now and not self.sources.busy_known(ks):
                return pair, kp, ks, now
        kp, ks = self.pairs.get(pair, now), self.sources.get(source, now)
        if _wait(kp, now) > 0 or _wait(ks, now) > 0 or self.pairs.busy_known(kp) or self.sources.busy_known(ks):
            return None
        if not (kp is not None and kp.trusted_until > now) and self.names.wait(name, now) > 0:
            return None
        return pair, kp, ks, now

    def passed(self, admitted: tuple[tuple[str, str], _Key | None, _Key | None, float]) -> None:
        """`enter` then `succeeded` for an attempt `at_once` admitted and that succeeded: the same
        entries touched and the pair trusted, without counting it in flight (it never was: nothing
        ran between the two)."""
        pair, kp, ks, now = admitted
        if kp is not None and ks is not None:
            # (the usual case, a trusted pair: both entries were looked up at `now` and kept, so
            # the lookups and touches below come to moving each to the end once)
            self.pairs.rows.move_to_end(pair)
            if ks is not _NO_SOURCE:
                self.sources.rows.move_to_end(pair[1])
            kp.failures, kp.until, kp.trusted_until = 0, 0.0, now + self.cfg.forget_s
            return
        self.pairs.touch_known(pair, kp)
        self.sources.touch_known(pair[1], ks)
        self.sources.get(pair[1], now)   # (`end`'s lookup: it drops an entry with nothing to remember)
        k = self.pairs.touch_known(pair, self.pairs.get(pair, now))
        k.failures, k.until, k.trusted_until = 0, 0.0, now + self.cfg.forget_s

    def failed(self, name: str, source: str) -> None:
        """The admitted attempt failed: a failure for its pair, its source and its name."""
        name, now = name[:_MAX_NAME], self.clock()
        self._end(name, source, now)
        self.failures += 1
        self.pairs.fail((name, source), now)
        self.sources.fail(source, now)
        self.names.fail(name, now)

    def succeeded(self, name: str, source: str) -> None:
        """The admitted attempt succeeded: its pair is cleared and trusted."""
        name, now = name[:_MAX_NAME], self.clock()
        key = (name, source)
        k = self.pairs.get(key, now)
        if k is not None and k.pending > 0:   # (_end's part for the pair, on the entry at hand)
            k.pending -= 1
        self.sources.end(source, now)
        pair = self.pairs.touch_known(key, k)
        pair.failures, pair.until, pair.trusted_until = 0, 0.0, now + self.cfg.forget_s

    def void(self, name: str, source: str) -> None:
        """The admitted attempt was not checked after all (the checkers were busy)."""
        name, now = name[:_MAX_NAME], self.clock()
        self._end(name, source, now)

    def _end(self, name: str, source: str, now: float) -> None:
        self.pairs.end((name, source), now)
        self.sources.end(source, now)

    def tracked(self) -> int:
        return len(self.pairs.rows) + len(self.sources.rows) + len(self.names.rows)
