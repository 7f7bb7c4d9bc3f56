"""Channel keys: ThingSpeak's shape, and every character as likely as any other."""

from __future__ import annotations

import re
import string
from collections import Counter

from imprint.provisioning.channels import KEY_LENGTH, generate_channel_key


def test_keys_have_thingspeaks_shape_and_do_not_repeat() -> None:
    keys = [generate_channel_key() for _ in range(2_000)]
    assert all(re.fullmatch(r"[A-Z0-9]{16}", key) for key in keys)
    assert len(set(keys)) == len(keys)


def test_every_character_is_as_likely_as_any_other() -> None:
    """320,000 characters: about 8,889 of each of the 36. Taking a random byte modulo 36
    without dropping the last four values would give A-D 8/256 of them (10,000 each,
    about 12 standard deviations over) and the others 7/256; the bounds are 5 % (about
    4.7 standard deviations)."""
    counts = Counter("".join(generate_channel_key() for _ in range(20_000)))
    alphabet = string.ascii_uppercase + string.digits
    assert set(counts) == set(alphabet)
    expected = 20_000 * KEY_LENGTH / len(alphabet)
    assert all(abs(counts[c] - expected) < 0.05 * expected for c in alphabet), counts
