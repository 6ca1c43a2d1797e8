"""The caller location table is loaded by the part a caller's prefix falls in, and says what the library says.

Each check runs in a fresh interpreter: which of phonenumbers' modules a process has loaded is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Every region's example fixed-line and mobile numbers (a few hundred countries' prefixes).
NUMBERS = """
import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
numbers = []
for region in sorted(phonenumbers.SUPPORTED_REGIONS):
    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is not None:
            numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
"""


def run(code: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_locations_are_the_librarys_own_for_every_regions_examples() -> None:
    library = run(
        NUMBERS
        + """
import json
from phonenumbers import geocoder
print(json.dumps({n: geocoder.description_for_number(phonenumbers.parse(n), "en") or None for n in numbers}))
"""
    )
    ours = run(
        NUMBERS
        + """
import json, sys
from tracking.caller_info import describe_number
out = {n: describe_number(n).location for n in numbers}
assert type(sys.modules["phonenumbers.geodata"].GEOCODE_DATA).__name__ == "_PrefixChunks", "the stand-in was not used"
print(json.dumps(out))
"""
    )
    assert isinstance(library, dict) and len(library) > 400
    assert sum(1 for v in library.values() if v) > 300  # most examples have a location to compare
    assert ours == library


def test_an_idle_process_loads_no_table_and_one_countrys_callers_load_a_small_part() -> None:
    loaded = run(
        """
import json, sys
from tracking.caller_info import describe_number
idle = "phonenumbers.geocoder" in sys.modules or "phonenumbers.geodata" in sys.modules
locations = [describe_number(n).location for n in ("+14045551234", "+12125550100", "+13125550100", "+14155550100")]
table = sys.modules["phonenumbers.geodata"].GEOCODE_DATA
print(json.dumps({"idle": idle, "locations": locations, "loaded": len(table.loaded), "files": len(table.names)}))
"""
    )
    assert isinstance(loaded, dict)
    assert loaded["idle"] is False
    assert loaded["locations"] == ["Georgia", "New York, NY", "Chicago, IL", "San Francisco, CA"]
    assert loaded["files"] > 20
    assert 1 <= loaded["loaded"] <= 3  # the North American prefixes' files, not the whole table
