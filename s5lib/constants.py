"""Task-wide constants of S5 (see SPEC §1-§2)."""

SAMPLE_RATE = 32000
DURATION_S = 10
N_SAMPLES = SAMPLE_RATE * DURATION_S
N_FOA_CHANNELS = 4  # W, Y, Z, X (ACN order, SN3D)
FOA_CHANNEL_NAMES = ("W", "Y", "Z", "X")

CLASSES = (
    "AlarmClock", "BicycleBell", "Blender", "Buzzer", "Clapping", "Cough",
    "CupboardOpenClose", "Dishes", "Doorbell", "FootSteps", "HairDryer", "MechanicalFans",
    "MusicalKeyboard", "Percussion", "Pour", "Speech", "Typing", "VacuumCleaner",
)
N_CLASSES = len(CLASSES)
SILENCE = "silence"
SILENCE_INDEX = N_CLASSES  # index 18 where a 19-way output exists
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}

YEARS = (2025, 2026)
REF_DB = {2025: -50.0, 2026: -55.0}
MAX_TARGETS = 3
