"""The recipe of a synthetic scan: its sizes, tiers and image ids, file order, ids and timestamps, and behaviour.

Everything here is small and eager; the big arrays are generated from the recipe per block.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from neuroxr import chunking, datamodel

# Tier sizes: test (and final_test) ~15% each, validation ~8%, train the rest (~77%, as in the
# pre-training scans: e.g. 4,490 train of 5,983 trials, ~1,000 test).
VALIDATION_FRACTION = 0.08

TEST_FRACTION = 0.15

MAX_REPEATS = 10

MIN_REPEATS = 3

_SHARED_IDS_STREAM = 0x7E57

_LAYOUT_STREAM = 0x1A70

_BEHAVIOR_STREAM = 0xBE4A

# Shared test and final_test image ids are drawn from this range, as in the release (~100-7500).
_SHARED_ID_RANGE = (100, 7500)

class Withholding:
    """What a synthetic scan withholds, from its kind, tiers and flags (shared by the recipes of both kinds)."""

    kind: ClassVar[datamodel.ReleaseKind]
    n_trials: int
    tiers: np.ndarray
    competition: bool
    behavior_withheld: bool
    behavior: np.ndarray
    pupil_center: np.ndarray

    @property
    def responses_withheld(self) -> np.ndarray:
        if not self.competition:
            return np.zeros(self.n_trials, dtype=bool)
        return np.isin(self.tiers, self.kind.withheld_tiers)

    @property
    def withheld(self) -> str:
        """The ``withheld`` attribute: the variables whose withheld cells read NaN."""
        names = (["responses"] if self.competition else []) + (["behavior", "pupil_center"] if self.behavior_withheld else [])
        return ",".join(names)

    def observed_behavior(self) -> tuple[np.ndarray, np.ndarray]:
        """Behaviour and pupil centre as a reader sees them: all NaN when withheld."""
        if self.behavior_withheld:
            return np.full_like(self.behavior, np.nan), np.full_like(self.pupil_center, np.nan)
        return self.behavior, self.pupil_center


@dataclass
class ScanRecipe(Withholding):
    """Everything small about a synthetic scan; the big arrays are generated from it per block."""

    kind: ClassVar[datamodel.ReleaseKind] = datamodel.STATIC

    scan: str
    seed: int
    n_trials: int
    n_neurons: int
    image_shape: tuple[int, int, int]
    competition: bool
    behavior_withheld: bool
    chunk_trials: int
    tiers: np.ndarray  # per file position
    image_ids: np.ndarray
    true_order: np.ndarray  # presentation order of the trial in each file
    behavior: np.ndarray  # (n, 3) float32, true values
    pupil_center: np.ndarray  # (n, 2) float32, true values
    gains: np.ndarray  # (n,) float32 behavioural gain of the responses

    @classmethod
    def build(
        cls,
        *,
        n_trials: int,
        n_neurons: int,
        image_shape: tuple[int, ...],
        competition: bool,
        behavior_withheld: bool,
        scan: str,
        seed: int,
        chunk_trials: int | None,
    ) -> ScanRecipe:
        parse_scan(scan)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"make_scan: expected image_shape (C, H, W) of positive ints, found {image_shape}")
        if n_neurons < 1:
            raise ValueError(f"make_scan: expected n_neurons >= 1, found {n_neurons}")
        rng = np.random.default_rng([_LAYOUT_STREAM, seed])
        tiers_in_time, ids_in_time = _trial_plan(n_trials, competition, rng)
        n_trials = len(tiers_in_time)
        true_order = rng.permutation(n_trials)  # file k holds the trial presented at true_order[k]
        behavior, pupil, gains = behavior_series(n_trials, seed)
        if chunk_trials is None:
            per_trial = 4 * max(int(np.prod(image_shape)), n_neurons)
            chunk_trials = chunking.trials_per_chunk(per_trial, n_trials)
        if chunk_trials < 1:
            raise ValueError(f"make_scan: expected chunk_trials >= 1, found {chunk_trials}")
        return cls(
            scan=scan,
            seed=seed,
            n_trials=n_trials,
            n_neurons=n_neurons,
            image_shape=image_shape,  # type: ignore[arg-type]
            competition=competition,
            behavior_withheld=behavior_withheld,
            chunk_trials=int(chunk_trials),
            tiers=tiers_in_time[true_order],
            image_ids=ids_in_time[true_order],
            true_order=true_order.astype(np.int64),
            behavior=behavior[true_order],
            pupil_center=pupil[true_order],
            gains=gains[true_order],
        )


def along_trials(values: np.ndarray, chunk: int) -> Any:
    """A small eager array as a dask array in blocks of ``chunk`` trials (its keys are tokens of the content)."""
    import dask.array as da

    return da.from_array(values, chunks=(chunk,) + values.shape[1:])


def neuron_files(scan: str, unit_ids: np.ndarray, layer: np.ndarray, motor_coordinates: np.ndarray) -> dict[str, np.ndarray]:
    """The ``meta/neurons`` arrays of a synthetic scan (unit ids, area, layer, ids of the scan, coordinates)."""
    animal, session, scan_idx = parse_scan(scan)
    n_neurons = len(unit_ids)
    return {
        datamodel.NEURON_INDEX_FILE: unit_ids,
        "area": np.full(n_neurons, "V1"),
        "layer": layer,
        "animal_ids": np.full(n_neurons, animal, dtype=np.uint16),
        "sessions": np.full(n_neurons, session, dtype=np.uint8),
        "scan_idx": np.full(n_neurons, scan_idx, dtype=np.uint8),
        "cell_motor_coordinates": motor_coordinates,
    }


def parse_scan(scan: str) -> tuple[int, int, int]:
    parts = scan.split("-")
    try:
        animal, session, scan_idx = (int(part) for part in parts)
    except ValueError:
        raise ValueError(f"make_scan: expected scan like '30001-2-3' (animal-session-scan), found {scan!r}") from None
    if not (0 <= animal <= 65535 and 0 <= session <= 255 and 0 <= scan_idx <= 255):
        raise ValueError(f"make_scan: expected animal id < 65536 and session, scan < 256, found {scan!r}")
    return animal, session, scan_idx

def _repeated_tier(n_trials: int) -> tuple[int, int]:
    """(images, repeats) of a test-like tier: ~15% of the trials, up to 10 repeats per image."""
    target = max(MIN_REPEATS * 3, round(TEST_FRACTION * n_trials))
    repeats = int(np.clip(round(np.sqrt(target)), MIN_REPEATS, MAX_REPEATS))
    return max(3, target // repeats), repeats

def _trial_plan(n_trials: int, competition: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tier and image id of each trial in presentation order."""
    n_images, repeats = _repeated_tier(n_trials)
    # Test (and final_test) images are the same in every synthetic scan, like the live-test images.
    shared = np.random.default_rng(_SHARED_IDS_STREAM).permutation(np.arange(*_SHARED_ID_RANGE))
    repeated_tiers = ["test", "final_test"] if competition else ["test"]
    if len(repeated_tiers) * n_images > len(shared):
        raise ValueError(f"make_scan: expected at most ~200,000 trials, found n_trials={n_trials}")
    tiers: list[str] = []
    ids: list[int] = []
    for index, tier in enumerate(repeated_tiers):
        tier_ids = shared[index * n_images : (index + 1) * n_images]
        # About one image in five is shown once less, as in the release (e.g. 998 test trials).
        counts = repeats - (rng.random(n_images) < 0.2).astype(int) * (repeats > MIN_REPEATS)
        for image_id, count in zip(tier_ids.tolist(), counts.tolist(), strict=True):
            tiers += [tier] * count
            ids += [image_id] * count
    n_validation = max(1, round(VALIDATION_FRACTION * n_trials))
    n_train = n_trials - len(tiers) - n_validation
    if n_train < 2:
        raise ValueError(
            f"make_scan: expected enough trials for train, validation and test tiers, found n_trials={n_trials}"
            f" (at least {len(tiers) + n_validation + 2} needed)"
        )
    reserved = set(shared[: len(repeated_tiers) * n_images].tolist())
    pool = np.arange(1, max(10_000, 2 * n_trials) + 1)
    pool = pool[~np.isin(pool, list(reserved))]
    unique_ids = rng.choice(pool, size=n_train + n_validation, replace=False)
    tiers += ["train"] * n_train + ["validation"] * n_validation
    ids += unique_ids.tolist()
    order = rng.permutation(len(tiers))
    return np.asarray(tiers)[order], np.asarray(ids, dtype=np.int64)[order]

