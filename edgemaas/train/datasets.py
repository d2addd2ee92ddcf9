"""Built-in datasets. Three are real and ship offline with scikit-learn and statsmodels; the text one is generated.

Every dataset returns raw inputs (what a caller would send the deployed function: pixel values, feature values,
the last W yearly readings, a sentence) and raw targets; normalisation is fitted on the training split later and
recorded in the manifest, so training and serving apply the very same transform.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemaas.errors import UserError


@dataclass
class Dataset:
    name: str
    task: str  # "classification" | "regression"
    kind: str  # "numeric" | "text"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # where the data comes from, said plainly in reports
    input_name: str = "inputs"
    target_name: str = "value"
    labels: list[str] | None = None
    normalisation: str = "per_feature"  # "per_feature" | "global" | "none"
    baseline: dict[str, float] | None = None  # e.g. the naive forecast's RMSE on the test split


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, shuffle: bool = True):
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    train, test = order[:-n_test], order[-n_test:]
    return x[train], y[train], x[test], y[test]


def diabetes(test_fraction: float, seed: int, **_: Any) -> Dataset:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x, y = data.data.astype(np.float32), data.target.astype(np.float32)
    return Dataset("diabetes", "regression", "numeric", *_split(x, y, test_fraction, seed),
                   source="scikit-learn load_diabetes (442 patients, 10 features; real data)",
                   input_name="features", target_name="progression", normalisation="per_feature")


def digits(test_fraction: float, seed: int, **_: Any) -> Dataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.images.astype(np.float32), data.target.astype(np.int64)  # 8x8 grey levels 0..16
    return Dataset("digits", "classification", "numeric", *_split(x, y, test_fraction, seed),
                   source="scikit-learn load_digits (1,797 8x8 images, 10 classes; real data)",
                   input_name="image", labels=[str(i) for i in range(10)], normalisation="global")


def sunspots(test_fraction: float, seed: int, window: int = 12, **_: Any) -> Dataset:
    """Yearly sunspot numbers 1700-2008: predict next year's number from the last `window` years.

    The split is chronological (the test years come after every training year), as a forecast must be judged.
    """
    import statsmodels.api as sm

    series = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float32)
    x = np.stack([series[i:i + window] for i in range(len(series) - window)])
    y = series[window:]
    x_train, y_train, x_test, y_test = _split(x, y, test_fraction, seed, shuffle=False)
    naive = float(np.sqrt(np.mean((x_test[:, -1] - y_test) ** 2)))
    return Dataset("sunspots", "regression", "numeric", x_train, y_train, x_test, y_test,
                   source="statsmodels sunspots (yearly sunspot numbers 1700-2008; real data)",
                   input_name="window", target_name="sunspots", normalisation="global",
                   baseline={"naive_last_value_rmse": naive})


# Smart-home commands: intent -> templates with {slot}s. Generated, because no text corpus ships offline.
_SLOTS = {
    "room": ["kitchen", "living room", "bedroom", "bathroom", "hallway", "garage", "office", "basement", "porch"],
    "device": ["lights", "lamp", "fan", "tv", "heater", "air conditioner", "coffee maker", "speaker"],
    "number": [str(n) for n in (5, 10, 15, 18, 19, 20, 21, 22, 23, 25, 30, 45, 60)],
    "time": ["6 am", "7 am", "7 30", "8 o'clock", "noon", "9 pm", "10 pm", "midnight", "6 45"],
    "artist": ["jazz", "the beatles", "some rock", "classical music", "my playlist", "the radio", "podcasts"],
    "city": ["london", "paris", "berlin", "new york", "tokyo", "madrid", "seattle", "here", "outside"],
    "door": ["front door", "back door", "garage door", "side door"],
    "please": ["", "please", "could you", "can you", "hey", "i want you to"],
}
_INTENTS = {
    "turn_on": ["{please} turn on the {device}", "{please} switch on the {room} {device}", "{device} on",
                "{please} power up the {device} in the {room}", "start the {device}", "{please} turn the {device} on"],
    "turn_off": ["{please} turn off the {device}", "{please} switch off the {room} {device}", "{device} off",
                 "{please} shut down the {device} in the {room}", "kill the {device}", "{please} turn the {device} off"],
    "set_temperature": ["{please} set the temperature to {number}", "make it {number} degrees in the {room}",
                        "{please} heat the {room} to {number}", "thermostat to {number}", "i want {number} degrees"],
    "play_music": ["{please} play {artist}", "put on {artist} in the {room}", "{please} start playing {artist}",
                   "i want to hear {artist}", "music in the {room}"],
    "stop_music": ["{please} stop the music", "pause {artist}", "{please} stop playing", "silence in the {room}",
                   "enough music", "{please} mute the speaker"],
    "set_alarm": ["{please} wake me up at {time}", "set an alarm for {time}", "{please} alarm at {time}",
                  "i need to get up at {time}", "ring at {time} tomorrow"],
    "set_timer": ["{please} set a timer for {number} minutes", "timer {number} minutes",
                  "{please} count down {number} minutes", "remind me in {number} minutes", "start a {number} minute timer"],
    "weather": ["what's the weather in {city}", "{please} tell me the forecast for {city}", "is it raining in {city}",
                "will it be sunny {city}", "how cold is it {city}", "weather {city}"],
    "lock_door": ["{please} lock the {door}", "is the {door} locked", "secure the {door}", "{door} lock",
                  "{please} make sure the {door} is locked"],
    "unlock_door": ["{please} unlock the {door}", "open the {door}", "{door} unlock", "{please} let me in the {door}",
                    "unbolt the {door}"],
}


_FILLERS = ["now", "thanks", "right now", "quickly", "for me", "ok", "um", "then"]


def _noisy(words: list[str], rng: random.Random) -> list[str]:
    """Speech-to-text and typing noise: a filler word now and then, and a typo (a dropped or swapped letter)."""
    words = list(words)
    if rng.random() < 0.3:
        words.insert(rng.choice([0, len(words)]), rng.choice(_FILLERS))
    if rng.random() < 0.3:
        i = rng.randrange(len(words))
        word = words[i]
        if len(word) > 3:
            j = rng.randrange(len(word) - 1)
            words[i] = word[:j] + word[j + 1:] if rng.random() < 0.5 else word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return words


def smart_home(test_fraction: float, seed: int, samples: int = 4000, **_: Any) -> Dataset:
    """Generated smart-home utterances (templates x slot values), labelled with their intent."""
    rng = random.Random(seed)
    labels = sorted(_INTENTS)
    texts, targets = [], []
    for i in range(samples):
        intent = labels[i % len(labels)]
        template = rng.choice(_INTENTS[intent])
        words = template.format(**{k: rng.choice(v) for k, v in _SLOTS.items()}).split()
        texts.append(" ".join(_noisy(words, rng)))
        targets.append(labels.index(intent))
    x, y = np.asarray(texts, dtype=object), np.asarray(targets, dtype=np.int64)
    return Dataset("smart_home", "classification", "text", *_split(x, y, test_fraction, seed),
                   source=f"generated: {samples} smart-home commands from templates and slot values (not real data)",
                   input_name="text", labels=labels, normalisation="none")


def from_npz(path: Path, task: str, test_fraction: float, seed: int, labels: list[str] | None = None,
             **_: Any) -> Dataset:
    """A user's data: an .npz with x_train, y_train and optionally x_test, y_test (else split here)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if "x_train" not in arrays or "y_train" not in arrays:
        raise UserError(f"{path}: an .npz dataset needs arrays x_train and y_train (found: {', '.join(arrays)})")
    if "x_test" in arrays and "y_test" in arrays:
        parts = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    else:
        parts = _split(arrays["x_train"], arrays["y_train"], test_fraction, seed)
    kind = "text" if parts[0].dtype.kind in "US" else "numeric"
    if kind == "numeric":
        parts = (parts[0].astype(np.float32), parts[1], parts[2].astype(np.float32), parts[3])
    if task == "classification" and labels is None:
        labels = [str(i) for i in range(int(max(parts[1].max(), parts[3].max())) + 1)]
    return Dataset(path.stem, task, kind, *parts, source=f"user data from {path}", labels=labels)


BUILTIN: dict[str, Callable[..., Dataset]] = {
    "diabetes": diabetes, "digits": digits, "sunspots": sunspots, "smart_home": smart_home,
}
