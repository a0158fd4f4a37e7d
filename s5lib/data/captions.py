"""Captions of the mini soundbank's sounds: free-text queries made from the class names.

The bank's clips have a class label but no caption. A caption is a template (``"{} in the
background"``) filled with a phrase for the class (``"someone coughing"``). Both come in two
disjoint sets: ``train`` captions are what a LASS separator trains on, ``heldout`` captions are
only ever used for its validation and test queries, so a score on them is the score of queries
never seen in training (other words for the same sound, other sentence shapes). ``any`` draws
from both.

Everything is a pure function of the seed and the item: :func:`caption_for` with the same
``(label, seed, key)`` always gives the same text. Interferer classes of the bank (not one of the
18 targets) get phrases made from their folder name.
"""
import zlib

import numpy as np

from s5lib.constants import CLASSES

CAPTION_SETS = ("train", "heldout", "any")

# phrases per class: the first ones train, the last two are held out
CLASS_PHRASES = {
    "AlarmClock": ("an alarm clock ringing", "an alarm clock", "a beeping alarm clock",
                   "a wake-up alarm going off", "the buzz of a bedside alarm"),
    "BicycleBell": ("a bicycle bell", "a bicycle bell ringing", "someone ringing a bike bell",
                    "the ding of a cycle bell", "a bell on a bike"),
    "Blender": ("a blender", "a blender running", "a kitchen blender whirring",
                "a food processor blending", "a mixer grinding food"),
    "Buzzer": ("a buzzer", "a buzzer sounding", "an electric buzzer",
               "a harsh buzzing signal", "a loud buzz tone"),
    "Clapping": ("people clapping", "hands clapping", "applause",
                 "a crowd applauding", "someone clapping their hands"),
    "Cough": ("someone coughing", "a cough", "a person coughing",
              "a man clearing his throat with a cough", "coughing sounds"),
    "CupboardOpenClose": ("a cupboard opening and closing", "a cupboard door", "a cabinet door closing",
                          "a kitchen cabinet being shut", "the creak of a cupboard"),
    "Dishes": ("dishes clattering", "plates and cutlery", "dishes being washed",
               "crockery clinking together", "someone stacking plates"),
    "Doorbell": ("a doorbell", "a doorbell ringing", "the chime of a doorbell",
                 "someone ringing at the front door", "a ding-dong door chime"),
    "FootSteps": ("footsteps", "someone walking", "footsteps on the floor",
                  "a person pacing across a room", "steps of a walker"),
    "HairDryer": ("a hair dryer", "a hair dryer blowing", "a hairdryer running",
                  "a blow dryer humming", "hot air from a hair drier"),
    "MechanicalFans": ("a fan", "a mechanical fan running", "an electric fan humming",
                       "the whir of a ventilator", "a cooling fan spinning"),
    "MusicalKeyboard": ("a keyboard being played", "piano music", "someone playing a musical keyboard",
                        "notes on an electric piano", "a synthesizer melody"),
    "Percussion": ("percussion", "drums", "someone playing drums",
                   "a rhythm beaten on percussion instruments", "drumming"),
    "Pour": ("water pouring", "liquid being poured", "pouring a drink",
             "someone filling a glass", "the splash of a pour"),
    "Speech": ("speech", "a person talking", "someone speaking",
               "a voice saying something", "a conversation"),
    "Typing": ("typing", "someone typing on a keyboard", "keys being typed",
               "the clicking of a computer keyboard", "fingers tapping on keys"),
    "VacuumCleaner": ("a vacuum cleaner", "a vacuum cleaner running", "someone vacuuming",
                      "a hoover sucking up dust", "the roar of a vacuum"),
}
HELDOUT_PHRASES = 2

TRAIN_TEMPLATES = ("{}", "the sound of {}", "{} can be heard", "a recording of {}",
                   "{} in a room", "there is {}", "we hear {}", "{} nearby")
HELDOUT_TEMPLATES = ("{} in the background", "listen to {}", "an audio clip with {} in it")


def _phrases(label, caption_set):
    if label in CLASS_PHRASES:
        phrases = CLASS_PHRASES[label]
    else:  # an interferer folder name: "dog_bark" -> "dog bark"
        words = str(label).replace("_", " ").replace("-", " ").strip().lower() or "a sound"
        phrases = (words, f"a {words} sound", f"{words} noise", f"{words} sounds", f"the {words}")
    if caption_set == "train":
        return phrases[:-HELDOUT_PHRASES]
    if caption_set == "heldout":
        return phrases[-HELDOUT_PHRASES:]
    return phrases


def _templates(caption_set):
    if caption_set == "train":
        return TRAIN_TEMPLATES
    if caption_set == "heldout":
        return HELDOUT_TEMPLATES
    return TRAIN_TEMPLATES + HELDOUT_TEMPLATES


def _check_set(caption_set):
    if caption_set not in CAPTION_SETS:
        raise ValueError(f"caption set must be one of {CAPTION_SETS}, got {caption_set!r}")


def all_captions(label, caption_set="train"):
    """Every caption of ``label`` in ``caption_set``, in a fixed order."""
    _check_set(caption_set)
    return [_fill(t, p) for t in _templates(caption_set) for p in _phrases(label, caption_set)]


def _fill(template, phrase):
    text = template.format(phrase)
    return text[0].upper() + text[1:]


def caption_for(label, seed=0, key=0, caption_set="train"):
    """One caption of ``label``, a pure function of ``(label, seed, key, caption_set)``."""
    _check_set(caption_set)
    token = f"{seed}|{key}|{label}|{caption_set}".encode()
    rng = np.random.default_rng(zlib.crc32(token))
    templates, phrases = _templates(caption_set), _phrases(label, caption_set)
    return _fill(templates[rng.integers(len(templates))], phrases[rng.integers(len(phrases))])


def captions_of_labels(labels, seed=0, key=0, caption_set="heldout"):
    """One caption per label (the S5 pipeline's queries from a tagger's labels)."""
    return [caption_for(label, seed, (key, i), caption_set) for i, label in enumerate(labels)]


def check_classes():
    """Every S5 class has its phrases (a guard for a class list change)."""
    missing = [c for c in CLASSES if c not in CLASS_PHRASES]
    if missing:
        raise ValueError(f"captions: no phrases for classes {missing}")
