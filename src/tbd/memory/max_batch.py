"""The largest batch that trains, confirmed with real steps: `tbd memory gpt --device cuda --flavor
paper --max-batch` (after the prediction) and `tbd sweep ... --max-batch` use the same search.

A prediction from a line fitted on small batches overshoots where memory grows faster than
linearly at large batches (allocator fragmentation, workspace choices, a 50k-vocabulary logits
tensor): on an H200 gpt's line predicted 171 and runs at 171 and 162 ran out of memory. So the
search starts at the prediction and asks the real thing: each probe is a few training steps in a
child process (`probe(batch) -> 'fits' | 'oom' | 'error'`). From the start it walks up (by 2%,
then doubling) or down (by 2%, then doubling) until it has a batch that fits below one that fails,
then bisects until the smallest failing batch is within `tolerance_pct` of the largest fitting
one. The search stops at `deadline_s` and says so; the bracket found by then is reported.

A probe near the boundary of a large model can take minutes (cuDNN's autotuner meets every new
shape at thousands of samples), so an earlier search's answers can be given (`known`: a batch
known to train, one known to run out of memory) and the search goes on from them instead of
asking again.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tbd.results.memory_profile import fmt_bytes, parse_size
from tbd.results.record import has_result

FITS, OOM, ERROR = "fits", "oom", "error"
TOLERANCE_PCT = 2.0
# First move away from the prediction: the tolerance itself, then doubling the move. A prediction
# within the tolerance is confirmed by two probes (it fits, 2% more does not).
FIRST_STEP = TOLERANCE_PCT / 100.0
# Steps of a probe: the first allocates the optimizer state and meets cuDNN's autotuner, the
# second is a steady step with everything allocated.
PROBE_STEPS = 2
# Share of the host's free memory that a step run on the CPU to size a batch (a sweep's probe, a
# profile fitting the batch-size model) may be expected to use: past it the OOM killer is near.
HOST_MEMORY_SHARE = 0.8


def host_room_bytes(available: int | None = None) -> float:
    """HOST_MEMORY_SHARE of the host's free memory (`available`, or psutil's figure now)."""
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    return HOST_MEMORY_SHARE * available


@dataclass
class SearchResult:
    predicted: int | None
    largest_fitting: int | None  # the confirmed figure: it ran
    smallest_failing: int | None  # the lowest batch that ran out of memory
    probes: list[dict[str, Any]] = field(default_factory=list)  # {batch_size, outcome, seconds}
    stopped: str = ""  # why the search ended
    bounded_by_time: bool = False
    known: dict[int, str] = field(default_factory=dict)  # outcomes given from an earlier search, not probed here

    @property
    def prediction_error_pct(self) -> float | None:
        """(predicted - confirmed) / confirmed: positive where the prediction overshoots."""
        if self.predicted is None or not self.largest_fitting:
            return None
        return (self.predicted - self.largest_fitting) / self.largest_fitting * 100.0

    @property
    def gap_pct(self) -> float | None:
        if not self.largest_fitting or self.smallest_failing is None:
            return None
        return (self.smallest_failing - self.largest_fitting) / self.largest_fitting * 100.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prediction_error_pct": self.prediction_error_pct, "gap_pct": self.gap_pct}


def search(probe: Callable[[int], str | tuple[str, str]], start: int, *, upper: int | None = None, lower: int = 1,
           tolerance_pct: float = TOLERANCE_PCT, deadline_s: float | None = None,
           predicted: int | None = None, first_step: float = FIRST_STEP,
           clock: Callable[[], float] = time.monotonic,
           on_probe: Callable[[dict[str, Any]], None] | None = None,
           known: dict[int, str] | None = None,
           on_start: Callable[[int], None] | None = None,
           bytes_per_sample: float | None = None) -> SearchResult:
    """Largest batch in [lower, upper] for which `probe` says 'fits', starting at `start` and
    moving by `first_step` (a fraction; 1.0 doubles from the start: no prediction to trust).
    `on_probe` is given each probe's dict as soon as it is known: a search stopped from outside
    (a killed process) has said what it found so far; `on_start` is given each batch as its probe
    begins, so a search stopped mid-probe can say how long that probe ran. `known` maps batches
    to outcomes ('fits' or 'oom') from an earlier search: the search starts at the prediction
    where it lies above the largest batch known to fit (and no failure is given), else next to
    the answers (a step above the largest known to fit, or below the smallest known to fail;
    between the two where both are given).
    With `bytes_per_sample` (the fitted line's), a failing probe whose message says how much it
    lacked (tried to allocate - free) sets the next probe at least that many samples lower, and
    within the bracket no higher than the batch that would close it with one fitting probe: a
    failing probe takes a minute or two, a fitting one up to five, so the search walks down on
    cheap failures instead of bisecting up on dear fits. Where such a probe fits, the next is 2%
    above it (a failure there closes the bracket); where it fails, the next is the plain
    bisection's, so a shortfall that understates the need costs at most every other probe."""
    began = clock()
    known = dict(known or {})
    if any(outcome not in (FITS, OOM) for outcome in known.values()):
        raise ValueError(f"known outcomes are '{FITS}' or '{OOM}', not {sorted(set(known.values()))}")
    result = SearchResult(predicted=predicted, largest_fitting=None, smallest_failing=None, known=known)
    seen: dict[int, str] = dict(known)

    def ask(batch: int) -> str:
        if batch not in seen:
            if on_start is not None:
                on_start(batch)
            t0 = clock()
            answer = probe(batch)  # an outcome, or (outcome, why) where the probe can say why
            seen[batch], why = answer if isinstance(answer, tuple) else (answer, "")
            result.probes.append({"batch_size": batch, "outcome": seen[batch], "seconds": round(clock() - t0, 3),
                                  **({"error": why} if why and seen[batch] != FITS else {})})
            if on_probe is not None:
                on_probe(result.probes[-1])
        return seen[batch]

    def lacking_samples(batch: int) -> int | None:
        """Samples' worth of memory the failing probe at `batch` lacked, from its message; None
        where it did not say (a batch given as failing, a message without figures) or no line is known."""
        why = next((p.get("error", "") for p in reversed(result.probes) if p["batch_size"] == batch), "")
        facts = oom_facts(why)
        if not bytes_per_sample or not {"tried", "free"} <= facts.keys():
            return None
        return math.ceil(max(0, facts["tried"] - facts["free"]) / bytes_per_sample)

    def out_of_time() -> bool:
        if deadline_s is not None and clock() - began >= deadline_s:
            result.bounded_by_time = True
            return True
        return False

    fits = max((b for b, outcome in known.items() if outcome == FITS), default=None)
    fails = min((b for b, outcome in known.items() if outcome == OOM), default=None)
    if fits is not None and fails is not None and fails <= fits:
        raise ValueError(f"batch {fails} is given as running out of memory and the larger {fits} as training; give a failing batch above the fitting one")
    if fits is not None and fails is None:
        # A prediction above the known fit is the next question: a failing probe is cheap (it
        # stops at its first allocation that does not fit) and leaves a bracket to bisect, where
        # steps of 2% up from the known fit cost a whole training probe each.
        beyond = predicted is not None and predicted > fits
        start = predicted if beyond else max(fits + 1, math.floor(fits * (1 + first_step)))
    elif fails is not None and fits is None:
        # Just under 2% below: a fitting probe there closes the bracket at once (2% of the
        # fitting batch, not of the failing one: 2429 below 2478 would leave a gap of 2.02%).
        start = min(fails - 1, math.ceil(fails / (1 + first_step)))
    batch = max(lower, min(start, upper or start))
    move = first_step
    placed: set[int] = set()  # batches a failing probe's shortfall chose
    # 1. bracket: walk from the start until a fitting batch lies below a failing one
    while fits is None or fails is None:
        outcome = ask(batch)
        if outcome == ERROR:
            result.stopped = f"batch {batch} failed for a reason other than memory ({result.probes[-1].get('error', 'no message')}); the search stops there"
            break
        if outcome == FITS:
            fits = batch if fits is None else max(fits, batch)
            if fails is not None:
                break
            if upper is not None and batch >= upper:
                result.stopped = f"batch {upper}, the upper bound of the search, fits"
                break
            batch = int(min(upper or math.inf, max(batch + 1, math.floor(batch * (1 + move)))))
        else:
            fails = batch if fails is None else min(fails, batch)
            if fits is not None:
                break
            if batch <= lower:
                result.stopped = f"even batch {lower} runs out of memory"
                break
            down = math.ceil(batch * (1 - min(move, 0.5)))
            if (short := lacking_samples(batch)) is not None and batch - short < down:
                down = batch - short
                placed.add(max(lower, min(batch - 1, down)))
            batch = max(lower, min(batch - 1, down))
        move = min(move * 2, 1.0)
        if out_of_time():
            break
    # 2. bisect the bracket down to the tolerance
    if fits is not None and fails is not None and not result.stopped:
        while fails - fits > max(1, fits * tolerance_pct / 100.0) and not out_of_time():
            middle = (fits + fails) // 2
            last = result.probes[-1] if result.probes else {}
            last_guided = last.get("outcome") if last.get("batch_size") in placed else None
            just_above = max(fits + 1, math.floor(fits * (1 + tolerance_pct / 100.0)))
            if last_guided == FITS and just_above < fails:
                middle = just_above  # the shortfall put the boundary here: a (cheap) failure 2% up closes the bracket
            elif last_guided != OOM and (short := lacking_samples(fails)) is not None:
                closing = math.ceil(fails / (1 + tolerance_pct / 100.0))  # a fit there closes the bracket
                guess = min(fails - short, closing)
                if fits < guess < fails:
                    middle = guess
                    placed.add(guess)
            outcome = ask(middle)
            if outcome == FITS:
                fits = middle
            elif outcome == OOM:
                fails = middle
            else:
                result.stopped = (f"batch {middle} failed for a reason other than memory ({result.probes[-1].get('error', 'no message')});"
                                  " the bracket so far is reported")
                break
    result.largest_fitting, result.smallest_failing = fits, fails
    if result.bounded_by_time:
        result.stopped = f"time limit of {deadline_s:g} s reached; the boundary lies between the figures reported"
    elif not result.stopped:
        result.stopped = f"bracket within {tolerance_pct:g}%"
    return result


# What allocation failures say of the allocator (PyTorch's CUDA caching allocator, XLA's):
# the request that failed, the device's free memory, and memory the framework held but had not
# handed out. The last is fragmentation, what expandable segments can recover. The patterns read
# the frameworks' messages and `oom_summary`'s own line alike.
_SIZE = r"(\d[\d.]* ?(?:[KMGT]i?B|bytes))"
OOM_FACTS = (("tried", "tried to allocate {}", re.compile(r"(?:[Tt]ried|trying) to allocate " + _SIZE)),
             ("free", "{} free", re.compile(_SIZE + r" (?:is )?free")),
             ("unallocated", "{} reserved but unallocated", re.compile(_SIZE + r" (?:is )?reserved (?:by \w+ )?but unallocated")))


def oom_summary(text: str) -> str:
    """One line of an out-of-memory message's figures ('' where it has none of them), so a
    search's probe lines say whether the boundary is memory in use or memory in pieces."""
    found = [words.format(m.group(1)) for _, words, pattern in OOM_FACTS if (m := pattern.search(text or ""))]
    return ", ".join(found)


def oom_facts(text: str) -> dict[str, int]:
    """The figures of an out-of-memory message or summary in bytes: tried, free, unallocated."""
    return {key: parse_size(m.group(1)) for key, _, pattern in OOM_FACTS if (m := pattern.search(text or ""))}


def fragmentation_note(probes: list[dict[str, Any]], allocator_setting: str) -> str:
    """Where the lowest failing batch lacked less than its allocator held reserved but unallocated,
    the boundary is fragmentation's, not the memory's: one line that says so and names the setting
    against it ('' otherwise, or where that setting is already on)."""
    failing = sorted((p for p in probes if p["outcome"] == OOM and p.get("error")), key=lambda p: p["batch_size"])
    facts = oom_facts(failing[0]["error"]) if failing else {}
    if allocator_setting or not {"tried", "free", "unallocated"} <= facts.keys():
        return ""
    lacked = max(0, facts["tried"] - facts["free"])
    if facts["unallocated"] <= lacked:
        return ""
    return (f"batch {failing[0]['batch_size']} lacked {fmt_bytes(lacked)} with {fmt_bytes(facts['unallocated'])} reserved but "
            f"unallocated: the boundary is the allocator's fragmentation; --expandable-segments may raise it")


def outcome_of(record) -> str:
    """'fits', 'oom' or 'error' of a probe's record (a RunRecord or its stored dict). A probe of
    two steps has one timed step, so its status is 'insufficient' for a throughput; for memory
    any measured status means the batch trained."""
    if has_result(record):
        return FITS
    error = record.get("error") or {}
    return OOM if error.get("kind") == "oom" else ERROR


def confirm(config, predicted: int | None, *, deadline_s: float = 600.0, steps: int = PROBE_STEPS,
            launch: Callable | None = None, upper: int | None = None,
            on_probe: Callable[[dict[str, Any]], None] | None = None,
            known: dict[int, str] | None = None,
            on_start: Callable[[int], None] | None = None,
            bytes_per_sample: float | None = None) -> SearchResult:
    """Confirm the largest batch of `config` with real training steps, each probe a child
    process of `steps` steps (so an out-of-memory cannot poison the next probe); `on_probe`,
    `known`, `on_start` and `bytes_per_sample` as in `search`."""
    import contextlib
    import dataclasses

    from tbd.harness import launcher as launcher_module
    from tbd.harness.launcher import launch as default_launch
    from tbd.topology import world_size

    launch = launch or default_launch

    def probe(batch: int) -> str:
        short = dataclasses.replace(config, batch_size=batch, max_steps=steps, min_timed_steps=1, isolate=True,
                                    profile=False, ncu=False)
        record = launch(short)
        outcome, error = outcome_of(record), record.get("error") or {}
        if outcome == OOM:
            return outcome, oom_summary(f"{error.get('message', '')}\n{error.get('traceback', '')}")
        return outcome, (error.get("message") or "")[:200]

    # each probe a fresh process, started ahead with the framework imported (where probes run through the default launcher)
    warm = default_launch is launch and world_size(config) == 1 and config.python is None
    with launcher_module.warm_children(config.framework) if warm else contextlib.nullcontext():
        return search(probe, predicted or config.batch_size, upper=upper, deadline_s=deadline_s, predicted=predicted,
                      on_probe=on_probe, known=known, on_start=on_start, bytes_per_sample=bytes_per_sample)