def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """A stationary AR(1) series with lag-1 correlation ``phi`` and marginal sd ``sd``."""
    noise = rng.standard_normal(n) * sd * np.sqrt(1.0 - phi**2)
    out = np.empty(n)
    previous = rng.standard_normal() * sd
    for t in range(n):
        previous = phi * previous + noise[t]
        out[t] = previous
    return out

def behavior_series(n_trials: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Behaviour (n, 3), pupil centre (n, 2) and response gain (n,) in presentation order."""
    rng = np.random.default_rng([_BEHAVIOR_STREAM, seed])
    running = np.zeros(n_trials, dtype=bool)
    state = False
    for t in range(n_trials):  # bouts of running: a two-state Markov chain
        state = rng.random() < (0.97 if state else 0.02)
        running[t] = state
    speed = running * (12.0 + _ar1(rng, n_trials, 0.9, 5.0)) + rng.normal(0.0, 0.4, n_trials)
    pupil = np.maximum(24.0 + _ar1(rng, n_trials, 0.97, 6.0) + 4.0 * running, 3.0)
    derivative = np.gradient(pupil)
    behavior = np.stack([pupil, derivative, speed], axis=1).astype(np.float32)
    centre = np.array([rng.uniform(150.0, 200.0), rng.uniform(120.0, 160.0)])
    saccades = np.cumsum((rng.random((n_trials, 2)) < 0.03) * rng.normal(0.0, 6.0, (n_trials, 2)), axis=0)
    wander = np.stack([_ar1(rng, n_trials, 0.9, 3.0), _ar1(rng, n_trials, 0.9, 2.0)], axis=1)
    pupil_center = (centre + wander + saccades - saccades.mean(axis=0)).astype(np.float32)
    gains = np.exp(0.2 * (pupil - 24.0) / 6.0) * (1.0 + 0.4 * running)
    return behavior, pupil_center, gains.astype(np.float32)

def timestamps(true_order: np.ndarray, seed: int) -> np.ndarray:
    """``"Timestamp('YYYY-MM-DD HH:MM:SS')"`` of each file's trial, a few seconds apart in true order."""
    rng = np.random.default_rng([_BEHAVIOR_STREAM, seed, 1])
    start = datetime(2019, 7, 3, 10, 0, 0) + timedelta(days=int(rng.integers(0, 400)), seconds=int(rng.integers(0, 7200)))
    seconds = np.cumsum(rng.integers(2, 5, size=len(true_order)))
    stamps = [f"Timestamp('{(start + timedelta(seconds=int(s))):%Y-%m-%d %H:%M:%S}')" for s in seconds.tolist()]
    return np.asarray(stamps)[true_order]

def condition_hash(image_id: int) -> str:
    """A DataJoint-like condition hash: the first 20 characters of a base64 md5."""
    return base64.b64encode(hashlib.md5(f"condition:{image_id}".encode()).digest()).decode()[:20]

def hashed_trial_idx(scan: str, seed: int, true_order: np.ndarray) -> np.ndarray:
    return np.asarray([hashlib.md5(f"{scan}:{seed}:{t}".encode()).hexdigest() for t in true_order.tolist()])
